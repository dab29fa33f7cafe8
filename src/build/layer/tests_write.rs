//! The layer tar, read back with the `tar` crate.

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;
use crate::build::entry::{Entry, EntryKind, Source};

fn entry(path: &str, kind: EntryKind, mode: u32, mtime: i64) -> Entry {
    Entry {
        path: PathBuf::from(path),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: Vec::new(),
    }
}

fn bytes_file(data: &str) -> EntryKind {
    EntryKind::File {
        size: data.len() as u64,
        source: Source::Bytes(data.as_bytes().to_vec()),
    }
}

/// A layer with every kind of entry, given out of order.
fn sample() -> Vec<Entry> {
    let mut su = entry("usr/bin/su", bytes_file("su!"), 0o4755, 2_000_000_000);
    (su.uid, su.gid) = (1000, 3_000_000);
    su.xattrs = vec![("security.capability".to_owned(), vec![1, 2, 3])];
    vec![
        entry(
            "usr/bin/sudo",
            EntryKind::Hardlink("usr/bin/su".into()),
            0o4755,
            5,
        ),
        su,
        entry("usr/bin", EntryKind::Dir, 0o755, 10),
        entry("usr", EntryKind::Dir, 0o755, 10),
        entry("opt", EntryKind::Opaque, 0o750, 10),
        entry("opt", EntryKind::Dir, 0o750, 10),
        entry("opt/gone", EntryKind::Whiteout, 0o600, 0),
        entry("opt/a.b", bytes_file(""), 0o644, 10),
        entry("opt/a", EntryKind::Dir, 0o755, 10),
        entry("opt/a/x", EntryKind::Symlink("../a.b".into()), 0o777, 10),
        entry("dev/null", EntryKind::CharDevice(1, 3), 0o666, 10),
        entry("fifo", EntryKind::Fifo, 0o600, 10),
    ]
}

struct Read_ {
    name: String,
    ty: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    data: Vec<u8>,
}

fn read_back(tar_bytes: &[u8]) -> Vec<Read_> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        let (mut uid, mut gid) = (e.header().uid().unwrap(), e.header().gid().unwrap());
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                let k = r.key().unwrap();
                if let Some(n) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((n.to_owned(), r.value_bytes().to_vec()));
                }
                match k {
                    "uid" => uid = r.value().unwrap().parse().unwrap(),
                    "gid" => gid = r.value().unwrap().parse().unwrap(),
                    _ => {}
                }
            }
        }
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Read_ {
            name: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            ty: e.header().entry_type(),
            mode: e.header().mode().unwrap(),
            uid,
            gid,
            mtime: e.header().mtime().unwrap(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
            xattrs,
            data,
        });
    }
    out
}

fn by_name<'a>(r: &'a [Read_], name: &str) -> &'a Read_ {
    r.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_layer_reads_back_sorted_with_markers_links_and_owners() {
    let mut out = Vec::new();
    let n = write_tar(&sample(), &mut out, &WriteOptions { clamp: Some(1000) }).unwrap();
    assert_eq!(n, 3);
    let r = read_back(&out);
    let names: Vec<&str> = r.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dev/null",
            "fifo",
            "opt/",
            "opt/.wh..wh..opq",
            "opt/a/",
            "opt/a/x",
            "opt/a.b",
            "opt/.wh.gone",
            "usr/",
            "usr/bin/",
            "usr/bin/su",
            "usr/bin/sudo",
        ]
    );
    let su = by_name(&r, "usr/bin/su");
    assert_eq!((su.mode, su.uid, su.gid), (0o4755, 1000, 3_000_000));
    assert_eq!(su.mtime, 1000, "clamped");
    assert_eq!(su.data, b"su!");
    assert_eq!(
        su.xattrs,
        [("security.capability".to_owned(), vec![1, 2, 3])]
    );
    let sudo = by_name(&r, "usr/bin/sudo");
    assert_eq!(
        (sudo.ty, sudo.link.as_deref()),
        (tar::EntryType::Link, Some("usr/bin/su"))
    );
    assert_eq!(sudo.mtime, 5, "below the clamp");
    let opq = by_name(&r, "opt/.wh..wh..opq");
    assert_eq!(
        (opq.ty, opq.mode, opq.mtime),
        (tar::EntryType::Regular, 0o750, 0)
    );
    let gone = by_name(&r, "opt/.wh.gone");
    assert_eq!((gone.ty, gone.data.len()), (tar::EntryType::Regular, 0));
    assert_eq!(by_name(&r, "opt/a/x").link.as_deref(), Some("../a.b"));
    assert_eq!(by_name(&r, "dev/null").ty, tar::EntryType::Char);
    assert_eq!(by_name(&r, "fifo").ty, tar::EntryType::Fifo);
    assert_eq!(by_name(&r, "usr/").ty, tar::EntryType::Directory);
}

#[test]
fn two_writes_give_the_same_bytes() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut reversed = sample();
    reversed.reverse();
    write_tar(&sample(), &mut a, &WriteOptions::default()).unwrap();
    write_tar(&reversed, &mut b, &WriteOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len() % 512, 0);
}

