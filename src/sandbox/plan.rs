//! The sandbox plan: image config + run options → namespaces, id maps, mount operations and
//! the process to start (bubblewrap's list of setup operations). The plan is printable and
//! tested without privileges; the child executes exactly it.

use std::path::PathBuf;

use nix::mount::MsFlags;

use super::caps::Capability;
use super::mount::{MountOp, Target};
use super::volume::Volume;
use crate::net::etc::EtcFiles;
use crate::sys::idmap::IdMap;

/// Which namespaces the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub net: bool,
    pub cgroup: bool,
    /// An ipc namespace of its own; `false`: the host's (`--ipc host`), with its /dev/shm.
    pub ipc: bool,
    /// A pid namespace of its own; `false`: the host's (`--pid host`), with its /proc.
    pub pid: bool,
}

/// How the container's root is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsPlan {
    /// Kernel overlayfs (`userxattr`), lower layers top first, relative to `layers_dir`.
    Overlay {
        layers_dir: PathBuf,
        lowers: Vec<String>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// nook's FUSE overlay: lower layers top first, served by nook's threads.
    Fuse {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// The layers copied into a private directory (the last rung of the ladder).
    Copy { layers: Vec<PathBuf>, dest: PathBuf },
    /// A squashfs (at `offset` in `file`) as the only lower layer: the init mounts a FUSE
    /// connection on `lower` and hands it to nook, which serves it with squashfuse
    /// (`rootfs::squash`); then the init mounts `rootfs` (whose lower is `lower`).
    Squash {
        file: PathBuf,
        offset: u64,
        lower: PathBuf,
        rootfs: Box<RootfsPlan>,
    },
}

/// Resource limits (`--ulimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: nix::sys::resource::Resource,
    pub soft: u64,
    pub hard: u64,
}

/// The process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// `-u` or the image's User, resolved in the container's /etc/passwd by the child.
    pub user: String,
    pub group_add: Vec<String>,
    pub caps: Vec<Capability>,
    pub no_new_privs: bool,
    /// The seccomp profile, compiled for this container; `None`: unconfined.
    pub seccomp: Option<super::seccomp::Program>,
    pub rlimits: Vec<Rlimit>,
    pub tty: bool,
    pub stdin: bool,
    pub init: bool,
    /// `--userns keep-id`: the user's entries, added to the image's passwd and group.
    pub keep_id: Option<super::user::Account>,
    /// Descriptors beyond 0-2 the command gets at the same numbers (`sandbox::fds`).
    pub preserve_fds: Vec<std::os::fd::RawFd>,
}

/// Everything the child does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub namespaces: Namespaces,
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    pub hostname: String,
    pub rootfs: RootfsPlan,
    /// The directory the root is assembled on (private to the container's mount namespace).
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub mounts: Vec<MountOp>,
    pub process: Process,
    /// Install the fakeroot's filter before the command (one id mapped, FUSE root).
    pub fakeroot: bool,
    /// Wait for nook's word that the network helper has configured the namespace.
    pub wait_network: bool,
    /// The devices' OCI hooks (CDI).
    pub hooks: super::device::Hooks,
}

