//! A blob download that survives cut connections.
//!
//! [`BlobStream`] reads a blob from a byte offset to its declared size. When the connection
//! breaks, it asks again with `Range: bytes=N-`; if the registry ignores the range and sends the
//! whole blob, the bytes already delivered are skipped. The caller hashes what it reads: this
//! type only moves bytes.

use std::io::{self, Read};
use std::thread;
use std::time::Duration;

use ureq::BodyReader;

use super::{Endpoint, Registry, RegistryError};
use crate::digest::Digest;

/// Consecutive failures without progress before a download gives up.
const MAX_FAILURES: u32 = 5;

/// The bytes of one blob, from `offset` to `size`.
pub struct BlobStream<'a> {
    registry: &'a Registry,
    endpoint: Endpoint,
    repository: String,
    digest: Digest,
    size: u64,
    pos: u64,
    body: Option<BodyReader<'static>>,
    skip: u64,
    failures: u32,
    retry_base: Duration,
}

impl<'a> BlobStream<'a> {
    pub fn new(
        registry: &'a Registry,
        endpoint: Endpoint,
        repository: &str,
        digest: Digest,
        size: u64,
        offset: u64,
    ) -> Self {
        let retry_base = if registry.options.transport.retry_base.is_zero() {
            Duration::from_millis(250)
        } else {
            registry.options.transport.retry_base
        };
        BlobStream {
            registry,
            endpoint,
            repository: repository.to_owned(),
            digest,
            size,
            pos: offset,
            body: None,
            skip: 0,
            failures: 0,
            retry_base,
        }
    }

    /// Opens the connection now, so that errors such as 401 or 404 surface before any bytes
    /// are expected.
    pub fn connect(&mut self) -> Result<(), RegistryError> {
        if self.pos >= self.size {
            return Ok(());
        }
        let (resp, start) =
            self.registry
                .open_blob(&self.endpoint, &self.repository, &self.digest, self.pos)?;
        self.skip = self.pos - start;
        self.body = Some(resp.body.into_reader());
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures > MAX_FAILURES {
            return Err(e);
        }
        tracing::debug!(digest = %self.digest, pos = self.pos, error = %e, "blob connection lost; resuming");
        thread::sleep(self.retry_base * 2u32.pow(self.failures - 1));
        Ok(())
    }
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size || buf.is_empty() {
                return Ok(0);
            }
            if self.body.is_none()
                && let Err(e) = self.connect()
            {
                // A registry that says no (401, 404) will not say yes on retry.
                let transient = matches!(&e, RegistryError::Transport(_));
                let err = io::Error::other(e);
                if transient {
                    self.fail(err)?;
                    continue;
                }
                return Err(err);
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let want = if self.skip > 0 {
                buf.len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX))
            } else {
                buf.len()
                    .min(usize::try_from(self.size - self.pos).unwrap_or(usize::MAX))
            };
            match body.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the blob ended",
                    );
                    self.fail(e)?;
                }
                Ok(n) if self.skip > 0 => {
                    self.skip -= n as u64;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(e)?,
            }
        }
    }
}
