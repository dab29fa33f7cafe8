//! Changing the merged tree: copy-up, create, remove, rename, link, attributes and xattrs.
//!
//! All of it runs under the overlay's change lock, so a copy-up happens once and the table
//! and the upper layer stay in step. Removing something a lower layer has leaves a whiteout
//! (a 0/0 character device); a directory made where a whiteout was is marked opaque, so the
//! lower one stays hidden. Renaming a directory that lower layers have answers EXDEV, as the
//! kernel overlay does in a user namespace (`mv` then copies); everything else is renamed in
//! the upper layer, with a whiteout left behind where needed. A copy-up keeps holes (sparse
//! files), owners, modes, times and xattrs, and writes through the work directory so that a
//! half-copied file is never visible.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat, mknodat};
use nix::unistd::{Gid, Uid, fchownat};

use super::layers::{Layer, bad_name, proc_path, split};
use super::overlay::{Attr, Found, Overlay, Owners, Result, errno, is_whiteout};
use super::table::{Kind, Node, Owner};
use crate::sys::xattr;
use crate::unpack::{OPAQUE_XATTR, OVERRIDE_XATTR, override_value};

/// Attribute changes from SETATTR.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

/// A time to set.
#[derive(Debug, Clone, Copy)]
pub enum Time {
    Now,
    At(std::time::SystemTime),
}

fn timespec(t: Option<Time>) -> nix::sys::time::TimeSpec {
    match t {
        None => nix::sys::time::TimeSpec::new(0, libc::UTIME_OMIT),
        Some(Time::Now) => nix::sys::time::TimeSpec::new(0, libc::UTIME_NOW),
        Some(Time::At(s)) => {
            let d = s.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            nix::sys::time::TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64)
        }
    }
}

