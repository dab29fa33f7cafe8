//! Registry behaviour the real registry cannot show, scripted on loopback: Docker Hub's token
//! flow, credentials, CDN redirects, rate limits, cut and killed downloads, hostile answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use support::mock::{Content, Mock, Req, Resp, ranged};

const REPO: &str = "lib/x";

fn small_image() -> image::Built {
    let l2 = LayerTar::new().file("hello", b"world", 0o644).finish();
    image::build(
        &[(busybox_base().finish(), Comp::Gzip), (l2, Comp::Gzip)],
        &ImageOpts::default(),
    )
}

fn challenge(req: &Req, extra: &str) -> Resp {
    let host = req.header("host").unwrap_or("127.0.0.1").to_owned();
    Resp::new(401).header(
        "www-authenticate",
        format!(r#"Bearer realm="http://{host}/token",service="mock.registry",scope="repository:{REPO}:pull"{extra}"#),
    )
}

fn query_has(req: &Req, pair: &str) -> bool {
    req.path.split(['?', '&']).any(|p| p == pair)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Hub-like registry: Bearer tokens from `/token`; `token_for` decides which token (if any)
/// a token request gets, `accept` whether a registry request's Authorization is good.
fn hub(
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

fn bearer_is(req: &Req, t: &str) -> bool {
    req.header("authorization") == Some(&format!("Bearer {t}"))
}

fn registry_requests(m: &Mock) -> Vec<Req> {
    m.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v2/"))
        .collect()
}

#[test]
fn anonymous_bearer_token_is_fetched_once_and_reused() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let m = hub(
        Content::from_built("latest", &b),
        |r| {
            assert!(query_has(r, "service=mock.registry"), "{}", r.path);
            assert!(
                query_has(r, "scope=repository%3Alib%2Fx%3Apull"),
                "{}",
                r.path
            );
            assert!(
                r.header("authorization").is_none(),
                "anonymous token request carried credentials"
            );
            Some("anon-token".into())
        },
        |r| {
            if bearer_is(r, "anon-token") {
                Ok(())
            } else {
                Err(challenge(r, ""))
            }
        },
    );
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
    let tokens = m
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    assert_eq!(tokens, 1, "the token must be reused until it expires");
    let reqs = registry_requests(&m);
    assert!(reqs.len() >= 5, "manifest, config and two layers expected");
    assert!(
        reqs[1..].iter().all(|r| bearer_is(r, "anon-token")),
        "later requests must carry the token"
    );
}

#[test]
fn basic_credentials_from_docker_config_go_to_the_token_server() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let m = hub(
        Content::from_built("latest", &b),
        |r| {
            (r.header("authorization") == Some(&format!("Basic {}", b64("alice:s3cret"))))
                .then(|| "alice-token".into())
        },
        |r| {
            if bearer_is(r, "alice-token") {
                Ok(())
            } else {
                Err(challenge(r, ""))
            }
        },
    );
    let cfg = json!({"auths": {m.host(): {"auth": b64("alice:s3cret")}}});
    user.write_home(".docker/config.json", cfg.to_string().as_bytes());
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
}

#[test]
fn identity_token_uses_the_oauth2_form() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let m = hub(
        Content::from_built("latest", &b),
        |r| {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            (r.method == "POST"
                && body.contains("grant_type=refresh_token")
                && body.contains("refresh_token=refresh-xyz"))
            .then(|| "oauth-token".into())
        },
        |r| {
            if bearer_is(r, "oauth-token") {
                Ok(())
            } else {
                Err(challenge(r, ""))
            }
        },
    );
    let auth_file = user.write_home(
        "auth.json",
        json!({"auths": {m.host(): {"identitytoken": "refresh-xyz"}}})
            .to_string()
            .as_bytes(),
    );
    user.run_env(
        &["pull", &format!("{}/{REPO}", m.host())],
        &[("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap())],
    )
    .ok();
}

#[test]
fn credential_helper_is_asked() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let m = hub(
        Content::from_built("latest", &b),
        |r| {
            (r.header("authorization")
                == Some(&format!("Basic {}", b64("helper-user:helper-pass"))))
            .then(|| "h".into())
        },
        |r| {
            if bearer_is(r, "h") {
                Ok(())
            } else {
                Err(challenge(r, ""))
            }
        },
    );
    let script = "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"helper-user\\\",\\\"Secret\\\":\\\"helper-pass\\\"}\"\n";
    let helper = user.write_home("bin/docker-credential-nookmock", script.as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    user.write_home(".docker/config.json", br#"{"credsStore":"nookmock"}"#);
    let path = format!("{}:/usr/bin:/bin", helper.parent().unwrap().display());
    user.run_env(
        &["pull", &format!("{}/{REPO}", m.host())],
        &[("PATH", &path)],
    )
    .ok();
}

#[test]
fn insufficient_scope_gets_one_fresh_token() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let issued = Arc::new(AtomicUsize::new(0));
    let i2 = issued.clone();
    let m = hub(
        Content::from_built("latest", &b),
        move |_| Some(format!("t{}", i2.fetch_add(1, Ordering::SeqCst) + 1)),
        |r| {
            if bearer_is(r, "t2") {
                Ok(())
            } else if bearer_is(r, "t1") {
                Err(challenge(r, r#",error="insufficient_scope""#))
            } else {
                Err(challenge(r, ""))
            }
        },
    );
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[test]
fn denied_pull_says_to_log_in() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let m = hub(
        Content::from_built("latest", &b),
        |_| Some("useless".into()),
        |r| Err(challenge(r, "")),
    );
    let out = user.run(&["pull", &format!("{}/{REPO}", m.host())]);
    out.fails_with(125, &format!("pull access denied for {}/{REPO}", m.host()));
    assert!(
        out.stderr.contains(&format!("nook login {}", m.host())),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.lines().count(),
        2,
        "one progress line and one error line: {}",
        out.stderr
    );
}

#[test]
fn blob_redirect_to_another_host_drops_authorization() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let blobs: std::collections::HashMap<String, Vec<u8>> = b.blobs.iter().cloned().collect();
    let leaked = Arc::new(AtomicBool::new(false));
    let l2 = leaked.clone();
    let cdn = Mock::start(move |req| {
        if req.header("authorization").is_some() {
            l2.store(true, Ordering::SeqCst);
            return Resp::new(400);
        }
        let d = req
            .path
            .trim_start_matches("/cdn/")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        match blobs.get(&d) {
            Some(data) => ranged(req, data),
            None => Resp::new(404),
        }
    });
    let cdn_url = cdn.url.clone();
    let content = Content::from_built("latest", &b);
    let m = hub(
        Content {
            manifests: content.manifests.clone(),
            blobs: Default::default(),
        },
        |_| Some("tok".into()),
        move |r| {
            if !bearer_is(r, "tok") {
                return Err(challenge(r, ""));
            }
            if let Some(i) = r.path.find("/blobs/") {
                let d = &r.path[i + 7..];
                return Err(Resp::new(307).header("location", format!("{cdn_url}/cdn/{d}?sig=abc")));
            }
            Ok(())
        },
    );
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
    assert!(
        !leaked.load(Ordering::SeqCst),
        "the CDN received the registry's Authorization header"
    );
    assert!(
        cdn.requests().len() >= 3,
        "config and layers come from the CDN"
    );
}

#[test]
fn rate_limit_429_waits_for_retry_after() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let content = Content::from_built("latest", &b);
    let limited = Arc::new(AtomicUsize::new(0));
    let l2 = limited.clone();
    let m = Mock::start(move |req| {
        if req.path.contains("/manifests/") && l2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Resp::new(429).header("retry-after", "1");
        }
        content.answer(req)
    });
    let t = Instant::now();
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert!(limited.load(Ordering::SeqCst) >= 2);
}

#[test]
fn server_errors_are_retried() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let content = Content::from_built("latest", &b);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let m = Mock::start(move |req| {
        if req.path.contains("/blobs/") && n2.fetch_add(1, Ordering::SeqCst) < 2 {
            return Resp::new(503);
        }
        content.answer(req)
    });
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
}

