//! The on-disk content store: blobs by digest, image records, unpacked layers, locks, gc.
//!
//! Layout (ARCHITECTURE.md, "On disk"): `blobs/sha256/<hex>`, `images/<id-hex>.json` plus
//! `images/tags.json`, `layers/<diff-id-hex>/{root/,layer.json}`, `containers/`, `tmp/`,
//! `locks/`. Everything is written below `tmp/` and renamed into place, so a half-written
//! blob or layer is never visible. Locks are `flock`s: one per layer while it is fetched, a
//! store lock around the image index, and a gc lock that pulls hold shared and gc holds
//! exclusive, so gc never removes a layer a running pull is about to reference. A pull killed
//! at any moment leaves at most a partial download (resumed next time) and a stale unpack
//! directory (removed by the next pull of that layer, or by gc).

mod gc;
mod images;
mod shared;
mod sources;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use gc::{GcStats, InUse, Removal};
pub use images::{ImageRecord, LayerRef};
pub use shared::check_shared;
pub use sources::Conversion;

use crate::digest::Digest;

const STORAGE_VERSION: u32 = 1;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the store at {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("store record {path} is corrupt: remove it, or run 'nook system reset'")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the store at {path} was written with id mapping '{stored}' but this host now gives '{now}': run 'nook system reset' to start afresh"
    )]
    IdMapChanged {
        path: String,
        stored: String,
        now: String,
    },
    #[error(
        "the store at {path} has format version {found}; this nook reads version {STORAGE_VERSION}"
    )]
    Version { path: String, found: u32 },
    #[error("blob {digest} does not match its content (got {actual})")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("{query} matches several images ({}): give more of the id", matches.join(", "))]
    Ambiguous { query: String, matches: Vec<String> },
    #[error("image {id} has several tags ({}): name one, or use -f to remove them all", tags.join(", "))]
    ManyTags { id: String, tags: Vec<String> },
    #[error(
        "image {image} is used by container {container}: remove the container first, or use -f"
    )]
    InUse { image: String, container: String },
    #[error("invalid tag {0:?}")]
    BadTag(String),
    #[error("cannot use the shared image store {path}: {why}")]
    Shared { path: String, why: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The id mapping the store's files were written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub version: u32,
    /// `single` or `range:START:COUNT[,START:COUNT...]` (uids), as `nook info` shows it.
    pub idmap: String,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Read-only stores images and layers are also found in, after this one (never written).
    shared: Vec<PathBuf>,
}

