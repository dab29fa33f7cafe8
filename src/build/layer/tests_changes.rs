//! A container's changes named as `docker diff` names them, from a writable layer and from a
//! copied tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::tests::{set_xattr, whiteout, write};
use super::*;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// The image's layer: names to keep, change, delete, hide and replace.
fn lower(root: &Path) {
    for f in ["a/keep", "a/old", "d/x", "d/sub/y", "bin/tool", "f", "g/in"] {
        write(&root.join(f), f);
    }
    write(&root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    for d in ["a", "d", "d/sub", "bin", "g", "m", "t", "etc"] {
        fs::create_dir_all(root.join(d)).unwrap();
        chmod(&root.join(d), 0o755);
        set_mtime(&root.join(d), 1_000_000);
    }
}

/// A directory as a copy-up leaves it: the lower's mode and time.
fn copied_up(up: &Path, d: &str) {
    fs::create_dir_all(up.join(d)).unwrap();
    chmod(&up.join(d), 0o755);
    set_mtime(&up.join(d), 1_000_000);
}

fn exclude() -> Vec<PathBuf> {
    ["/etc/hosts", "/proc"].iter().map(PathBuf::from).collect()
}

fn shown(v: &[Change]) -> Vec<String> {
    v.iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path))
        .collect()
}

#[test]
fn a_writable_layer_names_its_changes() {
    let t = tempfile::tempdir().unwrap();
    let (low, up) = (t.path().join("lower"), t.path().join("upper"));
    lower(&low);
    fs::create_dir(&up).unwrap();
    copied_up(&up, "a");
    if !whiteout(&up.join("a/old")) {
        return;
    }
    write(&up.join("a/new"), "new");
    copied_up(&up, "bin");
    write(&up.join("bin/tool"), "changed");
    // Removed and made again: opaque, holding one old name, one new, and a directory whose
    // old content is gone.
    copied_up(&up, "d");
    set_xattr(&up.join("d"), crate::unpack::OPAQUE_XATTR, b"y");
    write(&up.join("d/x"), "again");
    write(&up.join("d/z"), "z");
    fs::create_dir(up.join("d/sub")).unwrap();
    chmod(&up.join("d/sub"), 0o755);
    // A file replaced by a directory, a directory by a file.
    write(&up.join("f/in"), "in");
    set_xattr(&up.join("f"), crate::unpack::OPAQUE_XATTR, b"y");
    write(&up.join("g"), "now a file");
    copied_up(&up, "m");
    chmod(&up.join("m"), 0o700);
    // Only its time changed, as a name made and removed again leaves it.
    copied_up(&up, "t");
    set_mtime(&up.join("t"), 2_000_000);
    // nook's mount target, with the directory that holds it.
    copied_up(&up, "etc");
    write(&up.join("etc/hosts"), "");
    set_mtime(&up.join("etc"), 1_000_000);
    write(&up.join("new/deep/file"), "n");
    let lowers = Layered::new(std::slice::from_ref(&low)).unwrap();
    let v = list_changes(&up, Top::Upper, &lowers, &exclude()).unwrap();
    assert_eq!(
        shown(&v),
        [
            "C /a",
            "A /a/new",
            "D /a/old",
            "C /bin",
            "C /bin/tool",
            "C /d",
            "C /d/sub",
            "D /d/sub/y",
            "C /d/x",
            "A /d/z",
            "C /f",
            "A /f/in",
            "C /g",
            "C /m",
            "A /new",
            "A /new/deep",
            "A /new/deep/file",
        ]
    );
}

#[test]
fn a_copied_tree_names_its_changes() {
    let t = tempfile::tempdir().unwrap();
    let (low, root) = (t.path().join("lower"), t.path().join("rootfs"));
    lower(&low);
    fs::create_dir(&root).unwrap();
    crate::rootfs::copy_layers(&[&low], &root).unwrap();
    fs::remove_file(root.join("a/old")).unwrap();
    write(&root.join("a/new"), "new");
    fs::remove_dir_all(root.join("d")).unwrap();
    write(&root.join("d/z"), "z");
    chmod(&root.join("d"), 0o755);
    chmod(&root.join("m"), 0o700);
    write(&root.join("etc/hosts"), "");
    set_mtime(&root.join("etc"), 1_000_000);
    let lowers = Layered::new(std::slice::from_ref(&low)).unwrap();
    let v = list_changes(&root, Top::Tree, &lowers, &exclude()).unwrap();
    assert_eq!(
        shown(&v),
        [
            "C /a", "A /a/new", "D /a/old", "C /d", "D /d/sub", "D /d/x", "A /d/z", "C /m",
        ]
    );
}

#[test]
fn a_change_reads_and_writes_as_docker_json() {
    let c: Vec<Change> =
        serde_json::from_str(r#"[{"Path":"/x","Kind":2},{"Path":"/y","Kind":0}]"#).unwrap();
    assert_eq!(c[0].kind, ChangeKind::Deleted);
    assert_eq!(c[1].kind.letter(), 'C');
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"[{"Path":"/x","Kind":2},{"Path":"/y","Kind":0}]"#
    );
    assert!(serde_json::from_str::<Vec<Change>>(r#"[{"Path":"/x","Kind":3}]"#).is_err());
}
