//! One blob to the registry: HEAD first, then a mount from another repository of the same
//! registry when the store knows one, else an upload; monolithic for small stored blobs,
//! chunked (PATCH after PATCH) for large ones and for conversions, whose digest is known only
//! at the end. A conversion streams: stored blob → decompress → compress → upload, hashing as
//! it goes, never more than a chunk in memory. A step answered 429 or 5xx, or a dropped
//! connection, restarts the blob's upload with a new session after a pause (`Retry-After`
//! when the registry gives one).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::thread;
use std::time::Duration;

use super::plan::{LayerPlan, SentLayer};
use super::{BlobOutcome, BlobProgress, BlobState, LayerCompression, PushError, Pusher};
use crate::digest::{Digest, Hasher};
use crate::reference::Reference;
use crate::registry::manifest::Compression;
use crate::registry::transport::{TransportError, is_transient, retryable_error};
use crate::registry::upload::Started;
use crate::registry::{Endpoint, RegistryError};
use crate::store::{Conversion, ImageRecord, LayerRef};

/// Stored blobs up to this size go in one PUT.
const MONOLITHIC_MAX: u64 = 8 << 20;
/// Bytes per PATCH.
const CHUNK: usize = 8 << 20;
/// Upload attempts per blob.
const ATTEMPTS: u32 = 5;
/// A registry asking for a longer pause than this gets the error instead.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One blob to send.
pub(super) struct BlobJob {
    /// The stored blob.
    pub source: Digest,
    /// Its stored size.
    pub size: u64,
    pub is_layer: bool,
    pub from: Compression,
    pub convert: Option<LayerCompression>,
    /// The media type it gets in the manifest (the config's is set by the manifest format).
    pub media_type: String,
}

impl BlobJob {
    pub fn config(image: &ImageRecord) -> BlobJob {
        BlobJob {
            source: image.id.clone(),
            size: image.config_size,
            is_layer: false,
            from: Compression::None,
            convert: None,
            media_type: String::new(),
        }
    }

    pub fn layer(l: &LayerRef, plan: LayerPlan) -> BlobJob {
        BlobJob {
            source: l.digest.clone(),
            size: l.size,
            is_layer: true,
            from: plan.from,
            convert: plan.convert,
            media_type: plan.media_type,
        }
    }
}

/// Whether an upload error is worth starting the blob again, and after how long at least.
fn retry_pause(e: &PushError) -> Option<Option<Duration>> {
    match e {
        PushError::Registry(RegistryError::Upload {
            status,
            retry_after,
            ..
        }) if is_transient(*status) => Some(*retry_after),
        PushError::Registry(RegistryError::Transport(TransportError::Request {
            source, ..
        })) if retryable_error(source) => Some(None),
        _ => None,
    }
}

