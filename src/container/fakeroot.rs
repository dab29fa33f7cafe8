//! nook's fakeroot supervisor: answers the container's `stat` and `chown` calls (handed over by
//! the seccomp filter of `sandbox::fakeroot`) where the root is nook's FUSE overlay and one id
//! is mapped.
//!
//! A supervisor thread runs in nook's process, which already joined the container's user
//! namespace for the FUSE server. For each call it takes the caller's root (chroot to
//! `/proc/PID/root`, in a thread with a filesystem context of its own) and its working
//! directory or descriptor, opens the object `O_PATH` as the kernel would resolve it, and:
//! - stat: on the FUSE root, with an owner recorded, writes the stat result with that owner
//!   into the caller; anywhere else lets the kernel run the call (CONTINUE).
//! - chown: on the FUSE root, records the owner (copying the file up) as container root may,
//!   and tells the kernel to drop its cached attributes; anywhere else lets the kernel run it.
//!
//! Answers are checked against the listener before they are written (the caller may have died
//! meanwhile). The thread ends when the last supervised process does (the listener hangs up)
//! or nook drops the supervisor.

use std::ffi::CString;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

use crate::fuse::{Overlay, Owner};
use crate::sandbox::fakeroot::{Call, Object, decode, fs_ids, may_chown, owner_may_chown};
use crate::sys::seccomp::{AUDIT_ARCH, Answer, Notification, receive, respond, still_waiting};

