//! `nook build`, `nook commit` and `nook builder prune`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::Session;
use super::run_config::DriverArg;
use crate::build::commit::Format;
use crate::build::context::{Context, DockerfileText};
use crate::build::{Host, Options};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store, StoreError};
use crate::sys::idmap::Mapping;
use crate::unpack::Owners;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// OCI image manifest and config.
    Oci,
    /// Docker's schema 2 (keeps HEALTHCHECK, SHELL and ONBUILD for older tools).
    Docker,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Dockerfile (default CONTEXT/Dockerfile, else CONTEXT/Containerfile); `-` reads it
    /// from standard input.
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Name and tag the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// A build argument: NAME=VALUE, or NAME to take it from the environment.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Do not use the cache (RUN cache mounts are kept).
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when the store has them (`--pull`, or `--pull=always|missing`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = pull_value)]
    pub pull: Option<bool>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image id to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Set a label on the image (KEY=VALUE, repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Platform of the base images (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Network of RUN steps: default, none or host.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Image format.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: FormatArg,
    /// Set every time in the image to this many seconds since the epoch (reproducible
    /// builds; SOURCE_DATE_EPOCH does the same).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// How RUN steps get their root filesystem.
    #[arg(long = "rootfs-driver", value_enum, default_value = "auto")]
    pub driver: DriverArg,
    /// Accepted for docker compatibility (intermediate containers are always removed).
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub rm: Option<bool>,
    #[arg(long = "force-rm", hide = true)]
    pub force_rm: bool,
    /// A directory, or `-` for a tar archive on standard input.
    pub context: String,
}

fn pull_value(s: &str) -> Result<bool, String> {
    match s {
        "true" | "always" | "newer" => Ok(true),
        "false" | "missing" | "never" => Ok(false),
        o => Err(format!(
            "invalid --pull value {o:?}: expected true, false, always or missing"
        )),
    }
}

/// `K=V` → the pair; `K` alone → the environment's value, or nothing.
fn build_args(list: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

fn labels(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            None if !l.is_empty() => Ok((l.clone(), String::new())),
            _ => bail!("invalid --label {l:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// `--secret id=ID,src=PATH|env=VAR` → id and file (an env secret is written to `tmp`).
fn secrets(list: &[String], tmp: &std::path::Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in list {
        let (mut id, mut src, mut env) = (None, None, None);
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid --secret {s:?}: expected id=ID,src=PATH or id=ID,env=VAR"),
            }
        }
        let id = id
            .or_else(|| {
                src.as_ref()
                    .and_then(|p| p.file_name()?.to_str().map(str::to_owned))
            })
            .with_context(|| format!("invalid --secret {s:?}: no id"))?;
        let path = match (src, env) {
            (Some(p), _) => {
                std::fs::metadata(&p)
                    .with_context(|| format!("secret {id}: cannot read {}", p.display()))?;
                std::fs::canonicalize(&p)?
            }
            (None, Some(var)) => {
                let value = std::env::var(&var)
                    .with_context(|| format!("secret {id}: ${var} is not set"))?;
                std::fs::create_dir_all(tmp)?;
                let p = tmp.join(format!("secret-{id}"));
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&p)?;
                std::io::Write::write_all(&mut f, value.as_bytes())?;
                p
            }
            (None, None) => bail!("invalid --secret {s:?}: give src=PATH or env=VAR"),
        };
        out.insert(id, path);
    }
    Ok(out)
}

fn network(s: &str) -> Result<crate::net::Mode> {
    Ok(match s {
        "default" | "" | "bridge" | "private" => crate::net::Mode::Default,
        "none" => crate::net::Mode::None,
        "host" => crate::net::Mode::Host,
        o => bail!("invalid --network {o:?}: expected default, none or host"),
    })
}

/// A host for work that needs no base image (commit, import): asking for one is an error.
pub(super) fn offline_host<'a>(
    store: &'a Store,
    mapping: &'a Mapping,
    runtime: &'a std::path::Path,
) -> Host<'a> {
    fn no_pulls(name: &str, _: Option<&str>, _: bool) -> Result<ImageRecord, String> {
        Err(format!("{name}: no image is pulled here"))
    }
    Host {
        store,
        mapping,
        runtime,
        owners: owners(mapping),
        image: &no_pulls,
    }
}

fn owners(mapping: &Mapping) -> Owners {
    match mapping {
        Mapping::Single { .. } => Owners::Record,
        m => Owners::Keep { max_id: m.max_id() },
    }
}

/// Normalised `repository:tag` of a `-t` value.
pub(super) fn tag_of(t: &str) -> Result<String> {
    let r = Reference::parse(t).with_context(|| format!("invalid tag {t:?}"))?;
    r.tagged()
        .with_context(|| format!("invalid tag {t:?}: a tag cannot have a digest"))
}

fn shown_tag(t: &str) -> String {
    let last = t.rsplit('/').next().unwrap_or(t);
    if last.contains(':') {
        t.to_owned()
    } else {
        format!("{t}:latest")
    }
}

