//! The entries of an archive being saved, and writing them as a tar or into a directory.
//!
//! Tar headers are fixed (mtime 0, owner 0:0, mode 0644 or 0755, no user or group names), so
//! the same images always give the same bytes. A layer to write uncompressed is inflated twice:
//! once to learn its size (the header comes first) and check its diff_id, once to write it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::ArchiveError;
use crate::digest::{Digest, HashingReader};

/// What an entry's content is.
pub enum Source {
    Dir,
    Bytes(Vec<u8>),
    /// A stored file, copied as it is.
    File(PathBuf),
    /// A stored layer blob, written uncompressed; its diff_id is checked.
    Inflated {
        blob: PathBuf,
        diff_id: Digest,
    },
    Symlink(String),
}

/// The entries of an archive, in order, each name once.
#[derive(Default)]
pub struct Entries {
    list: Vec<(String, Source)>,
    names: HashSet<String>,
}

impl Entries {
    /// Adds `name` unless it is there already (a blob shared by two images goes in once).
    pub fn add(&mut self, name: String, source: Source) {
        if self.names.insert(name.clone()) {
            self.list.push((name, source));
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Writes the entries as one tar stream.
    pub fn write_tar(self, w: &mut dyn Write) -> Result<(), ArchiveError> {
        let mut b = tar::Builder::new(w);
        for (name, source) in self.list {
            append(&mut b, &name, source)?;
        }
        b.into_inner()
            .and_then(|w| w.flush())
            .map_err(ArchiveError::Write)
    }

    /// Writes the entries below `dir` (created; it must not exist or be empty).
    pub fn write_dir(self, dir: &Path) -> Result<(), ArchiveError> {
        let at = |p: &Path| {
            let path = p.display().to_string();
            move |source| ArchiveError::WriteDir { path, source }
        };
        match fs::read_dir(dir) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(ArchiveError::DirNotEmpty(dir.display().to_string()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(at(dir))?,
            Err(e) => return Err(at(dir)(e)),
        }
        for (name, source) in self.list {
            let p = dir.join(&name);
            match source {
                Source::Dir => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&p)
                    .map_err(at(&p))?,
                Source::Bytes(b) => fs::write(&p, b).map_err(at(&p))?,
                Source::File(from) => {
                    fs::copy(&from, &p).map_err(at(&p))?;
                }
                Source::Symlink(t) => std::os::unix::fs::symlink(t, &p).map_err(at(&p))?,
                Source::Inflated { blob, diff_id } => {
                    let mut out = File::create(&p).map_err(at(&p))?;
                    let size = measure(&blob, &diff_id)?;
                    copy_inflated(&blob, size, &mut out)?;
                }
            }
        }
        Ok(())
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    source: Source,
) -> Result<(), ArchiveError> {
    let res = match source {
        Source::Dir => {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("{name}/"), io::empty())
        }
        Source::Bytes(bytes) => {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            b.append_data(&mut h, name, bytes.as_slice())
        }
        Source::File(path) => {
            let f = File::open(&path).map_err(|e| stored(&path, e))?;
            let len = f.metadata().map_err(|e| stored(&path, e))?.len();
            let mut h = header(tar::EntryType::Regular, 0o644, len);
            b.append_data(&mut h, name, exact(f, len))
        }
        Source::Symlink(target) => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, name, target)
        }
        Source::Inflated { blob, diff_id } => {
            let size = measure(&blob, &diff_id)?;
            let f = File::open(&blob).map_err(|e| stored(&blob, e))?;
            let r = super::inflate(f).map_err(|e| stored(&blob, e))?;
            let mut h = header(tar::EntryType::Regular, 0o644, size);
            b.append_data(&mut h, name, exact(r, size))
        }
    };
    res.map_err(ArchiveError::Write)
}

fn stored(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Store(crate::store::StoreError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A reader that must give exactly `len` bytes: a shorter one is an error, a longer one cut.
fn exact<R: Read>(r: R, len: u64) -> impl Read {
    struct Exact<R> {
        inner: io::Take<R>,
        left: u64,
    }
    impl<R: Read> Read for Exact<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if n == 0 && self.left > 0 && !buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a stored blob changed while it was written",
                ));
            }
            self.left -= n as u64;
            Ok(n)
        }
    }
    Exact {
        inner: r.take(len),
        left: len,
    }
}

/// The uncompressed size of a stored layer blob, after checking it is the layer `diff_id`.
fn measure(blob: &Path, diff_id: &Digest) -> Result<u64, ArchiveError> {
    let f = File::open(blob).map_err(|e| stored(blob, e))?;
    let r = super::inflate(f).map_err(|e| stored(blob, e))?;
    let mut h = HashingReader::new(r, diff_id.algorithm());
    io::copy(&mut h, &mut io::sink()).map_err(|e| stored(blob, e))?;
    let (actual, len) = h.finish();
    if &actual != diff_id {
        return Err(ArchiveError::StoredLayer {
            digest: diff_id.clone(),
            actual,
        });
    }
    Ok(len)
}

fn copy_inflated(blob: &Path, size: u64, out: &mut File) -> Result<(), ArchiveError> {
    let f = File::open(blob).map_err(|e| stored(blob, e))?;
    let r = super::inflate(f).map_err(|e| stored(blob, e))?;
    io::copy(&mut exact(r, size), out).map_err(ArchiveError::Write)?;
    Ok(())
}