#[test]
fn cut_connection_resumes_with_range() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let (big, b) = image::with_big_file(3_000_000, 11, Comp::Gzip);
    let big_blob = b.layer_digests[1].clone();
    let content = Content::from_built("latest", &b);
    let m = Mock::start(move |req| {
        let mut r = content.answer(req);
        if req.path.ends_with(&big_blob) && req.header("range").is_none() {
            r.cut_after = Some(r.body.len() / 2);
        }
        r
    });
    user.run(&["pull", &format!("{}/{REPO}", m.host())]).ok();
    let ranges: Vec<String> = m
        .requests()
        .iter()
        .filter_map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges.len(), 1, "one resumed request expected: {ranges:?}");
    let start: u64 = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(start > 0);
    let f = user
        .store()
        .join("layers")
        .join(&b.diff_ids[1][7..])
        .join("root/big");
    assert_eq!(std::fs::read(f).unwrap(), big);
}

#[test]
fn wrong_blob_digest_is_refused_and_nothing_is_kept() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let mut content = Content::from_built("latest", &b);
    let bad = b.layer_digests[1].clone();
    let mut data = content.blobs[&bad].clone();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    content.blobs.insert(bad.clone(), data);
    let m = Mock::start(move |req| content.answer(req));
    let out = user.run(&["pull", &format!("{}/{REPO}", m.host())]);
    out.fails_with(125, "content digest is");
    assert!(!user.store().join("blobs/sha256").join(&bad[7..]).exists());
    assert!(
        !user
            .store()
            .join("layers")
            .join(&b.diff_ids[1][7..])
            .exists()
    );
    assert_eq!(user.run(&["images", "-q"]).stdout, "");
}

