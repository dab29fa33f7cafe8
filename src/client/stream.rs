//! What flows in a response body: docker's multiplexed stream (8-byte frame headers, the
//! output of a container without a terminal) and JSON lines (pull, push and build progress).

use std::io::{self, BufRead, BufReader, Read, Write};

/// The longest JSON line accepted from a daemon.
const MAX_LINE: u64 = 16 << 20;

/// Copies a multiplexed stream: stream 1 to `out`, 2 (and 3, the daemon's own errors) to
/// `err`, each frame flushed as it comes.
pub fn demux(mut r: impl Read, out: &mut impl Write, err: &mut impl Write) -> io::Result<()> {
    let mut header = [0u8; 8];
    let mut buf = vec![0u8; 32 << 10];
    loop {
        if !read_header(&mut r, &mut header)? {
            return Ok(());
        }
        let mut left = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let to: &mut dyn Write = match header[0] {
            0 | 1 => out,
            2 | 3 => err,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unrecognized stream {other} in the daemon's output"),
                ));
            }
        };
        while left > 0 {
            let want = left.min(buf.len());
            r.read_exact(&mut buf[..want])?;
            // A closed standard output (`| head`) ends the copy, not the container.
            to.write_all(&buf[..want])?;
            left -= want;
        }
        to.flush()?;
    }
}

/// Fills a frame header; false at a clean end between frames.
fn read_header(r: &mut impl Read, header: &mut [u8; 8]) -> io::Result<bool> {
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Copies a raw stream (a container with a terminal) to `out` as it comes.
pub fn copy_raw(mut r: impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

/// Calls `f` with each JSON value of a JSON-lines stream; a line that is not JSON is an error.
pub fn json_lines(
    r: impl Read,
    mut f: impl FnMut(serde_json::Value) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        // Several values may share a line: read them one after another.
        for v in serde_json::Deserializer::from_slice(text).into_iter::<serde_json::Value>() {
            f(v.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn frames_go_to_their_streams() {
        let mut input = frame(1, b"out\n");
        input.extend(frame(2, b"err\n"));
        input.extend(frame(1, b""));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        demux(&input[..], &mut out, &mut err).unwrap();
        assert_eq!(out, b"out\n");
        assert_eq!(err, b"err\n");
    }

    #[test]
    fn a_cut_or_unknown_frame_is_an_error() {
        let input = frame(1, b"hello");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(demux(&input[..7], &mut out, &mut err).is_err());
        assert!(demux(&input[..10], &mut out, &mut err).is_err());
        assert!(demux(&frame(9, b"x")[..], &mut out, &mut err).is_err());
    }

    #[test]
    fn json_lines_one_or_several_a_line() {
        let mut seen = Vec::new();
        json_lines(&b"{\"a\":1}\n\n{\"a\":2}{\"a\":3}\n"[..], |v| {
            seen.push(v["a"].as_i64().unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [1, 2, 3]);
        assert!(json_lines(&b"nope\n"[..], |_| Ok(())).is_err());
    }
}
