//! HTTP for registries: TLS roots, proxies, redirects and retries.
//!
//! Redirects are followed here, not by the HTTP library, because the rule that matters is
//! ours: a registry's blob redirect to another host (Docker Hub's CDN) must not carry the
//! registry's `Authorization` header. Idempotent requests are retried on connection errors,
//! 429 and 5xx, waiting as `Retry-After` says or with capped exponential backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use ureq::http::{HeaderMap, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::proxy::ProxyEnv;
use crate::secret::Secret;

const MAX_REDIRECTS: usize = 10;
const MAX_ATTEMPTS: u32 = 6;
/// A server asking for a longer pause than this gets an error, not a frozen pull.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What went wrong talking HTTP.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects { url: String },
    #[error("{url} answered {status} without a usable Location header")]
    BadRedirect { url: String, status: u16 },
    #[error(
        "{url} is rate limited (HTTP 429) and asks to wait {wait:?}: try later, or log in for a higher limit"
    )]
    RateLimited { url: String, wait: Duration },
    #[error("no CA certificates found: install ca-certificates or set SSL_CERT_FILE")]
    NoRoots,
}

/// HTTP methods nook sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }
}

/// One request. `authorization` is kept apart from the other headers so that it can be
/// dropped when a redirect leaves the original host.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub authorization: Option<Secret>,
    pub body: Option<Vec<u8>>,
    pub tls_verify: bool,
    /// Send once, whatever the method: an upload step that fails restarts the whole upload
    /// (a new session) instead of repeating a step the registry may have half taken.
    pub once: bool,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Self {
        Request {
            method: Method::Get,
            url: url.into(),
            headers: Vec::new(),
            authorization: None,
            body: None,
            tls_verify: true,
            once: false,
        }
    }

    /// A request with `method` (its URL is filled in by [`super::Registry::send_authorized`]).
    pub fn new(method: Method) -> Self {
        Request {
            method,
            ..Request::get("")
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    /// The URL that answered, after redirects.
    pub url: String,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads at most `limit` bytes of the body; more is an error (hostile servers).
    pub fn read_limited(mut self, limit: u64) -> Result<Vec<u8>, TransportError> {
        let url = self.url.clone();
        self.body
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|source| TransportError::Request { url, source })
    }
}

/// Settings shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    pub proxy: ProxyEnv,
    /// Folders of per-registry CA certificates (`certs.d/HOST/*.crt`, as docker and podman).
    pub certs_dirs: Vec<PathBuf>,
    /// A base delay for retries; zero means the default (250 ms).
    pub retry_base: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AgentKey {
    proxy: Option<String>,
    tls_verify: bool,
    certs_host: Option<String>,
}

/// A pool of HTTP agents, one per distinct (proxy, TLS) setting.
pub struct Transport {
    options: TransportOptions,
    agents: Mutex<HashMap<AgentKey, Agent>>,
}

