//! Socket queries nix has no wrapper for.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes written to a stream socket that its peer has not read yet (SIOCOUTQ; for a UNIX
/// socket the data sits in the peer's receive queue, charged to the sender until read).
pub fn unread_sent(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // The kernel defines SIOCOUTQ as TIOCOUTQ, which libc names.
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points at `n`, alive and
    // writable for the call; `fd` is a descriptor borrowed for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn counts_what_the_peer_has_not_read() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        assert!(unread_sent(a.as_fd()).unwrap() > 0);
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(unread_sent(a.as_fd()).unwrap(), 0);
    }
}