/// A thread that serves until its wake pipe closes; dropping it stops and joins it.
struct Served {
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    /// Spawns `name` running `serve` with the read end of the wake pipe.
    fn spawn(name: &str, serve: impl FnOnce(OwnedFd) + Send + 'static) -> io::Result<Served> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(wake_r))?;
        Ok(Served {
            wake: Some(wake_w),
            thread: Some(thread),
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The running supervisor; dropping it stops and joins the thread.
pub struct Fakeroot {
    _served: Served,
}

/// What the supervisor needs of nook's FUSE server.
#[derive(Clone)]
pub struct Overlayfs {
    pub overlay: Arc<Overlay>,
    /// Drops the kernel's cached attributes of an inode.
    pub invalidate: Arc<dyn Fn(u64) + Send + Sync>,
}

struct Supervisor {
    listener: OwnedFd,
    proc: OwnedFd,
    own_root: OwnedFd,
    fuse_dev: u64,
    fs: Overlayfs,
}

/// The device of the container's root (its FUSE mount), read once through the init while it
/// is still open to nook: with `--init` it becomes the non-dumpable reaper, whose /proc
/// entries are closed to the door's later supervisors.
pub fn root_dev(init: Pid) -> io::Result<u64> {
    Ok(nix::sys::stat::stat(format!("/proc/{}/root", init.as_raw()).as_str())?.st_dev)
}

impl Fakeroot {
    /// Starts supervising the calls on `listener` for the container whose root is on the
    /// device `fuse_dev` ([`root_dev`]).
    pub fn start(listener: OwnedFd, fuse_dev: u64, fs: Overlayfs) -> io::Result<Fakeroot> {
        let proc = nix::fcntl::open(
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let own_root = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let s = Supervisor {
            listener,
            proc,
            own_root,
            fuse_dev,
            fs,
        };
        Served::spawn("fakeroot", move |wake| s.serve(wake)).map(|f| Fakeroot { _served: f })
    }
}

impl Supervisor {
    fn serve(self, wake: OwnedFd) {
        // chroot and chdir below must not move the other threads of nook.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS) {
            tracing::warn!("fakeroot: cannot get a filesystem context of its own: {e}");
            return;
        }
        loop {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |f: &PollFd<'_>| f.revents().unwrap_or(PollFlags::empty());
            if !ready(&fds[1]).is_empty() {
                return;
            }
            let l = ready(&fds[0]);
            if l.contains(PollFlags::POLLIN) {
                match receive(self.listener.as_fd()) {
                    Ok(n) => {
                        let answer = self.answer(&n);
                        let _ = respond(self.listener.as_fd(), n.id, answer);
                    }
                    // The caller was killed before we read the call.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(_) => return,
                }
            } else if l.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                // Every supervised process has ended.
                return;
            }
        }
    }

    fn answer(&self, n: &Notification) -> Answer {
        if n.arch != AUDIT_ARCH {
            return Answer::Continue;
        }
        let Some(call) = decode(n.nr as i64, n.args) else {
            return Answer::Continue;
        };
        match self.handle(n, call) {
            Ok(a) => a,
            // A caller nook may not look into (nook exec's own, non-dumpable image before
            // it execs the command): the kernel runs its call as if there were no fakeroot.
            Err(Errno::EACCES | Errno::EPERM) if !self.can_see(Pid::from_raw(n.pid as i32)) => {
                Answer::Continue
            }
            Err(e) => Answer::Errno(e as i32),
        }
    }

    /// Whether the caller's /proc entries are open to nook.
    fn can_see(&self, pid: Pid) -> bool {
        openat(
            &self.proc,
            format!("{}/root", pid.as_raw()).as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .is_ok()
    }

    fn handle(&self, n: &Notification, call: Call) -> Result<Answer, Errno> {
        let pid = Pid::from_raw(n.pid as i32);
        match call {
            Call::Stat { at, buf } => {
                let obj = self.open(pid, at)?;
                let mut st = nix::sys::stat::fstat(&obj)?;
                let Some(o) = self.recorded(st.st_dev, st.st_ino) else {
                    return Ok(Answer::Continue);
                };
                st.st_uid = o.uid;
                st.st_gid = o.gid;
                st.st_mode = (st.st_mode & libc::S_IFMT) | (o.mode & 0o7777);
                self.reply_with(n, pid, buf, crate::sys::stat::stat_bytes(&st))
            }
            Call::Statx { at, mask, buf } => {
                let obj = self.open(pid, at)?;
                let sync = at.flags & (libc::AT_STATX_FORCE_SYNC | libc::AT_STATX_DONT_SYNC);
                let mut st =
                    crate::sys::stat::statx(obj.as_fd(), c"", libc::AT_EMPTY_PATH | sync, mask)
                        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                let dev = nix::sys::stat::makedev(st.stx_dev_major.into(), st.stx_dev_minor.into());
                let Some(o) = self.recorded(dev, st.stx_ino) else {
                    return Ok(Answer::Continue);
                };
                st.stx_uid = o.uid;
                st.stx_gid = o.gid;
                st.stx_mode = (st.stx_mode & libc::S_IFMT as u16) | (o.mode & 0o7777) as u16;
                self.reply_with(n, pid, buf, crate::sys::stat::statx_bytes(&st))
            }
            Call::Chown { at, uid, gid } => {
                if uid.is_none() && gid.is_none() {
                    return Ok(Answer::Continue);
                }
                let obj = self.open(pid, at)?;
                let st = nix::sys::stat::fstat(&obj)?;
                if st.st_dev != self.fuse_dev {
                    return Ok(Answer::Continue);
                }
                let status = openat(
                    &self.proc,
                    format!("{}/status", pid.as_raw()).as_str(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map(|fd| std::io::read_to_string(std::fs::File::from(fd)).unwrap_or_default())
                .map_err(|_| Errno::ESRCH)?;
                if !may_chown(&status) {
                    let owner = self.fs.overlay.recorded(st.st_ino).map(|o| (o.uid, o.gid));
                    let allowed = fs_ids(&status)
                        .zip(owner)
                        .is_some_and(|(c, o)| owner_may_chown(c, o, uid, gid));
                    if !allowed {
                        return Ok(Answer::Errno(libc::EPERM));
                    }
                }
                if !still_waiting(self.listener.as_fd(), n.id) {
                    return Ok(Answer::Errno(libc::ENOENT));
                }
                let kind = st.st_mode & libc::S_IFMT;
                if kind == libc::S_IFREG || kind == libc::S_IFDIR {
                    self.fs.overlay.record_owner(st.st_ino, uid, gid)?;
                    (self.fs.invalidate)(st.st_ino);
                }
                // Symbolic links and special files cannot carry the record (user xattrs are
                // for files and directories): their chown succeeds and changes nothing, as
                // under fakeroot.
                Ok(Answer::Value(0))
            }
        }
    }

    /// The owner recorded for inode `ino` of device `dev`, when that is the FUSE root.
    fn recorded(&self, dev: u64, ino: u64) -> Option<Owner> {
        (dev == self.fuse_dev)
            .then(|| self.fs.overlay.recorded(ino))
            .flatten()
    }

    /// Writes `bytes` to the caller's `buf` and answers 0, if the call still waits.
    fn reply_with(
        &self,
        n: &Notification,
        pid: Pid,
        buf: u64,
        bytes: &[u8],
    ) -> Result<Answer, Errno> {
        if !still_waiting(self.listener.as_fd(), n.id) {
            return Ok(Answer::Errno(libc::ENOENT));
        }
        let remote = [RemoteIoVec {
            base: buf as usize,
            len: bytes.len(),
        }];
        match process_vm_writev(pid, &[io::IoSlice::new(bytes)], &remote) {
            Ok(w) if w == bytes.len() => Ok(Answer::Value(0)),
            _ => Ok(Answer::Errno(libc::EFAULT)),
        }
    }

    /// Opens the call's object `O_PATH`, resolved from the caller's root and working
    /// directory (or descriptor) as the kernel would.
    fn open(&self, pid: Pid, at: Object) -> Result<OwnedFd, Errno> {
        let r = self.open_in_their_root(pid, at);
        // Back to nook's own root: the overlay works through /proc/self.
        nix::unistd::fchdir(&self.own_root)?;
        nix::unistd::chroot(".")?;
        r
    }

    fn open_in_their_root(&self, pid: Pid, at: Object) -> Result<OwnedFd, Errno> {
        let p = pid.as_raw();
        let root = openat(
            &self.proc,
            format!("{p}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        nix::unistd::fchdir(&root)?;
        nix::unistd::chroot(".")?;
        let base = if at.dirfd == libc::AT_FDCWD {
            format!("{p}/cwd")
        } else {
            format!("{p}/fd/{}", at.dirfd)
        };
        let base = openat(
            &self.proc,
            base.as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| if e == Errno::ENOENT { Errno::EBADF } else { e })?;
        let path = match at.path {
            Some(addr) => read_path(pid, addr)?,
            None => CString::default(),
        };
        if path.as_bytes().is_empty() {
            if at.flags & libc::AT_EMPTY_PATH != 0 {
                return Ok(base);
            }
            return Err(Errno::ENOENT);
        }
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if at.flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            flags |= OFlag::O_NOFOLLOW;
        }
        openat(&base, path.as_c_str(), flags, Mode::empty())
    }
}

/// Reads a NUL-terminated path from the caller's memory, a page at a time.
fn read_path(pid: Pid, addr: u64) -> Result<CString, Errno> {
    if addr == 0 {
        return Err(Errno::EFAULT);
    }
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut at = addr as usize;
    while out.len() < libc::PATH_MAX as usize {
        // Never cross a page: the next one may be unmapped.
        let room = 4096 - (at % 4096);
        let mut chunk = vec![0u8; room];
        let remote = [RemoteIoVec {
            base: at,
            len: room,
        }];
        let n = process_vm_readv(pid, &mut [IoSliceMut::new(&mut chunk)], &remote)
            .map_err(|_| Errno::EFAULT)?;
        if n == 0 {
            return Err(Errno::EFAULT);
        }
        if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return CString::new(out).map_err(|_| Errno::EINVAL);
        }
        out.extend_from_slice(&chunk[..n]);
        at += n;
    }
    Err(Errno::ENAMETOOLONG)
}

/// Where `nook exec` hands the fakeroot the listener of its command's filter: a socket in the
/// container's runtime directory, served by a thread of the monitor. Each listener gets a
/// supervisor of its own; all end with the door.
pub struct Door {
    _served: Served,
}

/// The door's socket in a container's runtime directory.
pub const DOOR: &str = "fakeroot.sock";

impl Door {
    pub fn open(rt: &std::path::Path, fuse_dev: u64, fs: Overlayfs) -> io::Result<Door> {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(rt)?;
        // Through the directory's descriptor: the runtime path may be too long for a socket.
        let path = format!("/proc/self/fd/{}/{DOOR}", dir.as_raw_fd());
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        Served::spawn("fakeroot-door", move |wake| {
            serve_door(listener, wake, fuse_dev, fs)
        })
        .map(|d| Door { _served: d })
    }
}

fn serve_door(
    listener: std::os::unix::net::UnixListener,
    wake: OwnedFd,
    fuse_dev: u64,
    fs: Overlayfs,
) {
    use std::io::Write;
    let mut supervisors = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let got = crate::sandbox::message::recv::<crate::sandbox::message::ToParent>(conn.as_fd());
        if let Ok(Some((crate::sandbox::message::ToParent::Fakeroot, Some(fd)))) = got {
            match Fakeroot::start(fd, fuse_dev, fs.clone()) {
                Ok(f) => {
                    supervisors.push(f);
                    let _ = conn.write_all(b"k");
                }
                Err(e) => tracing::warn!("fakeroot: cannot supervise an exec: {e}"),
            }
        }
    }
}
