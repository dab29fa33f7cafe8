//! Extended attributes through file descriptors (and one path-based probe).
//!
//! Unpacking sets xattrs only on descriptors it opened itself below the layer root, so no
//! path is ever resolved twice.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sets `name` to `value` on the open file `fd`.
pub fn fset(fd: impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated C string and `value` a valid slice for its length;
    // the fd is borrowed for the duration of the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads `name` from the open file `fd`; `Ok(None)` when it is not set.
pub fn fget(fd: impl AsFd, name: &str) -> io::Result<Option<Vec<u8>>> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = fd.as_fd().as_raw_fd();
    read_value(&[libc::ENODATA], |buf| {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `name` is NUL-terminated.
        unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// Calls a getxattr-like `call` with a growing buffer; the errnos in `absent` mean no value.
fn read_value(absent: &[i32], call: impl Fn(&mut [u8]) -> isize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        let rc = call(&mut buf);
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(e) if absent.contains(&e) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Whether the file at `path` (not following a final symlink) carries xattr `name`.
pub fn path_has(name: &str, path: &Path) -> bool {
    let (Ok(name), Ok(p)) = (
        CString::new(name),
        CString::new(path.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: both are NUL-terminated; a NULL buffer with size 0 only asks for the length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    rc > 0
}

/// Reads `name` of the object at `path` (following a final symlink: meant for
/// `/proc/self/fd/N`); `Ok(None)` when it is not set or not supported there.
pub fn path_get(path: &std::ffi::CStr, name: &str) -> io::Result<Option<Vec<u8>>> {
    get(path, name, true)
}

/// Reads `name` of the object at `path` without following a final symlink (meant for
/// `/proc/self/fd/N/ENTRY`).
pub fn path_lget(path: &std::ffi::CStr, name: &str) -> io::Result<Option<Vec<u8>>> {
    get(path, name, false)
}

fn get(path: &std::ffi::CStr, name: &str, follow: bool) -> io::Result<Option<Vec<u8>>> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let call = if follow {
        libc::getxattr
    } else {
        libc::lgetxattr
    };
    read_value(&[libc::ENODATA, libc::ENOTSUP, libc::EPERM], |buf| {
        // SAFETY: `buf` is valid for `buf.len()` bytes; both strings are NUL-terminated.
        unsafe {
            call(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Sets `name` on the object at `path` (see [`path_get`]); `flags` as setxattr(2).
pub fn path_set(path: &std::ffi::CStr, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is valid for its length; both strings are NUL-terminated.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes `name` from the object at `path` (see [`path_get`]).
pub fn path_remove(path: &std::ffi::CStr, name: &str) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated.
    let rc = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The names of the xattrs of the object at `path` (see [`path_get`]).
pub fn path_list(path: &std::ffi::CStr) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes; `path` is NUL-terminated.
        let rc = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) | Some(libc::EPERM) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_get_user_xattr_or_enotsup() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        match fset(&f, "user.nook.test", b"v") {
            Ok(()) => {
                assert_eq!(
                    fget(&f, "user.nook.test").unwrap().as_deref(),
                    Some(&b"v"[..])
                );
                assert_eq!(fget(&f, "user.nook.absent").unwrap(), None);
                assert!(path_has("user.nook.test", &dir.path().join("f")));
            }
            // Some filesystems (old tmpfs) have no user xattrs; the error must be an errno.
            Err(e) => assert!(e.raw_os_error().is_some()),
        }
    }
}
