//! The config and manifest blobs of a built image, and its record in the store.
//!
//! The config is written as [`ImageConfig::to_bytes`] gives it and the manifest from a fixed
//! struct (fields in a fixed order, no annotations, no timestamps), so both digests depend on
//! the inputs alone.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{CommitError, Format};
use crate::build::config::ImageConfig;
use crate::digest::Digest;
use crate::registry::manifest::Descriptor;
use crate::registry::platform::Platform;
use crate::store::{ImageRecord, LayerRef, Store};

/// Largest config blob read back (as a pull reads them).
const CONFIG_LIMIT: u64 = 8 << 20;

/// An image manifest as written: OCI's or docker's schema2 (the same fields).
#[derive(Serialize)]
struct ManifestOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Writes `config` and a manifest over `layers` as blobs and records the image with `tags`
/// (normalised `repo:tag` strings). The config's diff_ids must be the layers', in order.
pub fn store_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[LayerRef],
    format: Format,
    tags: &[String],
) -> Result<ImageRecord, CommitError> {
    check_layers(config, layers)?;
    let config_bytes = config.to_bytes();
    let id = Digest::sha256_of(&config_bytes);
    store.put_blob(&id, &config_bytes)?;
    let layers: Vec<LayerRef> = layers
        .iter()
        .map(|l| LayerRef {
            media_type: format.layer_media_type(&l.media_type),
            ..l.clone()
        })
        .collect();
    let manifest = manifest_bytes(format, &id, config_bytes.len() as u64, &layers);
    let manifest_digest = Digest::sha256_of(&manifest);
    store.put_blob(&manifest_digest, &manifest)?;
    let mut size = 0;
    for l in &layers {
        size += store.layer_record(&l.diff_id)?.size;
    }
    let record = ImageRecord {
        id,
        manifest_digest,
        manifest_media_type: format.manifest().to_owned(),
        index_digest: None,
        repo_digests: Vec::new(),
        platform: Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        },
        created: config.created.clone(),
        layers,
        config_size: config_bytes.len() as u64,
        size,
        pulled_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    store.add_image(record.clone(), tags)?;
    // docker's daemon reports each name a build or commit gives.
    for t in tags {
        crate::events::image(store.root(), "tag", &record.id.to_string(), Some(t));
    }
    Ok(record)
}

/// The config of a stored image.
pub fn image_config(store: &Store, rec: &ImageRecord) -> Result<ImageConfig, CommitError> {
    let bytes = store.read_blob(&rec.id, CONFIG_LIMIT)?;
    ImageConfig::from_bytes(&bytes).map_err(|source| CommitError::Config {
        id: rec.id.clone(),
        source,
    })
}

/// A config that does not name exactly these layers would make an image no pull accepts.
fn check_layers(config: &ImageConfig, layers: &[LayerRef]) -> Result<(), CommitError> {
    let ids = &config.rootfs.diff_ids;
    let same = ids.len() == layers.len()
        && ids
            .iter()
            .zip(layers)
            .all(|(d, l)| *d == l.diff_id.to_string());
    if same {
        Ok(())
    } else {
        Err(CommitError::LayerMismatch {
            diff_ids: ids.len(),
            layers: layers.len(),
        })
    }
}

