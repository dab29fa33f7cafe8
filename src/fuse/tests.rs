//! The overlay model on plain directories (no FUSE mount): what each operation leaves in the
//! upper layer, in the kernel overlay's on-disk form.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::overlay::{Overlay, Owners};
use super::table::{Kind, ROOT};
use super::{Caller, Layers, SetAttr};
use crate::sys::xattr;
use crate::unpack::{OPAQUE_XATTR, OVERRIDE_XATTR};

struct T {
    _d: tempfile::TempDir,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
    ov: Overlay,
}

const ME: Caller = Caller { uid: 0, gid: 0 };

fn whiteout(p: &Path) {
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

/// Two lower layers: l1 (bottom) and l0 (top).
fn setup(owners: Owners) -> T {
    let d = tempfile::tempdir().unwrap();
    let (l0, l1, upper, work) = (
        d.path().join("l0"),
        d.path().join("l1"),
        d.path().join("upper"),
        d.path().join("work"),
    );
    for p in [&l0, &l1, &upper, &work] {
        fs::create_dir(p).unwrap();
    }
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("etc/motd"), "old motd").unwrap();
    fs::write(l1.join("etc/keep"), "keep").unwrap();
    fs::create_dir_all(l1.join("opq/inner")).unwrap();
    fs::write(l1.join("opq/lower-only"), "l").unwrap();
    fs::write(l1.join("big"), "").unwrap();
    fs::write(l1.join("linked"), "ln").unwrap();
    fs::hard_link(l1.join("linked"), l1.join("linked2")).unwrap();
    fs::create_dir_all(l0.join("etc")).unwrap();
    fs::write(l0.join("etc/new"), "new").unwrap();
    whiteout(&l0.join("etc/motd"));
    fs::create_dir_all(l0.join("opq")).unwrap();
    fs::write(l0.join("opq/top"), "t").unwrap();
    xattr::fset(fs::File::open(l0.join("opq")).unwrap(), OPAQUE_XATTR, b"y").unwrap();
    std::os::unix::fs::symlink("/etc/keep", l0.join("sym")).unwrap();
    let f = fs::File::create(l0.join("owned")).unwrap();
    xattr::fset(&f, OVERRIDE_XATTR, b"1234:1234:4755:file").unwrap();
    let lowers = vec![l0.clone(), l1.clone()];
    let ov = Overlay::new(Layers::new(&upper, &work, &lowers).unwrap(), owners);
    T {
        _d: d,
        upper,
        lowers,
        ov,
    }
}

fn names(t: &T, ino: u64) -> Vec<String> {
    let mut v: Vec<String> =
        t.ov.entries(ino)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
    v.sort();
    v
}

fn ino(t: &T, path: &str) -> u64 {
    let mut cur = ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        cur = t.ov.lookup(cur, OsStr::new(c)).unwrap().ino;
    }
    cur
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn lookups_and_listings_merge_the_layers() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    assert_eq!(names(&t, etc), ["keep", "new"], "the whiteout hides motd");
    assert_eq!(
        t.ov.lookup(etc, OsStr::new("motd")).unwrap_err(),
        nix::errno::Errno::ENOENT
    );
    let opq = ino(&t, "opq");
    assert_eq!(
        names(&t, opq),
        ["top"],
        "an opaque directory hides the layers below"
    );
    assert_eq!(
        String::from_utf8(t.ov.readlink(ino(&t, "sym")).unwrap()).unwrap(),
        "/etc/keep"
    );
    let a = t.ov.getattr(ino(&t, "linked")).unwrap();
    assert_eq!(
        a.ino,
        t.ov.getattr(ino(&t, "linked2")).unwrap().ino,
        "hard links share an inode"
    );
    assert_eq!(a.nlink, 2);
    let o = t.ov.getattr(ino(&t, "owned")).unwrap();
    assert_eq!(
        (o.uid, o.gid, o.perm),
        (1234, 1234, 0o4755),
        "owners come from the override xattr"
    );
    let root = names(&t, ROOT);
    assert!(root.contains(&"big".to_string()) && root.contains(&"opq".to_string()));
}

