//! `attach`: a container's output on a hijacked connection (HTTP 101 `Upgrade: tcp`, or
//! docker's old plain 200), framed without a terminal, raw with one, from now (from the log's
//! start with `logs=1`) until the container's next exit; with `stdin=1`, the client's input
//! (raw bytes, never framed) to the container's monitor through its attach socket.
//!
//! The docker CLI attaches before it starts the container, and a short command can start,
//! end and (AutoRemove) be removed between two polls. So the log file is opened at once,
//! made empty if the container has not run yet (the monitor appends to it): whatever the
//! container writes is read from the open file, even after its directory is gone. Input is
//! left in the connection until the monitor listens; the end of it (the client's half-close
//! or hang-up) is passed on, which closes the container's input under docker's StdinOnce.
//! Under a terminal, ctrl-p ctrl-q (docker's detach keys) end the attach and nothing else.
//! The input thread is scoped to the connection's and reads with a timeout, so that it ends
//! with the output and no thread outlives its client; the connection then lingers until the
//! client closes it (bounded), so that input left unread does not reset it.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::containers::{has_stdin, has_tty};
use super::error::ApiError;
use super::http::{Request, Response};
use super::logs::{LogView, Tail};
use super::{Engine, route::Query};
use crate::container::attach::{CHUNK, Client, ToMonitor};
use crate::container::{Containers, State};

/// The stream's content type: docker's multiplexed frames, or raw bytes under a terminal.
pub fn stream_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Whether the request asks to upgrade the connection (`Connection: Upgrade`, `Upgrade: tcp`).
pub fn wants_upgrade(req: &Request) -> bool {
    let has = |h: &str, v: &str| {
        req.header(h)
            .is_some_and(|x| x.split(',').any(|p| p.trim().eq_ignore_ascii_case(v)))
    };
    has("connection", "upgrade") && req.header("upgrade").is_some()
}

pub fn attach(e: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let c = e.containers();
    let r = c.get(id)?;
    let q: &Query = &req.query;
    let tty = has_tty(&r);
    let view = LogView::live(q.flag("stdout"), q.flag("stderr"), tty);
    let path = c.dir_of(&r.id).join("container.log");
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|err| ApiError::Internal(format!("cannot open the log of {}: {err}", r.name)))?;
    if !q.flag("logs") {
        file.seek(SeekFrom::End(0))
            .map_err(|err| ApiError::Internal(format!("cannot read the log: {err}")))?;
    }
    let stream = q.flag("stream");
    let input = (q.flag("stdin") && has_stdin(&r)).then(|| c.dir_of(&r.id));
    let id = r.id.clone();
    let mut tail = Tail::new(path, file);
    let mut watch = RunWatch {
        before: (r.started, r.monitor),
        seen_run: r.state == State::Running,
    };
    Ok(Response::hijack(
        stream_type(tty),
        wants_upgrade(req),
        move |mut h| {
            let (done, detached) = (AtomicBool::new(false), AtomicBool::new(false));
            let result = std::thread::scope(|s| {
                if let (Some(dir), Ok(from)) = (input, h.conn.try_clone()) {
                    // The pump looks at `done` between reads.
                    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                    let pump = InputPump {
                        dir,
                        tty,
                        done: &done,
                        detached: &detached,
                    };
                    let early = std::mem::take(&mut h.early);
                    s.spawn(move || pump.run(from, early));
                }
                let mut out = h.conn;
                let changes = super::watch::DirWatch::new(&c.dir_of(&id));
                let result = loop {
                    let ended = !stream || watch.ended(&c, &id);
                    let batch = view.frames(&tail.next());
                    if !batch.is_empty()
                        && let Err(e) = out.write_all(&batch)
                    {
                        break Err(e);
                    }
                    if ended || h.client_gone() || detached.load(Ordering::Relaxed) {
                        break Ok(());
                    }
                    changes.wait(Duration::from_millis(50));
                };
                done.store(true, Ordering::Relaxed);
                result
            });
            linger(h.conn);
            result
        },
    ))
}

