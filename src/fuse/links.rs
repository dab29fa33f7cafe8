//! Every name of a lower hard link, for its copy-up.
//!
//! A lower file with several names is one inode of the merged tree. When it is copied up, all
//! of its names that still show it must move to the upper copy together (linked to it), as the
//! kernel overlay with `index=on` and fuse-overlayfs do: a name left behind would show the old
//! data, and after a restart it would be a different file. The kernel may not have asked for
//! every name yet, so the layer itself says which there are: it is walked once, the first
//! time one of its hard links is copied up (lower layers never change), through root-confined
//! handles, following no symlink. Each name found is looked up through the merged tree, so
//! a name removed (whited out), hidden by an opaque directory or replaced stays as it is.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::layers::{Layer, Layers, stat_in};
use super::overlay::{Overlay, Result};
use super::table::{Kind, ROOT};

/// Names of a layer's files with several links, by backing inode.
type Names = HashMap<u64, Vec<PathBuf>>;

/// The walked lower layers.
#[derive(Debug, Default)]
pub struct LowerLinks {
    layers: Mutex<HashMap<usize, Arc<Names>>>,
}

impl LowerLinks {
    /// The names of backing inode `ino` of lower layer `layer`.
    fn names(&self, layers: &Layers, layer: usize, ino: u64) -> Vec<PathBuf> {
        let known = self.layers.lock().ok().and_then(|l| l.get(&layer).cloned());
        let names = match known {
            Some(n) => n,
            None => {
                let n = Arc::new(walk(layers, layer));
                if let Ok(mut l) = self.layers.lock() {
                    l.insert(layer, n.clone());
                }
                n
            }
        };
        names.get(&ino).cloned().unwrap_or_default()
    }
}

/// Every non-directory with more than one link in lower layer `i`.
fn walk(layers: &Layers, i: usize) -> Names {
    let mut out = Names::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(fd) = layers.open(Layer::Lower(i), &rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        else {
            continue;
        };
        let Ok(probe) = fd.try_clone() else { continue };
        let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
            continue;
        };
        for e in dir.iter().map_while(|e| e.ok()) {
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if e.file_type() == Some(nix::dir::Type::Directory) {
                stack.push(rel.join(name));
                continue;
            }
            let Ok(st) = stat_in(probe.as_fd(), name) else {
                continue;
            };
            if Kind::from_mode(st.st_mode) == Kind::Dir {
                stack.push(rel.join(name));
            } else if st.st_nlink > 1 {
                out.entry(st.st_ino).or_default().push(rel.join(name));
            }
        }
    }
    out
}

impl Overlay {
    /// Makes every name that shows the lower hard link `link` a name of its node, so that a
    /// copy-up links them all.
    pub(super) fn learn_link_names(&self, link: (usize, u64)) {
        for path in self.links.names(&self.layers, link.0, link.1) {
            // A name that no longer shows this file is not one of its names.
            let _ = self.learn_link_name(&path, link);
        }
    }

    fn learn_link_name(&self, path: &Path, link: (usize, u64)) -> Result<()> {
        let comps: Vec<&OsStr> = path.iter().collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Ok(());
        };
        let mut cur = ROOT;
        for c in dirs {
            let (pnode, ppath) = self.node(cur)?;
            let found = self.find(&pnode, &ppath, c)?.ok_or(Errno::ENOENT)?;
            if found.kind != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            cur = self.remember(cur, c, found)?;
        }
        let (pnode, ppath) = self.node(cur)?;
        let found = self.find(&pnode, &ppath, last)?.ok_or(Errno::ENOENT)?;
        if found.upper || found.link != Some(link) {
            return Ok(());
        }
        // The table joins a name with a known link identity to that link's node.
        self.remember(cur, last, found)?;
        Ok(())
    }
}
