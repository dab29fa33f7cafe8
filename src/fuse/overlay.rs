//! The overlay model: lookups through the layers, attributes, merged directories, open files
//! and xattrs. Changes to the tree (copy-up, create, remove, rename) are in `change`.
//!
//! Semantics follow the kernel's overlayfs with `userxattr`, so that a writable layer reads the
//! same whichever driver wrote it: a 0/0 character device is a whiteout, `user.overlay.opaque`
//! makes a directory hide the layers below it, and a lower directory merges with the same
//! directory of the layers above it. Owners and modes the disk cannot hold come from
//! `user.containers.override_stat`. Every error is an errno; nothing here panics.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::layers::{Layer, Layers, get_xattr};
use super::table::{Kind, Node, Owner, ROOT, Table};
use crate::unpack::{OPAQUE_XATTR, OVERRIDE_XATTR, parse_override};

pub type Result<T> = std::result::Result<T, Errno>;

pub fn errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// How owners reach the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Ids are mapped (a subordinate range): report and set the real ones.
    Mapped,
    /// Only root is mapped: report root to the kernel, keep the image's owners in the override
    /// xattr (nook's fakeroot shows them to `stat`).
    Single,
}

/// Attributes of one object, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// An open file.
pub struct Handle {
    pub ino: u64,
    pub file: RwLock<File>,
    pub upper: AtomicBool,
    pub writable: bool,
}

/// The entries of a directory: names and kinds.
pub type Listing = Arc<Vec<(OsString, Kind)>>;

/// A directory listing taken at opendir.
pub struct DirHandle {
    pub ino: u64,
    pub entries: Mutex<Option<Listing>>,
}

/// The overlay.
pub struct Overlay {
    pub(super) layers: Layers,
    pub(super) table: RwLock<Table>,
    /// Serialises changes to the upper layer.
    pub(super) change: Mutex<()>,
    pub(super) owners: Owners,
    /// With one id mapped: that id (the owner of the upper layer, as this process sees it).
    single_id: (u32, u32),
    files: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: RwLock<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    pub(super) tmp: AtomicU64,
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let d = std::time::Duration::new(sec.unsigned_abs(), nsec.clamp(0, 999_999_999) as u32);
    if sec >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

pub(super) fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// What a lookup found.
pub(super) struct Found {
    pub kind: Kind,
    pub upper: bool,
    pub lowers: Vec<usize>,
    pub owner: Option<Owner>,
    pub link: Option<(usize, u64)>,
}

impl Overlay {
    /// An overlay of `layers`; the root merges the upper with every lower layer down to the
    /// first opaque one.
    pub fn new(layers: Layers, owners: Owners) -> Overlay {
        let mut lowers = Vec::new();
        for i in 0..layers.lower_count() {
            lowers.push(i);
            let opaque = layers
                .dir(Layer::Lower(i), Path::new(""))
                .ok()
                .and_then(|fd| get_xattr(&fd, OPAQUE_XATTR));
            if opaque.as_deref() == Some(b"y") {
                break;
            }
        }
        let root = Node {
            parent: ROOT,
            name: OsString::new(),
            kind: Kind::Dir,
            upper: true,
            lowers,
            owner: None,
            link: None,
            aliases: vec![],
            lookups: 1,
            unlinked: false,
        };
        let single_id = nix::sys::stat::fstat(layers.root(Layer::Upper))
            .map(|st| (st.st_uid, st.st_gid))
            .unwrap_or((0, 0));
        Overlay {
            single_id,
            layers,
            table: RwLock::new(Table::new(root)),
            change: Mutex::new(()),
            owners,
            files: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            tmp: AtomicU64::new(0),
        }
    }

    pub(super) fn node(&self, ino: u64) -> Result<(Node, PathBuf)> {
        let t = self.table.read().map_err(|_| Errno::EIO)?;
        let n = t.get(ino).ok_or(Errno::ENOENT)?.clone();
        let p = t.path(ino).ok_or(Errno::ENOENT)?;
        Ok((n, p))
    }

    fn read_owner(&self, fd: &OwnedFd, kind: Kind) -> Option<Owner> {
        if !matches!(kind, Kind::File | Kind::Dir) {
            return None;
        }
        let (uid, gid, mode) = parse_override(&get_xattr(fd, OVERRIDE_XATTR)?)?;
        Some(Owner { uid, gid, mode })
    }