/// A held `flock`, released on drop.
pub struct Lock {
    _flock: Flock<File>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`. `idmap` describes how this process
    /// writes owners; a store written another way is refused rather than mixed.
    pub fn open(root: &Path, idmap: &str) -> Result<Store, StoreError> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for sub in [
            "blobs/sha256",
            "images",
            "layers",
            "containers",
            "tmp",
            "locks",
        ] {
            let p = root.join(sub);
            b.create(&p).map_err(io_err(&p))?;
        }
        // The store may hold setuid files of the user or the range: nobody else gets in.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io_err(root))?;
        let store = Store {
            root: root.to_owned(),
            shared: Vec::new(),
        };
        store.check_info(idmap)?;
        Ok(store)
    }

    /// Opens an existing store for reading only, whatever its id mapping.
    pub fn open_existing(root: &Path) -> Result<Option<Store>, StoreError> {
        if !root.join("storage.json").exists() {
            return Ok(None);
        }
        Ok(Some(Store {
            root: root.to_owned(),
            shared: Vec::new(),
        }))
    }

    fn check_info(&self, idmap: &str) -> Result<(), StoreError> {
        let path = self.root.join("storage.json");
        let _lock = self.lock("store", true)?;
        match fs::read(&path) {
            Ok(bytes) => {
                let info: StorageInfo =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: path.display().to_string(),
                        source,
                    })?;
                if info.version != STORAGE_VERSION {
                    return Err(StoreError::Version {
                        path: self.root.display().to_string(),
                        found: info.version,
                    });
                }
                if info.idmap != idmap {
                    return Err(StoreError::IdMapChanged {
                        path: self.root.display().to_string(),
                        stored: info.idmap,
                        now: idmap.to_owned(),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let info = StorageInfo {
                    version: STORAGE_VERSION,
                    idmap: idmap.to_owned(),
                };
                self.write_atomic(&path, &json_bytes(&info))
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The id mapping recorded in the store.
    pub fn info(&self) -> Result<StorageInfo, StoreError> {
        let path = self.root.join("storage.json");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where a download of `d` accumulates until verified (kept across crashes for resume).
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("partial-{}-{}", d.algorithm().name(), d.hex()))
    }

    /// A fresh temporary path below `tmp/`.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.tmp_path("write");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_data().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(path)(e)
        })
    }

    /// Stores a small blob after checking its digest.
    pub fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = d.same_algorithm_of(bytes);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                digest: d.clone(),
                actual,
            });
        }
        if self.has_blob(d) {
            return Ok(());
        }
        self.write_atomic(&self.blob_path(d), bytes)
    }

    /// Moves a verified download into place.
    pub fn commit_blob_file(&self, d: &Digest, from: &Path) -> Result<(), StoreError> {
        let to = self.blob_path(d);
        fs::rename(from, &to).map_err(io_err(&to))
    }

    /// Reads a blob of at most `limit` bytes, verifying it; from a shared store where this
    /// one has none.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.readable_blob_path(d);
        let len = fs::metadata(&p).map_err(io_err(&p))?.len();
        if len > limit {
            return Err(io_err(&p)(io::Error::new(
                io::ErrorKind::InvalidData,
                "blob larger than expected",
            )));
        }
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        let actual = d.same_algorithm_of(&bytes);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                digest: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The unpacked filesystem of a layer, as the overlay uses it: this store's, else the
    /// first shared store's that has it.
    pub fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.shared_layer_dir(diff_id)
            .unwrap_or_else(|| self.layer_dir(diff_id))
            .join("root")
    }

    /// Whether the unpacked layer whose `root/` is `root` may carry owner records
    /// (`user.containers.override_stat`): its record says how many unpack wrote. Directories
    /// that are no store layer may.
    pub fn may_have_owner_records(root: &Path) -> bool {
        let Some(rec) = root.parent().map(|d| d.join("layer.json")) else {
            return true;
        };
        match fs::read(&rec)
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
        {
            Some(r) => r.stats.owners_recorded > 0,
            None => true,
        }
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join("layer.json").is_file()
    }

    /// The staging directory a layer is unpacked into (under its layer lock).
    pub fn unpack_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("unpack-{}", diff_id.hex()))
    }

    /// Moves a finished staging directory into `layers/`, with its record.
    pub fn commit_layer(
        &self,
        diff_id: &Digest,
        staging: &Path,
        record: &LayerRecord,
    ) -> Result<(), StoreError> {
        let rec = staging.join("layer.json");
        fs::write(&rec, json_bytes(record)).map_err(io_err(&rec))?;
        let to = self.layer_dir(diff_id);
        fs::rename(staging, &to).map_err(io_err(&to))
    }

    pub fn layer_record(&self, diff_id: &Digest) -> Result<LayerRecord, StoreError> {
        let p = self.layer_dir(diff_id).join("layer.json");
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: p.display().to_string(),
            source,
        })
    }

    fn lock_file(&self, name: &str) -> Result<(PathBuf, File), StoreError> {
        let p = self.root.join("locks").join(format!("{name}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(&p))?;
        Ok((p, f))
    }

    /// Takes the named lock, waiting for it; `exclusive` or shared.
    pub fn lock(&self, name: &str, exclusive: bool) -> Result<Lock, StoreError> {
        let (p, f) = self.lock_file(name)?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let flock = Flock::lock(f, arg).map_err(|(_, e)| io_err(&p)(e.into()))?;
        Ok(Lock { _flock: flock })
    }

    /// Takes the named lock only if it is free now.
    pub fn try_lock(&self, name: &str) -> Result<Option<Lock>, StoreError> {
        let (p, f) = self.lock_file(name)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(Lock { _flock: flock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io_err(&p)(e.into())),
        }
    }

    /// The lock serialising work on one layer (download, unpack, commit).
    pub fn lock_layer(&self, diff_id: &Digest) -> Result<Lock, StoreError> {
        self.lock(&format!("layer-{}", diff_id.hex()), true)
    }
}

/// What the store keeps about an unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    /// The compressed blob it came from.
    pub blob: Digest,
    pub media_type: String,
    /// Bytes of file content.
    pub size: u64,
    pub stats: crate::unpack::UnpackStats,
}

pub(crate) fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain records into memory cannot fail.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_records_the_id_mapping_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::open(&root, "single").unwrap();
        Store::open(&root, "single").unwrap();
        let err = Store::open(&root, "range:100000:65536").unwrap_err();
        assert!(matches!(err, StoreError::IdMapChanged { .. }));
        assert!(err.to_string().contains("nook system reset"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn blobs_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let d = Digest::sha256_of(b"hello");
        s.put_blob(&d, b"hello").unwrap();
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
        let other = Digest::sha256_of(b"x");
        assert!(matches!(
            s.put_blob(&other, b"hello"),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!s.has_blob(&other));
        fs::write(s.blob_path(&d), b"HELLO").unwrap();
        assert!(matches!(
            s.read_blob(&d, 100),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(s.read_blob(&d, 2).is_err());
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let held = s.lock("x", true).unwrap();
        assert!(s.try_lock("x").unwrap().is_none());
        drop(held);
        assert!(s.try_lock("x").unwrap().is_some());
    }
}
