//! `nook export` and `nook import`: a container's filesystem flattened as podman export
//! writes it (no whiteouts, owners, setuid bits and hard links kept) on every rootfs rung in
//! both id modes, the tar turned back into a runnable image from a file, stdin or a URL in
//! any compression, and hostile tars refused with nothing written outside the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use support::build::{Podman, TarEntry, tar_entries};
use support::env::{Mode, Out};
use support::image::{Comp, LayerTar, compress};
use support::mock::{Mock, Resp};
use support::sandbox::Sandbox;

const MODES: [Mode; 2] = [Mode::Range, Mode::Single];
const RUNGS: [&str; 3] = ["overlay", "fuse", "copy"];

/// What the container does to the image's files before it is exported.
/// (`chown 42:42 /keep.txt` follows where owners other than the user's can be written.)
const CHANGES: &str = "rm /gone.txt && rm -rf /tree && mkdir /tree && echo new > /tree/n \
    && echo more >> /keep.txt && ln /keep.txt /keep-link \
    && mkdir -p /made/deep && ln -s ../keep.txt /made/link";

/// Whether a container on `rung` can give a file to another owner: a subordinate range can
/// anywhere; a single mapping only through the fakeroot, which serves the FUSE rung (on the
/// kernel overlay and the copy rung with one id mapped, `chown` to an unmapped id is EINVAL).
fn can_chown(mode: Mode, rung: &str) -> bool {
    mode == Mode::Range || rung == "fuse"
}

fn changes(mode: Mode, rung: &str) -> String {
    if can_chown(mode, rung) {
        format!("{CHANGES} && chown 42:42 /keep.txt")
    } else {
        CHANGES.to_owned()
    }
}

/// An image over busybox with files the container deletes, replaces and changes.
fn export_image(s: &Sandbox) -> String {
    let top = LayerTar::new()
        .file("gone.txt", b"deleted later\n", 0o644)
        .dir("tree", 0o755)
        .file("tree/old", b"replaced later\n", 0o644)
        .file("keep.txt", b"kept\n", 0o644)
        .file_owned("suid", b"#!/bin/sh\n", 0o4755, 1234, 1234)
        .file("a", b"linked\n", 0o644)
        .hardlink("b", "a")
        .finish();
    s.image_over_busybox("exp", top, json!({"Cmd": ["sh"]}))
}

/// The tar `nook export` wrote, by path (without a leading `./` or `/`, directories without
/// their trailing `/`).
fn by_path(entries: Vec<TarEntry>) -> BTreeMap<String, TarEntry> {
    entries
        .into_iter()
        .map(|e| {
            let p = e.path.trim_start_matches("./").trim_start_matches('/');
            (p.trim_end_matches('/').to_owned(), e)
        })
        .filter(|(p, _)| !p.is_empty())
        .collect()
}

/// Runs the changes in a container named `name` with `rung`; `None` (after a printed skip)
/// where this host has no such rung.
fn changed_container(s: &Sandbox, mode: Mode, image: &str, name: &str, rung: &str) -> Option<()> {
    let out = s.nook(&[
        "run",
        "--name",
        name,
        "--rootfs-driver",
        rung,
        image,
        "sh",
        "-c",
        &changes(mode, rung),
    ]);
    if out.code != 0 && out.stderr.contains("not available") {
        support::skip(&format!("rootfs driver {rung}: {}", out.stderr));
        return None;
    }
    out.ok();
    Some(())
}

fn export_file(s: &Sandbox, name: &str) -> BTreeMap<String, TarEntry> {
    let file = s.user.home().join(format!("{name}.tar"));
    s.nook(&["export", "-o", file.to_str().unwrap(), name]).ok();
    by_path(tar_entries(&std::fs::read(&file).unwrap()))
}

