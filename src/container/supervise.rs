//! The foreground side of a running container: forwarding signals, copying a terminal, and
//! waiting for the init to end.
//!
//! Signals are blocked before `clone` and read from a signalfd, so none is lost between
//! starting the container and waiting for it; SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
//! SIGUSR2 go to the container's init; SIGWINCH resizes its terminal.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys::process::{set_window_size, window_size};

/// Signals nook passes on to the container.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals blocked before `clone`, and the descriptor that reads them.
pub struct Signals {
    fd: SignalFd,
    old: SigSet,
}

impl Signals {
    /// Blocks the forwarded signals, SIGWINCH and SIGCHLD, and opens a signalfd for them.
    pub fn block() -> io::Result<Signals> {
        let mut set = SigSet::empty();
        for s in FORWARDED.iter().chain(&[Signal::SIGWINCH, Signal::SIGCHLD]) {
            set.add(*s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            Some(&mut old),
        )?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Signals { fd, old })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.old),
            None,
        );
    }
}

/// Puts the terminal on standard input in raw mode until dropped.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, s);
        }
    }
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// A detached container's output: its stdout and stderr pipes, and the log they go to; its
/// attach socket (input and resizes) when it has a terminal or open input.
pub struct Outputs {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub log: super::logs::LogWriter,
    pub attach: Option<super::attach::AttachPort>,
}

/// Waits for `pid`, forwarding signals and, with `pty`, copying the terminal both ways (or,
/// detached, copying its output to the log); returns the exit status docker would give.
pub fn supervise(
    pid: Pid,
    signals: &Signals,
    pty: Option<OwnedFd>,
    stdin_open: bool,
    mut outputs: Option<Outputs>,
) -> io::Result<i32> {
    if let Some(o) = &mut outputs {
        return supervise_detached(pid, signals, pty, o);
    }
    let _raw = pty.as_ref().map(|_| RawMode::enter());
    if let Some(m) = &pty {
        let flags = nix::fcntl::fcntl(m, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(m, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    }
    let mut stdin_live = pty.is_some() && stdin_open;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let stdin = io::stdin();
        let mut fds = vec![PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &pty {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_live {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        let Some(ready) = wait_ready(fds)? else {
            continue;
        };
        if let (Some(m), Some(true)) = (&pty, ready.get(1)) {
            pump_out(m.as_fd(), &mut buf);
        }
        if let (Some(m), Some(true)) = (&pty, ready.get(2)) {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_live = false,
                Ok(n) => write_all_fd(m.as_fd(), &buf[..n]),
            }
        }
        if ready[0] {
            let resize = || {
                if let (Some(m), Some(size)) = (&pty, window_size(io::stdin().as_fd())) {
                    let _ = set_window_size(m.as_fd(), size);
                }
            };
            if let Some(code) = handle_signals(pid, signals, resize) {
                if let Some(m) = &pty {
                    pump_out(m.as_fd(), &mut buf);
                }
                return Ok(code);
            }
        }
    }
}

/// Reads the pending signals: forwards them to `pid`, calls `resize` on SIGWINCH, and returns
/// `pid`'s exit status once it has ended.
fn handle_signals(pid: Pid, signals: &Signals, resize: impl Fn()) -> Option<i32> {
    while let Ok(Some(info)) = signals.fd.read_signal() {
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        match sig {
            Signal::SIGCHLD => {
                if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG))
                    && let Some(code) = exit_code(status)
                {
                    return Some(code);
                }
            }
            Signal::SIGWINCH => resize(),
            s => {
                let _ = kill(pid, s);
            }
        }
    }
    None
}

/// The detached loop: output (the terminal's, or the two pipes) to the log, signals to the
/// init, until it exits.
fn supervise_detached(
    pid: Pid,
    signals: &Signals,
    pty: Option<OwnedFd>,
    o: &mut Outputs,
) -> io::Result<i32> {
    let mut buf = vec![0u8; 32 << 10];
    let sources: Vec<(BorrowedFd<'_>, usize)> = match &pty {
        Some(m) => vec![(m.as_fd(), 0)],
        None => vec![(o.stdout.as_fd(), 0), (o.stderr.as_fd(), 1)],
    };
    for (fd, _) in &sources {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    }
    let mut open: Vec<bool> = vec![true; sources.len()];
    let master = pty.as_ref().map(|m| m.as_fd());
    loop {
        let mut fds = vec![PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        let live: Vec<usize> = (0..sources.len()).filter(|i| open[*i]).collect();
        for i in &live {
            fds.push(PollFd::new(sources[*i].0, PollFlags::POLLIN));
        }
        if let Some(a) = &o.attach {
            fds.extend(
                a.interests(master)
                    .into_iter()
                    .map(|(fd, f)| PollFd::new(fd, f)),
            );
        }
        let Some(ready) = wait_ready(fds)? else {
            continue;
        };
        for (k, i) in live.iter().enumerate() {
            if ready[k + 1] && !drain(sources[*i], &mut buf, &mut o.log) {
                open[*i] = false;
            }
        }
        if let Some(a) = &mut o.attach {
            a.ready(&ready[live.len() + 1..], master);
        }
        if ready[0]
            && let Some(code) = handle_signals(pid, signals, || {})
        {
            for s in &sources {
                drain(*s, &mut buf, &mut o.log);
            }
            o.log.flush();
            return Ok(code);
        }
    }
}

/// Polls `fds`; which of them are ready, or `None` when interrupted.
fn wait_ready(mut fds: Vec<PollFd<'_>>) -> io::Result<Option<Vec<bool>>> {
    match poll(&mut fds, PollTimeout::NONE) {
        Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(Some(
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
        )),
    }
}

/// Copies what `fd` has now into the log; false at end-of-file.
fn drain(
    (fd, stream): (BorrowedFd<'_>, usize),
    buf: &mut [u8],
    log: &mut super::logs::LogWriter,
) -> bool {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return false,
            Ok(n) => log.write(stream, &buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            // EIO: the terminal's last holder closed it.
            Err(_) => return false,
        }
    }
}

/// Copies what the container wrote to its terminal to our standard output.
fn pump_out(master: BorrowedFd<'_>, buf: &mut [u8]) {
    let mut out = io::stdout().lock();
    loop {
        match nix::unistd::read(master, buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
            }
        }
    }
    let _ = out.flush();
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(_) => return,
        }
    }
}
