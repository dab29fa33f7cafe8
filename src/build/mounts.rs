//! `RUN --mount=...` as BuildKit spells it: `type=cache|bind|secret|tmpfs` with their options.

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// A directory kept by the builder across builds (and across `--no-cache`).
    Cache {
        id: String,
        target: String,
        read_only: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// A path of the context, or of a stage or image with `from`.
    Bind {
        source: String,
        target: String,
        from: Option<String>,
        read_write: bool,
    },
    /// A `--secret` of the build, readable during this RUN only.
    Secret {
        id: String,
        target: String,
        required: bool,
        /// `env=NAME`: the secret's content as this environment variable, not a file.
        env: Option<String>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// What is wrong with a `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --mount {spec:?}: {why}")]
pub struct MountError {
    pub spec: String,
    pub why: String,
}

fn bool_value(v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(o) => Err(format!("{o:?} is not a boolean")),
    }
}

fn absolute(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), target)
    }
}

/// Parses one `--mount` value; relative targets are taken from `workdir`.
pub fn parse(spec: &str, workdir: &str) -> Result<RunMount, MountError> {
    let err = |why: String| MountError {
        spec: spec.to_owned(),
        why,
    };
    let mut kind = "bind".to_owned();
    let (mut target, mut source, mut from, mut id) = (None, None, None, None);
    let mut env = None;
    let (mut ro, mut rw, mut required) = (false, false, false);
    let (mut uid, mut gid, mut mode, mut size) = (0u32, 0u32, 0o755u32, None);
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let val = || {
            v.map(str::to_owned)
                .ok_or_else(|| err(format!("{k} needs a value")))
        };
        let num = |radix: u32| {
            v.and_then(|s| u32::from_str_radix(s, radix).ok())
                .ok_or_else(|| err(format!("{k} needs a number")))
        };
        match k.as_str() {
            "type" => kind = val()?,
            "target" | "dst" | "destination" => target = Some(val()?),
            "source" | "src" => source = Some(val()?),
            "from" => from = Some(val()?),
            "id" => id = Some(val()?),
            "ro" | "readonly" => ro = bool_value(v).map_err(err)?,
            "rw" | "readwrite" => rw = bool_value(v).map_err(err)?,
            "required" => required = bool_value(v).map_err(err)?,
            "uid" => uid = num(10)?,
            "gid" => gid = num(10)?,
            "mode" => mode = num(8)?,
            "size" => {
                size = Some(
                    crate::container::cgroup::parse_bytes(&val()?)
                        .ok_or_else(|| err("size needs a number of bytes".into()))?,
                )
            }
            "env" => env = Some(val()?),
            "sharing" => {}
            other => return Err(err(format!("unknown option {other:?}"))),
        }
    }
    let need_target = |t: Option<String>| {
        t.map(|t| absolute(&t, workdir))
            .ok_or_else(|| err("a target is required".into()))
    };
    match kind.as_str() {
        "cache" => {
            let target = need_target(target)?;
            Ok(RunMount::Cache {
                id: id.unwrap_or_else(|| target.clone()),
                target,
                read_only: ro,
                uid,
                gid,
                mode,
            })
        }
        "bind" => Ok(RunMount::Bind {
            source: source.unwrap_or_else(|| ".".into()),
            target: need_target(target)?,
            from,
            read_write: rw,
        }),
        "secret" => {
            let id = match (id, &target, &env) {
                (Some(id), _, _) => id,
                (None, Some(t), _) => t.rsplit('/').next().unwrap_or_default().to_owned(),
                (None, None, Some(e)) => e.clone(),
                (None, None, None) => return Err(err("a secret needs an id or a target".into())),
            };
            let target =
                target.map_or_else(|| format!("/run/secrets/{id}"), |t| absolute(&t, workdir));
            Ok(RunMount::Secret {
                id,
                target,
                required,
                env,
            })
        }
        "tmpfs" => Ok(RunMount::Tmpfs {
            target: need_target(target)?,
            size,
        }),
        "ssh" => Err(err("ssh mounts are not supported by nook build".into())),
        other => Err(err(format!("unknown mount type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_defaults() {
        assert_eq!(
            parse("type=cache,target=/root/.cache", "/").unwrap(),
            RunMount::Cache {
                id: "/root/.cache".into(),
                target: "/root/.cache".into(),
                read_only: false,
                uid: 0,
                gid: 0,
                mode: 0o755
            }
        );
        assert_eq!(
            parse("type=secret,id=tok", "/").unwrap(),
            RunMount::Secret {
                id: "tok".into(),
                target: "/run/secrets/tok".into(),
                required: false,
                env: None
            }
        );
        assert_eq!(
            parse("type=secret,target=/etc/key,required", "/").unwrap(),
            RunMount::Secret {
                id: "key".into(),
                target: "/etc/key".into(),
                required: true,
                env: None
            }
        );
        assert_eq!(
            parse("target=src,from=builder,source=/out", "/w").unwrap(),
            RunMount::Bind {
                source: "/out".into(),
                target: "/w/src".into(),
                from: Some("builder".into()),
                read_write: false
            }
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=1m", "/").unwrap(),
            RunMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20)
            }
        );
        assert!(parse("type=cache", "/").is_err());
        assert!(parse("type=ssh", "/").is_err());
        assert!(parse("type=bind,target=/x,bogus=1", "/").is_err());
    }
}
