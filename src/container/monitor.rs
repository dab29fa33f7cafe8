//! `nook run -d`: the container's monitor, a forked `nook run` in a session of its own that
//! holds the container until it ends, its output going to the container's log. The `nook run
//! -d` that forked it waits for one report: the container started, or why it did not.

use std::path::Path;

use nix::sched::CloneFlags;

use super::report::{self, Report};
use super::run::{Detach, Host, RunError, RunRequest, io, run};
use crate::sys::process::{WinSize, thread_count};

/// How a detached run's monitor holds the container: the log's rotation, docker's StdinOnce,
/// and the terminal's first size (the API client's `ConsoleSize`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonitorOptions {
    pub rotation: super::logs::Rotation,
    pub stdin_once: bool,
    pub console: Option<WinSize>,
}

/// `nook run -d`: forks the container's monitor (a new session, its output to the log) and
/// returns the container's id once the command runs, or the reason it could not start.
/// The monitor is `run` itself, in the forked process: it holds the container until it ends.
pub fn run_detached(
    host: &Host<'_>,
    req: RunRequest,
    options: MonitorOptions,
) -> Result<String, RunError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(RunError::Threads(threads));
    }
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("cannot create a pipe")(e.into()))?;
    match crate::sys::process::clone_fork(CloneFlags::empty())
        .map_err(io("cannot start the container's monitor"))?
    {
        None => {
            drop(ready_r);
            let mut ready = std::fs::File::from(ready_w);
            let code = match monitor(host, req, &mut ready, options) {
                Ok(code) => code,
                Err(e) => {
                    let message = error_chain(&e);
                    let exit = e.exit_code();
                    report::write(&mut ready, &Report::Failed { exit, message });
                    exit
                }
            };
            crate::sys::process::exit_now(code)
        }
        Some(_) => {
            drop(ready_w);
            // One line: the monitor keeps its end open while it holds the container.
            let silent = "the container's monitor ended before the container started";
            match report::read(std::fs::File::from(ready_r), silent) {
                Report::Started { id } => Ok(id),
                Report::Failed { message, exit } => Err(RunError::Setup { message, exit }),
                _ => Err(RunError::Protocol(
                    "the container's monitor sent another helper's report",
                )),
            }
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The monitor's side of `run -d`: a session of its own, standard input from /dev/null (with
/// `-i` and no terminal, from a pipe whose write end the monitor keeps), the container's
/// stdout and stderr through pipes, then the run.
fn monitor(
    host: &Host<'_>,
    mut req: RunRequest,
    ready: &mut std::fs::File,
    options: MonitorOptions,
) -> Result<i32, RunError> {
    let _ = nix::unistd::setsid();
    let pipe = |what: &'static str| {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(move |e| io(what)(e.into()))
    };
    let (tty, open) = (req.options.tty, req.options.stdin);
    let stdin = if open && !tty {
        let (r, w) = pipe("cannot create the input pipe")?;
        nix::unistd::dup2_stdin(&r).map_err(|e| io("cannot set up standard input")(e.into()))?;
        Some(w)
    } else {
        let null = std::fs::File::open("/dev/null").map_err(io("cannot open /dev/null"))?;
        nix::unistd::dup2_stdin(&null).map_err(|e| io("cannot set up standard input")(e.into()))?;
        None
    };
    let (out_r, out_w) = pipe("cannot create the output pipes")?;
    let (err_r, err_w) = pipe("cannot create the output pipes")?;
    nix::unistd::dup2_stdout(&out_w).map_err(|e| io("cannot redirect the output")(e.into()))?;
    nix::unistd::dup2_stderr(&err_w).map_err(|e| io("cannot redirect the output")(e.into()))?;
    drop((out_w, err_w));
    req.detach = Some(Detach {
        stdout: out_r,
        stderr: err_r,
        stdin,
        ready: ready
            .try_clone()
            .map_err(io("cannot keep the start pipe"))?,
        options,
        attach: tty || open,
    });
    run(host, req)
}

/// A detached container has started: its output goes to `container.log`, its attach socket
/// listens (with a terminal or open input), the `nook run -d` that waits is told, and this
/// monitor's own fds 0, 1 and 2 let go of the container's pipes.
pub(super) fn detached(
    d: Detach,
    dir: &Path,
    id: &str,
    (tty, open): (bool, bool),
) -> Result<super::supervise::Outputs, RunError> {
    let log = super::logs::LogWriter::create(&dir.join("container.log"), d.options.rotation)
        .map_err(io("cannot create the container's log"))?;
    let once = d.options.stdin_once;
    let attach = d
        .attach
        .then(|| super::attach::AttachPort::bind(dir, d.stdin, tty, open, once))
        .transpose()
        .map_err(io("cannot listen on the container's attach socket"))?;
    report::write(&d.ready, &Report::Started { id: id.to_owned() });
    drop(d.ready);
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    Ok(super::supervise::Outputs {
        stdout: d.stdout,
        stderr: d.stderr,
        log,
        attach,
    })
}
