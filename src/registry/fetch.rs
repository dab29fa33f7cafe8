//! Reading from a registry: manifests (with every digest check), blobs, tag lists.

use super::manifest::{self, Document};
use super::platform::Platform;
use super::transport::{Method, Request, Response};
use super::{Endpoint, FetchedManifest, Registry, RegistryError, status_error};
use crate::digest::Digest;
use crate::reference::Reference;

impl Registry {
    /// Fetches a manifest by tag or digest, checking every digest that can be checked.
    pub fn fetch_manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        what: &str,
        by: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let repo = reference.path();
        let req = Request::get("").header("accept", manifest::ACCEPT);
        let resp =
            self.send_authorized(ep, repo, "pull", req, &format!("{repo}/manifests/{by}"))?;
        match resp.status {
            200 => {}
            404 => {
                return Err(RegistryError::NotFound {
                    what: what.to_owned(),
                });
            }
            s => return Err(status_error(resp, s)),
        }
        let content_type = resp.header("content-type").map(str::to_owned);
        let header_digest = resp.header("docker-content-digest").map(str::to_owned);
        let bytes = resp.read_limited(manifest::MANIFEST_LIMIT)?;
        let expected = Digest::parse(by).ok();
        let digest = match &expected {
            Some(d) => d.same_algorithm_of(&bytes),
            None => Digest::sha256_of(&bytes),
        };
        if let Some(expected) = expected
            && digest != expected
        {
            return Err(RegistryError::DigestMismatch {
                what: what.to_owned(),
                expected,
                actual: digest,
            });
        }
        if let Some(h) = header_digest {
            let claimed = Digest::parse(&h).map_err(|_| RegistryError::BadDigestHeader {
                what: what.to_owned(),
                value: h.clone(),
            })?;
            let actual = claimed.same_algorithm_of(&bytes);
            if claimed != actual {
                return Err(RegistryError::DigestMismatch {
                    what: what.to_owned(),
                    expected: claimed,
                    actual,
                });
            }
        }
        let document = manifest::parse(what, content_type.as_deref(), &bytes)?;
        Ok(FetchedManifest {
            bytes,
            digest,
            document,
        })
    }

    /// Resolves `reference` to an image manifest for `platform`, following one index.
    /// Returns the image manifest and, when there was one, the index it came from.
    pub fn resolve(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(FetchedManifest, Option<FetchedManifest>), RegistryError> {
        let what = reference.to_string();
        let top = self.fetch_manifest(ep, reference, &what, &reference.manifest_reference())?;
        let manifests = match &top.document {
            Document::Image(_) => return Ok((top, None)),
            Document::Index { manifests, .. } => manifests.clone(),
        };
        let chosen = manifest::choose(&manifests, platform).map_err(|available| {
            RegistryError::NoPlatform {
                reference: what.clone(),
                want: platform.to_string(),
                available,
            }
        })?;
        let child_what = format!("{what} ({platform})");
        let child = self.fetch_manifest(ep, reference, &child_what, &chosen.digest.to_string())?;
        if matches!(child.document, Document::Index { .. }) {
            return Err(RegistryError::NestedIndex { url: child_what });
        }
        Ok((child, Some(top)))
    }

    /// Fetches a small blob (an image config) whole, verifying size and digest.
    pub fn fetch_small_blob(
        &self,
        ep: &Endpoint,
        repository: &str,
        digest: &Digest,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("{}/{repository}@{digest}", ep.host);
        let resp = self.open_blob(ep, repository, digest, 0)?.0;
        let bytes = resp.read_limited(limit.min(size.saturating_add(1)))?;
        if bytes.len() as u64 != size {
            return Err(RegistryError::SizeMismatch {
                what,
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let actual = digest.same_algorithm_of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Starts a blob download at `offset`. Returns the response and the offset its body
    /// starts at (0 when the registry ignored the Range request).
    pub fn open_blob(
        &self,
        ep: &Endpoint,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Response, u64), RegistryError> {
        let mut req = Request::get("");
        if offset > 0 {
            req = req.header("range", format!("bytes={offset}-"));
        }
        let resp = self.send_authorized(
            ep,
            repository,
            "pull",
            req,
            &format!("{repository}/blobs/{digest}"),
        )?;
        match resp.status {
            200 => Ok((resp, 0)),
            206 => {
                let start = resp
                    .header("content-range")
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match start {
                    Some(s) if s == offset => Ok((resp, offset)),
                    _ => Err(RegistryError::Status {
                        url: resp.url.clone(),
                        status: 206,
                        message: Some("Content-Range does not match the requested range".into()),
                    }),
                }
            }
            404 => Err(RegistryError::NotFound {
                what: format!("{}/{repository}@{digest}", ep.host),
            }),
            s => Err(status_error(resp, s)),
        }
    }

    /// Lists a repository's tags, following `Link` pagination.
    pub fn list_tags(&self, ep: &Endpoint, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = format!("{repository}/tags/list?n=1000");
        for _ in 0..1000 {
            let resp = self.send_authorized(ep, repository, "pull", Request::get(""), &path)?;
            match resp.status {
                200 => {}
                404 => {
                    return Err(RegistryError::NotFound {
                        what: format!("{}/{repository}", ep.login_host),
                    });
                }
                s => return Err(status_error(resp, s)),
            }
            let next = resp.header("link").and_then(next_link);
            let body = resp.read_limited(manifest::MANIFEST_LIMIT)?;
            let list: TagList =
                serde_json::from_slice(&body).map_err(|_| RegistryError::Status {
                    url: format!("{}/v2/{path}", ep.base),
                    status: 200,
                    message: Some("the tag list is not valid JSON".into()),
                })?;
            out.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        Ok(out)
    }

    /// Checks that `ep` answers the registry API with the current credentials (`nook login`).
    pub fn ping(&self, ep: &Endpoint) -> Result<(), RegistryError> {
        let mut req = Request::get("");
        req.method = Method::Get;
        let resp = self.send_authorized(ep, "", "", req, "")?;
        match resp.status {
            200 => Ok(()),
            s => Err(status_error(resp, s)),
        }
    }
}

/// The path below `/v2/` of a `Link: </v2/...>; rel="next"` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            let url = l.get(start..end)?;
            let path = match url.find("/v2/") {
                Some(i) => &url[i + 4..],
                None => return None,
            };
            Some(path.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pagination() {
        assert_eq!(
            next_link(r#"</v2/x/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("x/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/v2/a/b/tags/list?n=1>; rel="next""#).as_deref(),
            Some("a/b/tags/list?n=1")
        );
        assert_eq!(next_link("garbage"), None);
    }
}
