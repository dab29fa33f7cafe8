//! Moving the current process into a new user namespace with a chosen id mapping.
//!
//! Store work in range mode (unpacking files owned by image uids, removing them again) runs as
//! root of a user namespace that maps the user's subordinate range, as podman's does. Writing a
//! multi-id map needs the setuid helpers newuidmap/newgidmap, run from outside the namespace:
//! nook forks a small helper before `unshare`, the helper waits until the parent has unshared,
//! then maps it. The caller must still be single-threaded (ARCHITECTURE.md, process model:
//! no fork after threads).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Command;

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, getpid, pipe};

use super::idmap::{Helpers, IdMap};

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

/// Writes single-line maps for the current process (allowed without privileges when the only
/// id mapped is our own, after setgroups is denied).
fn write_own_maps(uids: &IdMap, gids: &IdMap) -> Result<(), UserNsError> {
    let write = |file: &'static str, text: &str| {
        fs::write(format!("/proc/self/{file}"), text)
            .map_err(|source| UserNsError::WriteMap { file, source })
    };
    write("setgroups", "deny")?;
    write("uid_map", &uids.proc_text())?;
    write("gid_map", &gids.proc_text())
}

fn enter_with_helpers(uids: &IdMap, gids: &IdMap, helpers: &Helpers) -> Result<(), UserNsError> {
    let parent = getpid();
    let (go_read, go_write) = pipe().map_err(UserNsError::Fork)?;
    let uid_args = uids.helper_args();
    let gid_args = gids.helper_args();
    // SAFETY: the caller guarantees this process is single-threaded (see module docs), so the
    // child may allocate and spawn processes; it leaves only through `_exit`.
    match unsafe { fork() }.map_err(UserNsError::Fork)? {
        ForkResult::Child => {
            drop(go_write);
            let code = helper_child(go_read, parent.as_raw(), helpers, &uid_args, &gid_args);
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
fn helper_child(
    go: OwnedFd,
    parent: i32,
    helpers: &Helpers,
    uid_args: &[String],
    gid_args: &[String],
) -> i32 {
    let mut byte = [0u8; 1];
    if !matches!(fs::File::from(go).read(&mut byte), Ok(1)) {
        return 3;
    }
    let run = |tool: &std::path::Path, args: &[String]| {
        Command::new(tool)
            .arg(parent.to_string())
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&helpers.newuidmap, uid_args) {
        return 1;
    }
    if !run(&helpers.newgidmap, gid_args) {
        return 2;
    }
    0
}
