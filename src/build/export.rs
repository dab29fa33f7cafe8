//! `nook export`: a container's filesystem flattened into one tar, no whiteouts.
//!
//! The container's writable layer (or, on the copy rung, its whole copied tree) is read over
//! its image's store layers as the overlay shows them — whiteouts hide, opaque directories stop
//! the merge, owners come from the id mapping or the single mapping's owner records — and
//! written as a plain tar, hard links kept, the way `docker export` and `podman export` write
//! it. The walk runs in the store's user namespace, where every file can be read whatever its
//! owner, and never follows a symlink of the tree.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::context::{CopyRequest, plan_copy};
use super::entry::Entry;
use super::layer::{Layered, WriteOptions, write_tar};
use super::{BuildError, job};
use crate::container::{Containers, Record};
use crate::rootfs::Rung;
use crate::store::Store;
use crate::sys::idmap::Mapping;

/// The layers, top first, that show `record`'s filesystem: its writable layer (when it has
/// one) over its image's layers, or its copied tree alone on the copy rung.
pub fn container_layers(store: &Store, record: &Record) -> Result<Vec<PathBuf>, BuildError> {
    let dir = Containers::new(store.root()).dir_of(&record.id);
    if record.driver == Some(Rung::Copy) {
        let rootfs = dir.join("rootfs");
        if rootfs.is_dir() {
            return Ok(vec![rootfs]);
        }
    }
    let image = store.image(&record.image_id)?;
    let mut layers = Vec::with_capacity(image.layers.len() + 1);
    let upper = dir.join("upper");
    if upper.is_dir() {
        layers.push(upper);
    }
    layers.extend(
        image
            .layers
            .iter()
            .rev()
            .map(|l| store.layer_root(&l.diff_id)),
    );
    Ok(layers)
}

/// Writes the merged tree of `layers` (top first) as a tar to `out`; returns the number of
/// bytes of file content. The caller must be single-threaded (the walk runs in a forked child
/// in the store's user namespace, writing to its copy of `out`).
pub fn export(mapping: &Mapping, layers: &[PathBuf], out: &File) -> Result<u64, BuildError> {
    Ok(job::in_store(mapping, || {
        write_tree(layers, out).map_err(|e| format!("cannot export: {e}"))
    })?)
}

/// Plans the whole tree as one copy of `/` to `/` and writes it.
fn write_tree(layers: &[PathBuf], out: &File) -> Result<u64, String> {
    let entries = tree_entries(layers)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let bytes = write_tar(&entries, &mut w, &WriteOptions::default()).map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Every entry the merged `layers` show, in path order, with hard links as links.
pub fn tree_entries(layers: &[PathBuf]) -> Result<Vec<Entry>, String> {
    let tree = Layered::new(layers).map_err(|e| format!("cannot read the layers: {e}"))?;
    let nothing = Layered::new(&[]).map_err(|e| e.to_string())?;
    let req = CopyRequest {
        sources: vec!["/".into()],
        dest: "/".into(),
        workdir: "/".into(),
        ..CopyRequest::default()
    };
    plan_copy(&tree, &nothing, &req, Path::new("/nonexistent")).map_err(|e| e.to_string())
}