/// Docker's masked paths.
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Devices every container gets, bound from the host.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The standard mounts (docker's defaults) followed by the user's volumes.
pub fn standard_mounts(
    ns: Namespaces,
    tty_gid_mapped: bool,
    etc: &EtcFiles,
    volumes: &[Volume],
) -> Vec<MountOp> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mut m = vec![
        proc_mount(ns),
        MountOp::Fs {
            fstype: "tmpfs",
            target: Target::dir("/dev"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: "mode=755,size=65536k".into(),
        },
        MountOp::Fs {
            fstype: "devpts",
            target: Target::dir("/dev/pts"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            // gid=5 (tty) only where the map has it: the kernel refuses an unmapped gid.
            data: if tty_gid_mapped {
                "newinstance,ptmxmode=0666,mode=0620,gid=5"
            } else {
                "newinstance,ptmxmode=0666,mode=0620"
            }
            .into(),
        },
    ];
    m.extend(ipc_mounts(ns));
    if ns.net {
        // sysfs can only be mounted by the owner of the network namespace.
        m.push(MountOp::Fs {
            fstype: "sysfs",
            target: Target::dir("/sys"),
            flags: nosuid_noexec_nodev | MsFlags::MS_RDONLY,
            data: String::new(),
        });
    } else {
        m.push(MountOp::Bind {
            source: "/sys".into(),
            target: Target::dir("/sys"),
            recursive: true,
            flags: nosuid_noexec_nodev | MsFlags::MS_RDONLY,
        });
    }
    m.extend(DEVICES.iter().map(|d| MountOp::Device { name: d }));
    for (path, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/core", "/proc/kcore"),
    ] {
        m.push(MountOp::Symlink {
            path: path.into(),
            points_to: to.into(),
        });
    }
    for (src, dst) in [
        (&etc.hosts, "/etc/hosts"),
        (&etc.hostname, "/etc/hostname"),
        (&etc.resolv, "/etc/resolv.conf"),
    ] {
        m.push(MountOp::Bind {
            source: src.clone(),
            target: Target::file(dst),
            recursive: false,
            flags: MsFlags::empty(),
        });
    }
    for v in volumes {
        m.push(v.mount_op());
    }
    m.extend(MASKED.iter().map(|p| MountOp::Mask { path: (*p).into() }));
    m.extend(
        READ_ONLY
            .iter()
            .map(|p| MountOp::ReadOnly { path: (*p).into() }),
    );
    m
}

/// `mounts` with the devices' operations put after the volumes and before the masks and
/// read-only paths, so that no device spec can unmask /proc or /sys.
pub fn with_devices(mut mounts: Vec<MountOp>, devices: &[MountOp]) -> Vec<MountOp> {
    let at = mounts
        .iter()
        .position(|o| matches!(o, MountOp::Mask { .. } | MountOp::ReadOnly { .. }))
        .unwrap_or(mounts.len());
    mounts.splice(at..at, devices.iter().cloned());
    mounts
}

/// /proc: a fresh procfs of the container's pid namespace, or with `--pid host` the host's
/// bound recursively (as Apptainer does): a procfs can only be mounted by the owner of the pid
/// namespace, which the host's is not. The masks and read-only paths apply to either.
fn proc_mount(ns: Namespaces) -> MountOp {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    if !ns.pid {
        return MountOp::Bind {
            source: "/proc".into(),
            target: Target::dir("/proc"),
            recursive: true,
            flags,
        };
    }
    MountOp::Fs {
        fstype: "proc",
        target: Target::dir("/proc"),
        flags,
        data: String::new(),
    }
}

/// /dev/shm and /dev/mqueue: the container's own, or with `--ipc host` the host's /dev/shm
/// (shared memory between MPI ranks in separate containers). An mqueue filesystem can only be
/// mounted by the owner of the ipc namespace, so a container in the host's has none.
fn ipc_mounts(ns: Namespaces) -> Vec<MountOp> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    if !ns.ipc {
        return vec![MountOp::Bind {
            source: "/dev/shm".into(),
            target: Target::dir("/dev/shm"),
            recursive: false,
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        }];
    }
    vec![
        MountOp::Fs {
            fstype: "tmpfs",
            target: Target::dir("/dev/shm"),
            flags: nosuid_noexec_nodev,
            data: "mode=1777,size=65536k".into(),
        },
        MountOp::Fs {
            fstype: "mqueue",
            target: Target::dir("/dev/mqueue"),
            flags: nosuid_noexec_nodev,
            data: String::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_go_before_the_masks() {
        let dev = MountOp::HostDevice {
            source: "/dev/null".into(),
            path: "/dev/fake0".into(),
        };
        let m = with_devices(
            standard_mounts(
                Namespaces {
                    net: true,
                    cgroup: true,
                    ipc: true,
                    pid: true,
                },
                true,
                &etc(),
                &[],
            ),
            std::slice::from_ref(&dev),
        );
        let at = m.iter().position(|o| *o == dev).unwrap();
        assert!(m[..at].iter().all(|o| !matches!(o, MountOp::Mask { .. })));
        assert!(matches!(m[at + 1], MountOp::Mask { .. }));
    }

    fn etc() -> EtcFiles {
        EtcFiles {
            hosts: "/c/hosts".into(),
            hostname: "/c/hostname".into(),
            resolv: "/c/resolv.conf".into(),
        }
    }

    #[test]
    fn proc_first_masks_and_read_only_last() {
        let m = standard_mounts(
            Namespaces {
                net: true,
                cgroup: true,
                ipc: true,
                pid: true,
            },
            true,
            &etc(),
            &[],
        );
        assert!(matches!(&m[0], MountOp::Fs { fstype: "proc", .. }));
        let first_mask = m
            .iter()
            .position(|o| matches!(o, MountOp::Mask { .. }))
            .unwrap();
        let first_ro = m
            .iter()
            .position(|o| matches!(o, MountOp::ReadOnly { .. }))
            .unwrap();
        assert!(first_mask < first_ro);
        assert!(
            m[first_mask..]
                .iter()
                .all(|o| matches!(o, MountOp::Mask { .. } | MountOp::ReadOnly { .. }))
        );
        let masked: Vec<_> = m
            .iter()
            .filter_map(|o| {
                if let MountOp::Mask { path } = o {
                    Some(path.as_str())
                } else {
                    None
                }
            })
            .collect();
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
            "/proc/acpi",
            "/proc/scsi",
            "/proc/interrupts",
            "/sys/firmware",
        ] {
            assert!(masked.contains(&p), "{p} not masked");
        }
    }

    #[test]
    fn sysfs_needs_a_network_namespace() {
        let own = standard_mounts(
            Namespaces {
                net: true,
                cgroup: true,
                ipc: true,
                pid: true,
            },
            true,
            &etc(),
            &[],
        );
        assert!(own.iter().any(|o| matches!(o, MountOp::Fs { fstype: "sysfs", flags, .. } if flags.contains(MsFlags::MS_RDONLY))));
        let host = standard_mounts(
            Namespaces {
                net: false,
                cgroup: true,
                ipc: true,
                pid: true,
            },
            true,
            &etc(),
            &[],
        );
        assert!(host.iter().any(
            |o| matches!(o, MountOp::Bind { target, recursive: true, flags, .. }
            if target.path == "/sys" && flags.contains(MsFlags::MS_RDONLY))
        ));
    }

    #[test]
    fn devpts_gid_only_when_mapped() {
        let data = |mapped| {
            standard_mounts(
                Namespaces {
                    net: true,
                    cgroup: true,
                    ipc: true,
                    pid: true,
                },
                mapped,
                &etc(),
                &[],
            )
            .into_iter()
            .find_map(|o| match o {
                MountOp::Fs {
                    fstype: "devpts",
                    data,
                    ..
                } => Some(data),
                _ => None,
            })
            .unwrap()
        };
        assert!(data(true).contains("gid=5"));
        assert!(!data(false).contains("gid="));
        assert!(data(false).contains("newinstance") && data(false).contains("ptmxmode=0666"));
    }

    #[test]
    fn nosuid_nodev_where_docker_sets_them() {
        let m = standard_mounts(
            Namespaces {
                net: true,
                cgroup: true,
                ipc: true,
                pid: true,
            },
            true,
            &etc(),
            &[],
        );
        for o in &m {
            if let MountOp::Fs {
                fstype,
                flags,
                target,
                ..
            } = o
            {
                assert!(
                    flags.contains(MsFlags::MS_NOSUID),
                    "{fstype} on {} lacks nosuid",
                    target.path
                );
                if (*fstype != "tmpfs" || target.path == "/dev/shm") && *fstype != "devpts" {
                    assert!(
                        flags.contains(MsFlags::MS_NODEV),
                        "{fstype} on {} lacks nodev",
                        target.path
                    );
                }
            }
        }
    }

    #[test]
    fn host_ipc_binds_the_hosts_shm_and_mounts_no_mqueue() {
        let ns = Namespaces {
            net: false,
            cgroup: true,
            ipc: false,
            pid: true,
        };
        let m = standard_mounts(ns, true, &etc(), &[]);
        assert!(
            m.iter()
                .any(|o| matches!(o, MountOp::Bind { source, target, .. }
            if target.path == "/dev/shm" && source.as_path() == std::path::Path::new("/dev/shm")))
        );
        assert!(!m.iter().any(
            |o| matches!(o, MountOp::Fs { fstype: "mqueue" | "tmpfs", target, .. }
            if target.path.starts_with("/dev/shm") || target.path == "/dev/mqueue")
        ));
    }

    #[test]
    fn host_pid_binds_the_hosts_proc_and_keeps_it_masked() {
        let ns = Namespaces {
            net: true,
            cgroup: true,
            ipc: true,
            pid: false,
        };
        let m = standard_mounts(ns, true, &etc(), &[]);
        let proc = m.iter().position(|o| {
            matches!(o, MountOp::Bind { source, target, recursive: true, flags }
                if target.path == "/proc" && source.as_path() == std::path::Path::new("/proc")
                    && flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV))
        });
        assert!(
            !m.iter()
                .any(|o| matches!(o, MountOp::Fs { fstype: "proc", .. }))
        );
        for p in MASKED.iter().filter(|p| p.starts_with("/proc")) {
            let masked = m
                .iter()
                .position(|o| matches!(o, MountOp::Mask { path } if path == p));
            assert!(masked > proc, "{p} is masked after /proc is bound");
        }
        assert!(
            m.iter()
                .any(|o| matches!(o, MountOp::ReadOnly { path } if path == "/proc/sys"))
        );
    }
}
