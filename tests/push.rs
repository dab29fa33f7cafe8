//! `nook push`: against Debian's docker-registry on loopback (peers skopeo and podman read
//! what nook pushed), through recording proxies (chunked uploads, a token realm in front of
//! an htpasswd registry, a push killed midway), and against a scripted Docker-Hub-like
//! registry for the behaviours a local registry does not show (token scopes, 429/503 on
//! upload steps, relative Locations, refused mounts, denied pushes, a lying manifest digest).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::build::{Builder, Ctx, Podman};
use support::env::{ChildGuard, Mode, User};
use support::image::{Comp, busybox_base, sha256};
use support::mock::Resp;
use support::push::{
    HTPASSWD_PASSWORD, HTPASSWD_USER, Hub, Knobs, OCI_MANIFEST, agent, bare, basic, big_image,
    count, forward, htpasswd_registry, manifest, manifest_with, proxy, pushed_digest, query,
    skopeo_digest,
};
use support::sandbox::Sandbox;

#[test]
fn a_pulled_image_pushed_unchanged_keeps_its_digest_mounts_and_podman_runs_it() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let (_, source) = manifest(&s.reg.url, "bb", "latest");
    let dest = format!("{}/copy:v1", s.reg.host);
    let out = s.nook(&["push", &s.image, &dest]);
    out.ok();
    assert_eq!(
        pushed_digest(&out),
        source,
        "the manifest changed on the way"
    );
    assert!(out.stdout.starts_with("v1: digest: "), "{}", out.stdout);
    let repo_line = format!("The push refers to repository [{}/copy]", s.reg.host);
    assert!(out.stderr.contains(&repo_line), "{}", out.stderr);
    assert!(
        out.stderr.contains(": Mounted from bb"),
        "no mount: {}",
        out.stderr
    );
    if let Some(d) = skopeo_digest(&dest) {
        assert_eq!(d, source);
    }
    let again = s.nook(&["push", &s.image, &dest]);
    again.ok();
    assert!(
        again.stderr.contains(": Layer already exists"),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains(": Pushed"), "{}", again.stderr);
    let quiet = s.nook(&["push", "-q", "--digestfile", "d.txt", &s.image, &dest]);
    quiet.ok();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
    let written = std::fs::read_to_string(s.user.work.path().join("d.txt")).unwrap();
    assert_eq!(written, source);

    let Some(podman) = Podman::new(&s.user) else {
        return;
    };
    podman.run(&["pull", "--tls-verify=false", &dest]).ok();
    let run = podman.run(&["run", "--rm", &dest, "echo", "hello-from-podman"]);
    if run.code != 0 {
        support::skip(&format!(
            "podman cannot run containers here: {}",
            run.stderr
        ));
        return;
    }
    assert_eq!(run.stdout.trim(), "hello-from-podman");
}

fn build_push_pull_run(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let ctx = Ctx::new(&s.user, "app");
    ctx.file("hello.txt", b"built by nook\n");
    ctx.dockerfile("FROM {base}\nCOPY hello.txt /hello.txt\n", &s.image);
    Builder::new(&s).build(&["-t", "app:1"], &ctx).ok();
    let dest = format!("{}/app:1", s.reg.host);
    let out = s.nook(&["push", "app:1", &format!("docker://{dest}")]);
    out.ok();
    let digest = pushed_digest(&out);
    let (_, served) = manifest(&s.reg.url, "app", "1");
    assert_eq!(served, digest);
    if let Some(d) = skopeo_digest(&dest) {
        assert_eq!(d, digest);
    }
    let Some(fresh) = User::new(mode) else { return };
    fresh.run(&["pull", "-q", &dest]).ok();
    let run = fresh.run(&["run", "--rm", &dest, "cat", "/hello.txt"]);
    run.ok();
    assert_eq!(run.stdout, "built by nook\n");
}

#[test]
fn a_built_image_pushed_pulls_into_an_empty_store_and_runs_range() {
    build_push_pull_run(Mode::Range);
}

#[test]
fn a_built_image_pushed_pulls_into_an_empty_store_and_runs_single() {
    build_push_pull_run(Mode::Single);
}

