//! RUN: the step's command in a nook container made by the same code as `nook run` (user
//! namespace, the rootfs ladder, the network ladder, docker's seccomp profile), its mounts,
//! then the difference it made as a layer, and the container gone whatever happened.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::builder::State;
use super::cache::Cache;
use super::config::ImageConfig;
use super::mounts::RunMount;
use super::{BuildError, Host, Options, job, layer};
use crate::container::run::{RunRequest, run};
use crate::container::{Containers, cgroup::Limits};
use crate::digest::Digest;
use crate::rootfs::Rung;
use crate::sandbox::spec::RunOptions;
use crate::sandbox::volume::Volume;
use crate::store::{ImageRecord, LayerRef};

/// Paths nook itself mounts in every container: never part of a layer when the image did not
/// have them.
pub const NOOK_MOUNTS: [&str; 6] = [
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// One RUN, ready to go.
pub struct RunStep {
    pub argv: Vec<String>,
    /// Build args that reach the command (`K=V`).
    pub env: Vec<String>,
    pub mounts: Vec<RunMount>,
    pub network: crate::net::Mode,
    /// A heredoc script with a shebang (name, body), run as `/dev/pipes/NAME`.
    pub script: Option<(String, String)>,
}

/// A `--mount` from a stage or an image, resolved to the layers it shows.
pub struct MountSources<'a> {
    /// `from=` → the layers (top first) it names.
    pub layers: Vec<(String, Vec<PathBuf>)>,
    pub context: &'a super::context::Context,
}

/// The image a RUN's container starts from: the state's config without what belongs to
/// `nook run` (entrypoint, command, volumes, health check, triggers).
fn run_image(host: &Host<'_>, st: &State) -> Result<ImageRecord, BuildError> {
    let mut c: ImageConfig = st.config.clone();
    c.config.entrypoint = None;
    c.config.cmd = None;
    c.config.volumes = None;
    c.config.healthcheck = None;
    c.config.on_build = None;
    let bytes = c.to_bytes();
    let id = Digest::sha256_of(&bytes);
    host.store.put_blob(&id, &bytes)?;
    Ok(ImageRecord {
        id: id.clone(),
        manifest_digest: id,
        manifest_media_type: String::new(),
        index_digest: None,
        repo_digests: vec![],
        platform: crate::registry::platform::Platform {
            os: c.os.clone(),
            architecture: c.architecture.clone(),
            variant: c.variant.clone(),
        },
        created: None,
        layers: st.layers.clone(),
        config_size: bytes.len() as u64,
        size: 0,
        pulled_at: 0,
    })
}

fn options(o: &Options, step: &RunStep, volumes: Vec<Volume>) -> RunOptions {
    RunOptions {
        env: step.env.clone(),
        // RUN ignores the image's ENTRYPOINT.
        entrypoint: Some(String::new()),
        volumes,
        network: step.network.clone(),
        driver: o.driver,
        // A reaper as pid 1 passes Ctrl-C on to the step's command (a shell as pid 1 would
        // ignore it) and reaps what the step leaves behind.
        init: true,
        command: step.argv.clone(),
        ..RunOptions::default()
    }
}

/// What must be undone after the step: directories made for `from=` mounts.
#[derive(Default)]
struct Scratch {
    dirs: Vec<PathBuf>,
    /// Secrets given as environment variables (never in the key or the history).
    env: Vec<String>,
}

/// A cache mount's directory; made with the mount's owner and mode the first time (docker's
/// `uid=`, `gid=`, `mode=`), in the store's user namespace where those ids exist.
fn cache_dir(host: &Host<'_>, id: &str, ids: (u32, u32), mode: u32) -> Result<PathBuf, BuildError> {
    let cache = Cache::new(host.store);
    let fresh = !cache.mount_path(id).exists();
    let dir = cache.mount_dir(id)?;
    if fresh && (ids != (0, 0) || mode != 0o755) {
        let d = dir.clone();
        // With a single mapping no other id exists: the directory stays the user's (the
        // container's root), with the mode asked for.
        let single = matches!(host.mapping, crate::sys::idmap::Mapping::Single { .. });
        job::in_store(host.mapping, move || {
            use std::os::unix::fs::PermissionsExt;
            let owned = if single {
                Ok(())
            } else {
                std::os::unix::fs::chown(&d, Some(ids.0), Some(ids.1))
            };
            owned
                .and_then(|()| {
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode & 0o7777))
                })
                .map_err(|e| format!("cannot give the cache mount {id:?} its owner and mode: {e}"))
        })?;
    }
    Ok(dir)
}

