//! Layers seen merged, the changes a RUN step made, and the tar that carries them.
//!
//! [`Layered`] reads store layers as the overlay shows them (0/0 character devices hide a
//! name, `user.overlay.opaque` stops the merge, owners come from the owner record of a
//! single-mapping store), for COPY and for the comparisons below. A RUN step's changes come
//! from its writable layer ([`diff_upper`]: every entry there is a change, its markers turn into
//! whiteouts and opaque directories) or, on the copy rung, from comparing the whole copied tree
//! with the layers it started from ([`diff_tree`]). Both leave out nook's own mount targets.
//! [`write_tar`] turns the entries into a deterministic PAX layer, reading file content only
//! through descriptors opened beneath their tree without following a symlink, so that a tree
//! the build's container changed cannot lead the read elsewhere.
//!
//! Every lookup here is confined: one component at a time with `O_NOFOLLOW` below a directory
//! descriptor, or `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a layer's root.

mod changes;
mod layered;
mod snapshot;
mod write;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstatat};

pub use changes::{Change, ChangeKind, Top, container_changes, list_changes};
pub use layered::Layered;
pub use snapshot::{diff_tree, diff_upper};
pub use write::{WriteOptions, write_tar};

use super::entry::{FileKind, Meta};
use crate::fuse::layers::{get_xattr, get_xattr_at, proc_path};
use crate::unpack::{OVERRIDE_XATTR, parse_override};

/// A step of reading or writing a layer failed at `path`.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct LayerError {
    pub step: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// Wraps `e` with the step and path it happened at (the kind is kept for callers that match);
/// an error that already says where it happened is passed on as it is.
pub(crate) fn at(step: &'static str, path: &std::path::Path, e: io::Error) -> io::Error {
    if e.get_ref().is_some_and(|r| r.is::<LayerError>()) {
        return e;
    }
    io::Error::new(
        e.kind(),
        LayerError {
            step,
            path: path.display().to_string(),
            source: e,
        },
    )
}

/// Extended attributes that say how a layer is stored, not what the image holds.
fn internal_xattr(name: &str) -> bool {
    ["user.containers.", "user.overlay.", "trusted.overlay."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The xattrs of an image entry: the internal ones dropped, sorted by name.
pub(crate) fn kept_xattrs(all: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    all.into_iter()
        .filter(|(n, _)| !internal_xattr(n))
        .collect()
}

pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

pub(crate) fn kind_of(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFSOCK => FileKind::Socket,
        _ => FileKind::File,
    }
}

fn missing(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENOTDIR)
}

/// One entry of a directory as a layer stores it.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub st: FileStat,
    /// Owners and mode as the container sees them (the owner record first).
    pub meta: Meta,
    /// Whether the owner record was there.
    pub record: bool,
}

impl Probe {
    pub fn mtime_ns(&self) -> (i64, i64) {
        (self.st.st_mtime, self.st.st_mtime_nsec)
    }
}

/// `lstat` of `name` in the directory `dir` (`.` for `dir` itself), with the owner record
/// applied; `None` when there is no such entry.
pub(crate) fn probe_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Probe>> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) if missing(e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind = kind_of(st.st_mode);
    // Only files and directories can carry the record (user xattrs exist on nothing else).
    let record = if matches!(kind, FileKind::File | FileKind::Dir) {
        get_xattr_at(&dir.as_raw_fd(), name, OVERRIDE_XATTR).and_then(|v| parse_override(&v))
    } else {
        None
    };
    let (uid, gid, mode) = record.unwrap_or((st.st_uid, st.st_gid, st.st_mode & 0o7777));
    let rdev = st.st_rdev;
    let meta = Meta {
        kind,
        mode,
        uid,
        gid,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime: st.st_mtime,
        rdev: (libc::major(rdev), libc::minor(rdev)),
        dev_ino: (st.st_dev, st.st_ino),
        nlink: st.st_nlink,
    };
    Ok(Some(Probe {
        st,
        meta,
        record: record.is_some(),
    }))
}

/// Every xattr of the entry `name` in `dir`, sorted by name. Symlinks give none: they are
/// never opened, so no call can follow them.
pub(crate) fn all_xattrs(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: FileKind,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    if kind == FileKind::Symlink {
        return Ok(Vec::new());
    }
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // The name may have been replaced since it was looked at: a symlink's xattrs are not read
    // (a call on its /proc path could follow it).
    if nix::sys::stat::fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Ok(Vec::new());
    }
    let path = proc_path(&fd);
    let mut names = crate::sys::xattr::path_list(path.as_c_str())?;
    names.sort();
    Ok(names
        .into_iter()
        .filter_map(|n| {
            let v = get_xattr(&fd, &n)?;
            Some((n, v))
        })
        .collect())
}

/// Whether the directory `name` in `dir` is marked opaque.
pub(crate) fn opaque_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    [crate::unpack::OPAQUE_XATTR, "trusted.overlay.opaque"]
        .iter()
        .any(|x| get_xattr_at(&dir.as_raw_fd(), name, x).as_deref() == Some(b"y"))
}

/// Whether a directory's xattrs mark it opaque (the `userxattr` form or the privileged one).
pub(crate) fn marked_opaque(xattrs: &[(String, Vec<u8>)]) -> bool {
    xattrs.iter().any(|(n, v)| {
        (n == crate::unpack::OPAQUE_XATTR || n == "trusted.overlay.opaque") && v.as_slice() == b"y"
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_changes;
#[cfg(test)]
mod tests_diff;
#[cfg(test)]
mod tests_write;
