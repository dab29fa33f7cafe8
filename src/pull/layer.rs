//! One layer through the pipeline: the fetch stage (resume from the partial file, then the
//! network), the inflate stage, and the unpack stage, each checked against its digest before
//! the blob and the layer are committed to the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use super::stream::{ChannelReader, Chunk, decompress, pump};
use super::{Job, LayerProgress, LayerState, PullError, Puller, io_at};
use crate::digest::{Digest, Hasher, HashingReader};
use crate::registry::{BlobStream, Endpoint};
use crate::store::{LayerRecord, LayerRef};
use crate::sys::confined::remove_tree;
use crate::unpack::{self, UnpackStats};

/// The digest of the blob at `path` decompressed (gzip, zstd, or none), as a diff_id.
fn uncompressed_digest(path: &Path, alg: crate::digest::Algorithm) -> io::Result<Digest> {
    let mut input = io::BufReader::with_capacity(256 << 10, File::open(path)?);
    let head = io::BufRead::fill_buf(&mut input)?;
    let mut decoder: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    };
    let mut hashing = HashingReader::new(&mut decoder, alg);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish().0)
}

/// The blob's bytes as far as they are on disk.
struct Source {
    file: File,
    path: PathBuf,
    /// The store has the whole blob (else `path` is a partial download).
    stored: bool,
    /// Bytes already there.
    have: u64,
}

impl Puller<'_> {
    /// Fetches and unpacks one layer unless the store has it; returns whether it was new.
    pub(super) fn fetch_layer(
        &self,
        ep: &Endpoint,
        repo: &str,
        job: &Job<'_>,
    ) -> Result<bool, PullError> {
        let (l, bar) = (&job.layer, job.bar.as_ref());
        if self.store.has_layer(&l.diff_id) && self.store.has_blob(&l.digest) {
            bar.done(LayerState::AlreadyExists);
            return Ok(false);
        }
        let _lock = self.store.lock_layer(&l.diff_id)?;
        if self.store.has_layer(&l.diff_id) {
            if !self.store.has_blob(&l.digest) {
                // Another image's blob unpacked to the same tree: this image's own blob is
                // still needed to push it as it is.
                bar.status(LayerState::Downloading);
                self.fetch_blob_only(ep, repo, l, bar)?;
            }
            bar.done(LayerState::AlreadyExists);
            return Ok(false);
        }
        let staging = self.fresh_staging(&l.diff_id)?;
        let source = self.open_source(l)?;
        let (stored, source_path) = (source.stored, source.path.clone());
        bar.status(if source.have > 0 && !stored {
            LayerState::Resuming
        } else {
            LayerState::Downloading
        });
        let (fetched, unpacked) = self.run_stages(ep, repo, l, source, &staging.join("root"), bar);
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
        bar.done(LayerState::PullComplete);
        Ok(true)
    }

    /// Downloads the layer's blob alone into the store (its tree is there already), verifying
    /// size and digest.
    fn fetch_blob_only(
        &self,
        ep: &Endpoint,
        repo: &str,
        l: &LayerRef,
        bar: &dyn LayerProgress,
    ) -> Result<(), PullError> {
        let digest = l.digest.to_string();
        let path = self.store.partial_path(&l.digest);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut stream =
            BlobStream::new(self.registry, ep.clone(), repo, l.digest.clone(), l.size, 0);
        stream.connect()?;
        let mut hashing = HashingReader::new(&mut stream, l.digest.algorithm());
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = hashing
                .read(&mut buf)
                .map_err(|source| PullError::Download {
                    digest: digest.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            io::Write::write_all(&mut file, &buf[..n]).map_err(io_at(&path))?;
            bar.advance(n as u64);
        }
        let (actual, total) = hashing.finish();
        if total != l.size {
            return Err(PullError::Size {
                digest,
                expected: l.size,
                actual: total,
            });
        }
        if actual != l.digest {
            let _ = fs::remove_file(&path);
            return Err(PullError::BlobDigest { digest, actual });
        }
        // The tree in the store was unpacked from another blob: this one must hold the same
        // content, or the image would name a blob that is not its layer.
        let uncompressed = uncompressed_digest(&path, l.diff_id.algorithm());
        match uncompressed {
            Ok(got) if got == l.diff_id => {}
            other => {
                let _ = fs::remove_file(&path);
                return Err(match other {
                    Ok(actual) => PullError::DiffId {
                        digest,
                        expected: l.diff_id.clone(),
                        actual,
                    },
                    Err(source) => PullError::Download { digest, source },
                });
            }
        }
        self.store.commit_blob_file(&l.digest, &path)?;
        Ok(())
    }

    /// An empty staging directory for the layer (with its `root/`), whatever an earlier,
    /// interrupted pull left there.
    fn fresh_staging(&self, diff_id: &Digest) -> Result<PathBuf, PullError> {
        let staging = self.store.unpack_dir(diff_id);
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
        Ok(staging)
    }

    /// Where the blob's bytes come from: the store's copy (its layer was removed, the blob
    /// kept), else the partial download, created empty if there is none.
    fn open_source(&self, l: &LayerRef) -> Result<Source, PullError> {
        let stored = self.store.has_blob(&l.digest);
        let path = if stored {
            self.store.blob_path(&l.digest)
        } else {
            self.store.partial_path(&l.digest)
        };
        let file = OpenOptions::new()
            .read(true)
            .append(!stored)
            .create(!stored)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut have = file.metadata().map_err(io_at(&path))?.len();
        if have > l.size {
            file.set_len(0).map_err(io_at(&path))?;
            have = 0;
        }
        Ok(Source {
            file,
            path,
            stored,
            have,
        })
    }

    /// Runs the three stages, so that inflating runs beside hashing and writing files; returns
    /// the fetch and inflate stages' outcome and the unpack stage's.
    fn run_stages(
        &self,
        ep: &Endpoint,
        repo: &str,
        l: &LayerRef,
        source: Source,
        root: &Path,
        bar: &dyn LayerProgress,
    ) -> (Result<(), PullError>, Result<UnpackStats, PullError>) {
        let (tx, rx) = sync_channel::<Chunk>(16);
        let (tar_tx, tar_rx) = sync_channel::<Chunk>(16);
        let Source { file, have, .. } = source;
        thread::scope(|s| {
            let fetcher = s.spawn(|| self.fetch_blob(ep, repo, l, file, have, tx, bar));
            let inflater = s.spawn(|| decompress(rx, tar_tx));
            let unpacked = self.unpack_tar(tar_rx, l, root);
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
        })
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
        bar: &dyn LayerProgress,
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
        bar.status(LayerState::Extracting);
        Ok(())
    }

    /// The unpack stage: hash the tar stream (the diff_id) and unpack it.
    fn unpack_tar(
        &self,
        rx: Receiver<Chunk>,
        l: &LayerRef,
        root: &Path,
    ) -> Result<UnpackStats, PullError> {
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