#[test]
fn format_and_compression_conversions_round_trip() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let (source, _) = manifest(&s.reg.url, "bb", "latest");
    let oci = format!("{}/oci:1", s.reg.host);
    s.nook(&["push", "--format", "oci", &s.image, &oci]).ok();
    let (m, _) = manifest(&s.reg.url, "oci", "1");
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        m["config"]["digest"], source["config"]["digest"],
        "the image id changed"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(m["layers"][0]["digest"], source["layers"][0]["digest"]);

    let zst = format!("{}/zst:1", s.reg.host);
    let out = s.nook(&[
        "push",
        "--format=oci",
        "--compression-format=zstd",
        &s.image,
        &zst,
    ]);
    out.ok();
    let (z, _) = manifest(&s.reg.url, "zst", "1");
    assert_eq!(
        z["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_ne!(z["layers"][0]["digest"], source["layers"][0]["digest"]);
    assert_eq!(z["config"]["digest"], source["config"]["digest"]);
    // The conversion is remembered: the next push finds the zstd blob by its digest.
    let again = s.nook(&[
        "push",
        "--format=oci",
        "--compression-format=zstd",
        &s.image,
        &format!("{}/zst2:1", s.reg.host),
    ]);
    again.ok();
    assert!(
        again.stderr.contains(": Mounted from zst"),
        "{}",
        again.stderr
    );
    let (z2, _) = manifest(&s.reg.url, "zst2", "1");
    assert_eq!(z2["layers"], z["layers"]);

    let v2 = format!("{}/v2:1", s.reg.host);
    let refused = s.nook(&[
        "push",
        "--format=v2s2",
        "--compression-format=zstd",
        &s.image,
        &v2,
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("--format oci"),
        "{}",
        refused.stderr
    );

    let Some(fresh) = User::new(Mode::Range) else {
        return;
    };
    for r in [&oci, &zst] {
        fresh.run(&["pull", "-q", r]).ok();
        let run = fresh.run(&["run", "--rm", r, "echo", "converted"]);
        run.ok();
        assert_eq!(run.stdout, "converted\n");
    }
}

#[test]
fn a_big_layer_goes_up_in_chunks_following_each_location() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let (r, b, big) = big_image(&s, "big", 12 << 20);
    let p = proxy(&s.reg.url, |_, _| None);
    let dest = format!("{}/bigcopy:1", p.host());
    s.nook(&["push", &r, &dest]).ok();
    let log = p.requests();
    let big_digest = &b.layer_digests[1];
    let patches: Vec<_> = log.iter().filter(|q| q.method == "PATCH").collect();
    assert!(
        patches.len() >= 2,
        "{} PATCHes for a 12 MiB layer",
        patches.len()
    );
    let mut next = 0usize;
    for q in &patches {
        assert_eq!(q.header("content-type"), Some("application/octet-stream"));
        let range = q.header("content-range").unwrap();
        let (start, end) = range.split_once('-').unwrap();
        assert_eq!(start.parse::<usize>().unwrap(), next, "{range}");
        next = end.parse::<usize>().unwrap() + 1;
        assert_eq!(next - start.parse::<usize>().unwrap(), q.body.len());
    }
    assert_eq!(count(&log, "PUT", &format!("digest={big_digest}")), 1);
    let Some(fresh) = User::new(Mode::Range) else {
        return;
    };
    fresh.run(&["pull", "-q", &dest]).ok();
    let run = fresh.run(&["run", "--rm", &dest, "busybox", "sha256sum", "/big"]);
    run.ok();
    assert!(run.stdout.starts_with(&sha256(&big)[7..]), "{}", run.stdout);
}

#[test]
fn an_htpasswd_registry_takes_a_push_only_after_login() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(auth) = htpasswd_registry(dir.path()) else {
        return;
    };
    let dest = format!("{}/team/bb:1", auth.host);
    let refused = s.nook(&["push", &s.image, &dest]);
    assert_ne!(refused.code, 0);
    let line = format!(
        "push access denied for {}/team/bb: run 'nook login {}'",
        auth.host, auth.host
    );
    assert!(refused.stderr.contains(&line), "{}", refused.stderr);
    s.nook(&[
        "login",
        "-u",
        HTPASSWD_USER,
        "-p",
        HTPASSWD_PASSWORD,
        &auth.host,
    ])
    .ok();
    let out = s.nook(&["push", &s.image, &dest]);
    out.ok();
    let r = agent()
        .head(format!("{}/v2/team/bb/manifests/1", auth.url))
        .header("authorization", basic())
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let served = r
        .headers()
        .get("docker-content-digest")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(served, pushed_digest(&out));
}