fn check_exported(got: &BTreeMap<String, TarEntry>, owner: (u64, u64), what: &str) {
    assert!(
        got.keys()
            .all(|p| !p.rsplit('/').next().unwrap().starts_with(".wh.")),
        "{what}: whiteouts in an export: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    assert!(!got.contains_key("gone.txt"), "{what}");
    assert!(!got.contains_key("tree/old"), "{what}");
    assert_eq!(got["tree/n"].data, b"new\n", "{what}");
    // keep-link sorts first: it carries the content, keep.txt links to it.
    let keep = &got["keep-link"];
    assert_eq!(keep.data, b"kept\nmore\n", "{what}");
    assert_eq!((keep.uid, keep.gid), owner, "{what}");
    assert_eq!(got["keep.txt"].link.as_deref(), Some("keep-link"), "{what}");
    let bb = &got["bin/busybox"];
    assert!(
        bb.data.len() > 100_000,
        "{what}: busybox is {} bytes",
        bb.data.len()
    );
    assert_eq!(got["bin/sh"].link.as_deref(), Some("busybox"), "{what}");
    assert_eq!(
        got["made/link"].link.as_deref(),
        Some("../keep.txt"),
        "{what}"
    );
    assert_eq!(got["made/deep"].kind, tar::EntryType::Directory, "{what}");
    // Two names of one file: one carries the content, the other links to it.
    let pair = |a: &str, b: &str| {
        let (ea, eb) = (&got[a], &got[b]);
        let link = [ea, eb]
            .iter()
            .filter(|e| e.kind == tar::EntryType::Link)
            .count();
        assert_eq!(link, 1, "{what}: {a} and {b} are one file");
    };
    pair("a", "b");
    pair("keep.txt", "keep-link");
}

#[test]
fn export_flattens_the_container_on_every_rung() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = export_image(&s);
        for rung in RUNGS {
            let name = format!("exp-{rung}");
            if changed_container(&s, mode, &image, &name, rung).is_none() {
                continue;
            }
            let got = export_file(&s, &name);
            let owner = if can_chown(mode, rung) {
                (42, 42)
            } else {
                (0, 0)
            };
            let what = format!("{mode:?} {rung}");
            check_exported(&got, owner, &what);
            // The image's owners and setuid bit, as a container sees them where its rung
            // shows them (a single mapping's kernel overlay shows every file as root's: the
            // export keeps the owner record; its copy rung copies without the records, and
            // the export shows what the container saw).
            let seen = s.nook(&[
                "run",
                "--rm",
                "--rootfs-driver",
                rung,
                &image,
                "stat",
                "-c",
                "%u %g %a",
                "/suid",
            ]);
            seen.ok();
            let e = &got["suid"];
            let exported = format!("{} {} {:o}\n", e.uid, e.gid, e.mode & 0o7777);
            if mode == Mode::Range || rung == "fuse" {
                assert_eq!(seen.stdout, "1234 1234 4755\n", "{what}");
            }
            if mode == Mode::Single && rung == "copy" {
                assert_eq!(exported, seen.stdout, "{what}");
            } else {
                assert_eq!(exported, "1234 1234 4755\n", "{what}");
            }
            // To stdout too, the same bytes.
            let file = s.user.home().join(format!("{name}.tar"));
            let out = s.user.nook(&["export", &name]).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, std::fs::read(&file).unwrap(), "{mode:?} {rung}");
        }
    }
}

