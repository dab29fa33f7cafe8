//! Mounting onto descriptors, and the flags a mount is locked with.
//!
//! Targets inside a container's root are opened first with [`RootDir`](super::confined)
//! (symlinks resolved inside the root) and mounted through `/proc/self/fd/N`, so the path is
//! never resolved a second time (CVE-2021-30465 class). In a user namespace, a remount must
//! repeat the flags its mount is locked with (nosuid, nodev, noexec, ...): [`locked_flags`]
//! reads them.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::{FsFlags, fstatvfs};

/// The path that names an open descriptor for mount(2).
pub fn fd_path(fd: impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mounts onto the object `target` refers to.
pub fn mount_on(
    source: Option<&str>,
    target: impl AsFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let t = fd_path(target.as_fd().as_raw_fd());
    Ok(mount(source, &t, fstype, flags, data)?)
}

/// Bind-mounts the object `source` refers to onto the one `target` refers to.
pub fn bind_fd(source: impl AsFd, target: impl AsFd, recursive: bool) -> io::Result<()> {
    let s = fd_path(source.as_fd().as_raw_fd());
    let t = fd_path(target.as_fd().as_raw_fd());
    let flags = if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    };
    Ok(mount(Some(&s), &t, None::<&str>, flags, None::<&str>)?)
}

/// The per-mount flags of the mount `fd` lies on, as MS_* flags for a remount.
pub fn locked_flags(fd: impl AsFd) -> io::Result<MsFlags> {
    let st = fstatvfs(fd.as_fd())?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (sf, mf) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(sf) {
            out |= mf;
        }
    }
    Ok(out)
}

/// Remounts the bind mount at `fd` with `add` on top of the flags it is locked with.
pub fn remount_bind(fd: impl AsFd, add: MsFlags) -> io::Result<()> {
    let flags = locked_flags(fd.as_fd())? | add | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount_on(None, fd, None, flags, None)
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the mount at `fd` and every mount below it read-only (and nosuid, nodev, noexec when
/// asked), with mount_setattr(2) where the kernel has it (5.12+) and one remount per submount
/// (from /proc/self/mountinfo) where it does not.
pub fn make_tree_readonly(fd: impl AsFd, extra: MsFlags) -> io::Result<()> {
    let mut set = MOUNT_ATTR_RDONLY;
    for (m, a) in [
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ] {
        if extra.contains(m) {
            set |= a;
        }
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `attr` is a valid, fully initialised mount_attr of the size passed; the path is
    // an empty C string used with AT_EMPTY_PATH on a borrowed descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Old kernels: remount the top and each submount below it.
    let top = std::fs::read_link(fd_path(fd.as_fd().as_raw_fd()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", top.display());
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        if mp == top.to_string_lossy() || mp.starts_with(&prefix) {
            let target = std::fs::File::open(mp)?;
            remount_bind(&target, extra | MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}
