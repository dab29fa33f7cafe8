//! Pushing an image: store → registry, blobs in parallel, the manifest last.
//!
//! [`Pusher::push`] plans first ([`plan`]: the manifest format and what each layer becomes),
//! checks that every blob it will read is in the store, then sends the config and the layers
//! several at once ([`blob`]: HEAD first, a cross-repository mount when the store knows
//! another repository of the registry that has the blob, else an upload, restarted on 429,
//! 5xx or a dropped connection). Only when every blob is in does the manifest go: the stored
//! bytes unchanged when nothing changed (so the digest at the destination is the source's),
//! else the rewritten manifest. Like the pull, it reports through [`PushProgress`] and prints
//! nothing itself.

mod blob;
pub mod plan;

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::manifest::MANIFEST_LIMIT;
use crate::registry::{Endpoint, Registry, RegistryError};
use crate::store::{ImageRecord, Store, StoreError};
use blob::BlobJob;
use plan::{SentLayer, plan_layer, rewrite_manifest, stored_format};

const DEFAULT_JOBS: usize = 4;

/// The manifest format at the destination (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    V2s2,
}

/// The compression of pushed layers (`--compression-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    Zstd,
}

impl LayerCompression {
    pub fn name(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        }
    }
}

/// What the caller asked for; `None` keeps what the store has.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub format: Option<ManifestFormat>,
    pub compression: Option<LayerCompression>,
    /// Blobs sent at once; 0 means the default (4).
    pub jobs: usize,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {digest} of image {image} is not in the store: pull the image again")]
    MissingBlob { digest: String, image: String },
    #[error(
        "blob {digest} in the store is corrupt (its content is {actual}): pull the image again"
    )]
    CorruptBlob { digest: String, actual: Digest },
    #[error("cannot read blob {digest} from the store")]
    Read {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} has media type {media_type:?}, which nook cannot push")]
    LayerType { digest: String, media_type: String },
    #[error(
        "zstd-compressed layers need an OCI manifest: add --format oci (Docker schema 2 has no zstd layer type)"
    )]
    ZstdNeedsOci,
    #[error("the stored manifest cannot be rewritten: {0}")]
    StoredManifest(String),
    #[error("{what}: the registry stored the manifest as {actual}, not {expected}")]
    ManifestDigest {
        what: String,
        expected: Digest,
        actual: String,
    },
    #[error("a push thread panicked")]
    Panicked,
}

/// Where a blob is, in docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    Preparing,
    Waiting,
    Pushing,
    /// The upload failed in a way worth another try; it starts again.
    Retrying,
}

impl BlobState {
    pub fn label(self) -> &'static str {
        match self {
            BlobState::Preparing => "Preparing",
            BlobState::Waiting => "Waiting",
            BlobState::Pushing => "Pushing",
            BlobState::Retrying => "Retrying",
        }
    }
}

/// How a blob reached the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    Pushed,
    AlreadyExists,
    /// Mounted from this repository (its path in the registry).
    Mounted {
        from: String,
    },
}

impl BlobOutcome {
    pub fn label(&self) -> String {
        match self {
            BlobOutcome::Pushed => "Pushed".to_owned(),
            BlobOutcome::AlreadyExists => "Layer already exists".to_owned(),
            BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
        }
    }
}

/// What a push reports as it goes; blobs report from their own threads.
pub trait PushProgress: Sync {
    fn say(&self, text: &str);
    /// The progress of one layer blob of `size` bytes (the stored size).
    fn blob(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress + '_>;
}

/// The progress of one blob.
pub trait BlobProgress: Sync {
    fn status(&self, state: BlobState);
    /// `n` more bytes went out.
    fn advance(&self, n: u64);
    /// The blob is in the registry.
    fn done(&self, outcome: &BlobOutcome);
}

/// Progress nobody sees (the config blob, which docker does not show either).
struct Silent;

impl BlobProgress for Silent {
    fn status(&self, _: BlobState) {}
    fn advance(&self, _: u64) {}
    fn done(&self, _: &BlobOutcome) {}
}

/// Everything one push needs.
pub struct Pusher<'a> {
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub progress: &'a dyn PushProgress,
    pub options: PushOptions,
}