#[test]
fn merged_directories_show_one_link_as_the_kernel_overlay_does() {
    let t = setup(Owners::Mapped);
    let opq = ino(&t, "opq");
    assert_eq!(
        t.ov.getattr(opq).unwrap().nlink,
        2,
        "one layer (the rest hidden by opaque): its own count"
    );
    assert_eq!(t.ov.getattr(ino(&t, "etc")).unwrap().nlink, 1, "two layers");
    t.ov.copy_up(opq).unwrap();
    assert_eq!(t.ov.getattr(opq).unwrap().nlink, 1, "upper and a lower");
    let fresh = t.ov.mkdir(ROOT, OsStr::new("fresh"), 0o755, ME).unwrap();
    assert_eq!(fresh.nlink, 2, "upper only: its own count");
}

#[test]
fn copy_up_keeps_the_parents_times_and_a_symlinks_own() {
    let t = setup(Owners::Mapped);
    let dir = t.lowers[0].join("d");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("target", dir.join("link")).unwrap();
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    for (p, follow) in [
        (
            dir.join("link"),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        ),
        (dir.clone(), nix::sys::stat::UtimensatFlags::FollowSymlink),
    ] {
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &p, &old, &old, follow).unwrap();
    }
    t.ov.copy_up(ino(&t, "d/link")).unwrap();
    for p in [t.upper.join("d/link"), t.upper.join("d")] {
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mtime(), 1_000_000_000, "{}", p.display());
    }
}

