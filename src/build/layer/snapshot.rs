//! What a RUN step changed, as layer entries.
//!
//! From a writable layer ([`diff_upper`]) every entry is a change: a 0/0 character device
//! deletes the name, an opaque directory replaces the one below. From a copied tree
//! ([`diff_tree`], the copy rung) each entry is compared with the layers it started from, as
//! BuildKit's double walk does: kind, owners, mode, size, modification time (to the
//! nanosecond), link target, device numbers and xattrs; names the layers have and the tree
//! lost become whiteouts.
//!
//! Both walks leave out nook's own mount targets: an empty file or directory at one of the
//! `exclude` paths that the layers do not have, and directories that exist (or changed) only
//! to hold them, so a step that changed nothing gives no entries. Directories of changed
//! entries come along, so the tar carries their owners and modes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::layered::{Hit, list_dir};
use super::{Probe, all_xattrs, at, is_whiteout, kept_xattrs, marked_opaque};
use crate::build::entry::{Entry, EntryKind, FileKind, Source, SourceTree};

use super::Layered;

/// Deeper trees than this are refused (no image needs them; a hostile one would exhaust the
/// stack).
const MAX_DEPTH: usize = 1024;

/// The entries a RUN made in its writable layer `upper` over `lowers`, in path order.
pub fn diff_upper(upper: &Path, lowers: &Layered, exclude: &[PathBuf]) -> io::Result<Vec<Entry>> {
    Differ::new(upper, lowers, exclude, Walk::Upper)?.run()
}

/// The copy rung: what differs between the whole `rootfs` and `lowers`, in path order.
pub fn diff_tree(rootfs: &Path, lowers: &Layered, exclude: &[PathBuf]) -> io::Result<Vec<Entry>> {
    Differ::new(rootfs, lowers, exclude, Walk::Tree)?.run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// A writable layer: what is there changed.
    Upper,
    /// A whole tree: compare.
    Tree,
}

/// What became of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Emitted,
    /// Left out as a mount target, or a directory only holding them.
    Excluded,
    Unchanged,
}

/// What became of a directory's children.
#[derive(Debug, Default)]
struct Kids {
    emitted: bool,
    excluded: bool,
    any: bool,
}

struct Differ<'a> {
    root: OwnedFd,
    root_path: PathBuf,
    lowers: &'a Layered,
    exclude: HashSet<PathBuf>,
    walk: Walk,
    /// The first path emitted for each (dev, ino) with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    out: Vec<Entry>,
}

/// The xattrs that mean a layer was written with overlay features nook cannot read.
fn unsupported_overlay(xattrs: &[(String, Vec<u8>)]) -> Option<&str> {
    xattrs.iter().map(|(n, _)| n.as_str()).find(|n| {
        ["redirect", "metacopy"]
            .iter()
            .any(|f| *n == format!("user.overlay.{f}") || *n == format!("trusted.overlay.{f}"))
    })
}

