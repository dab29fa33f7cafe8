//! Choosing and assembling the container's root: the kernel's overlayfs in the user
//! namespace, nook's FUSE overlay (its own issue), or a private copy of the layers.
//!
//! The ladder (DESIGN.md): overlay when the kernel allows it in a user namespace and the store
//! is on a filesystem that can hold an upper layer; otherwise the next rung. Whether the
//! kernel allows it is probed by the first run that tries and cached per kernel release in
//! the runtime directory, so later runs pay nothing.

mod copy;
mod overlay;

use std::path::{Path, PathBuf};

pub use copy::copy_layers;
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
