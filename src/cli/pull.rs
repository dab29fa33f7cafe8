//! `nook pull`: registry → store → unpack, layers in parallel and streamed.
//!
//! Each layer runs as a two-stage pipeline: a fetch thread reads the blob (first what an
//! earlier, interrupted pull left in `tmp/partial-*`, then the network from that offset),
//! appends new bytes to the partial file and hashes everything; the layer's own thread
//! decompresses, hashes the tar stream (the diff_id) and unpacks it as the bytes arrive. Only
//! when both digests match are the blob and the layer renamed into the store. Up to four layers
//! run at once. Used by `nook pull` and, for missing images, `nook run`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use super::progress::{LayerProgress, Progress};
use super::stream::{ChannelReader, Chunk, decompress, pump};
use crate::digest::{Digest, Hasher, HashingReader};
use crate::reference::Reference;
use crate::registry::manifest::Document;
use crate::registry::platform::Platform;
use crate::registry::{BlobStream, Endpoint, Registry, RegistryError};
use crate::store::{ImageRecord, LayerRecord, LayerRef, Store, StoreError};
use crate::sys::confined::remove_tree;
use crate::unpack::{self, Owners, UnpackError};

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
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
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

/// Everything one pull needs.
pub struct Puller<'a> {
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub owners: Owners,
    pub platform: Platform,
    /// `--platform` was given: a single-platform image of another platform is an error.
    pub platform_given: bool,
    pub progress: &'a Progress,
}

struct Job<'p> {
    layer: LayerRef,
    bar: LayerProgress<'p>,
}