#[test]
fn long_names_and_links_go_into_pax_records() {
    let long = format!("{}/{}", "d".repeat(200), "f".repeat(150));
    let target = "t".repeat(300);
    let e = vec![
        entry(&long, bytes_file("x"), 0o644, 1),
        entry("l", EntryKind::Symlink(target.clone().into()), 0o777, 1),
        entry("a", EntryKind::Hardlink(long.clone().into()), 0o644, 1),
    ];
    let mut out = Vec::new();
    write_tar(&e, &mut out, &WriteOptions::default()).unwrap();
    let r = read_back(&out);
    assert_eq!(by_name(&r, "l").link.as_deref(), Some(target.as_str()));
    // The link sorted before its target: it took the content, the target links to it.
    assert_eq!(by_name(&r, "a").data, b"x");
    let moved = by_name(&r, &long);
    assert_eq!(
        (moved.ty, moved.link.as_deref()),
        (tar::EntryType::Link, Some("a"))
    );
}

fn beneath(root: &Path, rel: &str, size: u64) -> Entry {
    let kind = EntryKind::File {
        size,
        source: Source::Beneath {
            root: root.to_owned(),
            rel: rel.into(),
        },
    };
    entry(rel, kind, 0o644, 1)
}

#[test]
fn content_beneath_its_tree_is_checked_as_it_is_read() {
    let t = tempfile::tempdir().unwrap();
    let (root, outside) = (t.path().join("root"), t.path().join("outside"));
    fs::create_dir_all(root.join("d")).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(root.join("f"), b"abc").unwrap();
    fs::write(outside.join("secret"), b"xyz").unwrap();
    let mut out = Vec::new();
    let opts = WriteOptions::default();
    assert_eq!(
        write_tar(&[beneath(&root, "f", 3)], &mut out, &opts).unwrap(),
        3
    );
    // Planned at three bytes, now two: refused, not padded.
    let e = write_tar(&[beneath(&root, "f", 2)], Vec::new(), &opts).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    // The file became a symlink to one of the same size elsewhere.
    fs::remove_file(root.join("f")).unwrap();
    symlink(outside.join("secret"), root.join("f")).unwrap();
    assert!(write_tar(&[beneath(&root, "f", 3)], Vec::new(), &opts).is_err());
    // A directory on the way became a symlink.
    fs::remove_dir(root.join("d")).unwrap();
    symlink(&outside, root.join("d")).unwrap();
    assert!(write_tar(&[beneath(&root, "d/secret", 3)], Vec::new(), &opts).is_err());
    assert!(write_tar(&[beneath(&root, "../outside/secret", 3)], Vec::new(), &opts).is_err());
}

#[test]
fn a_name_that_reads_as_a_whiteout_is_refused() {
    let e = [entry("etc/.wh.passwd", bytes_file("x"), 0o644, 1)];
    assert!(write_tar(&e, Vec::new(), &WriteOptions::default()).is_err());
    let dangling = [entry("a", EntryKind::Hardlink("nothing".into()), 0o644, 1)];
    assert!(write_tar(&dangling, Vec::new(), &WriteOptions::default()).is_err());
}

#[test]
fn a_snapshot_written_and_unpacked_gives_the_same_tree() {
    let t = tempfile::tempdir().unwrap();
    let (lower, up, dest) = (t.path().join("l"), t.path().join("u"), t.path().join("x"));
    for d in [&lower, &up, &dest] {
        fs::create_dir(d).unwrap();
    }
    fs::write(lower.join("keep"), b"k").unwrap();
    fs::create_dir(up.join("etc")).unwrap();
    fs::write(up.join("etc/conf"), b"setting=1\n").unwrap();
    fs::hard_link(up.join("etc/conf"), up.join("conf2")).unwrap();
    symlink("etc/conf", up.join("s")).unwrap();
    let lowers = Layered::new(&[lower]).unwrap();
    let v = diff_upper(&up, &lowers, &[]).unwrap();
    let mut tar_bytes = Vec::new();
    write_tar(&v, &mut tar_bytes, &WriteOptions::default()).unwrap();
    let owners = crate::unpack::Owners::Keep { max_id: 65535 };
    crate::unpack::unpack(tar_bytes.as_slice(), &dest, owners).unwrap();
    assert_eq!(fs::read(dest.join("etc/conf")).unwrap(), b"setting=1\n");
    assert_eq!(fs::read(dest.join("conf2")).unwrap(), b"setting=1\n");
    assert_eq!(
        fs::read_link(dest.join("s")).unwrap(),
        Path::new("etc/conf")
    );
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        fs::metadata(dest.join("etc/conf")).unwrap(),
        fs::metadata(dest.join("conf2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "still one file");
}

#[test]
fn content_that_ends_early_or_runs_on_is_an_error_not_padding() {
    use super::write::Exact;
    let mut out = Vec::new();
    let short = Exact {
        inner: &b"ab"[..],
        left: 3,
    };
    assert_eq!(
        { short }.read_to_end(&mut out).unwrap_err().kind(),
        std::io::ErrorKind::UnexpectedEof
    );
    let long = Exact {
        inner: &b"abcd"[..],
        left: 3,
    };
    assert_eq!(
        { long }.read_to_end(&mut out).unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
    out.clear();
    let exact = Exact {
        inner: &b"abc"[..],
        left: 3,
    };
    { exact }.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"abc");
}
