//! Volumes: `volumes/<name>/{volume.json,_data}` in the store. A named volume is made on
//! first use and filled from the image's content at its path, as docker does; the image's
//! VOLUME entries get anonymous volumes (removed with `rm -v`). A volume that a container
//! uses cannot be removed. Image paths are resolved inside each layer without following a
//! symbolic link (CVE-2022-23648: an image must not get host files copied into a volume).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::volume::{Volume, valid_volume_name};
use crate::sys::idmap::Mapping;

/// What `volume.json` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub anonymous: bool,
    /// Filled from an image already (never again).
    #[serde(default)]
    pub filled: bool,
}

/// A volume a container uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeUse {
    pub name: String,
    pub target: String,
    pub anonymous: bool,
}

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeStoreError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-'")]
    BadName(String),
    #[error("volume {name} is in use by container {container}: remove that container first")]
    InUse { name: String, container: String },
    #[error("volume {0} already exists")]
    Exists(String),
    #[error("the image's VOLUME {0:?} is not a clean absolute path")]
    BadImagePath(String),
    #[error("cannot use volume directory {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> VolumeStoreError + '_ {
    move |source| VolumeStoreError::Io {
        path: p.display().to_string(),
        source,
    }
}

/// The volumes of a store.
pub struct Volumes {
    dir: PathBuf,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Volumes {
    pub fn new(store_root: &Path) -> Volumes {
        Volumes {
            dir: store_root.join("volumes"),
        }
    }

    /// Where a volume's files are.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeStoreError> {
        if !valid_volume_name(name) {
            return Err(VolumeStoreError::NotFound(name.to_owned()));
        }
        let b = fs::read(self.dir.join(name).join("volume.json"))
            .map_err(|_| VolumeStoreError::NotFound(name.to_owned()))?;
        serde_json::from_slice(&b).map_err(|_| VolumeStoreError::NotFound(name.to_owned()))
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<VolumeInfo> = entries
            .flatten()
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a volume; an empty name makes an anonymous one with a generated name.
    /// `exist_ok`: an existing volume of that name is returned as it is.
    pub fn create(&self, name: &str, exist_ok: bool) -> Result<VolumeInfo, VolumeStoreError> {
        let anonymous = name.is_empty();
        let name = if anonymous {
            super::new_id()
        } else {
            name.to_owned()
        };
        if !valid_volume_name(&name) {
            return Err(VolumeStoreError::BadName(name));
        }
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        let dir = self.dir.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return match self.get(&name) {
                    Ok(v) if exist_ok => Ok(v),
                    Ok(_) => Err(VolumeStoreError::Exists(name)),
                    // Another run is creating it this instant: wait for its record.
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        self.get(&name)
                    }
                };
            }
            Err(e) => return Err(io_at(&dir)(e)),
        }
        let data = dir.join("_data");
        fs::create_dir(&data).map_err(io_at(&data))?;
        let info = VolumeInfo {
            name,
            created: now(),
            anonymous,
            filled: false,
        };
        self.save(&info)?;
        Ok(info)
    }

    fn save(&self, info: &VolumeInfo) -> Result<(), VolumeStoreError> {
        let dir = self.dir.join(&info.name);
        let tmp = dir.join(".volume.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(info).unwrap_or_default())
            .map_err(io_at(&tmp))?;
        fs::rename(&tmp, dir.join("volume.json")).map_err(io_at(&dir))
    }

    /// Removes a volume no container uses (`users`: every container's volumes).
    pub fn remove(
        &self,
        name: &str,
        users: &[(String, Vec<VolumeUse>)],
        mapping: &Mapping,
    ) -> Result<(), VolumeStoreError> {
        self.get(name)?;
        if let Some((container, _)) = users
            .iter()
            .find(|(_, uses)| uses.iter().any(|u| u.name == name))
        {
            return Err(VolumeStoreError::InUse {
                name: name.to_owned(),
                container: container.clone(),
            });
        }
        let dir = self.dir.join(name);
        let claimed = self.dir.join(format!(".removing-{name}"));
        fs::rename(&dir, &claimed).map_err(|_| VolumeStoreError::NotFound(name.to_owned()))?;
        super::lifecycle::remove_tree(&claimed, mapping).map_err(io_at(&claimed))
    }

    /// Fills a volume that was never filled and is empty with the image's content at
    /// `path` (the layers bottom first), keeping owners: with a subordinate range, the copy
    /// runs in a user namespace that maps it.
    pub fn fill(
        &self,
        info: &mut VolumeInfo,
        layers: &[PathBuf],
        path: &str,
        mapping: &Mapping,
    ) -> Result<(), VolumeStoreError> {
        let data = self.data(&info.name);
        let empty = fs::read_dir(&data)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if info.filled || !empty {
            return Ok(());
        }
        let sources: Vec<PathBuf> = layers.iter().filter_map(|l| inside(l, path)).collect();
        if !sources.is_empty() {
            copy_as_store(&sources, &data, mapping).map_err(io_at(&data))?;
        }
        info.filled = true;
        self.save(info)
    }
}

