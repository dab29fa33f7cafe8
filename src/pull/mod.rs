//! Pulling an image: registry → store → unpack, layers in parallel and streamed.
//!
//! Each layer runs as a pipeline of threads: a fetch stage reads the blob (first what an
//! earlier, interrupted pull left in `tmp/partial-*`, then the network from that offset),
//! appends new bytes to the partial file and hashes everything; an inflate stage decompresses;
//! the layer's own thread hashes the tar stream (the diff_id) and unpacks it as the bytes
//! arrive. Only when both digests match are the blob and the layer renamed into the store. Up
//! to four layers run at once. The pipeline reports what it does through [`Progress`], which
//! the caller draws (bars, lines or nothing); it prints nothing itself. Used by `nook pull` and,
//! for missing images, `nook run` (through `nook pull`).

mod layer;
mod local;
mod stream;

pub(crate) use stream::read_full;

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use oci_spec::image::ImageConfiguration;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::manifest::{Document, ImageManifest};
use crate::registry::platform::Platform;
use crate::registry::{Endpoint, Registry, RegistryError};
use crate::store::{ImageRecord, LayerRef, Store, StoreError};
use crate::unpack::{Owners, UnpackError};

pub use local::unpack_stored;

const CONFIG_LIMIT: u64 = 8 << 20;
const PARALLEL_LAYERS: usize = 4;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: the image config is not valid")]
    Config {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: the config lists {diff_ids} layer digests for {layers} layers")]
    LayerCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{what}: the config has an invalid layer digest {value:?}")]
    DiffIdFormat { what: String, value: String },
    #[error("{what}: the image is for {found}, not {want} (choose another tag or --platform)")]
    WrongPlatform {
        what: String,
        found: String,
        want: String,
    },
    #[error("layer {digest}: download failed")]
    Download {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest}: {actual} bytes received, {expected} expected")]
    Size {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "layer {digest}: content digest is {actual}: the registry sent corrupt or altered data"
    )]
    BlobDigest { digest: String, actual: Digest },
    #[error("layer {digest}: uncompressed content is {actual}, the image config says {expected}")]
    DiffId {
        digest: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("layer {digest}: cannot read the layer stream")]
    Stream {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare {path}")]
    Staging {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Staging {
        path: path.display().to_string(),
        source,
    }
}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// The digest the reference resolved to (the index's when there was one).
    pub digest: Digest,
    /// Whether anything new was stored.
    pub fresh: bool,
}

/// Where a layer is, in docker's words (what `docker pull` prints beside each layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    Downloading,
    /// Downloading again from where an interrupted pull stopped.
    Resuming,
    Extracting,
    AlreadyExists,
    PullComplete,
}

impl LayerState {
    pub fn label(self) -> &'static str {
        match self {
            LayerState::Downloading => "Downloading",
            LayerState::Resuming => "Resuming",
            LayerState::Extracting => "Extracting",
            LayerState::AlreadyExists => "Already exists",
            LayerState::PullComplete => "Pull complete",
        }
    }
}

/// What a pull reports as it goes. The caller draws it; layers report from their own threads.
pub trait Progress: Sync {
    /// A line about the whole pull (`latest: Pulling from library/busybox`).
    fn say(&self, text: &str);
    /// The progress of one layer blob of `size` bytes.
    fn layer(&self, digest: &Digest, size: u64) -> Box<dyn LayerProgress + '_>;
}

/// The progress of one layer.
pub trait LayerProgress: Sync {
    /// The layer moved on to `state`.
    fn status(&self, state: LayerState);
    /// `n` more bytes of the blob arrived.
    fn advance(&self, n: u64);
    /// The layer is finished, in `state` (already there, or pulled).
    fn done(&self, state: LayerState);
}

/// Everything one pull needs.
pub struct Puller<'a> {
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub owners: Owners,
    pub platform: Platform,
    /// `--platform` was given: a single-platform image of another platform is an error.
    pub platform_given: bool,
    pub progress: &'a dyn Progress,
}

struct Job<'p> {
    layer: LayerRef,
    bar: Box<dyn LayerProgress + 'p>,
}

