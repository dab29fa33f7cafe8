//! `nook import`: a tar (a file, an http(s) URL or stdin; plain, gzip, bzip2, xz or zstd) as
//! a one-layer image, as `docker import` makes it.
//!
//! The input is decompressed into a plain tar below the store's `tmp/` (its sha256 is the
//! layer's diff_id), then stored as a build's layers are: compressed once, unpacked by the
//! pull's unpacker in the store's user namespace — which treats the tar as hostile (no entry
//! lands outside the layer, no link leads out of it). `-c` instructions change the config as
//! they do for `nook commit`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::commit::{self, Format};
use super::config::{History, ImageConfig};
use super::{BuildError, Host, io, job};
use crate::registry::platform::Platform;
use crate::store::ImageRecord;

/// Where the tar comes from.
pub enum ImportSource<'a> {
    File(&'a Path),
    Url(&'a str),
    Stdin,
}

impl<'a> ImportSource<'a> {
    /// `-` is stdin, `http://` and `https://` are URLs, anything else a file.
    pub fn parse(s: &'a str) -> ImportSource<'a> {
        if s == "-" {
            ImportSource::Stdin
        } else if s.starts_with("http://") || s.starts_with("https://") {
            ImportSource::Url(s)
        } else {
            ImportSource::File(Path::new(s))
        }
    }

    /// How the source is named in the image's history.
    fn shown(&self) -> String {
        match self {
            ImportSource::File(p) => p.display().to_string(),
            ImportSource::Url(u) => (*u).to_owned(),
            ImportSource::Stdin => "-".to_owned(),
        }
    }
}

/// What `nook import` was asked.
pub struct ImportRequest<'a> {
    pub source: ImportSource<'a>,
    /// `-c` instructions.
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub platform: Platform,
    pub format: Format,
    pub tags: Vec<String>,
}

/// Imports `req.source` as an image.
pub fn import(host: &Host<'_>, req: &ImportRequest<'_>) -> Result<ImageRecord, BuildError> {
    // The config is checked before anything is read or stored.
    let created = crate::container::logs::rfc3339_nanos(std::time::SystemTime::now());
    let mut config = ImageConfig {
        architecture: req.platform.architecture.clone(),
        os: req.platform.os.clone(),
        variant: req.platform.variant.clone(),
        created: Some(created.clone()),
        ..ImageConfig::default()
    };
    for c in &req.changes {
        super::commit_container::apply_change(&mut config, c)?;
    }
    let _gc = host.store.lock("gc", false)?;
    let tar = host.store.tmp_path("import-tar");
    let stored = plain_tar(&req.source, &tar).and_then(|()| {
        Ok(job::in_store(host.mapping, || {
            commit::store_layer(host.store, &tar, host.owners, req.format)
                .map_err(|e| crate::cli::error_line(&anyhow::Error::new(e)))
        })?)
    });
    let _ = std::fs::remove_file(&tar);
    let layer = stored?;
    config.rootfs.diff_ids.push(layer.diff_id.to_string());
    config.history.push(History {
        created: Some(created),
        created_by: Some(String::new()),
        comment: Some(
            req.message
                .clone()
                .unwrap_or_else(|| format!("Imported from {}", req.source.shown())),
        ),
        ..History::default()
    });
    Ok(commit::store_image(
        host.store,
        &config,
        &[layer],
        req.format,
        &req.tags,
    )?)
}

/// Copies the source, decompressed, into the new file `path`.
fn plain_tar(source: &ImportSource<'_>, path: &Path) -> Result<(), BuildError> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("cannot create {}", path.display())))?;
    match source {
        ImportSource::Stdin => copy_plain(io::stdin().lock(), out, "stdin"),
        ImportSource::File(p) => {
            let f = File::open(p).map_err(io(format!("cannot open {}", p.display())))?;
            copy_plain(f, out, &p.display().to_string())
        }
        ImportSource::Url(u) => {
            let body = super::context::fetch(u).map_err(io(format!("cannot fetch {u}")))?;
            copy_plain(body, out, u)
        }
    }
}

/// Copies `input`, decompressed as its first bytes say, to `out`; refuses what is not a tar.
fn copy_plain(input: impl Read, out: File, what: &str) -> Result<(), BuildError> {
    let read = io(format!("cannot read {what}"));
    let mut input = super::context::decoder(input).map_err(read)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut head = [0u8; 512];
    let n =
        crate::pull::read_full(&mut input, &mut head).map_err(io(format!("cannot read {what}")))?;
    if n > 0 && (n < 512 || !tar_header(&head)) {
        return Err(BuildError::Io {
            what: format!("{what} is not a tar archive"),
            source: io::Error::from(io::ErrorKind::InvalidData),
        });
    }
    let write = io(format!("cannot write the layer tar for {what}"));
    w.write_all(&head[..n]).map_err(write)?;
    std::io::copy(&mut input, &mut w).map_err(io(format!("cannot read {what}")))?;
    w.flush()
        .map_err(io(format!("cannot write the layer tar for {what}")))
}

/// Whether a 512-byte block is a tar header: its checksum adds up (an all-zero block, the
/// end of an empty archive, counts too).
fn tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tar_header_is_told_from_other_bytes() {
        let mut h = tar::Header::new_gnu();
        h.set_path("a").unwrap();
        h.set_size(0);
        h.set_cksum();
        assert!(tar_header(h.as_bytes()));
        assert!(tar_header(&[0u8; 512]));
        assert!(!tar_header(&[b'x'; 512]));
    }

    #[test]
    fn sources_are_told_apart() {
        assert!(matches!(ImportSource::parse("-"), ImportSource::Stdin));
        assert!(matches!(
            ImportSource::parse("https://h/x.tar"),
            ImportSource::Url(_)
        ));
        assert!(matches!(
            ImportSource::parse("x.tar"),
            ImportSource::File(_)
        ));
    }
}