/// `root/rel` when every component below `root` is a real directory (no symbolic link, so
/// nothing outside the layer can be reached).
pub fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut p = root.to_owned();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        if c == ".." || c == "." {
            return None;
        }
        p.push(c);
        let m = fs::symlink_metadata(&p).ok()?;
        if !m.is_dir() {
            return None;
        }
    }
    Some(p)
}

/// Copies the layers' trees into `dest` with their owners.
fn copy_as_store(sources: &[PathBuf], dest: &Path, mapping: &Mapping) -> io::Result<()> {
    super::lifecycle::as_store(mapping, || crate::rootfs::copy::copy_layers(sources, dest))
}

/// Resolves the run's named and anonymous volumes (and the image's VOLUME entries not
/// covered by another mount) to bind mounts of volume directories, creating and filling
/// them; returns the mounts and what the container uses.
pub fn resolve(
    vols: &Volumes,
    requested: &[Volume],
    image_volumes: &[String],
    layers: &[PathBuf],
    mapping: &Mapping,
) -> Result<(Vec<Volume>, Vec<VolumeUse>), VolumeStoreError> {
    let mut out = Vec::new();
    let mut uses = Vec::new();
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    for v in requested {
        match v {
            Volume::Named {
                name,
                target,
                read_only,
            } => wanted.push((name.clone(), target.clone(), *read_only)),
            other => out.push(other.clone()),
        }
    }
    for path in image_volumes {
        let clean = path.trim_end_matches('/');
        if !clean.starts_with('/') || clean.split('/').any(|c| c == ".." || c == ".") {
            return Err(VolumeStoreError::BadImagePath(path.clone()));
        }
        let covered = requested.iter().any(|v| v.target() == clean);
        if !covered && !clean.is_empty() {
            wanted.push((String::new(), clean.to_owned(), false));
        }
    }
    for (name, target, read_only) in wanted {
        let mut info = vols.create(&name, true)?;
        vols.fill(&mut info, layers, &target, mapping)?;
        out.push(Volume::Bind {
            source: vols.data(&info.name),
            target: target.clone(),
            read_only,
            dir: true,
        });
        uses.push(VolumeUse {
            name: info.name.clone(),
            target,
            anonymous: info.anonymous,
        });
    }
    Ok((out, uses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_a_layer() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("srv/data")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("srv/link")).unwrap();
        assert_eq!(
            inside(d.path(), "/srv/data"),
            Some(d.path().join("srv/data"))
        );
        assert_eq!(
            inside(d.path(), "/srv/link"),
            None,
            "a symlink is not followed"
        );
        assert_eq!(inside(d.path(), "/srv/link/ssl"), None);
        assert_eq!(inside(d.path(), "/srv/../srv"), None);
        assert_eq!(inside(d.path(), "/missing"), None);
    }

    #[test]
    fn create_fill_use_remove() {
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("layer");
        fs::create_dir_all(layer.join("srv/www")).unwrap();
        fs::write(layer.join("srv/www/index.html"), b"hello").unwrap();
        let vols = Volumes::new(&d.path().join("store"));
        let me = Mapping::Single {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            why: String::new(),
        };
        let req = vec![Volume::Named {
            name: "site".into(),
            target: "/srv/www".into(),
            read_only: false,
        }];
        let image = vec!["/var/cache".to_owned(), "/srv/www".to_owned()];
        let (mounts, uses) =
            resolve(&vols, &req, &image, std::slice::from_ref(&layer), &me).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(uses[0].name, "site");
        assert!(uses[1].anonymous && uses[1].target == "/var/cache");
        assert_eq!(
            fs::read(vols.data("site").join("index.html")).unwrap(),
            b"hello"
        );
        // Filled once: later content of the volume is kept.
        fs::remove_file(vols.data("site").join("index.html")).unwrap();
        resolve(&vols, &req, &[], &[layer], &me).unwrap();
        assert!(!vols.data("site").join("index.html").exists());
        let users = vec![("web".to_owned(), uses.clone())];
        assert!(matches!(
            vols.remove("site", &users, &me),
            Err(VolumeStoreError::InUse { .. })
        ));
        vols.remove("site", &[], &me).unwrap();
        assert!(matches!(
            vols.get("site"),
            Err(VolumeStoreError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&vols, &[], &["/../etc".into()], &[], &me),
            Err(VolumeStoreError::BadImagePath(_))
        ));
    }
}
