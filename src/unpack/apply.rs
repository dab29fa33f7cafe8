//! Carrying out planned entries below a layer root, through root-confined descriptors only.
//!
//! Parents are opened with [`RootDir`] (never outside the root); the final component is acted
//! on with `*at` calls that do not follow it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`,
//! `mknodat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`). Directory modes and times are
//! applied at the end, deepest first, so that a read-only directory in the image does not stop
//! its own entries from being written.
//!
//! Owners follow [`Owners`]: with a subordinate range (the process is root of a user namespace
//! mapping it) files get the image's ids; without one they stay the user's and the image's
//! owner and mode are recorded in `user.containers.override_stat` (containers/storage's format,
//! which fuse-overlayfs also reads), with setuid/setgid cleared on disk so that the store never
//! holds a setuid binary of the user's.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use super::plan::{EntryKind, Meta, Op, RelPath};
use crate::sys::confined::{RootDir, remove_tree_at};
use crate::sys::xattr;

/// The xattr that records an owner and mode the disk cannot hold.
pub const OVERRIDE_XATTR: &str = "user.containers.override_stat";
/// The xattr marking an opaque directory for the kernel overlay mounted with `userxattr`.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The override xattr's value: `uid:gid:mode:type` (mode in octal), containers/storage's form.
pub fn override_value(uid: u64, gid: u64, mode: u32, kind: &str) -> String {
    format!("{uid}:{gid}:{:04o}:{kind}", mode & 0o7777)
}

/// Parses an override value into (uid, gid, permission bits).
pub fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut f = s.split(':');
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

/// How file owners are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// chown to the image's ids up to `max_id` (ids above it are recorded instead).
    Keep { max_id: u32 },
    /// Leave files to the user, record the image's owner and mode in an xattr.
    Record,
}

/// What an unpack did, for messages and layer records.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    pub devices_skipped: u64,
    pub device_examples: Vec<String>,
    /// Entries whose owner or mode went into the override xattr.
    pub owners_recorded: u64,
    /// Symlinks, fifos and whiteouts whose non-root owner could not be kept (no xattrs there).
    pub owners_lost: u64,
    pub xattrs_failed: u64,
}

/// Writes the entries of one layer below its root.
pub struct LayerWriter {
    root: RootDir,
    owners: Owners,
    cache: Option<(Vec<OsString>, OwnedFd)>,
    deferred: Vec<(Vec<OsString>, u32, u64)>,
    buf: Vec<u8>,
    /// The process umask, which creation modes pass through.
    umask: u32,
    pub stats: UnpackStats,
}

fn at(path: &RelPath, e: impl Into<io::Error>) -> (String, io::Error) {
    (path.to_string(), e.into())
}

type ApplyResult = Result<(), (String, io::Error)>;

impl LayerWriter {
    pub fn new(root: RootDir, owners: Owners) -> Self {
        // umask() can only be read by setting it; put the old value straight back.
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
        nix::sys::stat::umask(old);
        LayerWriter {
            root,
            owners,
            cache: None,
            deferred: Vec::new(),
            buf: vec![0; 256 << 10],
            umask: old.bits(),
            stats: UnpackStats::default(),
        }
    }