#[test]
fn single_mapping_reports_the_mapped_id_and_keeps_the_record() {
    let t = setup(Owners::Single);
    let owned = ino(&t, "owned");
    let a = t.ov.getattr(owned).unwrap();
    let m = fs::metadata(&t.upper).unwrap();
    assert_eq!(
        (a.uid, a.gid, a.perm),
        (m.uid(), m.gid(), 0o4755),
        "the one mapped id, and the recorded mode"
    );
    let r = t.ov.recorded(owned).unwrap();
    assert_eq!((r.uid, r.gid, r.mode), (1234, 1234, 0o4755));
    t.ov.record_owner(owned, Some(42), Some(43)).unwrap();
    let r = t.ov.recorded(owned).unwrap();
    assert_eq!(
        (r.uid, r.gid, r.mode),
        (42, 43, 0o755),
        "chown clears setuid, as chown(2)"
    );
    let f = fs::File::open(t.upper.join("owned")).unwrap();
    assert_eq!(
        xattr::fget(&f, OVERRIDE_XATTR).unwrap().unwrap(),
        b"42:43:0755:file"
    );
    // chmod with setuid in single mode: the disk never holds it, the record does.
    t.ov.setattr(
        owned,
        SetAttr {
            mode: Some(0o4750),
            ..SetAttr::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(
        fs::metadata(t.upper.join("owned")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(t.ov.getattr(owned).unwrap().perm, 0o4750);
}

#[test]
fn writing_copies_up_once_and_keeps_data() {
    let t = setup(Owners::Mapped);
    let keep = ino(&t, "etc/keep");
    let mut buf = [0u8; 16];
    let n = t.ov.read(keep, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"keep", "read from the lower copy");
    t.ov.write(keep, 4, b"er").unwrap();
    assert_eq!(fs::read(t.upper.join("etc/keep")).unwrap(), b"keeper");
    assert_eq!(
        fs::read(t.lowers[1].join("etc/keep")).unwrap(),
        b"keep",
        "lower layers are never written"
    );
    let n = t.ov.read(keep, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"keeper", "reads follow the copy-up");
    assert!(t.upper.join("etc").is_dir());
    assert_eq!(
        fs::read_dir(t.upper.parent().unwrap().join("work"))
            .unwrap()
            .count(),
        0,
        "nothing left in work/"
    );
}

#[test]
fn copy_up_keeps_holes() {
    let t = setup(Owners::Mapped);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(t.lowers[1].join("big"))
        .unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (64 << 20) - 3).unwrap();
    let big = ino(&t, "big");
    t.ov.copy_up(big).unwrap();
    let m = fs::metadata(t.upper.join("big")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() < 1024,
        "the copy is not sparse: {} blocks",
        m.blocks()
    );
    let data = fs::read(t.upper.join("big")).unwrap();
    assert_eq!(&data[data.len() - 3..], b"end");
}

#[test]
fn removing_lower_entries_leaves_whiteouts() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    t.ov.unlink(etc, OsStr::new("keep")).unwrap();
    assert!(is_whiteout(&t.upper.join("etc/keep")));
    assert_eq!(names(&t, etc), ["new"]);
    t.ov.unlink(etc, OsStr::new("new")).unwrap();
    assert!(names(&t, etc).is_empty());
    t.ov.rmdir(ROOT, OsStr::new("etc")).unwrap();
    assert!(is_whiteout(&t.upper.join("etc")));
    // A new directory where a lower one was removed is opaque: the old content stays gone.
    t.ov.mkdir(ROOT, OsStr::new("etc"), 0o755, ME).unwrap();
    let etc = ino(&t, "etc");
    assert!(names(&t, etc).is_empty());
    let d = fs::File::open(t.upper.join("etc")).unwrap();
    assert_eq!(
        xattr::fget(&d, OPAQUE_XATTR).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    let opq = ino(&t, "opq");
    assert_eq!(
        t.ov.rmdir(ROOT, OsStr::new("opq")).unwrap_err(),
        nix::errno::Errno::ENOTEMPTY
    );
    t.ov.unlink(opq, OsStr::new("top")).unwrap();
    t.ov.rmdir(ROOT, OsStr::new("opq")).unwrap();
    assert!(is_whiteout(&t.upper.join("opq")));
}

#[test]
fn renames() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    t.ov.rename(etc, OsStr::new("keep"), ROOT, OsStr::new("moved"), 0)
        .unwrap();
    assert!(
        is_whiteout(&t.upper.join("etc/keep")),
        "the lower name is whited out"
    );
    assert_eq!(fs::read(t.upper.join("moved")).unwrap(), b"keep");
    assert_eq!(
        t.ov.rename(ROOT, OsStr::new("etc"), ROOT, OsStr::new("etc2"), 0)
            .unwrap_err(),
        nix::errno::Errno::EXDEV
    );
    t.ov.mkdir(ROOT, OsStr::new("fresh"), 0o755, ME).unwrap();
    t.ov.rename(ROOT, OsStr::new("fresh"), ROOT, OsStr::new("fresh2"), 0)
        .unwrap();
    assert!(t.upper.join("fresh2").is_dir() && !t.upper.join("fresh").exists());
    assert_eq!(
        t.ov.rename(
            ROOT,
            OsStr::new("moved"),
            ROOT,
            OsStr::new("big"),
            libc::RENAME_NOREPLACE
        )
        .unwrap_err(),
        nix::errno::Errno::EEXIST
    );
    let moved = ino(&t, "moved");
    t.ov.rename(ROOT, OsStr::new("moved"), ROOT, OsStr::new("big"), 0)
        .unwrap();
    assert_eq!(ino(&t, "big"), moved, "the inode moves with the name");
}

#[test]
fn creating_links_and_special_files() {
    let t = setup(Owners::Mapped);
    let a =
        t.ov.mknod(ROOT, OsStr::new("f"), libc::S_IFREG | 0o640, 0, ME)
            .unwrap();
    t.ov.write(a.ino, 0, b"hi").unwrap();
    assert_eq!(a.kind, Kind::File);
    let l = t.ov.link(a.ino, ROOT, OsStr::new("g")).unwrap();
    assert_eq!((l.ino, l.nlink), (a.ino, 2));
    assert_eq!(
        fs::metadata(t.upper.join("g")).unwrap().ino(),
        fs::metadata(t.upper.join("f")).unwrap().ino()
    );
    let linked = ino(&t, "linked");
    t.ov.link(linked, ROOT, OsStr::new("linked3")).unwrap();
    assert!(t.upper.join("linked").is_file() && t.upper.join("linked3").is_file());
    let p =
        t.ov.mknod(ROOT, OsStr::new("p"), libc::S_IFIFO | 0o600, 0, ME)
            .unwrap();
    assert_eq!(p.kind, Kind::Fifo);
    assert_eq!(
        t.ov.mknod(ROOT, OsStr::new("w"), libc::S_IFCHR | 0o600, 0, ME)
            .unwrap_err(),
        nix::errno::Errno::EPERM
    );
    t.ov.symlink(ROOT, OsStr::new("s2"), Path::new("../x"), ME)
        .unwrap();
    assert_eq!(
        fs::read_link(t.upper.join("s2")).unwrap(),
        Path::new("../x")
    );
    assert_eq!(
        t.ov.mkdir(ROOT, OsStr::new("etc"), 0o755, ME).unwrap_err(),
        nix::errno::Errno::EEXIST
    );
    assert_eq!(
        t.ov.mkdir(ROOT, OsStr::new(".."), 0o755, ME).unwrap_err(),
        nix::errno::Errno::EINVAL
    );
}

#[test]
fn xattrs_pass_through_but_not_the_overlays_own() {
    let t = setup(Owners::Mapped);
    let keep = ino(&t, "etc/keep");
    t.ov.setxattr(keep, "user.color", b"blue", 0).unwrap();
    assert_eq!(t.ov.getxattr(keep, "user.color").unwrap(), b"blue");
    assert!(
        t.ov.listxattr(keep)
            .unwrap()
            .contains(&"user.color".to_string())
    );
    assert_eq!(
        t.ov.setxattr(keep, OPAQUE_XATTR, b"y", 0).unwrap_err(),
        nix::errno::Errno::EPERM
    );
    let opq = ino(&t, "opq");
    assert_eq!(
        t.ov.getxattr(opq, OPAQUE_XATTR).unwrap_err(),
        nix::errno::Errno::ENODATA
    );
    assert!(
        !t.ov
            .listxattr(opq)
            .unwrap()
            .iter()
            .any(|n| n.starts_with("user.overlay"))
    );
    t.ov.removexattr(keep, "user.color").unwrap();
    assert_eq!(
        t.ov.getxattr(keep, "user.color").unwrap_err(),
        nix::errno::Errno::ENODATA
    );
}

#[test]
fn a_name_over_a_lower_entry_keeps_hiding_it() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    // keep (lower) moves over new (lower); removing new must still hide the lower new.
    t.ov.rename(etc, OsStr::new("keep"), etc, OsStr::new("new"), 0)
        .unwrap();
    t.ov.unlink(etc, OsStr::new("new")).unwrap();
    assert_eq!(
        t.ov.lookup(etc, OsStr::new("new")).unwrap_err(),
        nix::errno::Errno::ENOENT
    );
    assert_eq!(names(&t, etc), Vec::<String>::new());
    assert!(is_whiteout(&t.upper.join("etc/new")) && is_whiteout(&t.upper.join("etc/keep")));
}

#[test]
fn exchange_swaps_two_names() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    let (keep, new) = (ino(&t, "etc/keep"), ino(&t, "etc/new"));
    t.ov.rename(
        etc,
        OsStr::new("keep"),
        etc,
        OsStr::new("new"),
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(t.upper.join("etc/new")).unwrap(), b"keep");
    assert_eq!(fs::read(t.upper.join("etc/keep")).unwrap(), b"new");
    assert_eq!(t.ov.lookup(etc, OsStr::new("new")).unwrap().ino, keep);
    assert_eq!(t.ov.lookup(etc, OsStr::new("keep")).unwrap().ino, new);
    assert_eq!(
        t.ov.rename(
            etc,
            OsStr::new("keep"),
            etc,
            OsStr::new("nothere"),
            libc::RENAME_EXCHANGE
        )
        .unwrap_err(),
        nix::errno::Errno::ENOENT
    );
    let root = ino(&t, "");
    assert_eq!(
        t.ov.rename(
            root,
            OsStr::new("opq"),
            etc,
            OsStr::new("new"),
            libc::RENAME_EXCHANGE
        )
        .unwrap_err(),
        nix::errno::Errno::EXDEV,
        "a directory with lower parts cannot move"
    );
}

