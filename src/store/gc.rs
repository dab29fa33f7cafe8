//! Removing images, and collecting what no image uses.
//!
//! Lock order everywhere: `gc` (pulls shared, gc exclusive), then a layer's lock, then
//! `store`. gc runs with `gc` exclusive, so no pull is between committing a layer and
//! recording its image, and everything in `tmp/` but recent partial downloads is garbage.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::time::{Duration, SystemTime};

use super::{Store, StoreError, io_err};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::sys::confined::remove_tree;

/// Partial downloads younger than this survive gc, so an interrupted pull can resume.
const KEEP_PARTIAL: Duration = Duration::from_secs(24 * 3600);

/// Image ids that containers use, each with the name of one such container.
pub type InUse = BTreeMap<Digest, String>;

/// One line of `nook rmi`'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Untagged(String),
    Deleted(Digest),
}

/// What gc freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: u64,
    pub layers: u64,
    pub bytes: u64,
}

impl Store {
    /// `nook rmi QUERY`: untags a tag; deletes the image when no tag is left, or when named by
    /// id (refusing an image with several tags or used by a container unless `force`).
    /// `in_use` maps the image ids containers use to one such container (for the message);
    /// the container records are not the store's to read.
    pub fn remove_image(
        &self,
        query: &str,
        force: bool,
        in_use: &InUse,
    ) -> Result<Vec<Removal>, StoreError> {
        let _gc = self.lock("gc", true)?;
        let rec = self.find_own_image(query).map_err(|e| match e {
            StoreError::NoSuchImage(q) if self.find_shared_image(&q).is_ok() => {
                StoreError::Shared {
                    path: q,
                    why: "the image is in a read-only shared store".into(),
                }
            }
            e => e,
        })?;
        let _lock = self.lock("store", true)?;
        let mut tags = self.read_tags()?;
        let mine: Vec<String> = tags
            .iter()
            .filter(|(_, v)| **v == rec.id)
            .map(|(k, _)| k.clone())
            .collect();
        let by_tag = Reference::parse(query)
            .ok()
            .and_then(|r| r.tagged())
            .filter(|t| mine.contains(t));
        let mut out = Vec::new();
        let untag: Vec<String> = match &by_tag {
            Some(t) => vec![t.clone()],
            None => {
                if mine.len() > 1 && !force {
                    return Err(StoreError::ManyTags {
                        id: rec.id.short().to_owned(),
                        tags: mine,
                    });
                }
                mine.clone()
            }
        };
        for t in &untag {
            tags.remove(t);
            out.push(Removal::Untagged(t.clone()));
        }
        let remaining = mine.len() - untag.len();
        if remaining == 0 {
            if let Some(container) = in_use.get(&rec.id)
                && !force
            {
                // Nothing is written yet: the tags stay.
                return Err(StoreError::InUse {
                    image: query.to_owned(),
                    container: container.clone(),
                });
            }
            self.remove_record(&rec.id)?;
            out.push(Removal::Deleted(rec.id.clone()));
        }
        self.write_tags(&tags)?;
        self.removal_events(&rec.id, &out);
        Ok(out)
    }

    /// Journals what a removal did (after it is written).
    fn removal_events(&self, id: &Digest, done: &[Removal]) {
        for r in done {
            match r {
                Removal::Untagged(t) => {
                    crate::events::image(&self.root, "untag", &id.to_string(), Some(t));
                }
                Removal::Deleted(d) => {
                    crate::events::image(&self.root, "delete", &d.to_string(), None)
                }
            }
        }
    }

    /// `nook image prune [-a]`: removes untagged images, or with `all` every image no
    /// container uses (`in_use`, as for [`remove_image`](Self::remove_image)). Call
    /// [`gc`](Self::gc) afterwards.
    pub fn prune(&self, all: bool, in_use: &InUse) -> Result<Vec<Removal>, StoreError> {
        let _gc = self.lock("gc", true)?;
        let _lock = self.lock("store", true)?;
        let mut tags = self.read_tags()?;
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (rec, mine) in self.images()? {
            if in_use.contains_key(&rec.id) || (!all && !mine.is_empty()) {
                continue;
            }
            let mut these = Vec::new();
            for t in mine {
                tags.remove(&t);
                these.push(Removal::Untagged(t));
            }
            self.remove_record(&rec.id)?;
            these.push(Removal::Deleted(rec.id.clone()));
            out.extend(these.iter().cloned());
            done.push((rec.id, these));
        }
        self.write_tags(&tags)?;
        for (id, these) in &done {
            self.removal_events(id, these);
        }
        Ok(out)
    }

