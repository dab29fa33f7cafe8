//! Push test helpers: a recording proxy in front of a real registry (with a hook that may
//! answer, stall or refuse a request first), a scripted Docker-Hub-like registry that speaks
//! the upload protocol in memory with knobs for its misbehaviours, and small readers of what
//! both saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use std::process::Command;

use serde_json::Value;

use super::env::Out;
use super::image::{self, Comp, ImageOpts, LayerTar, busybox_base, sha256};
use super::mock::{Mock, Req, Resp};
use super::registry::TestRegistry;
use super::sandbox::Sandbox;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
}

/// Forwards `req` to `upstream`, rewriting absolute `Location`s back to `me`.
pub fn forward(upstream: &str, me: &str, req: &Req, extra: &[(&str, String)]) -> Resp {
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("{upstream}{}", req.path));
    for (k, v) in &req.headers {
        let replaced = extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k));
        if !replaced && !matches!(k.as_str(), "host" | "content-length" | "connection") {
            b = b.header(k.as_str(), v.as_str());
        }
    }
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    let a = agent();
    let resp = if matches!(req.method.as_str(), "GET" | "HEAD" | "DELETE") {
        a.run(b.body(()).unwrap())
    } else {
        a.run(b.body(req.body.clone()).unwrap())
    };
    let Ok(resp) = resp else {
        return Resp::new(502);
    };
    let (parts, mut body) = resp.into_parts();
    let mut out = Resp::new(parts.status.as_u16());
    for (k, v) in &parts.headers {
        let v = v.to_str().unwrap_or("").replace(upstream, me);
        if k.as_str() != "content-length" || req.method == "HEAD" {
            out = out.header(k.as_str(), v);
        }
    }
    if req.method != "HEAD" {
        out.body = body
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default();
    }
    out
}

/// A recording proxy to `upstream`; `hook` answers a request itself when it returns `Some`.
pub fn proxy(
    upstream: &str,
    hook: impl Fn(&Req, &str) -> Option<Resp> + Send + Sync + 'static,
) -> Mock {
    let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (up, m) = (upstream.to_owned(), me.clone());
    let mock = Mock::start(move |req| {
        let me = m.get().cloned().unwrap_or_default();
        hook(req, &me).unwrap_or_else(|| forward(&up, &me, req, &[]))
    });
    me.set(mock.url.clone()).unwrap();
    mock
}

/// Percent-decoding of a query value.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The values of query parameter `name` in `path`.
pub fn query(path: &str, name: &str) -> Vec<String> {
    let q = path.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| unescape(v))
        .collect()
}

/// The path without its query.
pub fn bare(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

/// How the scripted registry misbehaves.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Answer pushes 401 `insufficient_scope` even with a token (Hub's "denied").
    pub deny_push: bool,
    /// Answer a mount with 202 (an ordinary session) instead of 201.
    pub refuse_mounts: bool,
    /// Send relative `Location`s (else absolute ones with a `_state` query).
    pub relative_location: bool,
    /// 503 this many PATCHes.
    pub fail_patches: AtomicU32,
    /// 503 this many upload-closing PUTs.
    pub fail_puts: AtomicU32,
    /// 429 with `Retry-After: 1` this many upload-closing PUTs.
    pub limit_puts: AtomicU32,
    /// Answer manifest PUTs with a wrong Docker-Content-Digest.
    pub wrong_digest: bool,
}

#[derive(Default)]
struct State {
    /// (repository, digest) → bytes
    blobs: HashMap<(String, String), Vec<u8>>,
    /// session id → (repository, bytes so far)
    sessions: HashMap<String, (String, Vec<u8>)>,
    manifests: HashMap<(String, String), Vec<u8>>,
    next: u32,
}

/// A Docker-Hub-like registry in memory behind a Bearer token realm of its own.
pub struct Hub {
    pub mock: Mock,
    pub knobs: Arc<Knobs>,
    state: Arc<Mutex<State>>,
}

