//! `--memory`, `--cpus`, `--pids-limit` through a delegated cgroup v2 subtree.
//!
//! They apply only where the user's own cgroup is on the unified (v2) hierarchy and
//! delegated to them (systemd's user delegation); elsewhere — cgroup v1, hybrid hierarchies
//! without a v2 root, no delegation — the flags fail with a clear error instead of being
//! ignored.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// Requested limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// Why limits cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--memory, --cpus and --pids-limit need a delegated cgroup v2 subtree, and this host has none: {0}"
)]
pub struct CgroupError(pub String);

/// The user's own cgroup directory, if it is on cgroup v2 and writable by them.
pub fn delegated_dir() -> Result<PathBuf, CgroupError> {
    let root = Path::new("/sys/fs/cgroup");
    let magic = nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type().0)
        .unwrap_or(0);
    if magic != CGROUP2_MAGIC {
        return Err(CgroupError("/sys/fs/cgroup is cgroup v1 or a hybrid hierarchy (boot with systemd.unified_cgroup_hierarchy=1)".into()));
    }
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| CgroupError("this process is in no cgroup v2 group".into()))?;
    let dir = root.join(rel.trim_start_matches('/'));
    let writable = nix::unistd::access(&dir.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK)
        .is_ok()
        && nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok();
    if !writable {
        return Err(CgroupError(format!(
            "{} is not delegated to you (run under systemd --user, or ask for Delegate=yes)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Creates `nook-<id>` below the delegated cgroup, writes the limits and moves `pid` in.
pub fn apply(id: &str, limits: &Limits, pid: Pid) -> Result<PathBuf, CgroupError> {
    let parent = delegated_dir()?;
    let controllers = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let mut wanted = Vec::new();
    for (needed, set) in [
        ("memory", limits.memory.is_some()),
        ("cpu", limits.cpus.is_some()),
        ("pids", limits.pids.is_some()),
    ] {
        if set && !controllers.split_whitespace().any(|c| c == needed) {
            return Err(CgroupError(format!(
                "the {needed} controller is not delegated to {}",
                parent.display()
            )));
        }
        if set {
            wanted.push(format!("+{needed}"));
        }
    }
    let fail = |what: &str, e: std::io::Error| CgroupError(format!("{what}: {e}"));
    fs::write(parent.join("cgroup.subtree_control"), wanted.join(" "))
        .map_err(|e| fail("cannot enable controllers", e))?;
    let dir = parent.join(format!("nook-{}", &id[..12.min(id.len())]));
    fs::create_dir_all(&dir).map_err(|e| fail("cannot create the container's cgroup", e))?;
    if let Some(m) = limits.memory {
        fs::write(dir.join("memory.max"), m.to_string()).map_err(|e| fail("memory.max", e))?;
    }
    if let Some(c) = limits.cpus {
        fs::write(
            dir.join("cpu.max"),
            format!("{} 100000", (c * 100_000.0) as u64),
        )
        .map_err(|e| fail("cpu.max", e))?;
    }
    if let Some(p) = limits.pids {
        fs::write(dir.join("pids.max"), p.to_string()).map_err(|e| fail("pids.max", e))?;
    }
    fs::write(dir.join("cgroup.procs"), pid.as_raw().to_string())
        .map_err(|e| fail("cannot move the container into its cgroup", e))?;
    Ok(dir)
}

/// Why a container cannot be paused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pause and unpause need the cgroup v2 freezer of a container cgroup: {0}")]
pub struct FreezeError(pub String);

/// Freezes (or thaws) the container's cgroup: `cgroup.freeze` of `nook-<id>`.
pub fn freeze(id: &str, on: bool) -> Result<(), FreezeError> {
    let parent = delegated_dir().map_err(|e| FreezeError(e.0))?;
    let dir = parent.join(format!("nook-{}", &id[..12.min(id.len())]));
    if !dir.is_dir() {
        return Err(FreezeError(
            "this container has no cgroup of its own (nook makes one when it runs with --memory, --cpus or --pids-limit)".into(),
        ));
    }
    fs::write(dir.join("cgroup.freeze"), if on { "1" } else { "0" })
        .map_err(|e| FreezeError(format!("cannot write cgroup.freeze: {e}")))
}

/// Parses docker's memory sizes (`512m`, `1g`, `1048576`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'b' => (&s[..s.len() - 1], 1),
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn this_host_says_why_not() {
        // CI machines here run a hybrid v1/v2 hierarchy without delegation; a delegated host
        // passes. Either way the answer must be a reason or a directory, never a panic.
        match delegated_dir() {
            Ok(d) => assert!(d.starts_with("/sys/fs/cgroup")),
            Err(e) => assert!(e.to_string().contains("delegated cgroup v2")),
        }
    }
}
