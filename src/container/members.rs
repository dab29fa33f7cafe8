//! `--pid host`: a container without a pid namespace of its own. The kernel ends every process
//! of a pid namespace when its pid 1 ends, so a container normally ends with its init; in the
//! host's pid namespace nothing does that, and docker (`--pid host`) leaves the main process's
//! orphans to the host. nook keeps its usual contract instead: when the container's init ends
//! (its command exits, `nook stop`, `nook kill`, `nook rm -f`), the nook that holds the
//! container (the foreground `nook run` or the detached monitor) ends every process left in
//! the container's user namespace: the command's orphans, daemons it started, `nook exec`
//! processes. The user namespace is the container's identity here because every process nook
//! starts in the container is in it, and none of the user's other processes are (a cgroup
//! would need a delegated subtree, which many hosts lack). A process that made a user
//! namespace of its own inside the container is not found this way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The processes of one container, known by its user namespace (device and inode of the
/// namespace file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Members {
    ns: (u64, u64),
}

/// How many times the processes found are killed before nook gives up on ones that keep
/// forking faster than they die.
const ROUNDS: usize = 200;

impl Members {
    /// The processes in the user namespace of `pid` (read while `pid` lives), from `proc`.
    pub fn of(proc: &Path, pid: Pid) -> std::io::Result<Members> {
        let m = std::fs::metadata(proc.join(pid.as_raw().to_string()).join("ns/user"))?;
        Ok(Members {
            ns: (m.dev(), m.ino()),
        })
    }

    /// The pids in `proc` whose user namespace is this one (a process that ends while it is
    /// looked at is skipped).
    pub fn scan(&self, proc: &Path) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir(proc) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let ns: PathBuf = proc.join(pid.to_string()).join("ns/user");
                std::fs::metadata(ns).is_ok_and(|m| (m.dev(), m.ino()) == self.ns)
            })
            .collect()
    }

    /// Kills every process left in the container, again until none is found; returns how many
    /// were killed. Zombies have no namespaces and are not found. The caller is spared: the
    /// nook serving a FUSE root joined the container's user namespace to serve it.
    pub fn end_all(&self, proc: &Path) -> usize {
        let me = std::process::id() as i32;
        let mut killed = std::collections::BTreeSet::new();
        for _ in 0..ROUNDS {
            let mut left = self.scan(proc);
            left.retain(|p| *p != me);
            if left.is_empty() {
                break;
            }
            for pid in left {
                if self.kill(proc, pid) {
                    killed.insert(pid);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        killed.len()
    }
}

impl Members {
    /// SIGKILL to `pid` if it is still in the container: through a pidfd opened before the
    /// namespace is checked again, so that a pid the kernel gave to another process after the
    /// scan is never signalled (kill by number where the kernel has no pidfd).
    fn kill(&self, proc: &Path, pid: i32) -> bool {
        let ours = || {
            std::fs::metadata(proc.join(pid.to_string()).join("ns/user"))
                .is_ok_and(|m| (m.dev(), m.ino()) == self.ns)
        };
        match crate::sys::process::pidfd_open(pid) {
            Ok(fd) => {
                ours()
                    && crate::sys::process::pidfd_kill(
                        std::os::fd::AsFd::as_fd(&fd),
                        Signal::SIGKILL,
                    )
                    .is_ok()
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                ours() && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_this_process_in_its_own_user_namespace() {
        let proc = Path::new("/proc");
        let me = nix::unistd::getpid();
        let m = Members::of(proc, me).unwrap();
        assert!(m.scan(proc).contains(&me.as_raw()));
        let other = Members { ns: (0, 0) };
        assert!(other.scan(proc).is_empty());
        assert!(Members::of(Path::new("/nonexistent"), me).is_err());
    }
}
