//! HTTP/1.1 on a stream: request heads parsed by `httparse` (at most [`HEAD_LIMIT`]), bodies
//! by Content-Length or chunked (at most [`BODY_LIMIT`]), responses written by hand with a
//! Content-Length or chunked for streams. Routes that take archives (a build context, a tar
//! for `docker cp`) have their body spooled to an unnamed temporary file instead, up to
//! [`SPOOL_LIMIT`].

use std::io::{self, Read, Write};

use super::error::ApiError;
use super::route::{API_VERSION, Query};

pub const HEAD_LIMIT: usize = 64 << 10;
pub const BODY_LIMIT: usize = 16 << 20;
pub const SPOOL_LIMIT: u64 = 8 << 30;
const MAX_HEADERS: usize = 128;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The request target as sent (path and query), for the request log.
    pub target: String,
    pub query: Query,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body of a spooling route, in an unnamed temporary file (read from its start).
    pub body_file: Option<std::fs::File>,
    /// The client asked to close after this answer (or spoke HTTP/1.0).
    pub close: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (an empty body is `null`), or docker's 400.
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Why no request could be read: the peer left (answer nothing) or sent something to refuse.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    Refuse(ApiError),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Closed
    }
}

/// A reader that fails once `until` has passed: a client trickling a byte at a time (each
/// read within the socket's timeout) still cannot hold its connection for ever.
pub struct Deadline<R> {
    pub inner: R,
    pub until: std::time::Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        if std::time::Instant::now() >= self.until {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.inner.read(b)
    }
}

/// Reads the next request; `buf` keeps bytes that arrived after it (pipelining).
pub fn read_request(s: &mut impl Read, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    read_request_spooling(s, buf, None)
}

/// [`read_request`], with the body of a spooling route (see [`super::route::spools_body`])
/// written to an unnamed file in `spool` when it is given.
pub fn read_request_spooling(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    spool: Option<&std::path::Path>,
) -> Result<Request, ReadError> {
    loop {
        if let Some((mut req, used)) = parse_head(buf)? {
            buf.drain(..used);
            if let Some(dir) = spool.filter(|_| super::route::spools_body(&req.method, &req.path)) {
                let mut f = spool_file(dir)?;
                read_body(s, buf, &req, &mut f, SPOOL_LIMIT)?;
                io::Seek::rewind(&mut f).map_err(spool_error)?;
                req.body_file = Some(f);
                return Ok(req);
            }
            let mut body = Vec::new();
            read_body(s, buf, &req, &mut body, BODY_LIMIT as u64)?;
            req.body = body;
            return Ok(req);
        }
        if buf.len() > HEAD_LIMIT {
            return Err(ReadError::Refuse(ApiError::TooLarge(format!(
                "request head over {HEAD_LIMIT} bytes"
            ))));
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head, if complete, and how many bytes it took.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let used = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(ReadError::Refuse(ApiError::BadRequest(format!(
                "malformed request: {e}"
            ))));
        }
    };
    let target = r.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let conn = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.to_ascii_lowercase());
    let close = r.version == Some(0) || conn.as_deref() == Some("close");
    let req = Request {
        method: r.method.unwrap_or("GET").to_owned(),
        path: path.to_owned(),
        target: target.to_owned(),
        query: Query::parse(query),
        headers,
        body: Vec::new(),
        body_file: None,
        close,
    };
    Ok(Some((req, used)))
}

fn spool_error(e: io::Error) -> ReadError {
    ReadError::Refuse(ApiError::Internal(format!(
        "cannot keep the request body: {e}"
    )))
}

fn spool_file(dir: &std::path::Path) -> Result<std::fs::File, ReadError> {
    std::fs::create_dir_all(dir).map_err(spool_error)?;
    unnamed_file(dir).map_err(spool_error)
}

/// A file in `dir` with no name (O_TMPFILE, else made and unlinked at once): gone with its
/// last descriptor, whatever way the request ends.
pub fn unnamed_file(dir: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    if let Ok(f) = tmpfile {
        return Ok(f);
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("spool-{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    std::fs::remove_file(&p)?;
    Ok(f)
}

/// Reads the body `req` announces (Content-Length or chunked) into `out`, at most `limit`.
fn read_body(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    req: &Request,
    out: &mut impl Write,
    limit: u64,
) -> Result<(), ReadError> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(s, buf, out, limit);
    }
    let len: u64 = match req.header("content-length") {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| {
            ReadError::Refuse(ApiError::BadRequest(format!("bad Content-Length {v:?}")))
        })?,
    };
    if len > limit {
        return Err(too_large(limit));
    }
    copy_exact(s, buf, out, len)
}

