//! The seam between the mount plan and the kernel (youki's `Syscall` trait): the child
//! applies [`MountOp`]s through [`Sys`], so tests can record them without privileges.
//!
//! [`RealSys`] resolves every container path inside the new root with [`RootDir`] (symlinks
//! resolved as if the root were `/`), creates missing mount points there, and mounts through
//! the descriptor, so an image whose `/dev`, `/proc`, `/etc/hosts` or volume target is a
//! symlink pointing out can never get a host path mounted.

use std::io;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::mount::{MountOp, Target};
use crate::sys::confined::{RootDir, components};
use crate::sys::mount::{bind_fd, make_tree_readonly, mount_on, remount_bind};

/// What the plan asks of the kernel.
pub trait Sys {
    fn fs(&mut self, fstype: &str, target: &Target, flags: MsFlags, data: &str) -> io::Result<()>;
    fn bind(
        &mut self,
        source: &Path,
        target: &Target,
        recursive: bool,
        flags: MsFlags,
    ) -> io::Result<()>;
    fn device(&mut self, name: &str) -> io::Result<()>;
    fn host_device(&mut self, source: &Path, path: &str) -> io::Result<()>;
    fn symlink(&mut self, path: &str, points_to: &str) -> io::Result<()>;
    fn mask(&mut self, path: &str) -> io::Result<()>;
    fn read_only(&mut self, path: &str) -> io::Result<()>;
}

/// A mount operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {what}")]
pub struct MountError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

/// Applies `ops` in order.
pub fn apply(sys: &mut dyn Sys, ops: &[MountOp]) -> Result<(), MountError> {
    for op in ops {
        let (what, r) = match op {
            MountOp::Fs {
                fstype,
                target,
                flags,
                data,
            } => (
                format!("{fstype} on {}", target.path),
                sys.fs(fstype, target, *flags, data),
            ),
            MountOp::Bind {
                source,
                target,
                recursive,
                flags,
            } => (
                format!("bind mount {} on {}", source.display(), target.path),
                sys.bind(source, target, *recursive, *flags),
            ),
            MountOp::Device { name } => (format!("/dev/{name}"), sys.device(name)),
            MountOp::HostDevice { source, path } => (
                format!("device {} on {path}", source.display()),
                sys.host_device(source, path),
            ),
            MountOp::Symlink { path, points_to } => {
                (format!("link {path}"), sys.symlink(path, points_to))
            }
            MountOp::Mask { path } => (format!("masked path {path}"), sys.mask(path)),
            MountOp::ReadOnly { path } => (format!("read-only path {path}"), sys.read_only(path)),
        };
        r.map_err(|source| MountError { what, source })?;
    }
    Ok(())
}

/// The kernel, below a container root.
pub struct RealSys<'a> {
    pub root: &'a RootDir,
}

