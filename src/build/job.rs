//! Work on files that carry the container's owners, done where those owners can be read and
//! written: a forked child that is root in the store's user namespace (the subordinate range
//! with its helpers, or the user's own id alone). The builder stays outside any namespace and
//! single-threaded, so that it can go on cloning containers for the next RUN.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sys::idmap::Mapping;

/// Why the work in the store's namespace did not come back.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot start the work in the store's user namespace")]
    Start(#[source] std::io::Error),
    #[error("{0}")]
    Failed(String),
    #[error("the work in the store's user namespace ended without a result")]
    Lost,
    #[error("the build was interrupted")]
    Interrupted,
}

/// Runs `f` in a forked child that is root in the store's user namespace and returns its
/// result. The caller must be single-threaded.
pub fn in_store<T, F>(mapping: &Mapping, f: F) -> Result<T, JobError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    forked(Some(mapping), f)
}

/// Runs `f` in a forked child and returns its result: for work that changes the process
/// for good (a container run on the FUSE rung joins the container's user namespace and
/// starts the server's threads), so that the builder stays as it was.
pub fn in_child<T, F>(f: F) -> Result<T, JobError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    forked(None, f)
}

fn forked<T, F>(mapping: Option<&Mapping>, f: F) -> Result<T, JobError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    let (rx, tx) = nix::unistd::pipe().map_err(|e| JobError::Start(e.into()))?;
    match crate::sys::process::clone_fork(nix::sched::CloneFlags::empty())
        .map_err(JobError::Start)?
    {
        None => {
            drop(rx);
            // A panic must end this child here: unwinding into the builder's frames would run
            // its destructors (locks, temporary files) in the wrong process.
            let run =
                std::panic::AssertUnwindSafe(|| mapping.map_or(Ok(()), enter).and_then(|()| f()));
            let result = match std::panic::catch_unwind(run) {
                Ok(r) => r,
                Err(_) => crate::sys::process::exit_now(101),
            };
            let bytes = serde_json::to_vec(&result).unwrap_or_default();
            let mut out = std::fs::File::from(tx);
            let ok = out.write_all(&bytes).is_ok() && result.is_ok();
            crate::sys::process::exit_now(if ok { 0 } else { 1 })
        }
        Some(child) => {
            drop(tx);
            let (bytes, interrupted) = read_all(rx, child);
            let _ = nix::sys::wait::waitpid(child, None);
            if interrupted {
                return Err(JobError::Interrupted);
            }
            match serde_json::from_slice::<Result<T, String>>(&bytes) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(JobError::Failed(e)),
                Err(_) => Err(JobError::Lost),
            }
        }
    }
}

/// Reads the child's result to its end; an interrupt or termination that reaches the
/// builder meanwhile (`kill PID` from a CI cancel, not only Ctrl-C to the whole group) is
/// passed on to the child, which passes it to the step's container.
fn read_all(fd: OwnedFd, child: nix::unistd::Pid) -> (Vec<u8>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    // Only signals the builder blocks (all three, for a build) come through here.
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let mut interrupted = false;
    loop {
        if let Some(sfd) = &signals {
            let mut fds = [
                PollFd::new(file.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            if let Ok(Some(info)) = sfd.read_signal()
                && let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
            {
                let _ = nix::sys::signal::kill(child, sig);
                interrupted = true;
            }
            if !fds[0].any().unwrap_or(false) {
                continue;
            }
        }
        match file.read(&mut buf) {
            Ok(0) => return (bytes, interrupted),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (bytes, interrupted),
        }
    }
}

/// Becomes root of a user namespace that maps the store's ids (as `nook pull` writes them).
fn enter(mapping: &Mapping) -> Result<(), String> {
    crate::sys::userns::enter_store(mapping)
        .map_err(|e| format!("cannot enter the store's user namespace: {e}"))
}
