//! statx(2), and the raw bytes of stat results (to hand them to another process).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// statx(2) on `path` relative to `dir` (`c""` with AT_EMPTY_PATH: `dir` itself).
pub fn statx(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: statx is plain data; zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a writable statx.
    let r = unsafe { libc::statx(dir.as_raw_fd(), path.as_ptr(), flags, mask, &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The bytes of a `struct stat`, as the stat family of system calls writes them.
pub fn stat_bytes(st: &libc::stat) -> &[u8] {
    // SAFETY: libc::stat is plain data with no padding the kernel would not also write; the
    // slice borrows `st` for its lifetime.
    unsafe {
        std::slice::from_raw_parts(
            (st as *const libc::stat).cast::<u8>(),
            std::mem::size_of::<libc::stat>(),
        )
    }
}

/// The bytes of a `struct statx`.
pub fn statx_bytes(st: &libc::statx) -> &[u8] {
    // SAFETY: as for `stat_bytes`.
    unsafe {
        std::slice::from_raw_parts(
            (st as *const libc::statx).cast::<u8>(),
            std::mem::size_of::<libc::statx>(),
        )
    }
}