impl Hub {
    pub fn start(knobs: Knobs) -> Hub {
        let knobs = Arc::new(knobs);
        let state = Arc::new(Mutex::new(State::default()));
        let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let (k, s, m) = (knobs.clone(), state.clone(), me.clone());
        let mock = Mock::start(move |req| {
            let me = m.get().cloned().unwrap_or_default();
            answer(&k, &mut s.lock().unwrap(), &me, req)
        });
        me.set(mock.url.clone()).unwrap();
        Hub { mock, knobs, state }
    }

    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let s = self.state.lock().unwrap();
        s.blobs.contains_key(&(repo.to_owned(), digest.to_owned()))
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let s = self.state.lock().unwrap();
        s.manifests
            .get(&(repo.to_owned(), reference.to_owned()))
            .cloned()
    }

    /// Every `scope` the token endpoint was asked for.
    pub fn token_scopes(&self) -> Vec<Vec<String>> {
        self.mock
            .requests()
            .iter()
            .filter(|r| bare(&r.path) == "/token")
            .map(|r| query(&r.path, "scope"))
            .collect()
    }
}

fn errors(code: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"errors": [{"code": code, "message": code.to_lowercase()}]}),
    )
    .unwrap()
}

/// `/v2/<repo>/<kind>/<rest>` split at the first `/blobs/` or `/manifests/`.
fn route(path: &str) -> Option<(String, &'static str, String)> {
    let p = bare(path).strip_prefix("/v2/")?;
    for kind in ["/blobs/uploads/", "/blobs/", "/manifests/"] {
        if let Some(i) = p.find(kind) {
            return Some((p[..i].to_owned(), kind, p[i + kind.len()..].to_owned()));
        }
    }
    None
}

