//! The registry client: endpoints, authentication, manifests and blobs.
//!
//! A [`Registry`] serves any number of registries. For each reference it lists the endpoints to
//! try ([`Registry::endpoints`]: configured mirrors first for Docker Hub, then the registry
//! itself), and every request goes through [`Registry::send_authorized`], which answers the
//! registry's `WWW-Authenticate` challenges (see `auth`). Loopback registries use plain HTTP
//! as docker does; any other host needs TLS unless `--tls-verify=false` or the config's
//! `insecure_registries` says otherwise (then HTTPS without verification, falling back to HTTP).

pub mod auth;
pub mod blob;
pub mod manifest;
pub mod platform;
pub mod proxy;
pub mod token;
pub mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::reference::{self, Reference};
use auth::{AuthCache, Credential};
pub use blob::BlobStream;
use manifest::{Document, ManifestError};
use platform::Platform;
use transport::{Method, Request, Response, Transport, TransportError, TransportOptions};

/// Looks up credentials by registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
pub type CredentialLookup = Arc<dyn Fn(&str) -> Option<Credential> + Send + Sync>;

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(
        "pull access denied for {repository}, repository does not exist or may require authorization: run 'nook login {host}'"
    )]
    Unauthorized { repository: String, host: String },
    #[error("incorrect username or password for {host}: run 'nook login {host}' again")]
    BadCredentials { host: String },
    #[error("{what}: not found in the registry (check the name and tag)")]
    NotFound { what: String },
    #[error("{url} answered HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        message: Option<String>,
    },
    #[error(
        "{what}: content digest is {actual}, expected {expected}: the registry sent corrupt or altered data"
    )]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: {actual} bytes received, {expected} expected")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: the registry sent an invalid Docker-Content-Digest header {value:?}")]
    BadDigestHeader { what: String, value: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{reference}: no image for {want} (the index offers: {})", if available.is_empty() { "nothing runnable".to_owned() } else { available.join(", ") })]
    NoPlatform {
        reference: String,
        want: String,
        available: Vec<String>,
    },
    #[error("token server {realm} answered HTTP {status}")]
    Token { realm: String, status: u16 },
    #[error("token server {realm} sent no usable token")]
    TokenBody { realm: String },
    #[error("refusing to send credentials for {host} to a plain-HTTP token server {realm}")]
    InsecureRealm { host: String, realm: String },
    #[error("{url}: the index nests another index, which nook does not follow")]
    NestedIndex { url: String },
}

/// How to reach and trust registries.
#[derive(Clone)]
pub struct RegistryOptions {
    pub transport: TransportOptions,
    /// `--tls-verify=false` for every registry.
    pub tls_verify: bool,
    /// Hosts (`host[:port]`) allowed without TLS verification (the config's insecure list).
    pub insecure: Vec<String>,
    /// Mirrors by registry domain (`docker.io` → [`mirror.example:5000`, ...]).
    pub mirrors: HashMap<String, Vec<String>>,
    pub credentials: CredentialLookup,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            transport: TransportOptions::default(),
            tls_verify: true,
            insecure: Vec::new(),
            mirrors: HashMap::new(),
            credentials: Arc::new(|_| None),
        }
    }
}

/// One place to send registry API requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://registry-1.docker.io` or `http://127.0.0.1:5000`.
    pub base: String,
    /// The host[:port] the requests go to.
    pub host: String,
    /// The name credentials are stored under and `nook login` takes (`docker.io` for Hub).
    pub login_host: String,
    pub tls_verify: bool,
    /// Plain HTTP may be tried if HTTPS fails (insecure registries).
    pub http_fallback: bool,
    pub mirror: bool,
}

/// A manifest as fetched: raw bytes (for digest checks and storage) and what they are.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub document: Document,
}

/// The registry client. Cheap to share between threads.
pub struct Registry {
    transport: Transport,
    auth: AuthCache,
    options: RegistryOptions,
    /// Insecure endpoints found to speak plain HTTP.
    downgraded: Mutex<HashMap<String, bool>>,
}

