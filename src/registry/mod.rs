//! The registry client: endpoints, authentication, manifests and blobs.
//!
//! A [`Registry`] serves any number of registries. For each reference it lists the endpoints to
//! try ([`Registry::endpoints`]: configured mirrors first for Docker Hub, then the registry
//! itself), and every request goes through [`Registry::send_authorized`], which answers the
//! registry's `WWW-Authenticate` challenges (see `auth`). Loopback registries use plain HTTP
//! as docker does; any other host needs TLS unless `--tls-verify=false` or the config's
//! `insecure_registries` says otherwise (then HTTPS without verification, falling back to HTTP).

pub mod auth;
mod authorize;
pub use authorize::{Access, Target};
pub mod blob;
mod fetch;
pub mod manifest;
pub mod platform;
pub mod proxy;
pub mod transport;
pub mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::reference::{self, Reference};
use auth::{AuthCache, Credential};
pub use blob::BlobStream;
use manifest::{Document, ManifestError};
use transport::{Response, Transport, TransportError, TransportOptions};

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
    #[error("push access denied for {repository}: run 'nook login {host}'")]
    PushDenied { repository: String, host: String },
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
    #[error("{url} answered HTTP {status} to an upload{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Upload {
        url: String,
        status: u16,
        message: Option<String>,
        /// What the registry's `Retry-After` asked for.
        retry_after: Option<std::time::Duration>,
    },
    #[error("{url}: the upload answer has no Location header")]
    NoLocation { url: String },
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
    /// The `host[:port]` the requests go to.
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
}

/// An error for an unexpected status, with the registry's own message when it sent one.
pub(crate) fn status_error(resp: Response, status: u16) -> RegistryError {
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