#[test]
fn a_removed_file_in_use_keeps_its_data_until_forgotten() {
    let t = setup(Owners::Mapped);
    let etc = ino(&t, "etc");
    let keep = ino(&t, "etc/keep");
    // A lower file: removed, still readable, and writable (into the work directory).
    t.ov.unlink(etc, OsStr::new("keep")).unwrap();
    assert!(is_whiteout(&t.upper.join("etc/keep")));
    let mut buf = [0u8; 16];
    let n = t.ov.read(keep, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"keep");
    t.ov.write(keep, 0, b"KE").unwrap();
    let n = t.ov.read(keep, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"KEep");
    assert_eq!(t.ov.getattr(keep).unwrap().size, 4);
    assert_eq!(
        fs::read(t.lowers[1].join("etc/keep")).unwrap(),
        b"keep",
        "lower untouched"
    );
    let work = t.upper.parent().unwrap().join("work");
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        1,
        "the orphan is in work/"
    );
    t.ov.forget(keep, 1);
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "forgotten: the orphan goes"
    );
    assert!(t.ov.getattr(keep).is_err());
    // An upper file renamed over: the replaced one lives on the same way.
    let a =
        t.ov.mknod(ROOT, OsStr::new("a"), libc::S_IFREG | 0o644, 0, ME)
            .unwrap();
    t.ov.write(a.ino, 0, b"old").unwrap();
    let b =
        t.ov.mknod(ROOT, OsStr::new("b"), libc::S_IFREG | 0o644, 0, ME)
            .unwrap();
    t.ov.write(b.ino, 0, b"new").unwrap();
    t.ov.rename(ROOT, OsStr::new("b"), ROOT, OsStr::new("a"), 0)
        .unwrap();
    let n = t.ov.read(a.ino, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"old");
    assert_eq!(fs::read(t.upper.join("a")).unwrap(), b"new");
    t.ov.forget(a.ino, 1);
    assert_eq!(fs::read_dir(&work).unwrap().count(), 0);
}

