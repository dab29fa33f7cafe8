//! Contexts: named endpoints, kept as docker keeps them — `contexts/meta/<sha256 of the
//! name>/meta.json` and `contexts/tls/<same>/docker/{ca,cert,key}.pem` — under nook's config
//! directory, with docker's own (`~/.docker`, `$DOCKER_CONFIG`) read as well. nook's current
//! context is the file `contexts/current`; without one, docker's `currentContext`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::endpoint::{Endpoint, Host, TlsOptions};
use crate::digest::Digest;

/// The context that means "no daemon": nook's own local path.
pub const DEFAULT: &str = "default";

/// Why a context could not be found, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "invalid context name {0:?}: use letters, digits and _.+- (starting with a letter or digit)"
    )]
    BadName(String),
    #[error("context {0:?} is nook's local path: it cannot be created or removed")]
    Reserved(String),
    #[error("context {0:?} not found: `nook context ls` lists them")]
    NotFound(String),
    #[error("context {0:?} already exists")]
    Exists(String),
    #[error("context {0:?} is docker's: remove it with `docker context rm`")]
    Docker(String),
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a context's metadata")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("context {name:?}: {source}")]
    Endpoint {
        name: String,
        #[source]
        source: super::ClientError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whose store a context is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Nook,
    Docker,
}

/// A named endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub name: String,
    pub description: String,
    /// The endpoint's URL, as `-H` takes it.
    pub host: String,
    pub skip_tls_verify: bool,
    /// The CA, certificate and key files, where the context has them.
    pub tls: TlsOptions,
    pub origin: Origin,
}

impl Context {
    /// The endpoint: TLS when the context has TLS files or skips verification (docker's rule).
    pub fn endpoint(&self) -> Result<Endpoint, ContextError> {
        let with_tls = self.tls.ca.is_some() || self.tls.cert.is_some() || self.skip_tls_verify;
        let host = Host::parse(&self.host, with_tls).map_err(|source| ContextError::Endpoint {
            name: self.name.clone(),
            source,
        })?;
        let tls = (with_tls && matches!(host, Host::Tcp { .. })).then(|| TlsOptions {
            verify: !self.skip_tls_verify,
            ..self.tls.clone()
        });
        Ok(Endpoint { host, tls })
    }
}

/// docker's rule for context names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

/// nook's contexts and docker's.
pub struct Contexts {
    /// nook's `contexts` directory.
    pub nook: PathBuf,
    /// docker's config directory (`~/.docker`).
    pub docker: PathBuf,
}

impl Contexts {
    /// The directories of this user: `$XDG_CONFIG_HOME/nook/contexts`, `$DOCKER_CONFIG` or
    /// `~/.docker`.
    pub fn of_user() -> Contexts {
        let home = crate::config::home_dir().unwrap_or_else(|| PathBuf::from("/"));
        let config = crate::config::config_home().unwrap_or_else(|| home.join(".config"));
        let docker = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".docker"));
        Contexts {
            nook: config.join("nook/contexts"),
            docker,
        }
    }

    /// The current context's name: nook's, else docker's, else `default`.
    pub fn current(&self) -> String {
        if let Ok(s) = std::fs::read_to_string(self.nook.join("current")) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
        std::fs::read(self.docker.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("currentContext")?.as_str().map(str::to_owned))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT.to_owned())
    }

    /// Makes `name` nook's current context. `default` clears nook's choice, as docker's
    /// `context use default` clears its own: docker's current context applies again.
    pub fn use_context(&self, name: &str) -> Result<(), ContextError> {
        let path = self.nook.join("current");
        if name == DEFAULT {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
                _ => Ok(()),
            };
        }
        self.get(name)?;
        std::fs::create_dir_all(&self.nook).map_err(io(&self.nook))?;
        std::fs::write(&path, format!("{name}\n")).map_err(io(&path))
    }

    /// A context by name: nook's first, then docker's.
    pub fn get(&self, name: &str) -> Result<Context, ContextError> {
        if !valid_name(name) {
            return Err(ContextError::BadName(name.to_owned()));
        }
        for (base, origin) in [
            (&self.nook, Origin::Nook),
            (&self.docker.join("contexts"), Origin::Docker),
        ] {
            if let Some(c) = read(base, name, origin)? {
                return Ok(c);
            }
        }
        Err(ContextError::NotFound(name.to_owned()))
    }

    /// Every context, nook's hiding docker's of the same name, sorted by name.
    pub fn list(&self) -> Vec<Context> {
        let mut out: Vec<Context> = Vec::new();
        for (base, origin) in [
            (self.nook.clone(), Origin::Nook),
            (self.docker.join("contexts"), Origin::Docker),
        ] {
            let Ok(dir) = std::fs::read_dir(base.join("meta")) else {
                continue;
            };
            for e in dir.flatten() {
                let meta = e.path().join("meta.json");
                let Some(name) = std::fs::read(&meta)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("Name")?.as_str().map(str::to_owned))
                else {
                    continue;
                };
                if out.iter().any(|c| c.name == name) || !valid_name(&name) {
                    continue;
                }
                if let Ok(Some(c)) = read(&base, &name, origin) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Creates a nook context; TLS files are copied in, as docker copies them.
    pub fn create(&self, c: &Context) -> Result<(), ContextError> {
        if c.name == DEFAULT {
            return Err(ContextError::Reserved(c.name.clone()));
        }
        if !valid_name(&c.name) {
            return Err(ContextError::BadName(c.name.clone()));
        }
        if read(&self.nook, &c.name, Origin::Nook)?.is_some() {
            return Err(ContextError::Exists(c.name.clone()));
        }
        c.endpoint()?;
        let id = dir_id(&c.name);
        let tls_dir = self.nook.join("tls").join(&id).join("docker");
        for (src, file) in [
            (&c.tls.ca, "ca.pem"),
            (&c.tls.cert, "cert.pem"),
            (&c.tls.key, "key.pem"),
        ] {
            if let Some(src) = src {
                let bytes = std::fs::read(src).map_err(io(src))?;
                std::fs::create_dir_all(&tls_dir).map_err(io(&tls_dir))?;
                let dest = tls_dir.join(file);
                write_private(&dest, &bytes)?;
            }
        }
        let meta_dir = self.nook.join("meta").join(&id);
        std::fs::create_dir_all(&meta_dir).map_err(io(&meta_dir))?;
        let meta = json!({
            "Name": c.name,
            "Metadata": {"Description": c.description},
            "Endpoints": {"docker": {"Host": c.host, "SkipTLSVerify": c.skip_tls_verify}},
        });
        let path = meta_dir.join("meta.json");
        std::fs::write(&path, meta.to_string()).map_err(io(&path))
    }

    /// Removes a nook context (and makes `default` current if it was).
    pub fn remove(&self, name: &str) -> Result<(), ContextError> {
        if name == DEFAULT {
            return Err(ContextError::Reserved(name.to_owned()));
        }
        match self.get(name)? {
            c if c.origin == Origin::Docker => return Err(ContextError::Docker(name.to_owned())),
            _ => {}
        }
        let id = dir_id(name);
        for dir in [
            self.nook.join("meta").join(&id),
            self.nook.join("tls").join(&id),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
                _ => {}
            }
        }
        let current = self.nook.join("current");
        if std::fs::read_to_string(&current).is_ok_and(|s| s.trim() == name) {
            std::fs::remove_file(&current).map_err(io(&current))?;
        }
        Ok(())
    }
}

