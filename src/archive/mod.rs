//! Image archives: docker-archive, Docker ≥ 25's OCI layout with manifest.json, oci-archive and
//! OCI layout directories, written from the store and read into it as hostile input.
//!
//! Saving streams: layer blobs are copied (OCI) or decompressed (docker-archive) straight into
//! the output, with fixed tar headers so that the same images give the same archive. Loading
//! unpacks the outer tar (decompressed whole first if it is gzip or zstd) into a private
//! staging directory below the store's `tmp/`, keeping only regular files and directories and
//! hashing every file as it is written ([`stage`]); the manifests are then read from there,
//! every name they give checked against what was staged ([`read`]), and only an archive whose
//! images all check out is committed: blobs renamed into the store, layers unpacked through
//! the pull pipeline, then records and tags ([`commit`]). A failure removes what the load had
//! added, and the staging directory goes on every path.

mod commit;
mod names;
mod out;
mod read;
mod save_docker;
mod save_oci;
pub mod sif;
pub mod squash;
mod stage;

use std::io;
use std::path::Path;
use std::str::FromStr;

use crate::digest::Digest;
use crate::pull::PullError;
use crate::registry::manifest::ManifestError;
use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack::Owners;

/// Largest manifest.json, index.json, manifest or config read from an archive.
pub const JSON_LIMIT: u64 = 8 << 20;

/// The archive formats `nook save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl FromStr for ArchiveFormat {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker-archive" => Ok(ArchiveFormat::DockerArchive),
            "oci-archive" => Ok(ArchiveFormat::OciArchive),
            "oci-dir" => Ok(ArchiveFormat::OciDir),
            _ => Err(ArchiveError::Format(s.to_owned())),
        }
    }
}

/// One image to save, with the names it goes under (normalised `repo:tag`, may be empty).
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: ImageRecord,
    pub names: Vec<String>,
}

/// Where an archive goes: a stream (a tar), or a directory (an OCI layout).
pub enum SaveTarget<'a> {
    Writer(&'a mut dyn io::Write),
    Dir(&'a Path),
}

/// An image a load put into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: Digest,
    /// Its names (normalised `repo:tag`), as the archive gave them.
    pub names: Vec<String>,
}

/// What a load reports as it goes; the caller draws it.
pub trait LoadProgress: Sync {
    /// A line about the load (`Loading layers of sha256:…`).
    fn say(&self, text: &str);
}

/// A [`LoadProgress`] that shows nothing.
pub struct Quiet;

impl LoadProgress for Quiet {
    fn say(&self, _: &str) {}
}

/// Why saving or loading an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("unknown archive format {0:?}: use docker-archive, oci-archive or oci-dir")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
    #[error("{path}: cannot write the OCI layout")]
    WriteDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0}: the directory is not empty; oci-dir writes a new layout (give an empty or new directory)"
    )]
    DirNotEmpty(String),
    #[error(
        "{digest}: the stored blob is not the layer the image says (got {actual}): pull or build the image again"
    )]
    StoredLayer { digest: Digest, actual: Digest },
    #[error("{what}: the stored manifest is not valid")]
    StoredManifest {
        what: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {image}: blob {digest} is not in the store: pull or build the image again")]
    MissingBlob { image: String, digest: Digest },
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    #[error("archive entry {entry:?}: {why}")]
    Entry { entry: String, why: String },
    #[error("archive entry {entry:?}: cannot stage it")]
    Stage {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the archive has no manifest.json or index.json: it is not a docker or OCI image archive"
    )]
    NotAnArchive,
    #[error("{what} names {entry:?}, which the archive lacks")]
    Missing { what: String, entry: String },
    #[error("{what} names {entry:?}: {why}")]
    BadName {
        what: String,
        entry: String,
        why: &'static str,
    },
    #[error("archive entry {entry:?} is {size} bytes, over the {limit}-byte limit for JSON")]
    TooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("archive entry {entry:?} is not valid JSON for {what}")]
    Json {
        entry: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive entry {entry:?}: content is {actual}, but {what} says {expected}")]
    Digest {
        entry: String,
        what: String,
        expected: String,
        actual: Digest,
    },
    #[error("archive entry {entry:?}: {actual} bytes, but {what} says {expected}")]
    Size {
        entry: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: not a valid manifest")]
    Manifest {
        what: String,
        #[source]
        source: ManifestError,
    },
    #[error("{what}: {why}")]
    Image { what: String, why: String },
    #[error("{what}: layer blob {layer} is listed twice with different diff_ids")]
    DuplicateLayer { what: String, layer: String },
    #[error("image {id}")]
    Unpack {
        id: String,
        #[source]
        source: PullError,
    },
}

/// `input` decompressed if it starts as gzip or zstd does, else as it is.
pub(crate) fn inflate<'a>(input: impl io::Read + 'a) -> io::Result<Box<dyn io::Read + 'a>> {
    use io::BufRead;
    let mut buf = io::BufReader::with_capacity(256 << 10, input);
    let head = buf.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buf))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buf)?)
    } else {
        Box::new(buf)
    })
}

/// Writes `items` to `out` in `format` (an OCI directory needs [`SaveTarget::Dir`], the
/// others a stream).
pub fn save(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    out: SaveTarget,
) -> Result<(), ArchiveError> {
    for item in items {
        let rec = &item.image;
        let blobs = rec.layers.iter().map(|l| &l.digest);
        for d in blobs.chain([&rec.id, &rec.manifest_digest]) {
            if !store.has_blob(d) {
                return Err(ArchiveError::MissingBlob {
                    image: rec.id.to_string(),
                    digest: d.clone(),
                });
            }
        }
    }
    match (format, out) {
        (ArchiveFormat::DockerArchive, SaveTarget::Writer(w)) => {
            save_docker::write(store, items, w)
        }
        (ArchiveFormat::OciArchive, SaveTarget::Writer(w)) => save_oci::write_tar(store, items, w),
        (ArchiveFormat::OciDir, SaveTarget::Dir(d)) => save_oci::write_dir(store, items, d),
        (ArchiveFormat::OciDir, SaveTarget::Writer(w)) => save_oci::write_tar(store, items, w),
        (_, SaveTarget::Dir(d)) => Err(ArchiveError::WriteDir {
            path: d.display().to_string(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "only oci-dir writes a directory",
            ),
        }),
    }
}

/// Reads an archive from `input` into the store: every image in it, or none. The store must
/// be writable with `owners` (the caller entered its user namespace).
pub fn load(
    store: &Store,
    owners: Owners,
    input: &mut dyn io::Read,
    progress: &dyn LoadProgress,
) -> Result<Vec<Loaded>, ArchiveError> {
    let _gc = store.lock("gc", false)?;
    let staged = stage::Staged::unpack(store, input)?;
    let images = read::images(&staged)?;
    let loaded = commit::commit(store, owners, images, progress);
    drop(staged);
    loaded
}