/// Finds an image, pulling it in a separate nook process when missing (or always).
fn find_or_pull(
    store: &Store,
    name: &str,
    always: bool,
    platform: Option<&str>,
) -> Result<ImageRecord, String> {
    let wanted = platform.and_then(|p| crate::registry::platform::Platform::parse(p).ok());
    let fits = |rec: &ImageRecord| {
        wanted
            .as_ref()
            .is_none_or(|w| w.os == rec.platform.os && w.architecture == rec.platform.architecture)
    };
    match store.find_image(name) {
        Ok(rec) if !always && fits(&rec) => return Ok(rec),
        Ok(_) | Err(StoreError::NoSuchImage(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    super::container::pull(name, platform).map_err(|e| super::error_line(&e))?;
    store.find_image(name).map_err(|e| e.to_string())
}

/// The Dockerfile and context the arguments name.
fn open_context(a: &BuildArgs, scratch: &std::path::Path) -> Result<(Context, DockerfileText)> {
    let stdin_file = a.file.as_deref() == Some("-");
    if a.context == "-" {
        if stdin_file {
            bail!("-f - and a context on standard input cannot both read it");
        }
        std::fs::create_dir_all(scratch)?;
        return Ok(Context::from_tar(
            std::io::stdin().lock(),
            scratch,
            a.file.as_deref(),
        )?);
    }
    let text = if stdin_file {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the Dockerfile from standard input")?;
        Some(s)
    } else {
        None
    };
    let file = a.file.as_deref().filter(|f| *f != "-").map(PathBuf::from);
    Ok(Context::from_dir(
        std::path::Path::new(&a.context),
        file.as_deref(),
        text,
    )?)
}

pub fn build(session: &Session, a: BuildArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let runtime = crate::config::runtime_dir()?;
    let scratch = store.tmp_path("build-context");
    // Secrets given as environment variables go to files of their own, never into the
    // context (a context from standard input is unpacked into `scratch`).
    let secrets_dir = store.tmp_path("build-secrets");
    let result = build_in(session, &store, &runtime, &a, (&scratch, &secrets_dir));
    for d in [&scratch, &secrets_dir] {
        if d.exists() {
            let _ = crate::sys::confined::remove_tree(d);
        }
    }
    result
}

fn build_in(
    session: &Session,
    store: &Store,
    runtime: &std::path::Path,
    a: &BuildArgs,
    (scratch, secrets_dir): (&std::path::Path, &std::path::Path),
) -> Result<i32> {
    let (ctx, text) = open_context(a, scratch)?;
    let timestamp = match a.timestamp {
        Some(t) => Some(t),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => Some(v.parse().context("SOURCE_DATE_EPOCH is not a number")?),
            _ => None,
        },
    };
    let opts = Options {
        tags: a.tags.iter().map(|t| tag_of(t)).collect::<Result<_>>()?,
        target: a.target.clone(),
        build_args: build_args(&a.build_args),
        no_cache: a.no_cache,
        pull: a.pull.unwrap_or(false),
        quiet: a.quiet,
        labels: labels(&a.labels)?,
        platform: a.platform.clone(),
        network: network(&a.network)?,
        secrets: secrets(&a.secrets, secrets_dir)?,
        format: match a.format {
            FormatArg::Oci => Format::Oci,
            FormatArg::Docker => Format::Docker,
        },
        timestamp,
        driver: a.driver.into(),
    };
    let platform = a.platform.clone();
    let image = |name: &str, stage_platform: Option<&str>, always: bool| {
        find_or_pull(store, name, always, stage_platform.or(platform.as_deref()))
    };
    let host = Host {
        store,
        mapping: &session.mapping,
        runtime,
        owners: owners(&session.mapping),
        image: &image,
    };
    match crate::build::build(&host, &opts, &ctx, &text) {
        Ok(built) => {
            let id = built.image.id.to_string();
            if let Some(f) = &a.iidfile {
                std::fs::write(f, &id).with_context(|| format!("cannot write {}", f.display()))?;
            }
            if a.quiet {
                println!("{id}");
            } else {
                println!("Successfully built {}", built.image.id.short());
                for t in &a.tags {
                    println!("Successfully tagged {}", shown_tag(t));
                }
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("Error: {}", super::error_line(&anyhow::Error::new(e)));
            Ok(1)
        }
    }
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL; repeatable).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message (the history entry's comment).
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// Author.
    #[arg(short = 'a', long = "author")]
    pub author: Option<String>,
    /// Accepted for docker compatibility: the container is read as it is.
    #[arg(short = 'p', long = "pause", hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub pause: Option<bool>,
    /// Image format.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: FormatArg,
    pub container: String,
    pub image: Option<String>,
}

pub fn commit(session: &Session, a: CommitArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let runtime = crate::config::runtime_dir()?;
    let containers = crate::container::Containers::new(store.root());
    let record = containers.find(&a.container)?;
    let tags = match &a.image {
        Some(t) => vec![tag_of(t)?],
        None => vec![],
    };
    let format = match a.format {
        FormatArg::Oci => Format::Oci,
        FormatArg::Docker => Format::Docker,
    };
    let host = offline_host(&store, &session.mapping, &runtime);
    let req = crate::build::commit_container::CommitRequest {
        changes: a.changes.clone(),
        message: a.message.clone(),
        author: a.author.clone(),
        format,
        tags,
    };
    let rec = crate::build::commit_container::commit(&host, &record, &req)?;
    let id = rec.id.to_string();
    containers.event("commit", &record, &[("imageID", &id)]);
    println!("{}", rec.id);
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache (step results and RUN cache mounts).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Accepted for docker compatibility: all of the cache is removed.
    #[arg(short, long)]
    pub all: bool,
}

pub fn builder(session: &Session, c: BuilderCommand) -> Result<i32> {
    let BuilderCommand::Prune(_) = c;
    let Some(store) = session.readable_store()? else {
        println!("Total:\t0 build cache entries");
        return Ok(0);
    };
    let cache = crate::build::cache::Cache::new(&store);
    let n = cache.prune(false)?;
    let mounts = store.root().join("builder").join("mounts");
    if mounts.exists() {
        crate::container::lifecycle::remove_tree(&mounts, &session.mapping)
            .with_context(|| format!("cannot remove {}", mounts.display()))?;
    }
    println!("Deleted build cache objects: {n}");
    Ok(0)
}