fn answer(k: &Knobs, s: &mut State, me: &str, req: &Req) -> Resp {
    if bare(&req.path) == "/token" {
        return Resp::new(200).json(&serde_json::json!({"token": "hub-token"}));
    }
    let Some((repo, kind, rest)) = route(&req.path) else {
        return Resp::new(200).json(&serde_json::json!({}));
    };
    let challenge = |extra: &str| {
        format!(
            r#"Bearer realm="{me}/token",service="hub.test",scope="repository:{repo}:pull,push"{extra}"#
        )
    };
    if req.header("authorization") != Some("Bearer hub-token") {
        return Resp::new(401)
            .header("www-authenticate", challenge(""))
            .body(errors("UNAUTHORIZED"));
    }
    let writes = !matches!(req.method.as_str(), "GET" | "HEAD");
    if k.deny_push && writes {
        return Resp::new(401)
            .header(
                "www-authenticate",
                challenge(r#",error="insufficient_scope""#),
            )
            .body(errors("DENIED"));
    }
    let location = |s: &mut State, id: &str| {
        s.next += 1;
        if k.relative_location {
            format!("/v2/{repo}/blobs/uploads/{id}")
        } else {
            format!("{me}/v2/{repo}/blobs/uploads/{id}?_state={}", s.next)
        }
    };
    match (req.method.as_str(), kind) {
        ("HEAD", "/blobs/") => match s.blobs.get(&(repo.clone(), rest.clone())) {
            Some(b) => Resp::new(200).header("content-length", b.len().to_string()),
            None => Resp::new(404),
        },
        ("POST", "/blobs/uploads/") => {
            let mount = query(&req.path, "mount");
            let from = query(&req.path, "from");
            if let (Some(d), Some(f)) = (mount.first(), from.first())
                && !k.refuse_mounts
                && let Some(b) = s.blobs.get(&(f.clone(), d.clone())).cloned()
            {
                s.blobs.insert((repo.clone(), d.clone()), b);
                return Resp::new(201).header("docker-content-digest", d.as_str());
            }
            s.next += 1;
            let id = format!("u{}", s.next);
            s.sessions.insert(id.clone(), (repo.clone(), Vec::new()));
            Resp::new(202).header("location", location(s, &id))
        }
        ("PATCH", "/blobs/uploads/") => {
            if take(&k.fail_patches) {
                return Resp::new(503).body(errors("UNAVAILABLE"));
            }
            let Some((_, data)) = s.sessions.get_mut(&rest) else {
                return Resp::new(404).body(errors("BLOB_UPLOAD_UNKNOWN"));
            };
            let start = req
                .header("content-range")
                .and_then(|r| r.split('-').next())
                .and_then(|v| v.parse::<usize>().ok());
            if start != Some(data.len())
                || req.header("content-type") != Some("application/octet-stream")
            {
                return Resp::new(416).body(errors("BLOB_UPLOAD_INVALID"));
            }
            data.extend_from_slice(&req.body);
            Resp::new(202).header("location", location(s, &rest))
        }
        ("PUT", "/blobs/uploads/") => {
            if take(&k.limit_puts) {
                return Resp::new(429)
                    .header("retry-after", "1")
                    .body(errors("TOOMANYREQUESTS"));
            }
            if take(&k.fail_puts) {
                return Resp::new(503).body(errors("UNAVAILABLE"));
            }
            let Some((r, mut data)) = s.sessions.remove(&rest) else {
                return Resp::new(404).body(errors("BLOB_UPLOAD_UNKNOWN"));
            };
            data.extend_from_slice(&req.body);
            let digest = query(&req.path, "digest").pop().unwrap_or_default();
            if sha256(&data) != digest {
                return Resp::new(400).body(errors("DIGEST_INVALID"));
            }
            s.blobs.insert((r, digest.clone()), data);
            Resp::new(201).header("docker-content-digest", digest)
        }
        ("PUT", "/manifests/") => {
            let digest = if k.wrong_digest {
                format!("sha256:{}", "0".repeat(64))
            } else {
                sha256(&req.body)
            };
            s.manifests.insert((repo.clone(), rest), req.body.clone());
            s.manifests
                .insert((repo, sha256(&req.body)), req.body.clone());
            Resp::new(201).header("docker-content-digest", digest)
        }
        _ => Resp::new(404).body(errors("UNSUPPORTED")),
    }
}

/// Takes one from `n` if it is above zero.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// The requests of `log` with `method` whose bare path contains `needle`.
pub fn count(log: &[Req], method: &str, needle: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.contains(needle))
        .count()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A manifest as the registry at `url` serves it, and its digest.
pub fn manifest(url: &str, repo: &str, reference: &str) -> (Value, String) {
    let mut r = agent()
        .get(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{reference} is not in the registry");
    let bytes = r.body_mut().read_to_vec().unwrap();
    (serde_json::from_slice(&bytes).unwrap(), sha256(&bytes))
}

/// The digest `nook push` printed (`TAG: digest: sha256:… size: N`).
pub fn pushed_digest(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no digest line in {:?}", out.stdout))
        .to_owned()
}

/// `skopeo inspect`'s digest of `reference`, or `None` (after a skip) without skopeo.
pub fn skopeo_digest(reference: &str) -> Option<String> {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output();
    let Ok(out) = out else {
        super::skip("skopeo is not installed (apt-get install skopeo)");
        return None;
    };
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["Digest"].as_str().unwrap().to_owned())
}

/// Incompressible bytes (xorshift), so that a layer's blob is as big as its file.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Busybox plus `/big` of `len` incompressible bytes, pushed as `name` and pulled.
pub fn big_image(s: &Sandbox, name: &str, len: usize) -> (String, image::Built, Vec<u8>) {
    let big = noise(len, 0x9e37_79b9);
    let top = LayerTar::new().file("big", &big, 0o644).finish();
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip), (top, Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&s.reg.url, name, "latest", &b);
    let r = format!("{}/{name}", s.reg.host);
    s.user.run(&["pull", "-q", &r]).ok();
    (r, b, big)
}

pub const HTPASSWD_USER: &str = "pusher";
pub const HTPASSWD_PASSWORD: &str = "push-secret";
/// bcrypt (cost 4) of HTPASSWD_PASSWORD.
pub const HTPASSWD_HASH: &str = "$2b$04$5zerRLUXztCCnje6f5m5MeiMnjNzVe9KSzjMwFH0/LOQnuMibmnZ2";

/// A docker-registry that wants Basic credentials (htpasswd).
pub fn htpasswd_registry(dir: &std::path::Path) -> Option<TestRegistry> {
    let file = dir.join("htpasswd");
    std::fs::write(&file, format!("{HTPASSWD_USER}:{HTPASSWD_HASH}\n")).unwrap();
    TestRegistry::start_with(
        None,
        &format!(
            "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
            file.display()
        ),
    )
}

pub fn basic() -> String {
    use base64::Engine;
    let raw = format!("{HTPASSWD_USER}:{HTPASSWD_PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

pub fn manifest_with(url: &str, repo: &str, reference: &str, auth: &str) -> (Value, String) {
    let mut r = agent()
        .get(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("authorization", auth)
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.body_mut().read_to_vec().unwrap();
    (serde_json::from_slice(&bytes).unwrap(), sha256(&bytes))
}
