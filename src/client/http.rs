//! HTTP/1.1 on one connection: a request written, a response head parsed, the body read
//! as its framing says (Content-Length, chunked, or to the end of the connection).

use std::io::{self, BufRead, BufReader, Read, Write};

use super::ClientError;
use super::conn::{ReadHalf, WriteHalf};

/// The most a response head may take: a hostile server cannot make the client buffer more.
const MAX_HEAD: usize = 64 << 10;

/// What a request carries.
pub enum Body<'a> {
    Empty,
    /// Sent with its Content-Length.
    Bytes(Vec<u8>),
    /// Sent chunked, as it is read.
    Stream(Box<dyn Read + 'a>),
}

/// Writes a request line, headers and body.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Body<'_>,
) -> io::Result<()> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: nook/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &body {
        Body::Empty if matches!(method, "POST" | "PUT") => head.push_str("Content-Length: 0\r\n"),
        Body::Empty => {}
        Body::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        Body::Stream(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    let mut w = io::BufWriter::with_capacity(64 << 10, w);
    w.write_all(head.as_bytes())?;
    match body {
        Body::Empty => {}
        Body::Bytes(b) => w.write_all(&b)?,
        Body::Stream(mut r) => {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                write!(w, "{n:x}\r\n")?;
                w.write_all(&buf[..n])?;
                w.write_all(b"\r\n")?;
            }
            w.write_all(b"0\r\n\r\n")?;
        }
    }
    w.flush()
}

/// A response's status line and headers.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a response head; 1xx other than 101 is skipped.
pub fn read_head(r: &mut BufReader<ReadHalf>) -> Result<Head, ClientError> {
    loop {
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\n") {
            let n = r
                .read_until(b'\n', &mut raw)
                .map_err(ClientError::Receive)?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "the daemon closed the connection without an answer".into(),
                ));
            }
            if raw.len() > MAX_HEAD {
                return Err(ClientError::Protocol(
                    "the response head is too large".into(),
                ));
            }
            if raw == b"\r\n" {
                raw.clear();
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&raw)
            .map_err(|e| ClientError::Protocol(format!("malformed response: {e}")))?;
        let status = resp.code.unwrap_or(0);
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(Head { status, headers });
    }
}

enum Framing {
    Length(u64),
    Chunked { left: u64, done: bool },
    Eof,
}

/// A response body, read as its framing says.
pub struct BodyReader {
    framed: Framed,
    writer: WriteHalf,
}

/// The read side of a body: the connection and the framing left to read.
struct Framed {
    inner: BufReader<ReadHalf>,
    framing: Framing,
}

impl BodyReader {
    /// The body that follows `head` on `inner`.
    pub fn new(
        inner: BufReader<ReadHalf>,
        head: &Head,
        method: &str,
        writer: WriteHalf,
    ) -> BodyReader {
        let chunked = head
            .header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let framing = if method == "HEAD" || matches!(head.status, 204 | 304) {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked {
                left: 0,
                done: false,
            }
        } else if let Some(n) = head
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok())
        {
            Framing::Length(n)
        } else {
            Framing::Eof
        };
        BodyReader {
            framed: Framed { inner, framing },
            writer,
        }
    }

    /// The connection as a stream: after a 101 the raw bytes that follow the head (those
    /// already buffered included); otherwise the body as framed. With the write half.
    pub fn into_stream(self, upgraded: bool) -> (Box<dyn Read + Send>, WriteHalf) {
        if upgraded {
            (Box::new(self.framed.inner), self.writer)
        } else {
            (Box::new(self.framed), self.writer)
        }
    }

    /// The whole body, up to `limit` bytes.
    pub fn read_limited(mut self, limit: u64) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        (&mut self)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(ClientError::Receive)?;
        if out.len() as u64 > limit {
            return Err(ClientError::Protocol(format!(
                "a response body over {limit} bytes"
            )));
        }
        Ok(out)
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.framed.read(buf)
    }
}

impl Framed {
    fn next_chunk(&mut self) -> io::Result<u64> {
        let mut line = String::new();
        self.inner.by_ref().take(1024).read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = u64::from_str_radix(size, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if n == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                let got = self.inner.by_ref().take(8192).read_line(&mut line)?;
                if got == 0 || line.trim().is_empty() {
                    break;
                }
            }
        }
        Ok(n)
    }
}

impl Read for Framed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Eof => self.inner.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Length(left - n as u64);
                Ok(n)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { left: 0, .. } => {
                let n = self.next_chunk()?;
                self.framing = Framing::Chunked {
                    left: n,
                    done: n == 0,
                };
                self.read(buf)
            }
            Framing::Chunked { left, .. } => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let left = left - n as u64;
                if left == 0 {
                    let mut crlf = [0u8; 2];
                    self.inner.read_exact(&mut crlf)?;
                }
                self.framing = Framing::Chunked { left, done: false };
                Ok(n)
            }
        }
    }
}
