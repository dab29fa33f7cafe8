//! The merged view of store layers, and helpers the other test files share.

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;
use crate::build::entry::{FileKind, Source, SourceTree};

/// Reports a missing privilege: a failure under CI, a printed skip elsewhere.
pub(super) fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Makes a 0/0 character device (a whiteout) at `p`; false (after saying so) without the
/// privilege.
pub(super) fn whiteout(p: &Path) -> bool {
    match nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    ) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => {
            skip("mknod of a 0/0 character device needs privilege");
            false
        }
        Err(e) => panic!("mknod {}: {e}", p.display()),
    }
}

pub(super) fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    crate::sys::xattr::path_set(c.as_c_str(), name, value, 0).unwrap();
}

pub(super) fn write(p: &Path, data: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

pub(super) fn names(v: Vec<OsString>) -> Vec<String> {
    v.into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

/// Two layer directories, top first, below a temp dir.
pub(super) fn two_layers() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
    fs::create_dir(&top).unwrap();
    fs::create_dir(&bottom).unwrap();
    (t, top, bottom)
}

#[test]
fn a_whiteout_above_hides_the_lower_file() {
    let (_t, top, bottom) = two_layers();
    write(&bottom.join("etc/motd"), "hello");
    write(&bottom.join("etc/issue"), "debian");
    fs::create_dir(top.join("etc")).unwrap();
    if !whiteout(&top.join("etc/motd")) {
        return;
    }
    let l = Layered::new(&[top, bottom]).unwrap();
    assert_eq!(l.stat(Path::new("etc/motd")).unwrap(), None);
    assert!(l.stat(Path::new("etc/issue")).unwrap().is_some());
    assert_eq!(names(l.read_dir(Path::new("etc")).unwrap()), ["issue"]);
}

#[test]
fn an_opaque_directory_hides_what_is_below_it_and_others_merge() {
    let (_t, top, bottom) = two_layers();
    write(&bottom.join("opq/old"), "o");
    write(&bottom.join("m/lower"), "l");
    write(&top.join("opq/new"), "n");
    write(&top.join("m/upper"), "u");
    set_xattr(&top.join("opq"), crate::unpack::OPAQUE_XATTR, b"y");
    let l = Layered::new(&[top, bottom]).unwrap();
    assert_eq!(names(l.read_dir(Path::new("opq")).unwrap()), ["new"]);
    assert_eq!(l.stat(Path::new("opq/old")).unwrap(), None);
    assert_eq!(
        names(l.read_dir(Path::new("m")).unwrap()),
        ["lower", "upper"]
    );
    assert!(l.stat(Path::new("m/lower")).unwrap().is_some());
}

#[test]
fn an_opaque_top_root_ends_the_merge() {
    let (_t, top, bottom) = two_layers();
    write(&bottom.join("gone"), "g");
    write(&top.join("kept"), "k");
    set_xattr(&top, crate::unpack::OPAQUE_XATTR, b"y");
    let l = Layered::new(&[top, bottom]).unwrap();
    assert_eq!(names(l.read_dir(Path::new("")).unwrap()), ["kept"]);
}

#[test]
fn owners_and_special_bits_come_from_the_owner_record() {
    let (_t, top, bottom) = two_layers();
    write(&top.join("bin/su"), "su");
    let v = crate::unpack::override_value(1000, 1001, 0o4755, "file");
    set_xattr(
        &top.join("bin/su"),
        crate::unpack::OVERRIDE_XATTR,
        v.as_bytes(),
    );
    set_xattr(&top.join("bin/su"), "user.keep", b"1");
    let l = Layered::new(&[top, bottom]).unwrap();
    let m = l.stat(Path::new("bin/su")).unwrap().unwrap();
    assert_eq!((m.uid, m.gid, m.mode), (1000, 1001, 0o4755));
    assert_eq!(m.kind, FileKind::File);
    assert_eq!(m.size, 2);
    // The record is nook's, not the image's.
    assert_eq!(
        l.xattrs(Path::new("bin/su")),
        [("user.keep".to_owned(), b"1".to_vec())]
    );
}

#[test]
fn the_top_copy_shows_once_and_a_file_ends_the_directory_merge() {
    let (_t, top, bottom) = two_layers();
    write(&bottom.join("d/same"), "lower copy");
    write(&top.join("d/same"), "top");
    write(&bottom.join("d/only-lower"), "l");
    write(&bottom.join("x/inside"), "i");
    write(&top.join("x"), "a file now");
    let l = Layered::new(&[top.clone(), bottom]).unwrap();
    assert_eq!(
        names(l.read_dir(Path::new("d")).unwrap()),
        ["only-lower", "same"]
    );
    assert_eq!(l.stat(Path::new("d/same")).unwrap().unwrap().size, 3);
    assert_eq!(
        l.source(Path::new("d/same")),
        Source::Beneath {
            root: top,
            rel: PathBuf::from("d/same")
        }
    );
    assert_eq!(
        l.stat(Path::new("x")).unwrap().unwrap().kind,
        FileKind::File
    );
    assert_eq!(l.stat(Path::new("x/inside")).unwrap(), None);
}

#[test]
fn symlinks_in_a_layer_are_never_followed() {
    let (t, top, bottom) = two_layers();
    let outside = t.path().join("outside");
    write(&outside.join("secret"), "s");
    symlink(&outside, top.join("out")).unwrap();
    symlink("/", top.join("slash")).unwrap();
    let l = Layered::new(&[top, bottom]).unwrap();
    assert_eq!(l.stat(Path::new("out/secret")).unwrap(), None);
    assert_eq!(l.stat(Path::new("slash/etc")).unwrap(), None);
    assert_eq!(
        l.stat(Path::new("out")).unwrap().unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(l.read_link(Path::new("out")).unwrap(), outside);
    assert!(l.stat(Path::new("../top")).is_err());
}
