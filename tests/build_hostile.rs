//! Hostile inputs to `nook build`: contexts whose symlinks point at host files (copied as
//! links, never followed out; bind-mount sources likewise), paths that climb out with `..`,
//! a context tar and an ADDed archive with escaping entries, and an image whose symlinks
//! point at a host directory. Nothing is read from or written to the host outside the
//! context, whatever the build's outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::build::{Builder, Ctx, run_out, sh_out, stored_files_holding};
use support::env::Mode;
use support::image::LayerTar;
use support::sandbox::{Sandbox, rand_suffix};

/// A file only root can read, outside every context; its unique content.
fn root_only_file() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::Builder::new()
        .prefix("nook-it-host-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let content = format!("host-only-{}-shadow", rand_suffix());
    let p = dir.path().join("shadow");
    std::fs::write(&p, &content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, p, content)
}

#[test]
fn hostile_contexts_never_copy_from_outside() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let (_keep, shadow, shadow_content) = root_only_file();
    // A file the user can read, beside the context.
    let readable_content = format!("beside-{}-context", rand_suffix());
    let readable = s
        .user
        .write_home("outside/readable.txt", readable_content.as_bytes());
    let ctx = Ctx::new(&s.user, "hostile");
    ctx.symlink("links/shadow", shadow.to_str().unwrap())
        .symlink("links/rel", "../../outside/readable.txt")
        .symlink("links/abs", readable.to_str().unwrap())
        .dockerfile("FROM {base}\nCOPY links /links\nCOPY . /all\n", &s.image);
    let b = Builder::new(&s);
    b.build(&["-t", "hostile:1"], &ctx).ok();
    let got = sh_out(
        &s,
        "hostile:1",
        "readlink /links/shadow; readlink /links/rel; readlink /links/abs; readlink /all/links/rel",
    );
    assert_eq!(
        got,
        format!(
            "{}\n../../outside/readable.txt\n{}\n../../outside/readable.txt\n",
            shadow.display(),
            readable.display()
        )
    );
    // A symlink named as the source itself or met on the way to it, and a path that
    // climbs out; a bind mount's source likewise.
    let outside = readable.parent().unwrap().to_str().unwrap().to_owned();
    for (i, line) in [
        "COPY links/abs /top",
        "COPY links/rel /top",
        "ADD links/abs /top",
        "COPY links/absdir/readable.txt /top",
        "COPY links/reldir/readable.txt /top",
        "ADD links/absdir/readable.txt /top",
        "RUN --mount=type=bind,source=links/absdir,target=/m cat /m/readable.txt",
        "RUN --mount=type=bind,source=links/abs,target=/m cat /m",
        "COPY ../outside/readable.txt /x",
        "COPY /../outside/readable.txt /x",
    ]
    .iter()
    .enumerate()
    {
        let c = Ctx::new(&s.user, &format!("climb{i}"));
        c.symlink("links/abs", readable.to_str().unwrap())
            .symlink("links/rel", "../../outside/readable.txt")
            .symlink("links/absdir", &outside)
            .symlink("links/reldir", "../../outside")
            .dockerfile(&format!("FROM {{base}}\n{line}\n"), &s.image);
        let out = b.build(&["-t", &format!("climb:{i}")], &c);
        assert!(
            !format!("{}{}", out.stdout, out.stderr).contains(&readable_content),
            "{line}: the host file was read: {}",
            out.stdout
        );
        if line.starts_with("RUN") {
            continue;
        }
        if line.contains("..") {
            assert_ne!(out.code, 0, "{line}: built");
        } else if out.code == 0 {
            let what = sh_out(&s, &format!("climb:{i}"), "readlink /top || cat /top");
            assert!(
                !what.contains(&readable_content),
                "{line}: copied the host file"
            );
        }
    }
    for content in [&shadow_content, &readable_content] {
        let found = stored_files_holding(&s, content.as_bytes());
        assert!(
            found.is_empty(),
            "a host file's content is stored in {found:?}"
        );
    }
}

#[test]
fn hostile_context_tar_writes_nothing_outside() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let target = tempfile::Builder::new()
        .prefix("nook-it-pwn-")
        .tempdir_in("/tmp")
        .unwrap();
    s.user.give(target.path());
    let tag = format!("pwned-{}", rand_suffix());
    let df = format!("FROM {}\nCOPY . /c\n", s.image);
    let tar = LayerTar::new()
        .file("Dockerfile", df.as_bytes(), 0o644)
        .symlink("evil", target.path().to_str().unwrap())
        .file(&format!("evil/{tag}"), b"through a link", 0o644)
        .raw(
            format!("../{tag}-up").as_bytes(),
            tar::EntryType::Regular,
            b"",
            b"climbed",
            0o644,
            0,
            0,
        )
        .finish();
    let _ = Builder::new(&s).build_stdin(&["-t", "pwn:1", "-"], &tar);
    let inside: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(
        inside.is_empty(),
        "the context tar wrote through a link: {inside:?}"
    );
    let mut dirs = vec![
        s.user.work.path().to_owned(),
        std::path::PathBuf::from("/tmp"),
    ];
    let mut found = Vec::new();
    while let Some(d) = dirs.pop() {
        let deep = d.starts_with(s.user.work.path());
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == format!("{tag}-up") {
                found.push(e.path());
            }
            if deep && e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    assert!(found.is_empty(), "a `..` entry was written: {found:?}");
}