/// Moves `n` body bytes (those already in `buf` first) to `out`.
fn copy_exact(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    out: &mut impl Write,
    mut n: u64,
) -> Result<(), ReadError> {
    while n > 0 {
        if buf.is_empty() {
            fill(s, buf, 1)?;
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        out.write_all(&buf[..take]).map_err(spool_error)?;
        buf.drain(..take);
        n -= take as u64;
    }
    Ok(())
}

fn too_large(limit: u64) -> ReadError {
    ReadError::Refuse(ApiError::TooLarge(format!(
        "request body over {} MiB",
        limit >> 20
    )))
}

/// Reads until `buf` holds at least `n` bytes.
fn fill(s: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Result<(), ReadError> {
    let mut chunk = [0u8; 65536];
    while buf.len() < n {
        let got = s.read(&mut chunk)?;
        if got == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without it) from `buf`, reading more as needed.
fn line(s: &mut impl Read, buf: &mut Vec<u8>) -> Result<String, ReadError> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l: Vec<u8> = buf.drain(..i + 2).take(i).collect();
            return Ok(String::from_utf8_lossy(&l).into_owned());
        }
        if buf.len() > 4096 {
            return Err(ReadError::Refuse(ApiError::BadRequest(
                "malformed chunked body".into(),
            )));
        }
        let have = buf.len();
        fill(s, buf, have + 1)?;
    }
}

fn read_chunked(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    out: &mut impl Write,
    limit: u64,
) -> Result<(), ReadError> {
    let mut total: u64 = 0;
    loop {
        let size_line = line(s, buf)?;
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16).map_err(|_| {
            ReadError::Refuse(ApiError::BadRequest("malformed chunked body".into()))
        })?;
        total = total.saturating_add(size);
        if total > limit {
            return Err(too_large(limit));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            while !line(s, buf)?.is_empty() {}
            return Ok(());
        }
        copy_exact(s, buf, out, size)?;
        fill(s, buf, 2)?;
        buf.drain(..2);
    }
}

/// A chunked response body being written.
pub struct Chunked<'a> {
    w: &'a mut dyn Write,
    gone: &'a dyn Fn() -> bool,
}

impl Chunked<'_> {
    /// Whether the client has hung up (a stream that waits long checks, so that a client
    /// that went away does not hold its thread until the container ends).
    pub fn client_gone(&self) -> bool {
        (self.gone)()
    }

    /// Sends one chunk at once.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        write!(self.w, "{:x}\r\n", data.len())?;
        self.w.write_all(data)?;
        self.w.write_all(b"\r\n")?;
        self.w.flush()
    }
}

type StreamFn = Box<dyn FnOnce(&mut Chunked<'_>) -> io::Result<()>>;

/// A connection taken over by a handler after its response head (`attach`, exec start): the
/// socket both ways, and the bytes the client sent after the request (its first stdin).
pub struct Hijacked<'a> {
    pub conn: &'a std::os::unix::net::UnixStream,
    pub early: Vec<u8>,
}

impl Hijacked<'_> {
    /// Whether the client has closed the connection.
    pub fn client_gone(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            _ => false,
        }
    }
}

