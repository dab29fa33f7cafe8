//! Directories below a root that no path can leave.
//!
//! A [`RootDir`] holds an `O_PATH` descriptor of a directory; every lookup below it goes
//! through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and absolute symlinks
//! resolve as if the root were `/` and `/proc/self/fd` tricks fail. On kernels without
//! openat2 (before 5.6) the lookup walks one component at a time with `O_NOFOLLOW`, refusing
//! symlinked parents instead of resolving them. Callers then act on the final component with
//! `*at` calls that do not follow it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, mkdirat};

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// openat2 with RESOLVE_IN_ROOT answers EAGAIN when a rename or mount anywhere on the system
/// raced with a `..` step; the lookup is then simply repeated.
fn openat2_retrying(dir: &OwnedFd, rel: &Path, how: OpenHow) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(dir, rel, how) {
            Err(Errno::EAGAIN) if tries < 64 => tries += 1,
            other => return other,
        }
    }
}

/// A directory that lookups cannot leave.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl RootDir {
    /// Opens `path` (which must be a directory, not a symlink) as a root.
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `comps` below the root with `flags` (`O_PATH` for a handle,
    /// `O_RDONLY` to read it or set xattrs). `O_DIRECTORY | O_CLOEXEC` are always added.
    pub fn open_dir(&self, comps: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        if comps.is_empty() {
            return Ok(openat(&self.fd, ".", flags, Mode::empty())?);
        }
        let rel: PathBuf = comps.iter().collect();
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2_retrying(&self.fd, &rel, how) {
                Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                other => return Ok(other?),
            }
        }
        self.walk(comps, flags)
    }

    /// The fallback lookup: one component at a time, never following a symlink.
    fn walk(&self, comps: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let f = if last {
                flags
            } else {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
            };
            let dir = cur.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            cur = Some(openat(
                dir,
                c.as_os_str(),
                f | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?);
        }
        cur.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Opens the file at `comps` below the root with `flags` (`O_CLOEXEC` added), resolving
    /// symlinks inside the root; on kernels without openat2, symlinks are refused instead.
    pub fn open_file(&self, comps: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let flags = flags | OFlag::O_CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let rel: PathBuf = comps.iter().collect();
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2_retrying(&self.fd, &rel, how) {
                Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                other => return Ok(other?),
            }
        }
        let dir = self.open_dir(parent, OFlag::O_PATH)?;
        Ok(openat(
            &dir,
            name.as_os_str(),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?)
    }

    /// Resolves `path` inside the root, following symlinks (a final one too) as if the root
    /// were `/`, and creates what is missing: directories on the way, then a directory (`dir`)
    /// or an empty file. Returns an `O_PATH` descriptor of the result, for mounting onto.
    pub fn create_path(&self, path: &str, dir: bool) -> io::Result<OwnedFd> {
        let mut path = path.to_owned();
        for _ in 0..40 {
            let comps = components(&path);
            let Some((name, parent)) = comps.split_last() else {
                return self.open_dir(&[], OFlag::O_PATH);
            };
            let pfd = self.make_dirs(parent, 0o755)?;
            let made = if dir {
                mkdirat(&pfd, name.as_os_str(), Mode::from_bits_truncate(0o755))
            } else {
                let flags = OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                openat(
                    &pfd,
                    name.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop)
            };
            match made {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let fd = openat(
                &pfd,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let st = nix::sys::stat::fstat(&fd)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                return Ok(fd);
            }
            let target = nix::fcntl::readlinkat(&pfd, name.as_os_str())?;
            let target = target.to_string_lossy();
            path = if target.starts_with('/') {
                target.into_owned()
            } else {
                format!("{}/{target}", self.inside_path(&pfd)?)
            };
        }
        Err(io::Error::from_raw_os_error(libc::ELOOP))
    }

    /// The path of `fd` as seen from the root (for resolving a relative symlink found there).
    fn inside_path(&self, fd: &OwnedFd) -> io::Result<String> {
        let proc = |f: BorrowedFd<'_>| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&f)
            ))
        };
        let root = proc(self.fd.as_fd())?;
        let here = proc(fd.as_fd())?;
        let rel = here
            .strip_prefix(&root)
            .map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
        Ok(format!("/{}", rel.display()))
    }

    /// Like [`open_dir`](Self::open_dir) with `O_PATH`, creating missing directories with
    /// `mode` on the way. The deepest existing ancestor is found with confined lookups; below
    /// it, each new directory is made and opened by one component without following symlinks.
    pub fn make_dirs(&self, comps: &[OsString], mode: u32) -> io::Result<OwnedFd> {
        let missing = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
        let mut have = comps.len();
        let mut cur = loop {
            match self.open_dir(&comps[..have], OFlag::O_PATH) {
                Ok(fd) => break fd,
                Err(e) if missing(&e) && have > 0 => have -= 1,
                Err(e) => return Err(e),
            }
        };
        for c in &comps[have..] {
            match mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            cur = openat(&cur, c.as_os_str(), flags, Mode::empty())?;
        }
        Ok(cur)
    }
}

