//! FUSE requests → overlay calls (fuser). Thin: every method runs the model under
//! `catch_unwind` and answers with its result or its errno.
//!
//! Lower layers never change and everything else changes only through this server, so entries
//! and attributes are cached by the kernel for an hour, with readdirplus, parallel directory
//! operations and 1 MiB writes asked for. The writeback cache is not: it would keep written
//! data from nook until the kernel flushes it (SEEK_DATA/SEEK_HOLE would answer from stale
//! files) and send extra time updates that copy files up. FUSE passthrough is probed, not used
//! (see `passthrough_probe`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    BackgroundSession, Config, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo,
    InitFlags, KernelConfig, Notifier, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, Session, SessionACL, TimeOrNow,
};

use super::change::{Caller, SetAttr, Time};
use super::overlay::{Attr, Overlay, Result};
use super::table::Kind;

const TTL: Duration = Duration::from_secs(3600);

fn run<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, fuser::Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(fuser::Errno::from_i32(e as i32)),
        Err(_) => Err(fuser::Errno::EIO),
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
    }
}

fn fattr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn time(t: Option<TimeOrNow>) -> Option<Time> {
    t.map(|t| match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(s) => Time::At(s),
    })
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

struct Fs {
    ov: Arc<Overlay>,
    /// The kernel offered FUSE passthrough and nook has not yet asked to use it.
    probe_passthrough: std::sync::atomic::AtomicBool,
}