#[test]
fn single_user_sees_image_modes_through_the_kernel() {
    use super::overlay::shown_to_kernel;
    use super::table::Owner;
    let me = (1234, 1234);
    let o = |uid, gid, mode| Owner { uid, gid, mode };
    // Its own objects: as they are, under its group.
    assert_eq!(shown_to_kernel(o(1234, 0, 0o750), me), (1234, 1234, 0o750));
    // Root's, read-only to others: the real owner (unmapped), so the other bits decide.
    assert_eq!(shown_to_kernel(o(0, 0, 0o644), me), (0, 0, 0o644));
    assert_eq!(shown_to_kernel(o(0, 0, 0o700), me), (0, 0, 0o700));
    // Writable by its class (/tmp, a group-writable file): shown as its own, with those bits.
    assert_eq!(shown_to_kernel(o(0, 0, 0o1777), me), (1234, 1234, 0o1777));
    assert_eq!(shown_to_kernel(o(33, 1234, 0o664), me), (1234, 1234, 0o666));
    assert_eq!(shown_to_kernel(o(33, 1234, 0o646), me), (33, 1234, 0o646));
    // setuid bits of another's file never reach the kernel as the user's.
    assert_eq!(shown_to_kernel(o(0, 0, 0o4777), me), (1234, 1234, 0o777));
}

#[test]
fn single_user_creates_its_own_objects_once_owners_apply() {
    let d = tempfile::tempdir().unwrap();
    let (lower, upper, work) = (d.path().join("l"), d.path().join("u"), d.path().join("w"));
    for p in [&lower, &upper, &work] {
        fs::create_dir(p).unwrap();
    }
    fs::write(lower.join("rootfile"), "r").unwrap();
    if nix::unistd::geteuid().is_root() {
        // The upper layer's owner is the one id mapped: make it a user's.
        std::os::unix::fs::chown(&upper, Some(1234), Some(1234)).unwrap();
    }
    let layers = Layers::new(&upper, &work, std::slice::from_ref(&lower)).unwrap();
    let ov = Overlay::new(layers, Owners::Single);
    let (uid, gid) = ov.single_id();
    assert_ne!(uid, 0);
    let me = Caller { uid, gid };
    let setup = ov.mkdir(ROOT, OsStr::new("setup"), 0o755, me).unwrap();
    let root_file = ov.lookup(ROOT, OsStr::new("rootfile")).unwrap();
    assert_eq!(
        root_file.uid, uid,
        "before the owners apply, all is the user's"
    );
    assert!(ov.recorded(root_file.ino).is_none());
    ov.enforce_owners();
    let mine = ov.mkdir(ROOT, OsStr::new("mine"), 0o700, me).unwrap();
    assert_eq!((mine.uid, mine.perm), (uid, 0o700));
    assert!(
        ov.recorded(mine.ino)
            .is_some_and(|o| (o.uid, o.gid) == (uid, gid))
    );
    let root_file = ov.getattr(root_file.ino).unwrap();
    assert_eq!(
        root_file.uid, 0,
        "root's file shows as root's to the kernel"
    );
    assert!(
        ov.recorded(root_file.ino)
            .is_some_and(|o| (o.uid, o.mode) == (0, 0o644))
    );
    // What the init made while setting up is root's, as under docker.
    assert!(ov.recorded(setup.ino).is_some_and(|o| o.uid == 0));
    assert!(ov.owns(mine.ino, uid) && !ov.owns(root_file.ino, uid));
}

