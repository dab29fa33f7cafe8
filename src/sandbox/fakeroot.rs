//! nook's fakeroot, the pure part: which system calls it supervises and what they ask.
//!
//! With one id mapped, the kernel can show no owner but that id, and refuses to chown to any
//! other. Where the root is nook's FUSE overlay, which keeps the image's owners (and records
//! new ones), the fakeroot answers `stat` with the recorded owner and turns `chown` into a
//! record, through seccomp user notification. `container::fakeroot` is the supervisor.

/// The supervised calls: the stat family and the chown family.
pub const SYSCALLS: &[i64] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
];

/// Where a call's object is: a path (address in the caller) relative to a directory
/// descriptor, or the descriptor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    /// A descriptor of the caller, or AT_FDCWD.
    pub dirfd: i32,
    /// The path's address in the caller; `None` for the descriptor itself.
    pub path: Option<u64>,
    /// AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH as the call gives them.
    pub flags: i32,
}

/// A supervised call, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// stat, lstat, fstat, newfstatat: a `struct stat` goes to `buf`.
    Stat { at: Object, buf: u64 },
    /// statx: a `struct statx` goes to `buf`.
    Statx { at: Object, mask: u32, buf: u64 },
    /// The chown family; `None` leaves an id as it is (-1).
    Chown {
        at: Object,
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

fn id(arg: u64) -> Option<u32> {
    let v = arg as u32;
    (v != u32::MAX).then_some(v)
}

fn path_at(dirfd: u64, path: u64, flags: u64) -> Object {
    Object {
        dirfd: dirfd as i32,
        path: Some(path),
        flags: flags as i32,
    }
}

fn fd_itself(fd: u64) -> Object {
    Object {
        dirfd: fd as i32,
        path: None,
        flags: libc::AT_EMPTY_PATH,
    }
}

/// Decodes a supervised call from its number and arguments.
pub fn decode(nr: i64, a: [u64; 6]) -> Option<Call> {
    let cwd = libc::AT_FDCWD as u32 as u64;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
    #[cfg(target_arch = "x86_64")]
    match nr {
        libc::SYS_stat => {
            return Some(Call::Stat {
                at: path_at(cwd, a[0], 0),
                buf: a[1],
            });
        }
        libc::SYS_lstat => {
            return Some(Call::Stat {
                at: path_at(cwd, a[0], nofollow),
                buf: a[1],
            });
        }
        libc::SYS_chown => {
            return Some(Call::Chown {
                at: path_at(cwd, a[0], 0),
                uid: id(a[1]),
                gid: id(a[2]),
            });
        }
        libc::SYS_lchown => {
            return Some(Call::Chown {
                at: path_at(cwd, a[0], nofollow),
                uid: id(a[1]),
                gid: id(a[2]),
            });
        }
        _ => {}
    }
    let _ = (cwd, nofollow);
    match nr {
        libc::SYS_fstat => Some(Call::Stat {
            at: fd_itself(a[0]),
            buf: a[1],
        }),
        libc::SYS_newfstatat => Some(Call::Stat {
            at: path_at(a[0], a[1], a[3]),
            buf: a[2],
        }),
        libc::SYS_statx => Some(Call::Statx {
            at: path_at(a[0], a[1], a[2]),
            mask: a[3] as u32,
            buf: a[4],
        }),
        libc::SYS_fchown => Some(Call::Chown {
            at: fd_itself(a[0]),
            uid: id(a[1]),
            gid: id(a[2]),
        }),
        libc::SYS_fchownat => Some(Call::Chown {
            at: path_at(a[0], a[1], a[4]),
            uid: id(a[2]),
            gid: id(a[3]),
        }),
        _ => None,
    }
}

/// Whether a capability set (a `CapEff:` line of /proc/PID/status) holds CAP_CHOWN.
pub fn may_chown(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & 1 != 0) // CAP_CHOWN is capability 0
}

/// The caller's filesystem uid and gid, from its /proc/PID/status.
pub fn fs_ids(status: &str) -> Option<(u32, u32)> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .nth(3)?
            .parse::<u32>()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Whether a caller without CAP_CHOWN may make a chown, as chown(2) allows: the owner may
/// name itself as owner and give the object its own group (the only group the one mapped
/// id has, setgroups being denied); anything else is EPERM, as on any Linux.
pub fn owner_may_chown(
    caller: (u32, u32),
    owner: (u32, u32),
    uid: Option<u32>,
    gid: Option<u32>,
) -> bool {
    caller.0 == owner.0
        && uid.is_none_or(|u| u == owner.0)
        && gid.is_none_or(|g| g == owner.1 || g == caller.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_decode_to_their_objects() {
        let cwd = libc::AT_FDCWD as u32 as u64;
        assert_eq!(
            decode(
                libc::SYS_newfstatat,
                [cwd, 0x1000, 0x2000, libc::AT_SYMLINK_NOFOLLOW as u64, 0, 0]
            ),
            Some(Call::Stat {
                at: Object {
                    dirfd: libc::AT_FDCWD,
                    path: Some(0x1000),
                    flags: libc::AT_SYMLINK_NOFOLLOW
                },
                buf: 0x2000
            })
        );
        assert_eq!(
            decode(libc::SYS_fchown, [3, 42, u32::MAX as u64, 0, 0, 0]),
            Some(Call::Chown {
                at: Object {
                    dirfd: 3,
                    path: None,
                    flags: libc::AT_EMPTY_PATH
                },
                uid: Some(42),
                gid: None
            })
        );
        assert_eq!(
            decode(
                libc::SYS_statx,
                [5, 0x10, libc::AT_EMPTY_PATH as u64, 0x7ff, 0x20, 0]
            ),
            Some(Call::Statx {
                at: Object {
                    dirfd: 5,
                    path: Some(0x10),
                    flags: libc::AT_EMPTY_PATH
                },
                mask: 0x7ff,
                buf: 0x20
            })
        );
        assert_eq!(decode(libc::SYS_read, [0; 6]), None);
        for nr in SYSCALLS {
            assert!(decode(*nr, [0; 6]).is_some(), "{nr} decodes");
        }
    }

    #[test]
    fn cap_chown_from_status() {
        assert!(may_chown("Name:\tsh\nCapEff:\t00000000a80425fb\n"));
        assert!(!may_chown("CapEff:\t0000000000000000\n"));
        assert!(!may_chown("Name: x\n"));
    }

    #[test]
    fn only_root_gives_files_away() {
        let status = "Name:\tsh\nUid:\t1234\t1234\t1234\t1234\nGid:\t50\t50\t50\t50\nCapEff:\t0000000000000000\n";
        assert_eq!(fs_ids(status), Some((1234, 50)));
        assert!(!may_chown(status));
        let me = (1234, 50);
        assert!(owner_may_chown(me, (1234, 0), Some(1234), None));
        assert!(
            owner_may_chown(me, (1234, 0), None, Some(50)),
            "chgrp to own group"
        );
        assert!(
            !owner_may_chown(me, (1234, 0), Some(0), None),
            "gave a file away"
        );
        assert!(
            !owner_may_chown(me, (0, 0), Some(1234), Some(50)),
            "took root's file"
        );
        assert!(
            !owner_may_chown(me, (1234, 0), None, Some(7)),
            "chgrp to a foreign group"
        );
    }
}
