//! Choosing and assembling the container's root: the kernel's overlayfs in the user
//! namespace, nook's FUSE overlay (its own issue), or a private copy of the layers.
//!
//! The ladder (ARCHITECTURE.md): overlay when the kernel allows it in a user namespace and
//! the store is on a filesystem that can hold an upper layer; otherwise the next rung. Whether the
//! kernel allows it is probed by the first run that tries and cached per kernel release in
//! the runtime directory, so later runs pay nothing.

pub mod copy;
pub mod ladder;
pub mod overlay;
pub mod squash;

use std::path::{Path, PathBuf};

use crate::sys::idmap::IdMap;

pub use copy::copy_layers;
pub use ladder::{Choice, Inputs, Rung, choose};
pub use overlay::{mount_overlay, overlay_options};

/// Filesystems the kernel overlay cannot keep an upper layer on.
const NO_UPPER: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x1983_0326, "BeeGFS"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9P"),
];

/// The network or cluster filesystem `path` is on, if it is one overlay cannot use.
pub fn unsuitable_fs(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    let magic = st.filesystem_type().0 as i64;
    NO_UPPER.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// What a run found out about the kernel overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayProbe {
    Works,
    Refused(String),
}

fn probe_path(runtime: &Path) -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    runtime.join(format!("overlay-probe-{release}"))
}

/// The cached answer, if a run has found it on this kernel.
pub fn cached_probe(runtime: &Path) -> Option<OverlayProbe> {
    let text = std::fs::read_to_string(probe_path(runtime)).ok()?;
    match text.split_once(':') {
        Some(("ok", _)) => Some(OverlayProbe::Works),
        Some(("refused", why)) => Some(OverlayProbe::Refused(why.trim().to_owned())),
        _ => None,
    }
}

/// Records what a run found (best effort: a missing cache only costs a retry).
pub fn record_probe(runtime: &Path, p: &OverlayProbe) {
    let text = match p {
        OverlayProbe::Works => "ok:\n".to_owned(),
        OverlayProbe::Refused(why) => format!("refused: {why}\n"),
    };
    let _ = std::fs::write(probe_path(runtime), text);
}

/// Mounts a FUSE filesystem on `target` from inside the container's user namespace and
/// returns the connection for nook's server. `allow_other` lets every user of the namespace in;
/// `default_permissions` has the kernel check modes against the attributes nook reports.
pub fn mount_fuse(target: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let fd = nix::fcntl::open(
        "/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let data = format!(
        "fd={},rootmode=40000,user_id={},group_id={},allow_other,default_permissions",
        fd.as_raw_fd(),
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    nix::mount::mount(
        Some("nook"),
        target,
        Some("fuse.nook"),
        flags,
        Some(data.as_str()),
    )?;
    Ok(fd)
}

/// Whether this user can open /dev/fuse for the FUSE rung.
pub fn fuse_usable() -> bool {
    nix::unistd::access(
        "/dev/fuse",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok()
}

/// Tries the kernel overlay in a throwaway user and mount namespace, on directories below
/// `scratch`, and records the answer for later runs.
pub fn probe_overlay(scratch: &Path, runtime: &Path) -> OverlayProbe {
    let result = try_overlay(scratch);
    let _ = std::fs::remove_dir_all(scratch);
    record_probe(runtime, &result);
    result
}

fn try_overlay(scratch: &Path) -> OverlayProbe {
    use std::io::{Read, Write};
    let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.join(d));
    for d in &dirs {
        if let Err(e) = std::fs::create_dir_all(d) {
            return OverlayProbe::Refused(format!("cannot create {}: {e}", d.display()));
        }
    }
    let Ok((go_r, go_w)) = nix::unistd::pipe() else {
        return OverlayProbe::Refused("no pipe".into());
    };
    let Ok((res_r, res_w)) = nix::unistd::pipe() else {
        return OverlayProbe::Refused("no pipe".into());
    };
    let flags = nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS;
    match crate::sys::process::clone_fork(flags) {
        Err(e) => OverlayProbe::Refused(format!("no user namespace: {e}")),
        Ok(None) => {
            drop(go_w);
            drop(res_r);
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(go_r).read(&mut b);
            let lowers = vec![dirs[0].display().to_string()];
            let msg = match overlay::mount_overlay(scratch, &lowers, &dirs[1], &dirs[2], &dirs[3]) {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            let _ = std::fs::File::from(res_w).write_all(msg.as_bytes());
            crate::sys::process::exit_now(0)
        }
        Ok(Some(pid)) => {
            drop(go_r);
            drop(res_w);
            let (uid, gid) = (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            let proc = PathBuf::from(format!("/proc/{}", pid.as_raw()));
            let (uids, gids) = (IdMap::single(uid), IdMap::single(gid));
            // A failed write shows as the mount's refusal below.
            let _ = crate::sys::userns::write_direct(&proc, true, &uids, &gids);
            drop(go_w);
            let mut msg = String::new();
            let _ = std::fs::File::from(res_r).read_to_string(&mut msg);
            let _ = nix::sys::wait::waitpid(pid, None);
            if msg.is_empty() {
                OverlayProbe::Works
            } else {
                OverlayProbe::Refused(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_cache_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(cached_probe(d.path()), None);
        record_probe(d.path(), &OverlayProbe::Refused("EPERM".into()));
        assert_eq!(
            cached_probe(d.path()),
            Some(OverlayProbe::Refused("EPERM".into()))
        );
        record_probe(d.path(), &OverlayProbe::Works);
        assert_eq!(cached_probe(d.path()), Some(OverlayProbe::Works));
    }

    #[test]
    fn local_disks_are_suitable() {
        assert_eq!(unsuitable_fs(Path::new("/")), None);
    }
}