    /// Removes blobs and layers no image references, and stale temporary files.
    pub fn gc(&self) -> Result<GcStats, StoreError> {
        let _gc = self.lock("gc", true)?;
        let _lock = self.lock("store", true)?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for (rec, _) in self.images()? {
            blobs.insert(rec.id.hex().to_owned());
            blobs.insert(rec.manifest_digest.hex().to_owned());
            if let Some(i) = &rec.index_digest {
                blobs.insert(i.hex().to_owned());
            }
            for l in &rec.layers {
                blobs.insert(l.digest.hex().to_owned());
                layers.insert(l.diff_id.hex().to_owned());
            }
        }
        let mut stats = GcStats::default();
        let bdir = self.root.join("blobs").join("sha256");
        for e in fs::read_dir(&bdir).map_err(io_err(&bdir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                stats.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                stats.blobs += 1;
            }
        }
        let ldir = self.root.join("layers");
        for e in fs::read_dir(&ldir).map_err(io_err(&ldir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !layers.contains(&name) {
                let lock = self.try_lock(&format!("layer-{name}"))?;
                if lock.is_none() {
                    continue;
                }
                remove_tree(&e.path()).map_err(io_err(&e.path()))?;
                let _ = fs::remove_file(self.root.join("locks").join(format!("layer-{name}.lock")));
                stats.layers += 1;
            }
        }
        self.clean_tmp()?;
        Ok(stats)
    }

    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tdir = self.root.join("tmp");
        let now = SystemTime::now();
        for e in fs::read_dir(&tdir).map_err(io_err(&tdir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if name.starts_with("partial-") {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age < KEEP_PARTIAL {
                    continue;
                }
            }
            if meta.is_dir() {
                remove_tree(&e.path()).map_err(io_err(&e.path()))?;
            } else {
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::LayerRef;
    use super::super::images::tests::record;
    use super::*;

    #[test]
    fn rmi_untags_then_deletes_and_gc_frees() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let layer_blob = Digest::sha256_of(b"layer");
        s.put_blob(&layer_blob, b"layer").unwrap();
        let diff = Digest::sha256_of(b"diff");
        fs::create_dir_all(s.layer_root(&diff)).unwrap();
        let mut a = record(b"a", 1);
        a.layers.push(LayerRef {
            digest: layer_blob.clone(),
            diff_id: diff.clone(),
            size: 5,
            media_type: String::new(),
        });
        s.add_image(
            a.clone(),
            &[
                "docker.io/library/a:1".into(),
                "docker.io/library/a:2".into(),
            ],
        )
        .unwrap();
        let none = InUse::new();
        let orphan = Digest::sha256_of(b"orphan");
        s.put_blob(&orphan, b"orphan").unwrap();
        fs::write(s.tmp_path("write"), b"stale").unwrap();

        assert!(matches!(
            s.remove_image(&a.id.to_string(), false, &none),
            Err(StoreError::ManyTags { .. })
        ));
        assert_eq!(
            s.remove_image("a:1", false, &none).unwrap(),
            vec![Removal::Untagged("docker.io/library/a:1".into())]
        );
        let g = s.gc().unwrap();
        assert_eq!((g.blobs, g.layers), (1, 0), "only the orphan blob goes");
        assert!(s.has_blob(&layer_blob));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let out = s.remove_image("a:2", false, &none).unwrap();
        assert_eq!(
            out,
            vec![
                Removal::Untagged("docker.io/library/a:2".into()),
                Removal::Deleted(a.id.clone())
            ]
        );
        let g = s.gc().unwrap();
        assert_eq!((g.blobs, g.layers), (1, 1));
        assert!(!s.layer_dir(&diff).exists());
    }

    #[test]
    fn images_in_use_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let a = record(b"a", 1);
        s.add_image(a.clone(), &["docker.io/library/a:1".into()])
            .unwrap();
        let in_use = InUse::from([(a.id.clone(), "c1".to_owned())]);
        match s.remove_image("a:1", false, &in_use) {
            Err(StoreError::InUse { container, .. }) => assert_eq!(container, "c1"),
            other => panic!("rmi of an image in use: {other:?}"),
        }
        assert!(
            s.find_image("a:1").is_ok(),
            "a refused rmi must leave the tag"
        );
        assert!(s.prune(true, &in_use).unwrap().is_empty());
        assert_eq!(s.prune(true, &InUse::new()).unwrap().len(), 2);
    }

    #[test]
    fn store_ignores_container_records_on_disk() {
        // The caller says what is in use; a record in `containers/` is not the store's to read.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let a = record(b"a", 1);
        s.add_image(a.clone(), &["docker.io/library/a:1".into()])
            .unwrap();
        let c = dir.path().join("containers").join("c1");
        fs::create_dir_all(&c).unwrap();
        fs::write(
            c.join("config.json"),
            serde_json::json!({"name": "c1", "image_id": a.id.to_string()}).to_string(),
        )
        .unwrap();
        assert_eq!(s.prune(true, &InUse::new()).unwrap().len(), 2);
    }

    #[test]
    fn forced_rmi_deletes_an_image_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        let a = record(b"a", 1);
        s.add_image(a.clone(), &["docker.io/library/a:1".into()])
            .unwrap();
        let in_use = InUse::from([(a.id.clone(), "c1".to_owned())]);
        let out = s.remove_image("a:1", true, &in_use).unwrap();
        assert_eq!(out.last(), Some(&Removal::Deleted(a.id)));
    }

    #[test]
    fn prune_takes_only_dangling_without_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "single").unwrap();
        s.add_image(record(b"a", 1), &["docker.io/library/a:1".into()])
            .unwrap();
        let b = record(b"b", 2);
        s.add_image(b.clone(), &[]).unwrap();
        assert_eq!(
            s.prune(false, &InUse::new()).unwrap(),
            vec![Removal::Deleted(b.id)]
        );
        assert_eq!(s.images().unwrap().len(), 1);
    }
}
