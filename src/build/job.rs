//! Work on files that carry the container's owners, done where those owners can be read and
//! written: a forked child that is root in the store's user namespace (the subordinate range
//! with its helpers, or the user's own id alone). The builder stays outside any namespace and
//! single-threaded, so that it can go on cloning containers for the next RUN.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sys::idmap::{IdMap, Mapping};

/// Why the work in the store's namespace did not come back.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot start the work in the store's user namespace")]
    Start(#[source] std::io::Error),
    #[error("{0}")]
    Failed(String),
    #[error("the work in the store's user namespace ended without a result")]
    Lost,
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
            let result = mapping.map_or(Ok(()), enter).and_then(|()| f());
            let bytes = serde_json::to_vec(&result).unwrap_or_default();
            let mut out = std::fs::File::from(tx);
            let ok = out.write_all(&bytes).is_ok() && result.is_ok();
            crate::sys::process::exit_now(if ok { 0 } else { 1 })
        }
        Some(child) => {
            drop(tx);
            let bytes = read_all(rx);
            let _ = nix::sys::wait::waitpid(child, None);
            match serde_json::from_slice::<Result<T, String>>(&bytes) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(JobError::Failed(e)),
                Err(_) => Err(JobError::Lost),
            }
        }
    }
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut bytes);
    bytes
}

/// Becomes root of a user namespace that maps the store's ids (as `nook pull` writes them).
fn enter(mapping: &Mapping) -> Result<(), String> {
    let entered = match mapping {
        Mapping::Root => return Ok(()),
        Mapping::Range {
            helpers,
            uids,
            gids,
        } => crate::sys::userns::enter(uids, gids, Some(helpers)),
        Mapping::Single { uid, gid, .. } => {
            crate::sys::userns::enter(&IdMap::single(*uid), &IdMap::single(*gid), None)
        }
    };
    entered.map_err(|e| format!("cannot enter the store's user namespace: {e}"))
}
