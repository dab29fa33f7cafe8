//! A layer tar on disk → a gzip blob and an unpacked layer in the store.
//!
//! One pass over the tar hashes it (the diff_id) while a second thread compresses the same
//! chunks into a temporary blob file, hashing the compressed bytes (the blob digest). The gzip
//! stream is deterministic (no name, mtime 0, a fixed level), so the same tar always gives the
//! same blob and a rebuilt step the same manifest. Then, unless the store has that diff_id
//! already, the tar is read again and unpacked as a pull does: under the layer lock, into a
//! fresh staging directory, renamed into `layers/` only when it is complete. The second read
//! is hashed too: a tar that changed between the two reads is refused rather than stored under
//! a digest that does not describe it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use flate2::{Compression, GzBuilder};

use super::{CommitError, Format};
use crate::digest::{Algorithm, Digest, Hasher, HashingReader, HashingWriter};
use crate::store::{LayerRecord, LayerRef, Store};
use crate::sys::confined::remove_tree;
use crate::unpack::{self, Owners};

/// Bytes per chunk between the reading and the compressing thread.
const CHUNK: usize = 256 << 10;

/// What one pass over the tar found.
struct Compressed {
    diff_id: Digest,
    blob: Digest,
    blob_size: u64,
    /// The compressed blob, below the store's `tmp/`.
    tmp: PathBuf,
}

/// A layer tar at `tar` → a gzip blob in the store, its diff_id and digest, and the unpacked
/// layer in `layers/` (skipped when the store has that diff_id already). The caller holds the
/// store's `gc` lock shared from here until the image that uses the layer is recorded.
pub fn store_layer(
    store: &Store,
    tar: &Path,
    owners: Owners,
    format: Format,
) -> Result<LayerRef, CommitError> {
    let c = compress(store, tar)?;
    let media_type = format.layer_gzip().to_owned();
    let kept = keep_blob(store, &c);
    let layer =
        kept.and_then(|()| unpack_layer(store, tar, owners, &c.diff_id, &c.blob, &media_type));
    layer?;
    Ok(LayerRef {
        digest: c.blob,
        diff_id: c.diff_id,
        size: c.blob_size,
        media_type,
    })
}

/// Moves the compressed blob into the store, or drops it when the store has it already.
fn keep_blob(store: &Store, c: &Compressed) -> Result<(), CommitError> {
    if store.has_blob(&c.blob) {
        let _ = fs::remove_file(&c.tmp);
        return Ok(());
    }
    store.commit_blob_file(&c.blob, &c.tmp).map_err(|e| {
        let _ = fs::remove_file(&c.tmp);
        CommitError::Store(e)
    })
}