/// The pushed manifest.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    /// Manifest bytes.
    pub size: u64,
    pub media_type: String,
}

impl Pusher<'_> {
    /// Pushes `image` to `dest` (its tag, or `latest`; its digest when it names one).
    pub fn push(&self, image: &ImageRecord, dest: &Reference) -> Result<Pushed, PushError> {
        let _gc = self.store.lock("gc", false)?;
        let ep = self
            .registry
            .endpoints(dest)
            .pop()
            .ok_or_else(|| RegistryError::NotFound {
                what: dest.to_string(),
            })?;
        let image_name = image.id.short().to_owned();
        let missing = |d: &Digest| PushError::MissingBlob {
            digest: d.to_string(),
            image: image_name.clone(),
        };
        if !self.store.has_blob(&image.manifest_digest) {
            return Err(missing(&image.manifest_digest));
        }
        let stored_manifest = self
            .store
            .read_blob(&image.manifest_digest, MANIFEST_LIMIT)?;
        let stored = stored_format(&image.manifest_media_type);
        let format = self.options.format.unwrap_or(stored);
        let mut jobs = vec![BlobJob::config(image)];
        for l in &image.layers {
            let plan = plan_layer(l, format, format != stored, self.options.compression)?;
            jobs.push(BlobJob::layer(l, plan));
        }
        if let Some(j) = jobs.iter().find(|j| !self.store.has_blob(&j.source)) {
            return Err(missing(&j.source));
        }
        let sent = self.send_blobs(&ep, dest, &jobs)?;
        let layers: Vec<SentLayer> = sent[1..].to_vec();
        let unchanged = format == stored
            && jobs[1..]
                .iter()
                .zip(&layers)
                .all(|(j, s)| s.digest == j.source.to_string() && s.media_type == j.media_type);
        let (bytes, media_type) = if unchanged {
            (stored_manifest, image.manifest_media_type.clone())
        } else {
            let b = rewrite_manifest(&stored_manifest, format, &layers)?;
            (b, format.manifest_type().to_owned())
        };
        let digest = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        let reference = match (dest.tag(), dest.digest()) {
            (None, Some(_)) => digest.to_string(),
            _ => dest.tag_or_latest().to_owned(),
        };
        let answered =
            self.registry
                .put_manifest(&ep, dest.path(), &reference, &media_type, bytes)?;
        if let Some(actual) = answered
            && actual != digest.to_string()
        {
            return Err(PushError::ManifestDigest {
                what: dest.to_string(),
                expected: digest,
                actual,
            });
        }
        let digests: Vec<Digest> = sent
            .iter()
            .filter_map(|s| Digest::parse(&s.digest).ok())
            .collect();
        let refs: Vec<&Digest> = digests.iter().collect();
        self.store.add_blob_sources(&refs, &dest.repository())?;
        Ok(Pushed {
            digest,
            size,
            media_type,
        })
    }

    /// Sends every blob, `options.jobs` at once; returns what each became, in order.
    fn send_blobs(
        &self,
        ep: &Endpoint,
        dest: &Reference,
        jobs: &[BlobJob],
    ) -> Result<Vec<SentLayer>, PushError> {
        let bars: Vec<Box<dyn BlobProgress + '_>> = jobs
            .iter()
            .map(|j| -> Box<dyn BlobProgress + '_> {
                if j.is_layer {
                    self.progress.blob(&j.source, j.size)
                } else {
                    Box::new(Silent)
                }
            })
            .collect();
        let workers = match self.options.jobs {
            0 => DEFAULT_JOBS,
            n => n,
        }
        .min(jobs.len());
        if jobs.len() > workers {
            for b in &bars[workers..] {
                b.status(BlobState::Waiting);
            }
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<SentLayer, PushError>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= jobs.len() || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = self.send_blob(ep, dest, &jobs[i], bars[i].as_ref());
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(jobs.len());
        let mut first_error = None;
        for r in results {
            match r {
                Some(Ok(s)) => out.push(s),
                Some(Err(e)) if first_error.is_none() => first_error = Some(e),
                Some(Err(_)) => {}
                None if first_error.is_none() => first_error = Some(PushError::Panicked),
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
