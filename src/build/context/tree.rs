//! A directory on the host seen as a [`SourceTree`], through root-confined descriptors.
//!
//! Every lookup walks from the [`RootDir`] one component at a time without following a
//! symlink (a path through a symlinked directory reads as absent: callers resolve links
//! themselves, component by component) and looks at the final name with `*at` calls that do
//! not follow it. File content is never read here: entries name `Source::Beneath`, which the layer
//! writer opens beneath the same root.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::FileStat;
use nix::sys::stat::Mode;

use crate::build::entry::{FileKind, Meta, Source, SourceTree};
use crate::sys::confined::RootDir;
use crate::sys::xattr;
use crate::unpack::{OVERRIDE_XATTR, parse_override};

/// Whose owners a [`DirTree`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerView {
    /// Everything is 0:0 (the build context: COPY's default owner).
    Root,
    /// Owners and modes from nook's override record where there is one, else 0:0 with the
    /// mode on disk (a directory that `unpack` filled with `Owners::Record`).
    Recorded,
}

/// A host directory as a source tree.
#[derive(Debug)]
pub struct DirTree {
    root: RootDir,
    owners: OwnerView,
}

/// The components of a relative path; anything that is not a plain name is refused.
pub fn rel_components(rel: &Path) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(out)
}

fn kind_of(st: &FileStat) -> Option<FileKind> {
    Some(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFREG => FileKind::File,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFSOCK => FileKind::Socket,
        _ => return None,
    })
}

fn missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

impl DirTree {
    pub fn open(path: &Path, owners: OwnerView) -> io::Result<DirTree> {
        Ok(DirTree {
            root: RootDir::open(path)?,
            owners,
        })
    }

    pub fn from_root(root: RootDir, owners: OwnerView) -> DirTree {
        DirTree { root, owners }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The directory `comps` opened one component at a time with no symlink followed: a
    /// path through a symlinked directory is not a path of this tree (it would let a name
    /// dodge the ignore file), so it reads as absent (`ELOOP`, `ENOTDIR`).
    fn open_dir(&self, comps: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        let step = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Some((last, inner)) = comps.split_last() else {
            return self.root.open_dir(&[], flags);
        };
        let mut cur = self.root.open_dir(&[], OFlag::O_PATH)?;
        for c in inner {
            cur = openat(&cur, c.as_os_str(), step, Mode::empty())?;
        }
        let last_flags = flags | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        Ok(openat(&cur, last.as_os_str(), last_flags, Mode::empty())?)
    }

    /// The parent of `comps` opened as a handle, with the final name; `None` for the root.
    fn parent(&self, comps: &[OsString]) -> io::Result<Option<(OwnedFd, OsString)>> {
        let Some((name, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let fd = self.open_dir(parent, OFlag::O_PATH)?;
        Ok(Some((fd, name.clone())))
    }

    /// `/proc/self/fd/N[/NAME]`, for reading xattrs of an entry without opening it.
    fn proc_path(fd: &OwnedFd, name: Option<&OsString>) -> io::Result<CString> {
        let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
        if let Some(n) = name {
            p.push(b'/');
            p.extend_from_slice(n.as_bytes());
        }
        CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    fn meta(&self, st: &FileStat, record: Option<Vec<u8>>) -> Option<Meta> {
        let kind = kind_of(st)?;
        let mut meta = Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: 0,
            gid: 0,
            size: if kind == FileKind::File {
                u64::try_from(st.st_size).unwrap_or(0)
            } else {
                0
            },
            mtime: st.st_mtime,
            rdev: (
                nix::sys::stat::major(st.st_rdev) as u32,
                nix::sys::stat::minor(st.st_rdev) as u32,
            ),
            dev_ino: (st.st_dev, st.st_ino),
            nlink: st.st_nlink,
        };
        if let Some((uid, gid, mode)) = record.as_deref().and_then(parse_override) {
            meta.uid = uid;
            meta.gid = gid;
            meta.mode = mode;
        }
        Some(meta)
    }

    /// The override record of an entry, when this tree reads them.
    fn record(
        &self,
        fd: &OwnedFd,
        name: Option<&OsString>,
        kind: Option<FileKind>,
    ) -> Option<Vec<u8>> {
        if self.owners != OwnerView::Recorded || kind == Some(FileKind::Symlink) {
            return None;
        }
        let p = Self::proc_path(fd, name).ok()?;
        xattr::path_lget(&p, OVERRIDE_XATTR).ok().flatten()
    }
}

impl SourceTree for DirTree {
    fn stat(&self, rel: &Path) -> io::Result<Option<Meta>> {
        let comps = rel_components(rel)?;
        let (st, fd, name) = match self.parent(&comps) {
            Ok(None) => {
                let fd = self.open_dir(&[], OFlag::O_PATH)?;
                (nix::sys::stat::fstat(&fd)?, fd, None)
            }
            Ok(Some((fd, name))) => {
                match nix::sys::stat::fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => (st, fd, Some(name)),
                    Err(e) if missing(&e.into()) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let record = self.record(&fd, name.as_ref(), kind_of(&st));
        let meta = self.meta(&st, record);
        // `unpack` turns whiteouts into 0/0 character devices; an archive's tree hides them.
        let whiteout = |m: &Meta| m.kind == FileKind::CharDevice && m.rdev == (0, 0);
        Ok(meta.filter(|m| self.owners != OwnerView::Recorded || !whiteout(m)))
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let comps = rel_components(rel)?;
        let fd = self.open_dir(&comps, OFlag::O_RDONLY)?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut names: Vec<OsString> = dir
            .iter()
            .map(|e| e.map(|e| OsString::from_vec(e.file_name().to_bytes().to_vec())))
            .collect::<Result<_, _>>()?;
        names.retain(|n| n != "." && n != "..");
        names.sort();
        Ok(names)
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let comps = rel_components(rel)?;
        let Some((fd, name)) = self.parent(&comps)? else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        Ok(PathBuf::from(nix::fcntl::readlinkat(
            &fd,
            name.as_os_str(),
        )?))
    }

    fn source(&self, rel: &Path) -> Source {
        Source::Beneath {
            root: self.root.path().to_owned(),
            rel: rel.to_owned(),
        }
    }

    fn xattrs(&self, rel: &Path) -> Vec<(String, Vec<u8>)> {
        if self.owners != OwnerView::Recorded {
            return Vec::new();
        }
        let Ok(comps) = rel_components(rel) else {
            return Vec::new();
        };
        let Ok(Some((fd, name))) = self.parent(&comps) else {
            return Vec::new();
        };
        let Ok(p) = Self::proc_path(&fd, Some(&name)) else {
            return Vec::new();
        };
        let names = xattr::path_list(&p).unwrap_or_default();
        names
            .into_iter()
            .filter(|n| crate::unpack::plan::xattr_allowed(n))
            .filter_map(|n| {
                let v = xattr::path_lget(&p, &n).ok().flatten()?;
                Some((n, v))
            })
            .collect()
    }
}
