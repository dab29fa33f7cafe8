//! `nook commit`: a container's changes as a new image, with `-c` instructions applied to
//! the config (the same metadata instructions a Dockerfile has).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config::{Empty, History, ImageConfig};
use super::dockerfile::{self, Command, Kind};
use super::vars::{env_get, env_set};
use super::{BuildError, Host, commit};
use crate::container::{Containers, Record};
use crate::store::ImageRecord;

/// What `nook commit` was asked.
pub struct CommitRequest {
    /// `-c` instructions.
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub format: commit::Format,
    pub tags: Vec<String>,
}

/// Applies one metadata instruction (`CMD ["x"]`, `ENV A=1` …) to `config`.
pub fn apply_change(config: &mut ImageConfig, text: &str) -> Result<(), BuildError> {
    let df = dockerfile::parse(&format!("FROM scratch\n{text}\n"), "--change")?;
    let Some(ins) = df
        .stages
        .into_iter()
        .next()
        .and_then(|s| s.instructions.into_iter().next())
    else {
        return Err(bad(text, "no instruction"));
    };
    let c = &mut config.config;
    let env = c.env.clone();
    let ex = |raw: &str| {
        dockerfile::expand(raw, df.escape, &|n| env_get(&env, n))
            .map_err(|e| bad(text, &e.to_string()))
    };
    let argv = |cmd: &Command, shell: &Option<Vec<String>>| match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(s.clone());
            v
        }
    };
    match &ins.kind {
        Kind::Env(pairs) => {
            for (k, v) in pairs {
                let v = ex(v)?;
                env_set(&mut c.env, k, &v);
            }
        }
        Kind::Label(pairs) => {
            for (k, v) in pairs {
                let (k, v) = (ex(k)?, ex(v)?);
                c.labels.get_or_insert_with(BTreeMap::new).insert(k, v);
            }
        }
        Kind::User(u) => c.user = ex(u)?,
        Kind::Workdir(w) => c.working_dir = ex(w)?,
        Kind::StopSignal(s) => c.stop_signal = Some(ex(s)?),
        Kind::Cmd(cmd) => c.cmd = Some(argv(cmd, &c.shell)),
        Kind::Entrypoint(cmd) => c.entrypoint = Some(argv(cmd, &c.shell)),
        Kind::Onbuild(t) => c.on_build.get_or_insert_with(Vec::new).push(t.clone()),
        Kind::Expose(words) => {
            for w in words {
                for p in super::steps_ports(&ex(w)?).ok_or_else(|| bad(text, "invalid port"))? {
                    c.exposed_ports
                        .get_or_insert_with(BTreeMap::new)
                        .insert(p, Empty {});
                }
            }
        }
        Kind::Volume(words) => {
            for w in words {
                c.volumes
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ex(w)?, Empty {});
            }
        }
        _ => {
            return Err(bad(
                text,
                "only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR and STOPSIGNAL can be applied",
            ));
        }
    }
    Ok(())
}

fn bad(text: &str, why: &str) -> BuildError {
    BuildError::Instruction {
        file: "--change".into(),
        line: 1,
        what: format!("{text:?}: {why}"),
    }
}

/// Commits `record`'s container: its changes as a layer over its image's.
pub fn commit(
    host: &Host<'_>,
    record: &Record,
    req: &CommitRequest,
) -> Result<ImageRecord, BuildError> {
    let image = host.store.image(&record.image_id)?;
    let bytes = host.store.read_blob(&image.id, 8 << 20)?;
    let mut config =
        ImageConfig::from_bytes(&bytes).map_err(|e| BuildError::Config(record.image.clone(), e))?;
    let lowers: Vec<PathBuf> = image
        .layers
        .iter()
        .rev()
        .map(|l| host.store.layer_root(&l.diff_id))
        .collect();
    let mut exclude: Vec<PathBuf> = super::run::NOOK_MOUNTS.iter().map(PathBuf::from).collect();
    exclude.extend(
        record
            .volumes
            .iter()
            .filter_map(|v| super::run::clean_rel(&v.target)),
    );
    let dir = Containers::new(host.store.root()).dir_of(&record.id);
    let layer = super::run::snapshot(
        host,
        (None, req.format),
        &lowers,
        (&dir, record.driver),
        &exclude,
    )?;
    for c in &req.changes {
        apply_change(&mut config, c)?;
    }
    let created = crate::container::logs::rfc3339_nanos(std::time::SystemTime::now());
    let mut layers = image.layers.clone();
    if let Some(l) = &layer {
        config.rootfs.diff_ids.push(l.diff_id.to_string());
        layers.push(l.clone());
    }
    config.history.push(History {
        created: Some(created.clone()),
        created_by: Some(record.command.join(" ")),
        author: req.author.clone(),
        comment: req.message.clone(),
        empty_layer: layer.is_none(),
    });
    config.created = Some(created);
    if req.author.is_some() {
        config.author = req.author.clone();
    }
    Ok(commit::store_image(
        host.store, &config, &layers, req.format, &req.tags,
    )?)
}
