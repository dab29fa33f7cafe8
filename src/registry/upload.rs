//! The push half of the distribution protocol, one request per step: blob HEAD,
//! cross-repository mount, upload sessions (monolithic PUT or PATCH chunks, each following the
//! `Location` the last answer gave), and the manifest PUT. Every step is sent once
//! ([`Request::once`]): when one fails, the caller starts the blob's upload afresh, since a
//! registry may have taken part of a PATCH before the connection dropped.

use super::authorize::{Access, Target};
use super::transport::{Method, Request, Response, join_location, parse_retry_after};
use super::{Endpoint, Registry, RegistryError, registry_message, status_error};
use crate::digest::Digest;

const PUSH: &str = "pull,push";

/// How an upload began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The registry mounted the blob from the other repository: nothing to send.
    Mounted,
    /// An upload session, at this absolute URL.
    Session(String),
}

/// `Content-Range` of a PATCH carrying `len` bytes from `start` (inclusive end, no unit, as
/// the distribution spec writes it).
pub fn content_range(start: u64, len: u64) -> String {
    format!("{start}-{}", (start + len).saturating_sub(1))
}

/// The session URL with `digest=` added to its query (registries keep state in the query).
pub fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn access(repository: &str) -> Access<'_> {
    Access {
        repository,
        actions: PUSH,
        also_pull: None,
    }
}

/// The error for an upload step's unexpected answer, keeping `Retry-After`.
fn upload_error(resp: Response) -> RegistryError {
    let status = resp.status;
    let retry_after = resp.header("retry-after").and_then(parse_retry_after);
    let url = resp.url.clone();
    let message = resp
        .read_limited(64 << 10)
        .ok()
        .and_then(|b| registry_message(&b));
    RegistryError::Upload {
        url,
        status,
        message,
        retry_after,
    }
}

/// The absolute URL of the answer's `Location`.
fn location_of(resp: &Response) -> Result<String, RegistryError> {
    resp.header("location")
        .and_then(|l| join_location(&resp.url, l))
        .ok_or_else(|| RegistryError::NoLocation {
            url: resp.url.clone(),
        })
}

impl Registry {
    /// Whether `repository` has the blob already.
    pub fn blob_exists(
        &self,
        ep: &Endpoint,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let path = format!("{repository}/blobs/{digest}");
        let req = Request::new(Method::Head);
        let resp = self.send_with_access(ep, &access(repository), req, Target::Path(&path))?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(status_error(resp, s)),
        }
    }

    /// Starts an upload into `repository`; with `mount` (digest, source repository in the same
    /// registry), asks the registry to mount the blob instead. A registry that cannot mount
    /// answers with an ordinary session.
    pub fn start_upload(
        &self,
        ep: &Endpoint,
        repository: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Started, RegistryError> {
        let mut path = format!("{repository}/blobs/uploads/");
        let mut access = access(repository);
        if let Some((digest, from)) = mount {
            // Repository names are [a-z0-9._/-]: nothing to escape.
            path.push_str(&format!("?mount={digest}&from={from}"));
            access.also_pull = Some(from);
        }
        let resp = self.post_upload(ep, &access, &path)?;
        match resp.status {
            201 if mount.is_some() => Ok(Started::Mounted),
            202 => Ok(Started::Session(location_of(&resp)?)),
            _ => Err(upload_error(resp)),
        }
    }

    /// Starts a plain upload session; returns its URL.
    pub fn new_session(&self, ep: &Endpoint, repository: &str) -> Result<String, RegistryError> {
        let path = format!("{repository}/blobs/uploads/");
        let resp = self.post_upload(ep, &access(repository), &path)?;
        match resp.status {
            202 => location_of(&resp),
            _ => Err(upload_error(resp)),
        }
    }

    fn post_upload(
        &self,
        ep: &Endpoint,
        access: &Access<'_>,
        path: &str,
    ) -> Result<Response, RegistryError> {
        let mut req = Request::new(Method::Post).header("content-length", "0");
        req.once = true;
        self.send_with_access(ep, access, req, Target::Path(path))
    }

    /// Sends `bytes` as the part of the blob from `start`; returns the session's next URL.
    pub fn upload_chunk(
        &self,
        ep: &Endpoint,
        repository: &str,
        location: &str,
        start: u64,
        bytes: Vec<u8>,
    ) -> Result<String, RegistryError> {
        let mut req = Request::new(Method::Patch)
            .header("content-type", "application/octet-stream")
            .header("content-range", content_range(start, bytes.len() as u64));
        req.body = Some(bytes);
        req.once = true;
        let resp = self.send_with_access(ep, &access(repository), req, Target::Url(location))?;
        match resp.status {
            202 => location_of(&resp),
            _ => Err(upload_error(resp)),
        }
    }

    /// Closes the session with the blob's digest, sending `last` (the whole blob, for a
    /// monolithic upload) with it.
    pub fn finish_upload(
        &self,
        ep: &Endpoint,
        repository: &str,
        location: &str,
        digest: &Digest,
        last: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let url = with_digest(location, digest);
        let mut req = Request::new(Method::Put).header("content-type", "application/octet-stream");
        req.body = Some(last);
        req.once = true;
        let resp = self.send_with_access(ep, &access(repository), req, Target::Url(&url))?;
        match resp.status {
            201 | 204 => Ok(()),
            _ => Err(upload_error(resp)),
        }
    }

    /// PUTs a manifest under `reference` (a tag or its digest); returns the digest the
    /// registry says it stored, if it says.
    pub fn put_manifest(
        &self,
        ep: &Endpoint,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Option<String>, RegistryError> {
        let path = format!("{repository}/manifests/{reference}");
        // A manifest PUT is idempotent: the transport may repeat it on 429/5xx.
        let mut req = Request::new(Method::Put).header("content-type", media_type);
        req.body = Some(bytes);
        let resp = self.send_with_access(ep, &access(repository), req, Target::Path(&path))?;
        match resp.status {
            200..=202 => Ok(resp.header("docker-content-digest").map(str::to_owned)),
            _ => Err(upload_error(resp)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_inclusive() {
        assert_eq!(content_range(0, 10), "0-9");
        assert_eq!(content_range(10, 5), "10-14");
        assert_eq!(content_range(7, 1), "7-7");
    }

    #[test]
    fn the_digest_joins_the_session_query() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u1", &d),
            format!("http://r/v2/a/blobs/uploads/u1?digest={d}")
        );
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u1?_state=abc", &d),
            format!("http://r/v2/a/blobs/uploads/u1?_state=abc&digest={d}")
        );
    }

    #[test]
    fn session_locations_resolve_relative_and_absolute() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            join_location(base, "/v2/a/blobs/uploads/u1?_state=s").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            join_location(base, "https://upload.example/x/u1").unwrap(),
            "https://upload.example/x/u1"
        );
    }
}
