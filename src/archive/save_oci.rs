//! OCI image layouts, as a tar (oci-archive) or a directory (oci-dir): `oci-layout`,
//! `index.json` and `blobs/sha256/*` as stored. Each name is an index entry carrying the full
//! name in `org.opencontainers.image.ref.name` (podman 4.3 writes it so, not the bare tag) and
//! in `io.containerd.image.name` (as docker ≥ 25 and containerd write it). An image stored with docker's
//! schema2 manifest gets an OCI manifest over the same blobs (media types changed, config
//! unchanged, so its id stays), since OCI readers such as skopeo and podman want OCI types.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::names::{CONTAINERD_NAME, REF_NAME};
use super::out::{Entries, Source};
use super::read::OCI_CONFIG;
use super::{ArchiveError, SaveItem};
use crate::digest::Digest;
use crate::registry::manifest::{
    self, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, Descriptor, Document, MANIFEST_LIMIT, OCI_INDEX,
    OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::store::{ImageRecord, Store};

#[derive(Serialize)]
struct ManifestOut {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct IndexOut {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// The OCI media type for a layer docker's schema2 names.
fn oci_layer_type(docker: &str) -> String {
    match docker {
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP.to_owned(),
        "application/vnd.docker.image.rootfs.diff.tar" => OCI_LAYER_TAR.to_owned(),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_owned()
        }
        other => other.to_owned(),
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: None,
    }
}

/// The image's manifest as an OCI layout holds it: the stored one, or an OCI one over the
/// same blobs for a docker schema2 image.
fn oci_manifest(store: &Store, rec: &ImageRecord) -> Result<(Digest, Vec<u8>), ArchiveError> {
    let stored = store.read_blob(&rec.manifest_digest, MANIFEST_LIMIT)?;
    let what = rec.manifest_digest.to_string();
    let doc = manifest::parse(&what, Some(&rec.manifest_media_type), &stored)
        .map_err(|source| ArchiveError::StoredManifest { what, source })?;
    let Document::Image(m) = doc else {
        return Ok((rec.manifest_digest.clone(), stored));
    };
    if m.media_type != DOCKER_MANIFEST {
        return Ok((rec.manifest_digest.clone(), stored));
    }
    let out = ManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: descriptor(OCI_CONFIG, &m.config.digest, m.config.size),
        layers: m
            .layers
            .iter()
            .map(|l| descriptor(&oci_layer_type(&l.media_type), &l.digest, l.size))
            .collect(),
    };
    // Plain data into memory: serializing cannot fail.
    let bytes = serde_json::to_vec(&out).unwrap_or_default();
    Ok((Digest::sha256_of(&bytes), bytes))
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// The layout's entries: `oci-layout`, the blobs, `index.json` last.
fn entries(store: &Store, items: &[SaveItem]) -> Result<Entries, ArchiveError> {
    let mut e = Entries::default();
    e.add(
        "oci-layout".into(),
        Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    e.add("blobs".into(), Source::Dir);
    e.add("blobs/sha256".into(), Source::Dir);
    let mut index = Vec::new();
    for item in items {
        let rec = &item.image;
        for l in &rec.layers {
            e.add(
                blob_name(&l.digest),
                Source::File(store.blob_path(&l.digest)),
            );
        }
        e.add(blob_name(&rec.id), Source::File(store.blob_path(&rec.id)));
        let (digest, bytes) = oci_manifest(store, rec)?;
        let mut d = descriptor(OCI_MANIFEST, &digest, bytes.len() as u64);
        d.platform = Some(rec.platform.clone());
        e.add(blob_name(&digest), Source::Bytes(bytes));
        if item.names.is_empty() {
            index.push(d.clone());
        }
        for n in &item.names {
            let mut named = d.clone();
            named.annotations = Some(HashMap::from([
                (REF_NAME.to_owned(), n.clone()),
                (CONTAINERD_NAME.to_owned(), n.clone()),
            ]));
            index.push(named);
        }
    }
    let index = IndexOut {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: index,
    };
    // Plain data into memory: serializing cannot fail.
    let bytes = serde_json::to_vec(&index).unwrap_or_default();
    e.add("index.json".into(), Source::Bytes(bytes));
    Ok(e)
}

/// Writes an oci-archive of `items` to `w`.
pub fn write_tar(store: &Store, items: &[SaveItem], w: &mut dyn Write) -> Result<(), ArchiveError> {
    entries(store, items)?.write_tar(w)
}

/// Writes an OCI layout of `items` into the new or empty directory `dir`.
pub fn write_dir(store: &Store, items: &[SaveItem], dir: &Path) -> Result<(), ArchiveError> {
    entries(store, items)?.write_dir(dir)
}