impl Puller<'_> {
    /// Pulls `reference`, trying mirrors first where configured.
    pub fn pull(&self, reference: &Reference) -> Result<Pulled, PullError> {
        let _gc = self.store.lock("gc", false)?;
        let endpoints = self.registry.endpoints(reference);
        let mut last = None;
        for ep in &endpoints {
            match self.pull_from(ep, reference) {
                Ok(p) => return Ok(p),
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
        let config_bytes = if self.store.has_blob(&image.config.digest) {
            self.store.read_blob(&image.config.digest, CONFIG_LIMIT)?
        } else {
            let b = self.registry.fetch_small_blob(
                ep,
                repo,
                &image.config.digest,
                image.config.size,
                CONFIG_LIMIT,
            )?;
            self.store.put_blob(&image.config.digest, &b)?;
            b
        };
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|source| PullError::Config {
                what: what.clone(),
                source,
            })?;
        let platform = Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        };
        if index.is_none() && platform.fitness_on(&self.platform).is_none() {
            let err = PullError::WrongPlatform {
                what: what.clone(),
                found: platform.to_string(),
                want: self.platform.to_string(),
            };
            if self.platform_given {
                return Err(err);
            }
            tracing::warn!("{err}");
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != image.layers.len() {
            return Err(PullError::LayerCount {
                what,
                diff_ids: diff_ids.len(),
                layers: image.layers.len(),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff) in image.layers.iter().zip(diff_ids) {
            let diff_id = Digest::parse(diff).map_err(|_| PullError::DiffIdFormat {
                what: what.clone(),
                value: diff.clone(),
            })?;
            layers.push(LayerRef {
                digest: desc.digest.clone(),
                diff_id,
                size: desc.size,
                media_type: desc.media_type.clone(),
            });
        }
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
        Ok(Pulled {
            record,
            digest: top,
            fresh: fresh_layers > 0 || !existed,
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

    /// Fetches and unpacks one layer unless the store has it; returns whether it was new.
    fn fetch_layer(&self, ep: &Endpoint, repo: &str, job: &Job<'_>) -> Result<bool, PullError> {
        let (l, bar) = (&job.layer, &job.bar);
        if self.store.has_layer(&l.diff_id) {
            bar.done("Already exists");
            return Ok(false);
        }
        let _lock = self.store.lock_layer(&l.diff_id)?;
        if self.store.has_layer(&l.diff_id) {
            bar.done("Already exists");
            return Ok(false);
        }
        let staging = self.store.unpack_dir(&l.diff_id);
        if staging.exists() {
            remove_tree(&staging).map_err(io_at(&staging))?;
        }
        let root = staging.join("root");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_at(&staging))?;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(io_at(&root))?;
        // A blob already in the store (its layer was removed) is unpacked from disk.
        let stored = self.store.has_blob(&l.digest);
        let source_path = if stored {
            self.store.blob_path(&l.digest)
        } else {
            self.store.partial_path(&l.digest)
        };
        let source = OpenOptions::new()
            .read(true)
            .append(!stored)
            .create(!stored)
            .mode(0o600)
            .open(&source_path)
            .map_err(io_at(&source_path))?;
        let mut have = source.metadata().map_err(io_at(&source_path))?.len();
        if have > l.size {
            source.set_len(0).map_err(io_at(&source_path))?;
            have = 0;
        }
        bar.status(if have > 0 && !stored {
            "Resuming"
        } else {
            "Downloading"
        });
        // Three stages, so that inflating runs beside hashing and writing files.
        let (tx, rx) = sync_channel::<Chunk>(16);
        let (tar_tx, tar_rx) = sync_channel::<Chunk>(16);
        let (fetched, unpacked) = thread::scope(|s| {
            let fetcher = s.spawn(|| self.fetch_blob(ep, repo, l, source, have, tx, bar));
            let inflater = s.spawn(|| decompress(rx, tar_tx));
            let unpacked = self.unpack_tar(tar_rx, l, &root);
            let panicked = || PullError::Stream {
                digest: l.digest.to_string(),
                source: io::Error::other("a pull thread panicked"),
            };
            let fetched = fetcher.join().unwrap_or_else(|_| Err(panicked()));
            let inflated = inflater.join().map_err(|_| panicked()).and_then(|r| {
                r.map_err(|source| PullError::Stream {
                    digest: l.digest.to_string(),
                    source,
                })
            });
            (fetched.and(inflated), unpacked)
        });
        if fetched.is_err() || unpacked.is_err() {
            // A refused or broken layer leaves nothing behind but a resumable download.
            let _ = remove_tree(&staging);
        }
        fetched?;
        let stats = unpacked?;
        if !stored {
            self.store.commit_blob_file(&l.digest, &source_path)?;
        }
        let record = LayerRecord {
            diff_id: l.diff_id.clone(),
            blob: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: stats.bytes,
            stats,
        };
        if record.stats.devices_skipped > 0 {
            tracing::warn!(
                "layer {}: skipped {} device node(s) such as {}: unprivileged users cannot create them (the container gets its own /dev)",
                l.digest.short(),
                record.stats.devices_skipped,
                record.stats.device_examples.join(", ")
            );
        }
        self.store.commit_layer(&l.diff_id, &staging, &record)?;
        bar.done("Pull complete");
        Ok(true)
    }

    /// The fetch stage: replays what `source` holds, downloads the rest (appending it to
    /// `source`), verifies size and digest, and passes every byte on.
    #[allow(clippy::too_many_arguments)]
    fn fetch_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        l: &LayerRef,
        mut source: File,
        have: u64,
        tx: SyncSender<Chunk>,
        bar: &LayerProgress<'_>,
    ) -> Result<(), PullError> {
        let digest = l.digest.to_string();
        let fail = |tx: &SyncSender<Chunk>, e: PullError| {
            let _ = tx.send(Err(io::Error::other("the download stopped")));
            Err(e)
        };
        let mut hasher = Hasher::new(l.digest.algorithm());
        let mut total = 0u64;
        let mut pumped = |reader: &mut dyn Read, copy_to: Option<&mut File>| {
            pump(reader, copy_to, &mut hasher, &mut total, bar, &tx)
        };
        let replayed = source
            .rewind()
            .and_then(|()| pumped(&mut (&mut source).take(have), None));
        match replayed {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return fail(&tx, PullError::Download { digest, source: e }),
        }
        if have < l.size {
            let mut stream = BlobStream::new(
                self.registry,
                ep.clone(),
                repo,
                l.digest.clone(),
                l.size,
                have,
            );
            if let Err(e) = stream.connect() {
                return fail(&tx, PullError::Registry(e));
            }
            match pumped(&mut stream, Some(&mut source)) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return fail(&tx, PullError::Download { digest, source: e }),
            }
        }
        if total != l.size {
            return fail(
                &tx,
                PullError::Size {
                    digest,
                    expected: l.size,
                    actual: total,
                },
            );
        }
        let actual = hasher.finish();
        if actual != l.digest {
            // The bytes on disk are wrong; the next pull must start over.
            let _ = source.set_len(0);
            return fail(&tx, PullError::BlobDigest { digest, actual });
        }
        bar.status("Extracting");
        Ok(())
    }

    /// The unpack stage: hash the tar stream (the diff_id) and unpack it.
    fn unpack_tar(
        &self,
        rx: Receiver<Chunk>,
        l: &LayerRef,
        root: &Path,
    ) -> Result<unpack::UnpackStats, PullError> {
        let digest = l.digest.to_string();
        let input = ChannelReader::new(rx);
        let mut tar = HashingReader::new(input, l.diff_id.algorithm());
        let stats =
            unpack::unpack(&mut tar, root, self.owners).map_err(|source| PullError::Unpack {
                digest: digest.clone(),
                source,
            })?;
        // The diff_id covers the whole stream, padding after the end-of-archive included.
        io::copy(&mut tar, &mut io::sink()).map_err(|source| PullError::Stream {
            digest: digest.clone(),
            source,
        })?;
        let (actual, _) = tar.finish();
        if actual != l.diff_id {
            return Err(PullError::DiffId {
                digest,
                expected: l.diff_id.clone(),
                actual,
            });
        }
        Ok(stats)
    }
}
