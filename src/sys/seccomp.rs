//! seccomp: installing filters, and user notification: a filter that hands chosen system
//! calls to a supervisor process, and the supervisor's side of the listener (receive, check,
//! respond). The container's profile is compiled elsewhere (`sandbox::seccomp`) and
//! installed here with [`install`]; stacked with the notification filter, the kernel takes
//! the most restrictive answer (an ERRNO outranks USER_NOTIF).
//!
//! The notification filter allows everything else, and every call of another architecture
//! (x32, i386 compat): those simply run unsupervised (the profile refuses them).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The architecture nook was built for, as seccomp names it.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A classic BPF program: the native calls in `syscalls` go to the listener, the rest run.
pub fn notify_program(syscalls: &[i64]) -> Vec<libc::sock_filter> {
    let n = syscalls.len();
    let mut p = vec![
        op(LD_W_ABS, 0, 0, OFFSET_ARCH),
        // another architecture: jump to "allow", just past the comparisons
        op(JEQ_K, 0, (n + 1) as u8, AUDIT_ARCH),
        op(LD_W_ABS, 0, 0, OFFSET_NR),
    ];
    for (i, nr) in syscalls.iter().enumerate() {
        // a match jumps over the remaining comparisons and "allow" to "notify"
        p.push(op(JEQ_K, (n - i) as u8, 0, *nr as u32));
    }
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    p
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, program); the kernel's return value.
fn set_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<i64> {
    // The kernel's BPF_MAXINSNS.
    let len = u16::try_from(program.len())
        .ok()
        .filter(|n| *n <= 4096)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Installs `program` on the calling thread (inherited by its children and kept across
/// exec) and returns the listener. Needs CAP_SYS_ADMIN in the user namespace or no_new_privs.
pub fn install_listener(program: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let fd = set_filter(
        program,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as libc::c_ulong,
    )?;
    // SAFETY: the kernel returned a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Installs `program` on the calling thread, as [`install_listener`] without a listener.
pub fn install(program: &[libc::sock_filter]) -> io::Result<()> {
    set_filter(program, 0).map(|_| ())
}

/// One supervised call.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    /// The caller's thread id, in the listener's pid namespace.
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Waits for the next call (blocks; poll the listener first).
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data; all-zero is what the kernel requires on input.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into `n`, which is large enough.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut n as *mut libc::seccomp_notif,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        nr: n.data.nr,
        arch: n.data.arch,
        args: n.data.args,
    })
}

/// Whether the call `id` still waits (its thread has not died and been replaced since).
pub fn still_waiting(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: NOTIF_ID_VALID only reads one u64 through the pointer, which points at `id`, alive
    // for the call; the listener is a borrowed, open descriptor.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// The answer to a supervised call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Errno(i32),
    /// The kernel runs the call as if nothing had intercepted it.
    Continue,
}

/// Sends the answer for call `id`. ENOENT means the caller went away meanwhile.
pub fn respond(listener: BorrowedFd<'_>, id: u64, answer: Answer) -> io::Result<()> {
    let (val, error, flags) = match answer {
        Answer::Value(v) => (v, 0, 0),
        Answer::Errno(e) => (0, -e, 0),
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp from `resp`.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_sends_listed_calls_to_the_listener() {
        let p = notify_program(&[4, 5, 6]);
        assert_eq!(p.len(), 3 + 3 + 2);
        // arch mismatch lands on "allow"
        assert_eq!(2 + p[1].jf as usize, p.len() - 2);
        assert_eq!(p[p.len() - 2].k, libc::SECCOMP_RET_ALLOW);
        for i in 0..3 {
            let at = 3 + i;
            assert_eq!(p[at].k, 4 + i as u32);
            assert_eq!(at + 1 + p[at].jt as usize, p.len() - 1, "a match notifies");
        }
        assert_eq!(p[p.len() - 1].k, libc::SECCOMP_RET_USER_NOTIF);
    }
}
