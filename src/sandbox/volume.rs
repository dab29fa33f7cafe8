//! `-v`, `--mount` and `--tmpfs`, spelled as docker spells them.

use std::path::PathBuf;

use nix::mount::MsFlags;

use super::mount::{MountOp, Target};

/// One user-requested mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
        dir: bool,
    },
    Tmpfs {
        target: String,
        flags: MsFlags,
        data: String,
    },
    /// A named volume (`NAME:/path`), or an anonymous one (`/path`, empty name): the run
    /// resolves it to a bind mount of the volume's directory in the store.
    Named {
        name: String,
        target: String,
        read_only: bool,
    },
}

/// Whether `s` can name a volume (docker's rule).
pub fn valid_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What is wrong with a volume flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume {0:?}: expected /host/path:/container/path[:ro]")]
    Spec(String),
    #[error("invalid volume {0:?}: the container path must be absolute and not /")]
    Target(String),
    #[error(
        "invalid volume name {0:?}: use letters, digits, '_', '.' and '-', or an absolute host path"
    )]
    Named(String),
    #[error("bind source {0:?} does not exist (--mount does not create it; -v does)")]
    Missing(String),
    #[error("cannot create bind source {0:?}: {1}")]
    Create(String, String),
    #[error("invalid --mount {spec:?}: {why}")]
    Mount { spec: String, why: String },
    #[error("invalid --tmpfs {0:?}: expected /path[:options]")]
    Tmpfs(String),
}

fn check_target(t: &str, spec: &str) -> Result<String, VolumeError> {
    if !t.starts_with('/') || t.trim_end_matches('/').is_empty() || t.split('/').any(|c| c == "..")
    {
        return Err(VolumeError::Target(spec.to_owned()));
    }
    Ok(t.trim_end_matches('/').to_owned())
}

fn bind(
    source: &str,
    target: String,
    read_only: bool,
    create: bool,
    spec: &str,
) -> Result<Volume, VolumeError> {
    let path = PathBuf::from(source);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) if create => {
            std::fs::create_dir_all(&path)
                .map_err(|e| VolumeError::Create(source.to_owned(), e.to_string()))?;
            std::fs::metadata(&path)
                .map_err(|e| VolumeError::Create(source.to_owned(), e.to_string()))?
        }
        Err(_) => return Err(VolumeError::Missing(spec.to_owned())),
    };
    Ok(Volume::Bind {
        source: path,
        target,
        read_only,
        dir: meta.is_dir(),
    })
}

/// `-v SRC:DST[:OPTS]`.
pub fn parse_volume(spec: &str) -> Result<Volume, VolumeError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(VolumeError::Spec(spec.to_owned())),
    };
    if !src.is_empty() && !src.starts_with('/') && !valid_volume_name(src) {
        return Err(VolumeError::Named(src.to_owned()));
    }
    let target = check_target(dst, spec)?;
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            // SELinux relabelling and propagation modes: nothing to do without SELinux, and
            // mounts stay private.
            "z" | "Z" | "private" | "rprivate" | "delegated" | "cached" | "consistent" => {}
            _ => return Err(VolumeError::Spec(spec.to_owned())),
        }
    }
    if !src.starts_with('/') {
        return Ok(Volume::Named {
            name: src.to_owned(),
            target,
            read_only,
        });
    }
    bind(src, target, read_only, true, spec)
}

/// `--mount type=bind|tmpfs,...`.
pub fn parse_mount(spec: &str) -> Result<Volume, VolumeError> {
    let err = |why: &str| VolumeError::Mount {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let (mut kind, mut source, mut target, mut read_only) = ("volume", None, None, false);
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .map_or((field, None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("type", Some(t)) => {
                kind = if t == "bind" {
                    "bind"
                } else if t == "tmpfs" {
                    "tmpfs"
                } else if t == "volume" {
                    "volume"
                } else {
                    return Err(err("type must be bind, volume or tmpfs"));
                }
            }
            ("source" | "src", Some(s)) => source = Some(s),
            ("target" | "destination" | "dst", Some(t)) => target = Some(t),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("bind-propagation", Some(_)) | ("consistency", Some(_)) => {}
            ("tmpfs-size", Some(s)) => size = Some(s),
            ("tmpfs-mode", Some(m)) => mode = Some(m),
            _ => return Err(err(&format!("unknown field {field:?}"))),
        }
    }
    let target = check_target(target.ok_or_else(|| err("target is required"))?, spec)?;
    match kind {
        "bind" => bind(
            source.ok_or_else(|| err("source is required"))?,
            target,
            read_only,
            false,
            spec,
        ),
        "tmpfs" => {
            let mut data = vec![];
            if let Some(s) = size {
                data.push(format!("size={s}"));
            }
            if let Some(m) = mode {
                data.push(format!("mode={m}"));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            Ok(Volume::Tmpfs {
                target,
                flags,
                data: data.join(","),
            })
        }
        _ => {
            let name = source.unwrap_or("");
            if !name.is_empty() && !valid_volume_name(name) {
                return Err(VolumeError::Named(name.to_owned()));
            }
            Ok(Volume::Named {
                name: name.to_owned(),
                target,
                read_only,
            })
        }
    }
}

/// `--tmpfs /path[:opts]` (docker's default: noexec, nosuid, nodev).
pub fn parse_tmpfs(spec: &str) -> Result<Volume, VolumeError> {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let target = check_target(path, spec).map_err(|_| VolumeError::Tmpfs(spec.to_owned()))?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "exec" => flags.remove(MsFlags::MS_NOEXEC),
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" => flags.remove(MsFlags::MS_NOSUID),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "dev" => flags.remove(MsFlags::MS_NODEV),
            "nodev" => flags |= MsFlags::MS_NODEV,
            o if o.starts_with("size=")
                || o.starts_with("mode=")
                || o.starts_with("nr_inodes=") =>
            {
                data.push(o.to_owned())
            }
            _ => return Err(VolumeError::Tmpfs(spec.to_owned())),
        }
    }
    Ok(Volume::Tmpfs {
        target,
        flags,
        data: data.join(","),
    })
}