impl Puller<'_> {
    /// Pulls `reference`, trying mirrors first where configured.
    pub fn pull(&self, reference: &Reference) -> Result<Pulled, PullError> {
        let _gc = self.store.lock("gc", false)?;
        let endpoints = self.registry.endpoints(reference);
        let mut last = None;
        for ep in &endpoints {
            match self.pull_from(ep, reference) {
                Ok(p) => {
                    let name = reference.familiar_repository();
                    let id = match reference.tagged() {
                        Some(t) => crate::events::familiar(&t),
                        None => format!("{name}@{}", reference.manifest_reference()),
                    };
                    let attrs = [("name", name.as_str())];
                    crate::events::record(self.store.root(), "image", "pull", &id, &attrs);
                    return Ok(p);
                }
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.host, error = %e, "mirror failed; trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            PullError::Registry(RegistryError::NotFound {
                what: reference.to_string(),
            })
        }))
    }

    fn pull_from(&self, ep: &Endpoint, reference: &Reference) -> Result<Pulled, PullError> {
        let what = reference.to_string();
        self.progress.say(&format!(
            "{}: Pulling from {}",
            reference.manifest_reference(),
            reference.path()
        ));
        let (manifest, index) = self.registry.resolve(ep, reference, &self.platform)?;
        let Document::Image(image) = &manifest.document else {
            return Err(PullError::Registry(RegistryError::NestedIndex {
                url: what,
            }));
        };
        let repo = reference.path();
        let config = self.image_config(ep, repo, &what, image)?;
        let platform = Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        };
        if index.is_none() {
            let mismatch = wrong_platform(&what, &platform, &self.platform);
            match mismatch {
                Some(err) if self.platform_given => return Err(err),
                Some(err) => tracing::warn!("{err}"),
                None => {}
            }
        }
        let layers = layer_refs(&what, image, config.rootfs().diff_ids())?;
        let fresh_layers = self.fetch_layers(ep, repo, &layers)?;
        self.store.put_blob(&manifest.digest, &manifest.bytes)?;
        if let Some(i) = &index {
            self.store.put_blob(&i.digest, &i.bytes)?;
        }
        let top = index
            .as_ref()
            .map_or(&manifest.digest, |i| &i.digest)
            .clone();
        let mut size = 0;
        for l in &layers {
            size += self.store.layer_record(&l.diff_id)?.size;
        }
        let existed = self.store.image(&image.config.digest).is_ok();
        let record = ImageRecord {
            id: image.config.digest.clone(),
            manifest_digest: manifest.digest.clone(),
            manifest_media_type: image.media_type.clone(),
            index_digest: index.as_ref().map(|i| i.digest.clone()),
            repo_digests: vec![format!("{}@{}", reference.repository(), top)],
            platform,
            created: config.created().clone(),
            layers,
            config_size: image.config.size,
            size,
            pulled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let tags: Vec<String> = reference.tagged().into_iter().collect();
        self.store.add_image(record.clone(), &tags)?;
        // Pushes mount these blobs from here rather than uploading them again.
        let mut blobs: Vec<&Digest> = record.layers.iter().map(|l| &l.digest).collect();
        blobs.push(&record.id);
        self.store
            .add_blob_sources(&blobs, &reference.repository())?;
        Ok(Pulled {
            record,
            digest: top,
            fresh: fresh_layers > 0 || !existed,
        })
    }

    /// The image's config, from the store or else the registry (then kept in the store).
    fn image_config(
        &self,
        ep: &Endpoint,
        repo: &str,
        what: &str,
        image: &ImageManifest,
    ) -> Result<ImageConfiguration, PullError> {
        let digest = &image.config.digest;
        let bytes = if self.store.has_blob(digest) {
            self.store.read_blob(digest, CONFIG_LIMIT)?
        } else {
            let b = self.registry.fetch_small_blob(
                ep,
                repo,
                digest,
                image.config.size,
                CONFIG_LIMIT,
            )?;
            self.store.put_blob(digest, &b)?;
            b
        };
        serde_json::from_slice(&bytes).map_err(|source| PullError::Config {
            what: what.to_owned(),
            source,
        })
    }

    /// Fetches every layer the store lacks, several at once; returns how many were new.
    fn fetch_layers(
        &self,
        ep: &Endpoint,
        repo: &str,
        layers: &[LayerRef],
    ) -> Result<usize, PullError> {
        let jobs: Vec<Job<'_>> = layers
            .iter()
            .map(|l| Job {
                layer: l.clone(),
                bar: self.progress.layer(&l.digest, l.size),
            })
            .collect();
        let next = AtomicUsize::new(0);
        let fresh = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let errors: Mutex<Vec<(usize, PullError)>> = Mutex::new(Vec::new());
        thread::scope(|s| {
            for _ in 0..PARALLEL_LAYERS.min(jobs.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= jobs.len() || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        match self.fetch_layer(ep, repo, &jobs[i]) {
                            Ok(true) => {
                                fresh.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                failed.store(true, Ordering::SeqCst);
                                errors
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((i, e));
                            }
                        }
                    }
                });
            }
        });
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        errors.sort_by_key(|(i, _)| *i);
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(fresh.into_inner()),
        }
    }
}