    /// Looks `name` up in the directory `parent` (at `ppath`) through the layers.
    pub(super) fn find(&self, parent: &Node, ppath: &Path, name: &OsStr) -> Result<Option<Found>> {
        let path = ppath.join(name);
        let mut found: Option<Found> = None;
        let layers: Vec<Layer> = parent
            .upper
            .then_some(Layer::Upper)
            .into_iter()
            .chain(parent.lowers.iter().map(|i| Layer::Lower(*i)))
            .collect();
        for l in layers {
            let fd = match self
                .layers
                .open(l, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            {
                Ok(fd) => fd,
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(errno(e)),
            };
            let st = nix::sys::stat::fstat(&fd)?;
            if is_whiteout(&st) {
                break;
            }
            let kind = Kind::from_mode(st.st_mode);
            match &mut found {
                None => {
                    let link = match l {
                        Layer::Lower(i) if kind != Kind::Dir && st.st_nlink > 1 => {
                            Some((i, st.st_ino))
                        }
                        _ => None,
                    };
                    found = Some(Found {
                        kind,
                        upper: l == Layer::Upper,
                        lowers: match l {
                            Layer::Lower(i) => vec![i],
                            Layer::Upper => vec![],
                        },
                        owner: self.read_owner(&fd, kind),
                        link,
                    });
                    if kind != Kind::Dir {
                        break;
                    }
                }
                Some(f) => {
                    // Below a directory only directories merge; anything else ends the merge.
                    if kind != Kind::Dir || f.kind != Kind::Dir {
                        break;
                    }
                    if let Layer::Lower(i) = l {
                        f.lowers.push(i);
                    }
                }
            }
            if kind == Kind::Dir && get_xattr(&fd, OPAQUE_XATTR).as_deref() == Some(b"y") {
                break;
            }
        }
        Ok(found)
    }

    /// LOOKUP: the child's attributes, counting one kernel reference.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let (pnode, ppath) = self.node(parent)?;
        if pnode.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let found = self.find(&pnode, &ppath, name)?.ok_or(Errno::ENOENT)?;
        let ino = self.remember(parent, name, found)?;
        let attr = self.getattr(ino)?;
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.lookups += 1;
        }
        Ok(attr)
    }

    pub(super) fn remember(&self, parent: u64, name: &OsStr, f: Found) -> Result<u64> {
        let mut t = self.table.write().map_err(|_| Errno::EIO)?;
        Ok(t.insert(Node {
            parent,
            name: name.to_owned(),
            kind: f.kind,
            upper: f.upper,
            lowers: f.lowers,
            owner: f.owner,
            link: f.link,
            aliases: vec![],
            lookups: 0,
            unlinked: false,
        }))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(mut t) = self.table.write() {
            t.forget(ino, n);
        }
    }