/// The entries both exports must agree on: paths, kinds, modes, owners, link targets and
/// file contents (times and the files each tool mounts itself left out).
fn comparable(m: &BTreeMap<String, TarEntry>) -> BTreeMap<String, String> {
    // podman also links /etc/mtab to /proc/mounts when it is missing.
    let mounted = [
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "etc/mtab",
        "run",
        "dev",
        "proc",
        "sys",
    ];
    m.iter()
        .filter(|(p, _)| {
            !mounted
                .iter()
                .any(|x| *p == x || p.starts_with(&format!("{x}/")))
        })
        .map(|(p, e)| {
            let link = if e.kind == tar::EntryType::Link {
                "hardlink"
            } else {
                ""
            };
            // A hard link stands for its target's content, whichever name carries it.
            let data = match (e.kind, &e.link) {
                (tar::EntryType::Regular, _) => support::image::sha256(&e.data),
                (tar::EntryType::Link, Some(t)) => m
                    .get(t.trim_start_matches("./").trim_start_matches('/'))
                    .map(|t| support::image::sha256(&t.data))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let v = format!(
                "{:?}{link} {:o} {}:{} {:?} {data}",
                if e.kind == tar::EntryType::Link {
                    tar::EntryType::Regular
                } else {
                    e.kind
                },
                e.mode & 0o7777,
                e.uid,
                e.gid,
                e.link
                    .as_ref()
                    .filter(|_| e.kind == tar::EntryType::Symlink),
            );
            (p.clone(), v)
        })
        .collect()
}

#[test]
fn export_agrees_with_podman_export() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let Some(p) = Podman::new(&s.user) else {
        return;
    };
    let image = export_image(&s);
    changed_container(&s, Mode::Range, &image, "oracle", "overlay").unwrap();
    let ours = comparable(&export_file(&s, "oracle"));
    p.run(&["pull", "-q", "--tls-verify=false", &image]).ok();
    let script = changes(Mode::Range, "overlay");
    p.run(&[
        "run",
        "--network",
        "none",
        "--name",
        "oracle",
        &image,
        "sh",
        "-c",
        &script,
    ])
    .ok();
    let file = s.user.home().join("podman.tar");
    p.run(&["export", "-o", file.to_str().unwrap(), "oracle"])
        .ok();
    let raw = by_path(tar_entries(&std::fs::read(&file).unwrap()));
    let theirs = comparable(&raw);
    // A hard link may be written from either name: compare the pairs as files.
    let norm = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(p, v)| (p, v.replace("hardlink", "")))
            .collect()
    };
    let (ours, theirs) = (norm(ours), norm(theirs));
    let only = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(only(&ours, &theirs), Vec::<String>::new(), "only nook's");
    assert_eq!(only(&theirs, &ours), Vec::<String>::new(), "only podman's");
}

/// `nook import` of `bytes` from stdin with `args`; the id printed.
fn import_stdin(s: &Sandbox, args: &[&str], bytes: &[u8]) -> Out {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    s.user.run_input(&all, &[], bytes)
}

#[test]
fn an_export_imports_as_a_runnable_image() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = export_image(&s);
        let rung = if mode == Mode::Range {
            "overlay"
        } else {
            "fuse"
        };
        changed_container(&s, mode, &image, "src", rung).unwrap();
        let file = s.user.home().join("src.tar");
        s.nook(&["export", "-o", file.to_str().unwrap(), "src"])
            .ok();
        let tar = std::fs::read(&file).unwrap();
        let out = s.nook(&[
            "import",
            "-c",
            "CMD [\"cat\", \"/tree/n\"]",
            "-c",
            "ENV GREETING=hi",
            "-m",
            "from an export",
            file.to_str().unwrap(),
            "localhost/imported:v1",
        ]);
        out.ok();
        let id = out.stdout.trim().to_owned();
        assert!(id.starts_with("sha256:"), "{id}");
        let ran = s.nook(&["run", "--rm", "localhost/imported:v1"]);
        ran.ok();
        assert_eq!(ran.stdout, "new\n", "{mode:?}");
        let ran = s.nook(&[
            "run",
            "--rm",
            "localhost/imported:v1",
            "sh",
            "-c",
            "echo $GREETING; stat -c '%u:%g %a' /keep.txt /suid; cat /b",
        ]);
        ran.ok();
        assert_eq!(
            ran.stdout, "hi\n42:42 644\n1234:1234 4755\nlinked\n",
            "{mode:?}"
        );
        let cfg = support::build::config_blob(&s, "localhost/imported:v1");
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        assert_eq!(cfg["history"][0]["comment"], "from an export");
        assert_eq!(cfg["config"]["Cmd"], json!(["cat", "/tree/n"]));
        // The layer is the tar itself: its diff_id is the tar's digest.
        assert_eq!(cfg["rootfs"]["diff_ids"][0], support::image::sha256(&tar));
        // Compressed, from stdin, with no name: the same layer, a new image.
        for comp in [Comp::Gzip, Comp::Zstd] {
            let out = import_stdin(&s, &["-"], &compress(&tar, comp));
            out.ok();
            let id2 = out.stdout.trim();
            let cfg2 = support::build::config_blob(&s, id2);
            assert_eq!(cfg2["rootfs"], cfg["rootfs"], "{comp:?}");
            assert_eq!(cfg2["history"][0]["comment"], "Imported from -");
        }
    }
}