impl<'a> Differ<'a> {
    fn new(root: &Path, lowers: &'a Layered, exclude: &[PathBuf], walk: Walk) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| at("cannot open", root, e.into()))?;
        let exclude = exclude
            .iter()
            .map(|p| p.components().filter_map(normal_name).collect::<PathBuf>())
            .collect();
        Ok(Differ {
            root: fd,
            root_path: root.to_owned(),
            lowers,
            exclude,
            walk,
            links: HashMap::new(),
            out: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<Vec<Entry>> {
        let root = self.root.try_clone()?;
        let merged = match self.walk {
            Walk::Upper => {
                let x = all_xattrs(root.as_fd(), OsStr::new("."), FileKind::Dir)
                    .map_err(|e| at("cannot read", &self.root_path, e))?;
                if let Some(x) = unsupported_overlay(&x) {
                    return Err(unsupported(&self.root_path, x));
                }
                !marked_opaque(&x)
            }
            Walk::Tree => true,
        };
        self.children(Path::new(""), &root, merged, 0)?;
        Ok(self.out)
    }

    /// Walks the directory `rel` (open as `dir`); `merged` when the lowers' copy shows
    /// through it.
    fn children(
        &mut self,
        rel: &Path,
        dir: &OwnedFd,
        merged: bool,
        depth: usize,
    ) -> io::Result<Kids> {
        if depth > MAX_DEPTH {
            return Err(at(
                "the tree is too deep at",
                rel,
                io::Error::from_raw_os_error(libc::ELOOP),
            ));
        }
        let here: BTreeSet<OsString> = list_dir(dir)
            .map_err(|e| at("cannot read", rel, e))?
            .into_iter()
            .collect();
        let mut names = here.clone();
        if self.walk == Walk::Tree && merged {
            let below = self
                .lowers
                .read_dir(rel)
                .map_err(|e| at("cannot read the layers at", rel, e))?;
            names.extend(below);
        }
        let mut kids = Kids {
            any: !here.is_empty(),
            ..Kids::default()
        };
        for name in names {
            let child = rel.join(&name);
            let outcome = if here.contains(&name) {
                self.entry(&child, dir, &name, merged, depth)
                    .map_err(|e| at("cannot read", &child, e))?
            } else {
                self.whiteout(child);
                Outcome::Emitted
            };
            kids.emitted |= outcome == Outcome::Emitted;
            kids.excluded |= outcome == Outcome::Excluded;
        }
        Ok(kids)
    }

    fn whiteout(&mut self, path: PathBuf) {
        // Fixed metadata: a deletion reads the same from either rung.
        self.out.push(Entry {
            path,
            kind: EntryKind::Whiteout,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        });
    }

    /// One name of the tree being walked.
    fn entry(
        &mut self,
        child: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        merged: bool,
        depth: usize,
    ) -> io::Result<Outcome> {
        let Some(mut p) = super::probe_at(dir.as_fd(), name)? else {
            // Gone since the listing: nothing to record.
            return Ok(Outcome::Unchanged);
        };
        let lower = if merged {
            self.lowers.find(child)?
        } else {
            None
        };
        if self.walk == Walk::Upper && is_whiteout(&p.st) {
            if lower.is_none() {
                return Ok(Outcome::Unchanged);
            }
            self.whiteout(child.to_owned());
            return Ok(Outcome::Emitted);
        }
        if self.walk == Walk::Tree
            && let Some(l) = &lower
        {
            lost_record(&mut p, &l.probe);
        }
        let all = all_xattrs(dir.as_fd(), name, p.meta.kind)?;
        if self.walk == Walk::Upper
            && let Some(x) = unsupported_overlay(&all)
        {
            return Err(unsupported(child, x));
        }
        match p.meta.kind {
            FileKind::Dir => self.dir(child, dir, name, p, all, lower, merged, depth),
            // A socket cannot be stored in a layer; the one who made it is gone anyway.
            FileKind::Socket => Ok(Outcome::Unchanged),
            _ => self.leaf(child, dir, name, p, kept_xattrs(all), lower),
        }
    }

    /// A file, link, fifo or device.
    fn leaf(
        &mut self,
        child: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        p: Probe,
        xattrs: Vec<(String, Vec<u8>)>,
        lower: Option<Hit>,
    ) -> io::Result<Outcome> {
        let m = &p.meta;
        if lower.is_none()
            && m.kind == FileKind::File
            && m.size == 0
            && self.exclude.contains(child)
        {
            return Ok(Outcome::Excluded);
        }
        let target = match m.kind {
            FileKind::Symlink => Some(PathBuf::from(nix::fcntl::readlinkat(dir, name)?)),
            _ => None,
        };
        if self.walk == Walk::Tree
            && let Some(l) = &lower
            && self.same_leaf(child, &p, target.as_deref(), &xattrs, l)?
        {
            return Ok(Outcome::Unchanged);
        }
        let mut kind = match (m.kind, target) {
            (FileKind::Symlink, Some(t)) => EntryKind::Symlink(t),
            (FileKind::Fifo, _) => EntryKind::Fifo,
            (FileKind::CharDevice, _) => EntryKind::CharDevice(m.rdev.0, m.rdev.1),
            (FileKind::BlockDevice, _) => EntryKind::BlockDevice(m.rdev.0, m.rdev.1),
            _ => EntryKind::File {
                size: m.size,
                source: Source::Beneath {
                    root: self.root_path.clone(),
                    rel: child.to_owned(),
                },
            },
        };
        if m.nlink > 1 {
            match self.links.get(&m.dev_ino) {
                Some(first) => kind = EntryKind::Hardlink(first.clone()),
                None => {
                    self.links.insert(m.dev_ino, child.to_owned());
                }
            }
        }
        self.out.push(Entry {
            path: child.to_owned(),
            kind,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            xattrs,
        });
        Ok(Outcome::Emitted)
    }

    /// Whether a tree's non-directory is the lowers' copy, unchanged.
    fn same_leaf(
        &self,
        child: &Path,
        p: &Probe,
        target: Option<&Path>,
        xattrs: &[(String, Vec<u8>)],
        l: &Hit,
    ) -> io::Result<bool> {
        let (a, b) = (&p.meta, &l.probe.meta);
        let basic = a.kind == b.kind
            && a.mode == b.mode
            && (a.uid, a.gid) == (b.uid, b.gid)
            && a.size == b.size
            && a.rdev == b.rdev;
        if !basic {
            return Ok(false);
        }
        // A copied symlink keeps its target and owner but not its time (lutimes is rare in
        // copiers); its target is what matters.
        if a.kind == FileKind::Symlink {
            return Ok(target == Some(self.lowers.read_link(child)?.as_path()));
        }
        Ok(p.mtime_ns() == l.probe.mtime_ns() && xattrs == self.lowers.xattrs(child).as_slice())
    }

    /// A directory: its entry first, then what changed below it; the entry is taken back when
    /// nothing below changed and it did not either.
    #[allow(clippy::too_many_arguments)]
    fn dir(
        &mut self,
        child: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        p: Probe,
        all: Vec<(String, Vec<u8>)>,
        lower: Option<Hit>,
        merged: bool,
        depth: usize,
    ) -> io::Result<Outcome> {
        let lower_dir = lower
            .as_ref()
            .filter(|l| l.probe.meta.kind == FileKind::Dir);
        let opaque = self.walk == Walk::Upper && marked_opaque(&all) && lower_dir.is_some();
        let entry = Entry {
            path: child.to_owned(),
            kind: EntryKind::Dir,
            mode: p.meta.mode,
            uid: p.meta.uid,
            gid: p.meta.gid,
            mtime: p.meta.mtime,
            xattrs: kept_xattrs(all),
        };
        let mark = self.out.len();
        self.out.push(entry.clone());
        if opaque {
            self.out.push(Entry {
                kind: EntryKind::Opaque,
                ..entry.clone()
            });
        }
        let sub = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let below = merged && !opaque && lower_dir.is_some();
        let kids = self.children(child, &sub, below, depth + 1)?;
        let outcome = self.dir_outcome(child, &p, &entry, &kids, opaque, lower.as_ref())?;
        if outcome != Outcome::Emitted {
            self.out.truncate(mark);
        }
        Ok(outcome)
    }

    /// Whether a directory's entry stays (see [`Differ::dir`]).
    fn dir_outcome(
        &self,
        child: &Path,
        p: &Probe,
        entry: &Entry,
        kids: &Kids,
        opaque: bool,
        lower: Option<&Hit>,
    ) -> io::Result<Outcome> {
        if kids.emitted || opaque {
            return Ok(Outcome::Emitted);
        }
        let Some(l) = lower else {
            // New: dropped when it only holds mount targets, or is an empty one itself.
            let target = !kids.any && self.exclude.contains(child);
            return Ok(if kids.excluded || target {
                Outcome::Excluded
            } else {
                Outcome::Emitted
            });
        };
        let b = &l.probe.meta;
        if b.kind != FileKind::Dir {
            return Ok(Outcome::Emitted);
        }
        let same = entry.mode == b.mode
            && (entry.uid, entry.gid) == (b.uid, b.gid)
            && entry.xattrs == self.lowers.xattrs(child);
        Ok(match (same, kids.excluded) {
            // Making a mount target inside it changed its time, nothing else.
            (true, true) => Outcome::Excluded,
            (true, false) if p.mtime_ns() == l.probe.mtime_ns() => Outcome::Unchanged,
            _ => Outcome::Emitted,
        })
    }
}

/// The copy rung's copy may have lost the owner record of a single-mapping store: a file that
/// the copier wrote as the user's (root in the namespace, special bits cleared, as unpack
/// leaves it on disk) is the layers' file with the layers' owners.
fn lost_record(p: &mut Probe, lower: &Probe) {
    let (m, l) = (&mut p.meta, &lower.meta);
    if !p.record && lower.record && (m.uid, m.gid) == (0, 0) && m.mode == l.mode & !0o6000 {
        m.uid = l.uid;
        m.gid = l.gid;
        m.mode = l.mode;
    }
}

fn unsupported(path: &Path, xattr: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{} carries {xattr}: the overlay wrote it with redirect_dir or metacopy, which a layer cannot hold; mount without them",
            path.display()
        ),
    )
}

/// A normal component of an exclude path (absolute or not).
fn normal_name(c: std::path::Component<'_>) -> Option<&OsStr> {
    match c {
        std::path::Component::Normal(n) => Some(n),
        _ => None,
    }
}
