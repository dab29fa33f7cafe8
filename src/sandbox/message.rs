//! The typed messages between nook and the container's init, over a SOCK_SEQPACKET pair.
//!
//! One JSON datagram per message; a terminal's master side travels as SCM_RIGHTS with
//! [`ToParent::Pty`]. The init's end is close-on-exec, so end-of-file after `Ready` and `Go`
//! means the command was executed.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Deserialize, Serialize};

/// nook → init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToChild {
    /// The id maps are written: the init may go on.
    MapsWritten,
    /// slirp4netns or pasta has configured the network: the command may run.
    NetworkReady,
    /// The fakeroot supervises, and nook's FUSE overlay applies the image's owners.
    FakerootReady,
    /// nook has recorded the container as running (and put it in its cgroup): the command
    /// may start.
    Go,
}

/// init → nook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToParent {
    /// The root is mounted on this rung of the ladder.
    Mounted { driver: crate::rootfs::Rung },
    /// The master side of the container's terminal is attached.
    Pty,
    /// The FUSE connection of the root, mounted: nook serves it (descriptor attached).
    Fuse,
    /// The listener of the fakeroot's seccomp filter (descriptor attached): nook supervises
    /// the container's stat and chown calls.
    Fakeroot,
    /// Setup is done and the command is about to start (under `--init`, sent by the command
    /// the reaper forked): it waits for [`ToChild::Go`].
    Ready,
    /// Setup failed; `exit` is the status nook should end with (125, 126 or 127).
    Failed {
        stage: Stage,
        message: String,
        exit: i32,
    },
}

/// Where setup failed (the overlay stage lets nook fall back to the next rung).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Overlay,
    Rootfs,
    Mounts,
    User,
    Process,
    Exec,
}

const MAX: usize = 64 << 10;

/// Sends `msg`, with `fd` attached when given.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fd: Option<RawFd>) -> nix::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(|_| nix::errno::Errno::EINVAL)?;
    let iov = [IoSlice::new(&bytes)];
    let fds;
    let cmsgs: Vec<ControlMessage<'_>> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => vec![],
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one message and any descriptor with it; `Ok(None)` at end-of-file.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> nix::Result<Option<(T, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX];
    // A peer that closed with a message of ours unread resets the connection, and a SEQPACKET
    // receive reports that reset (once) before the messages the peer sent last: look again.
    let (len, fd) = match crate::sys::process::recv_with_fd(sock, &mut buf) {
        Err(nix::errno::Errno::ECONNRESET) => crate::sys::process::recv_with_fd(sock, &mut buf)?,
        other => other?,
    };
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|_| nix::errno::Errno::EBADMSG)?;
    Ok(Some((msg, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    /// A peer that closes with a message of ours unread makes the kernel report ECONNRESET
    /// before the peer's own last message; `recv` still returns that message.
    #[test]
    fn a_reset_does_not_hide_the_last_message() {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        send(ours.as_fd(), &ToChild::NetworkReady, None).unwrap();
        let failed = ToParent::Failed {
            stage: Stage::Process,
            message: "hook failed".into(),
            exit: 125,
        };
        send(theirs.as_fd(), &failed, None).unwrap();
        drop(theirs);
        match recv::<ToParent>(ours.as_fd()) {
            Ok(Some((ToParent::Failed { message, .. }, None))) => {
                assert_eq!(message, "hook failed")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(recv::<ToParent>(ours.as_fd()), Ok(None)));
    }
}
