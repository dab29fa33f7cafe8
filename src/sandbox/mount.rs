//! Mount operations: what the sandbox plan lists and the seam applies, and what a volume
//! turns into. Its own module so that `plan` (which holds volumes) and `volume` (which makes
//! mount operations) need not depend on each other.

use std::path::PathBuf;

use nix::mount::MsFlags;

/// A path inside the container and what should be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub dir: bool,
}

impl Target {
    pub fn dir(path: &str) -> Target {
        Target {
            path: path.to_owned(),
            dir: true,
        }
    }
    pub fn file(path: &str) -> Target {
        Target {
            path: path.to_owned(),
            dir: false,
        }
    }
}

/// One mount operation, applied in order below the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// A fresh filesystem (proc, tmpfs, devpts, mqueue, sysfs).
    Fs {
        fstype: &'static str,
        target: Target,
        flags: MsFlags,
        data: String,
    },
    /// A host path bound in; `flags` (MS_RDONLY, ...) are applied by a remount after.
    Bind {
        source: PathBuf,
        target: Target,
        recursive: bool,
        flags: MsFlags,
    },
    /// `/dev/NAME` from the host onto the new /dev.
    Device {
        name: &'static str,
    },
    /// A host device node (`--device`, CDI) bound onto `path` below the new /dev; the child
    /// refuses a source that is not a character or block device.
    HostDevice {
        source: PathBuf,
        path: String,
    },
    Symlink {
        path: String,
        points_to: String,
    },
    /// Hidden: a file gets /dev/null, a directory an empty read-only tmpfs. Absent: skipped.
    Mask {
        path: String,
    },
    /// Made read-only by a bind remount. Absent: skipped.
    ReadOnly {
        path: String,
    },
}