impl Transport {
    pub fn new(options: TransportOptions) -> Self {
        Transport {
            options,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req`, following redirects and retrying transient failures.
    pub fn send(&self, req: &Request) -> Result<Response, TransportError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= MAX_ATTEMPTS || !req.method.idempotent() || req.once;
            match self.send_following(req) {
                Ok(resp) if is_transient(resp.status) && !last => {
                    let wait = self.retry_wait(&resp, attempt)?;
                    tracing::debug!(url = %req.url, status = resp.status, ?wait, "retrying");
                    thread::sleep(wait);
                }
                Ok(resp) => return Ok(resp),
                Err(TransportError::Request { source, url })
                    if !last && retryable_error(&source) =>
                {
                    tracing::debug!(%url, error = %source, "retrying after connection error");
                    thread::sleep(self.backoff(attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn retry_wait(&self, resp: &Response, attempt: u32) -> Result<Duration, TransportError> {
        match resp.header("retry-after").and_then(parse_retry_after) {
            Some(wait) if wait > MAX_RETRY_AFTER => Err(TransportError::RateLimited {
                url: resp.url.clone(),
                wait,
            }),
            Some(wait) => Ok(wait),
            None => Ok(self.backoff(attempt)),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = if self.options.retry_base.is_zero() {
            Duration::from_millis(250)
        } else {
            self.options.retry_base
        };
        (base * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(8))
    }

    fn send_following(&self, req: &Request) -> Result<Response, TransportError> {
        let origin = authority_of(&req.url)?;
        let mut url = req.url.clone();
        let mut auth = req.authorization.clone();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send_once(req, &url, auth.as_ref())?;
            if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let location = resp
                .header("location")
                .ok_or_else(|| TransportError::BadRedirect {
                    url: url.clone(),
                    status: resp.status,
                })?;
            let next =
                join_location(&url, location).ok_or_else(|| TransportError::BadRedirect {
                    url: url.clone(),
                    status: resp.status,
                })?;
            // Credentials belong to the origin: a CDN or any other host never sees them.
            if authority_of(&next)? != origin {
                auth = None;
            }
            tracing::debug!(from = %url, to = %next, "redirect");
            url = next;
        }
        Err(TransportError::TooManyRedirects {
            url: req.url.clone(),
        })
    }

    fn send_once(
        &self,
        req: &Request,
        url: &str,
        auth: Option<&Secret>,
    ) -> Result<Response, TransportError> {
        let agent = self.agent_for(url, req.tls_verify)?;
        let err = |source| TransportError::Request {
            url: url.to_owned(),
            source,
        };
        let mut builder = ureq::http::Request::builder()
            .uri(url)
            .method(match req.method {
                Method::Get => "GET",
                Method::Head => "HEAD",
                Method::Post => "POST",
                Method::Put => "PUT",
                Method::Patch => "PATCH",
                Method::Delete => "DELETE",
            });
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(a) = auth {
            builder = builder.header("authorization", a.expose());
        }
        let body = req.body.clone().unwrap_or_default();
        let http_req = builder.body(body).map_err(|e| err(ureq::Error::Http(e)))?;
        let resp = agent.run(http_req).map_err(err)?;
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status.as_u16(),
            url: url.to_owned(),
            headers: parts.headers,
            body,
        })
    }

    fn agent_for(&self, url: &str, tls_verify: bool) -> Result<Agent, TransportError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TransportError::Url(url.to_owned()))?;
        let host = uri
            .host()
            .ok_or_else(|| TransportError::Url(url.to_owned()))?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let proxy = self.options.proxy.proxy_for(https, host, port);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let certs_host = (https && tls_verify)
            .then(|| {
                self.options
                    .certs_dirs
                    .iter()
                    .any(|d| d.join(&authority).is_dir())
            })
            .filter(|has| *has)
            .map(|_| authority.clone());
        let key = AgentKey {
            proxy: proxy.clone(),
            tls_verify,
            certs_host,
        };
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let agent = self.build_agent(&key)?;
        agents.insert(key, agent.clone());
        Ok(agent)
    }

    fn build_agent(&self, key: &AgentKey) -> Result<Agent, TransportError> {
        let tls = if key.tls_verify {
            let mut roots = system_roots();
            if let Some(host) = &key.certs_host {
                for dir in &self.options.certs_dirs {
                    load_pem_dir(&dir.join(host), &mut roots);
                }
            }
            if roots.is_empty() {
                return Err(TransportError::NoRoots);
            }
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .build()
        } else {
            TlsConfig::builder().disable_verification(true).build()
        };
        let proxy = match &key.proxy {
            Some(p) => Some(
                ureq::Proxy::new(p).map_err(|source| TransportError::Request {
                    url: p.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .tls_config(tls)
            .user_agent(concat!("nook/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(8)
            .build();
        Ok(config.new_agent())
    }
}

pub(crate) fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Connection trouble is worth another try; a TLS verdict (rustls reports it as
/// `InvalidData`) or a malformed answer is not.
pub(crate) fn retryable_error(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_to_system_time(v)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`), the one servers must send
/// (Retry-After here, Last-Modified for `ADD URL`). Out-of-range fields give `None`.
pub fn httpdate_to_system_time(v: &str) -> Option<SystemTime> {
    let mut it = v.split_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT"
        || !(1970..=9999).contains(&year)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    let secs = days.checked_mul(86400)? + (h * 3600 + m * 60 + s) as i64;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `scheme://host:port` of a URL, with the default port made explicit.
pub(crate) fn authority_of(url: &str) -> Result<String, TransportError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| TransportError::Url(url.to_owned()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| TransportError::Url(url.to_owned()))?;
    let host = uri
        .host()
        .ok_or_else(|| TransportError::Url(url.to_owned()))?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(format!(
        "{}://{}:{}",
        scheme,
        host.to_ascii_lowercase(),
        port
    ))
}

/// Resolves a `Location` header against the URL that sent it.
pub(crate) fn join_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let uri: Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let authority = uri.authority()?.as_str();
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = uri.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system CA bundle plus `SSL_CERT_FILE` and `SSL_CERT_DIR` (sites with their own CAs).
fn system_roots() -> Vec<Certificate<'static>> {
    let mut roots = Vec::new();
    if let Some(bundle) = SYSTEM_BUNDLES
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
    {
        load_pem_file(std::path::Path::new(bundle), &mut roots);
    }
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        load_pem_file(std::path::Path::new(&f), &mut roots);
    }
    if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
        for d in std::env::split_paths(&dirs) {
            load_pem_dir(&d, &mut roots);
        }
    }
    roots
}

fn load_pem_dir(dir: &std::path::Path, out: &mut Vec<Certificate<'static>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        // certs.d also holds client keys (*.key) and client certs (*.cert); CAs are *.crt.
        if name.ends_with(".crt") || name.ends_with(".pem") || name.ends_with(".0") {
            load_pem_file(&p, out);
        }
    }
}

fn load_pem_file(path: &std::path::Path, out: &mut Vec<Certificate<'static>>) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    for item in ureq::tls::parse_pem(&bytes).flatten() {
        if let ureq::tls::PemItem::Certificate(c) = item {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert!(parse_retry_after("soon").is_none());
        let t = httpdate_to_system_time("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
    }

    #[test]
    fn location_joining() {
        let b = "http://127.0.0.1:5000/v2/x/blobs/sha256:aa";
        assert_eq!(
            join_location(b, "http://cdn:80/x").unwrap(),
            "http://cdn:80/x"
        );
        assert_eq!(
            join_location(b, "/other").unwrap(),
            "http://127.0.0.1:5000/other"
        );
        assert_eq!(join_location(b, "//cdn/y").unwrap(), "http://cdn/y");
        assert_eq!(
            join_location(b, "rel").unwrap(),
            "http://127.0.0.1:5000/v2/x/blobs/rel"
        );
    }

    #[test]
    fn authority_normalises_default_ports() {
        assert_eq!(
            authority_of("https://Example.com/x").unwrap(),
            "https://example.com:443"
        );
        assert_eq!(authority_of("http://a:5000/").unwrap(), "http://a:5000");
        assert_ne!(
            authority_of("http://a:5000/").unwrap(),
            authority_of("http://a:5001/").unwrap()
        );
    }

    #[test]
    fn backoff_is_capped() {
        let t = Transport::new(TransportOptions::default());
        assert_eq!(t.backoff(1), Duration::from_millis(250));
        assert_eq!(t.backoff(2), Duration::from_millis(500));
        assert_eq!(t.backoff(20), Duration::from_secs(8));
    }
}
