//! ADD's two extras: local tar archives are unpacked into dest, URLs are downloaded.
//!
//! An archive is recognised by its content (gzip, bzip2, xz, zstd or plain tar, then a
//! readable first tar header), never by its name. It is unpacked by the layer unpacker into
//! a fresh directory under the scratch directory, with owners recorded rather than applied,
//! and that directory is then planned like any other tree. A download goes to the scratch
//! directory too, hashed as it is written, and is checked against `--checksum`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;

use super::copy::{CopyError, Dest, Planner};
use super::select::Selected;
use super::tree::{DirTree, OwnerView, rel_components};
use crate::build::entry::{Entry, EntryKind, Source, SourceTree};
use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::sys::confined::RootDir;
use crate::unpack::Owners;

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The compression `head` (the first bytes of a file) announces.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// `input` decompressed as its first bytes say.
pub(crate) fn decoder<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::new(input);
    let kind = sniff(input.fill_buf()?);
    Ok(match kind {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// Whether `input` is a (possibly compressed) tar archive: its first header reads.
pub fn is_archive(input: impl Read) -> bool {
    let Ok(d) = decoder(input) else {
        return false;
    };
    let mut archive = tar::Archive::new(d);
    let first = archive.entries().ok().and_then(|mut e| e.next());
    matches!(first, Some(Ok(_)))
}

/// Opens a file's content beneath its root (no symlink followed at the end).
fn open_source(source: &Source) -> io::Result<Option<std::fs::File>> {
    let Source::Beneath { root, rel } = source else {
        return Ok(None);
    };
    let root = RootDir::open(root)?;
    let fd = root.open_file(&rel_components(rel)?, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?;
    Ok(Some(std::fs::File::from(fd)))
}

/// A new directory below `scratch` named after `stem`.
fn fresh_dir(scratch: &Path, stem: &str) -> Result<PathBuf, CopyError> {
    let err = |path: &Path, source| CopyError::Scratch {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(scratch).map_err(|e| err(scratch, e))?;
    for k in 0..1000 {
        let dir = scratch.join(format!("{stem}-{k}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(&dir, e)),
        }
    }
    Err(err(scratch, io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// Plans a selected file as an archive unpacked into dest; `false` when it is not one.
pub(super) fn plan_archive(
    plan: &mut Planner<'_>,
    tree: &dyn SourceTree,
    image: &dyn SourceTree,
    sel: &Selected,
    dest: &Dest,
    scratch: &Path,
    n: usize,
) -> Result<bool, CopyError> {
    let source = tree.source(&sel.rel);
    let shown = sel.rel.display().to_string();
    let read = |source| CopyError::Read {
        path: shown.clone(),
        source,
    };
    let Some(file) = open_source(&source).map_err(read)? else {
        return Ok(false);
    };
    if !is_archive(file) {
        return Ok(false);
    }
    let Some(file) = open_source(&source).map_err(read)? else {
        return Ok(false);
    };
    let dir = fresh_dir(scratch, &format!("add-{n}"))?;
    let input = decoder(file).map_err(read)?;
    crate::unpack::unpack(input, &dir, Owners::Record).map_err(|source| CopyError::Unpack {
        path: shown.clone(),
        source,
    })?;
    let unpacked =
        DirTree::open(&dir, OwnerView::Recorded).map_err(|source| CopyError::Scratch {
            path: dir.display().to_string(),
            source,
        })?;
    plan.ensure_dir(image, &dest.path)?;
    plan.walk(&unpacked, Path::new(""), Path::new(""), &dest.path)?;
    Ok(true)
}

/// The file name a URL gives: its last path segment, without query or fragment.
pub fn url_file_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let (_, path) = path.split_once('/')?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
}

fn agent() -> ureq::Agent {
    let roots: Vec<ureq::tls::Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .user_agent(concat!("nook/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .new_agent()
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(s: &str) -> Option<i64> {
    let t = crate::registry::transport::httpdate_to_system_time(s)?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// The body of a GET of `url` (for `nook import`), an error unless the status is 2xx.
pub(crate) fn fetch(url: &str) -> io::Result<impl Read + use<>> {
    let resp = agent().get(url).call().map_err(io::Error::other)?;
    Ok(resp.into_body().into_reader())
}

/// Downloads `url` to `path`, hashing it with `algorithm`; returns the digest, the size and
/// the `Last-Modified` time when the server sent one.
fn download(
    url: &str,
    path: &Path,
    algorithm: Algorithm,
) -> Result<(Digest, u64, Option<i64>), CopyError> {
    let save = |source| CopyError::Save {
        url: url.to_owned(),
        source,
    };
    let resp = agent().get(url).call().map_err(|e| CopyError::Download {
        url: url.to_owned(),
        source: Box::new(e),
    })?;
    let modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(http_date);
    let mut body = resp.into_body().into_reader();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(save)?;
    let mut w = HashingWriter::new(file, algorithm);
    io::copy(&mut body, &mut w).map_err(save)?;
    let (digest, len, mut file) = w.finish();
    file.flush().map_err(save)?;
    Ok((digest, len, modified))
}

/// Plans an ADD of a URL: downloaded, checked, never unpacked, mode 0600.
pub(super) fn plan_url(
    plan: &mut Planner<'_>,
    image: &dyn SourceTree,
    url: &str,
    dest: &Dest,
    scratch: &Path,
) -> Result<(), CopyError> {
    let want = match &plan.req.checksum {
        Some(c) => Some(Digest::parse(c).map_err(|_| CopyError::BadChecksum(c.clone()))?),
        None => None,
    };
    let path = if dest.is_dir {
        let name = url_file_name(url).ok_or_else(|| CopyError::UrlName(url.to_owned()))?;
        dest.path.join(name)
    } else {
        dest.path.clone()
    };
    let dir = fresh_dir(scratch, "url")?;
    let algorithm = want.as_ref().map_or(Algorithm::Sha256, |d| d.algorithm());
    let (got, size, modified) = download(url, &dir.join("download"), algorithm)?;
    if let Some(want) = want
        && want != got
    {
        return Err(CopyError::ChecksumMismatch {
            url: url.to_owned(),
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    if let Some(parent) = path.parent() {
        plan.ensure_dir(image, parent)?;
    }
    let (uid, gid) = plan.req.chown.unwrap_or((0, 0));
    let entry = Entry {
        path,
        kind: EntryKind::File {
            size,
            source: Source::Beneath {
                root: dir,
                rel: PathBuf::from("download"),
            },
        },
        mode: plan.req.chmod.map_or(0o600, |m| m & 0o7777),
        uid,
        gid,
        // As docker: the server's Last-Modified, else now.
        mtime: modified.unwrap_or_else(|| plan.now()),
        xattrs: Vec::new(),
    };
    plan.push(entry);
    Ok(())
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn http_dates() {
        assert_eq!(
            super::http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        assert_eq!(super::http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(super::http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(super::http_date("garbage"), None);
        assert_eq!(
            super::http_date("Tue, 14 Nov 999999999999999999 22:13:20 GMT"),
            None
        );
    }
}