    /// The backing object of a node, opened `O_PATH`.
    pub(super) fn backing(&self, node: &Node, path: &Path) -> Result<(Layer, OwnedFd)> {
        let l = node.top().ok_or(Errno::ENOENT)?;
        let fd = self
            .layers
            .open(l, path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(errno)?;
        Ok((l, fd))
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (node, path) = match self.node(ino) {
            Ok(n) => n,
            // Unlinked but open: what its open handle sees.
            Err(Errno::ENOENT) => return self.getattr_open(ino, None),
            Err(e) => return Err(e),
        };
        let (_, fd) = self.backing(&node, &path)?;
        let st = nix::sys::stat::fstat(&fd)?;
        Ok(self.attr(ino, &st, node.owner))
    }

    /// The attributes of `ino` through an open handle (`fh`, or any handle on it): for files
    /// that lost their last name while open.
    pub(super) fn getattr_open(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        let h = self.open_handle(ino, fh)?;
        let st = nix::sys::stat::fstat(&*h.file.read().map_err(|_| Errno::EIO)?)?;
        let owner = self
            .table
            .read()
            .ok()
            .and_then(|t| t.get(ino).and_then(|n| n.owner));
        Ok(self.attr(ino, &st, owner))
    }

    /// The handle `fh` when it is open on `ino`, else any handle open on `ino`.
    pub(super) fn open_handle(&self, ino: u64, fh: Option<u64>) -> Result<Arc<Handle>> {
        let files = self.files.read().map_err(|_| Errno::EIO)?;
        if let Some(h) = fh.and_then(|f| files.get(&f)).filter(|h| h.ino == ino) {
            return Ok(h.clone());
        }
        files
            .values()
            .find(|h| h.ino == ino)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    pub(super) fn attr(&self, ino: u64, st: &FileStat, owner: Option<Owner>) -> Attr {
        let (mut uid, mut gid, mut perm) = (st.st_uid, st.st_gid, st.st_mode & 0o7777);
        if let Some(o) = owner {
            perm = o.mode & 0o7777;
            uid = o.uid;
            gid = o.gid;
        }
        if self.owners == Owners::Single {
            // One id exists in the container's namespace (root, or you with keep-id): the
            // kernel could show nothing else (and refuses writes to files whose owner it cannot
            // map), so everything shows as that id. The recorded owner reaches `stat` through
            // the fakeroot.
            (uid, gid) = self.single_id;
        }
        Attr {
            ino,
            kind: Kind::from_mode(st.st_mode),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            perm,
            nlink: st.st_nlink as u32,
            uid,
            gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
        }
    }

    /// The owner and mode the container should see (for the fakeroot's `stat`).
    pub fn recorded(&self, ino: u64) -> Option<Owner> {
        self.table.read().ok()?.get(ino)?.owner
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (node, path) = self.node(ino)?;
        let l = node.top().ok_or(Errno::ENOENT)?;
        let (dir, name) = super::layers::split(&path);
        let dfd = self.layers.dir(l, dir).map_err(errno)?;
        Ok(nix::fcntl::readlinkat(&dfd, name)?.into_encoded_bytes())
    }

    /// The merged entries of a directory (whiteouts hidden, upper layers first).
    pub(super) fn entries(&self, ino: u64) -> Result<Vec<(OsString, Kind)>> {
        let (node, path) = self.node(ino)?;
        let layers: Vec<Layer> = node
            .upper
            .then_some(Layer::Upper)
            .into_iter()
            .chain(node.lowers.iter().map(|i| Layer::Lower(*i)))
            .collect();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for l in layers {
            let fd = match self
                .layers
                .open(l, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            {
                Ok(fd) => fd,
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(errno(e)),
            };
            let probe = fd.try_clone().map_err(errno)?;
            let mut dir = nix::dir::Dir::from_fd(fd)?;
            for e in dir.iter() {
                let e = e?;
                let name =
                    <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(e.file_name().to_bytes());
                if name == "." || name == ".." || !seen.insert(name.to_owned()) {
                    continue;
                }
                let kind = match e.file_type() {
                    Some(nix::dir::Type::Directory) => Kind::Dir,
                    Some(nix::dir::Type::Symlink) => Kind::Symlink,
                    Some(nix::dir::Type::Fifo) => Kind::Fifo,
                    Some(nix::dir::Type::Socket) => Kind::Socket,
                    Some(nix::dir::Type::BlockDevice) => Kind::Block,
                    Some(nix::dir::Type::File) => Kind::File,
                    Some(nix::dir::Type::CharacterDevice) | None => {
                        let st = super::layers::stat_in(probe.as_fd(), name).map_err(errno)?;
                        if is_whiteout(&st) {
                            continue;
                        }
                        Kind::from_mode(st.st_mode)
                    }
                };
                out.push((name.to_owned(), kind));
            }
        }
        Ok(out)
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(DirHandle {
            ino,
            entries: Mutex::new(None),
        });
        self.dirs.write().map_err(|_| Errno::EIO)?.insert(fh, h);
        Ok(fh)
    }

    /// The listing of an open directory, taken at its first read.
    pub fn listing(&self, fh: u64) -> Result<(u64, Listing)> {
        let h = self
            .dirs
            .read()
            .map_err(|_| Errno::EIO)?
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)?;
        let mut e = h.entries.lock().map_err(|_| Errno::EIO)?;
        if e.is_none() {
            *e = Some(Arc::new(self.entries(h.ino)?));
        }
        Ok((h.ino, e.clone().unwrap_or_default()))
    }

    pub fn releasedir(&self, fh: u64) {
        if let Ok(mut d) = self.dirs.write() {
            d.remove(&fh);
        }
    }

    /// The parent of a directory (for `..` in listings).
    pub fn parent_of(&self, ino: u64) -> u64 {
        self.table
            .read()
            .ok()
            .and_then(|t| t.get(ino).map(|n| n.parent))
            .unwrap_or(ROOT)
    }

    /// OPEN: a handle on the visible copy; anything that may write copies up first.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writing {
            self.copy_up(ino)?;
        }
        let (node, path) = self.node(ino)?;
        if node.kind != Kind::File {
            return Err(if node.kind == Kind::Dir {
                Errno::EISDIR
            } else {
                Errno::ENXIO
            });
        }
        let l = node.top().ok_or(Errno::ENOENT)?;
        // The kernel's writeback cache may read from a file opened for writing only, and
        // handles O_APPEND itself.
        let mut o = if writing {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        if flags & libc::O_TRUNC != 0 {
            o |= OFlag::O_TRUNC;
        }
        let fd = self.layers.open(l, &path, o).map_err(errno)?;
        Ok(self.add_handle(ino, File::from(fd), l == Layer::Upper, writing))
    }

    pub(super) fn add_handle(&self, ino: u64, file: File, upper: bool, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Handle {
            ino,
            file: RwLock::new(file),
            upper: AtomicBool::new(upper),
            writable,
        });
        if let Ok(mut f) = self.files.write() {
            f.insert(fh, h);
        }
        fh
    }

