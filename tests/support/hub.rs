//! A Docker-Hub-like mock registry: Bearer tokens from `/token`, scripted acceptance.

use base64::Engine as _;
use serde_json::json;

use super::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use super::mock::{Content, Mock, Req, Resp};

pub const REPO: &str = "lib/x";

pub fn small_image() -> image::Built {
    let l2 = LayerTar::new().file("hello", b"world", 0o644).finish();
    image::build(
        &[(busybox_base().finish(), Comp::Gzip), (l2, Comp::Gzip)],
        &ImageOpts::default(),
    )
}

pub fn challenge(req: &Req, extra: &str) -> Resp {
    let host = req.header("host").unwrap_or("127.0.0.1").to_owned();
    Resp::new(401).header(
        "www-authenticate",
        format!(r#"Bearer realm="http://{host}/token",service="mock.registry",scope="repository:{REPO}:pull"{extra}"#),
    )
}

pub fn query_has(req: &Req, pair: &str) -> bool {
    req.path.split(['?', '&']).any(|p| p == pair)
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Hub-like registry: Bearer tokens from `/token`; `token_for` decides which token (if any)
/// a token request gets, `accept` whether a registry request's Authorization is good.
pub fn hub(
    content: Content,
    token_for: impl Fn(&Req) -> Option<String> + Send + Sync + 'static,
    accept: impl Fn(&Req) -> Result<(), Resp> + Send + Sync + 'static,
) -> Mock {
    Mock::start(move |req| {
        if req.path.starts_with("/token") {
            return match token_for(req) {
                Some(t) => Resp::new(200).json(&json!({"token": t, "expires_in": 300})),
                None => Resp::new(401),
            };
        }
        match accept(req) {
            Ok(()) => content.answer(req),
            Err(r) => r,
        }
    })
}

pub fn bearer_is(req: &Req, t: &str) -> bool {
    req.header("authorization") == Some(&format!("Bearer {t}"))
}

pub fn registry_requests(m: &Mock) -> Vec<Req> {
    m.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v2/"))
        .collect()
}
