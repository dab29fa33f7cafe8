//! The hostile tar context and ADD (archives and URLs).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use super::add::{Compression, is_archive, sniff, url_file_name};
use super::tests::{context_with, find, open, paths, plan, plan_in, req};
use super::*;
use crate::build::entry::{EntryKind, Source};

/// One tar entry written by hand, so that paths the tar crate refuses (`../x`) can be made.
fn raw(out: &mut Vec<u8>, path: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0; 1024]);
    out
}

/// `outer/scratch` (empty) and `outer`, to check nothing lands beside the scratch.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let s = outer.path().join("scratch");
    fs::create_dir(&s).unwrap();
    (outer, s)
}

fn outer_names(outer: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_context_tar_cannot_write_outside_the_scratch() {
    let reg = tar::EntryType::Regular;
    let (outer, s) = scratch();
    let mut t = Vec::new();
    raw(&mut t, "Dockerfile", reg, "", b"FROM x\n", 0o644);
    raw(&mut t, "../evil", reg, "", b"evil", 0o644);
    assert!(Context::from_tar(&end(t)[..], &s, None).is_err());
    assert_eq!(outer_names(outer.path()), ["scratch"]);

    let (outer, s) = scratch();
    let mut t = Vec::new();
    raw(&mut t, "Dockerfile", reg, "", b"FROM x\n", 0o644);
    raw(&mut t, "/abs/file", reg, "", b"abs", 0o644);
    let host = outer.path().display().to_string();
    raw(&mut t, "out", tar::EntryType::Symlink, &host, b"", 0o777);
    raw(&mut t, "out/escaped", reg, "", b"evil", 0o644);
    raw(&mut t, "up", tar::EntryType::Symlink, "../..", b"", 0o777);
    raw(&mut t, "up/escaped2", reg, "", b"evil", 0o644);
    let result = Context::from_tar(&end(t)[..], &s, None);
    assert_eq!(outer_names(outer.path()), ["scratch"], "{result:?}");
    assert!(!Path::new("/escaped2").exists());
    assert_eq!(
        fs::read(s.join("abs/file")).unwrap(),
        b"abs",
        "absolute paths land inside"
    );
}

#[test]
fn a_context_tar_drops_owners_and_finds_its_dockerfile_inside() {
    let reg = tar::EntryType::Regular;
    let (_outer, s) = scratch();
    let mut t = Vec::new();
    raw(&mut t, "sub/Df", reg, "", b"FROM t\n", 0o644);
    raw(&mut t, "sub/Df.dockerignore", reg, "", b"skip\n", 0o644);
    raw(&mut t, "suid", reg, "", b"x", 0o4755);
    raw(&mut t, "skip", reg, "", b"x", 0o644);
    raw(&mut t, "fifo", tar::EntryType::Fifo, "", b"", 0o644);
    let (ctx, df) = Context::from_tar(&end(t)[..], &s, Some("sub/Df")).unwrap();
    assert_eq!((df.name.as_str(), df.text.as_str()), ("sub/Df", "FROM t\n"));
    let meta = ctx.stat(Path::new("suid")).unwrap().unwrap();
    assert_eq!((meta.uid, meta.gid, meta.mode), (0, 0, 0o4755));
    assert_eq!(ctx.stat(Path::new("skip")).unwrap(), None);
    assert_eq!(
        ctx.stat(Path::new("fifo")).unwrap(),
        None,
        "only plain files"
    );

    let (_outer, s) = scratch();
    let mut t = Vec::new();
    raw(&mut t, "Dockerfile", reg, "", b"FROM t\n", 0o644);
    let err = Context::from_tar(&end(t)[..], &s, Some("../Df")).unwrap_err();
    assert!(matches!(err, ContextError::DockerfileOutside(_)), "{err}");
    let err = Context::from_tar(&b""[..], &s, None).unwrap_err();
    assert!(matches!(err, ContextError::Scratch(_)), "{err}");
}

/// A tar with a root-owned file, a setuid file owned by 1000, a link and a hard link.
fn package_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: &str, data: &[u8], mode, uid| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1000);
        if link.is_empty() {
            b.append_data(&mut h, path, data).unwrap();
        } else {
            b.append_link(&mut h, path, link).unwrap();
        }
    };
    add("pkg/", tar::EntryType::Directory, "", b"", 0o750, 1000);
    add("pkg/bin", tar::EntryType::Regular, "", b"elf", 0o4755, 1000);
    add("pkg/plain", tar::EntryType::Regular, "", b"p", 0o644, 0);
    add("pkg/l", tar::EntryType::Symlink, "bin", b"", 0o777, 0);
    add("pkg/h", tar::EntryType::Link, "pkg/bin", b"", 0o644, 0);
    b.into_inner().unwrap()
}