/// Ends the stream without a reset: the output's end first, then what the client still
/// sends is read and dropped until it closes (a second at most). A socket closed with
/// unread input resets the connection, and the client reports an error.
fn linger(conn: &UnixStream) {
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 16 << 10];
    let mut from = conn;
    while Instant::now() < deadline {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// The client's input on its way to the container's monitor.
struct InputPump<'a> {
    /// The container's directory, where its monitor listens.
    dir: PathBuf,
    tty: bool,
    /// Set when the attach ends (the pump then stops waiting and sending).
    done: &'a AtomicBool,
    /// Set by the pump when the client typed the detach keys.
    detached: &'a AtomicBool,
}

impl InputPump<'_> {
    fn run(self, mut from: UnixStream, early: Vec<u8>) {
        let Some(monitor) = self.connect() else {
            return;
        };
        let go_on = || !self.done.load(Ordering::Relaxed);
        let mut keys = DetachKeys::default();
        let mut buf = vec![0u8; CHUNK];
        let mut first = Some(early);
        loop {
            let data = match first.take() {
                Some(e) if !e.is_empty() => e,
                _ => match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => buf[..n].to_vec(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if self.done.load(Ordering::Relaxed) {
                            // The attach ended (the container did, or the keys were typed).
                            return;
                        }
                        continue;
                    }
                    Err(_) => break,
                },
            };
            let (data, detach) = if self.tty {
                keys.feed(&data)
            } else {
                (data, false)
            };
            for chunk in data.chunks(CHUNK) {
                if monitor
                    .send_while(&ToMonitor::Input(chunk.to_vec()), go_on)
                    .is_err()
                {
                    return;
                }
            }
            if detach {
                self.detached.store(true, Ordering::Relaxed);
                return;
            }
        }
        let _ = monitor.send_while(&ToMonitor::InputEnd, go_on);
    }

    /// The monitor's socket, once it listens (the client may attach before the start).
    fn connect(&self) -> Option<Client> {
        loop {
            if self.done.load(Ordering::Relaxed) {
                return None;
            }
            if let Ok(c) = Client::connect(&self.dir) {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// docker's default detach keys, ctrl-p ctrl-q, in a terminal's input.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Finds the detach keys in a terminal's input; a partial match waits for the next byte.
#[derive(Debug, Default)]
struct DetachKeys {
    matched: usize,
}

impl DetachKeys {
    /// The bytes to pass on, and whether the keys were typed (what follows them is dropped).
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == DETACH_KEYS[self.matched] {
                self.matched += 1;
                if self.matched == DETACH_KEYS.len() {
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&DETACH_KEYS[..self.matched]);
            self.matched = usize::from(b == DETACH_KEYS[0]);
            if self.matched == 0 {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Whether the container has run and ended since the attach: its record gone, or not
/// running after it was seen running or after a new start (each start has a new monitor
/// process; the start time alone has only seconds).
struct RunWatch {
    before: (Option<u64>, Option<(i32, u64)>),
    seen_run: bool,
}

impl RunWatch {
    fn ended(&mut self, c: &Containers, id: &str) -> bool {
        let Some(r) = c.load(id).ok().flatten().map(|x| c.refresh(x)) else {
            return true;
        };
        let running = r.state == State::Running;
        self.seen_run |= running || (r.started, r.monitor) != self.before;
        self.seen_run && !running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_end_the_input_and_are_not_passed_on() {
        let mut k = DetachKeys::default();
        assert_eq!(k.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(k.feed(b"a\x10"), (b"a".to_vec(), false), "held back");
        assert_eq!(k.feed(b"b"), (b"\x10b".to_vec(), false), "released");
        assert_eq!(k.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(k.feed(b"\x11rest"), (Vec::new(), true));
        let mut k = DetachKeys::default();
        assert_eq!(k.feed(b"x\x10\x11y"), (b"x".to_vec(), true));
    }
}
