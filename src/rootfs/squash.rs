//! A squashfs file as the container's lower layer. The init mounts an empty FUSE connection
//! inside the container's user and mount namespaces (as on nook's FUSE rung) and hands it to
//! nook, which starts Debian's `squashfuse` on it (`/dev/fd/N` as the mount point: libfuse
//! then serves the given connection and mounts nothing). So the owners the squashfs holds are
//! read as the container's ids, no setuid `fusermount3` is needed, and the mount exists only
//! in the container's mount namespace: it goes when the container ends, whatever happens to
//! nook. [`Squashfuse`] kills and reaps the server when dropped.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The running `squashfuse` serving one container's lower layer.
#[derive(Debug)]
pub struct Squashfuse {
    child: Child,
}

impl Squashfuse {
    /// Starts `squashfuse` on the FUSE connection `fd` for the squashfs at `offset` in `file`.
    /// This process must be single-threaded (the descriptor is inheritable while it spawns).
    pub fn start(fd: OwnedFd, file: &Path, offset: u64) -> std::io::Result<Squashfuse> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        use std::os::fd::AsRawFd;
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        let child = Command::new("squashfuse")
            .arg("-f")
            .arg("-o")
            .arg(format!("offset={offset}"))
            .arg(file)
            .arg(format!("/dev/fd/{}", fd.as_raw_fd()))
            .stdin(Stdio::null())
            // Not the container's output: a detached run's log would stay open.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        drop(fd);
        Ok(Squashfuse { child: child? })
    }
}

impl Drop for Squashfuse {
    fn drop(&mut self) {
        // The container is gone (or never started): its mount went with its namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
