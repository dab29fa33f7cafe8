//! Shared, read-only image stores (podman's "additional image stores"): a store that one user
//! filled with `nook --root DIR pull`, which every user then runs images from in place.
//!
//! Nothing here writes: no locks, no records, no events. Only stores filled with one id
//! (`single`, by a user without a subordinate range) serve everyone: their files belong to
//! the filler, the image's owners are kept in records (`user.containers.override_stat`), and
//! the files are readable once the filler made the tree world-readable. A store filled with
//! a range holds files of that user's subordinate ids, and is refused for anyone else.

use std::path::{Path, PathBuf};

use super::{ImageRecord, StorageInfo, Store, StoreError};
use crate::digest::Digest;

impl Store {
    /// This store with the shared stores `dirs` behind it (checked with [`check_shared`]).
    pub fn with_shared(mut self, dirs: &[PathBuf]) -> Store {
        self.shared = dirs.to_vec();
        self
    }

    /// The shared stores, as stores of their own (with none behind them).
    fn shared_stores(&self) -> impl Iterator<Item = Store> + '_ {
        self.shared.iter().map(|root| Store {
            root: root.clone(),
            shared: Vec::new(),
        })
    }

    /// Whether `root` (a store root) is one of the shared stores behind this one.
    pub fn is_shared_root(&self, root: &Path) -> bool {
        self.shared.iter().any(|s| s == root)
    }

    pub(super) fn shared_image(&self, id: &Digest) -> Result<ImageRecord, StoreError> {
        for s in self.shared_stores() {
            match s.own_image(id) {
                Err(StoreError::NoSuchImage(_)) => continue,
                found => return found,
            }
        }
        Err(StoreError::NoSuchImage(id.to_string()))
    }

    pub(super) fn find_shared_image(&self, query: &str) -> Result<ImageRecord, StoreError> {
        for s in self.shared_stores() {
            match s.find_own_image(query) {
                Err(StoreError::NoSuchImage(_)) => continue,
                found => return found,
            }
        }
        Err(StoreError::NoSuchImage(query.to_owned()))
    }

    /// The shared stores' images that this store does not have, with their tags and the
    /// store each is in.
    pub fn shared_images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>, StoreError> {
        let own: Vec<Digest> = self.images()?.into_iter().map(|(r, _)| r.id).collect();
        let mut out: Vec<(ImageRecord, Vec<String>)> = Vec::new();
        for s in self.shared_stores() {
            for (rec, tags) in s.images()? {
                if !own.contains(&rec.id) && !out.iter().any(|(r, _)| r.id == rec.id) {
                    out.push((rec, tags));
                }
            }
        }
        Ok(out)
    }

    /// The directory of a layer this store lacks and a shared store has.
    pub(super) fn shared_layer_dir(&self, diff_id: &Digest) -> Option<PathBuf> {
        // No stat on `nook run`'s path unless shared stores are configured.
        if self.shared.is_empty() || self.has_layer(diff_id) {
            return None;
        }
        self.shared_stores()
            .find(|s| s.has_layer(diff_id))
            .map(|s| s.layer_dir(diff_id))
    }

    /// Whether some of `image`'s layers are in a shared store and belong to another user.
    pub fn foreign_layers(&self, image: &ImageRecord) -> bool {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::getuid().as_raw();
        image.layers.iter().any(|l| {
            self.shared_layer_dir(&l.diff_id)
                .and_then(|d| std::fs::metadata(d.join("root")).ok())
                .is_some_and(|m| m.uid() != me)
        })
    }

    /// Where a blob can be read: this store's, else the first shared store's that has it.
    pub(super) fn readable_blob_path(&self, d: &Digest) -> PathBuf {
        if self.shared.is_empty() || self.has_blob(d) {
            return self.blob_path(d);
        }
        self.shared_stores()
            .find(|s| s.has_blob(d))
            .map_or_else(|| self.blob_path(d), |s| s.blob_path(d))
    }
}

/// Checks that the store at `dir` can serve a user whose own store is written as `idmap`
/// (`nook info`'s words): it was filled with one id (or as this user's own), and it can be
/// read. `Ok(false)`: there is no store there (yet).
pub fn check_shared(dir: &Path, idmap: &str) -> Result<bool, StoreError> {
    let refuse = |why: String| StoreError::Shared {
        path: dir.display().to_string(),
        why,
    };
    let info_path = dir.join("storage.json");
    let bytes = match std::fs::read(&info_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing store, or one this user may not look into.
            if dir.is_dir() && std::fs::read_dir(dir).is_err() {
                return Err(refuse(
                    "you cannot read it: its filler should run 'chmod -R a+rX' on it".into(),
                ));
            }
            return Ok(false);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(refuse(
                "you cannot read it: its filler should run 'chmod -R a+rX' on it".into(),
            ));
        }
        Err(e) => return Err(refuse(format!("cannot read {}: {e}", info_path.display()))),
    };
    let info: StorageInfo =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: info_path.display().to_string(),
            source,
        })?;
    if info.version != super::STORAGE_VERSION {
        return Err(refuse(format!("it has format version {}", info.version)));
    }
    if info.idmap != "single" && info.idmap != idmap {
        return Err(refuse(format!(
            "it was filled with id mapping '{}', whose files other users cannot use: fill \
             shared stores as a user without a subordinate range (nook info says \
             'single'), then make them readable with 'chmod -R a+rX'",
            info.idmap
        )));
    }
    for sub in ["images", "layers", "blobs/sha256"] {
        let p = dir.join(sub);
        if std::fs::read_dir(&p).is_err() {
            return Err(refuse(format!(
                "you cannot read {}: its filler should run 'chmod -R a+rX' on the store",
                p.display()
            )));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::images::tests::record;

    #[test]
    fn images_and_layers_are_found_behind_the_own_store() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Store::open(&dir.path().join("shared"), "single").unwrap();
        let a = record(b"a", 1);
        shared
            .add_image(a.clone(), &["docker.io/library/a:1".into()])
            .unwrap();
        let d = Digest::sha256_of(b"layer");
        std::fs::create_dir_all(shared.layer_dir(&d)).unwrap();
        std::fs::write(shared.layer_dir(&d).join("layer.json"), b"{}").unwrap();
        shared.put_blob(&d, b"layer").unwrap();
        let own = Store::open(&dir.path().join("own"), "single")
            .unwrap()
            .with_shared(&[shared.root().to_owned()]);
        assert_eq!(own.find_image("a:1").unwrap().id, a.id);
        assert_eq!(own.image(&a.id).unwrap().id, a.id);
        assert_eq!(own.layer_root(&d), shared.layer_root(&d));
        assert_eq!(own.read_blob(&d, 100).unwrap(), b"layer");
        assert_eq!(own.shared_images().unwrap().len(), 1);
        assert!(own.images().unwrap().is_empty(), "nothing copied");
        let err = own
            .remove_image("a:1", true, &Default::default())
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert!(check_shared(shared.root(), "range:1:2").unwrap());
        assert!(!check_shared(&dir.path().join("none"), "single").unwrap());
        let ranged = Store::open(&dir.path().join("ranged"), "range:100000:65536").unwrap();
        let err = check_shared(ranged.root(), "single").unwrap_err();
        assert!(err.to_string().contains("subordinate range"), "{err}");
        assert!(check_shared(ranged.root(), "range:100000:65536").unwrap());
    }
}
