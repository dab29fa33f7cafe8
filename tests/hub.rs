//! Authentication as Docker Hub does it, scripted on loopback: the token flow, credentials
//! from docker's and podman's files and helpers, login/logout, mirrors and proxies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::env::{Mode, User};
use support::hub::*;
use support::mock::{Content, Mock, Req, Resp};

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
