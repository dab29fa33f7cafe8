//! User configuration: where things live, registries and mirrors, and the docker/podman
//! credential files (`auth`).
//!
//! nook's own file is `$XDG_CONFIG_HOME/nook/config.toml` (`~/.config/nook/config.toml`):
//!
//! ```toml
//! insecure_registries = ["registry.internal:5000"]   # HTTPS without verification, or HTTP
//! [mirrors]
//! "docker.io" = ["mirror.example.org", "http://10.0.0.5:5000"]
//! [storage]
//! root = "/scratch/me/nook"                            # instead of ~/.local/share/nook
//! additional_image_stores = ["/shared/nook"]           # read-only stores, after the own one
//! [run]
//! userns = "keep-id"                                   # when run has no --userns
//! binds = ["/scratch", "/home/u:/home/u:ro"]           # as -v, in every container
//! [cdi]
//! spec_dirs = ["/opt/site/cdi"]                        # after /etc/cdi and /var/run/cdi
//! ```
//!
//! A site's file, `/etc/nook/config.toml` (or `$NOOK_SYSTEM_CONFIG`), is read first: the
//! user's values win, lists are joined (the site's first) and maps merged.

pub mod auth;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} belongs to uid {owner}, not to you (uid {me}): remove it or set XDG_RUNTIME_DIR"
    )]
    NotOwner { path: String, owner: u32, me: u32 },
    #[error("credential helper docker-credential-{helper} failed: {message}")]
    Helper { helper: String, message: String },
    #[error("cannot find your home directory: set HOME")]
    NoHome,
}

/// nook's own configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub mirrors: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub cdi: CdiConfig,
    #[serde(default)]
    pub run: RunDefaults,
}

/// `[run]`: defaults for every `nook run` and `nook create`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    /// `--userns` when the command line gives none (`keep-id`, `host`, ...).
    pub userns: Option<String>,
    /// `-v` bind mounts added to every container; missing sources are skipped with a warning.
    #[serde(default)]
    pub binds: Vec<String>,
}

/// `[cdi]`: more directories of CDI specs, after /etc/cdi and /var/run/cdi (later wins).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CdiConfig {
    #[serde(default)]
    pub spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub root: Option<PathBuf>,
    /// Read-only stores images are also looked up in, after the own one.
    #[serde(default)]
    pub additional_image_stores: Vec<PathBuf>,
}

/// The site's configuration file, under the user's.
pub const SYSTEM_CONFIG: &str = "/etc/nook/config.toml";

impl UserConfig {
    /// Reads the site's file (`$NOOK_SYSTEM_CONFIG`, else [`SYSTEM_CONFIG`]) and the user's
    /// over it, where they exist.
    pub fn load() -> Result<UserConfig, ConfigError> {
        let system = std::env::var_os("NOOK_SYSTEM_CONFIG")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(SYSTEM_CONFIG), PathBuf::from);
        let site = Self::load_from(&system)?;
        let Some(dir) = config_home() else {
            return Ok(site);
        };
        Ok(site.under(Self::load_from(&dir.join("nook").join("config.toml"))?))
    }

    /// This (the site's) configuration with `user`'s over it: the user's values win, lists
    /// are joined (the site's first, no repeats) and maps merged.
    pub fn under(self, user: UserConfig) -> UserConfig {
        let mut mirrors = self.mirrors;
        mirrors.extend(user.mirrors);
        UserConfig {
            insecure_registries: joined(self.insecure_registries, user.insecure_registries),
            mirrors,
            storage: StorageConfig {
                root: user.storage.root.or(self.storage.root),
                additional_image_stores: joined(
                    self.storage.additional_image_stores,
                    user.storage.additional_image_stores,
                ),
            },
            cdi: CdiConfig {
                spec_dirs: joined(self.cdi.spec_dirs, user.cdi.spec_dirs),
            },
            run: RunDefaults {
                userns: user.run.userns.or(self.run.userns),
                binds: joined(self.run.binds, user.run.binds),
            },
        }
    }

    pub fn load_from(path: &Path) -> Result<UserConfig, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.message().to_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(UserConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

fn joined<T: PartialEq>(mut first: Vec<T>, then: Vec<T>) -> Vec<T> {
    for t in then {
        if !first.contains(&t) {
            first.push(t);
        }
    }
    first
}

/// `$HOME`, else the passwd entry's home.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        Some(p) if p.is_absolute() => Some(p),
        _ => home_dir().map(|h| h.join(fallback)),
    }
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// The store root: `--root`/`$NOOK_ROOT` (given), else the config file's, else
/// `$XDG_DATA_HOME/nook` (`~/.local/share/nook`).
pub fn store_root(given: Option<&Path>, config: &UserConfig) -> Result<PathBuf, ConfigError> {
    if let Some(p) = given.or(config.storage.root.as_deref()) {
        return Ok(p.to_owned());
    }
    xdg("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("nook"))
        .ok_or(ConfigError::NoHome)
}

/// The runtime directory: `$XDG_RUNTIME_DIR/nook`, else `/tmp/nook-<uid>` (batch jobs under
/// Slurm often have no XDG_RUNTIME_DIR), and inside a Slurm job without XDG_RUNTIME_DIR
/// `/tmp/nook-<uid>/slurm-<job id>`, private to the job: jobs of one user that share a node
/// never see each other's sockets and state. Created 0700; an existing one must be ours.
pub fn runtime_dir() -> Result<PathBuf, ConfigError> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        Some(base) if base.is_absolute() && base.is_dir() => base.join("nook"),
        _ => {
            let base = PathBuf::from(format!("/tmp/nook-{uid}"));
            match slurm_job(std::env::var("SLURM_JOB_ID").ok().as_deref()) {
                Some(job) => {
                    // The parent is checked first: nothing another user planted is entered.
                    ensure_private_dir(&base, uid)?;
                    base.join(format!("slurm-{job}"))
                }
                None => base,
            }
        }
    };
    ensure_private_dir(&dir, uid)?;
    Ok(dir)
}

