//! A detached container's attach socket: `attach.sock` in its directory (0600, the owner's
//! only), on which its monitor listens while the container runs. Whoever attaches (the API
//! server's attach and resize handlers) connects and sends [`ToMonitor`] messages: bytes for
//! the container's standard input (a pipe the monitor holds, or its terminal's master), the
//! end of one client's input, a new window size.
//!
//! The monitor never blocks on a container that does not read: input waits in one buffer,
//! and no connection is read until the container has taken it. SOCK_SEQPACKET keeps every
//! message whole. A socket's path must fit in 108 bytes and a store's container directory may
//! not, so both sides name the socket through `/proc/self/fd/N/` of an O_PATH descriptor of
//! the directory (as conmon does).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::PollFlags;
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, socket, sockopt,
};
use nix::sys::stat::Mode;

use crate::sys::process::{WinSize, set_window_size};

/// The socket's name in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// The most input bytes one message carries.
pub const CHUNK: usize = 32 << 10;

/// The most clients a monitor serves at once; more are turned away.
const MAX_CLIENTS: usize = 64;

/// What an attaching client tells the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMonitor {
    /// Bytes for the container's standard input.
    Input(Vec<u8>),
    /// This client's input has ended (docker's StdinOnce closes the container's then).
    InputEnd,
    /// The terminal's new size.
    Resize(WinSize),
}

impl ToMonitor {
    /// One datagram: a tag byte, then the input or the size (rows, columns; big-endian).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToMonitor::Input(b) => [&[1u8][..], b].concat(),
            ToMonitor::InputEnd => vec![2],
            ToMonitor::Resize(s) => {
                let mut v = vec![3];
                v.extend_from_slice(&s.rows.to_be_bytes());
                v.extend_from_slice(&s.cols.to_be_bytes());
                v
            }
        }
    }

    /// A datagram read back; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<ToMonitor> {
        match b.split_first()? {
            (1, rest) if rest.len() <= CHUNK => Some(ToMonitor::Input(rest.to_vec())),
            (2, []) => Some(ToMonitor::InputEnd),
            (3, [r0, r1, c0, c1]) => Some(ToMonitor::Resize(WinSize {
                rows: u16::from_be_bytes([*r0, *r1]),
                cols: u16::from_be_bytes([*c0, *c1]),
            })),
            _ => None,
        }
    }
}

/// The directory, held open, and the socket's short address through it.
fn address(dir: &Path) -> io::Result<(OwnedFd, UnixAddr)> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let addr = UnixAddr::new(format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd()).as_str())?;
    Ok((fd, addr))
}

fn seqpacket(flags: SockFlag) -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | flags,
        None,
    )?)
}

/// A client's connection to a container's monitor.
pub struct Client(OwnedFd);

impl Client {
    /// Connects to the monitor of the container whose directory is `dir`; an error when it
    /// is not listening (the container has not started, or has ended).
    pub fn connect(dir: &Path) -> io::Result<Client> {
        let (_dir, addr) = address(dir)?;
        let fd = seqpacket(SockFlag::empty())?;
        nix::sys::socket::connect(fd.as_raw_fd(), &addr)?;
        // A monitor that stops reading must not hold the sender for ever.
        let limit = nix::sys::time::TimeVal::new(0, 200_000);
        nix::sys::socket::setsockopt(&fd, sockopt::SendTimeout, &limit)?;
        Ok(Client(fd))
    }

