//! What `nook diff` lists: a container's changes as docker and podman name them.
//!
//! The entries a commit would write ([`diff_upper`] over the writable layer, [`diff_tree`] over
//! the copy rung's tree, nook's own mount targets and the volumes left out) are compared with
//! the image's layers the way docker's tree comparison does it: a name the image lacks is added
//! (`A`), every descendant of an added directory too; a name the image has is changed (`C`); a
//! deleted name is listed once (`D`), not what was under it. A directory the image has is
//! changed when its mode, owners or xattrs are, or when anything below it is listed (so each
//! changed name comes with its parents, as docker's and podman's lists do); its time alone does
//! not count. An opaque directory (removed and made again) is the directory changed, the names
//! it hid deleted and what it holds now added or changed, which is what a comparison of the two
//! trees gives. The list is in path order: each directory before what it holds.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::layered::list_dir;
use super::{Layered, diff_tree, diff_upper};
use crate::build::entry::{Entry, EntryKind, FileKind, SourceTree};
use crate::build::{BuildError, job};
use crate::container::{Containers, Record};
use crate::fuse::layers::open_beneath;
use crate::rootfs::Rung;
use crate::store::Store;
use crate::sys::idmap::Mapping;

/// How one path changed, with docker's numbers (`Kind` of `GET /containers/{id}/changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

impl From<ChangeKind> for u8 {
    fn from(k: ChangeKind) -> u8 {
        match k {
            ChangeKind::Modified => 0,
            ChangeKind::Added => 1,
            ChangeKind::Deleted => 2,
        }
    }
}

impl TryFrom<u8> for ChangeKind {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            0 => Ok(ChangeKind::Modified),
            1 => Ok(ChangeKind::Added),
            2 => Ok(ChangeKind::Deleted),
            n => Err(format!("no change kind {n}")),
        }
    }
}

/// One changed path, as docker's Engine API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Absolute, as the container sees it.
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Kind")]
    pub kind: ChangeKind,
}

/// Which tree holds the container's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    /// A writable layer over the image's layers.
    Upper,
    /// The copy rung's whole tree.
    Tree,
}

/// The changes in `top` (a writable layer or a whole tree) against the image's `lowers`, in
/// path order; `exclude` as for [`diff_upper`].
pub fn list_changes(
    top: &Path,
    kind: Top,
    lowers: &Layered,
    exclude: &[PathBuf],
) -> io::Result<Vec<Change>> {
    let entries = match kind {
        Top::Upper => diff_upper(top, lowers, exclude)?,
        Top::Tree => diff_tree(top, lowers, exclude)?,
    };
    let mut found = classify(&entries, lowers)?;
    if kind == Top::Upper {
        hidden(top, &entries, lowers, &mut found)?;
    }
    with_parents(&mut found);
    Ok(found
        .into_iter()
        .map(|(p, kind)| Change {
            path: Path::new("/").join(p).to_string_lossy().into_owned(),
            kind,
        })
        .collect())
}

/// Each entry's own change; directories the image has with the same mode, owners and xattrs
/// are left to [`with_parents`].
fn classify(entries: &[Entry], lowers: &Layered) -> io::Result<BTreeMap<PathBuf, ChangeKind>> {
    let mut found = BTreeMap::new();
    for e in entries {
        let kind = match &e.kind {
            EntryKind::Opaque => continue,
            EntryKind::Whiteout => ChangeKind::Deleted,
            EntryKind::Dir => match lowers.find(&e.path)? {
                None => ChangeKind::Added,
                Some(hit) => {
                    let m = &hit.probe.meta;
                    let same = m.kind == FileKind::Dir
                        && (m.mode, m.uid, m.gid) == (e.mode, e.uid, e.gid)
                        && lowers.xattrs(&e.path) == e.xattrs;
                    if same {
                        continue;
                    }
                    ChangeKind::Modified
                }
            },
            _ if lowers.find(&e.path)?.is_some() => ChangeKind::Modified,
            _ => ChangeKind::Added,
        };
        found.insert(e.path.clone(), kind);
    }
    Ok(found)
}

/// The names the image has in a directory that a writable layer made opaque (or in one below
/// it) and the layer does not: deleted, though no whiteout says so.
fn hidden(
    upper: &Path,
    entries: &[Entry],
    lowers: &Layered,
    found: &mut BTreeMap<PathBuf, ChangeKind>,
) -> io::Result<()> {
    let opaque: Vec<&Path> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Opaque)
        .map(|e| e.path.as_path())
        .collect();
    if opaque.is_empty() {
        return Ok(());
    }
    let root = nix::fcntl::open(
        upper,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dirs = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && opaque.iter().any(|o| e.path.starts_with(o)));
    for d in dirs {
        let below = match lowers.find(&d.path)? {
            Some(hit) if hit.probe.meta.kind == FileKind::Dir => lowers.read_dir(&d.path)?,
            _ => continue,
        };
        let here = names_in(&root, &d.path)?;
        for name in below.into_iter().filter(|n| !here.contains(n)) {
            found.insert(d.path.join(name), ChangeKind::Deleted);
        }
    }
    Ok(())
}

/// The names in the directory `rel` of the tree open as `root`.
fn names_in(root: &OwnedFd, rel: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let dir = open_beneath(root.as_fd(), rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    list_dir(&dir)
}

/// Every directory above a listed change is listed too: changed, unless it was added.
fn with_parents(found: &mut BTreeMap<PathBuf, ChangeKind>) {
    let parents: Vec<PathBuf> = found
        .keys()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|a| !a.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    for p in parents {
        found.entry(p).or_insert(ChangeKind::Modified);
    }
}

/// The changes of `record`'s container against its image, read in the store's user namespace
/// (every file readable whatever its owner). The caller must be single-threaded.
pub fn container_changes(
    store: &Store,
    mapping: &Mapping,
    record: &Record,
) -> Result<Vec<Change>, BuildError> {
    let image = store.image(&record.image_id)?;
    let lowers: Vec<PathBuf> = image
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_root(&l.diff_id))
        .collect();
    let mut exclude: Vec<PathBuf> = crate::build::run::NOOK_MOUNTS
        .iter()
        .map(PathBuf::from)
        .collect();
    exclude.extend(
        record
            .volumes
            .iter()
            .filter_map(|v| crate::build::run::clean_rel(&v.target)),
    );
    let dir = Containers::new(store.root()).dir_of(&record.id);
    let (top, kind) = match record.driver {
        Some(Rung::Copy) if dir.join("rootfs").is_dir() => (dir.join("rootfs"), Top::Tree),
        _ => (dir.join("upper"), Top::Upper),
    };
    if !top.is_dir() {
        return Ok(Vec::new());
    }
    Ok(job::in_store(mapping, || {
        let below = Layered::new(&lowers).map_err(|e| format!("cannot read the layers: {e}"))?;
        list_changes(&top, kind, &below, &exclude)
            .map_err(|e| format!("cannot read the container's changes: {e}"))
    })?)
}