#[test]
fn a_token_realm_in_front_of_htpasswd_takes_a_push_with_credentials() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(auth) = htpasswd_registry(dir.path()) else {
        return;
    };
    // The realm gives anyone a pull token, and a push token only for the right credentials;
    // the proxy turns a good push token into the registry's Basic credentials.
    let upstream = auth.url.clone();
    let p = proxy(&auth.url, move |req, me| {
        if bare(&req.path) == "/token" {
            let token = if req.header("authorization") == Some(basic().as_str()) {
                "push-token"
            } else if req.header("authorization").is_some() {
                return Some(Resp::new(401));
            } else {
                "anonymous"
            };
            return Some(Resp::new(200).json(&serde_json::json!({"token": token})));
        }
        if req.header("authorization") == Some("Bearer push-token") {
            return Some(forward(&upstream, me, req, &[("authorization", basic())]));
        }
        Some(Resp::new(401).header(
            "www-authenticate",
            format!(r#"Bearer realm="{me}/token",service="proxy""#),
        ))
    });
    let dest = format!("{}/tok/bb:1", p.host());
    let refused = s.nook(&["push", &s.image, &dest]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains(&format!("push access denied for {}/tok/bb", p.host())),
        "{}",
        refused.stderr
    );
    s.user.write_home(
        ".docker/config.json",
        serde_json::json!({"auths": {p.host(): {"auth": &basic()[6..]}}})
            .to_string()
            .as_bytes(),
    );
    let out = s.nook(&["push", &s.image, &dest]);
    out.ok();
    let scopes: Vec<Vec<String>> = p
        .requests()
        .iter()
        .filter(|r| bare(&r.path) == "/token")
        .map(|r| query(&r.path, "scope"))
        .collect();
    assert!(
        scopes.contains(&vec!["repository:tok/bb:pull,push".to_owned()]),
        "{scopes:?}"
    );
    let (_, served) = manifest_with(&auth.url, "tok/bb", "1", &basic());
    assert_eq!(served, pushed_digest(&out));
}

#[test]
fn a_killed_push_resumes_without_sending_accepted_blobs_again() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let (r, b, _) = big_image(&s, "resume", 6 << 20);
    let stall = Arc::new(AtomicBool::new(true));
    let stalled = Arc::new(AtomicU32::new(0));
    let (st, sd) = (stall.clone(), stalled.clone());
    let p = proxy(&s.reg.url, move |req, _| {
        if req.body.len() > 4 << 20 && st.load(Ordering::SeqCst) {
            sd.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(120);
            while st.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Some(Resp::new(503));
        }
        None
    });
    let dest = format!("{}/resumed:1", p.host());
    let mut child = ChildGuard(Some(s.user.nook(&["push", &r, &dest]).spawn().unwrap()));
    let small: Vec<&String> = vec![&b.config_digest, &b.layer_digests[0]];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let accepted = small.iter().all(|d| {
            agent()
                .head(format!("{}/v2/resumed/blobs/{d}", s.reg.url))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        if accepted && stalled.load(Ordering::SeqCst) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first push never got that far"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child.0.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    stall.store(false, Ordering::SeqCst);
    let before = p.requests().len();
    s.nook(&["push", &r, &dest]).ok();
    let log = p.requests();
    let second = &log[before..];
    for d in &small {
        assert_eq!(
            count(&log, "PUT", &format!("digest={d}")),
            1,
            "{d} went twice"
        );
        assert_eq!(count(second, "HEAD", &format!("/blobs/{d}")), 1);
    }
    assert_eq!(
        count(second, "POST", "/blobs/uploads/"),
        1,
        "only the big layer is sent again"
    );
    assert_eq!(
        count(second, "PUT", &format!("digest={}", b.layer_digests[1])),
        1
    );
    manifest(&s.reg.url, "resumed", "1");
}

#[test]
fn hub_token_scopes_retries_and_a_refused_mount() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let (_, source) = manifest(&s.reg.url, "bb", "latest");
    let hub = Hub::start(Knobs {
        refuse_mounts: true,
        limit_puts: AtomicU32::new(1),
        fail_puts: AtomicU32::new(1),
        ..Knobs::default()
    });
    let dest = format!("{}/team/app:1", hub.mock.host());
    let out = s.nook(&["push", &s.image, &dest]);
    out.ok();
    assert_eq!(pushed_digest(&out), source);
    assert!(hub.manifest("team/app", "1").is_some());
    let log = hub.mock.requests();
    let first = log
        .iter()
        .find(|r| r.path.starts_with("/v2/team/"))
        .unwrap();
    assert_eq!(
        first.header("authorization"),
        None,
        "the first request is anonymous"
    );
    assert!(
        hub.token_scopes()
            .contains(&vec!["repository:team/app:pull,push".to_owned()]),
        "{:?}",
        hub.token_scopes()
    );
    // One 429 and one 503 on closing PUTs: two uploads started again.
    let blobs = 1 + source_layers(&s);
    assert_eq!(
        count(&log, "POST", "/v2/team/app/blobs/uploads/"),
        blobs + 2
    );
    assert_eq!(count(&log, "PUT", "/v2/team/app/blobs/uploads/"), blobs + 2);

    let before = log.len();
    let other = format!("{}/team/other:1", hub.mock.host());
    s.nook(&["push", &s.image, &other]).ok();
    let log = hub.mock.requests();
    let second = &log[before..];
    // Each request that carried the token (the first try of each went without).
    let second: Vec<_> = second
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .cloned()
        .collect();
    let paths: Vec<String> = second
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let mounts: Vec<_> = second
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("mount="))
        .collect();
    assert_eq!(mounts.len(), blobs, "{paths:#?}");
    for m in &mounts {
        assert_eq!(query(&m.path, "from"), ["team/app"]);
    }
    assert_eq!(
        count(&second, "POST", "/blobs/uploads/"),
        blobs,
        "202 sessions were not used"
    );
    assert!(
        hub.token_scopes().contains(&vec![
            "repository:team/other:pull,push".to_owned(),
            "repository:team/app:pull".to_owned()
        ]),
        "{:?}",
        hub.token_scopes()
    );
    assert!(hub.manifest("team/other", "1").is_some());
}