/// Reads the tar once: hashes it here, compresses it on a second thread.
fn compress(store: &Store, tar: &Path) -> Result<Compressed, CommitError> {
    let read_err = |source| CommitError::ReadTar {
        path: tar.display().to_string(),
        source,
    };
    let mut input = File::open(tar).map_err(read_err)?;
    let tmp = store.tmp_path("layer-blob");
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| CommitError::Compress {
            path: tmp.display().to_string(),
            source,
        })?;
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    let (read, written) = thread::scope(|s| {
        let writer = s.spawn(|| gzip_chunks(rx, out));
        let read = feed(&mut input, tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compressing thread panicked")));
        (read, written)
    });
    // A failed write stops the reader too: the writer's error is the one to report.
    let outcome = written
        .map_err(|source| CommitError::Compress {
            path: tmp.display().to_string(),
            source,
        })
        .and_then(|(blob, blob_size)| Ok((read.map_err(read_err)?, blob, blob_size)));
    match outcome {
        Ok((diff_id, blob, blob_size)) => Ok(Compressed {
            diff_id,
            blob,
            blob_size,
            tmp,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Reads `input` to its end, hashing it and sending it on in chunks; returns its digest.
/// Dropping `tx` (on return, whatever the outcome) tells the compressor the input ended; on an
/// error the compressor's output is discarded anyway.
fn feed(input: &mut File, tx: SyncSender<Vec<u8>>) -> io::Result<Digest> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(hasher.finish());
        }
        buf.truncate(n);
        hasher.update(&buf);
        if tx.send(buf).is_err() {
            return Err(io::Error::other("the compressing thread stopped"));
        }
    }
}

/// Compresses every chunk into `out` (deterministic gzip); returns the blob's digest and size.
fn gzip_chunks(rx: Receiver<Vec<u8>>, out: File) -> io::Result<(Digest, u64)> {
    let hashed = HashingWriter::new(io::BufWriter::with_capacity(CHUNK, out), Algorithm::Sha256);
    let mut gz = GzBuilder::new().mtime(0).write(hashed, Compression::fast());
    for chunk in rx {
        gz.write_all(&chunk)?;
    }
    let (digest, size, buffered) = gz.finish()?.finish();
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    Ok((digest, size))
}

/// Unpacks the tar into `layers/<diff_id>` unless the store has it, as a pull does.
fn unpack_layer(
    store: &Store,
    tar: &Path,
    owners: Owners,
    diff_id: &Digest,
    blob: &Digest,
    media_type: &str,
) -> Result<(), CommitError> {
    if store.has_layer(diff_id) {
        return Ok(());
    }
    let _lock = store.lock_layer(diff_id)?;
    if store.has_layer(diff_id) {
        return Ok(());
    }
    let staging = fresh_staging(store, diff_id)?;
    let stats = match unpack_checked(tar, &staging.join("root"), owners, diff_id) {
        Ok(s) => s,
        Err(e) => {
            let _ = remove_tree(&staging);
            return Err(e);
        }
    };
    let record = LayerRecord {
        diff_id: diff_id.clone(),
        blob: blob.clone(),
        media_type: media_type.to_owned(),
        size: stats.bytes,
        stats,
    };
    store.commit_layer(diff_id, &staging, &record).map_err(|e| {
        let _ = remove_tree(&staging);
        CommitError::Store(e)
    })
}

/// Unpacks the tar at `tar` into `root`, checking that what was read is still `diff_id`.
fn unpack_checked(
    tar: &Path,
    root: &Path,
    owners: Owners,
    diff_id: &Digest,
) -> Result<unpack::UnpackStats, CommitError> {
    let read_err = |source| CommitError::ReadTar {
        path: tar.display().to_string(),
        source,
    };
    let file = File::open(tar).map_err(read_err)?;
    let mut hashed = HashingReader::new(BufReader::with_capacity(CHUNK, file), Algorithm::Sha256);
    let stats =
        unpack::unpack(&mut hashed, root, owners).map_err(|source| CommitError::Unpack {
            diff_id: diff_id.clone(),
            source,
        })?;
    // The diff_id covers the whole file, padding after the end-of-archive included.
    io::copy(&mut hashed, &mut io::sink()).map_err(read_err)?;
    let (actual, _) = hashed.finish();
    if &actual != diff_id {
        return Err(CommitError::TarChanged {
            path: tar.display().to_string(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(stats)
}

/// An empty staging directory for the layer (with its `root/`), whatever an interrupted
/// commit or pull left there. Called under the layer lock.
fn fresh_staging(store: &Store, diff_id: &Digest) -> Result<PathBuf, CommitError> {
    let staging = store.unpack_dir(diff_id);
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| CommitError::Staging { path, source }
    };
    if staging.exists() {
        remove_tree(&staging).map_err(err(&staging))?;
    }
    let root = staging.join("root");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(err(&staging))?;
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&root)
        .map_err(err(&root))?;
    Ok(staging)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn setup(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Store, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "single").unwrap();
        let bytes = tar_with(files);
        let path = dir.path().join("layer.tar");
        fs::write(&path, &bytes).unwrap();
        (dir, store, path, bytes)
    }

    #[test]
    fn a_tar_becomes_a_verified_blob_and_an_unpacked_layer() {
        let (_dir, store, path, bytes) = setup(&[("etc/hello", b"hi there"), ("a", b"")]);
        let l = store_layer(&store, &path, Owners::Record, Format::Oci).unwrap();
        assert_eq!(l.diff_id, Digest::sha256_of(&bytes));
        assert_eq!(l.media_type, crate::registry::manifest::OCI_LAYER_GZIP);
        let blob = fs::read(store.blob_path(&l.digest)).unwrap();
        assert_eq!(Digest::sha256_of(&blob), l.digest, "the blob verifies");
        assert_eq!(blob.len() as u64, l.size);
        let mut tar_again = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar_again)
            .unwrap();
        assert_eq!(tar_again, bytes, "the blob is the tar, gzipped");
        assert_eq!(&blob[4..8], &[0, 0, 0, 0], "mtime 0 in the gzip header");
        assert_eq!(blob[3] & 0x08, 0, "no file name in the gzip header");
        let root = store.layer_root(&l.diff_id);
        assert_eq!(fs::read(root.join("etc/hello")).unwrap(), b"hi there");
        let rec = store.layer_record(&l.diff_id).unwrap();
        assert_eq!((rec.size, &rec.blob), (8, &l.digest));
        let tmp = fs::read_dir(store.root().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "nothing is left in tmp/");
    }

    #[test]
    fn a_stored_layer_is_reused_and_the_blob_is_the_same() {
        let (_dir, store, path, _) = setup(&[("x", b"1")]);
        let first = store_layer(&store, &path, Owners::Record, Format::Docker).unwrap();
        let marker = store.layer_root(&first.diff_id).join("marker");
        fs::write(&marker, b"kept").unwrap();
        let second = store_layer(&store, &path, Owners::Record, Format::Docker).unwrap();
        assert_eq!(first, second, "deterministic blob, same layer");
        assert!(marker.exists(), "the stored layer is not unpacked again");
        assert_eq!(
            second.media_type,
            crate::registry::manifest::DOCKER_LAYER_GZIP
        );
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_hostile_tar_leaves_no_layer_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "single").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        let name = b"../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let path = dir.path().join("bad.tar");
        fs::write(&path, &bytes).unwrap();
        let err = store_layer(&store, &path, Owners::Record, Format::Oci).unwrap_err();
        assert!(matches!(err, CommitError::Unpack { .. }), "{err:?}");
        assert!(!store.has_layer(&Digest::sha256_of(&bytes)));
        assert!(!store.unpack_dir(&Digest::sha256_of(&bytes)).exists());
    }

    #[test]
    fn a_missing_tar_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "single").unwrap();
        let err = store_layer(
            &store,
            &dir.path().join("nope.tar"),
            Owners::Record,
            Format::Oci,
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.tar"), "{err}");
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }
}