    /// A duplicate of the open file behind handle `fh`.
    pub(super) fn handle_file(&self, fh: u64) -> Option<File> {
        self.handle(fh).ok()?.file.read().ok()?.try_clone().ok()
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.files
            .read()
            .map_err(|_| Errno::EIO)?
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// A read handle on a lower copy moves to the upper once the file was copied up, so that
    /// it sees what was written through other handles (the kernel overlay's behaviour).
    fn fresh(&self, h: &Handle) -> Result<()> {
        if h.upper.load(Ordering::Acquire) {
            return Ok(());
        }
        // A file unlinked while open keeps the copy it has.
        let Ok((node, path)) = self.node(h.ino) else {
            return Ok(());
        };
        if node.upper {
            let fd = self
                .layers
                .open(Layer::Upper, &path, OFlag::O_RDONLY)
                .map_err(errno)?;
            *h.file.write().map_err(|_| Errno::EIO)? = File::from(fd);
            h.upper.store(true, Ordering::Release);
        }
        Ok(())
    }

    pub fn read(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let h = self.handle(fh)?;
        self.fresh(&h)?;
        let f = h.file.read().map_err(|_| Errno::EIO)?;
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(n)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        let f = h.file.read().map_err(|_| Errno::EIO)?;
        f.write_all_at(data, offset).map_err(errno)?;
        Ok(data.len())
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handle(fh)?;
        let f = h.file.read().map_err(|_| Errno::EIO)?;
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
        .map_err(errno)
    }

    pub fn release(&self, fh: u64) {
        if let Ok(mut f) = self.files.write() {
            f.remove(&fh);
        }
    }

    /// fallocate(2) on an open file.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let h = self.handle(fh)?;
        let f = h.file.read().map_err(|_| Errno::EIO)?;
        let mode = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
        nix::fcntl::fallocate(f.as_fd(), mode, offset as i64, len as i64)?;
        Ok(())
    }

    /// lseek(2) for SEEK_DATA and SEEK_HOLE (sparse files).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let h = self.handle(fh)?;
        self.fresh(&h)?;
        let f = h.file.read().map_err(|_| Errno::EIO)?;
        let w = match whence {
            libc::SEEK_DATA => nix::unistd::Whence::SeekData,
            libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
            libc::SEEK_END => nix::unistd::Whence::SeekEnd,
            libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
            _ => nix::unistd::Whence::SeekSet,
        };
        nix::unistd::lseek(f.as_fd(), offset, w)
    }

    pub fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::fstatvfs(self.layers.root(Layer::Upper))
    }

    fn internal_xattr(name: &str) -> bool {
        name.starts_with("user.overlay.")
            || name == OVERRIDE_XATTR
            || name.starts_with("trusted.overlay.")
    }

    pub fn getxattr(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        if Self::internal_xattr(name) {
            return Err(Errno::ENODATA);
        }
        let (node, path) = self.node(ino)?;
        let (_, fd) = self.backing(&node, &path)?;
        let p = super::layers::proc_path(&fd);
        match crate::sys::xattr::path_get(p.as_c_str(), name) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Errno::ENODATA),
            Err(e) => Err(errno(e)),
        }
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<String>> {
        let (node, path) = self.node(ino)?;
        let (_, fd) = self.backing(&node, &path)?;
        let p = super::layers::proc_path(&fd);
        let names = crate::sys::xattr::path_list(p.as_c_str()).map_err(errno)?;
        Ok(names
            .into_iter()
            .filter(|n| !Self::internal_xattr(n))
            .collect())
    }
}