fn source_layers(s: &Sandbox) -> usize {
    let (m, _) = manifest(&s.reg.url, "bb", "latest");
    m["layers"].as_array().unwrap().len()
}

#[test]
fn hub_chunks_follow_relative_locations_through_a_503() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let hub = Hub::start(Knobs {
        relative_location: true,
        fail_patches: AtomicU32::new(1),
        ..Knobs::default()
    });
    let dest = format!("{}/team/z:1", hub.mock.host());
    s.nook(&[
        "push",
        "--format",
        "oci",
        "--compression-format",
        "zstd",
        &s.image,
        &dest,
    ])
    .ok();
    let m: Value = serde_json::from_slice(&hub.manifest("team/z", "1").unwrap()).unwrap();
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert!(hub.has_blob("team/z", l["digest"].as_str().unwrap()));
    }
    let log = hub.mock.requests();
    assert!(count(&log, "PATCH", "/v2/team/z/blobs/uploads/u") >= 2);
    assert!(
        log.iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.header("content-range").is_some())
    );
}

#[test]
fn hub_denied_and_a_lying_manifest_digest_are_errors() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let hub = Hub::start(Knobs {
        deny_push: true,
        ..Knobs::default()
    });
    let host = hub.mock.host();
    let out = s.nook(&["push", &s.image, &format!("{host}/team/app:1")]);
    assert_ne!(out.code, 0);
    let line = format!("push access denied for {host}/team/app: run 'nook login {host}'");
    assert!(out.stderr.contains(&line), "{}", out.stderr);

    let liar = Hub::start(Knobs {
        wrong_digest: true,
        ..Knobs::default()
    });
    let out = s.nook(&[
        "push",
        &s.image,
        &format!("{}/team/app:1", liar.mock.host()),
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("the registry stored the manifest as sha256:000"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_layer_unpacked_from_another_blob_is_still_pushed_as_its_own() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    // The same tar as bb's layer, zstd-compressed: its tree is unpacked already.
    let r = s.image_with(
        "bbz",
        &[(busybox_base().finish(), Comp::Zstd)],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    let (_, source) = manifest(&s.reg.url, "bbz", "latest");
    let out = s.nook(&["push", &r, &format!("{}/bbz-copy:1", s.reg.host)]);
    out.ok();
    assert_eq!(pushed_digest(&out), source);

    let (m, _) = manifest(&s.reg.url, "bbz", "latest");
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let blob = s.user.store().join("blobs/sha256").join(&layer[7..]);
    std::fs::remove_file(&blob).unwrap();
    let out = s.nook(&["push", &r, &format!("{}/bbz-gone:1", s.reg.host)]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("pull the image again"),
        "{}",
        out.stderr
    );
}

/// A registry whose image names a diff_id the store has, over a blob of other content: the
/// pull that fetches only that blob (the tree is there) must still check what it holds.
#[test]
fn a_blob_unlike_a_known_diff_id_is_refused_by_pull() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let other = support::image::LayerTar::new()
        .file("evil", b"not busybox\n", 0o644)
        .finish();
    let mut b = support::image::build(&[(other, Comp::Gzip)], &Default::default());
    let mut config: Value = serde_json::from_slice(&b.config).unwrap();
    config["rootfs"]["diff_ids"] = serde_json::json!([sha256(&busybox_base().finish())]);
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config);
    let mut manifest: Value = serde_json::from_slice(&b.manifest).unwrap();
    manifest["config"]["digest"] = config_digest.clone().into();
    manifest["config"]["size"] = config.len().into();
    b.blobs.retain(|(d, _)| *d != b.config_digest);
    b.blobs.push((config_digest, config));
    b.manifest = serde_json::to_vec(&manifest).unwrap();
    support::image::push(&s.reg.url, "liar", "latest", &b);
    let out = s.nook(&["pull", &format!("{}/liar", s.reg.host)]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("uncompressed content is"),
        "{}",
        out.stderr
    );
    let blob = s
        .user
        .store()
        .join("blobs/sha256")
        .join(&b.layer_digests[0][7..]);
    assert!(!blob.exists(), "the lying blob was kept");
    s.nook(&["image", "inspect", &format!("{}/liar", s.reg.host)])
        .fails_with(1, "no such image");
}

#[test]
fn all_tags_of_a_repository_go_with_dash_a() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    for t in ["a", "b"] {
        s.nook(&["tag", &s.image, &format!("{}/multi:{t}", s.reg.host)])
            .ok();
    }
    let repo = format!("{}/multi", s.reg.host);
    let out = s.nook(&["push", "-a", &repo]);
    out.ok();
    let (_, source) = manifest(&s.reg.url, "bb", "latest");
    for t in ["a", "b"] {
        assert!(
            out.stdout
                .contains(&format!("{t}: digest: {source} size: ")),
            "{}",
            out.stdout
        );
        assert_eq!(manifest(&s.reg.url, "multi", t).1, source);
    }
    let refused = s.nook(&["push", "-a", &format!("{repo}:a")]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("without a tag"),
        "{}",
        refused.stderr
    );
    // podman's archive transports write what nook save writes, under the name given.
    let file = s.user.work.path().join("pushed.tar");
    let dest = format!("oci-archive:{}:archived/x:v1", file.display());
    s.nook(&["push", &s.image, &dest]).ok();
    s.nook(&["rmi", "-f", &s.image]).ok();
    let loaded = s.nook(&["load", "-i", file.to_str().unwrap()]);
    loaded.ok();
    assert!(loaded.stdout.contains("archived/x:v1"), "{}", loaded.stdout);
    let dir = s.user.work.path().join("pushed-oci");
    s.nook(&["push", "archived/x:v1", &format!("oci:{}", dir.display())])
        .ok();
    assert!(dir.join("index.json").is_file());
}