    /// Sends `msg`; `TimedOut` while the monitor has not taken the last ones.
    pub fn send(&self, msg: &ToMonitor) -> io::Result<()> {
        match nix::sys::socket::send(self.0.as_raw_fd(), &msg.encode(), MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => Ok(()),
            Err(Errno::EAGAIN) => Err(io::ErrorKind::TimedOut.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `msg`, retrying while the monitor is slow and `go_on` says so.
    pub fn send_while(&self, msg: &ToMonitor, go_on: impl Fn() -> bool) -> io::Result<()> {
        loop {
            match self.send(msg) {
                Err(e) if e.kind() == io::ErrorKind::TimedOut && go_on() => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => return other,
            }
        }
    }
}

/// Where the container's input goes.
enum Input {
    /// The write end of its standard input's pipe.
    Pipe(OwnedFd),
    /// Its terminal's master (the monitor holds it for the output too).
    Pty,
    /// Closed (StdinOnce), or never open (no `-i`).
    Closed,
}

/// The monitor's side: the listener, its clients, and the container's input.
pub struct AttachPort {
    dir: OwnedFd,
    listener: OwnedFd,
    clients: Vec<OwnedFd>,
    input: Input,
    /// Input read from a client that the container has not taken yet.
    pending: Vec<u8>,
    /// docker's StdinOnce (without a terminal): the first client's end closes the input.
    once: bool,
}

impl AttachPort {
    /// Listens on `dir/attach.sock` (0600). `stdin`: the write end of the container's input
    /// pipe; `pty`: whether input goes to the terminal (with `-i`, `open`).
    pub fn bind(
        dir: &Path,
        stdin: Option<OwnedFd>,
        pty: bool,
        open: bool,
        once: bool,
    ) -> io::Result<AttachPort> {
        let (dirfd, addr) = address(dir)?;
        let path = addr.path().map(Path::to_path_buf).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let listener = seqpacket(SockFlag::SOCK_NONBLOCK)?;
        nix::sys::socket::bind(listener.as_raw_fd(), &addr)?;
        // Made with 0777 & ~umask, so none but the owner could write (connect) before this.
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, owner_only)?;
        nix::sys::socket::listen(&listener, Backlog::new(16)?)?;
        // A write to a pipe whose reader is gone must fail (EPIPE), not end the monitor.
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        pipe.thread_block()?;
        let input = match (stdin, pty && open) {
            (Some(w), _) => {
                nonblocking(w.as_fd())?;
                Input::Pipe(w)
            }
            (None, true) => Input::Pty,
            (None, false) => Input::Closed,
        };
        Ok(AttachPort {
            dir: dirfd,
            listener,
            clients: Vec::new(),
            input,
            pending: Vec::new(),
            once: once && !pty,
        })
    }

    /// The descriptors to poll, and for what; `master` is the container's terminal.
    pub fn interests<'a>(
        &'a self,
        master: Option<BorrowedFd<'a>>,
    ) -> Vec<(BorrowedFd<'a>, PollFlags)> {
        let mut v = vec![(self.listener.as_fd(), PollFlags::POLLIN)];
        if self.pending.is_empty() {
            v.extend(self.clients.iter().map(|c| (c.as_fd(), PollFlags::POLLIN)));
        } else if let Some(fd) = self.input_fd(master) {
            v.push((fd, PollFlags::POLLOUT));
        }
        v
    }

    fn input_fd<'a>(&'a self, master: Option<BorrowedFd<'a>>) -> Option<BorrowedFd<'a>> {
        match &self.input {
            Input::Pipe(w) => Some(w.as_fd()),
            Input::Pty => master,
            Input::Closed => None,
        }
    }

    /// Acts on what [`Self::interests`] found ready (`ready[i]` for its i-th descriptor).
    pub fn ready(&mut self, ready: &[bool], master: Option<BorrowedFd<'_>>) {
        if ready.first() == Some(&true) {
            while let Ok(c) = nix::sys::socket::accept4(
                &self.listener,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                if self.clients.len() < MAX_CLIENTS {
                    self.clients.push(c);
                }
            }
        }
        if !self.pending.is_empty() {
            self.flush(master);
            return;
        }
        let mut gone = Vec::new();
        for (i, _) in ready.iter().enumerate().skip(1).filter(|(_, r)| **r) {
            let Some(c) = self.clients.get(i - 1) else {
                continue;
            };
            let fd = c.as_raw_fd();
            if !self.read_client(fd, master) {
                gone.push(i - 1);
            }
            if !self.pending.is_empty() {
                break;
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
        }
    }

    /// Reads one client's messages until it has none, or input waits; false once it is gone.
    fn read_client(&mut self, fd: std::os::fd::RawFd, master: Option<BorrowedFd<'_>>) -> bool {
        let mut buf = vec![0u8; CHUNK + 1];
        while self.pending.is_empty() {
            let n = match nix::sys::socket::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            };
            match ToMonitor::decode(&buf[..n]) {
                Some(ToMonitor::Input(b)) if self.input_fd(master).is_some() => {
                    self.pending = b;
                    self.flush(master);
                }
                Some(ToMonitor::Input(_)) => {}
                Some(ToMonitor::InputEnd) => {
                    if self.once {
                        self.input = Input::Closed;
                    }
                }
                Some(ToMonitor::Resize(size)) => {
                    if let Some(m) = master {
                        let _ = set_window_size(m, size);
                    }
                }
                // A client that speaks something else is dropped.
                None => return false,
            }
        }
        true
    }

    /// Writes what it can of the pending input; drops it when the container's input is gone.
    fn flush(&mut self, master: Option<BorrowedFd<'_>>) {
        while !self.pending.is_empty() {
            let Some(written) = self
                .input_fd(master)
                .map(|fd| nix::unistd::write(fd, &self.pending))
            else {
                self.pending.clear();
                return;
            };
            match written {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The container closed its input (EPIPE): later input has nowhere to go.
                    self.pending.clear();
                    if matches!(self.input, Input::Pipe(_)) {
                        self.input = Input::Closed;
                    }
                }
            }
        }
    }
}

impl Drop for AttachPort {
    fn drop(&mut self) {
        let path = format!("/proc/self/fd/{}/{SOCKET}", self.dir.as_raw_fd());
        let _ = std::fs::remove_file(path);
    }
}

fn nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        for m in [
            ToMonitor::Input(b"hi\n".to_vec()),
            ToMonitor::Input(Vec::new()),
            ToMonitor::InputEnd,
            ToMonitor::Resize(WinSize {
                rows: 40,
                cols: 300,
            }),
        ] {
            assert_eq!(ToMonitor::decode(&m.encode()), Some(m));
        }
        for bad in [&[][..], &[0], &[2, 0], &[3, 0, 1], &[9, 1, 2]] {
            assert_eq!(ToMonitor::decode(bad), None, "{bad:?}");
        }
        let mut big = vec![1u8];
        big.resize(CHUNK + 2, b'x');
        assert_eq!(ToMonitor::decode(&big), None);
    }

    #[test]
    fn input_reaches_the_pipe_and_stdin_once_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut port = AttachPort::bind(dir.path(), Some(w), false, true, true).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let c = Client::connect(dir.path()).unwrap();
        c.send(&ToMonitor::Input(b"abc".to_vec())).unwrap();
        c.send(&ToMonitor::InputEnd).unwrap();
        for _ in 0..3 {
            let n = port.interests(None).len();
            let all = vec![true; n];
            port.ready(&all, None);
        }
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
        assert_eq!(got, b"abc", "the end closed the pipe (EOF) after the bytes");
        drop(port);
        assert!(!dir.path().join(SOCKET).exists());
    }
}