/// The directory a context lives in: the sha256 of its name, as docker names it.
fn dir_id(name: &str) -> String {
    Digest::sha256_of(name.as_bytes()).hex().to_owned()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ContextError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

/// Reads the context `name` under `base` (a `contexts` directory), if it is there.
fn read(base: &Path, name: &str, origin: Origin) -> Result<Option<Context>, ContextError> {
    let id = dir_id(name);
    let path = base.join("meta").join(&id).join("meta.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| ContextError::Meta {
            path: path.clone(),
            source,
        })?;
    let ep = &v["Endpoints"]["docker"];
    let tls_dir = base.join("tls").join(&id).join("docker");
    let file = |f: &str| Some(tls_dir.join(f)).filter(|p| p.is_file());
    Ok(Some(Context {
        name: name.to_owned(),
        description: v["Metadata"]["Description"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        host: ep["Host"].as_str().unwrap_or("").to_owned(),
        skip_tls_verify: ep["SkipTLSVerify"].as_bool().unwrap_or(false),
        tls: TlsOptions {
            ca: file("ca.pem"),
            cert: file("cert.pem"),
            key: file("key.pem"),
            verify: false,
        },
        origin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> (tempfile::TempDir, Contexts) {
        let d = tempfile::tempdir().unwrap();
        let c = Contexts {
            nook: d.path().join("nook"),
            docker: d.path().join("docker"),
        };
        (d, c)
    }

    fn ctx(name: &str, host: &str) -> Context {
        Context {
            name: name.into(),
            description: String::new(),
            host: host.into(),
            skip_tls_verify: false,
            tls: TlsOptions::default(),
            origin: Origin::Nook,
        }
    }

    #[test]
    fn create_use_list_remove() {
        let (_d, s) = stores();
        assert_eq!(s.current(), DEFAULT);
        s.create(&ctx("a", "unix:///x.sock")).unwrap();
        assert!(matches!(
            s.create(&ctx("a", "unix:///y")),
            Err(ContextError::Exists(_))
        ));
        assert!(matches!(
            s.create(&ctx("default", "unix:///y")),
            Err(ContextError::Reserved(_))
        ));
        assert!(matches!(
            s.create(&ctx("../x", "unix:///y")),
            Err(ContextError::BadName(_))
        ));
        assert!(s.create(&ctx("b", "http://nope")).is_err());
        s.use_context("a").unwrap();
        assert_eq!(s.current(), "a");
        assert_eq!(
            s.get("a").unwrap().endpoint().unwrap().host,
            Host::Unix("/x.sock".into())
        );
        assert_eq!(s.list().len(), 1);
        s.remove("a").unwrap();
        assert_eq!(s.current(), DEFAULT);
        assert!(matches!(s.get("a"), Err(ContextError::NotFound(_))));
    }

    #[test]
    fn dockers_contexts_are_read() {
        let (_d, s) = stores();
        let id = dir_id("dk");
        let meta = s.docker.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"dk","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://h:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        let tls = s.docker.join("contexts/tls").join(&id).join("docker");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.pem"), "x").unwrap();
        std::fs::write(s.docker.join("config.json"), r#"{"currentContext":"dk"}"#).unwrap();
        assert_eq!(s.current(), "dk");
        let c = s.get("dk").unwrap();
        assert_eq!(c.origin, Origin::Docker);
        let ep = c.endpoint().unwrap();
        assert_eq!(
            ep.host,
            Host::Tcp {
                host: "h".into(),
                port: 2376
            }
        );
        let tls = ep.tls.unwrap();
        assert!(tls.verify && tls.ca.is_some() && tls.cert.is_none());
        assert!(matches!(s.remove("dk"), Err(ContextError::Docker(_))));
    }
}