/// The error for a single-platform image (no index chose it) that cannot run on `want`:
/// fatal when the user named the platform, a warning otherwise (docker pulls it anyway).
fn wrong_platform(what: &str, found: &Platform, want: &Platform) -> Option<PullError> {
    found
        .fitness_on(want)
        .is_none()
        .then(|| PullError::WrongPlatform {
            what: what.to_owned(),
            found: found.to_string(),
            want: want.to_string(),
        })
}

/// The manifest's layers paired with the config's diff_ids, which must match one for one.
fn layer_refs(
    what: &str,
    image: &ImageManifest,
    diff_ids: &[String],
) -> Result<Vec<LayerRef>, PullError> {
    if diff_ids.len() != image.layers.len() {
        return Err(PullError::LayerCount {
            what: what.to_owned(),
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        });
    }
    image
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(desc, diff)| {
            let diff_id = Digest::parse(diff).map_err(|_| PullError::DiffIdFormat {
                what: what.to_owned(),
                value: diff.clone(),
            })?;
            Ok(LayerRef {
                digest: desc.digest.clone(),
                diff_id,
                size: desc.size,
                media_type: desc.media_type.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::Descriptor;

    fn descriptor(content: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: Digest::sha256_of(content),
            size: content.len() as u64,
            platform: None,
            annotations: None,
        }
    }

    fn manifest(layers: &[&[u8]]) -> ImageManifest {
        ImageManifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: descriptor(b"config"),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
        }
    }

    #[test]
    fn layers_pair_with_diff_ids_in_order() {
        let m = manifest(&[b"one", b"two!"]);
        let diffs = [Digest::sha256_of(b"d1"), Digest::sha256_of(b"d2")].map(|d| d.to_string());
        let refs = layer_refs("x", &m, &diffs).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].digest, Digest::sha256_of(b"two!"));
        assert_eq!(refs[1].diff_id, Digest::sha256_of(b"d2"));
        assert_eq!(refs[1].size, 4);
    }

    #[test]
    fn a_config_that_disagrees_with_the_manifest_is_refused() {
        let m = manifest(&[b"one", b"two"]);
        let one = [Digest::sha256_of(b"d1").to_string()];
        assert!(matches!(
            layer_refs("x", &m, &one),
            Err(PullError::LayerCount {
                diff_ids: 1,
                layers: 2,
                ..
            })
        ));
        let bad = [one[0].clone(), "sha256:nothex".to_owned()];
        match layer_refs("x", &m, &bad) {
            Err(PullError::DiffIdFormat { value, .. }) => assert_eq!(value, "sha256:nothex"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn platform_mismatch_is_named() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let s390x = Platform::parse("linux/s390x").unwrap();
        assert!(wrong_platform("x", &amd64, &amd64).is_none());
        let err = wrong_platform("x", &s390x, &amd64).unwrap();
        assert_eq!(
            err.to_string(),
            "x: the image is for linux/s390x, not linux/amd64 (choose another tag or --platform)"
        );
    }

    #[test]
    fn layer_states_read_as_docker_prints_them() {
        assert_eq!(LayerState::AlreadyExists.label(), "Already exists");
        assert_eq!(LayerState::PullComplete.label(), "Pull complete");
        assert_eq!(LayerState::Resuming.label(), "Resuming");
    }
}
