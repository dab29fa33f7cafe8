//! What a build reads: COPY (globs, directories, symlinks, --chown with the image's names,
//! --chmod, .dockerignore and its re-includes), the Dockerfile's name and place (Containerfile,
//! `-f -`, a context tar on stdin), ADD (local archives of four compressions, URLs with
//! --checksum), and stages (COPY --from by name, index and image; --target building only what
//! it needs). Hostile contexts, archives and images are in tests/build_hostile.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;

use serde_json::json;
use support::build::{Builder, Ctx, config, http_serve, printed, run_out, sh_out, tar_of};
use support::env::Mode;
use support::image::{LayerTar, sha256};
use support::sandbox::Sandbox;

fn copy_sources_owners_modes_and_ignores(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "copy");
    ctx.file("src/a.txt", b"a\n")
        .file("src/b.txt", b"b\n")
        .file("src/c.md", b"c\n")
        .file("tree/sub/f", b"f\n")
        .symlink("tree/link", "sub/f")
        .symlink("tree/abs", "/etc/passwd")
        .file("owned.txt", b"o\n")
        .file("mode.sh", b"#!/bin/sh\n")
        .file("ignored/x", b"x\n")
        .file("ignored/keep.txt", b"k\n")
        .file("debug.log", b"l\n")
        .file("tree/sub/deep/x.tmp", b"t\n")
        .file(
            ".dockerignore",
            b"# a comment\nignored\n!ignored/keep.txt\n*.log\n**/*.tmp\n",
        )
        .dockerfile(
            "FROM {base}\n\
COPY src/*.txt /glob/\n\
COPY tree /tree\n\
COPY --chown=user:user owned.txt /owned\n\
COPY --chown=1234:65534 owned.txt /owned-num\n\
COPY --chown=nobody owned.txt /owned-name\n\
COPY --chmod=0750 mode.sh /mode.sh\n\
COPY . /ctx\n\
COPY src/a.txt /newdir/\n\
COPY src/a.txt /renamed\n\
COPY --link src/b.txt /linked/\n",
            &s.image,
        );
    std::fs::hard_link(ctx.join("tree/sub/f"), ctx.join("tree/hard")).unwrap();
    Builder::new(&s).build(&["-t", "copy:1"], &ctx).ok();
    let got = sh_out(
        &s,
        "copy:1",
        "ls /glob; echo --; ls -A /tree; readlink /tree/link; readlink /tree/abs; cat /tree/link; \
         stat -c '%u:%g' /owned /owned-num /owned-name; stat -c '%a' /mode.sh; \
         ls -A /ctx/ignored; test ! -e /ctx/debug.log && echo no-log; cat /newdir/a.txt /renamed /linked/b.txt; \
         test -d /tree/sub/deep && test ! -e /tree/sub/deep/x.tmp && echo no-tmp; \
         test $(stat -c %i /tree/hard) = $(stat -c %i /tree/sub/f) && echo hard-link-kept",
    );
    assert_eq!(
        got,
        "a.txt\nb.txt\n--\nabs\nhard\nlink\nsub\nsub/f\n/etc/passwd\nf\n\
1234:1234\n1234:65534\n65534:65534\n750\nkeep.txt\nno-log\na\na\nb\nno-tmp\nhard-link-kept\n"
    );
}

#[test]
fn copy_sources_owners_modes_and_ignores_range() {
    copy_sources_owners_modes_and_ignores(Mode::Range);
}

#[test]
fn copy_sources_owners_modes_and_ignores_single() {
    copy_sources_owners_modes_and_ignores(Mode::Single);
}

#[test]
fn dockerfile_names_places_and_stdin() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let b = Builder::new(&s);
    // FILE.dockerignore beats .dockerignore.
    let ctx = Ctx::new(&s.user, "ign");
    ctx.file("a", b"a")
        .file("b", b"b")
        .file(".dockerignore", b"a\n")
        .file("Dockerfile.dockerignore", b"b\n")
        .dockerfile("FROM {base}\nCOPY . /c\n", &s.image);
    b.build(&["-t", "ign:1"], &ctx).ok();
    assert_eq!(
        sh_out(&s, "ign:1", "test -e /c/a && test ! -e /c/b && echo ok"),
        "ok\n"
    );
    // A Containerfile, found without a Dockerfile.
    let cf = Ctx::new(&s.user, "cf");
    cf.named(
        "Containerfile",
        "FROM {base}\nLABEL from=containerfile\n",
        &s.image,
    );
    b.build(&["-t", "cf:1"], &cf).ok();
    assert_eq!(config(&s, "cf:1")["Labels"]["from"], "containerfile");
    // -f names a file elsewhere in the context; the FILE.dockerignore beside it applies.
    ctx.named("sub/app.df", "FROM {base}\nCOPY . /c\n", &s.image)
        .file("sub/app.df.dockerignore", b"b\n");
    let df = ctx.join("sub/app.df");
    b.nook(
        &[
            "build",
            "-t",
            "sub:1",
            "-f",
            df.to_str().unwrap(),
            ctx.path(),
        ],
        &[],
        None,
    )
    .ok();
    assert_eq!(
        sh_out(&s, "sub:1", "test -e /c/a && test ! -e /c/b && echo ok"),
        "ok\n"
    );
    // The Dockerfile on stdin, with a context directory.
    let plain = Ctx::new(&s.user, "plain");
    plain.file("b", b"b");
    let df = format!("FROM {}\nCOPY b /from-stdin-df\n", s.image);
    b.build_stdin(&["-f", "-", "-t", "stdin:1", plain.path()], df.as_bytes())
        .ok();
    assert_eq!(run_out(&s, "stdin:1", &["cat", "/from-stdin-df"]), "b");
    // The whole context as a tar on stdin.
    let df = format!("FROM {}\nCOPY data.txt /data.txt\n", s.image);
    let tar = tar_of(&[
        ("Dockerfile", df.as_bytes(), 0o644),
        ("data.txt", b"from-tar\n", 0o644),
    ]);
    b.build_stdin(&["-t", "tar:1", "-"], &tar).ok();
    assert_eq!(run_out(&s, "tar:1", &["cat", "/data.txt"]), "from-tar\n");
}