impl RealSys<'_> {
    /// Opens (creating if needed) the mount point for `t` inside the root.
    fn mount_point(&self, t: &Target) -> io::Result<std::os::fd::OwnedFd> {
        self.root.create_path(&t.path, t.dir)
    }

    /// The mount now on top at `path` (re-resolved after mounting on it).
    fn top(&self, path: &str, dir: bool) -> io::Result<std::os::fd::OwnedFd> {
        let comps = components(path);
        if dir {
            self.root.open_dir(&comps, OFlag::O_PATH)
        } else {
            self.root.open_file(&comps, OFlag::O_PATH)
        }
    }

    /// Resolves an existing path; `None` if it is not there.
    fn existing(&self, path: &str) -> io::Result<Option<(std::os::fd::OwnedFd, bool)>> {
        let comps = components(path);
        match self.root.open_file(&comps, OFlag::O_PATH) {
            Ok(fd) => {
                let dir = nix::sys::stat::fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
                Ok(Some((fd, dir)))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Sys for RealSys<'_> {
    fn fs(&mut self, fstype: &str, target: &Target, flags: MsFlags, data: &str) -> io::Result<()> {
        let fd = self.mount_point(target)?;
        let data = (!data.is_empty()).then_some(data);
        mount_on(Some(fstype), &fd, Some(fstype), flags, data)
    }

    fn bind(
        &mut self,
        source: &Path,
        target: &Target,
        recursive: bool,
        flags: MsFlags,
    ) -> io::Result<()> {
        let src = std::fs::File::open(source).or_else(|_| {
            nix::fcntl::open(source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map(std::fs::File::from)
        })?;
        let fd = self.mount_point(target)?;
        bind_fd(&src, &fd, recursive)?;
        if flags.is_empty() {
            return Ok(());
        }
        let top = self.top(&target.path, target.dir)?;
        if recursive && flags.contains(MsFlags::MS_RDONLY) {
            make_tree_readonly(&top, flags)
        } else {
            remount_bind(&top, flags)
        }
    }

    fn device(&mut self, name: &str) -> io::Result<()> {
        let host = std::fs::File::open(Path::new("/dev").join(name)).or_else(|_| {
            nix::fcntl::open(
                &Path::new("/dev").join(name),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(std::fs::File::from)
        })?;
        let fd = self.mount_point(&Target::file(&format!("/dev/{name}")))?;
        bind_fd(&host, &fd, false)
    }

    fn host_device(&mut self, source: &Path, path: &str) -> io::Result<()> {
        // O_PATH: opening a device for real can have effects (a GPU, a tape). The node is
        // checked on the descriptor that gets bound, so a swap after the run's own check
        // cannot put a regular file or directory there.
        let host = nix::fcntl::open(source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        let kind = nix::sys::stat::fstat(&host)?.st_mode & libc::S_IFMT;
        if kind != libc::S_IFCHR && kind != libc::S_IFBLK {
            return Err(io::Error::other(format!(
                "{} is not a device node",
                source.display()
            )));
        }
        let fd = self.mount_point(&Target::file(path))?;
        bind_fd(&host, &fd, false)
    }

    fn symlink(&mut self, path: &str, points_to: &str) -> io::Result<()> {
        let comps = components(path);
        let Some((name, parent)) = comps.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let dir = self.root.make_dirs(parent, 0o755)?;
        match nix::unistd::symlinkat(points_to, &dir, name.as_os_str()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn mask(&mut self, path: &str) -> io::Result<()> {
        let Some((fd, dir)) = self.existing(path)? else {
            return Ok(());
        };
        if dir {
            mount_on(
                Some("tmpfs"),
                &fd,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
        } else {
            let null = std::fs::File::open("/dev/null")?;
            bind_fd(&null, &fd, false)
        }
    }

    fn read_only(&mut self, path: &str) -> io::Result<()> {
        let Some((fd, dir)) = self.existing(path)? else {
            return Ok(());
        };
        bind_fd(&fd, &fd, true)?;
        let top = self.top(path, dir)?;
        make_tree_readonly(
            &top,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )
    }
}

/// A [`Sys`] that records what it was asked: the double unit tests check mount plans with,
/// without privileges. Not part of the library.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingSys {
    pub calls: Vec<String>,
}

#[cfg(test)]
impl Sys for RecordingSys {
    fn fs(&mut self, fstype: &str, target: &Target, flags: MsFlags, data: &str) -> io::Result<()> {
        self.calls
            .push(format!("fs {fstype} {} {flags:?} {data}", target.path));
        Ok(())
    }
    fn bind(
        &mut self,
        source: &Path,
        target: &Target,
        recursive: bool,
        flags: MsFlags,
    ) -> io::Result<()> {
        self.calls.push(format!(
            "bind {} {} rec={recursive} {flags:?}",
            source.display(),
            target.path
        ));
        Ok(())
    }
    fn device(&mut self, name: &str) -> io::Result<()> {
        self.calls.push(format!("device {name}"));
        Ok(())
    }
    fn host_device(&mut self, source: &Path, path: &str) -> io::Result<()> {
        self.calls
            .push(format!("host-device {} {path}", source.display()));
        Ok(())
    }
    fn symlink(&mut self, path: &str, points_to: &str) -> io::Result<()> {
        self.calls.push(format!("symlink {path} -> {points_to}"));
        Ok(())
    }
    fn mask(&mut self, path: &str) -> io::Result<()> {
        self.calls.push(format!("mask {path}"));
        Ok(())
    }
    fn read_only(&mut self, path: &str) -> io::Result<()> {
        self.calls.push(format!("ro {path}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Namespaces, standard_mounts};
    use super::super::volume::Volume;
    use super::*;
    use crate::net::etc::EtcFiles;

    #[test]
    fn standard_plan_in_order() {
        let etc = EtcFiles {
            hosts: "/c/hosts".into(),
            hostname: "/c/hostname".into(),
            resolv: "/c/resolv".into(),
        };
        let vols = vec![Volume::Bind {
            source: "/data".into(),
            target: "/mnt".into(),
            read_only: true,
            dir: true,
        }];
        let ops = standard_mounts(
            Namespaces {
                net: true,
                cgroup: true,
                ipc: true,
                pid: true,
            },
            false,
            &etc,
            &vols,
        );
        let mut rec = RecordingSys::default();
        apply(&mut rec, &ops).unwrap();
        let c = &rec.calls;
        let pos = |needle: &str| {
            c.iter()
                .position(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing: {c:#?}"))
        };
        assert!(pos("fs proc /proc") < pos("fs tmpfs /dev "));
        assert!(pos("fs tmpfs /dev ") < pos("fs devpts /dev/pts"));
        assert!(
            pos("fs tmpfs /dev ") < pos("device null"),
            "devices go on the new /dev"
        );
        assert!(
            pos("bind /c/hosts /etc/hosts") < pos("bind /data /mnt rec=true MsFlags(MS_RDONLY)")
        );
        assert!(
            pos("bind /data /mnt") < pos("mask /proc/kcore"),
            "user volumes cannot unmask"
        );
        assert!(pos("mask /proc/kcore") < pos("ro /proc/sys"));
        assert!(c.contains(&"symlink /dev/ptmx -> pts/ptmx".to_string()));
        assert!(c.contains(&"symlink /dev/fd -> /proc/self/fd".to_string()));
    }

    #[test]
    fn failures_name_the_step() {
        struct Failing;
        impl Sys for Failing {
            fn fs(&mut self, _: &str, _: &Target, _: MsFlags, _: &str) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            }
            fn bind(&mut self, _: &Path, _: &Target, _: bool, _: MsFlags) -> io::Result<()> {
                Ok(())
            }
            fn device(&mut self, _: &str) -> io::Result<()> {
                Ok(())
            }
            fn host_device(&mut self, _: &Path, _: &str) -> io::Result<()> {
                Ok(())
            }
            fn symlink(&mut self, _: &str, _: &str) -> io::Result<()> {
                Ok(())
            }
            fn mask(&mut self, _: &str) -> io::Result<()> {
                Ok(())
            }
            fn read_only(&mut self, _: &str) -> io::Result<()> {
                Ok(())
            }
        }
        let ops = vec![MountOp::Fs {
            fstype: "proc",
            target: Target::dir("/proc"),
            flags: MsFlags::empty(),
            data: String::new(),
        }];
        let err = apply(&mut Failing, &ops).unwrap_err();
        assert_eq!(err.to_string(), "cannot set up proc on /proc");
    }
}