/// Turns the step's mounts into the run's volumes.
fn volumes(
    host: &Host<'_>,
    o: &Options,
    step: &RunStep,
    sources: &MountSources<'_>,
    scratch: &mut Scratch,
) -> Result<Vec<Volume>, BuildError> {
    let mut out = Vec::new();
    if let Some((name, body)) = &step.script {
        let dir = host.store.tmp_path("script");
        std::fs::create_dir(&dir).map_err(super::io("cannot write the step's script"))?;
        scratch.dirs.push(dir.clone());
        let file = dir.join("script");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o755)
                .open(&file)
                .map_err(super::io("cannot write the step's script"))?;
            std::io::Write::write_all(&mut f, body.as_bytes())
                .map_err(super::io("cannot write the step's script"))?;
        }
        out.push(Volume::Bind {
            source: file,
            target: format!("/dev/pipes/{name}"),
            read_only: true,
            dir: false,
        });
    }
    for m in &step.mounts {
        out.push(match m {
            RunMount::Cache {
                id,
                target,
                read_only,
                uid,
                gid,
                mode,
            } => Volume::Bind {
                source: cache_dir(host, id, (*uid, *gid), *mode)?,
                target: target.clone(),
                read_only: *read_only,
                dir: true,
            },
            RunMount::Secret {
                id,
                target,
                required,
                env,
            } => match o.secrets.get(id) {
                Some(src) if env.is_some() => {
                    let value = std::fs::read_to_string(src)
                        .map_err(super::io(format!("cannot read secret {id:?}")))?;
                    scratch
                        .env
                        .push(format!("{}={value}", env.as_deref().unwrap_or_default()));
                    continue;
                }
                Some(src) => Volume::Bind {
                    source: src.clone(),
                    target: target.clone(),
                    read_only: true,
                    dir: false,
                },
                None if *required => return Err(BuildError::NoSecret(id.clone())),
                None => continue,
            },
            RunMount::Tmpfs { target, size } => Volume::Tmpfs {
                target: target.clone(),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: size.map(|s| format!("size={s}")).unwrap_or_default(),
            },
            RunMount::Bind {
                source,
                target,
                from,
                read_write,
            } => bind(
                host,
                source,
                target,
                from.as_deref(),
                *read_write,
                sources,
                scratch,
            )?,
        });
    }
    Ok(out)
}