/// An upload session the registry hands to another host (a storage service), and a redirect
/// there, never carry the registry's token: the other host sees no `Authorization` at all.
#[test]
fn another_host_never_gets_the_registry_credentials() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let hub = Hub::start(Knobs::default());
    // The storage host reaches the registry with credentials of its own.
    let storage = proxy(&hub.mock.url, {
        let up = hub.mock.url.clone();
        move |req, me| {
            Some(forward(
                &up,
                me,
                req,
                &[("authorization", "Bearer hub-token".to_owned())],
            ))
        }
    });
    let (up, away) = (hub.mock.url.clone(), storage.url.clone());
    // The registry's front: blob HEADs redirect to the storage host, upload sessions live there.
    let front = proxy(&hub.mock.url, move |req, me| {
        if req.method == "HEAD" && req.path.contains("/blobs/") {
            return Some(Resp::new(307).header("location", format!("{away}{}", req.path)));
        }
        if req.method != "POST" {
            return None;
        }
        let mut resp = forward(&up, me, req, &[]);
        for (k, v) in &mut resp.headers {
            if k.eq_ignore_ascii_case("location") {
                *v = v.replace(me, &away);
            }
        }
        Some(resp)
    });
    let dest = format!("{}/team/app:1", front.host());
    s.nook(&["push", &s.image, &dest]).ok();
    assert!(hub.manifest("team/app", "1").is_some());
    let sent = storage.requests();
    for method in ["HEAD", "PUT"] {
        assert!(
            sent.iter().any(|r| r.method == method),
            "no {method} reached the storage host"
        );
    }
    for r in &sent {
        assert_eq!(
            r.header("authorization"),
            None,
            "{} {} carried the registry's credentials",
            r.method,
            r.path
        );
    }
    assert!(
        front
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some("Bearer hub-token")),
        "the registry itself got the token"
    );
}
