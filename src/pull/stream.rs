//! The pieces of the pull pipeline between threads: chunks over bounded channels, the
//! inflate stage, and the pump that feeds downloaded bytes in.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use super::LayerProgress;
use crate::digest::Hasher;

/// Bytes per chunk between stages.
pub const CHUNK: usize = 256 << 10;

/// What travels between stages: a chunk, or the error that stopped the sender.
pub type Chunk = io::Result<Vec<u8>>;

/// The inflate stage: gzip, zstd or plain tar (sniffed, as docker does), passed on in chunks.
pub fn decompress(rx: Receiver<Chunk>, tx: SyncSender<Chunk>) -> io::Result<()> {
    let fail = |tx: &SyncSender<Chunk>, e: io::Error| {
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
        Err(e)
    };
    let mut input = BufReader::with_capacity(CHUNK, ChannelReader::new(rx));
    let head = match input.fill_buf() {
        Ok(h) => h,
        Err(e) => return fail(&tx, e),
    };
    let mut decoder: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(d) => Box::new(d),
            Err(e) => return fail(&tx, e),
        }
    } else {
        Box::new(input)
    };
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = match read_full(&mut decoder, &mut buf) {
            Ok(n) => n,
            Err(e) => return fail(&tx, e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            // The unpack stage stopped; its error is the one to report.
            return Ok(());
        }
    }
}

/// Moves everything `reader` has into the pipeline, hashing and counting it and appending it
/// to `copy_to`; `Ok(false)` when the next stage has gone away (its error is the one to report).
pub fn pump(
    reader: &mut dyn Read,
    mut copy_to: Option<&mut File>,
    hasher: &mut Hasher,
    total: &mut u64,
    bar: &dyn LayerProgress,
    tx: &SyncSender<Chunk>,
) -> io::Result<bool> {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = read_full(reader, &mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        buf.truncate(n);
        if let Some(f) = copy_to.as_mut() {
            f.write_all(&buf)?;
        }
        hasher.update(&buf);
        *total += n as u64;
        bar.advance(n as u64);
        if tx.send(Ok(buf)).is_err() {
            return Ok(false);
        }
    }
}

/// Fills `buf` as far as the reader allows (fewer bytes only at the end).
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the chunks the fetch stage sends.
pub struct ChannelReader {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: Receiver<Chunk>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Mutex;
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::digest::{Algorithm, Digest};
    use crate::pull::LayerState;

    #[derive(Default)]
    struct Counted(Mutex<u64>);

    impl LayerProgress for Counted {
        fn status(&self, _: LayerState) {}
        fn advance(&self, n: u64) {
            *self.0.lock().unwrap() += n;
        }
        fn done(&self, _: LayerState) {}
    }

    /// Runs `input` through pump → decompress and returns what comes out.
    fn through_pipeline(input: &[u8]) -> (Vec<u8>, u64, Digest) {
        let (tx, rx) = sync_channel::<Chunk>(4);
        let (out_tx, out_rx) = sync_channel::<Chunk>(4);
        let bar = Counted::default();
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut total = 0;
        let out = std::thread::scope(|s| {
            let inflater = s.spawn(|| decompress(rx, out_tx));
            let reader = s.spawn(|| {
                let mut out = Vec::new();
                ChannelReader::new(out_rx).read_to_end(&mut out).unwrap();
                out
            });
            let mut src = input;
            assert!(pump(&mut src, None, &mut hasher, &mut total, &bar, &tx).unwrap());
            drop(tx);
            inflater.join().unwrap().unwrap();
            reader.join().unwrap()
        });
        assert_eq!(*bar.0.lock().unwrap(), total, "progress sees every byte");
        (out, total, hasher.finish())
    }

    #[test]
    fn gzip_and_plain_streams_come_out_whole() {
        let plain: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let (out, total, digest) = through_pipeline(&gz);
        assert_eq!(out, plain);
        assert_eq!(total, gz.len() as u64);
        assert_eq!(
            digest,
            Digest::sha256_of(&gz),
            "the blob digest covers the compressed bytes"
        );
        let (out, _, _) = through_pipeline(&plain);
        assert_eq!(out, plain);
    }

    #[test]
    fn a_broken_gzip_stream_is_an_error_downstream() {
        let (tx, rx) = sync_channel::<Chunk>(4);
        let (out_tx, out_rx) = sync_channel::<Chunk>(4);
        tx.send(Ok(vec![0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
            .unwrap();
        drop(tx);
        assert!(decompress(rx, out_tx).is_err());
        let mut sink = Vec::new();
        assert!(ChannelReader::new(out_rx).read_to_end(&mut sink).is_err());
    }
}
