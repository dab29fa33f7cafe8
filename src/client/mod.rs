//! nook as a client of docker's Engine API: one nook, several daemons. An [`Endpoint`]
//! (`-H`, `DOCKER_HOST`, a context) names a daemon — `nook serve` or a real Docker Engine —
//! reached over a UNIX socket, TCP with TLS, or ssh running `nook system dial-stdio`.
//!
//! Each request opens its own connection (as the docker CLI's attach does), so a hijacked
//! stream, a wait and a start can be in flight together. The API version is negotiated once
//! with `/_ping`: nook's own (1.50) or the daemon's when that is lower.

pub mod context;
pub mod endpoint;
pub mod http;
pub mod stream;
pub mod tls;

mod conn;

use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

pub use conn::{ReadHalf, WriteHalf, dial_stdio};
pub use endpoint::{Endpoint, Host, TlsOptions};
use http::{Body, BodyReader, Head};

/// The newest API version nook speaks.
const API_VERSION: (u32, u32) = (1, 50);

/// The most a JSON answer may take.
const MAX_JSON: u64 = 64 << 20;

/// Why talking to a daemon failed, named after the failing step.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid host {0}")]
    BadHost(String),
    #[error("cannot connect to the daemon at {url}: is it running?")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot read {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send the request to the daemon")]
    Send(#[source] std::io::Error),
    #[error("cannot read the daemon's answer")]
    Receive(#[source] std::io::Error),
    #[error("the daemon answered oddly: {0}")]
    Protocol(String),
    /// The daemon's own error message, with its HTTP status.
    #[error("{message}")]
    Api { status: u16, message: String },
}

/// A daemon and the API version agreed with it.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    version: String,
}

/// A response whose body has not been read yet.
pub struct Response {
    pub head: Head,
    pub body: BodyReader,
}

/// A connection the daemon switched to a raw stream (attach, exec start).
pub struct Hijacked {
    /// The container's output (framed unless it has a terminal).
    pub output: Box<dyn Read + Send>,
    /// The container's input.
    pub input: WriteHalf,
}

impl Client {
    /// Connects to `endpoint` and agrees on an API version.
    pub fn connect(endpoint: Endpoint) -> Result<Client, ClientError> {
        let tls = match (&endpoint.host, &endpoint.tls) {
            (Host::Tcp { .. }, Some(opts)) => Some(tls::client_config(opts)?),
            _ => None,
        };
        let mut c = Client {
            endpoint,
            tls,
            version: String::new(),
        };
        let r = c.send("GET", "/_ping", &[], Body::Empty)?;
        let theirs = r.head.header("Api-Version").and_then(parse_version);
        let _ = r.body.read_limited(1 << 10);
        let (major, minor) = match theirs {
            Some(v) if v < API_VERSION => v,
            Some(_) => API_VERSION,
            // docker's fallback for a daemon that does not say.
            None => (1, 24),
        };
        c.version = format!("/v{major}.{minor}");
        Ok(c)
    }

    /// The daemon's URL.
    pub fn url(&self) -> String {
        self.endpoint.host.url()
    }

    /// Sends a request (`path` without the version prefix) and reads the response head.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Response, ClientError> {
        let (r, mut w) = conn::connect(&self.endpoint, self.tls.as_ref())?;
        let full = format!("{}{path}", self.version);
        http::write_request(&mut w, method, &full, headers, body).map_err(ClientError::Send)?;
        let mut r = BufReader::with_capacity(64 << 10, r);
        let head = http::read_head(&mut r)?;
        // The write half stays open while the body is read: over ssh, closing it ends the
        // connection.
        let body = BodyReader::new(r, &head, method, w);
        Ok(Response { head, body })
    }

    /// [`Client::send`], with a status of 400 or more turned into [`ClientError::Api`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Response, ClientError> {
        self.send(method, path, headers, body)?.checked()
    }

    /// A JSON request and its JSON answer (`null` for an empty one).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let (headers, body) = json_body(body);
        let r = self.call(method, path, &headers, body)?;
        let bytes = r.body.read_limited(MAX_JSON)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{method} {path}: {e}")))
    }

    /// A request the daemon answers by switching the connection to a raw stream.
    pub fn upgrade(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Hijacked, ClientError> {
        let (mut headers, body) = json_body(body);
        headers.push(("Connection", "Upgrade".to_owned()));
        headers.push(("Upgrade", "tcp".to_owned()));
        let r = self.call("POST", path, &headers, body)?;
        let (output, input) = r.body.into_stream(r.head.status == 101);
        Ok(Hijacked { output, input })
    }
}

fn json_body(body: Option<&serde_json::Value>) -> (Vec<(&'static str, String)>, Body<'static>) {
    match body {
        Some(v) => (
            vec![("Content-Type", "application/json".to_owned())],
            Body::Bytes(v.to_string().into_bytes()),
        ),
        None => (Vec::new(), Body::Empty),
    }
}

impl Response {
    /// An error status becomes [`ClientError::Api`] with the daemon's message.
    pub fn checked(self) -> Result<Response, ClientError> {
        let status = self.head.status;
        if status < 400 {
            return Ok(self);
        }
        let bytes = self.body.read_limited(1 << 20).unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes).trim().to_owned();
                if text.is_empty() {
                    format!("the daemon answered {status}")
                } else {
                    text
                }
            });
        Err(ClientError::Api { status, message })
    }
}

/// `1.41` → (1, 41).
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn enc(s: &str) -> String {
    encode(s, b"-._~")
}

/// Percent-encodes a name put in a path; an image name keeps its `/`, `:` and `@`.
pub fn enc_path(s: &str) -> String {
    encode(s, b"-._~/:@")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_encoding() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert!(parse_version("1.41") < Some(API_VERSION));
        assert_eq!(parse_version("x"), None);
        assert_eq!(enc("a b&c=d/"), "a%20b%26c%3Dd%2F");
        assert_eq!(
            enc_path("localhost:5000/bb@sha256:ab"),
            "localhost:5000/bb@sha256:ab"
        );
        assert_eq!(enc_path("../x?y"), "../x%3Fy");
    }
}
