//! What a RUN changed: from its writable layer and, on the copy rung, from a whole tree.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::tests::{set_xattr, whiteout, write};
use super::*;
use crate::build::entry::{Entry, EntryKind, Source};

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `to` the mode and times of `from`, as a copy-up does.
fn copy_meta(from: &Path, to: &Path) {
    let m = fs::metadata(from).unwrap();
    chmod(to, m.mode() & 0o7777);
    let t = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

struct Setup {
    _t: tempfile::TempDir,
    lower: PathBuf,
    /// The writable layer, or the copied tree.
    top: PathBuf,
}

/// A lower layer with something to change, delete, replace and leave alone.
fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let (lower, top) = (t.path().join("lower"), t.path().join("top"));
    write(&lower.join("a/old"), "old");
    write(&lower.join("a/keep"), "keep");
    write(&lower.join("a/chg"), "before");
    write(&lower.join("d/x"), "x");
    write(&lower.join("srv/f"), "f");
    write(&lower.join("bin/tool"), "tool");
    write(&lower.join("etc/hostname"), "");
    write(&lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    symlink("a/keep", lower.join("lnk")).unwrap();
    for d in ["a", "d", "srv", "bin", "etc"] {
        chmod(&lower.join(d), 0o755);
    }
    fs::create_dir(&top).unwrap();
    Setup { _t: t, lower, top }
}

fn exclude() -> Vec<PathBuf> {
    [
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/proc",
        "/run/secrets/tok",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

fn paths(v: &[Entry]) -> Vec<(String, &'static str)> {
    v.iter()
        .map(|e| {
            let k = match e.kind {
                EntryKind::Dir => "dir",
                EntryKind::File { .. } => "file",
                EntryKind::Symlink(_) => "symlink",
                EntryKind::Hardlink(_) => "hardlink",
                EntryKind::Whiteout => "whiteout",
                EntryKind::Opaque => "opaque",
                _ => "other",
            };
            (e.path.display().to_string(), k)
        })
        .collect()
}

fn find<'a>(v: &'a [Entry], p: &str) -> &'a Entry {
    v.iter()
        .find(|e| e.path == Path::new(p) && e.kind != EntryKind::Opaque)
        .unwrap_or_else(|| panic!("no entry {p} in {:?}", paths(v)))
}

/// The changes both rungs make: new, changed, deleted, setuid, hard links, xattrs.
fn change_files(top: &Path) {
    write(&top.join("a/new"), "new");
    write(&top.join("a/chg"), "after!");
    write(&top.join("bin/tool"), "tool");
    chmod(&top.join("bin/tool"), 0o4755);
    write(&top.join("h1"), "linked");
    fs::hard_link(top.join("h1"), top.join("h2")).unwrap();
    write(&top.join("x/f"), "xattrs");
    set_xattr(&top.join("x/f"), "user.color", b"blue");
    set_xattr(&top.join("x/f"), "user.overlay.origin", b"o");
    set_xattr(
        &top.join("x/f"),
        "user.containers.override_stat",
        b"0:0:0644:file",
    );
    chmod(&top.join("srv"), 0o700);
}

fn check_common(v: &[Entry]) {
    assert!(matches!(
        find(v, "a/new").kind,
        EntryKind::File { size: 3, .. }
    ));
    assert!(matches!(
        find(v, "a/chg").kind,
        EntryKind::File { size: 6, .. }
    ));
    assert_eq!(find(v, "a/old").kind, EntryKind::Whiteout);
    assert_eq!(find(v, "bin/tool").mode, 0o4755);
    assert!(matches!(find(v, "h1").kind, EntryKind::File { .. }));
    assert_eq!(find(v, "h2").kind, EntryKind::Hardlink(PathBuf::from("h1")));
    assert_eq!(
        find(v, "x/f").xattrs,
        [("user.color".to_owned(), b"blue".to_vec())]
    );
    let srv = find(v, "srv");
    assert_eq!((srv.kind.clone(), srv.mode), (EntryKind::Dir, 0o700));
    for absent in ["a/keep", "lnk", "srv/f", "etc", "etc/hosts", "proc", "run"] {
        assert!(
            !v.iter().any(|e| e.path == Path::new(absent)),
            "{absent} is not a change: {:?}",
            paths(v)
        );
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        sorted.iter().map(|e| &e.path).collect::<Vec<_>>(),
        v.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
}

/// nook's mount targets, as it makes them before the RUN starts.
fn make_mount_targets(top: &Path) {
    write(&top.join("etc/hosts"), "");
    fs::create_dir_all(top.join("proc")).unwrap();
    write(&top.join("run/secrets/tok"), "");
}

#[test]
fn a_writable_layer_gives_its_changes() {
    let s = setup();
    let up = &s.top;
    for d in ["a", "bin", "srv", "etc"] {
        fs::create_dir(up.join(d)).unwrap();
        copy_meta(&s.lower.join(d), &up.join(d));
    }
    if !whiteout(&up.join("a/old")) {
        return;
    }
    change_files(up);
    write(&up.join("d/y"), "y");
    set_xattr(&up.join("d"), crate::unpack::OPAQUE_XATTR, b"y");
    make_mount_targets(up);
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    let v = diff_upper(up, &lowers, &exclude()).unwrap();
    check_common(&v);
    let d: Vec<_> = v.iter().filter(|e| e.path.starts_with("d")).collect();
    assert_eq!(d.len(), 3, "{:?}", paths(&v));
    assert_eq!(
        (&d[0].kind, &d[1].kind),
        (&EntryKind::Dir, &EntryKind::Opaque)
    );
    assert_eq!(d[2].path, Path::new("d/y"));
    assert_eq!(
        find(&v, "a/new").kind,
        EntryKind::File {
            size: 3,
            source: Source::Beneath {
                root: up.clone(),
                rel: PathBuf::from("a/new")
            }
        }
    );
}

#[test]
fn a_copied_tree_gives_its_changes() {
    let s = setup();
    let root = &s.top;
    crate::rootfs::copy_layers(&[&s.lower], root).unwrap();
    fs::remove_file(root.join("a/old")).unwrap();
    change_files(root);
    fs::remove_dir_all(root.join("d")).unwrap();
    write(&root.join("d/y"), "y");
    make_mount_targets(root);
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    let v = diff_tree(root, &lowers, &exclude()).unwrap();
    check_common(&v);
    // No opaque marker from a tree: the lost name is deleted one by one.
    assert_eq!(find(&v, "d/x").kind, EntryKind::Whiteout);
    assert!(matches!(find(&v, "d/y").kind, EntryKind::File { .. }));
    assert!(!v.iter().any(|e| e.kind == EntryKind::Opaque));
}

#[test]
fn nothing_changed_gives_no_entries() {
    let s = setup();
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    assert_eq!(diff_upper(&s.top, &lowers, &[]).unwrap(), []);
    // A directory copied up without a change to it or in it is no change either.
    fs::create_dir(s.top.join("a")).unwrap();
    copy_meta(&s.lower.join("a"), &s.top.join("a"));
    assert_eq!(diff_upper(&s.top, &lowers, &[]).unwrap(), []);
    let copy = s._t.path().join("copy");
    fs::create_dir(&copy).unwrap();
    crate::rootfs::copy_layers(&[&s.lower], &copy).unwrap();
    assert_eq!(diff_tree(&copy, &lowers, &exclude()).unwrap(), []);
}

#[test]
fn mount_targets_are_left_out_only_when_empty_and_new() {
    let s = setup();
    let up = &s.top;
    fs::create_dir(up.join("etc")).unwrap();
    copy_meta(&s.lower.join("etc"), &up.join("etc"));
    make_mount_targets(up);
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    assert_eq!(diff_upper(up, &lowers, &exclude()).unwrap(), []);
    // Without the exclusions they are changes like any other.
    let all = diff_upper(up, &lowers, &[]).unwrap();
    assert!(all.iter().any(|e| e.path == Path::new("run/secrets/tok")));
    // A target the image has, or one the RUN wrote into, is the image's.
    write(&up.join("etc/hostname"), "");
    write(&up.join("etc/resolv.conf"), "nameserver 10.0.2.3\n");
    write(&up.join("proc/x"), "");
    let v = diff_upper(up, &lowers, &exclude()).unwrap();
    assert_eq!(
        paths(&v),
        [
            ("etc".to_owned(), "dir"),
            ("etc/hostname".to_owned(), "file"),
            ("etc/resolv.conf".to_owned(), "file"),
            ("proc".to_owned(), "dir"),
            ("proc/x".to_owned(), "file"),
        ]
    );
}

#[test]
fn a_metadata_change_of_a_lower_directory_is_a_dir_entry() {
    let s = setup();
    fs::create_dir(s.top.join("srv")).unwrap();
    copy_meta(&s.lower.join("srv"), &s.top.join("srv"));
    chmod(&s.top.join("srv"), 0o750);
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    let v = diff_upper(&s.top, &lowers, &[]).unwrap();
    assert_eq!(paths(&v), [("srv".to_owned(), "dir")]);
    assert_eq!(v[0].mode, 0o750);
}

#[test]
fn a_copy_that_lost_the_owner_record_keeps_the_layers_owners() {
    let s = setup();
    let rec = crate::unpack::override_value(1000, 1000, 0o4755, "file");
    chmod(&s.lower.join("bin/tool"), 0o755);
    set_xattr(
        &s.lower.join("bin/tool"),
        crate::unpack::OVERRIDE_XATTR,
        rec.as_bytes(),
    );
    crate::rootfs::copy_layers(&[&s.lower], &s.top).unwrap();
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    assert_eq!(diff_tree(&s.top, &lowers, &[]).unwrap(), []);
    write(&s.top.join("bin/tool"), "a new tool");
    let v = diff_tree(&s.top, &lowers, &[]).unwrap();
    let tool = find(&v, "bin/tool");
    assert_eq!((tool.uid, tool.gid, tool.mode), (1000, 1000, 0o4755));
}

#[test]
fn overlay_redirects_are_refused() {
    let s = setup();
    fs::create_dir_all(s.top.join("a/b")).unwrap();
    set_xattr(&s.top.join("a/b"), "user.overlay.redirect", b"/d");
    let lowers = Layered::new(std::slice::from_ref(&s.lower)).unwrap();
    let e = diff_upper(&s.top, &lowers, &[]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    // Said once, where it happened, not once per directory above it.
    assert_eq!(e.to_string(), "cannot read a/b");
}