pub fn is_loopback_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host_port
            }
        }),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Self {
        Registry {
            transport: Transport::new(options.transport.clone()),
            auth: AuthCache::default(),
            options,
            downgraded: Mutex::new(HashMap::new()),
        }
    }

    /// Where to ask for `reference`, in order.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .options
            .mirrors
            .get(reference.domain())
            .into_iter()
            .flatten()
            .map(|m| self.endpoint(m, true))
            .collect();
        out.push(self.endpoint(reference.api_host(), false));
        out
    }

    /// The endpoint `nook login HOST` checks (`docker.io` means Docker Hub's API host).
    pub fn login_endpoint(&self, host: &str) -> Endpoint {
        let api = if host == reference::DOCKER_HUB {
            reference::DOCKER_HUB_API
        } else {
            host
        };
        self.endpoint(api, false)
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    fn endpoint(&self, spec: &str, mirror: bool) -> Endpoint {
        let (scheme, host) = match spec.split_once("://") {
            Some((s, h)) => (Some(s), h.trim_end_matches('/')),
            None => (None, spec.trim_end_matches('/')),
        };
        let insecure = !self.options.tls_verify || self.options.insecure.iter().any(|h| h == host);
        let (base, tls_verify, http_fallback) = match scheme {
            Some("http") => (format!("http://{host}"), false, false),
            Some(_) => (format!("https://{host}"), !insecure, false),
            None if is_loopback_host(host) => (format!("http://{host}"), false, false),
            None => (format!("https://{host}"), !insecure, insecure),
        };
        let login_host = if host == reference::DOCKER_HUB_API {
            reference::DOCKER_HUB
        } else {
            host
        };
        Endpoint {
            base,
            host: host.to_owned(),
            login_host: login_host.to_owned(),
            tls_verify,
            http_fallback,
            mirror,
        }
    }

    /// The endpoint's base URL, after any HTTPS → HTTP downgrade found earlier.
    fn base_of(&self, ep: &Endpoint) -> String {
        let downgraded = self.downgraded.lock().unwrap_or_else(|p| p.into_inner());
        if downgraded.get(&ep.host).copied().unwrap_or(false) {
            format!("http://{}", ep.host)
        } else {
            ep.base.clone()
        }
    }

    fn credential(&self, host: &str) -> Option<Credential> {
        (self.options.credentials)(host)
    }

    /// Sends a request to `path` (below `/v2/`) of `ep` for `repository`, answering
    /// authentication challenges. `actions` is the scope asked for (`pull`, `pull,push`).
    pub fn send_authorized(
        &self,
        ep: &Endpoint,
        repository: &str,
        actions: &str,
        mut req: Request,
        path: &str,
    ) -> Result<Response, RegistryError> {
        req.tls_verify = ep.tls_verify;
        let scope = if repository.is_empty() {
            String::new()
        } else {
            format!("repository:{repository}:{actions}")
        };
        let mut tried_fresh = false;
        let mut tried_scope_retry = false;
        loop {
            req.url = format!("{}/v2/{path}", self.base_of(ep));
            req.authorization = self.authorization_for(ep, &scope)?;
            let resp = match self.transport.send(&req) {
                Err(TransportError::Request { .. })
                    if ep.http_fallback && req.url.starts_with("https:") =>
                {
                    let mut d = self.downgraded.lock().unwrap_or_else(|p| p.into_inner());
                    d.insert(ep.host.clone(), true);
                    continue;
                }
                other => other?,
            };
            if resp.status != 401 && resp.status != 403 {
                return Ok(resp);
            }
            let challenges = resp
                .header("www-authenticate")
                .map(auth::parse_challenges)
                .unwrap_or_default();
            let bearer = challenges.iter().find(|c| c.scheme == "bearer");
            let basic = challenges.iter().any(|c| c.scheme == "basic");
            let insufficient =
                bearer.is_some_and(|c| c.param("error") == Some("insufficient_scope"));
            let denied = || RegistryError::Unauthorized {
                repository: format!("{}/{}", ep.login_host, repository),
                host: ep.login_host.clone(),
            };
            if resp.status == 403 && !insufficient {
                return Err(denied());
            }
            match bearer {
                Some(c) if !tried_fresh || (insufficient && !tried_scope_retry) => {
                    if tried_fresh {
                        tried_scope_retry = true;
                    }
                    tried_fresh = true;
                    let key = auth::TokenKey {
                        realm: c.param("realm").unwrap_or_default().to_owned(),
                        service: c.param("service").unwrap_or_default().to_owned(),
                        scope: c
                            .param("scope")
                            .map(str::to_owned)
                            .unwrap_or_else(|| scope.clone()),
                    };
                    self.auth.forget_token(&key);
                    self.auth.remember_scheme(&ep.host, &scope, Some(key));
                }
                None if basic && !tried_fresh && self.credential(&ep.login_host).is_some() => {
                    tried_fresh = true;
                    self.auth.remember_scheme(&ep.host, &scope, None);
                }
                _ => return Err(denied()),
            }
        }
    }

    /// The Authorization header for a request to `ep` under `scope`, fetching a token if the
    /// host asked for Bearer and none is cached.
    fn authorization_for(
        &self,
        ep: &Endpoint,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        match self.auth.scheme_for(&ep.host, scope) {
            None => Ok(None),
            Some(None) => Ok(self.credential(&ep.login_host).and_then(|c| match c {
                Credential::Basic { username, password } => {
                    Some(Credential::basic_header(&username, &password))
                }
                Credential::IdentityToken(_) => None,
            })),
            Some(Some(key)) => {
                if let Some(t) = self.auth.token(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (token, lifetime) = self.fetch_token(ep, &key)?;
                self.auth.store_token(key, token.clone(), lifetime);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

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

/// An error for an unexpected status, with the registry's own message when it sent one.
fn status_error(resp: Response, status: u16) -> RegistryError {
    let url = resp.url.clone();
    let message = resp
        .read_limited(64 << 10)
        .ok()
        .and_then(|b| registry_message(&b));
    RegistryError::Status {
        url,
        status,
        message,
    }
}

/// The first message of a registry error body (`{"errors":[{"code":..,"message":..}]}`).
pub fn registry_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let first = e.errors.first()?;
    let mut msg = format!("{} {}", first.code, first.message)
        .trim()
        .to_owned();
    msg.truncate(300);
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.1.1",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhostx:1",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn endpoint_schemes() {
        let r = Registry::new(RegistryOptions {
            insecure: vec!["reg.internal:5000".into()],
            mirrors: HashMap::from([(
                "docker.io".into(),
                vec!["http://10.1.1.1:5000".into(), "mirror.example".into()],
            )]),
            ..RegistryOptions::default()
        });
        let hub = r.endpoints(&Reference::parse("busybox").unwrap());
        assert_eq!(hub.len(), 3);
        assert_eq!(hub[0].base, "http://10.1.1.1:5000");
        assert!(hub[0].mirror);
        assert_eq!(hub[1].base, "https://mirror.example");
        assert!(hub[1].tls_verify);
        assert_eq!(hub[2].base, "https://registry-1.docker.io");
        assert!(!hub[2].mirror);
        let local = r.endpoints(&Reference::parse("localhost:5000/x").unwrap());
        assert_eq!(local[0].base, "http://localhost:5000");
        let insecure = r.endpoints(&Reference::parse("reg.internal:5000/x").unwrap());
        assert_eq!(insecure[0].base, "https://reg.internal:5000");
        assert!(!insecure[0].tls_verify);
        assert!(insecure[0].http_fallback);
        let other = r.endpoints(&Reference::parse("ghcr.io/x/y").unwrap());
        assert!(other[0].tls_verify && !other[0].http_fallback);
    }

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

    #[test]
    fn registry_error_messages() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(body).unwrap(),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(registry_message(b"<html>"), None);
    }

    #[test]
    fn unauthorized_message_says_what_to_do() {
        let e = RegistryError::Unauthorized {
            repository: "docker.io/library/x".into(),
            host: "docker.io".into(),
        };
        assert!(e.to_string().contains("nook login docker.io"));
    }
}