#[test]
fn traversal_digest_in_a_manifest_is_refused() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let evil = String::from_utf8(b.manifest.clone())
        .unwrap()
        .replace(&b.layer_digests[1], "sha256:../../../../tmp/nook-evil");
    let mut content = Content::from_built("latest", &b);
    content
        .manifests
        .insert("latest".into(), (evil.into_bytes(), b.media_type.clone()));
    let m = Mock::start(move |req| content.answer(req));
    user.run(&["pull", &format!("{}/{REPO}", m.host())])
        .fails_with(125, "invalid digest");
    assert!(!std::path::Path::new("/tmp/nook-evil").exists());
    assert!(
        m.requests().iter().all(|r| !r.path.contains("..")),
        "a request was built from the bad digest"
    );
}

#[test]
fn schema1_and_mismatched_manifests_are_refused() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let mut content = Content::from_built("latest", &b);
    content.manifests.insert(
        "old".into(),
        (
            br#"{"schemaVersion":1,"name":"lib/x","tag":"old","fsLayers":[]}"#.to_vec(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
        ),
    );
    content.manifests.insert(
        "liar".into(),
        (
            b.manifest.clone(),
            "application/vnd.oci.image.index.v1+json".into(),
        ),
    );
    let good = content.answer(&Req {
        method: "GET".into(),
        path: format!("/v2/{REPO}/manifests/latest"),
        headers: Default::default(),
        body: vec![],
    });
    let body = good.body.clone();
    let m = Mock::start(move |req| {
        if req.path.ends_with("/manifests/baddigest") {
            return Resp::new(200)
                .header("content-type", image::DOCKER_MANIFEST)
                .header(
                    "docker-content-digest",
                    format!("sha256:{}", "1".repeat(64)),
                )
                .body(body.clone());
        }
        content.answer(req)
    });
    let h = m.host();
    user.run(&["pull", &format!("{h}/{REPO}:old")])
        .fails_with(125, "schema1");
    user.run(&["pull", &format!("{h}/{REPO}:liar")])
        .fails_with(125, "Content-Type says");
    user.run(&["pull", &format!("{h}/{REPO}:baddigest")])
        .fails_with(125, "content digest");
}