impl Fs {
    fn entry(&self, reply: ReplyEntry, r: std::result::Result<Attr, fuser::Errno>) {
        match r {
            Ok(a) => reply.entry(&TTL, &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, r: std::result::Result<(), fuser::Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Asks once whether the kernel lets nook register backing files for FUSE passthrough
    /// (it needs CAP_SYS_ADMIN in the initial user namespace today, so rootless runs hear no).
    /// nook does not use it even when granted: a passthrough open and a cached open of one
    /// inode exclude each other, so a copy-up would fail while another process reads the file.
    fn passthrough_probe(&self, reply: &ReplyOpen) {
        if !self
            .probe_passthrough
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        match self.ov.scratch_file().map(|f| reply.open_backing(&f)) {
            Ok(Ok(_id)) => {
                tracing::debug!(
                    "FUSE passthrough granted by the kernel (not used: see fuse::adapter)"
                )
            }
            Ok(Err(e)) => tracing::debug!("FUSE passthrough refused by the kernel: {e}"),
            Err(e) => tracing::debug!("FUSE passthrough not probed: {e}"),
        }
    }

    fn xattr(reply: ReplyXattr, size: u32, r: std::result::Result<Vec<u8>, fuser::Errno>) {
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for f in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_DONT_MASK,
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(f);
        }
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
            let _ = config.set_max_stack_depth(1);
            self.probe_passthrough
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = run(|| self.ov.lookup(parent.0, name));
        tracing::trace!(parent = parent.0, ?name, result = ?r.as_ref().map(|a| a.ino), "lookup");
        self.entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ov.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match run(|| self.ov.getattr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &fattr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time(atime),
            mtime: time(mtime),
        };
        // What only an owner may change (chmod, chown, utimes with a given time).
        let explicit = |t: &Option<TimeOrNow>| matches!(t, Some(TimeOrNow::SpecificTime(_)));
        let owners_only = mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || explicit(&atime)
            || explicit(&mtime);
        let r = if owners_only && !self.ov.owns(ino.0, req.uid()) {
            Err(fuser::Errno::EPERM)
        } else {
            run(|| self.ov.setattr(ino.0, s, fh.map(|f| f.0)))
        };
        match r {
            Ok(a) => reply.attr(&TTL, &fattr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match run(|| self.ov.readlink(ino.0)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            run(|| {
                self.ov.mknod(
                    parent.0,
                    name,
                    mode & !umask | (mode & libc::S_IFMT),
                    rdev as u64,
                    caller(req),
                )
            }),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            run(|| self.ov.mkdir(parent.0, name, mode & !umask, caller(req))),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = run(|| self.ov.unlink(parent.0, name));
        tracing::trace!(parent = parent.0, ?name, result = ?r, "unlink");
        self.empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, run(|| self.ov.rmdir(parent.0, name)));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            run(|| self.ov.symlink(parent.0, link_name, target, caller(req))),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(
            reply,
            run(|| {
                self.ov
                    .rename(parent.0, name, newparent.0, newname, flags.bits())
            }),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(reply, run(|| self.ov.link(ino.0, newparent.0, newname)));
    }

    /// No OPEN: the kernel stops sending OPEN, FLUSH and RELEASE for files and keeps their
    /// page cache across opens; reads and writes then name the inode (see `io`). Two requests
    /// fewer for every file a container opens.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        self.passthrough_probe(&reply);
        reply.error(fuser::Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        let r = run(|| {
            self.ov.read_with(ino.0, offset, size as usize, |data| {
                if let Some(r) = reply.take() {
                    r.data(data);
                }
            })
        });
        if let (Err(e), Some(r)) = (r, reply.take()) {
            r.error(e);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        // With FUSE_HANDLE_KILLPRIV_V2 the kernel asks nook to drop setuid and setgid when a
        // writer without CAP_FSETID writes, instead of asking for security.capability first.
        let kill = write_flags.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match run(|| {
            let n = self.ov.write(ino.0, offset, data)?;
            if kill {
                self.ov.kill_suidgid(ino.0)?;
            }
            Ok(n)
        }) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    /// Nothing is buffered here: the kernel stops sending FLUSH.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, run(|| self.ov.fsync(ino.0, datasync)));
    }

    /// No OPENDIR either: the kernel then caches listings (and sends no RELEASEDIR).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = ino.0;
        let list = match run(|| self.ov.listing(ino, offset)) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, OsStr::new("."), Kind::Dir),
            (self.ov.parent_of(ino), OsStr::new(".."), Kind::Dir),
        ];
        let all = dots
            .into_iter()
            .map(|(i, n, k)| (Some(i), n, k))
            .chain(list.iter().map(|(n, k)| (None, n.as_os_str(), *k)));
        let mut full = false;
        for (i, (dot_ino, name, kind)) in all.enumerate().skip(offset as usize) {
            // Without readdirplus the kernel looks entries up itself; any unique number does.
            let num = dot_ino.unwrap_or(u64::MAX - i as u64);
            if reply.add(INodeNo(num), (i + 1) as u64, file_type(kind), name) {
                full = true;
                break;
            }
        }
        if !full {
            self.ov.listing_done(ino);
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ino = ino.0;
        let (list, ctx) =
            match run(|| Ok((self.ov.listing(ino, offset)?, self.ov.dir_context(ino)?))) {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
        let dots = [
            (OsStr::new("."), ino),
            (OsStr::new(".."), self.ov.parent_of(ino)),
        ];
        let total = list.len() + 2;
        let mut full = false;
        for i in (offset as usize)..total {
            let (name, attr) = if i < 2 {
                let (n, dino) = dots[i];
                match run(|| self.ov.getattr(dino)) {
                    Ok(a) => (n, a),
                    Err(_) => continue,
                }
            } else {
                let n = list[i - 2].0.as_os_str();
                match run(|| self.ov.lookup_in(&ctx, n)) {
                    Ok(a) => (n, a),
                    Err(_) => continue,
                }
            };
            if reply.add(
                INodeNo(attr.ino),
                (i + 1) as u64,
                name,
                &TTL,
                &fattr(&attr),
                Generation(0),
            ) {
                if i >= 2 {
                    // The kernel did not take this entry: give its lookup back.
                    self.ov.forget(attr.ino, 1);
                }
                full = true;
                break;
            }
        }
        if !full {
            self.ov.listing_done(ino);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match run(|| self.ov.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.to_string_lossy();
        self.empty(reply, run(|| self.ov.setxattr(ino.0, &name, value, flags)));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_string_lossy();
        Self::xattr(reply, size, run(|| self.ov.getxattr(ino.0, &name)));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = run(|| {
            let names = self.ov.listxattr(ino.0)?;
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
            Ok(out)
        });
        Self::xattr(reply, size, r);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_string_lossy();
        self.empty(reply, run(|| self.ov.removexattr(ino.0, &name)));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked already.
        reply.ok();
    }

    /// No CREATE: the kernel makes the file with MKNOD and opens it itself (no OPEN either).
    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.empty(
            reply,
            run(|| self.ov.fallocate(ino.0, offset, length, mode)),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match run(|| self.ov.lseek(ino.0, offset, whence)) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }
}

/// A running server.
pub struct Server {
    session: Option<BackgroundSession>,
    overlay: Arc<Overlay>,
    notifier: Notifier,
}

/// Serves `overlay` on the FUSE connection `fd` with `threads` threads.
pub fn serve(fd: OwnedFd, overlay: Overlay, threads: usize) -> io::Result<Server> {
    let ov = Arc::new(overlay);
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let session = Session::from_fd(
        Fs {
            ov: ov.clone(),
            probe_passthrough: false.into(),
        },
        fd,
        SessionACL::All,
        config,
    )?;
    let notifier = session.notifier();
    let n = notifier.clone();
    // Only attributes are dropped (no page cache, no entry): that takes no inode lock, so it is
    // safe from inside a request.
    let _ = ov.stale.set(Box::new(move |ino| {
        let _ = n.inval_inode(INodeNo(ino), -1, 0);
    }));
    let bg = session.spawn()?;
    Ok(Server {
        session: Some(bg),
        overlay: ov,
        notifier,
    })
}

impl Server {
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// Tells the kernel to drop the attributes it cached for `ino` (after a change it did not
    /// make).
    pub fn invalidate(&self, ino: u64) {
        let _ = self.notifier.inval_inode(INodeNo(ino), -1, 0);
    }

    /// `invalidate`, for another thread.
    pub fn invalidator(&self) -> std::sync::Arc<dyn Fn(u64) + Send + Sync> {
        let n = self.notifier.clone();
        std::sync::Arc::new(move |ino| {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        })
    }

    /// Waits for the server threads to end (the mount is gone).
    pub fn join(mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.join();
        }
    }
}
