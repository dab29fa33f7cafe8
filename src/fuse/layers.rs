//! The backing directories of an overlay and the only ways to reach into them.
//!
//! Every lookup below a layer goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
//! the container controls the upper layer's contents (it can create symlinks there through the
//! overlay), and a symlink followed by nook's server — which runs outside the container's mount
//! namespace — would reach the host. On kernels without openat2 the path is walked one
//! component at a time with `O_NOFOLLOW`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

use super::fdcache::Lru;

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Which layer an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Upper,
    /// Index into the lower layers, 0 = the topmost.
    Lower(usize),
    /// The work directory (copies in progress, files removed while in use).
    Work,
}

/// The directories of one overlay.
#[derive(Debug)]
pub struct Layers {
    upper: OwnedFd,
    work: OwnedFd,
    lowers: Vec<OwnedFd>,
    /// Per lower layer: whether it may hold owner records (the store knows which do not).
    owners: Vec<bool>,
    /// Directories opened before, by layer and path: lower ones never change; upper ones are
    /// dropped whenever an upper directory goes or moves (`forget_upper_dirs`). Bounded by the
    /// descriptor limit (see `fdcache`).
    dirs: Mutex<Lru<(Layer, PathBuf), Arc<OwnedFd>>>,
}

fn open_root(p: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

impl Layers {
    /// Opens the upper and work directories and the lower layers (top first).
    pub fn new(upper: &Path, work: &Path, lowers: &[PathBuf]) -> io::Result<Layers> {
        Ok(Layers {
            upper: open_root(upper)?,
            work: open_root(work)?,
            lowers: lowers
                .iter()
                .map(|l| open_root(l))
                .collect::<io::Result<_>>()?,
            owners: vec![true; lowers.len()],
            dirs: Mutex::new(Lru::new(super::fdcache::capacity())),
        })
    }

    /// Says which lower layers may hold owner records (`user.containers.override_stat`);
    /// the others are never asked for them.
    pub fn with_owner_hints(mut self, hints: &[bool]) -> Layers {
        for (o, h) in self.owners.iter_mut().zip(hints) {
            *o = *h;
        }
        self
    }

    /// Whether objects of layer `l` may carry an owner record.
    pub fn may_have_owners(&self, l: Layer) -> bool {
        match l {
            Layer::Lower(i) => self.owners.get(i).copied().unwrap_or(true),
            _ => true,
        }
    }

    pub fn lower_count(&self) -> usize {
        self.lowers.len()
    }

    pub fn root(&self, l: Layer) -> BorrowedFd<'_> {
        match l {
            Layer::Upper => self.upper.as_fd(),
            Layer::Lower(i) => self.lowers.get(i).map_or(self.upper.as_fd(), |f| f.as_fd()),
            Layer::Work => self.work.as_fd(),
        }
    }

    pub fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Opens `rel` below layer `l` with `flags`, following no symlink (a final symlink is
    /// opened itself with `O_PATH | O_NOFOLLOW`).
    pub fn open(&self, l: Layer, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        open_beneath(self.root(l), rel, flags)
    }

    /// The directory `rel` of layer `l`, as an `O_PATH` handle.
    pub fn dir(&self, l: Layer, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        let key = (l, rel.to_path_buf());
        if let Some(fd) = self.dirs.lock().ok().and_then(|mut d| d.get(&key).cloned()) {
            return Ok(fd);
        }
        let fd = Arc::new(self.open(l, rel, OFlag::O_PATH | OFlag::O_DIRECTORY)?);
        if let Ok(mut d) = self.dirs.lock() {
            d.insert(key, fd.clone());
        }
        Ok(fd)
    }

    /// An upper directory was removed or moved: cached upper paths may name something else.
    pub fn forget_upper_dirs(&self) {
        if let Ok(mut d) = self.dirs.lock() {
            d.retain(|(l, _), _| *l != Layer::Upper);
        }
    }

    /// `lstat` of `name` in the directory `rel` of layer `l`.
    pub fn stat(&self, l: Layer, rel: &Path) -> io::Result<FileStat> {
        let fd = self.open(l, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        Ok(fstat(&fd)?)
    }
}

/// `lstat` of `name` inside the directory handle `dir`.
pub fn stat_in(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileStat> {
    Ok(fstatat(
        dir,
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Opens `rel` below `root` following no symlink on the way.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = flags | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let mut how = OpenHow::new().flags(flags);
        if flags.contains(OFlag::O_CREAT) {
            how = how.mode(Mode::from_bits_truncate(0o600));
        }
        let how = how.resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        let mut tries = 0;
        loop {
            match openat2(root, rel, how) {
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                other => return Ok(other?),
            }
        }
    }
    walk(root, rel, flags)
}

fn walk(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let comps: Vec<OsString> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .collect();
    if rel.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::RootDir
        )
    }) {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let Some((last, dirs)) = comps.split_last() else {
        return Ok(openat(root, ".", flags, Mode::empty())?);
    };
    let mut cur: Option<OwnedFd> = None;
    for c in dirs {
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(openat(
            at,
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
    }
    let at = cur.as_ref().map_or(root, |f| f.as_fd());
    Ok(openat(
        at,
        last.as_os_str(),
        flags | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )?)
}

/// The `/proc/self/fd/N` path of a descriptor: xattr calls on `O_PATH` handles go through it.
pub fn proc_path(fd: &impl AsRawFd) -> std::ffi::CString {
    // A decimal number never contains a NUL byte.
    std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reads xattr `name` of the object behind an `O_PATH` handle; `None` if absent or not
/// supported there (symlinks, special files).
pub fn get_xattr(fd: &impl AsRawFd, name: &str) -> Option<Vec<u8>> {
    let p = proc_path(fd);
    crate::sys::xattr::path_get(p.as_c_str(), name)
        .ok()
        .flatten()
}

/// Reads xattr `name` of the entry `entry` of the directory handle `dir`, not following a
/// symlink there; `None` if absent or not supported.
pub fn get_xattr_at(dir: &impl AsRawFd, entry: &OsStr, name: &str) -> Option<Vec<u8>> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(entry.as_bytes());
    let p = std::ffi::CString::new(p).ok()?;
    crate::sys::xattr::path_lget(p.as_c_str(), name)
        .ok()
        .flatten()
}

/// The file name of a relative path's last component.
pub fn split(rel: &Path) -> (&Path, &OsStr) {
    let name = rel.file_name().unwrap_or(OsStr::new(""));
    let parent = rel.parent().unwrap_or(Path::new(""));
    (parent, name)
}

/// Whether a name is one no overlay entry may have (`.`, `..`, or containing `/`).
pub fn bad_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let up = t.path().join("up");
        std::fs::create_dir_all(up.join("d")).unwrap();
        symlink(outside.path(), up.join("link")).unwrap();
        let root = open_root(&up).unwrap();
        assert!(open_beneath(root.as_fd(), Path::new("link/secret"), OFlag::O_RDONLY).is_err());
        assert!(open_beneath(root.as_fd(), Path::new("../x"), OFlag::O_RDONLY).is_err());
        let l = open_beneath(
            root.as_fd(),
            Path::new("link"),
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(fstat(&l).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert!(walk(root.as_fd(), Path::new("link/secret"), OFlag::O_RDONLY).is_err());
        assert!(walk(root.as_fd(), Path::new("d"), OFlag::O_PATH).is_ok());
    }

    #[test]
    fn names() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(bad_name(OsStr::new(bad)), "{bad}");
        }
        assert!(!bad_name(OsStr::new("...")));
    }
}
