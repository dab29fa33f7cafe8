//! Process primitives the sandbox needs: a fork-like `clone` into new namespaces, closing
//! every inherited descriptor, the controlling terminal and window sizes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// `clone(2)` without a new stack, as `fork` does, into the namespaces in `flags`. Returns the
/// child's pid in the parent and `None` in the child.
///
/// The caller must be single-threaded (ARCHITECTURE.md, process model: never fork after
/// starting threads): the child continues running Rust code, allocating, until it execs.
pub fn clone_fork(flags: CloneFlags) -> io::Result<Option<Pid>> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a NULL stack, clone duplicates the address space like fork; the caller
    // guarantees no other thread holds a lock the child could need. All pointer arguments
    // (parent_tid, child_tid, tls) are NULL and unused without the matching flags.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Marks every descriptor from `first` up close-on-exec, so that nothing of nook's reaches
/// the container (CVE-2024-21626) while the descriptors still work until `execve`.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk /proc/self/fd instead.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; an already-closed one just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Closes every descriptor from `first` up (for nook's own code that stays in a container,
/// such as `--init`'s reaper, which never execs).
pub fn close_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes no memory; the caller owns no descriptor object in that
    // range that it will use again (the reaper holds none after it reported the start).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `fd` is open without close-on-exec: a descriptor nook inherited from its caller
/// (every descriptor nook opens itself is close-on-exec), which `--preserve-fds` may pass on.
pub fn inherited(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC == 0
}

/// Clears close-on-exec on `fd`, so that the command nook execs keeps it at this number.
pub fn keep_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an int argument and changes only the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes an inherited descriptor that nook passed on and holds no object for (once the
/// container has it, nook's copy would only keep the peer waiting).
pub fn close_inherited(fd: RawFd) {
    // SAFETY: the caller owns no `OwnedFd`/`File` for `fd` (it was inherited and only passed
    // on by number), so nothing uses or closes it after this.
    unsafe { libc::close(fd) };
}

/// A descriptor for process `pid` (pidfd_open, Linux 5.3): a signal sent through it reaches
/// that process or none, never one that took its pid after it ended.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process `pidfd` refers to (pidfd_send_signal).
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags; the descriptor is borrowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `tty` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(tty: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); the fd is borrowed.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WinSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the window size of the terminal on `fd`.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the valid struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram into `buf` and the first descriptor passed with it (SCM_RIGHTS,
/// close-on-exec); extra descriptors are closed.
pub fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut first = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel installed these descriptors in our table for this
                // message; nothing else refers to them, so ownership is ours.
                let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(f) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, first))
}

/// A close-on-exec duplicate of `fd` numbered `min` or more.
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument and returns a new descriptor or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created descriptor n for us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

/// Spawns a helper (slirp4netns, pasta) that dies with this thread: SIGKILL as its
/// parent-death signal, checked against the race where nook died before it was set. `fds`
/// are `(ours, theirs)`: each descriptor of ours appears in the helper as `theirs`, open
/// across exec; every other descriptor of nook's stays close-on-exec.
pub fn spawn_tied(
    cmd: &mut std::process::Command,
    fds: &[(RawFd, RawFd)],
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, dup2, fcntl, _exit); it allocates nothing
    // (`fds` was copied before the fork).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent.as_raw() {
                libc::_exit(1);
            }
            for &(ours, theirs) in &fds {
                if ours == theirs {
                    if libc::fcntl(ours, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(ours, theirs) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A running process's start time in clock ticks since boot (field 22 of /proc/PID/stat);
/// `None` when it is gone or a zombie. With the pid, it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command (which may hold spaces and parentheses): the state, field 3, first.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Restores SIGPIPE's default action (the Rust runtime ignores it), so that a command that
/// only prints ends quietly when its reader goes away (`nook inspect IMAGE | head`), as
/// other Unix tools do, instead of failing on EPIPE.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE; no handler code runs, and the
    // previous disposition (SIG_IGN, set by the runtime) is not needed again.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether process `pid` still runs: not gone, not a zombie.
pub fn alive(pid: i32) -> bool {
    start_time(pid).is_some()
}

/// The number of threads of this process (clone is only safe with one).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Ends the process at once, without running destructors or atexit handlers (for forked
/// children, whose parent's state must not be flushed twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only terminates the calling process.
    unsafe { libc::_exit(code) }
}

/// Gives a process about to exec the signal state a container expects: every signal
/// unblocked and at its default action (Rust ignores SIGPIPE, and ignored signals survive
/// execve).
pub fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
}

/// Has the child of `cmd` start with no signal blocked: a server that blocks SIGTERM and
/// SIGINT for a signal-waiting thread must not pass that mask on (it survives execve).
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; it only calls sigprocmask (async-signal
    // safe) on a set built on the stack, allocating nothing and taking no lock.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
}

/// Has the child of `cmd` lead a new session whose controlling terminal is its standard input
/// (a pty slave), so that resizing the pty's master signals it (SIGWINCH).
pub fn own_terminal_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; setsid and ioctl are async-signal safe
    // system calls on the child's own fd 0, and nothing is allocated or locked.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_process_has_threads() {
        assert!(thread_count() >= 1);
    }
}
