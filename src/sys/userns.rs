//! Moving the current process into a new user namespace with a chosen id mapping.
//!
//! Store work in range mode (unpacking files owned by image uids, removing them again) runs as
//! root of a user namespace that maps the user's subordinate range, as podman's does. Writing a
//! multi-id map needs the setuid helpers newuidmap/newgidmap, run from outside the namespace:
//! nook forks a small helper before `unshare`, the helper waits until the parent has unshared,
//! then maps it. The caller must still be single-threaded (ARCHITECTURE.md, process model:
//! no fork after threads).
//!
//! This module is the one writer of id maps: the store's namespace ([`enter`]), a container's
//! init ([`map_child`]) and the overlay probe ([`write_direct`]) all write through it.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, getpid, pipe};

use super::idmap::{Helpers, IdMap, Mapping};

/// Why the user namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error(
        "cannot create a user namespace: check 'sysctl user.max_user_namespaces' and AppArmor's kernel.apparmor_restrict_unprivileged_userns (see 'nook info')"
    )]
    Unshare(#[source] nix::Error),
    #[error("cannot start the id-mapping helper")]
    Fork(#[source] nix::Error),
    #[error("{tool} failed ({status}): check your /etc/subuid and /etc/subgid entries")]
    Helper { tool: &'static str, status: String },
    #[error("cannot write {file}")]
    WriteMap {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} could not map the container's ids: {message}")]
    Refused { tool: &'static str, message: String },
}

/// Enters a new user namespace in which `uids`/`gids` are mapped, using the helpers for a
/// multi-id map or writing a single-id map directly.
pub fn enter(uids: &IdMap, gids: &IdMap, helpers: Option<&Helpers>) -> Result<(), UserNsError> {
    match helpers {
        Some(h) => enter_with_helpers(uids, gids, h),
        None => {
            unshare(CloneFlags::CLONE_NEWUSER).map_err(UserNsError::Unshare)?;
            write_own_maps(uids, gids)
        }
    }
}

/// Makes the calling (single-threaded) process root of a user namespace that maps the
/// store's ids: the subordinate range through its helpers, or the user's own id alone.
pub fn enter_store(mapping: &Mapping) -> Result<(), UserNsError> {
    match mapping {
        Mapping::Root => Ok(()),
        Mapping::Range {
            helpers,
            uids,
            gids,
        } => enter(uids, gids, Some(helpers)),
        Mapping::Single { uid, gid, .. } => enter(&IdMap::single(*uid), &IdMap::single(*gid), None),
    }
}

/// Writes single-line maps for the current process (allowed without privileges when the only
/// id mapped is our own, after setgroups is denied).
fn write_own_maps(uids: &IdMap, gids: &IdMap) -> Result<(), UserNsError> {
    write_direct(Path::new("/proc/self"), true, uids, gids)
}

/// Writes the maps of the process whose /proc directory is `proc` straight to the kernel:
/// the caller's own id only, or anything for real root (who need not deny setgroups).
pub fn write_direct(
    proc: &Path,
    deny_setgroups: bool,
    uids: &IdMap,
    gids: &IdMap,
) -> Result<(), UserNsError> {
    let write = |file: &'static str, text: &str| {
        fs::write(proc.join(file), text).map_err(|source| UserNsError::WriteMap { file, source })
    };
    if deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("uid_map", &uids.proc_text())?;
    write("gid_map", &gids.proc_text())
}

/// newuidmap or newgidmap, to map `pid` as `map` says.
fn helper_command(tool: &Path, pid: i32, map: &IdMap) -> Command {
    let mut c = Command::new(tool);
    c.arg(pid.to_string()).args(map.helper_args());
    c
}

/// Writes the id maps of the child `pid` (in a new user namespace): through
/// newuidmap/newgidmap, run side by side, for a subordinate range; directly otherwise.
/// `meanwhile` runs while the helpers do; its error is returned after theirs.
pub fn map_child<E: From<UserNsError>>(
    mapping: &Mapping,
    pid: i32,
    uids: &IdMap,
    gids: &IdMap,
    meanwhile: &mut dyn FnMut() -> Result<(), E>,
) -> Result<(), E> {
    let Mapping::Range { helpers, .. } = mapping else {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        write_direct(&proc, !matches!(mapping, Mapping::Root), uids, gids)?;
        return meanwhile();
    };
    let spawn = |tool: &'static str, path: &Path, m: &IdMap| {
        helper_command(path, pid, m)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| UserNsError::Spawn { tool, source })
    };
    let u = spawn("newuidmap", &helpers.newuidmap, uids)?;
    let g = spawn("newgidmap", &helpers.newgidmap, gids)?;
    let prepared = meanwhile();
    for (tool, child) in [("newuidmap", u), ("newgidmap", g)] {
        let out = child
            .wait_with_output()
            .map_err(|source| UserNsError::Spawn { tool, source })?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(UserNsError::Refused {
                tool,
                message: format!("{message} (check /etc/subuid and /etc/subgid)"),
            }
            .into());
        }
    }
    prepared
}

fn enter_with_helpers(uids: &IdMap, gids: &IdMap, helpers: &Helpers) -> Result<(), UserNsError> {
    let parent = getpid();
    let (go_read, go_write) = pipe().map_err(UserNsError::Fork)?;
    // SAFETY: the caller guarantees this process is single-threaded (see module docs), so the
    // child may allocate and spawn processes; it leaves only through `_exit`.
    match unsafe { fork() }.map_err(UserNsError::Fork)? {
        ForkResult::Child => {
            drop(go_write);
            let code = helper_child(go_read, parent.as_raw(), helpers, uids, gids);
            // SAFETY: `_exit` ends the forked child without running the parent's destructors
            // or atexit handlers twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            let unshared = unshare(CloneFlags::CLONE_NEWUSER);
            let mut go = fs::File::from(go_write);
            if unshared.is_ok() {
                // A failed write means the helper died; its status says why below.
                let _ = go.write_all(b"1");
            }
            drop(go);
            let status = waitpid(child, None);
            unshared.map_err(UserNsError::Unshare)?;
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(WaitStatus::Exited(_, 2)) => Err(UserNsError::Helper {
                    tool: "newgidmap",
                    status: "see its message above".into(),
                }),
                Ok(other) => Err(UserNsError::Helper {
                    tool: "newuidmap",
                    status: format!("{other:?}"),
                }),
                Err(e) => Err(UserNsError::Helper {
                    tool: "newuidmap",
                    status: e.to_string(),
                }),
            }
        }
    }
}

/// The helper: wait for the parent to unshare, then map it. Exit 0 on success, 1 if newuidmap
/// failed, 2 if newgidmap failed, 3 if the parent gave up.
fn helper_child(go: OwnedFd, parent: i32, helpers: &Helpers, uids: &IdMap, gids: &IdMap) -> i32 {
    let mut byte = [0u8; 1];
    if !matches!(fs::File::from(go).read(&mut byte), Ok(1)) {
        return 3;
    }
    let run = |tool: &Path, map: &IdMap| {
        helper_command(tool, parent, map)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&helpers.newuidmap, uids) {
        return 1;
    }
    if !run(&helpers.newgidmap, gids) {
        return 2;
    }
    0
}