#[test]
fn killed_pull_resumes_and_completes() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let (big, b) = image::with_big_file(6_000_000, 9, Comp::None);
    let big_blob = b.layer_digests[1].clone();
    let content = Content::from_built("latest", &b);
    let slow = Arc::new(AtomicBool::new(true));
    let s2 = slow.clone();
    let bb = big_blob.clone();
    let m = Mock::start(move |req| {
        let mut r = content.answer(req);
        if req.path.ends_with(&bb) && s2.load(Ordering::SeqCst) {
            r.pace = Some(Duration::from_millis(20));
        }
        r
    });
    let reference = format!("{}/{REPO}", m.host());
    let mut child =
        support::env::ChildGuard(Some(user.nook(&["pull", &reference]).spawn().unwrap()));
    let partial = user
        .store()
        .join("tmp")
        .join(format!("partial-sha256-{}", &big_blob[7..]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 300_000 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no chance to clean up.
    if let Some(mut c) = child.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < big.len() as u64);
    slow.store(false, Ordering::SeqCst);
    user.run(&["pull", &reference]).ok();
    let resumed: Vec<u64> = m
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(&big_blob))
        .filter_map(|r| {
            r.header("range")?
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .ok()
        })
        .collect();
    assert!(
        resumed.iter().any(|s| *s >= kept),
        "no Range resume from {kept}: {resumed:?}"
    );
    let f = user
        .store()
        .join("layers")
        .join(&b.diff_ids[1][7..])
        .join("root/big");
    assert_eq!(std::fs::read(f).unwrap(), big);
    assert_eq!(
        std::fs::read_dir(user.store().join("tmp")).unwrap().count(),
        0,
        "stale files left"
    );
}

#[test]
fn login_checks_and_saves_then_logout_removes() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let m = Mock::start(move |req| {
        s2.lock()
            .unwrap()
            .push(req.header("authorization").map(str::to_owned));
        if req.header("authorization") == Some(&format!("Basic {}", b64("bob:pw"))) {
            Resp::new(200).json(&json!({}))
        } else {
            Resp::new(401).header("www-authenticate", r#"Basic realm="mock""#)
        }
    });
    let h = m.host();
    let bad = user.run_input(
        &["login", "-u", "bob", "--password-stdin", &h],
        &[],
        b"wrong\n",
    );
    bad.fails_with(125, "incorrect username or password");
    let cfg = user.home().join(".docker/config.json");
    assert!(!cfg.exists(), "failed login must not save anything");
    let out = user.run_input(
        &["login", "-u", "bob", "--password-stdin", &h],
        &[],
        b"pw\n",
    );
    out.ok();
    assert!(out.stdout.contains("Login Succeeded"));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(saved["auths"][&h]["auth"], b64("bob:pw"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = user.run(&["logout", &h]);
    out.ok();
    assert!(out.stdout.contains("Removing login credentials"));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(saved["auths"].get(&h).is_none());
    assert!(user.run(&["logout", &h]).stdout.contains("Not logged in"));
}

#[test]
fn docker_hub_mirror_from_config() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let b = small_image();
    let content = Content::from_built("latest", &b);
    let m = Mock::start(move |req| {
        assert!(
            req.path.starts_with("/v2/library/busybox") || req.path == "/v2/",
            "{}",
            req.path
        );
        content.answer(&Req {
            path: req
                .path
                .replace("/v2/library/busybox/", &format!("/v2/{REPO}/")),
            ..req.clone()
        })
    });
    user.write_home(
        ".config/nook/config.toml",
        format!("[mirrors]\n\"docker.io\" = [\"{}\"]\n", m.host()).as_bytes(),
    );
    // Should the mirror fail, Hub would be next: a dead loopback proxy keeps that from leaving.
    let out = user.run_env(
        &["pull", "busybox"],
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    );
    out.ok();
    assert!(
        out.stdout.contains("docker.io/library/busybox"),
        "{}",
        out.stdout
    );
    let v: serde_json::Value =
        serde_json::from_str(&user.run(&["inspect", "busybox"]).stdout).unwrap();
    assert_eq!(v[0]["Id"], b.config_digest);
}

#[test]
fn https_proxy_is_used_for_remote_registries() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    // The proxy refuses every tunnel, so nothing goes further than loopback; what matters is
    // that nook asked it for one (CONNECT host:443, name resolution left to the proxy).
    let proxy = Mock::start(|_| Resp::new(403));
    let out = user.run_env(
        &["pull", "registry.example.test/team/app:1"],
        &[("HTTPS_PROXY", &proxy.url)],
    );
    assert_eq!(out.code, 125, "{}", out.stderr);
    let reqs = proxy.requests();
    assert!(!reqs.is_empty(), "the proxy was not used");
    assert!(
        reqs.iter()
            .all(|r| r.method == "CONNECT" && r.path == "registry.example.test:443"),
        "{reqs:?}"
    );
}
