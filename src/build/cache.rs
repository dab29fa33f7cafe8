//! The build cache: a step's key (its parent's key and everything that reaches the step) →
//! the image state it produced (config blob and layers). Kept in the store under `builder/`,
//! shared by stages and builds; an entry whose blob or layers have gone (gc) is a miss. RUN's
//! cache mounts live beside it and survive `--no-cache`.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::{LayerRef, Store, StoreError, io_err};

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The config blob after the step.
    pub config: Digest,
    pub layers: Vec<LayerRef>,
}

/// The cache of one store.
pub struct Cache<'a> {
    store: &'a Store,
}

/// A key from its parts (each length-prefixed, so parts cannot run into each other).
pub fn key(parts: &[&[u8]]) -> Digest {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
        bytes.extend_from_slice(p);
    }
    Digest::sha256_of(&bytes)
}

impl<'a> Cache<'a> {
    pub fn new(store: &'a Store) -> Cache<'a> {
        Cache { store }
    }

    fn dir(&self) -> PathBuf {
        self.store.root().join("builder").join("cache")
    }

    /// Where the cache mount `id` lives.
    pub fn mount_path(&self, id: &str) -> PathBuf {
        let name = Digest::sha256_of(id.as_bytes());
        self.store
            .root()
            .join("builder")
            .join("mounts")
            .join(&name.hex()[..32])
    }

    /// The directory of the cache mount `id` (created on first use).
    pub fn mount_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let p = self.mount_path(id);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
        Ok(p)
    }

    /// The state cached under `key`, if it is all still in the store.
    pub fn get(&self, key: &Digest) -> Option<Cached> {
        let bytes = fs::read(self.dir().join(key.hex())).ok()?;
        let c: Cached = serde_json::from_slice(&bytes).ok()?;
        let whole = self.store.has_blob(&c.config)
            && c.layers
                .iter()
                .all(|l| self.store.has_blob(&l.digest) && self.store.has_layer(&l.diff_id));
        whole.then_some(c)
    }

    pub fn put(&self, key: &Digest, c: &Cached) -> Result<(), StoreError> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        self.store
            .write_atomic(&dir.join(key.hex()), &crate::store::json_bytes(c))
    }

    /// Empties the cache (and, with `mounts`, the cache mounts); returns the entries removed.
    pub fn prune(&self, mounts: bool) -> Result<usize, StoreError> {
        let dir = self.dir();
        let mut n = 0;
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if fs::remove_file(e.path()).is_ok() {
                    n += 1;
                }
            }
        }
        if mounts {
            let m = self.store.root().join("builder").join("mounts");
            if m.exists() {
                crate::sys::confined::remove_tree(&m).map_err(io_err(&m))?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_missing_their_blobs_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "single").unwrap();
        let cache = Cache::new(&store);
        let config = b"{}";
        let d = Digest::sha256_of(config);
        let k = key(&[b"a", b"b"]);
        assert_ne!(k, key(&[b"ab"]));
        let entry = Cached {
            config: d.clone(),
            layers: vec![],
        };
        cache.put(&k, &entry).unwrap();
        assert_eq!(cache.get(&k), None, "the config blob is not there");
        store.put_blob(&d, config).unwrap();
        assert_eq!(cache.get(&k), Some(entry));
        assert_eq!(cache.prune(true).unwrap(), 1);
        assert_eq!(cache.get(&k), None);
    }
}