type HijackFn = Box<dyn FnOnce(Hijacked<'_>) -> io::Result<()>>;

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Headers go out at once; the function sends the chunks.
    Stream(StreamFn),
    /// The head goes out alone (no length, no chunks), then the function has the connection,
    /// which closes when it returns.
    Hijack(HijackFn),
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Body::Bytes(format!("{v}\n").into_bytes()),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn stream(
        content_type: &'static str,
        f: impl FnOnce(&mut Chunked<'_>) -> io::Result<()> + 'static,
    ) -> Response {
        Response {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: Body::Stream(Box::new(f)),
        }
    }

    /// A hijacked stream: `101 Switching Protocols` with `Upgrade: tcp` when the client asked
    /// for the upgrade, else docker's old plain 200.
    pub fn hijack(
        content_type: &'static str,
        upgrade: bool,
        f: impl FnOnce(Hijacked<'_>) -> io::Result<()> + 'static,
    ) -> Response {
        let headers = if upgrade {
            vec![("Connection", "Upgrade".into()), ("Upgrade", "tcp".into())]
        } else {
            Vec::new()
        };
        Response {
            status: if upgrade { 101 } else { 200 },
            content_type,
            headers,
            body: Body::Hijack(Box::new(f)),
        }
    }

    pub fn error(e: &ApiError) -> Response {
        Response::json(e.status(), &e.body())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// How a response is written: HEAD (no body), `Connection: close`, and how a stream learns
/// that its client hung up.
pub struct Framing<'a> {
    pub head_only: bool,
    pub close: bool,
    pub gone: &'a dyn Fn() -> bool,
}

impl Framing<'_> {
    /// For a plain answer on a connection about to close.
    pub fn closing() -> Framing<'static> {
        Framing {
            head_only: false,
            close: true,
            gone: &|| false,
        }
    }
}

/// Writes `r`.
pub fn write_response(w: &mut dyn Write, r: Response, f: &Framing<'_>) -> io::Result<()> {
    let (head_only, close) = (f.head_only, f.close);
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    let mut add = |k: &str, v: &str| {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    };
    add("Api-Version", API_VERSION);
    add("Ostype", "linux");
    add(
        "Server",
        concat!("nook/", env!("CARGO_PKG_VERSION"), " (linux)"),
    );
    add("Docker-Experimental", "false");
    for (k, v) in &r.headers {
        add(k, v);
    }
    let hijacked = matches!(r.body, Body::Hijack(_));
    if close && !hijacked {
        add("Connection", "close");
    }
    let no_body = r.status == 204 || r.status == 304;
    match r.body {
        Body::Stream(send) if !head_only => {
            add("Content-Type", r.content_type);
            add("Transfer-Encoding", "chunked");
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            w.flush()?;
            let mut c = Chunked { w, gone: f.gone };
            send(&mut c)?;
            w.write_all(b"0\r\n\r\n")?;
            w.flush()
        }
        Body::Hijack(_) => {
            add("Content-Type", r.content_type);
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            w.flush()
        }
        body => {
            let bytes = match body {
                Body::Bytes(b) => b,
                _ => Vec::new(),
            };
            if !no_body {
                add("Content-Type", r.content_type);
                add("Content-Length", &bytes.len().to_string());
            }
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            if !head_only && !no_body {
                w.write_all(&bytes)?;
            }
            w.flush()
        }
    }
}

/// Writes a hijacking response's head (flushed alone: docker-py reads the stream beneath its
/// buffer, so stream bytes must not share a read with the head), then hands the connection
/// over; `early` is what the client sent after its request.
pub fn hijack(
    conn: &std::os::unix::net::UnixStream,
    r: Response,
    early: Vec<u8>,
) -> io::Result<()> {
    let Response {
        status,
        content_type,
        headers,
        body,
    } = r;
    let Body::Hijack(f) = body else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let head = Response {
        status,
        content_type,
        headers,
        body: Body::Hijack(Box::new(|_| Ok(()))),
    };
    let mut w = conn;
    write_response(&mut w, head, &Framing::closing())?;
    head_read(conn);
    f(Hijacked { conn, early })
}

/// Waits (up to half a second) until the client has read the response head: a socket has no
/// packet boundaries, and docker-py parses the head through a buffered reader, then reads the
/// stream from the socket beneath it, so stream bytes that arrive before it read the head are
/// lost in that buffer (an exec's quick output came back empty).
fn head_read(conn: &std::os::unix::net::UnixStream) {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while crate::sys::socket::unread_sent(conn.as_fd()).is_ok_and(|n| n > 0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_heads_bodies_and_pipelined_requests() {
        let raw = b"POST /v1.50/containers/create?name=x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /_ping HTTP/1.1\r\n\r\n";
        let mut src = &raw[..];
        let mut buf = Vec::new();
        let r = read_request(&mut src, &mut buf).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1.50/containers/create")
        );
        assert_eq!(r.query.get("name"), Some("x"));
        assert_eq!(r.body, b"{}");
        let r2 = read_request(&mut src, &mut buf).unwrap();
        assert_eq!(r2.path, "/_ping");
        assert!(matches!(
            read_request(&mut src, &mut buf),
            Err(ReadError::Closed)
        ));
    }

    #[test]
    fn chunked_bodies_and_limits() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = read_request(&mut &raw[..], &mut Vec::new()).unwrap();
        assert_eq!(r.body, b"abcde");
        let big = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        );
        match read_request(&mut big.as_bytes(), &mut Vec::new()) {
            Err(ReadError::Refuse(e)) => assert_eq!(e.status(), 413),
            other => panic!("{other:?}"),
        }
        match read_request(&mut &b"GARBAGE\0\r\n\r\n"[..], &mut Vec::new()) {
            Err(ReadError::Refuse(e)) => assert_eq!(e.status(), 400),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_have_length_or_chunks() {
        let mut out = Vec::new();
        let plain = Framing {
            close: false,
            ..Framing::closing()
        };
        let r = Response::json(404, &serde_json::json!({"message":"x"}));
        write_response(&mut out, r, &plain).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Api-Version: 1.50\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"message\":\"x\"}\n"), "{s}");
        let mut out = Vec::new();
        let r = Response::stream("application/json", |c| c.send(b"hi"));
        write_response(&mut out, r, &plain).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
            "{s}"
        );
    }
}
