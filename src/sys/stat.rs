//! statx(2), and the raw bytes of stat results (to hand them to another process).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// statx(2) on `path` relative to `dir` (`c""` with AT_EMPTY_PATH: `dir` itself).
pub fn statx(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: libc::statx holds only integers and arrays of integers, for which all-zero bytes
    // are a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated C string borrowed for the call, `st` a writable statx
    // the kernel fills (at most its size), and `dir` a descriptor borrowed for the call.
    let r = unsafe { libc::statx(dir.as_raw_fd(), path.as_ptr(), flags, mask, &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The bytes of a `struct stat`, as the stat family of system calls writes them.
pub fn stat_bytes(st: &libc::stat) -> &[u8] {
    // SAFETY: the pointer comes from a reference, so it is non-null, aligned and valid for
    // reads of size_of::<stat>() bytes for the borrow's lifetime, which the returned slice
    // keeps; nothing can write `st` while the slice lives. Every byte is initialised: libc
    // declares the kernel's padding as private fields (so there is no implicit padding), and
    // code outside libc cannot name them, so a stat exists only zeroed, defaulted (libc zeroes
    // padding) or filled by stat(2)/statx(2), which write the whole struct. Any byte is a u8.
    unsafe {
        std::slice::from_raw_parts(
            (st as *const libc::stat).cast::<u8>(),
            std::mem::size_of::<libc::stat>(),
        )
    }
}

/// The bytes of a `struct statx`.
pub fn statx_bytes(st: &libc::statx) -> &[u8] {
    // SAFETY: as for `stat_bytes`: a reference gives a non-null, aligned pointer valid for
    // size_of::<statx>() bytes for the returned slice's lifetime; statx's padding
    // (`__statx_pad*`, each timestamp's pad) is private fields of libc's, so a statx exists only
    // zeroed (as `statx` above makes it) or written whole by the kernel: every byte is set.
    unsafe {
        std::slice::from_raw_parts(
            (st as *const libc::statx).cast::<u8>(),
            std::mem::size_of::<libc::statx>(),
        )
    }
}
