//! `--init`: a small reaper as the container's pid 1 (or, with `--pid host`, its first
//! process and the subreaper of the rest). It forks the command (which tells nook it is
//! ready and waits for nook's go before it execs), forwards every signal it receives to it,
//! reaps orphans, and exits with the command's status.
//!
//! The reaper is nook's own code, so it makes itself non-dumpable: its `/proc/1/exe` (nook's
//! binary) is then out of reach of the container (CVE-2019-5736); `--init` is refused with
//! CAP_SYS_PTRACE, which would lift that.

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys::process::{clone_fork, exit_now, reset_signals};

/// Becomes the reaper; never returns.
pub fn run(sock: BorrowedFd<'_>, program: &CString, args: &[CString], env: &[CString]) -> ! {
    let _ = nix::sys::prctl::set_dumpable(false);
    // Pid 1 of a pid namespace gets its orphans anyway; in the host's (`--pid host`) they
    // would go to the host's init without this.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let all = SigSet::all();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None);
    let child = match clone_fork(nix::sched::CloneFlags::empty()) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            if let Err(f) = super::child::ready_then_go(sock) {
                eprintln!("nook: {}", f.message);
                exit_now(f.exit)
            }
            reset_signals();
            let e = nix::unistd::execve(program, args, env).unwrap_err();
            eprintln!("nook: exec {:?}: {}", program, e.desc());
            let code = if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            };
            exit_now(code)
        }
        Err(e) => {
            eprintln!("nook: cannot start the command: {e}");
            exit_now(125)
        }
    };
    // nook's descriptors (marked close-on-exec for the command) would stay open here for the
    // container's life: the write end of a detached container's input would never close.
    let _ = crate::sys::process::close_from(3);
    loop {
        let Ok(sig) = all.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        if let Some(code) = reap(child) {
            exit_now(code);
        }
    }
}

/// Reaps every exited child; returns the command's exit status once it has ended.
fn reap(child: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                result = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}