/// Who asks: the caller's ids, which become a new object's owner.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Overlay {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.change.lock().map_err(|_| Errno::EIO)
    }

    fn upper_dir(&self, rel: &Path) -> Result<std::sync::Arc<OwnedFd>> {
        self.layers.dir(Layer::Upper, rel).map_err(errno)
    }

    /// Makes sure directory `ino` exists in the upper layer (copying its parents up first).
    fn ensure_upper_dir(&self, ino: u64) -> Result<()> {
        let (node, path) = self.node(ino)?;
        if node.upper {
            return Ok(());
        }
        self.ensure_upper_dir(node.parent)?;
        let l = node.top().ok_or(Errno::ENOENT)?;
        let src = self
            .layers
            .open(l, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(errno)?;
        let st = fstat(&src)?;
        let (dir, name) = split(&path);
        let pfd = self.upper_dir(dir)?;
        let parent_times = fstat(pfd.as_ref())?;
        match mkdirat(&pfd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        restore_times(pfd.as_ref(), &parent_times)?;
        let dst = openat(
            &pfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        self.copy_meta(&src, &dst, &st)?;
        self.set_upper(ino);
        // Merged now: the kernel's cached link count and change time are stale.
        if let Some(stale) = self.stale.get() {
            stale(ino);
        }
        Ok(())
    }

    fn set_upper(&self, ino: u64) {
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.upper = true;
        }
    }

    /// Owner, xattrs, mode and times from `src` onto `dst` (both real descriptors).
    fn copy_meta(
        &self,
        src: &impl AsRawFd,
        dst: &impl AsRawFd,
        st: &nix::sys::stat::FileStat,
    ) -> Result<()> {
        let (sp, dp) = (proc_path(src), proc_path(dst));
        if self.owners == Owners::Mapped && (st.st_uid, st.st_gid) != (0, 0) {
            // An id the namespace does not map stays with the override xattr copied below.
            let _ = nix::unistd::chown(
                dp.as_c_str(),
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            );
        }
        for name in xattr::path_list(sp.as_c_str()).map_err(errno)? {
            if name == OPAQUE_XATTR {
                continue;
            }
            if let Ok(Some(v)) = xattr::path_get(sp.as_c_str(), &name) {
                let _ = xattr::path_set(dp.as_c_str(), &name, &v, 0);
            }
        }
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            dp.as_c_str(),
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        let at = nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec);
        let mt = nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            dp.as_c_str(),
            &at,
            &mt,
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )?;
        Ok(())
    }

    /// Copies a node up into the upper layer (with the change lock taken).
    pub fn copy_up(&self, ino: u64) -> Result<()> {
        let _g = self.lock()?;
        self.copy_up_locked(ino)
    }

    pub(super) fn copy_up_locked(&self, ino: u64) -> Result<()> {
        let unlinked = self
            .table
            .read()
            .map_err(|_| Errno::EIO)?
            .get(ino)
            .and_then(|n| n.unlinked.then(|| n.orphan.clone()));
        if let Some(orphan) = unlinked {
            return self.copy_orphan_up(ino, orphan);
        }
        let (node, path) = self.node(ino)?;
        if node.upper {
            return Ok(());
        }
        if node.kind == Kind::Dir {
            return self.ensure_upper_dir(ino);
        }
        if let Some(link) = node.link {
            // All of its names move up together (below), those the kernel has not asked for too.
            self.learn_link_names(link);
        }
        self.ensure_upper_dir(node.parent)?;
        let l = node.top().ok_or(Errno::ENOENT)?;
        let (dir, name) = split(&path);
        let upper_parent = self.upper_dir(dir)?;
        let lower_parent = self.layers.dir(l, dir).map_err(errno)?;
        let st = super::layers::stat_in(lower_parent.as_fd(), name).map_err(errno)?;
        let parent_times = fstat(upper_parent.as_ref())?;
        match node.kind {
            Kind::File => self.copy_file_up(&lower_parent, name, &upper_parent, &st, name)?,
            Kind::Symlink => {
                let target = nix::fcntl::readlinkat(&lower_parent, name)?;
                remove_whiteout(&upper_parent, name)?;
                nix::unistd::symlinkat(target.as_os_str(), &upper_parent, name)?;
                if self.owners == Owners::Mapped {
                    let _ = fchownat(
                        &upper_parent,
                        name,
                        Some(Uid::from_raw(st.st_uid)),
                        Some(Gid::from_raw(st.st_gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    );
                }
                copy_times_at(&upper_parent, name, &st)?;
            }
            _ => {
                remove_whiteout(&upper_parent, name)?;
                let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
                mknodat(
                    &upper_parent,
                    name,
                    kind,
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    st.st_rdev,
                )?;
                copy_times_at(&upper_parent, name, &st)?;
            }
        }
        restore_times(upper_parent.as_ref(), &parent_times)?;
        self.set_upper(ino);
        // Other names of a lower hard link follow, as the kernel overlay's index keeps them.
        let names = self.table.read().map_err(|_| Errno::EIO)?.names(ino);
        for (p, n) in names.into_iter().skip(1) {
            let Some(ppath) = self.table.read().ok().and_then(|t| t.path(p)) else {
                continue;
            };
            if self.ensure_upper_dir(p).is_err() {
                continue;
            }
            if let Ok(pfd) = self.upper_dir(&ppath) {
                let _ = remove_whiteout(&pfd, &n);
                let _ =
                    nix::unistd::linkat(&upper_parent, name, &pfd, n.as_os_str(), AtFlags::empty());
            }
        }
        Ok(())
    }

    /// An unlinked lower file about to change: its copy goes to the work directory, where it
    /// stays until the kernel forgets it.
    fn copy_orphan_up(&self, ino: u64, orphan: Option<(Layer, std::path::PathBuf)>) -> Result<()> {
        let Some((Layer::Lower(i), path)) = orphan else {
            // Already in the work directory (or gone).
            return Ok(());
        };
        let (dir, name) = split(&path);
        let lower_parent = self.layers.dir(Layer::Lower(i), dir).map_err(errno)?;
        let st = super::layers::stat_in(lower_parent.as_fd(), name).map_err(errno)?;
        if Kind::from_mode(st.st_mode) != Kind::File {
            return Err(Errno::EROFS);
        }
        let work = self.layers.work().try_clone_to_owned().map_err(errno)?;
        let target = OsString::from(format!("orphan-{ino}"));
        self.copy_file_up(&lower_parent, name, &work, &st, &target)?;
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.orphan = Some((Layer::Work, target.into()));
        }
        Ok(())
    }

    /// Before a name of `ino` goes (unlink, rmdir, rename over it): if that was its last name
    /// and the kernel still holds it, keep its data reachable for reads, writes and stat until
    /// the kernel forgets it: a lower copy stays where it is, an upper one gets a link in the
    /// work directory.
    fn keep_orphan(
        &self,
        ino: u64,
        pfd: Option<&OwnedFd>,
        name: &OsStr,
        path: &Path,
    ) -> Result<()> {
        let node = {
            let t = self.table.read().map_err(|_| Errno::EIO)?;
            match t.get(ino) {
                Some(n) if n.kind != Kind::Dir && n.lookups > 0 && n.aliases.is_empty() => {
                    n.clone()
                }
                _ => return Ok(()),
            }
        };
        let orphan = match (node.upper, pfd) {
            (true, Some(pfd)) => {
                let target = format!("orphan-{ino}");
                let work = self.layers.work();
                let _ = nix::unistd::unlinkat(
                    work,
                    target.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                nix::unistd::linkat(pfd, name, work, target.as_str(), AtFlags::empty())?;
                (Layer::Work, std::path::PathBuf::from(target))
            }
            (true, None) => return Ok(()),
            (false, _) => match node.top() {
                Some(l) => (l, path.to_owned()),
                None => return Ok(()),
            },
        };
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.orphan = Some(orphan);
        }
        Ok(())
    }

    /// Copies a regular file through the work directory, keeping its holes.
    fn copy_file_up(
        &self,
        lower_parent: &OwnedFd,
        name: &OsStr,
        upper_parent: &OwnedFd,
        st: &nix::sys::stat::FileStat,
        target: &OsStr,
    ) -> Result<()> {
        let src = File::from(openat(
            lower_parent,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
        let tmp_name = format!(
            "copyup-{}-{}",
            std::process::id(),
            self.tmp.fetch_add(1, Ordering::Relaxed)
        );
        let work = self.layers.work();
        let dst = File::from(openat(
            work,
            tmp_name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?);
        let result = (|| -> Result<()> {
            copy_data(&src, &dst, st.st_size as u64)?;
            self.copy_meta(&src, &dst, st)?;
            remove_whiteout(upper_parent, target)?;
            nix::fcntl::renameat(work, tmp_name.as_str(), upper_parent, target)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                work,
                tmp_name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }

    /// The entry `name` of directory `parent` as a live node, or ENOENT.
    fn child(&self, parent: u64, name: &OsStr) -> Result<(u64, Node, std::path::PathBuf)> {
        let (pnode, ppath) = self.node(parent)?;
        let found = self.find(&pnode, &ppath, name)?.ok_or(Errno::ENOENT)?;
        let ino = self.remember(parent, name, found)?;
        let (node, path) = self.node(ino)?;
        Ok((ino, node, path))
    }

    /// Gets the upper directory of `parent` ready for a new entry `name`: copies it up and
    /// clears a whiteout there; returns its handle and whether a whiteout was replaced.
    fn prepare_new(&self, parent: u64, name: &OsStr) -> Result<(std::sync::Arc<OwnedFd>, bool)> {
        if bad_name(name) {
            return Err(Errno::EINVAL);
        }
        let (pnode, ppath) = self.node(parent)?;
        if pnode.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if self.find(&pnode, &ppath, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        self.ensure_upper_dir(parent)?;
        let pfd = self.upper_dir(&ppath)?;
        let replaced = remove_whiteout(&pfd, name)?;
        Ok((pfd, replaced))
    }

    /// Records a new upper object in the table and returns its attributes, with one lookup.
    fn created(&self, parent: u64, name: &OsStr, pfd: &OwnedFd, caller: Caller) -> Result<Attr> {
        if self.owners == Owners::Mapped && (caller.uid, caller.gid) != (0, 0) {
            fchownat(
                pfd,
                name,
                Some(Uid::from_raw(caller.uid)),
                Some(Gid::from_raw(caller.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        let st = super::layers::stat_in(pfd.as_fd(), name).map_err(errno)?;
        let ino = self.remember(
            parent,
            name,
            Found {
                kind: Kind::from_mode(st.st_mode),
                upper: true,
                lowers: vec![],
                owner: None,
                link: None,
                stat: st,
            },
        )?;
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.lookups += 1;
            n.lowers.clear();
        }
        let owner = self.new_owner(ino, pfd, name, &st, caller);
        Ok(self.attr(ino, &st, owner))
    }

    /// While the image's owners decide, an object without a record is root's: a new one
    /// records its creator. Other kinds cannot carry the record (user xattrs are for files
    /// and directories): the kernel sees them as the user's (see `Overlay::attr`).
    fn new_owner(
        &self,
        ino: u64,
        pfd: &OwnedFd,
        name: &OsStr,
        st: &nix::sys::stat::FileStat,
        caller: Caller,
    ) -> Option<Owner> {
        if !self.enforcing() {
            return None;
        }
        let (node, _) = self.node(ino).ok()?;
        let o = Owner {
            uid: caller.uid,
            gid: caller.gid,
            mode: st.st_mode & 0o7777,
        };
        if !matches!(node.kind, Kind::File | Kind::Dir) {
            return None;
        }
        let fd = nix::fcntl::openat(
            pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        self.record(ino, &node, Some(o), &fd).ok()?;
        Some(o)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> Result<Attr> {
        let _g = self.lock()?;
        let (pfd, replaced) = self.prepare_new(parent, name)?;
        mkdirat(&pfd, name, Mode::from_bits_truncate(mode & 0o7777))?;
        if replaced {
            // A lower directory of this name was removed: it must stay hidden.
            let d = openat(
                &pfd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            xattr::fset(&d, OPAQUE_XATTR, b"y").map_err(errno)?;
        }
        self.created(parent, name, &pfd, caller)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Attr> {
        let _g = self.lock()?;
        let (pfd, _) = self.prepare_new(parent, name)?;
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        if kind == SFlag::S_IFCHR && rdev == 0 {
            // A 0/0 device would read back as a whiteout.
            return Err(Errno::EPERM);
        }
        mknodat(
            &pfd,
            name,
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            rdev,
        )?;
        self.created(parent, name, &pfd, caller)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        caller: Caller,
    ) -> Result<Attr> {
        let _g = self.lock()?;
        let (pfd, _) = self.prepare_new(parent, name)?;
        nix::unistd::symlinkat(target, &pfd, name)?;
        self.created(parent, name, &pfd, caller)
    }

    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<Attr> {
        let _g = self.lock()?;
        self.copy_up_locked(ino)?;
        let (node, path) = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(Errno::EPERM);
        }
        let (pfd, _) = self.prepare_new(new_parent, new_name)?;
        let (dir, name) = split(&path);
        let src = self.upper_dir(dir)?;
        nix::unistd::linkat(&src, name, &pfd, new_name, AtFlags::empty())?;
        if let Ok(mut t) = self.table.write() {
            t.alias(ino, new_parent, new_name.to_owned());
            if let Some(n) = t.get_mut(ino) {
                n.lookups += 1;
            }
        }
        self.getattr(ino)
    }

    /// Puts a whiteout at `name` in the upper directory `pfd`.
    fn whiteout(pfd: &OwnedFd, name: &OsStr) -> Result<()> {
        mknodat(pfd, name, SFlag::S_IFCHR, Mode::empty(), 0)?;
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        let _g = self.lock()?;
        let (ino, node, path) = self.child(parent, name)?;
        if node.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.remove(parent, name, ino, &node, &path)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        let _g = self.lock()?;
        let (ino, node, path) = self.child(parent, name)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !self.entries(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        if node.upper {
            // Only whiteouts can be left in it: they go first.
            let d = self
                .layers
                .open(Layer::Upper, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(errno)?;
            let names: Vec<OsString> = {
                let dup = d.try_clone().map_err(errno)?;
                let mut dir = nix::dir::Dir::from_fd(dup)?;
                dir.iter()
                    .map_while(|e| e.ok())
                    .map(|e| {
                        <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                            e.file_name().to_bytes(),
                        )
                        .to_owned()
                    })
                    .filter(|n| n != "." && n != "..")
                    .collect()
            };
            for n in names {
                let st = super::layers::stat_in(d.as_fd(), &n).map_err(errno)?;
                if is_whiteout(&st) {
                    nix::unistd::unlinkat(
                        &d,
                        n.as_os_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    )?;
                }
            }
        }
        self.remove(parent, name, ino, &node, &path)
    }

    /// What the lower layers merged under directory `parent` hold at `name`, ignoring the upper
    /// layer: a name over a lower entry needs a whiteout when it goes (as overlayfs's
    /// ovl_lower_positive), and a directory moved over a lower directory must be opaque.
    fn lower_has(&self, parent: u64, name: &OsStr) -> Result<Option<Kind>> {
        let (pnode, ppath) = self.node(parent)?;
        let path = ppath.join(name);
        for i in &pnode.lowers {
            match self
                .layers
                .open(Layer::Lower(*i), &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            {
                Ok(fd) => {
                    let st = fstat(&fd)?;
                    return Ok(
                        (!super::overlay::is_whiteout(&st)).then(|| Kind::from_mode(st.st_mode))
                    );
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(None)
    }

    /// Removes an entry: from the upper layer, and with a whiteout over what lower layers have.
    fn remove(&self, parent: u64, name: &OsStr, ino: u64, node: &Node, path: &Path) -> Result<()> {
        let (_, ppath) = self.node(parent)?;
        let hide = self.lower_has(parent, name)?.is_some();
        if hide {
            self.ensure_upper_dir(parent)?;
        }
        let pfd = if node.upper || hide {
            Some(self.upper_dir(&ppath)?)
        } else {
            None
        };
        self.keep_orphan(ino, pfd.as_deref(), name, path)?;
        if node.kind == Kind::Dir {
            self.layers.forget_upper_dirs();
        }
        if let Some(pfd) = &pfd {
            if node.upper {
                let flag = if node.kind == Kind::Dir {
                    nix::unistd::UnlinkatFlags::RemoveDir
                } else {
                    nix::unistd::UnlinkatFlags::NoRemoveDir
                };
                nix::unistd::unlinkat(pfd, name, flag)?;
            }
            if hide {
                Self::whiteout(pfd, name)?;
            }
        }
        if let Ok(mut t) = self.table.write() {
            t.detach(parent, &name.to_owned());
        }
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let _g = self.lock()?;
        if bad_name(new_name) {
            return Err(Errno::EINVAL);
        }
        let (ino, node, path) = self.child(parent, name)?;
        let target = match self.child(new_parent, new_name) {
            Ok(t) => Some(t),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if flags & libc::RENAME_NOREPLACE != 0 && target.is_some() {
            return Err(Errno::EEXIST);
        }
        if node.kind == Kind::Dir && node.in_lower() {
            return Err(Errno::EXDEV);
        }
        if flags == libc::RENAME_EXCHANGE {
            let (tino, tnode, _) = target.ok_or(Errno::ENOENT)?;
            return self.exchange(
                (parent, name, ino, &node),
                (new_parent, new_name, tino, &tnode),
            );
        }
        if flags & !libc::RENAME_NOREPLACE != 0 {
            // WHITEOUT (and EXCHANGE with other flags): not through an overlay.
            return Err(Errno::EINVAL);
        }
        if let Some((tino, tnode, _)) = &target {
            if *tino == ino {
                return Ok(());
            }
            match (node.kind == Kind::Dir, tnode.kind == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.entries(*tino)?.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        self.copy_up_locked(ino)?;
        self.ensure_upper_dir(new_parent)?;
        let (_, new_ppath) = self.node(new_parent)?;
        let (dir, _) = split(&path);
        let from = self.upper_dir(dir)?;
        let to = self.upper_dir(&new_ppath)?;
        if let Some((_, tnode, tpath)) = &target
            && tnode.kind == Kind::Dir
            && tnode.upper
        {
            // An empty merged directory may still hold whiteouts in its upper copy.
            self.clear_whiteouts(tpath)?;
        }
        let hide_old = self.lower_has(parent, name)?.is_some();
        // A directory moving into a merged directory turns opaque, as overlayfs does it, so no
        // lower directory of that name can ever show through it.
        let over_lower_dir = node.kind == Kind::Dir && !self.node(new_parent)?.0.lowers.is_empty();
        if let Some((tino, tnode, tpath)) = &target {
            // The file renamed over may still be in use.
            let upper_target = tnode.upper.then_some(&*to);
            self.keep_orphan(*tino, upper_target, new_name, tpath)?;
        }
        remove_whiteout(&to, new_name)?;
        nix::fcntl::renameat(&from, name, &to, new_name)?;
        if node.kind == Kind::Dir || target.as_ref().is_some_and(|(_, t, _)| t.kind == Kind::Dir) {
            self.layers.forget_upper_dirs();
        }
        if over_lower_dir {
            Self::make_opaque(&to, new_name)?;
        }
        if hide_old {
            Self::whiteout(&from, name)?;
        }
        if let Ok(mut t) = self.table.write() {
            t.rename(parent, &name.to_owned(), new_parent, &new_name.to_owned());
            if let Some(n) = t.get_mut(ino) {
                n.lowers.clear();
            }
        }
        Ok(())
    }

    fn make_opaque(pfd: &OwnedFd, name: &OsStr) -> Result<()> {
        let d = openat(
            pfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        xattr::fset(&d, OPAQUE_XATTR, b"y").map_err(errno)
    }

    /// RENAME_EXCHANGE: both copied up, swapped in the upper layer. Directories with lower
    /// parts cannot move (EXDEV, as overlayfs without redirect_dir).
    fn exchange(&self, a: (u64, &OsStr, u64, &Node), b: (u64, &OsStr, u64, &Node)) -> Result<()> {
        let (pa, na, ia, node_a) = a;
        let (pb, nb, ib, node_b) = b;
        if ia == ib {
            return Ok(());
        }
        if node_b.kind == Kind::Dir && node_b.in_lower() {
            return Err(Errno::EXDEV);
        }
        self.copy_up_locked(ia)?;
        self.copy_up_locked(ib)?;
        let (_, ppa) = self.node(pa)?;
        let (_, ppb) = self.node(pb)?;
        let (da, db) = (self.upper_dir(&ppa)?, self.upper_dir(&ppb)?);
        let opaque_b = node_a.kind == Kind::Dir && !self.node(pb)?.0.lowers.is_empty();
        let opaque_a = node_b.kind == Kind::Dir && !self.node(pa)?.0.lowers.is_empty();
        if node_a.kind == Kind::Dir || node_b.kind == Kind::Dir {
            self.layers.forget_upper_dirs();
        }
        nix::fcntl::renameat2(&da, na, &db, nb, nix::fcntl::RenameFlags::RENAME_EXCHANGE)?;
        if opaque_b {
            Self::make_opaque(&db, nb)?;
        }
        if opaque_a {
            Self::make_opaque(&da, na)?;
        }
        if let Ok(mut t) = self.table.write() {
            t.exchange((pa, &na.to_owned()), (pb, &nb.to_owned()));
            for i in [ia, ib] {
                if let Some(n) = t.get_mut(i) {
                    n.lowers.clear();
                }
            }
        }
        Ok(())
    }

    fn clear_whiteouts(&self, path: &Path) -> Result<()> {
        let d = self
            .layers
            .open(Layer::Upper, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(errno)?;
        let dup = d.try_clone().map_err(errno)?;
        let mut dir = nix::dir::Dir::from_fd(dup)?;
        let names: Vec<OsString> = dir
            .iter()
            .map_while(|e| e.ok())
            .map(|e| {
                <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(e.file_name().to_bytes())
                    .to_owned()
            })
            .filter(|n| n != "." && n != "..")
            .collect();
        for n in names {
            let _ = remove_whiteout(&d, &n);
        }
        Ok(())
    }

    /// SETATTR.
    pub fn setattr(&self, ino: u64, s: SetAttr, fh: Option<u64>) -> Result<Attr> {
        let _g = self.lock()?;
        if self
            .table
            .read()
            .map_err(|_| Errno::EIO)?
            .get(ino)
            .is_some_and(|n| n.unlinked)
        {
            return self.setattr_unlinked(ino, &s);
        }
        self.copy_up_locked(ino)?;
        let (node, path) = self.node(ino)?;
        let _ = fh;
        // Regular files through their open backing file (cached), the rest by an O_PATH handle.
        let (file, handle);
        let fd: BorrowedFd<'_> = if node.kind == Kind::File {
            file = self.cached_file(ino, true)?;
            file.as_fd()
        } else {
            handle = self
                .layers
                .open(Layer::Upper, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
                .map_err(errno)?;
            handle.as_fd()
        };
        let p = proc_path(&fd);
        if let Some(size) = s.size {
            nix::unistd::ftruncate(fd, size as i64)?;
        }
        if s.uid.is_some() || s.gid.is_some() {
            match self.owners {
                Owners::Mapped => {
                    fchownat(
                        fd,
                        "",
                        s.uid.map(Uid::from_raw),
                        s.gid.map(Gid::from_raw),
                        AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                    if node.owner.is_some() {
                        let st = fstat(fd)?;
                        self.record(
                            ino,
                            &node,
                            Some(Owner {
                                uid: st.st_uid,
                                gid: st.st_gid,
                                mode: st.st_mode & 0o7777,
                            }),
                            &fd,
                        )?;
                    }
                }
                // The kernel can only name the one mapped id: that changes a record, and is
                // what an object without one shows already.
                Owners::Single => {
                    if let Some(old) = node.owner {
                        let o = Owner {
                            uid: s.uid.unwrap_or(old.uid),
                            gid: s.gid.unwrap_or(old.gid),
                            ..old
                        };
                        self.record(ino, &node, Some(o), &fd)?;
                    }
                }
            }
        }
        if let Some(mode) = s.mode {
            let mode = mode & 0o7777;
            let (node, _) = self.node(ino)?;
            let special = mode & 0o6000 != 0;
            if node.kind != Kind::Symlink {
                let disk = if self.owners == Owners::Single {
                    mode & !0o6000
                } else {
                    mode
                };
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    p.as_c_str(),
                    Mode::from_bits_truncate(disk),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?;
            }
            if node.owner.is_some() || (self.owners == Owners::Single && special) {
                let (uid, gid) = self.single_id();
                let o = node.owner.unwrap_or(Owner { uid, gid, mode });
                self.record(ino, &node, Some(Owner { mode, ..o }), &fd)?;
            }
        }
        if s.atime.is_some() || s.mtime.is_some() {
            if node.kind == Kind::File {
                nix::sys::stat::futimens(fd, &timespec(s.atime), &timespec(s.mtime))?;
            } else {
                let (dir, name) = split(&path);
                let pfd = self.upper_dir(dir)?;
                nix::sys::stat::utimensat(
                    &pfd,
                    name,
                    &timespec(s.atime),
                    &timespec(s.mtime),
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )?;
            }
        }
        let st = fstat(fd)?;
        let owner = self
            .table
            .read()
            .ok()
            .and_then(|t| t.get(ino).and_then(|n| n.owner));
        Ok(self.attr(ino, &st, owner))
    }

    /// SETATTR on a file that lost its last name while still in use (ftruncate, fchmod,
    /// futimens): on its orphan, copied into the work directory first if it was a lower copy.
    fn setattr_unlinked(&self, ino: u64, s: &SetAttr) -> Result<Attr> {
        if s.size.is_some() || s.mode.is_some() || s.atime.is_some() || s.mtime.is_some() {
            let f = self.file_for_change(ino)?;
            if let Some(size) = s.size {
                nix::unistd::ftruncate(&*f, size as i64)?;
            }
            if let Some(mode) = s.mode {
                nix::sys::stat::fchmod(&*f, Mode::from_bits_truncate(mode & 0o7777))?;
            }
            if s.atime.is_some() || s.mtime.is_some() {
                nix::sys::stat::futimens(&*f, &timespec(s.atime), &timespec(s.mtime))?;
            }
        }
        self.getattr(ino)
    }

    /// A write by a process without CAP_FSETID: setuid goes, setgid too where group execute is
    /// set, and file capabilities (as the kernel does on other filesystems).
    pub fn kill_suidgid(&self, ino: u64) -> Result<()> {
        let _g = self.lock()?;
        let f = self.cached_file(ino, true)?;
        let st = fstat(f.as_fd())?;
        let kill = |mode: u32| {
            let mut m = mode & !libc::S_ISUID;
            if mode & 0o010 != 0 {
                m &= !libc::S_ISGID;
            }
            m
        };
        if kill(st.st_mode & 0o7777) != st.st_mode & 0o7777 {
            nix::sys::stat::fchmod(
                f.as_fd(),
                Mode::from_bits_truncate(kill(st.st_mode & 0o7777)),
            )?;
        }
        let (node, _, _) = self.location(ino)?;
        if let Some(o) = node.owner
            && kill(o.mode) != o.mode
        {
            self.record(
                ino,
                &node,
                Some(Owner {
                    mode: kill(o.mode),
                    ..o
                }),
                &f.as_fd(),
            )?;
        }
        Ok(())
    }

    /// Writes (or clears) the override xattr and the node's cached owner.
    fn record(&self, ino: u64, node: &Node, owner: Option<Owner>, fd: &impl AsRawFd) -> Result<()> {
        let p = proc_path(fd);
        match owner {
            Some(o) if matches!(node.kind, Kind::File | Kind::Dir) => {
                let v = override_value(
                    o.uid as u64,
                    o.gid as u64,
                    o.mode,
                    node.kind.override_name(),
                );
                xattr::path_set(p.as_c_str(), OVERRIDE_XATTR, v.as_bytes(), 0).map_err(errno)?;
            }
            Some(_) => return Err(Errno::EPERM),
            None => {
                let _ = xattr::path_remove(p.as_c_str(), OVERRIDE_XATTR);
            }
        }
        if let Ok(mut t) = self.table.write()
            && let Some(n) = t.get_mut(ino)
        {
            n.owner = owner;
        }
        Ok(())
    }

    /// The fakeroot's chown: records the owner the container asked for (the kernel cannot map
    /// it); `None` leaves an id as it is. Changing owners clears setuid and setgid on files, as
    /// chown(2) does.
    pub fn record_owner(&self, ino: u64, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let _g = self.lock()?;
        self.copy_up_locked(ino)?;
        let (node, path) = self.node(ino)?;
        let fd = self
            .layers
            .open(Layer::Upper, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(errno)?;
        let st = fstat(&fd)?;
        let old = node.owner.unwrap_or(Owner {
            uid: 0,
            gid: 0,
            mode: st.st_mode & 0o7777,
        });
        let mut o = Owner {
            uid: uid.unwrap_or(old.uid),
            gid: gid.unwrap_or(old.gid),
            mode: old.mode,
        };
        if node.kind != Kind::Dir {
            o.mode &= !0o6000;
        }
        self.record(ino, &node, Some(o), &fd)
    }

    pub fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> Result<()> {
        if Self::internal_xattr(name) {
            return Err(Errno::EPERM);
        }
        let _g = self.lock()?;
        let fd = self.copied_up(ino)?;
        xattr::path_set(proc_path(&fd).as_c_str(), name, value, flags).map_err(errno)
    }

    pub fn removexattr(&self, ino: u64, name: &str) -> Result<()> {
        if Self::internal_xattr(name) {
            return Err(Errno::ENODATA);
        }
        let _g = self.lock()?;
        let fd = self.copied_up(ino)?;
        xattr::path_remove(proc_path(&fd).as_c_str(), name).map_err(errno)
    }

    /// Copies `ino` up (with the change lock held) and opens its upper copy `O_PATH`.
    fn copied_up(&self, ino: u64) -> Result<OwnedFd> {
        self.copy_up_locked(ino)?;
        let (_, path) = self.node(ino)?;
        self.layers
            .open(Layer::Upper, &path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(errno)
    }
}

/// Puts the access and modification times of `dir` back as `before` had them: a copy-up
/// adds entries to upper directories, which is no change the container made (the kernel
/// overlay restores them too).
fn restore_times(dir: &OwnedFd, before: &nix::sys::stat::FileStat) -> Result<()> {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        proc_path(dir).as_c_str(),
        &nix::sys::time::TimeSpec::new(before.st_atime, before.st_atime_nsec),
        &nix::sys::time::TimeSpec::new(before.st_mtime, before.st_mtime_nsec),
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
}

/// Gives the copied-up entry `name` of `dir` (not followed) the times of its lower copy.
fn copy_times_at(dir: &OwnedFd, name: &OsStr, st: &nix::sys::stat::FileStat) -> Result<()> {
    nix::sys::stat::utimensat(
        dir,
        name,
        &nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
}

/// Removes a whiteout at `name` (nothing else); returns whether there was one.
fn remove_whiteout(dir: &OwnedFd, name: &OsStr) -> Result<bool> {
    match super::layers::stat_in(dir.as_fd(), name) {
        Ok(st) if is_whiteout(&st) => {
            nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// Copies `len` bytes, skipping holes (SEEK_DATA/SEEK_HOLE), with copy_file_range.
fn copy_data(src: &File, dst: &File, len: u64) -> Result<()> {
    use nix::unistd::{Whence, lseek};
    let (s, d): (BorrowedFd<'_>, BorrowedFd<'_>) = (src.as_fd(), dst.as_fd());
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        let data = match lseek(s, pos, Whence::SeekData) {
            Ok(p) => p,
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL) => pos, // no SEEK_DATA support: copy everything
            Err(e) => return Err(e),
        };
        let hole = lseek(s, data, Whence::SeekHole).unwrap_or(end).min(end);
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n = match nix::fcntl::copy_file_range(
                s,
                Some(&mut off_in),
                d,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => break,
                Ok(n) => n,
                Err(Errno::EXDEV) | Err(Errno::ENOSYS) | Err(Errno::EINVAL) => {
                    copy_plain(src, dst, off_in as u64, (hole - off_in) as u64).map(|n| {
                        off_in += n as i64;
                        off_out += n as i64;
                        0
                    })?
                }
                Err(e) => return Err(e),
            };
            let _ = n;
            if off_in < hole && n == 0 {
                break;
            }
        }
        pos = hole;
    }
    dst.set_len(len).map_err(errno)?;
    Ok(())
}

fn copy_plain(src: &File, dst: &File, off: u64, len: u64) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = src.read_at(&mut buf[..want], off + done).map_err(errno)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off + done).map_err(errno)?;
        done += n as u64;
    }
    Ok(done as usize)
}
