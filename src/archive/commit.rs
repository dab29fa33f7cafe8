//! Checked images into the store: blobs renamed from the staging directory, layers unpacked
//! from them through the pull pipeline (which checks each blob's digest and diff_id again as
//! it reads; a layer it skips, its diff_id being in already, has its blob checked here first),
//! then the records and tags. Until every image's layers are in, no record or tag is written;
//! if one fails, the blobs and layers this load added are removed again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::read::{Blob, Image};
use super::{ArchiveError, LoadProgress, Loaded};
use crate::digest::{Digest, HashingReader};
use crate::pull::PullError;
use crate::store::{ImageRecord, LayerRef, Store};
use crate::sys::confined::remove_tree;
use crate::unpack::Owners;

/// What this load put into the store, to take out again if it fails.
#[derive(Default)]
struct Added {
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

impl Added {
    fn undo(&self, store: &Store) {
        for d in &self.layers {
            let dir = store.layer_dir(d);
            if !dir.exists() {
                continue;
            }
            if let Err(e) = remove_tree(&dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
        for d in &self.blobs {
            let p = store.blob_path(d);
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Puts `images` into the store, all or none, and names them.
pub fn commit(
    store: &Store,
    owners: Owners,
    images: Vec<Image>,
    progress: &dyn LoadProgress,
) -> Result<Vec<Loaded>, ArchiveError> {
    let mut added = Added::default();
    for image in &images {
        if let Err(e) = put_image(store, owners, image, &mut added, progress) {
            added.undo(store);
            return Err(e);
        }
    }
    // Every record is made before any is written: only an I/O error while writing them can
    // leave some images of the archive named and not others.
    let mut records = Vec::new();
    for image in &images {
        match record_of(store, image) {
            Ok(r) => records.push(r),
            Err(e) => {
                added.undo(store);
                return Err(e);
            }
        }
    }
    let mut out = Vec::new();
    for (image, record) in images.into_iter().zip(records) {
        store.add_image(record, &image.names)?;
        out.push(Loaded {
            id: image.config.digest.clone(),
            names: image.names,
        });
    }
    Ok(out)
}

fn put_image(
    store: &Store,
    owners: Owners,
    image: &Image,
    added: &mut Added,
    progress: &dyn LoadProgress,
) -> Result<(), ArchiveError> {
    check_unread_layers(store, image)?;
    put_staged(store, &image.config, added)?;
    for (_, blob) in &image.layers {
        put_staged(store, blob, added)?;
    }
    let layers: Vec<LayerRef> = image.layers.iter().map(|(l, _)| l.clone()).collect();
    progress.say(&format!(
        "Loading {} ({} layers)",
        image.config.digest,
        layers.len()
    ));
    // Noted before unpacking: layers unpack in parallel, and those that finished stay in
    // the store when another fails.
    for l in &layers {
        if !store.has_layer(&l.diff_id) && !added.layers.contains(&l.diff_id) {
            added.layers.push(l.diff_id.clone());
        }
    }
    crate::pull::unpack_stored(store, owners, &layers).map_err(|source| ArchiveError::Unpack {
        id: image.config.digest.to_string(),
        source,
    })?;
    put_bytes(store, &image.manifest.0, &image.manifest.1, added)?;
    if let Some((d, bytes)) = &image.index {
        put_bytes(store, d, bytes, added)?;
    }
    Ok(())
}

/// Checks the layers unpacking will not read against their diff_ids: a diff_id the store has
/// already, or one an earlier listing unpacks from another blob, is skipped by the pull
/// pipeline, and the image would name a blob that is not its layer (what a push or save then
/// sends). A blob already paired with its diff_id in the store is not read again.
fn check_unread_layers(store: &Store, image: &Image) -> Result<(), ArchiveError> {
    let mut unpacked_from: HashMap<&Digest, &Digest> = HashMap::new();
    for (l, blob) in &image.layers {
        let read_by_unpack = if store.has_layer(&l.diff_id) {
            store.layer_record(&l.diff_id).ok().map(|r| r.blob)
        } else {
            Some((*unpacked_from.entry(&l.diff_id).or_insert(&l.digest)).clone())
        };
        if read_by_unpack.as_ref() == Some(&l.digest) {
            continue;
        }
        // A blob an earlier image of this load shares is in the store by now.
        let path = if store.has_blob(&l.digest) {
            store.blob_path(&l.digest)
        } else {
            blob.path.clone()
        };
        check_diff_id(&path, l).map_err(|source| ArchiveError::Unpack {
            id: image.config.digest.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Whether the blob at `path` inflates to the layer's diff_id, as the pull pipeline checks it.
fn check_diff_id(path: &Path, l: &LayerRef) -> Result<(), PullError> {
    let staging = |source| PullError::Staging {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(staging)?;
    let inflated = super::inflate(file).map_err(staging)?;
    let mut tar = HashingReader::new(inflated, l.diff_id.algorithm());
    io::copy(&mut tar, &mut io::sink()).map_err(|source| PullError::Stream {
        digest: l.digest.to_string(),
        source,
    })?;
    let (actual, _) = tar.finish();
    if actual != l.diff_id {
        return Err(PullError::DiffId {
            digest: l.digest.to_string(),
            expected: l.diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Renames a staged, verified blob into the store unless it is there already.
fn put_staged(store: &Store, blob: &Blob, added: &mut Added) -> Result<(), ArchiveError> {
    if store.has_blob(&blob.digest) {
        return Ok(());
    }
    store.commit_blob_file(&blob.digest, &blob.path)?;
    added.blobs.push(blob.digest.clone());
    Ok(())
}

fn put_bytes(
    store: &Store,
    d: &Digest,
    bytes: &[u8],
    added: &mut Added,
) -> Result<(), ArchiveError> {
    if store.has_blob(d) {
        return Ok(());
    }
    store.put_blob(d, bytes)?;
    added.blobs.push(d.clone());
    Ok(())
}

fn record_of(store: &Store, image: &Image) -> Result<ImageRecord, ArchiveError> {
    let mut size = 0;
    for (l, _) in &image.layers {
        size += store.layer_record(&l.diff_id)?.size;
    }
    Ok(ImageRecord {
        id: image.config.digest.clone(),
        manifest_digest: image.manifest.0.clone(),
        manifest_media_type: image.manifest.2.clone(),
        index_digest: image.index.as_ref().map(|(d, _)| d.clone()),
        repo_digests: Vec::new(),
        platform: image.platform.clone(),
        created: image.created.clone(),
        layers: image.layers.iter().map(|(l, _)| l.clone()).collect(),
        config_size: image.config_size,
        size,
        pulled_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}