/// The manifest's canonical bytes.
fn manifest_bytes(
    format: Format,
    config: &Digest,
    config_size: u64,
    layers: &[LayerRef],
) -> Vec<u8> {
    let descriptor = |media_type: &str, digest: &Digest, size: u64| Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: None,
    };
    let m = ManifestOut {
        schema_version: 2,
        media_type: format.manifest(),
        config: descriptor(format.config(), config, config_size),
        layers: layers
            .iter()
            .map(|l| descriptor(&l.media_type, &l.digest, l.size))
            .collect(),
    };
    // Plain data into memory: serializing cannot fail.
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::config::History;
    use crate::registry::manifest::{self, Document};
    use crate::store::LayerRecord;

    /// A store with one fake unpacked layer of `size` bytes.
    fn store_with_layer(size: u64) -> (tempfile::TempDir, Store, LayerRef) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "single").unwrap();
        let diff_id = Digest::sha256_of(b"tar");
        let blob = Digest::sha256_of(b"blob");
        store.put_blob(&blob, b"blob").unwrap();
        let staging = store.unpack_dir(&diff_id);
        std::fs::create_dir_all(staging.join("root")).unwrap();
        let rec = LayerRecord {
            diff_id: diff_id.clone(),
            blob: blob.clone(),
            media_type: manifest::DOCKER_LAYER_GZIP.into(),
            size,
            stats: Default::default(),
        };
        store.commit_layer(&diff_id, &staging, &rec).unwrap();
        let l = LayerRef {
            digest: blob,
            diff_id,
            size: 4,
            media_type: manifest::DOCKER_LAYER_GZIP.into(),
        };
        (dir, store, l)
    }

    fn config_over(l: &LayerRef) -> ImageConfig {
        ImageConfig {
            created: Some("2024-01-02T03:04:05Z".into()),
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: crate::build::config::RootFs {
                kind: "layers".into(),
                diff_ids: vec![l.diff_id.to_string()],
            },
            history: vec![History {
                created_by: Some("COPY . /".into()),
                ..History::default()
            }],
            ..ImageConfig::default()
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_image() {
        let (_dir, store, l) = store_with_layer(42);
        let c = config_over(&l);
        let tags = ["docker.io/library/app:1".to_owned()];
        let a = store_image(&store, &c, std::slice::from_ref(&l), Format::Oci, &tags).unwrap();
        let b = store_image(&store, &c, std::slice::from_ref(&l), Format::Oci, &[]).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.id, Digest::sha256_of(&c.to_bytes()));
        assert_eq!((a.size, a.config_size), (42, c.to_bytes().len() as u64));
        assert_eq!(a.created.as_deref(), Some("2024-01-02T03:04:05Z"));
        assert_eq!(store.find_image("app:1").unwrap().id, a.id);
        assert_eq!(image_config(&store, &a).unwrap(), c);
        let mut other = c.clone();
        other.config.cmd = Some(vec!["sh".into()]);
        let o = store_image(&store, &other, &[l], Format::Oci, &[]).unwrap();
        assert_ne!(o.id, a.id);
    }

    #[test]
    fn oci_and_docker_manifests_name_their_media_types() {
        let (_dir, store, l) = store_with_layer(1);
        let c = config_over(&l);
        let oci = store_image(&store, &c, std::slice::from_ref(&l), Format::Oci, &[]).unwrap();
        let docker =
            store_image(&store, &c, std::slice::from_ref(&l), Format::Docker, &[]).unwrap();
        assert_eq!(oci.id, docker.id, "the config is the same either way");
        assert_ne!(oci.manifest_digest, docker.manifest_digest);
        for (rec, mt, config_mt, layer_mt) in [
            (
                &oci,
                manifest::OCI_MANIFEST,
                super::super::OCI_CONFIG,
                manifest::OCI_LAYER_GZIP,
            ),
            (
                &docker,
                manifest::DOCKER_MANIFEST,
                super::super::DOCKER_CONFIG,
                manifest::DOCKER_LAYER_GZIP,
            ),
        ] {
            let bytes = store.read_blob(&rec.manifest_digest, 1 << 20).unwrap();
            let Document::Image(m) = manifest::parse("x", Some(mt), &bytes).unwrap() else {
                panic!("not an image manifest");
            };
            assert_eq!(m.media_type, mt);
            assert_eq!(rec.manifest_media_type, mt);
            assert_eq!(m.config.media_type, config_mt);
            assert_eq!(m.config.digest, rec.id);
            assert_eq!(m.layers[0].media_type, layer_mt);
            assert_eq!(m.layers[0].digest, l.digest);
            assert_eq!(rec.layers[0].media_type, layer_mt);
        }
    }

    #[test]
    fn a_config_naming_other_layers_is_refused() {
        let (_dir, store, l) = store_with_layer(1);
        let mut c = config_over(&l);
        c.rootfs.diff_ids = vec![Digest::sha256_of(b"other").to_string()];
        assert!(matches!(
            store_image(&store, &c, std::slice::from_ref(&l), Format::Oci, &[]),
            Err(CommitError::LayerMismatch { .. })
        ));
        c.rootfs.diff_ids.clear();
        assert!(matches!(
            store_image(&store, &c, &[l], Format::Oci, &[]),
            Err(CommitError::LayerMismatch {
                diff_ids: 0,
                layers: 1
            })
        ));
        assert!(store.images().unwrap().is_empty());
    }
}