/// A lower file with names in two directories, one of them also whited out in a layer above.
fn linked_layers() -> T {
    let t = setup(Owners::Mapped);
    let l1 = &t.lowers[1];
    fs::create_dir_all(l1.join("data/keep")).unwrap();
    fs::create_dir_all(l1.join("elsewhere/deep")).unwrap();
    fs::write(l1.join("data/keep/k"), "a\n").unwrap();
    fs::hard_link(l1.join("data/keep/k"), l1.join("data/keep/hard")).unwrap();
    fs::hard_link(l1.join("data/keep/k"), l1.join("elsewhere/deep/far")).unwrap();
    fs::hard_link(l1.join("data/keep/k"), l1.join("elsewhere/gone")).unwrap();
    fs::create_dir_all(t.lowers[0].join("elsewhere")).unwrap();
    whiteout(&t.lowers[0].join("elsewhere/gone"));
    t
}

fn read_all(t: &T, ino: u64) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = t.ov.read(ino, 0, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn a_copied_up_hard_link_takes_all_its_visible_names() {
    let t = linked_layers();
    // Only `k` is known when it is written: its other names follow all the same.
    let k = ino(&t, "data/keep/k");
    t.ov.write(k, 2, b"b\n").unwrap();
    let up = |p: &str| fs::symlink_metadata(t.upper.join(p));
    let main = up("data/keep/k").unwrap();
    assert_eq!(main.nlink(), 3, "k, hard and far: not the whited-out name");
    for p in ["data/keep/hard", "elsewhere/deep/far"] {
        assert_eq!(
            up(p).unwrap().ino(),
            main.ino(),
            "{p} is linked to the copy"
        );
        assert_eq!(
            read_all(&t, ino(&t, p)),
            b"a\nb\n",
            "{p} shows the new data"
        );
        assert_eq!(t.ov.getattr(ino(&t, p)).unwrap().nlink, 3);
    }
    assert!(
        up("elsewhere/gone").is_err(),
        "a removed name is not linked back"
    );
    assert!(
        t.ov.lookup(ino(&t, "elsewhere"), OsStr::new("gone"))
            .is_err()
    );
    // A restart over the same upper layer sees the same.
    let lowers = t.lowers.clone();
    let work = t.upper.parent().unwrap().join("work");
    let again = Overlay::new(
        Layers::new(&t.upper, &work, &lowers).unwrap(),
        Owners::Mapped,
    );
    let t2 = T { ov: again, ..t };
    for p in ["data/keep/k", "data/keep/hard", "elsewhere/deep/far"] {
        assert_eq!(read_all(&t2, ino(&t2, p)), b"a\nb\n", "{p} after a restart");
    }
}

#[test]
fn removing_copied_up_hard_links_never_brings_back_lower_data() {
    let t = linked_layers();
    let keep = ino(&t, "data/keep");
    let hard = ino(&t, "data/keep/hard");
    t.ov.write(ino(&t, "data/keep/k"), 0, b"z").unwrap();
    t.ov.unlink(keep, OsStr::new("k")).unwrap();
    assert_eq!(
        read_all(&t, hard),
        b"z\n",
        "the other name keeps the new data"
    );
    t.ov.unlink(keep, OsStr::new("hard")).unwrap();
    assert!(names(&t, keep).is_empty(), "{:?}", names(&t, keep));
    t.ov.rmdir(ino(&t, "data"), OsStr::new("keep")).unwrap();
    assert!(t.ov.lookup(ino(&t, "data"), OsStr::new("keep")).is_err());
    // far still has the copied-up data; renaming it leaves no lower name behind.
    let deep = ino(&t, "elsewhere/deep");
    t.ov.rename(deep, OsStr::new("far"), ROOT, OsStr::new("moved"), 0)
        .unwrap();
    assert!(names(&t, deep).is_empty());
    assert_eq!(read_all(&t, ino(&t, "moved")), b"z\n");
}
