//! A `nook exec` child of the server, and the relay between it and a hijacked connection:
//! its stdout and stderr to the client (docker's 8-byte frames; raw through a pty with a
//! terminal), the client's bytes (never framed) to its stdin, which closes when the client
//! half-closes. The child is spawned with std's `Command` (fork and exec at once, safe from
//! a threaded process); it re-executes nook, which enters the container.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use super::error::ApiError;
use super::exec::ExecConfig;
use super::http::Hijacked;
use super::{Engine, reexec};

/// A started `nook exec`.
pub struct ExecChild {
    child: Child,
    /// The master of its terminal (with Tty).
    master: Option<Arc<OwnedFd>>,
}

fn failed(what: &str) -> impl FnOnce(std::io::Error) -> ApiError + '_ {
    move |err| ApiError::Internal(format!("{what}: {err}"))
}

/// docker's exit code of a process: its status, or 128 + the signal that ended it.
fn code_of(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(-1),
        Err(_) => -1,
    }
}

/// Spawns `nook ARGS` (an exec) to be relayed: pipes, or a pty with `config.tty`.
pub fn spawn(e: &Engine, args: &[String], config: &ExecConfig) -> Result<ExecChild, ApiError> {
    let mut cmd = reexec::command(e, args);
    let master = if config.tty {
        let (master, slave) =
            crate::container::exec::open_pty().map_err(failed("cannot open a terminal"))?;
        let dup = |f: &OwnedFd| f.try_clone().map_err(failed("cannot share the terminal"));
        cmd.stdin(dup(&slave)?)
            .stdout(dup(&slave)?)
            .stderr(Stdio::from(slave));
        if let Some((rows, cols)) = config.console {
            let size = crate::sys::process::WinSize { rows, cols };
            let _ = crate::sys::process::set_window_size(std::os::fd::AsFd::as_fd(&master), size);
        }
        crate::sys::process::own_terminal_in_child(&mut cmd);
        Some(Arc::new(master))
    } else {
        if config.stdin {
            cmd.stdin(Stdio::piped());
        }
        None
    };
    let child = cmd.spawn().map_err(failed("cannot run nook exec"))?;
    Ok(ExecChild { child, master })
}

/// Spawns `nook ARGS` with no input or output; `on_exit` gets its exit code when it ends.
pub fn spawn_detached(
    e: &Engine,
    args: &[String],
    on_start: impl FnOnce(u32),
    on_exit: impl FnOnce(i32) + Send + 'static,
) -> Result<(), ApiError> {
    let mut child = reexec::command(e, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(failed("cannot run nook exec"))?;
    on_start(child.id());
    std::thread::spawn(move || on_exit(code_of(child.wait())));
    Ok(())
}

impl ExecChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn pty(&self) -> Option<Arc<OwnedFd>> {
        self.master.clone()
    }

    /// Relays until the child's output ends; its exit code. `wanted`: whether the client
    /// attached stdout and stderr.
    pub fn relay(mut self, h: Hijacked<'_>, wanted: (bool, bool)) -> i32 {
        let conn = h.conn;
        let input: Option<Box<dyn Write + Send>> = match &self.master {
            Some(m) => m
                .try_clone()
                .ok()
                .map(|f| Box::new(std::fs::File::from(f)) as Box<dyn Write + Send>),
            None => self
                .child
                .stdin
                .take()
                .map(|w| Box::new(w) as Box<dyn Write + Send>),
        };
        if let (Some(mut w), Ok(mut from)) = (input, conn.try_clone()) {
            let early = h.early;
            // Not joined: it ends at the client's half-close, or at the shutdown below.
            std::thread::spawn(move || {
                let _ = w.write_all(&early);
                let _ = std::io::copy(&mut from, &mut w);
            });
        }
        let sink = Mutex::new(conn);
        match &self.master {
            Some(m) => {
                if let Ok(f) = m.try_clone() {
                    pump(std::fs::File::from(f), Frames::Raw, &sink);
                }
            }
            None => {
                let out = self.child.stdout.take();
                let err = self.child.stderr.take();
                std::thread::scope(|s| {
                    if let Some(o) = out {
                        s.spawn(|| pump(o, frames(1, wanted.0), &sink));
                    }
                    if let Some(e) = err {
                        pump(e, frames(2, wanted.1), &sink);
                    }
                });
            }
        }
        let code = code_of(self.child.wait());
        let _ = conn.shutdown(std::net::Shutdown::Read);
        code
    }
}

fn frames(kind: u8, wanted: bool) -> Frames {
    if wanted {
        Frames::Stream(kind)
    } else {
        Frames::Drop
    }
}

/// A stream's frames: stdout (1) or stderr (2), or raw bytes under a terminal (`Raw`); the
/// output of a stream the client did not attach is read and dropped (`Drop`).
#[derive(Clone, Copy)]
enum Frames {
    Stream(u8),
    Raw,
    Drop,
}

/// Copies `r` to the client until its end, framed as `frames` says.
fn pump(mut r: impl Read, frames: Frames, sink: &Mutex<&std::os::unix::net::UnixStream>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + 8);
        match frames {
            Frames::Drop => continue,
            Frames::Raw => {}
            Frames::Stream(kind) => {
                out.extend_from_slice(&[kind, 0, 0, 0]);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(&buf[..n]);
        let mut conn = *sink.lock().unwrap_or_else(|p| p.into_inner());
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}