#[test]
fn add_unpacks_local_archives() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let inner = |fmt: &str| {
        tar_of(&[(
            &format!("pkg/{fmt}"),
            format!("in-{fmt}\n").as_bytes(),
            0o644,
        )])
    };
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&inner("gz")).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&inner("xz")).unwrap();
        e.finish().unwrap()
    };
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&inner("bz2")).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&inner("zst")[..], 3).unwrap();
    let ctx = Ctx::new(&s.user, "add");
    ctx.file("a.tar.gz", &gz)
        .file("a.tar.xz", &xz)
        .file("a.tar.bz2", &bz2)
        .file("a.tar.zst", &zst)
        .file("plain.tar", &inner("plain"))
        .file("text.txt", b"text\n")
        .dockerfile(
            "FROM {base}\nADD a.tar.gz /x/\nADD a.tar.xz /x/\nADD a.tar.bz2 /x/\nADD a.tar.zst /x/\n\
ADD plain.tar /x/\nADD text.txt /text.txt\nCOPY a.tar.gz /copied.tar.gz\n",
            &s.image,
        );
    Builder::new(&s).build(&["-t", "add:1"], &ctx).ok();
    assert_eq!(
        sh_out(
            &s,
            "add:1",
            "cat /x/pkg/gz /x/pkg/xz /x/pkg/bz2 /x/pkg/zst /x/pkg/plain /text.txt; test -f /copied.tar.gz && echo kept"
        ),
        "in-gz\nin-xz\nin-bz2\nin-zst\nin-plain\ntext\nkept\n"
    );
}

#[test]
fn add_fetches_urls_with_a_checksum() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let body = b"remote-content\n".to_vec();
    let right = sha256(&body);
    let url = http_serve(body);
    let ctx = Ctx::new(&s.user, "url");
    ctx.dockerfile(
        &format!(
            "FROM {{base}}\nADD --checksum={right} {url}/files/remote.txt /dl/\nADD {url}/files/remote.txt /named\n"
        ),
        &s.image,
    );
    let b = Builder::new(&s);
    b.build(&["-t", "url:1"], &ctx).ok();
    assert_eq!(
        sh_out(&s, "url:1", "cat /dl/remote.txt /named; stat -c %a /named"),
        "remote-content\nremote-content\n600\n"
    );
    let wrong = sha256(b"something else");
    let bad = Ctx::new(&s.user, "badsum");
    bad.dockerfile(
        &format!("FROM {{base}}\nADD --checksum={wrong} {url}/files/remote.txt /dl/\n"),
        &s.image,
    );
    let out = b.build(&["-t", "badsum:1"], &bad);
    assert_ne!(out.code, 0, "a wrong checksum built");
    let all = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(all.contains("checksum") || all.contains("digest"), "{all}");
    assert_ne!(s.nook(&["inspect", "badsum:1"]).code, 0);
    // The server's Last-Modified is the file's mtime, as docker's ADD documents.
    assert_eq!(sh_out(&s, "url:1", "stat -c %Y /named"), "1700000000\n");
}

#[test]
fn stages_copy_from_name_index_and_image() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let other = s.image_over_busybox(
        "other",
        LayerTar::new()
            .file("marker", b"from-image\n", 0o644)
            .finish(),
        json!({"Cmd": ["sh"]}),
    );
    let ctx = Ctx::new(&s.user, "stages");
    ctx.dockerfile(
        &format!(
            "FROM {{base}} AS first\nRUN echo from-first > /a\n\
FROM {{base}}\nRUN echo from-index > /b\n\
FROM first AS derived\nRUN cat /a > /derived\n\
FROM {{base}} AS final\n\
COPY --from=first /a /got/a\nCOPY --from=1 /b /got/b\nCOPY --from={other} /marker /got/c\n\
COPY --from=derived /derived /got/d\n"
        ),
        &s.image,
    );
    Builder::new(&s).build(&["-t", "stages:1"], &ctx).ok();
    assert_eq!(
        run_out(
            &s,
            "stages:1",
            &["cat", "/got/a", "/got/b", "/got/c", "/got/d"]
        ),
        "from-first\nfrom-index\nfrom-image\nfrom-first\n"
    );
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "target");
    ctx.dockerfile(
        "FROM {base} AS ok\nRUN echo ok > /ok\n\
FROM {base} AS broken\nRUN echo broken-ran && exit 3\n\
FROM {base} AS unneeded\nRUN echo unneeded-ran\n\
FROM ok AS wanted\nRUN cat /ok\n\
FROM broken AS last\nRUN true\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let out = b.build(&["--target", "wanted", "-t", "wanted:1"], &ctx);
    out.ok();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("broken-ran"), "a stage not needed ran: {all}");
    assert!(
        !all.contains("unneeded-ran"),
        "a stage not needed ran: {all}"
    );
    assert_eq!(run_out(&s, "wanted:1", &["cat", "/ok"]), "ok\n");
    // Without --target the last stage needs the broken one.
    let out = b.build(&["-t", "last:1"], &ctx);
    assert_ne!(out.code, 0, "the broken stage built");
    assert!(printed(&out, "broken-ran"), "{out:?}");
    let out = b.build(&["--target", "nosuch"], &ctx);
    assert_ne!(out.code, 0, "an unknown target built");
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
}