/// Removes `name` in `parent` and, for a directory, everything below it, without following
/// any symlink. Directories without owner write or search permission (image modes such as
/// 0555) are opened up first, since the caller owns them.
pub fn remove_tree_at(parent: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{SFlag, fchmod, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
        return Ok(unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?);
    }
    let dirfd = match openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => {
            // Unreadable (mode 0000, 0311): fstatat just saw a directory that we own, in a
            // tree only we write to, so fixing its mode by name is safe.
            nix::sys::stat::fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(0o700),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
            openat(
                parent,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        }
        Err(e) => return Err(e.into()),
    };
    if st.st_mode & 0o300 != 0o300 {
        fchmod(
            &dirfd,
            Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
        )?;
    }
    let names: Vec<OsString> = {
        let dup = dirfd.try_clone()?;
        let mut dir = nix::dir::Dir::from_fd(dup)?;
        dir.iter()
            .map_while(|e| e.ok())
            .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in names {
        remove_tree_at(dirfd.as_fd(), &n)?;
    }
    Ok(unlinkat(parent, name, UnlinkatFlags::RemoveDir)?)
}

/// Removes the tree at `path` (used for store directories the caller owns).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let parent = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    remove_tree_at(parent.as_fd(), name)
}

/// The components of an absolute container path (`/etc/passwd` → [`etc`, `passwd`]); `..`
/// and `.` are dropped lexically, which cannot climb above the root.
pub fn components(path: &str) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(OsString::from(c)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(p: &str) -> Vec<OsString> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("secret")).unwrap();
        symlink(outside.path(), root.path().join("out")).unwrap();
        symlink("/", root.path().join("slash")).unwrap();
        symlink("../../../..", root.path().join("up")).unwrap();
        let r = RootDir::open(root.path()).unwrap();
        // The host's `outside/secret` must not be reachable through any of them.
        assert!(r.open_dir(&comps("out/secret"), OFlag::O_PATH).is_err());
        let via_slash = r.open_dir(&comps("slash"), OFlag::O_RDONLY).unwrap();
        let via_up = r.open_dir(&comps("up"), OFlag::O_RDONLY).unwrap();
        let root_ino = std::fs::metadata(root.path()).unwrap();
        for fd in [via_slash, via_up] {
            let st = nix::sys::stat::fstat(&fd).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(st.st_ino, root_ino.ino());
        }
    }

    #[test]
    fn create_path_follows_links_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        symlink(
            "/../../../../etc/shadow-nook",
            root.path().join("etc/hosts"),
        )
        .unwrap();
        symlink(outside.path(), root.path().join("data")).unwrap();
        symlink("../run/x/resolv.conf", root.path().join("etc/resolv.conf")).unwrap();
        symlink("loop", root.path().join("loop")).unwrap();
        let r = RootDir::open(root.path()).unwrap();
        r.create_path("/etc/hosts", false).unwrap();
        assert!(
            root.path().join("etc/shadow-nook").is_file(),
            "the link target is created inside the root"
        );
        r.create_path("/data", true).unwrap();
        assert!(
            root.path()
                .join(outside.path().strip_prefix("/").unwrap())
                .is_dir()
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        r.create_path("/etc/resolv.conf", false).unwrap();
        assert!(
            root.path().join("run/x/resolv.conf").is_file(),
            "relative links resolve from their directory"
        );
        assert!(r.create_path("/loop", true).is_err());
    }

    #[test]
    fn make_dirs_creates_and_reuses() {
        let root = tempfile::tempdir().unwrap();
        let r = RootDir::open(root.path()).unwrap();
        r.make_dirs(&comps("a/b/c"), 0o755).unwrap();
        assert!(root.path().join("a/b/c").is_dir());
        r.make_dirs(&comps("a/b/c"), 0o755).unwrap();
        std::fs::write(root.path().join("file"), b"").unwrap();
        assert!(r.make_dirs(&comps("file/x"), 0o755).is_err());
    }

    #[test]
    fn walk_refuses_symlinked_parents() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink("real", root.path().join("link")).unwrap();
        let r = RootDir::open(root.path()).unwrap();
        assert!(
            r.walk(&comps("real"), OFlag::O_PATH | OFlag::O_DIRECTORY)
                .is_ok()
        );
        assert!(
            r.walk(&comps("link"), OFlag::O_PATH | OFlag::O_DIRECTORY)
                .is_err()
        );
    }
}
