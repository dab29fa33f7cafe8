//! Unpacking real archives into temporary directories, hostile ones included. Each hostile
//! case checks that nothing outside the layer directory changed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::sys::xattr;

/// One archive entry, written with raw header bytes so that hostile names survive.
struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
}

fn e<'a>(name: &'a str, kind: tar::EntryType) -> E<'a> {
    E {
        name,
        kind,
        link: "",
        data: b"",
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(name, tar::EntryType::Regular)
    }
}

fn dir(name: &str) -> E<'_> {
    E {
        mode: 0o755,
        ..e(name, tar::EntryType::Directory)
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> E<'a> {
    E {
        link: target,
        mode: 0o777,
        ..e(name, kind)
    }
}

fn archive(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for en in entries {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..en.name.len()].copy_from_slice(en.name.as_bytes());
            u.linkname[..en.link.len()].copy_from_slice(en.link.as_bytes());
        }
        h.set_entry_type(en.kind);
        h.set_size(en.data.len() as u64);
        h.set_mode(en.mode);
        h.set_uid(en.uid);
        h.set_gid(en.gid);
        h.set_mtime(1_700_000_000);
        if en.kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, en.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A layer directory next to an "outside" directory holding a file and a subdirectory.
struct Scene {
    _tmp: tempfile::TempDir,
    layer: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    fs::create_dir(&layer).unwrap();
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("file"), b"precious").unwrap();
    fs::set_permissions(outside.join("file"), fs::Permissions::from_mode(0o640)).unwrap();
    Scene {
        _tmp: tmp,
        layer,
        outside,
    }
}

/// Everything about the outside directory that an escape could change.
fn snapshot(dir: &Path) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|x| x.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let data = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push((
                p.display().to_string(),
                m.mode(),
                m.nlink(),
                m.uid() as u64,
                data,
            ));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    let m = fs::metadata(dir).unwrap();
    out.push((
        dir.display().to_string(),
        m.mode(),
        m.nlink(),
        m.mtime() as u64,
        Vec::new(),
    ));
    out
}

