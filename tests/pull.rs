//! `nook pull` against a real registry (Debian's docker-registry on loopback), as an
//! ordinary user, in range mode and in single-mapping mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use support::registry::TestRegistry;

/// The fixture: a busybox base, then a layer that deletes, replaces, links and owns things.
fn fixture_layers(c1: Comp, c2: Comp, c3: Comp) -> Vec<(Vec<u8>, Comp)> {
    let base = busybox_base()
        .dir("etc/old", 0o755)
        .file("etc/old/a", b"a", 0o644)
        .file("etc/motd", b"hello\n", 0o644)
        .dir("opaque", 0o755)
        .file("opaque/lower-only", b"x", 0o644)
        .finish();
    let second = LayerTar::new()
        .whiteout("etc", "motd")
        .opaque("opaque")
        .file("opaque/upper", b"u", 0o644)
        .dir("data", 0o755)
        .file("data/orig", b"linked", 0o644)
        .hardlink("data/link", "data/orig")
        .symlink("data/sym", "/etc/passwd")
        .file("bin/su-test", b"#!/bin/sh\n", 0o4755)
        .file_owned("data/owned", b"owned", 0o640, 1234, 1234)
        .dir_owned("home/user", 0o750, 1234, 1234)
        .finish();
    let third = LayerTar::new()
        .whiteout("etc", "old")
        .file("etc/third", b"3", 0o644)
        .dir("dev", 0o755)
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .finish();
    vec![(base, c1), (second, c2), (third, c3)]
}

fn layer_root(user: &User, diff_id: &str) -> PathBuf {
    user.store()
        .join("layers")
        .join(diff_id.trim_start_matches("sha256:"))
        .join("root")
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let f = fs::File::open(path).ok()?;
    nook::sys::xattr::fget(&f, name).ok().flatten()
}

