//! Where blobs came from, and what converting them gave: what a push needs to mount blobs
//! instead of uploading them, and to skip recompressing a layer it converted before.
//!
//! `sources.json` maps a blob digest to the `domain/repository`s it was pulled from or pushed
//! to; `conversions.json` maps `source-digest algorithm` to the converted blob's digest and
//! size. Both are small, written atomically under the store lock, and only ever hints: a
//! registry that no longer has a blob answers the mount with an ordinary upload session.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, io_err, json_bytes};
use crate::digest::Digest;

/// Repositories remembered per blob; older ones give way.
const MAX_SOURCES: usize = 8;

/// A converted blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    pub digest: Digest,
    pub size: u64,
}

type Sources = BTreeMap<String, Vec<String>>;
type Conversions = BTreeMap<String, Conversion>;

impl Store {
    fn sources_path(&self) -> PathBuf {
        self.root.join("sources.json")
    }

    fn conversions_path(&self) -> PathBuf {
        self.root.join("conversions.json")
    }

    fn read_map<T: for<'de> Deserialize<'de> + Default>(
        &self,
        path: &PathBuf,
    ) -> Result<T, StoreError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The `domain/repository`s `digest` is known to be in, most recent first.
    pub fn blob_sources(&self, digest: &Digest) -> Result<Vec<String>, StoreError> {
        let all: Sources = self.read_map(&self.sources_path())?;
        Ok(all.get(&digest.to_string()).cloned().unwrap_or_default())
    }

    /// Remembers that `repository` (`domain/path`) has every blob in `digests`.
    pub fn add_blob_sources(
        &self,
        digests: &[&Digest],
        repository: &str,
    ) -> Result<(), StoreError> {
        let _lock = self.lock("store", true)?;
        let path = self.sources_path();
        let mut all: Sources = self.read_map(&path)?;
        for d in digests {
            let list = all.entry(d.to_string()).or_default();
            remember(list, repository);
        }
        self.write_atomic(&path, &json_bytes(&all))
    }

    /// What converting `source` with `algorithm` gave before, if it was recorded.
    pub fn conversion(
        &self,
        source: &Digest,
        algorithm: &str,
    ) -> Result<Option<Conversion>, StoreError> {
        let all: Conversions = self.read_map(&self.conversions_path())?;
        Ok(all.get(&format!("{source} {algorithm}")).cloned())
    }

    pub fn add_conversion(
        &self,
        source: &Digest,
        algorithm: &str,
        result: Conversion,
    ) -> Result<(), StoreError> {
        let _lock = self.lock("store", true)?;
        let path = self.conversions_path();
        let mut all: Conversions = self.read_map(&path)?;
        all.insert(format!("{source} {algorithm}"), result);
        self.write_atomic(&path, &json_bytes(&all))
    }
}

/// Puts `repository` first in `list`, keeping at most [`MAX_SOURCES`].
fn remember(list: &mut Vec<String>, repository: &str) {
    list.retain(|r| r != repository);
    list.insert(0, repository.to_owned());
    list.truncate(MAX_SOURCES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_keep_the_latest_first_and_stay_bounded() {
        let mut l = vec!["a".to_owned(), "b".to_owned()];
        remember(&mut l, "b");
        assert_eq!(l, ["b", "a"]);
        for i in 0..20 {
            remember(&mut l, &format!("r{i}"));
        }
        assert_eq!(l.len(), MAX_SOURCES);
        assert_eq!(l[0], "r19");
    }

    #[test]
    fn sources_and_conversions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let d = Digest::sha256_of(b"layer");
        assert!(s.blob_sources(&d).unwrap().is_empty());
        s.add_blob_sources(&[&d], "localhost:5000/a").unwrap();
        s.add_blob_sources(&[&d], "localhost:5000/b").unwrap();
        assert_eq!(
            s.blob_sources(&d).unwrap(),
            ["localhost:5000/b", "localhost:5000/a"]
        );
        assert_eq!(s.conversion(&d, "zstd").unwrap(), None);
        let c = Conversion {
            digest: Digest::sha256_of(b"z"),
            size: 9,
        };
        s.add_conversion(&d, "zstd", c.clone()).unwrap();
        assert_eq!(s.conversion(&d, "zstd").unwrap(), Some(c));
        assert_eq!(s.conversion(&d, "gzip").unwrap(), None);
    }
}
