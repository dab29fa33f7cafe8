//! `nook cp`: files between the host and a running container, as a tar stream through a
//! pipe. The container's side runs in a helper that joins the container's user and mount
//! namespaces and chroots into its root, so every container path resolves inside the root
//! (an absolute or `..` symbolic link cannot lead out) and files keep the owners the
//! container sees; symbolic links are copied as links, never followed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::sched::CloneFlags;

use super::Record;
use super::report::{self, Report};

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Container(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CpError {
    let what = what.into();
    move |source| CpError::Io { what, source }
}

/// The name a copy gets at its destination: the source's own name when the destination is
/// an existing directory, else the destination's name (in its parent).
fn last_name(p: &str) -> Option<String> {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Writes `src` (file, directory or link) to `w` as a tar stream whose top entry is `name`.
fn archive(src: &Path, name: &str, w: impl io::Write) -> io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        b.append_dir_all(name, src)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    b.into_inner()?.flush()
}

/// Unpacks a tar stream into `dir` (every entry must stay below it): a `docker cp` into a
/// container, and the client side of a copy out of a daemon's container.
pub fn unpack(r: impl io::Read, dir: &Path) -> io::Result<()> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    for entry in a.entries()? {
        let mut e = entry?;
        let path = e.path()?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing archive entry {}", path.display()),
            ));
        }
        if !e.unpack_in(dir)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing archive entry {} (outside)", path.display()),
            ));
        }
    }
    Ok(())
}

