//! Store layers seen merged, read-only, as the overlay would show them.
//!
//! A name is looked up in each layer that has its parent directory, top first: the first copy
//! shows; a whiteout ends the search; below a directory only directories merge, down to an
//! opaque one. Every path is opened from a layer's root with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, so a symlink in a layer is never followed, inside it or out of it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{Probe, all_xattrs, at, is_whiteout, kept_xattrs, opaque_at, probe_at};
use crate::build::entry::{FileKind, Meta, Source, SourceTree};
use crate::fuse::layers::open_beneath;

/// A read-only merged view of store layers, top first (whiteouts hide, opaque dirs stop the
/// merge, owners from the owner record when present). Nothing is followed out of a layer.
#[derive(Debug)]
pub struct Layered {
    layers: Vec<(PathBuf, OwnedFd)>,
    /// The layers whose roots merge: down to the first opaque root.
    root_merge: Vec<usize>,
}

/// Where a path was found.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// The layer whose copy shows.
    pub layer: usize,
    pub probe: Probe,
    /// For a directory: the layers whose copies merge into it, top first.
    pub merged: Vec<usize>,
}

/// The components of a relative path, refusing anything that could climb or is absolute.
pub(crate) fn normal_components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a path inside a layer", rel.display()),
            )),
        })
        .collect()
}

impl Layered {
    /// Opens the layers (top first).
    pub fn new(layers_top_first: &[PathBuf]) -> io::Result<Layered> {
        let mut layers = Vec::new();
        for p in layers_top_first {
            let fd = nix::fcntl::open(
                p.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| at("cannot open the layer", p, e.into()))?;
            layers.push((p.clone(), fd));
        }
        let mut root_merge = Vec::new();
        for (i, (_, fd)) in layers.iter().enumerate() {
            root_merge.push(i);
            if opaque_at(fd.as_fd(), OsStr::new(".")) {
                break;
            }
        }
        Ok(Layered { layers, root_merge })
    }

    /// The directory of layer `i`.
    pub fn layer_path(&self, i: usize) -> Option<&Path> {
        self.layers.get(i).map(|(p, _)| p.as_path())
    }

    /// Opens the directory `rel` of layer `i` with `flags`; `None` if it has none there.
    fn open_dir(&self, i: usize, rel: &Path, flags: OFlag) -> io::Result<Option<OwnedFd>> {
        let Some((_, root)) = self.layers.get(i) else {
            return Ok(None);
        };
        match open_beneath(root.as_fd(), rel, flags | OFlag::O_DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What shows at `rel`; `None` if nothing does.
    pub(crate) fn find(&self, rel: &Path) -> io::Result<Option<Hit>> {
        let comps = normal_components(rel)?;
        let Some(top) = self.layers.first() else {
            return Ok(None);
        };
        let Some(probe) = probe_at(top.1.as_fd(), OsStr::new("."))? else {
            return Ok(None);
        };
        let mut hit = Hit {
            layer: 0,
            probe,
            merged: self.root_merge.clone(),
        };
        let mut parent = PathBuf::new();
        for name in comps {
            if hit.probe.meta.kind != FileKind::Dir {
                return Ok(None);
            }
            match self.lookup(&parent, &hit.merged, name)? {
                Some(h) => hit = h,
                None => return Ok(None),
            }
            parent.push(name);
        }
        Ok(Some(hit))
    }

    /// Looks `name` up in the directory `parent` of each of `layers` (top first).
    fn lookup(&self, parent: &Path, layers: &[usize], name: &OsStr) -> io::Result<Option<Hit>> {
        let mut found: Option<Hit> = None;
        for (n, &i) in layers.iter().enumerate() {
            let Some(dir) = self.open_dir(i, parent, OFlag::O_PATH)? else {
                continue;
            };
            let Some(p) = probe_at(dir.as_fd(), name)? else {
                continue;
            };
            if is_whiteout(&p.st) {
                break;
            }
            let is_dir = p.meta.kind == FileKind::Dir;
            match &mut found {
                None => {
                    found = Some(Hit {
                        layer: i,
                        probe: p,
                        merged: if is_dir { vec![i] } else { Vec::new() },
                    });
                    if !is_dir {
                        break;
                    }
                }
                // Below a directory only directories merge; anything else ends the merge.
                Some(_) if !is_dir => break,
                Some(h) => h.merged.push(i),
            }
            let more_below = n + 1 < layers.len();
            if more_below && opaque_at(dir.as_fd(), name) {
                break;
            }
        }
        Ok(found)
    }

    /// The layer directory that holds the shown copy of `rel` open `O_PATH`, with the name.
    fn parent_of<'p>(&self, rel: &'p Path) -> io::Result<(Hit, OwnedFd, &'p OsStr)> {
        let not_found = || io::Error::from(io::ErrorKind::NotFound);
        let hit = self.find(rel)?.ok_or_else(not_found)?;
        let name = rel.file_name().ok_or_else(not_found)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self
            .open_dir(hit.layer, parent, OFlag::O_PATH)?
            .ok_or_else(not_found)?;
        Ok((hit, dir, name))
    }

    /// The merged names of the directory `rel`, sorted, with whether each shows.
    fn merged_names(&self, rel: &Path) -> io::Result<BTreeMap<OsString, bool>> {
        let hit = self
            .find(rel)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if hit.probe.meta.kind != FileKind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let mut names: BTreeMap<OsString, bool> = BTreeMap::new();
        for &i in &hit.merged {
            let Some(dir) = self.open_dir(i, rel, OFlag::O_RDONLY)? else {
                continue;
            };
            for name in list_dir(&dir)? {
                if names.contains_key(&name) {
                    continue;
                }
                let shows = match probe_at(dir.as_fd(), &name)? {
                    Some(p) => !is_whiteout(&p.st),
                    None => continue,
                };
                names.insert(name, shows);
            }
        }
        Ok(names)
    }
}

/// The names in an open directory (without `.` and `..`), sorted.
pub(crate) fn list_dir(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let read = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(read)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

impl SourceTree for Layered {
    fn stat(&self, rel: &Path) -> io::Result<Option<Meta>> {
        Ok(self.find(rel)?.map(|h| h.probe.meta))
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        Ok(self
            .merged_names(rel)?
            .into_iter()
            .filter_map(|(n, shows)| shows.then_some(n))
            .collect())
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let (_, dir, name) = self.parent_of(rel)?;
        Ok(PathBuf::from(nix::fcntl::readlinkat(&dir, name)?))
    }

    fn source(&self, rel: &Path) -> Source {
        // Nothing found: point at the top layer, where the writer's open will fail cleanly.
        let layer = self.find(rel).ok().flatten().map_or(0, |h| h.layer);
        Source::Beneath {
            root: self.layer_path(layer).unwrap_or(Path::new("")).to_owned(),
            rel: rel.to_owned(),
        }
    }

    fn xattrs(&self, rel: &Path) -> Vec<(String, Vec<u8>)> {
        match self.parent_of(rel) {
            Ok((hit, dir, name)) => all_xattrs(dir.as_fd(), name, hit.probe.meta.kind)
                .map(kept_xattrs)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}
