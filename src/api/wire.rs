//! The relay between a TCP client and the `UnixStream` its connection thread reads: what
//! comes off the wire (TLS records, or plain bytes on loopback) goes to the UNIX end as
//! plaintext, and what the handler writes goes back, both ways at once on nonblocking
//! sockets under `poll`.
//!
//! Ends are handed on: the client's close_notify or TCP EOF becomes a half-close of the UNIX
//! end (a hijacked stream's stdin ends; a streaming answer learns its client left); the
//! handler closing its end becomes close_notify and a TCP half-close, after which the client
//! has [`LINGER`] to go. A client that stops reading stalls the handler's writes, which time
//! out; a TCP reset closes the UNIX end, so `client_gone` sees it at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustls::ServerConnection;

/// Plaintext from the client held for the handler at most (then the client waits).
const PENDING_LIMIT: usize = 256 << 10;
/// How long the client may keep the connection after the server has closed its side.
const LINGER: Duration = Duration::from_secs(5);
/// How long a write to the client may make no progress.
const STALL: Duration = Duration::from_secs(30);
const CHUNK: usize = 16 << 10;

/// What travels on the TCP connection.
pub trait Wire {
    /// Reads what the client sent (if any has come), appending its plaintext to `into`;
    /// `Ok(true)` once the client has ended its side.
    fn receive(&mut self, tcp: &mut TcpStream, into: &mut Vec<u8>) -> io::Result<bool>;
    /// Queues `data` for the client.
    fn queue(&mut self, data: &[u8]) -> io::Result<()>;
    /// Sends what is queued until the socket would block; the bytes written.
    fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<usize>;
    /// Whether something is queued.
    fn wants_write(&self) -> bool;
    /// Queues the end of the server's side (TLS close_notify).
    fn finish(&mut self);
}

/// TLS records, by rustls.
pub struct Tls(ServerConnection);

impl Tls {
    /// After the handshake.
    pub fn new(mut conn: ServerConnection) -> Tls {
        // The pump reads from the handler only once all is sent: that bounds the buffer.
        conn.set_buffer_limit(None);
        Tls(conn)
    }
}

