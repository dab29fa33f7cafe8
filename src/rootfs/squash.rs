//! A squashfs file as the container's lower layer. The init mounts an empty FUSE connection
//! inside the container's user and mount namespaces (as on nook's FUSE rung) and hands it to
//! nook, which starts Debian's `squashfuse` on it (`/dev/fd/N` as the mount point: libfuse
//! then serves the given connection and mounts nothing). So the owners the squashfs holds are
//! read as the container's ids, no setuid `fusermount3` is needed, and the mount exists only
//! in the container's mount namespace: it goes when the container ends, whatever happens to
//! nook. [`Squashfuse`] kills and reaps the server when dropped. [`rung`], [`upper_base`] and
//! [`plan`] are the pure choices a run of a file image makes.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::Rung;
use crate::sandbox::plan::RootfsPlan;
use crate::sandbox::spec::Driver;

/// The rung for a squashfs image: the kernel overlay over squashfuse, else the copy (nook's
/// FUSE overlay reads layers from the host's view, where the squashfs is not mounted); `None`
/// for `--rootfs-driver fuse`.
pub fn rung(driver: Driver, chosen: Rung) -> Option<Rung> {
    match (driver, chosen) {
        (Driver::Fuse, _) => None,
        (_, Rung::Fuse) => Some(Rung::Copy),
        (_, r) => Some(r),
    }
}

/// Where a file image's writable layer (or copy) goes, `dir` (the container's store directory)
/// or `rt` (its runtime directory), and the store filesystem the ladder is then told about.
/// With the store on a filesystem overlay cannot write to (an NFS or Lustre home) and the
/// runtime directory on one it can, the layer goes to `rt`, so the image is never copied: what
/// the container writes then lives as long as that directory (until `nook rm`, or a reboot
/// where it is a tmpfs).
pub fn upper_base<'a>(
    store_fs: Option<&'static str>,
    runtime_fs: Option<&'static str>,
    (dir, rt): (&'a Path, &'a Path),
) -> (&'a Path, Option<&'static str>) {
    match (store_fs, runtime_fs) {
        (Some(_), None) => (rt, None),
        _ => (dir, store_fs),
    }
}

/// What the init mounts for the squashfs at `offset` in `file` on `rung`: the squashfs on
/// `rt/squash`, then the writable layer (below `base`, from [`upper_base`]) over it, or a copy
/// of it.
pub fn plan(file: &Path, offset: u64, base: &Path, rt: &Path, rung: Rung) -> RootfsPlan {
    let lower = rt.join("squash");
    let rootfs = match rung {
        Rung::Overlay => RootfsPlan::Overlay {
            layers_dir: rt.to_owned(),
            lowers: vec!["squash".into()],
            upper: base.join("upper"),
            work: base.join("work"),
        },
        _ => RootfsPlan::Copy {
            layers: vec![lower.clone()],
            dest: base.join("rootfs"),
        },
    };
    RootfsPlan::Squash {
        file: PathBuf::from(file),
        offset,
        lower,
        rootfs: Box::new(rootfs),
    }
}

/// The running `squashfuse` serving one container's lower layer.
#[derive(Debug)]
pub struct Squashfuse {
    child: Child,
}

impl Squashfuse {
    /// Starts `squashfuse` on the FUSE connection `fd` for the squashfs at `offset` in `file`.
    /// This process must be single-threaded (the descriptor is inheritable while it spawns).
    pub fn start(fd: OwnedFd, file: &Path, offset: u64) -> std::io::Result<Squashfuse> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        use std::os::fd::AsRawFd;
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        let child = Command::new("squashfuse")
            .arg("-f")
            .arg("-o")
            .arg(format!("offset={offset}"))
            .arg(file)
            .arg(format!("/dev/fd/{}", fd.as_raw_fd()))
            .stdin(Stdio::null())
            // Not the container's output: a detached run's log would stay open.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        drop(fd);
        Ok(Squashfuse { child: child? })
    }
}

impl Drop for Squashfuse {
    fn drop(&mut self) {
        // The container is gone (or never started): its mount went with its namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_images_never_take_the_fuse_rung() {
        assert_eq!(rung(Driver::Auto, Rung::Overlay), Some(Rung::Overlay));
        assert_eq!(rung(Driver::Auto, Rung::Fuse), Some(Rung::Copy));
        assert_eq!(rung(Driver::Copy, Rung::Copy), Some(Rung::Copy));
        assert_eq!(rung(Driver::Fuse, Rung::Fuse), None);
    }

    #[test]
    fn a_file_image_writes_beside_a_network_store() {
        let (dir, rt) = (Path::new("/nfs/store/c/1"), Path::new("/run/c/1"));
        assert_eq!(upper_base(None, None, (dir, rt)), (dir, None));
        assert_eq!(upper_base(Some("NFS"), None, (dir, rt)), (rt, None));
        assert_eq!(
            upper_base(Some("NFS"), Some("Lustre"), (dir, rt)),
            (dir, Some("NFS"))
        );
        assert_eq!(upper_base(None, Some("NFS"), (dir, rt)), (dir, None));
    }

    #[test]
    fn the_squashfs_is_the_only_lower_layer() {
        let sif = Path::new("/images/app.sif");
        let (dir, rt) = (Path::new("/store/c/1"), Path::new("/run/c/1"));
        let RootfsPlan::Squash {
            file,
            offset,
            lower,
            rootfs,
        } = plan(sif, 32768, dir, rt, Rung::Overlay)
        else {
            panic!("not a squashfs plan");
        };
        assert_eq!((file.as_path(), offset), (sif, 32768));
        assert_eq!(lower, rt.join("squash"));
        assert_eq!(
            *rootfs,
            RootfsPlan::Overlay {
                layers_dir: rt.to_owned(),
                lowers: vec!["squash".into()],
                upper: dir.join("upper"),
                work: dir.join("work"),
            }
        );
        let RootfsPlan::Squash { rootfs, .. } = plan(sif, 0, dir, rt, Rung::Copy) else {
            panic!("not a squashfs plan");
        };
        assert_eq!(
            *rootfs,
            RootfsPlan::Copy {
                layers: vec![rt.join("squash")],
                dest: dir.join("rootfs"),
            }
        );
    }
}