/// A bind mount: a path of the context (read-only unless `rw`, then a copy), or a path of a
/// stage or image, made into a directory of its own for the step.
fn bind(
    host: &Host<'_>,
    source: &str,
    target: &str,
    from: Option<&str>,
    read_write: bool,
    sources: &MountSources<'_>,
    scratch: &mut Scratch,
) -> Result<Volume, BuildError> {
    let rel = clean_rel(source).ok_or_else(|| BuildError::Io {
        what: format!("bind source {source:?} leads out of its tree"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let layers = match from {
        Some(f) => sources
            .layers
            .iter()
            .find(|(name, _)| name == f)
            .map(|(_, l)| l.clone())
            .unwrap_or_default(),
        None if !read_write && !sources.context.ignores_anything() => {
            let missing = || BuildError::Io {
                what: format!("bind source {source:?} is not in the context"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            };
            // Links are followed inside the context only: a link to a host file is no source.
            let inside = super::context::resolve_inside(sources.context, &rel, true)
                .map_err(super::io(format!("cannot read bind source {source:?}")))?
                .ok_or_else(missing)?;
            let path = sources.context.root().join(&inside);
            let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
            if meta.file_type().is_symlink() {
                return Err(missing());
            }
            return Ok(Volume::Bind {
                source: path,
                target: target.to_owned(),
                read_only: true,
                dir: meta.is_dir(),
            });
        }
        None => Vec::new(),
    };
    let dir = host.store.tmp_path("bind");
    std::fs::create_dir(&dir).map_err(super::io("cannot make a directory for a bind mount"))?;
    scratch.dirs.push(dir.clone());
    let tree = match from {
        Some(_) => super::copy::CopyFrom::Layers(layers),
        None => super::copy::CopyFrom::Context(sources.context),
    };
    let made = super::copy::materialize(host, &tree, &rel, &dir)?;
    Ok(Volume::Bind {
        source: made,
        target: target.to_owned(),
        read_only: !read_write,
        dir: true,
    })
}

/// `source` as a relative path below its root, or `None` when it climbs out.
pub fn clean_rel(source: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in source.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if !out.pop() {
                    return None;
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Runs the step; returns the layer it made (`None` when it changed nothing).
pub fn run_step(
    host: &Host<'_>,
    o: &Options,
    st: &State,
    step: &RunStep,
    sources: &MountSources<'_>,
) -> Result<Option<LayerRef>, BuildError> {
    let mut scratch = Scratch::default();
    let result = run_in_container(host, o, st, step, sources, &mut scratch);
    for d in &scratch.dirs {
        let _ = crate::container::lifecycle::remove_tree(d, host.mapping);
    }
    result
}

fn run_in_container(
    host: &Host<'_>,
    o: &Options,
    st: &State,
    step: &RunStep,
    sources: &MountSources<'_>,
    scratch: &mut Scratch,
) -> Result<Option<LayerRef>, BuildError> {
    let image = run_image(host, st)?;
    let vols = volumes(host, o, step, sources, scratch)?;
    let mut exclude: Vec<PathBuf> = NOOK_MOUNTS.iter().map(PathBuf::from).collect();
    exclude.extend(vols.iter().filter_map(|v| match v {
        Volume::Bind { target, .. } | Volume::Tmpfs { target, .. } => {
            clean_rel(target).filter(|p| !p.as_os_str().is_empty())
        }
        Volume::Named { .. } => None,
    }));
    let name = format!("nook-build-{}", &crate::container::new_id()[..16]);
    let rt = crate::container::run::Host {
        store: host.store,
        mapping: host.mapping,
        runtime: host.runtime,
    };
    let request = RunRequest {
        image_name: format!("build step of {}", st.id.short()),
        image,
        name: Some(name.clone()),
        remove: false,
        options: {
            let mut opts = options(o, step, vols);
            opts.env.extend(scratch.env.iter().cloned());
            opts
        },
        limits: Limits::default(),
        detach: None,
        existing: None,
        args: vec![],
        labels: Default::default(),
        stop_signal: None,
        file: None,
    };
    let quiet = if o.quiet { Quiet::start(host) } else { None };
    let ran = job::in_child(|| {
        Ok(match run(&rt, request) {
            Ok(code) => code,
            Err(e) => {
                let code = e.exit_code();
                eprintln!("Error: {}", crate::cli::error_line(&anyhow::Error::new(e)));
                code
            }
        })
    });
    let failed = !matches!(ran, Ok(0));
    if let Some(q) = quiet {
        q.end(failed);
    }
    let containers = Containers::new(host.store.root());
    let record = containers.find(&name).ok();
    let result = match (ran, &record) {
        (Err(e), _) => Err(BuildError::Run {
            step: step.argv.join(" "),
            source: e,
        }),
        (Ok(0), Some(r)) => snapshot(
            host,
            (o.timestamp, o.format),
            &st.lowers(host.store),
            (&containers.dir_of(&r.id), r.driver),
            &exclude,
        ),
        (Ok(0), None) => Err(BuildError::Io {
            what: "the step's container record went missing".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
        (Ok(code), _) => Err(BuildError::Failed {
            command: step.argv.join(" "),
            code,
        }),
    };
    if let Some(r) = record {
        let _ = crate::container::lifecycle::remove(
            &containers,
            &r,
            true,
            (host.runtime, host.mapping),
        );
    }
    result
}

/// The difference the container made, as a layer in the store.
pub fn snapshot(
    host: &Host<'_>,
    how: (Option<i64>, super::commit::Format),
    lowers: &[PathBuf],
    (dir, rung): (&Path, Option<Rung>),
    exclude: &[PathBuf],
) -> Result<Option<LayerRef>, BuildError> {
    Ok(job::in_store(host.mapping, || {
        let below =
            layer::Layered::new(lowers).map_err(|e| format!("cannot read the layers: {e}"))?;
        let entries = match rung {
            Some(Rung::Copy) => layer::diff_tree(&dir.join("rootfs"), &below, exclude),
            _ => layer::diff_upper(&dir.join("upper"), &below, exclude),
        }
        .map_err(|e| format!("cannot read what the step changed: {e}"))?;
        super::copy::write_layer(host, how, &entries)
    })?)
}

/// `-q`: a step's output goes to a file, shown only when the step fails.
struct Quiet {
    saved: (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    path: PathBuf,
}

impl Quiet {
    fn start(host: &Host<'_>) -> Option<Quiet> {
        let path = host.store.tmp_path("step-output");
        let file = std::fs::File::create(&path).ok()?;
        let out = nix::unistd::dup(std::io::stdout()).ok()?;
        let err = nix::unistd::dup(std::io::stderr()).ok()?;
        nix::unistd::dup2_stdout(&file).ok()?;
        nix::unistd::dup2_stderr(&file).ok()?;
        Some(Quiet {
            saved: (out, err),
            path,
        })
    }

    fn end(self, show: bool) {
        let _ = nix::unistd::dup2_stdout(&self.saved.0);
        let _ = nix::unistd::dup2_stderr(&self.saved.1);
        if show && let Ok(text) = std::fs::read(&self.path) {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &text);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
