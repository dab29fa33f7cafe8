//! The listener: UNIX sockets (0600, peers of other uids refused) and TCP doors
//! ([`super::tcp`]), one thread per connection up to [`MAX_CONNECTIONS`], HTTP/1.1
//! keep-alive, and a clean end on SIGTERM or SIGINT (stop accepting, remove the sockets,
//! exit 0).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::Engine;
use super::http::{self, Body, Framing, ReadError, Response};
use super::tcp::{self, TcpDoor};

/// Connections served at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request (head and body), or stay idle between them.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole request (idle wait, head and body) may take to arrive.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long one write to a client may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0} exists and is not a socket: remove it or choose another -H")]
    NotASocket(String),
    #[error("another server listens on {0}: stop it, or choose another -H")]
    InUse(String),
    #[error("cannot listen on {path}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot block SIGTERM and SIGINT for the signal thread")]
    Signals(#[source] nix::Error),
}

/// Binds `path`, replacing a stale socket file only when nothing listens on it.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let shown = path.display().to_string();
    let io = |source| ServeError::Bind {
        path: shown.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket(shown));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// A bound door of the server.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpDoor),
}

/// Serves `listeners` (the UNIX ones bound at `paths`) until SIGTERM or SIGINT; then removes
/// the sockets and exits the process with status 0.
pub fn serve(
    engine: Engine,
    listeners: Vec<Listener>,
    paths: Vec<PathBuf>,
) -> Result<(), ServeError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked here, before any thread starts, so that every thread inherits the mask and only
    // the signal thread's sigwait receives them.
    set.thread_block().map_err(ServeError::Signals)?;
    std::thread::spawn(move || {
        let sig = set.wait();
        for p in &paths {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!("{sig:?}: sockets removed, exiting");
        std::process::exit(0);
    });
    let engine = Arc::new(engine);
    let slots = Slots::new(MAX_CONNECTIONS);
    let mut threads = Vec::new();
    for l in listeners {
        let (engine, slots) = (engine.clone(), slots.clone());
        threads.push(std::thread::spawn(move || match l {
            Listener::Unix(l) => accept_loop(&l, &engine, &slots),
            Listener::Tcp(d) => tcp::accept_loop(&d, &engine, &slots),
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Counts the connections being served, up to a bound.
pub struct Slots {
    active: AtomicUsize,
    max: usize,
}

/// One connection's place; given back on drop.
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            active: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, or `None` when all are taken.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        if self.active.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(self.clone()))
    }
}

fn accept_loop(l: &UnixListener, engine: &Arc<Engine>, slots: &Arc<Slots>) {
    let me = nix::unistd::getuid().as_raw();
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
        // Only this user may drive this user's engine: the socket's mode says so too, but a
        // descriptor can be passed on, and root ignores modes.
        let peer = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials);
        match peer {
            Ok(c) if c.uid() == me => {}
            other => {
                let who = other.map_or_else(|e| e.to_string(), |c| format!("uid {}", c.uid()));
                tracing::info!("refused a client of {who}");
                refuse(&mut s, 403, "this socket serves only its owner's uid");
                continue;
            }
        }
        let Some(slot) = slots.take() else {
            refuse(&mut s, 503, "too many connections: try again");
            continue;
        };
        start_connection(engine.clone(), s, Arc::new(slot));
    }
}

/// Serves `s` on a thread of its own, which holds `slot` until the connection ends; whether
/// the thread started.
pub fn start_connection(engine: Arc<Engine>, s: UnixStream, slot: Arc<Slot>) -> bool {
    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
    let spawned = std::thread::Builder::new()
        .name("api-conn".into())
        .spawn(move || {
            connection(&engine, s);
            drop(slot);
        });
    if spawned.is_err() {
        tracing::warn!("cannot start a connection thread");
    }
    spawned.is_ok()
}

fn refuse(s: &mut UnixStream, status: u16, msg: &str) {
    let body = serde_json::json!({ "message": msg });
    let _ = http::write_response(s, Response::json(status, &body), &Framing::closing());
    let _ = s.flush();
}

/// Serves one connection's requests until it closes, errs or times out.
fn connection(engine: &Engine, mut s: UnixStream) {
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    let mut buf = Vec::new();
    // Archive bodies wait on the store's disk, not in memory.
    let spool = engine.root.join("tmp");
    loop {
        let mut reader = http::Deadline {
            inner: &s,
            until: Instant::now() + REQUEST_DEADLINE,
        };
        let req = match http::read_request_spooling(&mut reader, &mut buf, Some(&spool)) {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Refuse(e)) => {
                tracing::info!("refused a request: {} {e}", e.status());
                let _ = http::write_response(&mut s, Response::error(&e), &Framing::closing());
                return;
            }
        };
        let started = Instant::now();
        let resp = super::handle(engine, &req);
        let status = resp.status;
        if matches!(resp.body, Body::Hijack(_)) {
            // The stream is the connection's last use: it closes when the handler returns.
            let _ = s.set_read_timeout(None);
            let early = std::mem::take(&mut buf);
            let done = http::hijack(&s, resp, early);
            tracing::info!(
                "{} {} {status} {}ms (hijacked){}",
                req.method,
                req.target,
                started.elapsed().as_millis(),
                done.err().map(|e| format!(": {e}")).unwrap_or_default()
            );
            return;
        }
        let streamed = matches!(resp.body, Body::Stream(_));
        let probe = s.try_clone();
        let gone = || probe.as_ref().map_or(true, hung_up);
        let framing = Framing {
            head_only: req.method == "HEAD",
            close: req.close,
            gone: &gone,
        };
        let written = http::write_response(&mut s, resp, &framing);
        tracing::info!(
            "{} {} {status} {}ms{}",
            req.method,
            req.target,
            started.elapsed().as_millis(),
            if streamed { " (streamed)" } else { "" }
        );
        if written.is_err() || req.close {
            return;
        }
    }
}

/// Whether the client of a streaming answer has left: closed its end, or ended its side (as
/// docker's daemon, whose request context ends at the client's EOF). A TCP client's EOF
/// reaches here as the relay's half-close ([`super::wire`]).
fn hung_up(s: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    let mut fds = [PollFd::new(s.as_fd(), PollFlags::empty())];
    let closed = match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        _ => false,
    };
    // A peek of nothing is the end of the client's side; bytes (a next request) are not.
    let ended = || {
        recv(
            s.as_raw_fd(),
            &mut [0u8; 1],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) == Ok(0)
    };
    closed || ended()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none(), "over the bound");
        drop(a);
        assert!(slots.take().is_some(), "a place given back");
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        drop(UnixListener::bind(&p).unwrap());
        let live = bind(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&p), Err(ServeError::InUse(_))));
        drop(live);
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(bind(&file), Err(ServeError::NotASocket(_))));
    }
}