fn compress(data: &[u8], how: Compression) -> Vec<u8> {
    match how {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

#[test]
fn archives_are_recognised_by_content_in_every_compression() {
    let tar = package_tar();
    for how in [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ] {
        let bytes = compress(&tar, how);
        assert_eq!(sniff(&bytes), how);
        assert!(is_archive(&bytes[..]), "{how:?}");
        assert!(
            !is_archive(&compress(b"just text, no tar here", how)[..]),
            "{how:?}"
        );
    }
}

#[test]
fn add_unpacks_a_local_archive_with_its_owners() {
    let dir = context_with(&[]);
    fs::write(
        dir.path().join("data.bin"),
        compress(&package_tar(), Compression::Gzip),
    )
    .unwrap();
    let ctx = open(dir.path());
    let mut r = req(&["data.bin"], "/opt");
    r.add = true;
    let keep = tempfile::tempdir().unwrap();
    let got = plan_in(&ctx, &r, keep.path()).unwrap();
    assert_eq!(
        paths(&got),
        [
            "opt",
            "opt/pkg",
            "opt/pkg/bin",
            "opt/pkg/h",
            "opt/pkg/l",
            "opt/pkg/plain"
        ]
    );
    let bin = find(&got, "opt/pkg/bin");
    assert_eq!((bin.uid, bin.gid, bin.mode), (1000, 1000, 0o4755));
    let pkg = find(&got, "opt/pkg");
    assert_eq!((pkg.uid, pkg.mode), (1000, 0o750));
    assert_eq!(find(&got, "opt/pkg/plain").uid, 0);
    assert_eq!(
        find(&got, "opt/pkg/l").kind,
        EntryKind::Symlink("bin".into())
    );
    assert_eq!(
        find(&got, "opt/pkg/h").kind,
        EntryKind::Hardlink("opt/pkg/bin".into())
    );
    let EntryKind::File {
        source: Source::Beneath { root, rel },
        ..
    } = &bin.kind
    else {
        panic!("{bin:?}");
    };
    assert_eq!(fs::read(root.join(rel)).unwrap(), b"elf");

    r.chown = Some((5, 6));
    let got = plan(&ctx, &r).unwrap();
    assert!(got.iter().all(|e| (e.uid, e.gid) == (5, 6)));
    let copy = plan(&ctx, &req(&["data.bin"], "/opt/")).unwrap();
    assert_eq!(paths(&copy), ["opt", "opt/data.bin"], "COPY never unpacks");
}

/// Serves `body` at any path (404 for `/missing`) to `n` requests.
fn serve(body: &'static [u8], n: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut s = stream.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..k]);
            }
            let missing = req.starts_with(b"GET /missing");
            let (status, data) = if missing {
                ("404 Not Found", &b""[..])
            } else {
                ("200 OK", body)
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(data).unwrap();
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_a_url_and_checks_its_checksum() {
    let body: &'static [u8] = b"#!/bin/sh\necho hi\n";
    let base = serve(body, 4);
    let ctx = open(context_with(&[]).path());
    let url = format!("{base}/files/tool.sh?x=1");
    let mut r = req(&[url.as_str()], "/usr/local/bin/");
    r.add = true;
    r.checksum = Some(crate::digest::Digest::sha256_of(body).to_string());
    let keep = tempfile::tempdir().unwrap();
    let got = plan_in(&ctx, &r, keep.path()).unwrap();
    let e = find(&got, "usr/local/bin/tool.sh");
    assert_eq!((e.mode, e.uid, e.gid), (0o600, 0, 0));
    let EntryKind::File {
        size,
        source: Source::Beneath { root, rel },
    } = &e.kind
    else {
        panic!("{e:?}");
    };
    assert_eq!(
        (*size, fs::read(root.join(rel)).unwrap()),
        (body.len() as u64, body.to_vec())
    );

    let mut named = req(&[url.as_str()], "/tool");
    named.add = true;
    assert_eq!(paths(&plan(&ctx, &named).unwrap()), ["tool"]);

    let bad = format!("sha256:{}", "0".repeat(64));
    r.checksum = Some(bad.clone());
    let err = plan(&ctx, &r).unwrap_err().to_string();
    assert!(
        err.contains(&bad) && err.contains(&crate::digest::Digest::sha256_of(body).to_string()),
        "{err}"
    );

    let mut missing = req(&[&format!("{base}/missing")], "/x");
    missing.add = true;
    assert!(matches!(
        plan(&ctx, &missing),
        Err(CopyError::Download { .. })
    ));
    let copy = plan(&ctx, &req(&[url.as_str()], "/x/")).unwrap_err();
    assert!(matches!(copy, CopyError::UrlInCopy(_)), "{copy}");
}

#[test]
fn url_file_names_come_from_the_last_segment() {
    assert_eq!(
        url_file_name("https://h/a/b.tgz?x#y").as_deref(),
        Some("b.tgz")
    );
    assert_eq!(url_file_name("http://h:80/"), None);
    assert_eq!(url_file_name("http://h"), None);
}