/// ADD unpacks an archive inside the image: entries that climb out with `..`, write through
/// a symlink to a host directory, or hard-link a host file reach nothing outside.
#[test]
fn hostile_archive_added_stays_inside() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let target = tempfile::Builder::new()
        .prefix("nook-it-add-")
        .tempdir_in("/tmp")
        .unwrap();
    s.user.give(target.path());
    let victim = target.path().join("victim");
    let victim_content = format!("victim-{}-content", rand_suffix());
    std::fs::write(&victim, &victim_content).unwrap();
    s.user.give(&victim);
    let dir = target.path().to_str().unwrap();
    let climb = format!("../../../../../../../..{dir}/escaped-up");
    let evil = LayerTar::new()
        .file("ok.txt", b"inside\n", 0o644)
        .raw(
            climb.as_bytes(),
            tar::EntryType::Regular,
            b"",
            b"climbed",
            0o644,
            0,
            0,
        )
        .symlink("lnk", dir)
        .file("lnk/escaped-link", b"through a link", 0o644)
        .hardlink("hl", &format!("{dir}/victim"))
        .finish();
    let ctx = Ctx::new(&s.user, "evil");
    ctx.file("evil.tar", &evil)
        .dockerfile("FROM {base}\nADD evil.tar /x/\n", &s.image);
    let out = Builder::new(&s).build(&["-t", "evil:1"], &ctx);
    let inside: Vec<String> = std::fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(inside, ["victim"], "ADD wrote outside the image: {out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), victim_content);
    let found = stored_files_holding(&s, victim_content.as_bytes());
    assert!(found.is_empty(), "a host file was linked into {found:?}");
    if out.code == 0 {
        assert_eq!(run_out(&s, "evil:1", &["cat", "/x/ok.txt"]), "inside\n");
    }
}

/// An image whose symlinks point at a host directory (absolutely, or climbing with `..`):
/// COPY, ADD and WORKDIR into them, COPY --from and bind mounts out of them, all resolve
/// inside the image and touch nothing of the host's.
#[test]
fn hostile_image_symlinks_stay_inside() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let target = tempfile::Builder::new()
        .prefix("nook-it-img-")
        .tempdir_in("/tmp")
        .unwrap();
    s.user.give(target.path());
    let victim_content = format!("host-victim-{}-content", rand_suffix());
    let victim = target.path().join("victim.txt");
    std::fs::write(&victim, &victim_content).unwrap();
    s.user.give(&victim);
    let dir = target.path().to_str().unwrap().to_owned();
    let top = LayerTar::new()
        .symlink("lnk", &dir)
        .symlink("up", "../../../../../../../..")
        .finish();
    let img = s.image_over_busybox("symlinks", top, json!({"Cmd": ["sh"]}));
    let src = s.user.write_home("secret", b"not-a-real-secret");
    let secret = format!("id=s,src={}", src.display());
    let b = Builder::new(&s);
    for (i, (from, line)) in [
        (&img, "COPY f.txt /lnk/copied".to_owned()),
        (&img, "ADD f.txt /lnk/added".to_owned()),
        (&img, format!("COPY f.txt /up{dir}/climbed")),
        (&img, "WORKDIR /lnk/made".to_owned()),
        (&img, "RUN echo x > /lnk/ran".to_owned()),
        (&s.image, format!("COPY --from={img} /lnk/victim.txt /x")),
        (
            &s.image,
            format!("COPY --from={img} /up{dir}/victim.txt /x"),
        ),
        (&img, "RUN --mount=type=tmpfs,target=/lnk/t true".to_owned()),
        (&img, "RUN --mount=type=cache,target=/lnk/c true".to_owned()),
        (&img, "RUN --mount=type=bind,target=/lnk/b true".to_owned()),
        (
            &img,
            "RUN --mount=type=secret,id=s,target=/lnk/sec true".to_owned(),
        ),
        (
            &s.image,
            format!("RUN --mount=type=bind,from={img},source=/lnk,target=/m cat /m/victim.txt"),
        ),
    ]
    .iter()
    .enumerate()
    {
        let c = Ctx::new(&s.user, &format!("imgsym{i}"));
        c.file("f.txt", b"from-context\n")
            .dockerfile(&format!("FROM {{base}}\n{line}\n"), from);
        let out = b.build(&["-t", &format!("imgsym:{i}"), "--secret", &secret], &c);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains(&victim_content),
            "{line}: read the host file: {all}"
        );
        let inside: Vec<String> = std::fs::read_dir(target.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(inside, ["victim.txt"], "{line}: wrote on the host: {all}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), victim_content);
    let found = stored_files_holding(&s, victim_content.as_bytes());
    assert!(found.is_empty(), "the host file is stored in {found:?}");
}