fn run(s: &Scene, entries: &[E<'_>]) -> Result<UnpackStats, UnpackError> {
    unpack(&archive(entries)[..], &s.layer, Owners::Record)
}

/// Unpacks a hostile archive; whether it errors or not, the outside must be untouched.
fn hostile(entries: &[E<'_>]) -> (Scene, Result<UnpackStats, UnpackError>) {
    let s = scene();
    let before = snapshot(&s.outside);
    let r = run(&s, entries);
    assert_eq!(before, snapshot(&s.outside), "outside changed");
    (s, r)
}

#[test]
fn plain_layer() {
    let s = scene();
    let stats = run(
        &s,
        &[
            dir("etc/"),
            file("etc/hostname", b"box\n"),
            link("bin/sh", tar::EntryType::Symlink, "busybox"),
            file("bin/busybox", b"ELF"),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(s.layer.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(
        fs::read_link(s.layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.bytes, 7);
    assert_eq!(
        fs::metadata(s.layer.join("etc")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(s.layer.join("etc/hostname")).unwrap().mtime(),
        1_700_000_000
    );
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let s = scene();
    run(
        &s,
        &[
            dir("etc/"),
            file("etc/.wh.motd", b""),
            dir("usr/"),
            file("usr/.wh..wh..opq", b""),
            file("usr/new", b"x"),
        ],
    )
    .unwrap();
    let m = fs::symlink_metadata(s.layer.join("etc/motd")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!s.layer.join("etc/.wh.motd").exists());
    let usr = fs::File::open(s.layer.join("usr")).unwrap();
    assert_eq!(
        xattr::fget(&usr, OPAQUE_XATTR).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert!(s.layer.join("usr/new").exists());
    assert!(!s.layer.join("usr/.wh..wh..opq").exists());
}

#[test]
fn hardlinks_share_an_inode() {
    let s = scene();
    run(
        &s,
        &[
            file("a", b"data"),
            link("b", tar::EntryType::Link, "a"),
            link("/c", tar::EntryType::Link, "/a"),
        ],
    )
    .unwrap();
    let a = fs::metadata(s.layer.join("a")).unwrap();
    assert_eq!(a.nlink(), 3);
    assert_eq!(a.ino(), fs::metadata(s.layer.join("b")).unwrap().ino());
}

#[test]
fn setuid_and_foreign_owner_are_recorded() {
    let s = scene();
    run(
        &s,
        &[
            E {
                mode: 0o4755,
                ..file("su", b"x")
            },
            E {
                uid: 1234,
                gid: 1234,
                ..file("owned", b"y")
            },
            E {
                uid: 42,
                ..dir("d/")
            },
        ],
    )
    .unwrap();
    let su = fs::File::open(s.layer.join("su")).unwrap();
    assert_eq!(
        su.metadata().unwrap().mode() & 0o7777,
        0o755,
        "setuid bit left on disk"
    );
    assert_eq!(
        xattr::fget(&su, OVERRIDE_XATTR).unwrap().as_deref(),
        Some(&b"0:0:4755:file"[..])
    );
    let owned = fs::File::open(s.layer.join("owned")).unwrap();
    assert_eq!(
        xattr::fget(&owned, OVERRIDE_XATTR).unwrap().as_deref(),
        Some(&b"1234:1234:0644:file"[..])
    );
    let d = fs::File::open(s.layer.join("d")).unwrap();
    assert_eq!(
        xattr::fget(&d, OVERRIDE_XATTR).unwrap().as_deref(),
        Some(&b"42:0:0755:dir"[..])
    );
}

#[test]
fn read_only_dirs_still_receive_their_entries() {
    let s = scene();
    run(
        &s,
        &[
            E {
                mode: 0o555,
                ..dir("ro/")
            },
            file("ro/inner", b"x"),
            E {
                mode: 0o000,
                ..dir("closed/")
            },
            file("closed/f", b"y"),
        ],
    )
    .unwrap();
    assert_eq!(
        fs::metadata(s.layer.join("ro")).unwrap().mode() & 0o777,
        0o555
    );
    assert_eq!(
        fs::metadata(s.layer.join("closed")).unwrap().mode() & 0o777,
        0o000
    );
    crate::sys::confined::remove_tree(&s.layer).unwrap();
    assert!(!s.layer.exists());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = scene();
    run(
        &s,
        &[
            dir("x/"),
            file("x/inner", b"1"),
            file("x", b"now a file"),
            file("y", b"1"),
            dir("y/"),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(s.layer.join("x")).unwrap(), b"now a file");
    assert!(s.layer.join("y").is_dir());
}

#[test]
fn fifo_and_devices() {
    let s = scene();
    let stats = run(
        &s,
        &[
            e("p", tar::EntryType::Fifo),
            e("dev/null", tar::EntryType::Char),
        ],
    )
    .unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(s.layer.join("p"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(stats.devices_skipped, 1);
    assert!(!s.layer.join("dev/null").exists());
}

// --- hostile layers: one per escape class ---

#[test]
fn dotdot_entry_is_refused() {
    let (_s, r) = hostile(&[file("../outside/file", b"pwned")]);
    assert!(matches!(r, Err(UnpackError::Plan(_))));
    let (_s, r) = hostile(&[file("a/../../outside/file", b"pwned")]);
    assert!(matches!(r, Err(UnpackError::Plan(_))));
}

#[test]
fn absolute_paths_land_inside() {
    let s = scene();
    let abs = format!("{}/file", s.outside.display());
    let before = snapshot(&s.outside);
    run(&s, &[file(&abs, b"pwned")]).unwrap();
    assert_eq!(before, snapshot(&s.outside));
    assert!(s.layer.join(abs.trim_start_matches('/')).exists());
}

#[test]
fn symlinked_parent_does_not_lead_out() {
    // CVE-2014-6407 / RUSTSEC-2021-0080: a symlink, then entries through it. If the symlink
    // is followed at all, it is followed inside the layer.
    let (_s, _r) = hostile(&[
        link("evil", tar::EntryType::Symlink, "/"),
        file("evil/pwned-nook", b"x"),
        dir("evil/newdir-nook/"),
    ]);
    assert!(!Path::new("/pwned-nook").exists());
    assert!(!Path::new("/newdir-nook").exists());
    let (_s, _r) = hostile(&[
        link("up", tar::EntryType::Symlink, "../../../../../../.."),
        file("up/tmp/pwned-nook", b"x"),
    ]);
    assert!(!Path::new("/tmp/pwned-nook").exists());
}

#[test]
fn symlink_to_outside_then_write_replaces_the_link() {
    let s = scene();
    let target = s.outside.join("file").display().to_string();
    let before = snapshot(&s.outside);
    run(
        &s,
        &[
            link("s", tar::EntryType::Symlink, &target),
            file("s", b"pwned"),
        ],
    )
    .unwrap();
    assert_eq!(before, snapshot(&s.outside));
    assert_eq!(fs::read(s.layer.join("s")).unwrap(), b"pwned");
}

#[test]
fn symlink_into_outside_dir_then_entries_below_it() {
    let s = scene();
    let target = s.outside.join("dir").display().to_string();
    let before = snapshot(&s.outside);
    let _ = run(
        &s,
        &[
            link("d", tar::EntryType::Symlink, &target),
            file("d/pwned", b"x"),
            dir("d/sub/"),
        ],
    );
    assert_eq!(before, snapshot(&s.outside));
}

#[test]
fn hardlink_out_of_the_layer_is_refused() {
    let (_s, r) = hostile(&[link("h", tar::EntryType::Link, "../outside/file")]);
    assert!(matches!(r, Err(UnpackError::Plan(_))));
    // An absolute target resolves inside the layer, where it does not exist.
    let s = scene();
    let abs = s.outside.join("file").display().to_string();
    let before = snapshot(&s.outside);
    assert!(run(&s, &[link("h", tar::EntryType::Link, &abs)]).is_err());
    assert_eq!(before, snapshot(&s.outside));
}

#[test]
fn hardlink_through_a_symlink_links_the_symlink() {
    let s = scene();
    let target = s.outside.join("file").display().to_string();
    let before = snapshot(&s.outside);
    run(
        &s,
        &[
            link("s", tar::EntryType::Symlink, &target),
            link("h", tar::EntryType::Link, "s"),
        ],
    )
    .unwrap();
    assert_eq!(before, snapshot(&s.outside), "outside file gained a link");
    assert!(
        fs::symlink_metadata(s.layer.join("h"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn dot_replaced_by_symlink_is_refused() {
    // CVE-2021-29136 (umoci): "." as a symlink would move the whole root.
    let (s, r) = hostile(&[link(".", tar::EntryType::Symlink, "/"), file("pwned", b"x")]);
    assert!(matches!(
        r,
        Err(UnpackError::Plan(plan::PlanError::ReplacesRoot(_)))
    ));
    assert!(
        s.layer.is_dir()
            && !fs::symlink_metadata(&s.layer)
                .unwrap()
                .file_type()
                .is_symlink()
    );
    let (_s, r) = hostile(&[link("./", tar::EntryType::Symlink, "/tmp")]);
    assert!(r.is_err());
}

#[test]
fn chmod_never_reaches_a_symlink_target() {
    // CVE-2021-32760 (containerd): a directory's deferred chmod must not follow a symlink that
    // replaced it.
    let s = scene();
    let target = s.outside.join("dir").display().to_string();
    let before = snapshot(&s.outside);
    run(
        &s,
        &[
            E {
                mode: 0o777,
                ..dir("d/")
            },
            link("d", tar::EntryType::Symlink, &target),
        ],
    )
    .unwrap();
    assert_eq!(before, snapshot(&s.outside));
    let target_file = s.outside.join("file").display().to_string();
    run(
        &s,
        &[
            link("f", tar::EntryType::Symlink, &target_file),
            E {
                mode: 0o777,
                ..link("f", tar::EntryType::Symlink, &target_file)
            },
        ],
    )
    .unwrap();
    assert_eq!(before, snapshot(&s.outside));
}

#[test]
fn bare_whiteouts_are_refused() {
    for name in ["etc/.wh.", "etc/.wh.."] {
        let (_s, r) = hostile(&[file(name, b"")]);
        assert!(
            matches!(r, Err(UnpackError::Plan(plan::PlanError::BadWhiteout(_)))),
            "{name}"
        );
    }
    let (_s, r) = hostile(&[file("../.wh.outside", b"")]);
    assert!(r.is_err());
}

#[test]
fn whiteout_through_symlinked_parent_stays_inside() {
    let s = scene();
    let target = s.outside.display().to_string();
    let before = snapshot(&s.outside);
    let _ = run(
        &s,
        &[
            link("o", tar::EntryType::Symlink, &target),
            file("o/.wh.file", b""),
            file("o/.wh..wh..opq", b""),
        ],
    );
    assert_eq!(before, snapshot(&s.outside));
}

#[test]
fn overlay_xattrs_from_the_image_are_dropped() {
    let s = scene();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.keep", &b"1"[..]),
    ])
    .unwrap();
    b.append_data(&mut h, "d/", &b""[..]).unwrap();
    let data = b.into_inner().unwrap();
    unpack(&data[..], &s.layer, Owners::Record).unwrap();
    let d = fs::File::open(s.layer.join("d")).unwrap();
    assert_eq!(xattr::fget(&d, OPAQUE_XATTR).unwrap(), None);
    assert_eq!(
        xattr::fget(&d, "user.keep").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn garbage_is_an_archive_error() {
    let s = scene();
    let r = unpack(&[0x42u8; 1024][..], &s.layer, Owners::Record);
    assert!(matches!(r, Err(UnpackError::Archive(_))), "{r:?}");
}

#[test]
fn pax_ids_override_ustar() {
    let s = scene();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    b.append_pax_extensions([("uid", &b"3000000"[..]), ("gid", &b"7"[..])])
        .unwrap();
    b.append_data(&mut h, "big", &b"x"[..]).unwrap();
    unpack(&b.into_inner().unwrap()[..], &s.layer, Owners::Record).unwrap();
    let f = fs::File::open(s.layer.join("big")).unwrap();
    assert_eq!(
        xattr::fget(&f, OVERRIDE_XATTR).unwrap().as_deref(),
        Some(&b"3000000:7:0644:file"[..])
    );
}
