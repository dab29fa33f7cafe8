//! Image management against a real registry: platforms, digests, images, inspect, tag, rmi,
//! prune, all-tags, and the errors a user sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use support::registry::TestRegistry;
use support::sandbox::Sandbox;

fn arch_image(arch: &str, variant: Option<&str>, oci: bool) -> image::Built {
    let marker = LayerTar::new()
        .file("arch", arch.as_bytes(), 0o644)
        .finish();
    image::build(
        &[(busybox_base().finish(), Comp::Gzip), (marker, Comp::Gzip)],
        &ImageOpts {
            oci,
            arch: arch.into(),
            variant: variant.map(Into::into),
            ..ImageOpts::default()
        },
    )
}

fn setup() -> Option<(User, TestRegistry)> {
    let user = User::new(Mode::Range)?;
    let reg = TestRegistry::start()?;
    Some((user, reg))
}

fn inspect(user: &User, what: &str) -> Value {
    let out = user.run(&["inspect", what]);
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v[0].clone()
}

fn multi_platform(oci: bool) {
    let Some((user, reg)) = setup() else { return };
    let amd = arch_image("amd64", None, oci);
    let arm = arch_image("arm64", Some("v8"), oci);
    let index = image::push_index(&reg.url, "multi", "latest", &[&amd, &arm], oci);
    let r = format!("{}/multi", reg.host);
    user.run(&["pull", &r]).ok();
    let v = inspect(&user, &r);
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert_eq!(v["Architecture"], host_arch);
    assert_eq!(v["Digest"], index, "the repo digest is the index's");
    assert_eq!(v["IndexDigest"], index);
    user.run(&["pull", "--platform", "linux/arm64", &r]).ok();
    let v = inspect(&user, &r);
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Id"], arm.config_digest);
    let err = user.run(&["pull", "--platform", "linux/s390x", &r]);
    err.fails_with(125, "no image for linux/s390x");
    assert!(
        err.stderr.contains("linux/amd64") && err.stderr.contains("linux/arm64/v8"),
        "{}",
        err.stderr
    );
    assert!(
        !err.stderr.contains("unknown"),
        "attestations must not be offered: {}",
        err.stderr
    );
}

#[test]
fn multi_platform_oci_index() {
    multi_platform(true);
}

#[test]
fn multi_platform_docker_manifest_list() {
    multi_platform(false);
}

#[test]
fn single_platform_image_of_another_arch() {
    let Some((user, reg)) = setup() else { return };
    let s390 = arch_image("s390x", None, false);
    image::push(&reg.url, "other", "latest", &s390);
    let r = format!("{}/other", reg.host);
    user.run(&["pull", "--platform", "linux/s390x", &r]).ok();
    user.run(&["pull", "--platform", "linux/amd64", &r])
        .fails_with(125, "is for linux/s390x");
}

#[test]
fn pull_by_digest_and_tag_at_digest() {
    let Some((user, reg)) = setup() else { return };
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "bydigest", "v1", &b);
    let by_digest = format!("{}/bydigest@{}", reg.host, b.digest);
    user.run(&["pull", &by_digest]).ok();
    let v = inspect(&user, &by_digest);
    assert_eq!(v["Id"], b.config_digest);
    assert_eq!(v["RepoTags"], json!([]), "a digest pull records no tag");
    // name:tag@digest: the digest wins, even when the tag names nothing.
    user.run(&[
        "pull",
        &format!("{}/bydigest:nonexistent@{}", reg.host, b.digest),
    ])
    .ok();
    let wrong = format!("{}/bydigest@sha256:{}", reg.host, "0".repeat(64));
    user.run(&["pull", &wrong]).fails_with(125, "not found");
}

