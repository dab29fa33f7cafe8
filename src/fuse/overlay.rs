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
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::FileStat;

use super::io::Files;
use super::layers::{Layer, Layers, get_xattr, get_xattr_at};
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
    /// One id is mapped: keep the image's owners in the override xattr (nook's fakeroot
    /// shows them to `stat`); report that id to the kernel when it is root, else the owners
    /// and modes that make the kernel decide as the image means (see [`shown_to_kernel`]).
    Single,
}

/// What the kernel is told about an object whose real owner and mode are `real`, where the
/// one id mapped is `me` (uid, gid; not root). The kernel refuses every write to an inode
/// whose owner or group it cannot map, even one its mode allows (`/tmp`): such an object
/// that `me` may write shows as `me`'s own, with the bits of the class `me` falls in; one it
/// may not write keeps its real owner, so the kernel applies the group or other bits (and
/// `stat` shows it as nobody, except through the fakeroot). The owner's own objects show
/// under `me`'s gid, the only group the kernel can name; their owner bits decide.
pub fn shown_to_kernel(real: Owner, me: (u32, u32)) -> (u32, u32, u32) {
    let perm = real.mode & 0o7777;
    if real.uid == me.0 {
        return (me.0, me.1, perm);
    }
    let class = if real.gid == me.1 {
        (perm >> 3) & 0o7
    } else {
        perm & 0o7
    };
    if class & 0o2 != 0 {
        return (me.0, me.1, (perm & 0o1000) | (class * 0o111));
    }
    (real.uid, real.gid, perm)
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

/// The entries of a directory: names and kinds.
pub type Listing = Arc<Vec<(OsString, Kind)>>;

/// The overlay.
pub struct Overlay {
    pub(super) layers: Layers,
    pub(super) table: RwLock<Table>,
    /// Serialises changes to the upper layer.
    pub(super) change: Mutex<()>,
    pub(super) owners: Owners,
    /// With one id mapped: that id (the owner of the upper layer, as this process sees it).
    single_id: (u32, u32),
    /// With one id mapped that is not root: the init has set up the container (as root
    /// would) and the image's owners now decide (see [`Overlay::enforce_owners`]).
    enforced: std::sync::atomic::AtomicBool,
    /// Open backing files, by inode (the kernel sends no OPEN: see `adapter`).
    pub(super) files: Files,
    /// Directory listings being read, by inode.
    listings: Mutex<HashMap<u64, Listing>>,
    /// The names of lower hard links, for their copy-up.
    pub(super) links: super::links::LowerLinks,
    pub(super) tmp: AtomicU64,
    /// Tells the kernel to drop the attributes it cached for an inode nook changed without
    /// its asking (a directory copied up under a changing child); set once the server runs.
    pub(super) stale: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// The directories of one merged directory, in each layer that has it (upper first): lookups
/// of many names in it open them once.
pub struct DirContext {
    pub ino: u64,
    dirs: Vec<(Layer, Arc<OwnedFd>)>,
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
    /// The visible copy's stat.
    pub stat: FileStat,
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
            upper: true,
            lowers,
            lookups: 1,
            ..Node::new(ROOT, OsString::new(), Kind::Dir)
        };
        // Files removed while in use and interrupted copies of an earlier server.
        super::io::clear_work(layers.root(Layer::Work));
        let single_id = nix::sys::stat::fstat(layers.root(Layer::Upper))
            .map(|st| (st.st_uid, st.st_gid))
            .unwrap_or((0, 0));
        Overlay {
            single_id,
            enforced: std::sync::atomic::AtomicBool::new(false),
            layers,
            table: RwLock::new(Table::new(root)),
            change: Mutex::new(()),
            owners,
            files: Files::new(),
            listings: Mutex::new(HashMap::new()),
            links: Default::default(),
            tmp: AtomicU64::new(0),
            stale: OnceLock::new(),
        }
    }

    pub(super) fn node(&self, ino: u64) -> Result<(Node, PathBuf)> {
        let t = self.table.read().map_err(|_| Errno::EIO)?;
        let n = t.get(ino).ok_or(Errno::ENOENT)?.clone();
        let p = t.path(ino).ok_or(Errno::ENOENT)?;
        Ok((n, p))
    }

    /// The node of `ino` and where its data is: the visible copy, or an unlinked file's orphan.
    pub(super) fn location(&self, ino: u64) -> Result<(Node, Layer, PathBuf)> {
        let t = self.table.read().map_err(|_| Errno::EIO)?;
        let n = t.get(ino).ok_or(Errno::ENOENT)?.clone();
        if n.unlinked {
            let (l, p) = n.orphan.clone().ok_or(Errno::ENOENT)?;
            return Ok((n, l, p));
        }
        let p = t.path(ino).ok_or(Errno::ENOENT)?;
        let l = n.top().ok_or(Errno::ENOENT)?;
        Ok((n, l, p))
    }

    /// Opens the directory `node` (at `path`) in each layer that has it, upper first.
    pub(super) fn layer_dirs(
        &self,
        node: &Node,
        path: &Path,
    ) -> Result<Vec<(Layer, Arc<OwnedFd>)>> {
        let layers = node
            .upper
            .then_some(Layer::Upper)
            .into_iter()
            .chain(node.lowers.iter().map(|i| Layer::Lower(*i)));
        let mut out = Vec::new();
        for l in layers {
            match self.layers.dir(l, path) {
                Ok(fd) => out.push((l, fd)),
                Err(e) if missing(&e) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(out)
    }

    /// The directory `ino`, opened in its layers for lookups of many names.
    pub fn dir_context(&self, ino: u64) -> Result<DirContext> {
        let (node, path) = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(DirContext {
            ino,
            dirs: self.layer_dirs(&node, &path)?,
        })
    }

    /// Looks `name` up in the directory `parent` (at `ppath`) through the layers.
    pub(super) fn find(&self, parent: &Node, ppath: &Path, name: &OsStr) -> Result<Option<Found>> {
        self.find_in(&self.layer_dirs(parent, ppath)?, name)
    }

    /// Looks `name` up in a directory's layers (upper first): the first copy shows; below a
    /// directory, directories merge down to an opaque one; a whiteout ends the search.
    fn find_in(&self, dirs: &[(Layer, Arc<OwnedFd>)], name: &OsStr) -> Result<Option<Found>> {
        let mut found: Option<Found> = None;
        for (i, (l, dir)) in dirs.iter().enumerate() {
            let st = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            if is_whiteout(&st) {
                break;
            }
            let kind = Kind::from_mode(st.st_mode);
            match &mut found {
                None => {
                    let link = match l {
                        Layer::Lower(i) if kind != Kind::Dir && st.st_nlink > 1 => {
                            Some((*i, st.st_ino))
                        }
                        _ => None,
                    };
                    let owner = if matches!(kind, Kind::File | Kind::Dir)
                        && self.layers.may_have_owners(*l)
                    {
                        get_xattr_at(dir, name, OVERRIDE_XATTR)
                            .and_then(|v| parse_override(&v))
                            .map(|(uid, gid, mode)| Owner { uid, gid, mode })
                    } else {
                        None
                    };
                    found = Some(Found {
                        kind,
                        upper: *l == Layer::Upper,
                        lowers: match l {
                            Layer::Lower(i) => vec![*i],
                            _ => vec![],
                        },
                        owner,
                        link,
                        stat: st,
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
                        f.lowers.push(*i);
                    }
                }
            }
            // Only a layer with more below it needs asking whether it is opaque.
            if kind == Kind::Dir
                && i + 1 < dirs.len()
                && get_xattr_at(dir, name, OPAQUE_XATTR).as_deref() == Some(b"y")
            {
                break;
            }
        }
        Ok(found)
    }

    /// LOOKUP: the child's attributes, counting one kernel reference.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let ctx = self.dir_context(parent)?;
        self.lookup_in(&ctx, name)
    }

    /// LOOKUP of `name` in an opened directory (READDIRPLUS looks up every entry).
    pub fn lookup_in(&self, ctx: &DirContext, name: &OsStr) -> Result<Attr> {
        let found = self.find_in(&ctx.dirs, name)?.ok_or(Errno::ENOENT)?;
        let (st, owner) = (found.stat, found.owner);
        let ino = self.remember_looked_up(ctx.ino, name, found, 1)?;
        Ok(self.attr(ino, &st, owner))
    }

    pub(super) fn remember(&self, parent: u64, name: &OsStr, f: Found) -> Result<u64> {
        self.remember_looked_up(parent, name, f, 0)
    }

    /// Records what a lookup found, adding `lookups` kernel references.
    fn remember_looked_up(&self, parent: u64, name: &OsStr, f: Found, lookups: u64) -> Result<u64> {
        let mut t = self.table.write().map_err(|_| Errno::EIO)?;
        let ino = t.insert(Node {
            stat: (!f.upper).then_some(f.stat),
            upper: f.upper,
            lowers: f.lowers,
            owner: f.owner,
            link: f.link,
            ..Node::new(parent, name.to_owned(), f.kind)
        });
        if let Some(n) = t.get_mut(ino) {
            n.lookups += lookups;
        }
        Ok(ino)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let dead = match self.table.write() {
            Ok(mut t) => t.forget(ino, n),
            Err(_) => None,
        };
        if let Some(dead) = dead {
            self.files.forget(ino);
            if let Some((Layer::Work, p)) = dead.orphan {
                let _ = nix::unistd::unlinkat(
                    self.layers.root(Layer::Work),
                    &p,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
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
        let (node, l, path) = self.location(ino)?;
        if let (false, false, Some(st)) = (node.upper, node.unlinked, node.stat) {
            // A lower copy never changes.
            return Ok(self.attr(ino, &st, node.owner));
        }
        let fd = self
            .layers
            .open(l, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(errno)?;
        let st = nix::sys::stat::fstat(&fd)?;
        Ok(self.attr(ino, &st, node.owner))
    }

    pub(super) fn attr(&self, ino: u64, st: &FileStat, owner: Option<Owner>) -> Attr {
        let (mut uid, mut gid, mut perm) = (st.st_uid, st.st_gid, st.st_mode & 0o7777);
        if let Some(o) = owner {
            perm = o.mode & 0o7777;
            uid = o.uid;
            gid = o.gid;
        }
        if self.owners == Owners::Single && !self.enforcing() {
            // Only root exists in the container's namespace: it may do anything, and the
            // kernel can name no other owner, so everything shows as root. The recorded owner
            // reaches `stat` through the fakeroot.
            (uid, gid) = self.single_id;
        } else if self.owners == Owners::Single {
            // One other id (the image's USER, or you with keep-id): the kernel checks modes
            // as the image means them. A file or directory without a record is root's; other
            // kinds cannot carry one, and show as the user's so that it can use, move and
            // remove the fifos, sockets and links it makes (its directories' modes still
            // guard them).
            let (me, kind) = (self.single_id, Kind::from_mode(st.st_mode));
            (uid, gid, perm) = match owner {
                None if !matches!(kind, Kind::File | Kind::Dir) => (me.0, me.1, perm),
                _ => {
                    let real = owner.unwrap_or(Owner {
                        uid: 0,
                        gid: 0,
                        mode: perm,
                    });
                    shown_to_kernel(real, me)
                }
            };
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
            nlink: if self.merged_dir(ino) {
                1
            } else {
                st.st_nlink as u32
            },
            uid,
            gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
        }
    }

    /// Whether the image's owners decide what the one mapped id may do: with a single
    /// mapping whose id is not root, once the init has set the container up.
    pub(super) fn enforcing(&self) -> bool {
        self.owners == Owners::Single
            && self.single_id.0 != 0
            && self.enforced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends the init's setup: until now every object showed as the one mapped id, so that
    /// the init (root of the namespace in all but name) could create mount points; from now
    /// on the image's owners decide. Returns the inodes whose cached attributes the kernel
    /// must drop.
    pub fn enforce_owners(&self) -> Vec<u64> {
        self.enforced
            .store(true, std::sync::atomic::Ordering::Release);
        self.table.read().map(|t| t.inodes()).unwrap_or_default()
    }

    /// With one id mapped: that id, as the container sees it.
    pub(super) fn single_id(&self) -> (u32, u32) {
        self.single_id
    }

    /// The owner and mode the container should see (for the fakeroot's `stat`). With one
    /// id mapped that is not root, an object without a record is root's, with its mode on disk.
    pub fn recorded(&self, ino: u64) -> Option<Owner> {
        let (node, l, path) = self.location(ino).ok()?;
        if node.owner.is_some() || !self.enforcing() {
            return node.owner;
        }
        let st = match (node.upper, node.unlinked, node.stat) {
            (false, false, Some(st)) => st,
            _ => {
                let fd = self
                    .layers
                    .open(l, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
                    .ok()?;
                nix::sys::stat::fstat(&fd).ok()?
            }
        };
        Some(Owner {
            uid: 0,
            gid: 0,
            mode: st.st_mode & 0o7777,
        })
    }

    /// Whether `caller` may change the mode, owner or times of `ino` as its owner: the
    /// kernel asks nothing of objects that show as the caller's only so that it lets the
    /// caller write to them (see [`shown_to_kernel`]).
    pub fn owns(&self, ino: u64, caller_uid: u32) -> bool {
        if !self.enforcing() || caller_uid == 0 {
            return true;
        }
        self.recorded(ino).is_none_or(|o| o.uid == caller_uid)
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

    /// The listing of directory `ino` from `offset`: taken afresh when a reading starts at 0,
    /// kept while the kernel reads on.
    pub fn listing(&self, ino: u64, offset: u64) -> Result<Listing> {
        if offset > 0
            && let Some(l) = self.listings.lock().map_err(|_| Errno::EIO)?.get(&ino)
        {
            return Ok(l.clone());
        }
        let l: Listing = Arc::new(self.entries(ino)?);
        self.listings
            .lock()
            .map_err(|_| Errno::EIO)?
            .insert(ino, l.clone());
        Ok(l)
    }

    /// The kernel read a listing to its end.
    pub fn listing_done(&self, ino: u64) {
        if let Ok(mut l) = self.listings.lock() {
            l.remove(&ino);
        }
    }

    /// Whether `ino` is a directory merged from several layers. The kernel overlay shows these
    /// with one link, as counting subdirectories across layers is not worth it (`find` and
    /// friends take 1 as "unknown"); nook shows the same.
    fn merged_dir(&self, ino: u64) -> bool {
        self.table.read().ok().is_some_and(|t| {
            t.get(ino)
                .is_some_and(|n| n.kind == Kind::Dir && n.lowers.len() + usize::from(n.upper) > 1)
        })
    }

    /// The parent of a directory (for `..` in listings).
    pub fn parent_of(&self, ino: u64) -> u64 {
        self.table
            .read()
            .ok()
            .and_then(|t| t.get(ino).map(|n| n.parent))
            .unwrap_or(ROOT)
    }

    pub fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::fstatvfs(self.layers.root(Layer::Upper))
    }

    pub(super) fn internal_xattr(name: &str) -> bool {
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