#[test]
fn import_fetches_a_url() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let tar = LayerTar::new()
        .dir("bin", 0o755)
        .file(
            "bin/busybox",
            &std::fs::read(support::image::BUSYBOX).unwrap(),
            0o755,
        )
        .symlink("bin/sh", "busybox")
        .symlink("bin/cat", "busybox")
        .file("hello", b"from a url\n", 0o644)
        .finish();
    let body = compress(&tar, Comp::Gzip);
    let mock = Mock::start(move |req| {
        if req.path == "/rootfs.tar.gz" {
            Resp::new(200).body(body.clone())
        } else {
            Resp::new(404)
        }
    });
    let url = format!("http://{}/rootfs.tar.gz", mock.host());
    let out = s.nook(&["import", &url, "localhost/fromurl"]);
    out.ok();
    let ran = s.nook(&["run", "--rm", "localhost/fromurl", "cat", "/hello"]);
    ran.ok();
    assert_eq!(ran.stdout, "from a url\n");
    let cfg = support::build::config_blob(&s, "localhost/fromurl");
    assert_eq!(cfg["history"][0]["comment"], format!("Imported from {url}"));
    // A missing URL is an error naming it, and no image.
    let missing = format!("http://{}/nothing.tar", mock.host());
    s.nook(&["import", &missing, "localhost/nothing"])
        .fails_with(125, &missing);
    s.nook(&["image", "inspect", "localhost/nothing"])
        .fails_with(1, "no such image");
}

#[test]
fn hostile_imports_are_refused_and_write_nothing_outside() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let outside = s.user.home().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        s.user.give(&outside);
        let before = s.nook(&["images", "-q", "--no-trunc"]).stdout;
        let escape = format!("{}/escaped", outside.display());
        // (what, the tar, what the refusal says; None: the tar is taken, its absolute name
        // put inside the image, as docker import does)
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            (
                "dotdot",
                raw_tar(&[("../../../../../../../..".to_owned() + &escape, b"x")]),
                Some("climbs out of the layer"),
            ),
            ("absolute", raw_tar(&[(escape.clone(), b"x")]), None),
            (
                "through a link",
                {
                    let mut t = LayerTar::new()
                        .symlink("out", outside.to_str().unwrap())
                        .finish();
                    t.truncate(t.len() - 1024);
                    t.extend(raw_tar(&[("out/escaped".to_owned(), b"x")]));
                    t
                },
                Some("out/escaped"),
            ),
            (
                "not a tar",
                b"this is not a tar archive at all, not even close".repeat(20),
                Some("not a tar archive"),
            ),
        ];
        for (what, bytes, refused) in cases {
            let out = import_stdin(&s, &["-", "localhost/hostile"], &bytes);
            match refused {
                Some(why) => {
                    out.fails_with(125, why);
                }
                None => {
                    out.ok();
                    let cfg = support::build::config_blob(&s, "localhost/hostile");
                    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
                    s.nook(&["rmi", "localhost/hostile"]).ok();
                }
            }
            assert!(
                !outside.join("escaped").exists(),
                "{mode:?} {what}: a file was written outside the store"
            );
        }
        assert_eq!(
            s.nook(&["images", "-q", "--no-trunc"]).stdout,
            before,
            "{mode:?}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{mode:?}");
        assert_no_tmp(&s.user.store());
    }
}

/// A tar with regular files at raw names (the tar crate refuses to write `..` itself).
fn raw_tar(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// No import left its temporary files in the store.
fn assert_no_tmp(store: &Path) {
    let tmp = store.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains("import")),
        "{left:?}"
    );
}