#[test]
fn images_inspect_tag_rmi_prune() {
    let Some((user, reg)) = setup() else { return };
    let a = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    let extra = LayerTar::new().file("b", b"b", 0o644).finish();
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip), (extra, Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "lib/a", "1", &a);
    image::push(&reg.url, "lib/b", "1", &b);
    let (ra, rb) = (
        format!("{}/lib/a:1", reg.host),
        format!("{}/lib/b:1", reg.host),
    );
    user.run(&["pull", &ra]).ok();
    user.run(&["pull", &rb]).ok();

    let out = user.run(&["images"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY")
            && lines[0].contains("IMAGE ID")
            && lines[0].contains("SIZE"),
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(out.stdout.contains(&a.config_digest[7..19]));
    let q = user.run(&["images", "-q"]);
    assert_eq!(q.stdout.lines().count(), 2);
    let js = user.run(&["images", "--format", "json"]);
    let rows: Vec<Value> = js
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r["Repository"] == format!("{}/lib/a", reg.host) && r["Tag"] == "1")
    );

    let v = inspect(&user, &ra);
    assert_eq!(v["Id"], a.config_digest);
    assert_eq!(v["RepoTags"], json!([format!("{}/lib/a:1", reg.host)]));
    assert_eq!(v["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(v["RootFS"]["Layers"], json!(a.diff_ids));
    assert_eq!(v["Layers"][0]["Digest"], a.layer_digests[0]);
    assert!(v["Size"].as_u64().unwrap() > 500_000, "busybox counts");

    // Both images share the base layer: one directory for it.
    let layers = std::fs::read_dir(user.store().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 2);

    user.run(&["tag", &ra, "mine:latest"]).ok();
    assert_eq!(inspect(&user, "mine")["Id"], a.config_digest);
    let refused = user.run(&["rmi", &a.config_digest]);
    refused.fails_with(1, "has several tags");
    let out = user.run(&["rmi", "mine"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "Untagged: mine:latest");
    let out = user.run(&["rmi", &ra]);
    out.ok();
    assert!(out.stdout.contains("Deleted: sha256:"), "{}", out.stdout);
    // The shared layer stays for b.
    assert_eq!(
        std::fs::read_dir(user.store().join("layers"))
            .unwrap()
            .count(),
        2
    );
    user.run(&["image", "prune", "-a", "-f"]).ok();
    assert_eq!(
        std::fs::read_dir(user.store().join("layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(user.store().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(user.run(&["images", "-q"]).stdout, "");
    user.run(&["inspect", "nothing"])
        .fails_with(1, "no such image");
}

#[test]
fn all_tags() {
    let Some((user, reg)) = setup() else { return };
    let a = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    for t in ["t1", "t2", "t3"] {
        image::push(&reg.url, "many", t, &a);
    }
    user.run(&["pull", "-a", &format!("{}/many", reg.host)])
        .ok();
    let v = inspect(&user, &format!("{}/many:t2", reg.host));
    assert_eq!(v["RepoTags"].as_array().unwrap().len(), 3);
    user.run(&["pull", "-a", &format!("{}/many:t1", reg.host)])
        .fails_with(125, "without a tag");
}

#[test]
fn reference_and_not_found_errors() {
    let Some((user, reg)) = setup() else { return };
    user.run(&["pull", "Busybox"])
        .fails_with(125, "must be lowercase");
    user.run(&["pull", "a..b"])
        .fails_with(125, "path component");
    user.run(&["pull", "x@sha256:../../etc"])
        .fails_with(125, "invalid digest");
    user.run(&["pull", &format!("{}/absent:v1", reg.host)])
        .fails_with(125, "not found");
    user.run(&["pull", "--platform", "linux", "x"])
        .fails_with(125, "invalid platform");
}

#[test]
fn concurrent_pulls_of_the_same_image() {
    let Some((user, reg)) = setup() else { return };
    let (big, b) = image::with_big_file(8_000_000, 13, Comp::Gzip);
    image::push(&reg.url, "conc", "latest", &b);
    let r = format!("{}/conc", reg.host);
    let kids: Vec<_> = (0..3)
        .map(|_| user.nook(&["pull", &r]).spawn().unwrap())
        .collect();
    for k in kids {
        let out = support::env::Out::from(k.wait_with_output().unwrap());
        out.ok();
    }
    assert_eq!(
        std::fs::read_dir(user.store().join("layers"))
            .unwrap()
            .count(),
        2
    );
    let layer = user
        .store()
        .join("layers")
        .join(&b.diff_ids[1][7..])
        .join("root/big");
    assert_eq!(std::fs::read(layer).unwrap(), big);
    assert_eq!(
        std::fs::read_dir(user.store().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(user.run(&["images", "-q"]).stdout.lines().count(), 1);
}

#[test]
fn different_images_at_once_share_their_base() {
    let Some((user, reg)) = setup() else { return };
    let images: Vec<_> = (0..3)
        .map(|i| {
            let top = LayerTar::new()
                .file("which", format!("{i}").as_bytes(), 0o644)
                .finish();
            let b = image::build(
                &[(busybox_base().finish(), Comp::Gzip), (top, Comp::Gzip)],
                &ImageOpts::default(),
            );
            image::push(&reg.url, &format!("shared/{i}"), "latest", &b);
            b
        })
        .collect();
    let kids: Vec<_> = (0..3)
        .map(|i| {
            user.nook(&["pull", &format!("{}/shared/{i}", reg.host)])
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        support::env::Out::from(k.wait_with_output().unwrap()).ok();
    }
    assert_eq!(
        std::fs::read_dir(user.store().join("layers"))
            .unwrap()
            .count(),
        4,
        "one base and three tops"
    );
    for b in &images {
        let v = inspect(&user, &b.config_digest);
        assert_eq!(v["Id"], b.config_digest);
    }
}

#[test]
fn system_reset_removes_everything_including_range_owned_files() {
    let Some((user, reg)) = setup() else { return };
    let top = LayerTar::new()
        .file_owned("owned", b"x", 0o600, 4000, 4000)
        .dir_owned("d", 0o500, 4000, 4000)
        .finish();
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip), (top, Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "reset", "latest", &b);
    user.run(&["pull", &format!("{}/reset", reg.host)]).ok();
    user.run(&["system", "reset"]).fails_with(125, "add -f");
    assert!(user.store().exists());
    user.run(&["system", "reset", "-f"]).ok();
    assert!(!user.store().exists());
}

/// `rmi` and `image prune` are told by the container records which images are in use (the
/// store does not read those records itself): a container's image stays until it goes.
#[test]
fn an_image_a_container_uses_stays_until_the_container_goes() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let script = format!(": {}", s.tag);
    s.nook(&[
        "create", "--name", "holds-bb", &s.image, "sh", "-c", &script,
    ])
    .ok();
    s.nook(&["rmi", &s.image])
        .fails_with(1, "is used by container holds-bb");
    s.nook(&["image", "prune", "-a", "-f"]).ok();
    let kept = s.nook(&["images", "-q"]);
    kept.ok();
    assert_eq!(
        kept.stdout.lines().count(),
        1,
        "prune -a kept it: {}",
        kept.stdout
    );
    s.nook(&["rm", "holds-bb"]).ok();
    let out = s.nook(&["rmi", &s.image]);
    out.ok();
    assert!(out.stdout.contains("Deleted: sha256:"), "{}", out.stdout);
}

/// `nook inspect IMAGE | head`: a reader that went away ends a printing command quietly (as
/// SIGPIPE ends other Unix tools), never with a Rust panic about a broken pipe.
#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let Some((user, reg)) = setup() else { return };
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "pipe", "latest", &b);
    let r = format!("{}/pipe", reg.host);
    user.run(&["pull", "-q", &r]).ok();
    for args in [vec!["inspect", r.as_str()], vec!["images"], vec!["info"]] {
        // The reader is gone before nook writes a byte.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = user
            .nook(&args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
    }
}
