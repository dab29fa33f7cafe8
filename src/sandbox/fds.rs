//! Descriptors beyond 0-2 that a foreground run passes to its command at the same numbers:
//! podman's `--preserve-fds N` (3 to 3+N-1) and `--preserve-fd FD[,FD...]`, and the socket
//! Slurm's PMI2 plugin names in `PMI_FD` when `-e` passes that variable on.
//!
//! nook marks every descriptor from 3 up close-on-exec before it starts anything, so that no
//! helper (newuidmap, pasta, squashfuse, a device hook) inherits one; the init clears the flag
//! on these alone just before it execs the command (under `--init` before the reaper forks it;
//! the reaper then closes its copies), and nook closes its own copies once the container
//! runs. Only the command holds them then: a PMI socket closes when the command ends, and
//! `srun` does not wait on nook or a helper for it.

use std::os::fd::RawFd;

/// The most descriptors `--preserve-fds` takes (each one is checked open).
pub const MAX_COUNT: u32 = 4096;

/// A descriptor that cannot be passed on.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error(
        "--preserve-fd {0}: 0, 1 and 2 are the container's standard streams already; name 3 or more"
    )]
    Stdio(RawFd),
    #[error("--preserve-fds {0}: at most {MAX_COUNT} descriptors")]
    TooMany(u32),
    #[error(
        "descriptor {0} (--preserve-fds/--preserve-fd) is not open in nook: open it for nook \
         (as `{0}<FILE` in a shell) or pass fewer"
    )]
    NotOpen(RawFd),
}

/// The descriptors the flags name, sorted, each once.
pub fn requested(count: Option<u32>, list: &[RawFd]) -> Result<Vec<RawFd>, FdError> {
    if let Some(&fd) = list.iter().find(|fd| **fd < 3) {
        return Err(FdError::Stdio(fd));
    }
    let n = count.unwrap_or(0);
    if n > MAX_COUNT {
        return Err(FdError::TooMany(n));
    }
    // n ≤ MAX_COUNT, so the range stays far below RawFd's limit.
    let mut fds: Vec<RawFd> = (3..3 + n as RawFd).chain(list.iter().copied()).collect();
    fds.sort_unstable();
    fds.dedup();
    Ok(fds)
}

/// Refuses a descriptor that nook did not inherit open (nook's own are close-on-exec).
pub fn check_inherited(fds: &[RawFd]) -> Result<(), FdError> {
    match fds.iter().find(|fd| !crate::sys::process::inherited(**fd)) {
        Some(&fd) => Err(FdError::NotOpen(fd)),
        None => Ok(()),
    }
}

/// `PMI_FD`'s descriptor when the command's environment passes nook's own `PMI_FD` on
/// unchanged (`-e PMI_FD`, `-e 'PMI_*'`): Slurm's `srun --mpi=pmi2` hands each task that
/// socket, and a PMI2 client in the container expects it open, as under Apptainer.
pub fn pmi_fd(env: &[(String, String)], host: Option<&str>) -> Option<RawFd> {
    let (_, value) = env.iter().find(|(k, _)| k == "PMI_FD")?;
    if Some(value.as_str()) != host {
        return None;
    }
    value.parse().ok().filter(|fd| *fd >= 3)
}

/// Adds `PMI_FD`'s descriptor to `keep` where [`pmi_fd`] names an inherited one (with a
/// warning where it names none), then, where there are any to keep, marks every descriptor
/// from 3 up close-on-exec: the init opens `keep` again for the command alone. (With none,
/// a plain `nook run` makes no call here: the init closes nook's descriptors before the exec.)
pub fn settle(keep: &mut Vec<RawFd>, env: &[(String, String)]) -> std::io::Result<()> {
    let host = std::env::var("PMI_FD").ok();
    if let Some(fd) = pmi_fd(env, host.as_deref()).filter(|fd| !keep.contains(fd)) {
        if crate::sys::process::inherited(fd) {
            keep.push(fd);
        } else {
            eprintln!("warning: PMI_FD={fd} names no descriptor nook inherited: not passed on");
        }
    }
    if keep.is_empty() {
        return Ok(());
    }
    crate::sys::process::cloexec_from(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_give_sorted_unique_descriptors() {
        assert_eq!(requested(None, &[]).unwrap(), Vec::<RawFd>::new());
        assert_eq!(requested(Some(2), &[]).unwrap(), vec![3, 4]);
        assert_eq!(requested(Some(2), &[9, 4, 7]).unwrap(), vec![3, 4, 7, 9]);
        assert!(matches!(requested(None, &[5, 2]), Err(FdError::Stdio(2))));
        assert!(matches!(requested(None, &[-1]), Err(FdError::Stdio(-1))));
        assert!(matches!(
            requested(Some(MAX_COUNT + 1), &[]),
            Err(FdError::TooMany(_))
        ));
    }

    #[test]
    fn pmi_fd_only_when_nook_s_own_value_passes() {
        let env = |v: &str| vec![("PMI_FD".to_owned(), v.to_owned())];
        assert_eq!(pmi_fd(&env("5"), Some("5")), Some(5));
        // Set by -e PMI_FD=7 or the image, not taken from Slurm's environment.
        assert_eq!(pmi_fd(&env("7"), Some("5")), None);
        assert_eq!(pmi_fd(&env("5"), None), None);
        assert_eq!(pmi_fd(&env("1"), Some("1")), None);
        assert_eq!(pmi_fd(&env("x"), Some("x")), None);
        assert_eq!(pmi_fd(&[], Some("5")), None);
    }

    #[test]
    fn a_closed_descriptor_is_refused() {
        assert!(matches!(
            check_inherited(&[1_000_000]),
            Err(FdError::NotOpen(1_000_000))
        ));
    }
}