impl Pusher<'_> {
    /// Gets one blob into `dest`'s repository; returns what the manifest lists for it.
    pub(super) fn send_blob(
        &self,
        ep: &Endpoint,
        dest: &Reference,
        job: &BlobJob,
        bar: &dyn BlobProgress,
    ) -> Result<SentLayer, PushError> {
        let repo = dest.path();
        let known = match job.convert {
            None => Some(Conversion {
                digest: job.source.clone(),
                size: job.size,
            }),
            Some(c) => self.store.conversion(&job.source, c.name())?,
        };
        let sent = |c: &Conversion| SentLayer {
            media_type: job.media_type.clone(),
            digest: c.digest.to_string(),
            size: c.size,
        };
        let mut session = None;
        if let Some(k) = &known {
            if self.registry.blob_exists(ep, repo, &k.digest)? {
                bar.done(&BlobOutcome::AlreadyExists);
                return Ok(sent(k));
            }
            if let Some(from) = self.mount_source(dest, &k.digest)? {
                match self
                    .registry
                    .start_upload(ep, repo, Some((&k.digest, &from)))
                {
                    Ok(Started::Mounted) => {
                        bar.done(&BlobOutcome::Mounted { from });
                        return Ok(sent(k));
                    }
                    Ok(Started::Session(url)) => session = Some(url),
                    Err(e) => tracing::debug!(error = %e, "mount refused; uploading"),
                }
            }
        }
        let result = self.upload_with_retries(ep, repo, job, known.as_ref(), session, bar)?;
        if let Some(c) = job.convert
            && known.is_none()
        {
            self.store
                .add_conversion(&job.source, c.name(), result.clone())?;
        }
        bar.done(&BlobOutcome::Pushed);
        Ok(sent(&result))
    }

    /// Another repository of `dest`'s registry the store says has `digest`.
    fn mount_source(&self, dest: &Reference, digest: &Digest) -> Result<Option<String>, PushError> {
        let prefix = format!("{}/", dest.domain());
        Ok(self
            .store
            .blob_sources(digest)?
            .into_iter()
            .filter_map(|r| r.strip_prefix(&prefix).map(str::to_owned))
            .find(|path| path != dest.path()))
    }

    fn upload_with_retries(
        &self,
        ep: &Endpoint,
        repo: &str,
        job: &BlobJob,
        known: Option<&Conversion>,
        mut session: Option<String>,
        bar: &dyn BlobProgress,
    ) -> Result<Conversion, PushError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = match session.take() {
                Some(u) => Ok(u),
                None => self.registry.new_session(ep, repo).map_err(PushError::from),
            };
            bar.status(BlobState::Pushing);
            let e = match url.and_then(|u| self.upload(ep, repo, job, known, &u, bar)) {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            let pause = match retry_pause(&e) {
                Some(p) if attempt < ATTEMPTS => p,
                _ => return Err(e),
            };
            let wait = pause.unwrap_or_else(|| self.backoff(attempt));
            if wait > MAX_WAIT {
                return Err(e);
            }
            tracing::debug!(digest = %job.source, error = %e, ?wait, "upload failed; starting it again");
            bar.status(BlobState::Retrying);
            thread::sleep(wait);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = match self.registry.options().transport.retry_base {
            b if b.is_zero() => Duration::from_millis(250),
            b => b,
        };
        (base * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(8))
    }

    /// One upload through the session at `url`.
    fn upload(
        &self,
        ep: &Endpoint,
        repo: &str,
        job: &BlobJob,
        known: Option<&Conversion>,
        url: &str,
        bar: &dyn BlobProgress,
    ) -> Result<Conversion, PushError> {
        let digest_err = |source| PushError::Read {
            digest: job.source.to_string(),
            source,
        };
        let mut reader = self.open_source(job).map_err(digest_err)?;
        let mut hasher = Hasher::new(job.source.algorithm());
        if job.convert.is_none() && job.size <= MONOLITHIC_MAX {
            let mut bytes = Vec::with_capacity(usize::try_from(job.size).unwrap_or(0));
            (&mut reader)
                .take(MONOLITHIC_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(digest_err)?;
            hasher.update(&bytes);
            let digest = self.check(job, hasher.finish())?;
            let size = bytes.len() as u64;
            self.registry.finish_upload(ep, repo, url, &digest, bytes)?;
            bar.advance(size);
            return Ok(Conversion { digest, size });
        }
        let mut location = url.to_owned();
        let mut sent = 0u64;
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let n = crate::pull::read_full(&mut reader, &mut chunk).map_err(digest_err)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            hasher.update(&chunk);
            location = self
                .registry
                .upload_chunk(ep, repo, &location, sent, chunk)?;
            sent += n as u64;
            bar.advance(n as u64);
        }
        let digest = match (job.convert, known) {
            (None, _) => self.check(job, hasher.finish())?,
            (Some(_), _) => hasher.finish(),
        };
        self.registry
            .finish_upload(ep, repo, &location, &digest, Vec::new())?;
        Ok(Conversion { digest, size: sent })
    }

    /// The digest of a stored blob as read, which must be its name.
    fn check(&self, job: &BlobJob, actual: Digest) -> Result<Digest, PushError> {
        if actual != job.source {
            return Err(PushError::CorruptBlob {
                digest: job.source.to_string(),
                actual,
            });
        }
        Ok(actual)
    }

    /// The bytes to send: the stored blob, or its conversion as a stream.
    fn open_source(&self, job: &BlobJob) -> io::Result<Box<dyn Read + Send>> {
        let file = File::open(self.store.blob_path(&job.source))?;
        let Some(to) = job.convert else {
            return Ok(Box::new(file));
        };
        let tar: Box<dyn Read + Send> = match job.from {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        };
        Ok(match to {
            LayerCompression::Gzip => Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .read(tar, flate2::Compression::default()),
            ),
            LayerCompression::Zstd => Box::new(zstd::stream::read::Encoder::new(tar, 3)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload_error(status: u16, retry_after: Option<Duration>) -> PushError {
        PushError::Registry(RegistryError::Upload {
            url: "u".into(),
            status,
            message: None,
            retry_after,
        })
    }

    #[test]
    fn transient_upload_answers_restart_the_upload() {
        let wait = Some(Duration::from_secs(2));
        assert_eq!(retry_pause(&upload_error(429, wait)), Some(wait));
        assert_eq!(retry_pause(&upload_error(503, None)), Some(None));
        assert_eq!(retry_pause(&upload_error(400, None)), None);
        assert_eq!(retry_pause(&PushError::ZstdNeedsOci), None);
        let denied = PushError::Registry(RegistryError::PushDenied {
            repository: "r".into(),
            host: "h".into(),
        });
        assert_eq!(retry_pause(&denied), None);
    }
}
