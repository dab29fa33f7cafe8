//! A scripted HTTP/1.1 server on loopback, for what a real registry cannot show: Docker Hub's
//! token flow, CDN redirects, rate limits, cut connections, hostile answers.
//!
//! Every request is recorded; the handler decides each answer. One thread per connection,
//! `Connection: close` on every answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as received.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path with query.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An answer.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes (a cut transfer).
    pub cut_after: Option<usize>,
    /// Pause between 16 KiB pieces of the body (a slow server).
    pub pace: Option<Duration>,
}

impl Resp {
    pub fn new(status: u16) -> Self {
        Resp {
            status,
            ..Default::default()
        }
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    pub fn json(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// A running mock server.
pub struct Mock {
    pub port: u16,
    pub url: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Mock {
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let (reqs, st) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, r) = (handler.clone(), reqs.clone());
                std::thread::spawn(move || serve(conn, &h, &r));
            }
        });
        Mock {
            port,
            url: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let req = Req {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut w = conn;
    let reason = match resp.status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", resp.status);
    let has_len = resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    if req.method == "HEAD" {
        return;
    }
    let limit = resp
        .cut_after
        .unwrap_or(resp.body.len())
        .min(resp.body.len());
    for piece in resp.body[..limit].chunks(16 << 10) {
        if w.write_all(piece).is_err() {
            return;
        }
        if let Some(p) = resp.pace {
            std::thread::sleep(p);
        }
    }
    let _ = w.flush();
    if resp.cut_after.is_some() {
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

/// A mock registry serving one repository from a built image.
pub struct Content {
    pub manifests: HashMap<String, (Vec<u8>, String)>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    pub fn from_built(tag: &str, b: &super::image::Built) -> Content {
        let mut manifests = HashMap::new();
        manifests.insert(tag.to_owned(), (b.manifest.clone(), b.media_type.clone()));
        manifests.insert(b.digest.clone(), (b.manifest.clone(), b.media_type.clone()));
        Content {
            manifests,
            blobs: b.blobs.iter().cloned().collect(),
        }
    }

    /// The plain answer for `/v2/<repo>/manifests/<ref>` and `/v2/<repo>/blobs/<digest>`,
    /// honouring Range.
    pub fn answer(&self, req: &Req) -> Resp {
        let path = req.path.split('?').next().unwrap_or("");
        if path == "/v2/" || path == "/v2" {
            return Resp::new(200).json(&serde_json::json!({}));
        }
        if let Some(i) = path.find("/manifests/") {
            let r = &path[i + 11..];
            return match self.manifests.get(r) {
                Some((b, mt)) => Resp::new(200)
                    .header("content-type", mt.as_str())
                    .header("docker-content-digest", super::image::sha256(b))
                    .body(b.clone()),
                None => Resp::new(404).json(&serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})),
            };
        }
        if let Some(i) = path.find("/blobs/") {
            let d = &path[i + 7..];
            return match self.blobs.get(d) {
                Some(b) => ranged(req, b),
                None => Resp::new(404),
            };
        }
        Resp::new(404)
    }
}

/// A blob answer honouring `Range: bytes=N-`.
pub fn ranged(req: &Req, b: &[u8]) -> Resp {
    if let Some(start) = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        && start < b.len()
    {
        return Resp::new(206)
            .header(
                "content-range",
                format!("bytes {start}-{}/{}", b.len() - 1, b.len()),
            )
            .body(b[start..].to_vec());
    }
    Resp::new(200)
        .header("content-type", "application/octet-stream")
        .body(b.to_vec())
}