    /// The parent directory of an entry, created if the archive did not list it.
    fn parent(&mut self, comps: &[OsString]) -> io::Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == comps);
        if !hit {
            let fd = self.root.make_dirs(comps, 0o755)?;
            self.cache = Some((comps.to_vec(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    /// Forgets the cached parent if `path` replaces it or one of its ancestors.
    fn invalidate(&mut self, path: &RelPath) {
        if matches!(&self.cache, Some((p, _)) if p.starts_with(path.components())) {
            self.cache = None;
        }
    }

    pub fn apply(&mut self, op: Op, data: &mut dyn Read) -> ApplyResult {
        self.stats.entries += 1;
        match op {
            Op::Root(meta) => {
                let fd = self
                    .root
                    .open_dir(&[], OFlag::O_RDONLY)
                    .map_err(|e| ("/".to_owned(), e))?;
                let mode = self
                    .owner_and_xattrs(&fd, &meta, "dir")
                    .map_err(|e| ("/".to_owned(), e))?;
                self.deferred.push((Vec::new(), mode, meta.mtime));
                Ok(())
            }
            Op::Dir(path, meta) => self.dir(&path, &meta).map_err(|e| at(&path, e)),
            Op::File(path, meta) => self.file(&path, &meta, data).map_err(|e| at(&path, e)),
            Op::Symlink(path, target, meta) => self
                .symlink(&path, &target, &meta)
                .map_err(|e| at(&path, e)),
            Op::Hardlink(path, target) => self.hardlink(&path, &target).map_err(|e| at(&path, e)),
            Op::Fifo(path, meta) => self.fifo(&path, &meta).map_err(|e| at(&path, e)),
            Op::Whiteout(path) => self.whiteout(&path).map_err(|e| at(&path, e)),
            Op::Opaque(dir) => {
                let comps = dir
                    .as_ref()
                    .map(|d| d.components().to_vec())
                    .unwrap_or_default();
                let shown = dir.as_ref().map_or("/".to_owned(), |d| d.to_string());
                self.opaque(&comps).map_err(|e| (shown, e))
            }
            Op::Device(path, kind) => {
                self.stats.devices_skipped += 1;
                if self.stats.device_examples.len() < 3 {
                    let k = if kind == EntryKind::BlockDevice {
                        "block"
                    } else {
                        "char"
                    };
                    self.stats.device_examples.push(format!("{path} ({k})"));
                }
                Ok(())
            }
            Op::Skip(why) => {
                tracing::debug!(why, "skipped entry");
                Ok(())
            }
        }
    }

    /// Removes whatever is at `name` unless it is a directory and `keep_dir`; returns whether
    /// a directory was kept.
    fn clear(parent: BorrowedFd<'_>, name: &OsStr, keep_dir: bool) -> io::Result<bool> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
            Ok(st) => {
                let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
                if is_dir && keep_dir {
                    return Ok(true);
                }
                if is_dir {
                    remove_tree_at(parent, name)?;
                } else {
                    unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
                }
                Ok(false)
            }
        }
    }

    /// Root-owned, no special bits, no xattrs: the common entry, created with its final mode.
    fn plain(meta: &Meta) -> bool {
        meta.uid == 0 && meta.gid == 0 && meta.mode & 0o7000 == 0 && meta.xattrs.is_empty()
    }

    fn file(&mut self, path: &RelPath, meta: &Meta, data: &mut dyn Read) -> io::Result<()> {
        self.invalidate(path);
        let plain = Self::plain(meta);
        let create = Mode::from_bits_truncate(if plain { meta.mode & 0o777 } else { 0o600 });
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (pc, name) = path.split_last();
        let parent = self.parent(pc)?;
        // Most entries are new: try first, clear the way only when something is there.
        let fd = match openat(parent, name.as_os_str(), flags, create) {
            Err(Errno::EEXIST) => {
                Self::clear(parent, name, false)?;
                openat(parent, name.as_os_str(), flags, create)?
            }
            other => other?,
        };
        let mut f = File::from(fd);
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            f.write_all(&self.buf[..n])?;
            self.stats.bytes += n as u64;
        }
        if !plain {
            let mode = self.owner_and_xattrs(&f, meta, "file")?;
            fchmod(&f, Mode::from_bits_truncate(mode))?;
        } else if meta.mode & self.umask != 0 {
            fchmod(&f, Mode::from_bits_truncate(meta.mode))?;
        }
        let t = TimeSpec::new(meta.mtime as i64, 0);
        futimens(&f, &t, &t)?;
        Ok(())
    }

    fn dir(&mut self, path: &RelPath, meta: &Meta) -> io::Result<()> {
        self.invalidate(path);
        let (pc, name) = path.split_last();
        let parent = self.parent(pc)?;
        let private = Mode::from_bits_truncate(0o700);
        match nix::sys::stat::mkdirat(parent, name.as_os_str(), private) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                if !Self::clear(parent, name, true)? {
                    nix::sys::stat::mkdirat(parent, name.as_os_str(), private)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        let mode = if Self::plain(meta) {
            meta.mode
        } else {
            let fd = openat(
                parent,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            self.owner_and_xattrs(&fd, meta, "dir")?
        };
        self.deferred
            .push((path.components().to_vec(), mode, meta.mtime));
        Ok(())
    }

    fn symlink(&mut self, path: &RelPath, target: &OsStr, meta: &Meta) -> io::Result<()> {
        self.invalidate(path);
        let (pc, name) = path.split_last();
        let owners = self.owners;
        let parent = self.parent(pc)?;
        Self::clear(parent, name, false)?;
        symlinkat(target, parent, name.as_os_str())?;
        let lost = match Self::chown_target(owners, meta) {
            Some((0, 0)) => false,
            Some((u, g)) => {
                fchownat(
                    parent,
                    name.as_os_str(),
                    Some(Uid::from_raw(u)),
                    Some(Gid::from_raw(g)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                false
            }
            None => meta.uid != 0 || meta.gid != 0,
        };
        let t = TimeSpec::new(meta.mtime as i64, 0);
        utimensat(
            parent,
            name.as_os_str(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )?;
        self.stats.owners_lost += u64::from(lost);
        Ok(())
    }

    fn hardlink(&mut self, path: &RelPath, target: &RelPath) -> io::Result<()> {
        if path == target {
            return Ok(());
        }
        self.invalidate(path);
        let (tpc, tname) = target.split_last();
        let tparent = self.root.open_dir(tpc, OFlag::O_PATH)?;
        let (pc, name) = path.split_last();
        let parent = self.parent(pc)?;
        Self::clear(parent, name, false)?;
        linkat(
            &tparent,
            tname.as_os_str(),
            parent,
            name.as_os_str(),
            AtFlags::empty(),
        )?;
        Ok(())
    }

    fn fifo(&mut self, path: &RelPath, meta: &Meta) -> io::Result<()> {
        self.invalidate(path);
        let (pc, name) = path.split_last();
        let parent = self.parent(pc)?;
        Self::clear(parent, name, false)?;
        mknodat(
            parent,
            name.as_os_str(),
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )?;
        // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        let fd = openat(
            parent,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let owners = self.owners;
        let mode = match Self::chown_target(owners, meta) {
            Some((u, g)) => {
                if (u, g) != (0, 0) {
                    fchown(&fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))?;
                }
                meta.mode
            }
            None => {
                self.stats.owners_lost += u64::from(meta.uid != 0 || meta.gid != 0);
                meta.mode & !0o6000
            }
        };
        fchmod(&fd, Mode::from_bits_truncate(mode))?;
        Ok(())
    }

    fn whiteout(&mut self, path: &RelPath) -> io::Result<()> {
        self.invalidate(path);
        let (pc, name) = path.split_last();
        let parent = self.parent(pc)?;
        Self::clear(parent, name, false)?;
        mknodat(parent, name.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0)?;
        Ok(())
    }

    fn opaque(&mut self, comps: &[OsString]) -> io::Result<()> {
        self.root.make_dirs(comps, 0o755)?;
        let fd = self
            .root
            .open_dir(comps, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?;
        xattr::fset(&fd, OPAQUE_XATTR, b"y")
    }

    /// The ids to chown to, or `None` when they must be recorded instead.
    fn chown_target(owners: Owners, meta: &Meta) -> Option<(u32, u32)> {
        match owners {
            Owners::Keep { max_id } => {
                let u = u32::try_from(meta.uid).ok().filter(|u| *u <= max_id)?;
                let g = u32::try_from(meta.gid).ok().filter(|g| *g <= max_id)?;
                Some((u, g))
            }
            Owners::Record => (meta.uid == 0 && meta.gid == 0).then_some((0, 0)),
        }
    }

    /// Applies owner and xattrs to a file or directory and returns the mode to set on disk.
    fn owner_and_xattrs(&mut self, fd: impl AsFd, meta: &Meta, kind: &str) -> io::Result<u32> {
        let special = meta.mode & 0o6000 != 0;
        let mode = match Self::chown_target(self.owners, meta) {
            Some((u, g)) if matches!(self.owners, Owners::Keep { .. }) || !special => {
                if (u, g) != (0, 0) {
                    fchown(fd.as_fd(), Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))?;
                }
                meta.mode
            }
            _ => {
                let value = override_value(meta.uid, meta.gid, meta.mode, kind);
                xattr::fset(fd.as_fd(), OVERRIDE_XATTR, value.as_bytes())?;
                self.stats.owners_recorded += 1;
                meta.mode & !0o6000
            }
        };
        for (name, value) in &meta.xattrs {
            if let Err(e) = xattr::fset(fd.as_fd(), name, value) {
                tracing::debug!(name, error = %e, "xattr not set");
                self.stats.xattrs_failed += 1;
            }
        }
        Ok(mode)
    }

    /// Applies directory modes and times, deepest first, and returns the statistics.
    pub fn finish(mut self) -> Result<UnpackStats, (String, io::Error)> {
        self.cache = None;
        let mut has_root = false;
        while let Some((comps, mode, mtime)) = self.deferred.pop() {
            has_root |= comps.is_empty();
            // A later entry may have replaced the directory; then its mode no longer applies.
            let Ok(fd) = self
                .root
                .open_dir(&comps, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            else {
                continue;
            };
            let shown = || {
                comps
                    .iter()
                    .map(|c| format!("/{}", c.to_string_lossy()))
                    .collect::<String>()
            };
            fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| (shown(), e.into()))?;
            let t = TimeSpec::new(mtime as i64, 0);
            futimens(&fd, &t, &t).map_err(|e| (shown(), e.into()))?;
        }
        if !has_root {
            let fd = self
                .root
                .open_dir(&[], OFlag::O_RDONLY)
                .map_err(|e| ("/".to_owned(), e))?;
            fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(|e| ("/".to_owned(), e.into()))?;
        }
        Ok(self.stats)
    }
}