/// Where a copy lands: the directory to unpack in, and the top entry's name.
fn placement(dest: &Path, src_name: &str) -> io::Result<(PathBuf, String)> {
    if dest.is_dir() {
        return Ok((dest.to_owned(), src_name.to_owned()));
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no destination name"))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Runs `inside` in a child that has joined the container's user and mount namespaces and
/// entered its root, with its end of the pipe; runs `outside` here with the other end.
/// Each side closes the other's end, so that end-of-file arrives.
fn in_container(
    r: &Record,
    stopped: Option<&Stopped>,
    (child_end, inside): (OwnedFd, impl FnOnce(File) -> Result<(), String>),
    (our_end, outside): (OwnedFd, impl FnOnce(File) -> io::Result<()>),
) -> Result<(), CpError> {
    let entry = match (r.entry_pid(), stopped) {
        (Some(pid), _) => {
            let open = |ns: &str| {
                File::open(format!("/proc/{pid}/ns/{ns}"))
                    .map_err(io_err("cannot open the container's namespaces"))
            };
            // O_PATH: the root of a single-mapping container is a FUSE mount made in its user
            // namespace, which refuses to be opened from outside it; only the child, once it
            // has joined that namespace, enters it.
            let root: File = nix::fcntl::open(
                format!("/proc/{pid}/root").as_str(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map(File::from)
            .map_err(|e| io_err("cannot open the container's root")(e.into()))?;
            Entry::Running {
                user: open("user")?,
                mnt: open("mnt")?,
                root,
            }
        }
        (None, Some(s)) => Entry::Stopped(s),
        (None, None) => return Err(CpError::NotRunning(r.name.clone())),
    };
    let (err_r, err_w) = pipe()?;
    let child = crate::sys::process::clone_fork(CloneFlags::empty())
        .map_err(io_err("cannot start the copy helper"))?;
    let Some(child) = child else {
        drop((err_r, our_end));
        let _ = nix::sys::prctl::set_dumpable(false);
        let result = (|| -> Result<(), String> {
            let enter = |e: nix::errno::Errno| format!("cannot enter the root: {e}");
            match &entry {
                Entry::Running { user, mnt, root } => {
                    let join = |e: nix::errno::Errno| format!("cannot join the container: {e}");
                    nix::sched::setns(user, CloneFlags::CLONE_NEWUSER).map_err(join)?;
                    nix::sched::setns(mnt, CloneFlags::CLONE_NEWNS).map_err(join)?;
                    nix::unistd::fchdir(root.as_fd()).map_err(enter)?;
                }
                Entry::Stopped(s) => {
                    let root = s.assemble()?;
                    nix::unistd::chdir(&root).map_err(enter)?;
                }
            }
            nix::unistd::chroot(".").map_err(enter)?;
            nix::unistd::chdir("/").map_err(enter)?;
            inside(File::from(child_end))
        })();
        let (code, said) = match result {
            Ok(()) => (0, Report::Done),
            Err(message) => (1, Report::Failed { exit: 1, message }),
        };
        report::write(File::from(err_w), &said);
        crate::sys::process::exit_now(code)
    };
    drop((err_w, child_end));
    let ours = outside(File::from(our_end));
    let silent = "the copy helper ended without a word";
    let said = report::read(File::from(err_r), silent);
    let _ = nix::sys::wait::waitpid(child, None);
    match said {
        Report::Done => ours.map_err(io_err("cannot copy")),
        Report::Failed { message, .. } => Err(CpError::Container(message)),
        _ => Err(CpError::Container(
            "the copy helper sent another helper's report".into(),
        )),
    }
}

/// How the helper reaches a container's root.
enum Entry<'a> {
    Running { user: File, mnt: File, root: File },
    Stopped(&'a Stopped),
}

/// A stopped container's root, assembled again for the copy: its layers and writable layer
/// under a kernel overlay in a user and mount namespace of the helper's own (or, for the copy
/// rung, its private copy).
pub struct Stopped {
    pub mapping: crate::sys::idmap::Mapping,
    /// The store's `layers/` directory and the lower layers in it, top first.
    pub layers_dir: PathBuf,
    pub lowers: Vec<String>,
    /// The container's directory (`upper/`, `work/`, or `rootfs/` on the copy rung).
    pub dir: PathBuf,
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
}

impl Stopped {
    /// In the helper: a user namespace like the container's, a mount namespace, the root.
    fn assemble(&self) -> Result<PathBuf, String> {
        let entered = crate::sys::userns::enter_store(&self.mapping);
        entered.map_err(|e| format!("cannot enter the store's user namespace: {e}"))?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("cannot make a mount namespace: {e}"))?;
        let copy = self.dir.join("rootfs");
        if copy.is_dir() {
            return Ok(copy);
        }
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make the mounts private: {e}"))?;
        crate::rootfs::overlay::mount_overlay(
            &self.layers_dir,
            &self.lowers,
            &self.dir.join("upper"),
            &self.dir.join("work"),
            &self.mountpoint,
        )
        .map_err(|e| format!("cannot assemble the container's root: {e}"))?;
        Ok(self.mountpoint.clone())
    }
}

/// `nook cp CONTAINER:SRC DEST`.
pub fn copy_out(
    r: &Record,
    stopped: Option<&Stopped>,
    src: &str,
    dest: &Path,
) -> Result<(), CpError> {
    let src_name = last_name(src).unwrap_or_else(|| "root".into());
    let (dir, name) = placement(dest, &src_name).map_err(io_err("invalid destination"))?;
    let (pr, pw) = pipe()?;
    let src = src.to_owned();
    in_container(
        r,
        stopped,
        (pw, archive_of(src, name)),
        (pr, move |rd: File| unpack(rd, &dir)),
    )
}

/// The container side of a copy out: `src` archived as `name` into the pipe.
fn archive_of(src: String, name: String) -> impl FnOnce(File) -> Result<(), String> {
    move |w: File| {
        archive(Path::new(&src), &name, w)
            .map_err(|e| format!("cannot read {src} in the container: {e}"))
    }
}

/// `nook cp SRC CONTAINER:DEST`.
pub fn copy_in(
    r: &Record,
    stopped: Option<&Stopped>,
    src: &Path,
    dest: &str,
) -> Result<(), CpError> {
    std::fs::symlink_metadata(src).map_err(io_err(format!("cannot read {}", src.display())))?;
    let src_name = last_name(&src.to_string_lossy()).unwrap_or_else(|| "root".into());
    let (pr, pw) = pipe()?;
    let dest = dest.to_owned();
    let src = src.to_owned();
    let name = src_name.clone();
    in_container(
        r,
        stopped,
        (pr, move |rd: File| {
            let (dir, name) = placement(Path::new(&dest), &src_name).map_err(|e| e.to_string())?;
            // The archive's top entry is named for the source; it is renamed in place.
            let staging = dir.join(format!(".nook-cp-{}", std::process::id()));
            std::fs::create_dir(&staging).map_err(|e| format!("cannot write {dest}: {e}"))?;
            let r = unpack(rd, &staging)
                .and_then(|()| std::fs::rename(staging.join(&src_name), dir.join(&name)));
            let _ = std::fs::remove_dir_all(&staging);
            r.map_err(|e| format!("cannot write {dest} in the container: {e}"))
        }),
        (pw, move |w: File| archive(&src, &name, w)),
    )
}

/// `nook cp CONTAINER:SRC -`: `src` as a tar stream (its top entry named for it) to `out`.
pub fn copy_out_tar(
    r: &Record,
    stopped: Option<&Stopped>,
    src: &str,
    mut out: impl io::Write,
) -> Result<(), CpError> {
    let name = last_name(src).unwrap_or_else(|| ".".into());
    let (pr, pw) = pipe()?;
    let src = src.to_owned();
    in_container(
        r,
        stopped,
        (pw, archive_of(src, name)),
        (pr, move |mut rd: File| {
            io::copy(&mut rd, &mut out)?;
            out.flush()
        }),
    )
}

/// `nook cp - CONTAINER:DIR`: the tar stream `input` unpacked into the directory `dest`.
/// Its entries are confined twice: the helper is chrooted into the container's root, and an
/// absolute or `..` entry is refused by [`unpack`].
pub fn copy_in_tar(
    r: &Record,
    stopped: Option<&Stopped>,
    mut input: impl io::Read,
    dest: &str,
) -> Result<(), CpError> {
    let (pr, pw) = pipe()?;
    let dest = dest.to_owned();
    in_container(
        r,
        stopped,
        (pr, move |rd: File| {
            if std::fs::symlink_metadata(&dest).is_err() {
                return Err(format!("no such directory {dest} in the container"));
            }
            if !Path::new(&dest).is_dir() {
                return Err(format!("{dest} is not a directory in the container"));
            }
            unpack(rd, Path::new(&dest))
                .map_err(|e| format!("cannot write {dest} in the container: {e}"))
        }),
        (pw, move |mut w: File| {
            io::copy(&mut input, &mut w).map(drop)
        }),
    )
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CpError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("cannot create a pipe")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_entries_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../out", "/abs", "a/../../b"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_mode(0o644);
            // The name is written raw, as a hostile client would, past the builder's checks.
            let raw = &mut h.as_old_mut().name;
            raw[..bad.len()].copy_from_slice(bad.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let tar = b.into_inner().unwrap();
            let err = unpack(&tar[..], d.path()).unwrap_err();
            assert!(err.to_string().contains("refusing"), "{bad}: {err}");
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn archives_keep_links_as_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let mut buf = Vec::new();
        archive(&src, "copy", &mut buf).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack(&buf[..], &out).unwrap();
        assert_eq!(std::fs::read(out.join("copy/sub/f")).unwrap(), b"data");
        assert!(
            std::fs::symlink_metadata(out.join("copy/link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(placement(&out, "x").unwrap(), (out.clone(), "x".to_owned()));
        assert_eq!(
            placement(&out.join("new"), "x").unwrap(),
            (out.clone(), "new".to_owned())
        );
    }
}
