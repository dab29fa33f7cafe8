//! Image records and the tag index.
//!
//! An image is its config digest (docker's image id). `images/<hex>.json` holds its record;
//! `images/tags.json` maps `repository:tag` to an id. Both change only under the store lock
//! and are replaced atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, io_err, json_bytes};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::platform::Platform;

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    /// The compressed blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's digest: the key of the unpacked layer.
    pub diff_id: Digest,
    /// The compressed size.
    pub size: u64,
    pub media_type: String,
}

/// What the store knows about an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest (docker's image id).
    pub id: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<Digest>,
    /// `repository@digest` names this image was pulled by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    pub platform: Platform,
    /// The config's creation time (RFC 3339), if it has one.
    #[serde(default)]
    pub created: Option<String>,
    pub layers: Vec<LayerRef>,
    pub config_size: u64,
    /// Bytes of file content over all layers (docker's SIZE column).
    pub size: u64,
    /// When this store got it (seconds since the epoch).
    pub pulled_at: u64,
}

type Tags = BTreeMap<String, Digest>;

impl Store {
    fn tags_path(&self) -> std::path::PathBuf {
        self.root.join("images").join("tags.json")
    }

    fn record_path(&self, id: &Digest) -> std::path::PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    pub(super) fn read_tags(&self) -> Result<Tags, StoreError> {
        let p = self.tags_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                path: p.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tags::new()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub(super) fn write_tags(&self, tags: &Tags) -> Result<(), StoreError> {
        self.write_atomic(&self.tags_path(), &json_bytes(tags))
    }

    /// An image's record: this store's, else a shared store's.
    pub fn image(&self, id: &Digest) -> Result<ImageRecord, StoreError> {
        match self.own_image(id) {
            Err(StoreError::NoSuchImage(_)) => self.shared_image(id),
            found => found,
        }
    }

    pub(super) fn own_image(&self, id: &Digest) -> Result<ImageRecord, StoreError> {
        let p = self.record_path(id);
        let b = fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NoSuchImage(id.to_string())
            } else {
                io_err(&p)(e)
            }
        })?;
        serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
            path: p.display().to_string(),
            source,
        })
    }

    pub(super) fn remove_record(&self, id: &Digest) -> Result<(), StoreError> {
        let p = self.record_path(id);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Records an image and points `tags` at it (moving them from any other image).
    pub fn add_image(&self, mut record: ImageRecord, tags: &[String]) -> Result<(), StoreError> {
        let _lock = self.lock("store", true)?;
        if let Ok(old) = self.own_image(&record.id) {
            for d in old.repo_digests {
                if !record.repo_digests.contains(&d) {
                    record.repo_digests.push(d);
                }
            }
        }
        self.write_atomic(&self.record_path(&record.id), &json_bytes(&record))?;
        let mut all = self.read_tags()?;
        for t in tags {
            all.insert(t.clone(), record.id.clone());
        }
        self.write_tags(&all)
    }

    /// Every image with its tags, newest first.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>, StoreError> {
        let tags = self.read_tags()?;
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            let rec = match self.own_image(&id) {
                Ok(r) => r,
                Err(StoreError::NoSuchImage(_)) => continue,
                Err(e) => return Err(e),
            };
            let mine: Vec<String> = tags
                .iter()
                .filter(|(_, v)| **v == id)
                .map(|(k, _)| k.clone())
                .collect();
            out.push((rec, mine));
        }
        out.sort_by(|a, b| b.0.pulled_at.cmp(&a.0.pulled_at).then(a.0.id.cmp(&b.0.id)));
        Ok(out)
    }

    /// Finds an image as docker does: by `repository:tag`, by `repository@digest`, by full
    /// id (`sha256:...`) or by a unique id prefix; in this store, then in the shared ones.
    pub fn find_image(&self, query: &str) -> Result<ImageRecord, StoreError> {
        match self.find_own_image(query) {
            Err(StoreError::NoSuchImage(_)) => self.find_shared_image(query),
            found => found,
        }
    }

    pub(super) fn find_own_image(&self, query: &str) -> Result<ImageRecord, StoreError> {
        let tags = self.read_tags()?;
        if let Ok(r) = Reference::parse(query) {
            if r.digest().is_none() {
                if let Some(id) = r.tagged().and_then(|t| tags.get(&t)) {
                    return self.own_image(id);
                }
            } else {
                let wanted = format!("{}@{}", r.repository(), r.manifest_reference());
                for (rec, _) in self.images()? {
                    if rec.repo_digests.contains(&wanted) {
                        return Ok(rec);
                    }
                }
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if !hex.is_empty()
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let matches: Vec<ImageRecord> = self
                .images()?
                .into_iter()
                .map(|(r, _)| r)
                .filter(|r| r.id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                0 => {}
                1 => {
                    return matches
                        .into_iter()
                        .next()
                        .ok_or_else(|| StoreError::NoSuchImage(query.into()));
                }
                _ => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_owned(),
                        matches: matches.iter().map(|r| r.id.short().to_owned()).collect(),
                    });
                }
            }
        }
        Err(StoreError::NoSuchImage(query.to_owned()))
    }

    /// `nook tag SRC DST`.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        let rec = self.find_image(source)?;
        let tag = target
            .tagged()
            .ok_or_else(|| StoreError::BadTag(target.to_string()))?;
        let _lock = self.lock("store", true)?;
        let mut all = self.read_tags()?;
        all.insert(tag.clone(), rec.id.clone());
        self.write_tags(&all)?;
        crate::events::image(&self.root, "tag", &rec.id.to_string(), Some(&tag));
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(seed: &[u8], at: u64) -> ImageRecord {
        let id = Digest::sha256_of(seed);
        ImageRecord {
            id: id.clone(),
            manifest_digest: Digest::sha256_of(&[seed, b"m"].concat()),
            manifest_media_type: crate::registry::manifest::OCI_MANIFEST.into(),
            index_digest: None,
            repo_digests: vec![],
            platform: Platform::host(),
            created: None,
            layers: vec![],
            config_size: 1,
            size: 10,
            pulled_at: at,
        }
    }

    #[test]
    fn lookup_by_tag_digest_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let mut a = record(b"a", 1);
        a.repo_digests
            .push(format!("docker.io/library/busybox@{}", a.manifest_digest));
        s.add_image(a.clone(), &["docker.io/library/busybox:latest".into()])
            .unwrap();
        let b = record(b"b", 2);
        s.add_image(b.clone(), &["localhost:5000/x:1".into()])
            .unwrap();
        assert_eq!(s.find_image("busybox").unwrap().id, a.id);
        assert_eq!(
            s.find_image("docker.io/library/busybox:latest").unwrap().id,
            a.id
        );
        assert_eq!(
            s.find_image(&format!("busybox@{}", a.manifest_digest))
                .unwrap()
                .id,
            a.id
        );
        assert_eq!(s.find_image(&a.id.hex()[..6]).unwrap().id, a.id);
        assert_eq!(s.find_image(&a.id.to_string()).unwrap().id, a.id);
        assert_eq!(s.find_image("localhost:5000/x:1").unwrap().id, b.id);
        assert!(matches!(
            s.find_image("nothere"),
            Err(StoreError::NoSuchImage(_))
        ));
        let listed = s.images().unwrap();
        assert_eq!(listed[0].0.id, b.id, "newest first");
        assert_eq!(
            listed[1].1,
            vec!["docker.io/library/busybox:latest".to_string()]
        );
    }

    #[test]
    fn tags_move_between_images() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let a = record(b"a", 1);
        let b = record(b"b", 2);
        s.add_image(a.clone(), &["docker.io/library/x:1".into()])
            .unwrap();
        s.add_image(b.clone(), &["docker.io/library/x:1".into()])
            .unwrap();
        assert_eq!(s.find_image("x:1").unwrap().id, b.id);
        s.tag("x:1", &Reference::parse("y:2").unwrap()).unwrap();
        assert_eq!(s.find_image("y:2").unwrap().id, b.id);
    }
}