impl Wire for Tls {
    fn receive(&mut self, tcp: &mut TcpStream, into: &mut Vec<u8>) -> io::Result<bool> {
        let eof = match self.0.read_tls(tcp) {
            Ok(n) => n == 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e),
        };
        // Also when nothing came: records read with the handshake's last may wait here.
        self.0.process_new_packets().map_err(io::Error::other)?;
        let mut chunk = [0u8; CHUNK];
        loop {
            match self.0.reader().read(&mut chunk) {
                // close_notify.
                Ok(0) => return Ok(true),
                Ok(n) => into.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(eof),
                // TCP EOF without close_notify: docker's CLI half-closes that way.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.writer().write_all(data)
    }

    fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        let mut sent = 0;
        while self.0.wants_write() {
            match self.0.write_tls(tcp) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    fn wants_write(&self) -> bool {
        self.0.wants_write()
    }

    fn finish(&mut self) {
        self.0.send_close_notify();
    }
}

/// Plain bytes (`--insecure-tcp`).
#[derive(Default)]
pub struct Plain {
    out: Vec<u8>,
}

impl Wire for Plain {
    fn receive(&mut self, tcp: &mut TcpStream, into: &mut Vec<u8>) -> io::Result<bool> {
        let mut chunk = [0u8; CHUNK];
        match tcp.read(&mut chunk) {
            Ok(0) => Ok(true),
            Ok(n) => {
                into.extend_from_slice(&chunk[..n]);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        let mut sent = 0;
        while sent < self.out.len() {
            match tcp.write(&self.out[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.out.clear();
                    return Err(e);
                }
            }
        }
        self.out.drain(..sent);
        Ok(sent)
    }

    fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    fn finish(&mut self) {}
}

/// Relays between `tcp` (the client) and `near` (whose peer the connection thread serves)
/// until both sides have ended, the client is gone, or it stalls; then closes both.
pub fn pump(wire: impl Wire, tcp: TcpStream, near: UnixStream) -> io::Result<()> {
    tcp.set_nonblocking(true)?;
    near.set_nonblocking(true)?;
    let mut p = Pump {
        wire,
        tcp,
        near,
        pending: Vec::new(),
        client_ended: false,
        near_shut: false,
        server_ended: false,
        handler_gone: false,
        tcp_shut: false,
        stalled_since: None,
        linger_until: None,
    };
    let ended = p.run();
    // A last try at what is queued (an alert, close_notify) before the sockets close.
    let _ = p.wire.flush(&mut p.tcp);
    ended
}

struct Pump<W> {
    wire: W,
    tcp: TcpStream,
    near: UnixStream,
    /// Plaintext from the client not yet taken by the handler.
    pending: Vec<u8>,
    /// The client has ended its side.
    client_ended: bool,
    /// ... and the handler has been told (its end half-closed).
    near_shut: bool,
    /// The handler has closed its side.
    server_ended: bool,
    /// The handler takes nothing more: what the client sends is dropped.
    handler_gone: bool,
    /// The server's side of the TCP connection is shut.
    tcp_shut: bool,
    stalled_since: Option<Instant>,
    linger_until: Option<Instant>,
}

impl<W: Wire> Pump<W> {
    fn run(&mut self) -> io::Result<()> {
        loop {
            if !self.client_ended && self.pending.len() < PENDING_LIMIT {
                self.client_ended = self.wire.receive(&mut self.tcp, &mut self.pending)?;
            }
            self.feed_handler();
            if self.client_ended && self.pending.is_empty() && !self.near_shut {
                let _ = self.near.shutdown(Shutdown::Write);
                self.near_shut = true;
            }
            if !self.server_ended && !self.wire.wants_write() {
                self.take_from_handler()?;
            }
            self.send_to_client()?;
            if self.tcp_shut && self.client_ended {
                return Ok(());
            }
            self.wait()?;
        }
    }

    /// Gives the handler what it will take of the client's plaintext.
    fn feed_handler(&mut self) {
        if self.handler_gone {
            self.pending.clear();
            return;
        }
        while !self.pending.is_empty() {
            match self.near.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.handler_gone = true;
                    self.pending.clear();
                }
            }
        }
    }

    /// Queues what the handler wrote; at its end, the end of the server's side.
    fn take_from_handler(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; CHUNK];
        match self.near.read(&mut chunk) {
            Ok(0) => {
                self.server_ended = true;
                self.wire.finish();
                Ok(())
            }
            Ok(n) => self.wire.queue(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends what is queued; once the server's side has ended and all is sent, shuts it.
    fn send_to_client(&mut self) -> io::Result<()> {
        let sent = self.wire.flush(&mut self.tcp)?;
        self.stalled_since = match (self.wire.wants_write(), self.stalled_since) {
            (false, _) => None,
            (true, Some(t)) if sent == 0 => Some(t),
            (true, _) => Some(Instant::now()),
        };
        if self.server_ended && !self.wire.wants_write() && !self.tcp_shut {
            let _ = self.tcp.shutdown(Shutdown::Write);
            self.tcp_shut = true;
            self.linger_until = Some(Instant::now() + LINGER);
        }
        Ok(())
    }

    /// Waits until a socket is ready for what the pump wants of it, or a deadline.
    fn wait(&mut self) -> io::Result<()> {
        let mut on_tcp = PollFlags::empty();
        if !self.client_ended && self.pending.len() < PENDING_LIMIT {
            on_tcp |= PollFlags::POLLIN;
        }
        if self.wire.wants_write() {
            on_tcp |= PollFlags::POLLOUT;
        }
        let mut on_near = PollFlags::empty();
        if !self.server_ended && !self.wire.wants_write() {
            on_near |= PollFlags::POLLIN;
        }
        if !self.pending.is_empty() && !self.handler_gone {
            on_near |= PollFlags::POLLOUT;
        }
        let deadline = match (self.stalled_since, self.linger_until) {
            (Some(t), _) => Some(t + STALL),
            (None, l) => l,
        };
        let timeout = match deadline {
            Some(d) => {
                let left = d.checked_duration_since(Instant::now()).unwrap_or_default();
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stalled or lingered",
                    ));
                }
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        // The TCP socket is always watched, so that a reset is seen while idle; the UNIX end
        // only when wanted (once closed, it would report its hang-up for ever).
        let mut fds = vec![PollFd::new(self.tcp.as_fd(), on_tcp)];
        if !on_near.is_empty() {
            fds.push(PollFd::new(self.near.as_fd(), on_near));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let tcp_down = fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
        if tcp_down && !on_tcp.contains(PollFlags::POLLIN) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client gone",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn half_closes_pass_both_ways() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (tcp, _) = l.accept().unwrap();
        let (near, mut far) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || pump(Plain::default(), tcp, near));
        client.write_all(b"request").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request", "the client's end is the handler's EOF");
        far.write_all(b"answer").unwrap();
        drop(far);
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(
            back, b"answer",
            "an answer after the client's half-close, then EOF"
        );
        relay.join().unwrap().unwrap();
    }
}
