//! Moving bytes when registries misbehave, scripted on loopback: CDN redirects, rate limits,
//! server errors, cut and killed downloads, corrupt and hostile answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::env::{Mode, User};
use support::hub::*;
use support::image::{self, Comp};
use support::mock::{Content, Mock, Req, Resp, ranged};

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
    // Two 503s, each retried: every blob fetched once more than it failed, and no more.
    let blob_paths: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.path.clone())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = blob_paths.iter().collect();
    assert_eq!(
        n.load(Ordering::SeqCst),
        blob_paths.len(),
        "the counter sees every blob request"
    );
    assert_eq!(
        blob_paths.len(),
        distinct.len() + 2,
        "each of the two failed requests retried exactly once: {blob_paths:?}"
    );
    assert_eq!(
        distinct.len(),
        1 + b.layer_digests.len(),
        "config and every layer"
    );
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