/// A Slurm job id fit for a directory name: decimal digits only, nothing else.
fn slurm_job(id: Option<&str>) -> Option<&str> {
    id.filter(|j| !j.is_empty() && j.len() <= 20 && j.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates `dir` with mode 0700 or checks that the existing one belongs to `uid` and is no
/// symlink (another user could have planted `/tmp/nook-<uid>`).
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), ConfigError> {
    let err = |source| ConfigError::Write {
        path: dir.display().to_string(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(err)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(ConfigError::NotOwner {
            path: dir.display().to_string(),
            owner: meta.uid(),
            me: uid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        fs::write(
            &p,
            "insecure_registries = [\"reg:5000\"]\n[mirrors]\n\"docker.io\" = [\"m.example\"]\n[storage]\nroot = \"/scratch/x\"\n",
        )
        .unwrap();
        let c = UserConfig::load_from(&p).unwrap();
        assert_eq!(c.insecure_registries, ["reg:5000"]);
        assert_eq!(c.mirrors["docker.io"], ["m.example"]);
        assert_eq!(store_root(None, &c).unwrap(), Path::new("/scratch/x"));
        assert_eq!(
            store_root(Some(Path::new("/given")), &c).unwrap(),
            Path::new("/given")
        );
        assert_eq!(
            UserConfig::load_from(&dir.path().join("none")).unwrap(),
            UserConfig::default()
        );
        fs::write(&p, "unknown_key = 1\n").unwrap();
        let err = UserConfig::load_from(&p).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
    }

    #[test]
    fn the_users_file_goes_over_the_sites() {
        let site: UserConfig = toml::from_str(
            "[storage]\nroot = \"/site\"\nadditional_image_stores = [\"/shared\"]\n[run]\nuserns = \"keep-id\"\nbinds = [\"/scratch\"]\n",
        )
        .unwrap();
        let user: UserConfig = toml::from_str(
            "[storage]\nadditional_image_stores = [\"/mine\", \"/shared\"]\n[run]\nbinds = [\"/data:/data:ro\"]\n",
        )
        .unwrap();
        let c = site.clone().under(user);
        assert_eq!(c.storage.root.as_deref(), Some(Path::new("/site")));
        assert_eq!(
            c.storage.additional_image_stores,
            [PathBuf::from("/shared"), PathBuf::from("/mine")]
        );
        assert_eq!(c.run.userns.as_deref(), Some("keep-id"));
        assert_eq!(c.run.binds, ["/scratch", "/data:/data:ro"]);
        let over: UserConfig = toml::from_str("[run]\nuserns = \"host\"\n").unwrap();
        assert_eq!(site.under(over).run.userns.as_deref(), Some("host"));
    }

    #[test]
    fn private_dir_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::getuid().as_raw();
        let d = dir.path().join("rt");
        ensure_private_dir(&d, me).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let err = ensure_private_dir(&d, me + 1).unwrap_err();
        assert!(matches!(err, ConfigError::NotOwner { .. }));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(
            ensure_private_dir(&link, me).is_err(),
            "a symlink must not pass"
        );
    }

    #[test]
    fn slurm_job_ids_name_directories_only_as_digits() {
        assert_eq!(slurm_job(Some("4711")), Some("4711"));
        for bad in ["", "../1", "12/3", "1 2", "x", "123456789012345678901"] {
            assert_eq!(slurm_job(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(slurm_job(None), None);
    }
}