impl Volume {
    pub fn target(&self) -> &str {
        match self {
            Volume::Bind { target, .. }
            | Volume::Tmpfs { target, .. }
            | Volume::Named { target, .. } => target,
        }
    }

    pub fn mount_op(&self) -> MountOp {
        match self {
            Volume::Bind {
                source,
                target,
                read_only,
                dir,
            } => MountOp::Bind {
                source: source.clone(),
                target: Target {
                    path: target.clone(),
                    dir: *dir,
                },
                recursive: true,
                flags: if *read_only {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                },
            },
            // The run resolves named volumes first; one left over fails at its mount.
            Volume::Named {
                target, read_only, ..
            } => Volume::Bind {
                source: PathBuf::from("/nonexistent/unresolved-volume"),
                target: target.clone(),
                read_only: *read_only,
                dir: true,
            }
            .mount_op(),
            Volume::Tmpfs {
                target,
                flags,
                data,
            } => MountOp::Fs {
                fstype: "tmpfs",
                target: Target::dir(target),
                flags: *flags,
                data: data.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_v_forms() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().display().to_string();
        let v = parse_volume(&format!("{src}:/data")).unwrap();
        assert_eq!(
            v,
            Volume::Bind {
                source: d.path().into(),
                target: "/data".into(),
                read_only: false,
                dir: true
            }
        );
        let v = parse_volume(&format!("{src}:/data/:ro,z")).unwrap();
        assert!(matches!(v, Volume::Bind { read_only: true, ref target, .. } if target == "/data"));
        let created = d.path().join("new/deep");
        parse_volume(&format!("{}:/x", created.display())).unwrap();
        assert!(created.is_dir(), "-v creates a missing source directory");
        assert_eq!(
            parse_volume("data:/x:ro").unwrap(),
            Volume::Named {
                name: "data".into(),
                target: "/x".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume("/x").unwrap(),
            Volume::Named {
                name: String::new(),
                target: "/x".into(),
                read_only: false
            }
        );
        assert!(matches!(
            parse_volume("-bad:/x"),
            Err(VolumeError::Named(_))
        ));
        assert!(matches!(
            parse_volume("../up:/x"),
            Err(VolumeError::Named(_))
        ));
        assert!(matches!(
            parse_volume(&format!("{src}:relative")),
            Err(VolumeError::Target(_))
        ));
        assert!(matches!(
            parse_volume(&format!("{src}:/")),
            Err(VolumeError::Target(_))
        ));
        assert!(matches!(
            parse_volume(&format!("{src}:/a/../b")),
            Err(VolumeError::Target(_))
        ));
        assert!(matches!(
            parse_volume(&format!("{src}:/a:bogus")),
            Err(VolumeError::Spec(_))
        ));
    }

    #[test]
    fn mount_forms() {
        let d = tempfile::tempdir().unwrap();
        let v = parse_mount(&format!(
            "type=bind,source={},target=/t,readonly",
            d.path().display()
        ))
        .unwrap();
        assert!(matches!(
            v,
            Volume::Bind {
                read_only: true,
                ..
            }
        ));
        assert!(matches!(
            parse_mount("type=bind,source=/nonexistent-nook,target=/t"),
            Err(VolumeError::Missing(_))
        ));
        let t =
            parse_mount("type=tmpfs,destination=/cache,tmpfs-size=64m,tmpfs-mode=1777").unwrap();
        assert_eq!(
            t,
            Volume::Tmpfs {
                target: "/cache".into(),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                data: "size=64m,mode=1777".into()
            }
        );
        assert!(matches!(
            parse_mount("type=volume,source=x,target=/y").unwrap(),
            Volume::Named { ref name, .. } if name == "x"
        ));
        assert!(parse_mount("type=volume,source=a/b,target=/y").is_err());
        assert!(parse_mount("type=tmpfs").is_err());
        assert!(parse_mount("type=tmpfs,target=/x,colour=blue").is_err());
    }

    #[test]
    fn tmpfs_forms() {
        let t = parse_tmpfs("/run:rw,exec,size=1m").unwrap();
        assert_eq!(
            t,
            Volume::Tmpfs {
                target: "/run".into(),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: "size=1m".into()
            }
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/x:weird").is_err());
    }
}