fn check_fixture(user: &User, built: &image::Built, mode: Mode) {
    let l1 = layer_root(user, &built.diff_ids[0]);
    let l2 = layer_root(user, &built.diff_ids[1]);
    let l3 = layer_root(user, &built.diff_ids[2]);
    assert_eq!(fs::read(l1.join("etc/motd")).unwrap(), b"hello\n");
    // Whiteouts are 0/0 character devices, opaque directories carry the overlay's xattr.
    let wh = fs::symlink_metadata(l2.join("etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout form"
    );
    assert!(
        fs::symlink_metadata(l3.join("etc/old"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        xattr(&l2.join("opaque"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!l2.join("opaque/.wh..wh..opq").exists());
    // Hard links share an inode; symlinks are kept as written.
    let (a, b) = (
        fs::metadata(l2.join("data/orig")).unwrap(),
        fs::metadata(l2.join("data/link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        fs::read_link(l2.join("data/sym")).unwrap(),
        Path::new("/etc/passwd")
    );
    let owned = fs::metadata(l2.join("data/owned")).unwrap();
    let su = fs::metadata(l2.join("bin/su-test")).unwrap();
    match mode {
        Mode::Range => {
            // Image uid 1234 is host uid subuid_start + 1233; container root is the user.
            let start = user.subuid_start();
            assert_eq!(owned.uid(), start + 1233);
            assert_eq!(owned.gid(), start + 1233);
            assert_eq!(su.uid(), user.uid);
            assert_eq!(su.mode() & 0o7777, 0o4755);
            assert_eq!(
                fs::metadata(l2.join("home/user")).unwrap().uid(),
                start + 1233
            );
        }
        Mode::Single => {
            assert_eq!(owned.uid(), user.uid);
            assert_eq!(
                xattr(&l2.join("data/owned"), "user.containers.override_stat").as_deref(),
                Some(&b"1234:1234:0640:file"[..])
            );
            assert_eq!(su.mode() & 0o7777, 0o755, "setuid must not stay on disk");
            assert_eq!(
                xattr(&l2.join("bin/su-test"), "user.containers.override_stat").as_deref(),
                Some(&b"0:0:4755:file"[..])
            );
            assert_eq!(
                xattr(&l2.join("home/user"), "user.containers.override_stat").as_deref(),
                Some(&b"1234:1234:0750:dir"[..])
            );
        }
    }
    // Nothing half-done is left behind.
    let tmp: Vec<_> = fs::read_dir(user.store().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "leftovers in tmp: {tmp:?}");
}

fn pull_fixture(mode: Mode, oci: bool, comps: (Comp, Comp, Comp)) {
    let Some(user) = User::new(mode) else { return };
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let built = image::build(
        &fixture_layers(comps.0, comps.1, comps.2),
        &ImageOpts {
            oci,
            ..ImageOpts::default()
        },
    );
    image::push(&reg.url, "fixture/app", "v1", &built);
    let reference = format!("{}/fixture/app:v1", reg.host);
    let out = user.run(&["pull", &reference]);
    out.ok();
    assert!(out.stdout.contains(&reference), "{}", out.stdout);
    assert!(out.stderr.contains("Pull complete"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("skipped 1 device node(s) such as /dev/null (char)"),
        "{}",
        out.stderr
    );
    assert!(
        !layer_root(&user, &built.diff_ids[2])
            .join("dev/null")
            .exists()
    );
    check_fixture(&user, &built, mode);
    // Blobs are kept by digest.
    for d in &built.layer_digests {
        assert!(
            user.store()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
                .is_file()
        );
    }
    // A second pull finds everything in place.
    let again = user.run(&["pull", &reference]);
    again.ok();
    assert!(
        again.stderr.contains("Already exists") && again.stderr.contains("Image is up to date"),
        "{}",
        again.stderr
    );
}

#[test]
fn pull_docker_schema2_gzip_in_range_mode() {
    pull_fixture(Mode::Range, false, (Comp::Gzip, Comp::Gzip, Comp::Gzip));
}

#[test]
fn pull_oci_mixed_compression_in_range_mode() {
    pull_fixture(Mode::Range, true, (Comp::Zstd, Comp::None, Comp::Gzip));
}

#[test]
fn pull_docker_schema2_in_single_mode() {
    pull_fixture(Mode::Single, false, (Comp::Gzip, Comp::Gzip, Comp::Gzip));
}

#[test]
fn pull_oci_zstd_and_plain_in_single_mode() {
    pull_fixture(Mode::Single, true, (Comp::None, Comp::Zstd, Comp::Zstd));
}

#[test]
fn quiet_pull_prints_the_image_id() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let built = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "q", "latest", &built);
    let out = user.run(&["pull", "-q", &format!("{}/q", reg.host)]);
    out.ok();
    assert_eq!(out.stdout.trim(), built.config_digest);
    assert!(out.stderr.is_empty(), "-q must be quiet: {}", out.stderr);
}

#[test]
fn progress_bars_on_a_terminal() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    if !Path::new("/usr/bin/script").exists() {
        support::skip("script(1) from util-linux is needed to give nook a terminal");
        return;
    }
    let built = image::build(
        &fixture_layers(Comp::Gzip, Comp::Gzip, Comp::Gzip),
        &ImageOpts::default(),
    );
    image::push(&reg.url, "tty/app", "v1", &built);
    // script(1) runs the command on a new pseudo-terminal and copies what it printed.
    let cmd = format!("{} pull {}/tty/app:v1", user.bin.display(), reg.host);
    let mut c = std::process::Command::new("/usr/bin/script");
    c.args(["-qec", &cmd, "/dev/null"]).env_clear();
    for (k, v) in user.nook(&[]).get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        c.uid(user.uid).gid(user.gid);
    }
    c.current_dir(user.work.path()).env("TERM", "xterm");
    let out = support::env::Out::from(c.output().unwrap());
    out.ok();
    let text = out.stdout;
    assert!(text.contains("Pull complete"), "{text}");
    assert!(
        text.contains("MiB") || text.contains("KiB"),
        "no byte counts in the bars: {text}"
    );
    assert!(text.contains("/s"), "no speed in the bars: {text}");
}
