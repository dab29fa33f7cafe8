//! Image commands: pull, images, inspect, rmi, tag, image prune.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::Session;
use super::format::{human_age, human_size, parse_rfc3339, print_table};
use super::progress::{Progress, ProgressMode};
use crate::container::{Containers, lifecycle};
use crate::pull::Puller;
use crate::reference::Reference;
use crate::registry::platform::Platform;
use crate::store::{ImageRecord, InUse, Removal, Store};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Platform to pull (os/arch[/variant]) instead of the host's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Verify the registry's TLS certificate (--tls-verify=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Pull every tag of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Image reference (docker.io/library/busybox:latest, localhost:5000/x@sha256:...).
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table (default) or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show all images (accepted for docker compatibility; nook keeps no intermediate images).
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove images with several tags, or used by containers.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only untagged ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    Pull(PullArgs),
    #[command(alias = "list")]
    Ls(ImagesArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmiArgs),
    Tag(TagArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Upload an image to a registry.
    Push(super::push::PushArgs),
    /// Write images to an archive.
    Save(super::archive::SaveArgs),
    /// Read images from an archive.
    Load(super::archive::LoadArgs),
    /// Make an image of a filesystem tar archive.
    Import(super::export::ImportArgs),
}

pub fn dispatch(session: &mut Session, c: ImageCommand) -> Result<i32> {
    match c {
        ImageCommand::Pull(a) => pull(session, a),
        ImageCommand::Ls(a) => images(session, a),
        ImageCommand::Inspect(a) => inspect(session, a),
        ImageCommand::Rm(a) => rmi(session, a),
        ImageCommand::Tag(a) => tag(session, a),
        ImageCommand::Prune(a) => prune(session, a),
        ImageCommand::Push(a) => super::push::push(session, a),
        ImageCommand::Save(a) => super::archive::save(session, a),
        ImageCommand::Load(a) => super::archive::load(session, a),
        ImageCommand::Import(a) => super::export::import(session, a),
    }
}

pub fn pull(session: &mut Session, a: PullArgs) -> Result<i32> {
    let reference = Reference::parse(&a.image)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let (store, owners) = session.writable_store()?;
    let registry = session.registry(a.tls_verify);
    let progress = Progress::new(ProgressMode::choose(a.quiet));
    let puller = Puller {
        registry: &registry,
        store: &store,
        owners,
        platform,
        platform_given: a.platform.is_some(),
        progress: &progress,
    };
    let references = if a.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            bail!("--all-tags takes a repository name without a tag or digest");
        }
        let ep = registry
            .endpoints(&reference)
            .pop()
            .context("no endpoint")?;
        let tags = registry.list_tags(&ep, reference.path())?;
        tags.iter()
            .map(|t| Reference::parse(&format!("{}:{t}", reference.repository())))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![reference]
    };
    for r in &references {
        let pulled = puller
            .pull(r)
            .with_context(|| format!("pulling {}", r.familiar_repository()))?;
        if a.quiet {
            println!("{}", pulled.record.id);
            continue;
        }
        progress.say(&format!("Digest: {}", pulled.digest));
        let name = format!("{}:{}", r.familiar_repository(), r.tag_or_latest());
        let name = if r.digest().is_some() {
            format!("{}@{}", r.familiar_repository(), pulled.digest)
        } else {
            name
        };
        if pulled.fresh {
            progress.say(&format!("Status: Downloaded newer image for {name}"));
        } else {
            progress.say(&format!("Status: Image is up to date for {name}"));
        }
        match r.digest() {
            Some(d) => println!("{}@{d}", r.repository()),
            None => println!("{}:{}", r.repository(), r.tag_or_latest()),
        }
    }
    Ok(0)
}

/// Rows of `nook images`: one per tag, one `<none>` row for an untagged image.
/// One row per tag: the image, its repository and tag, and whether it is in a read-only
/// shared store (after the own store's images).
type Row = (ImageRecord, String, String, bool);

fn image_rows(store: &Store) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let own = store.images()?.into_iter().map(|i| (i, false));
    for ((rec, tags), ro) in own.chain(store.shared_images()?.into_iter().map(|i| (i, true))) {
        if tags.is_empty() {
            rows.push((rec, "<none>".to_owned(), "<none>".to_owned(), ro));
            continue;
        }
        for t in tags {
            let (repo, tag) = split_tag(&t);
            rows.push((rec.clone(), repo, tag, ro));
        }
    }
    Ok(rows)
}

pub(super) fn split_tag(tag: &str) -> (String, String) {
    match Reference::parse(tag) {
        Ok(r) => (r.familiar_repository(), r.tag_or_latest().to_owned()),
        Err(_) => (tag.to_owned(), String::new()),
    }
}

pub fn images(session: &Session, a: ImagesArgs) -> Result<i32> {
    let rows = match session.readable_store()? {
        Some(store) => image_rows(&store)?,
        None => Vec::new(),
    };
    let created = |r: &ImageRecord| r.created.as_deref().and_then(parse_rfc3339);
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for (rec, _, _, _) in &rows {
            if seen.insert(rec.id.clone()) {
                println!(
                    "{}",
                    if a.no_trunc {
                        rec.id.to_string()
                    } else {
                        rec.id.short().to_owned()
                    }
                );
            }
        }
        return Ok(0);
    }
    match a.format.as_str() {
        "json" => {
            for (rec, repo, tag, ro) in &rows {
                let c = created(rec);
                let line = json!({
                    "Repository": repo,
                    "Tag": tag,
                    "ID": if a.no_trunc { rec.id.to_string() } else { rec.id.short().to_owned() },
                    "Digest": rec.repo_digests.first().and_then(|d| d.split('@').nth(1)).unwrap_or("<none>"),
                    "CreatedAt": rec.created.clone().unwrap_or_default(),
                    "CreatedSince": c.map(human_age).unwrap_or_else(|| "N/A".into()),
                    "Size": human_size(rec.size),
                    "VirtualSize": rec.size,
                    "Platform": rec.platform.to_string(),
                    "ReadOnly": ro,
                });
                println!("{line}");
            }
        }
        "table" | "" => {
            // podman's R/O column, where a shared store holds some of the images.
            let any_ro = rows.iter().any(|r| r.3);
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(rec, repo, tag, ro)| {
                    let mut row = vec![
                        repo.clone(),
                        tag.clone(),
                        if a.no_trunc {
                            rec.id.to_string()
                        } else {
                            rec.id.short().to_owned()
                        },
                        created(rec).map(human_age).unwrap_or_else(|| "N/A".into()),
                        human_size(rec.size),
                    ];
                    if any_ro {
                        row.push(ro.to_string());
                    }
                    row
                })
                .collect();
            let mut head = vec!["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
            if any_ro {
                head.push("R/O");
            }
            print_table(&head, &table);
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(0)
}

pub fn inspect(session: &Session, a: InspectArgs) -> Result<i32> {
    let store = session.readable_store()?;
    let mut out = Vec::new();
    let mut code = 0;
    let containers = crate::container::Containers::new(&session.root);
    for q in &a.images {
        // A container's name or id first, as docker does.
        if let Ok(r) = containers.get(q) {
            out.push(super::lifecycle::inspect_json(&containers, &r));
            continue;
        }
        let found = store.as_ref().map(|s| s.find_image(q));
        match found {
            Some(Ok(rec)) => {
                let s = store.as_ref().context("store vanished")?;
                out.push(inspect_json(s, &rec)?);
            }
            Some(Err(e)) => {
                eprintln!("Error: {e}");
                code = 1;
            }
            None => {
                eprintln!("Error: no such image: {q}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

fn inspect_json(store: &Store, rec: &ImageRecord) -> Result<serde_json::Value> {
    let config_bytes = store.read_blob(&rec.id, 8 << 20)?;
    let config: serde_json::Value =
        serde_json::from_slice(&config_bytes).context("image config")?;
    let tags: Vec<String> = store
        .images()?
        .into_iter()
        .find(|(r, _)| r.id == rec.id)
        .map(|(_, t)| t)
        .unwrap_or_default();
    Ok(json!({
        "Id": rec.id.to_string(),
        "Digest": rec.repo_digests.first().and_then(|d| d.split('@').nth(1)).map(str::to_owned)
            .unwrap_or_else(|| rec.manifest_digest.to_string()),
        "ManifestDigest": rec.manifest_digest.to_string(),
        "ManifestMediaType": rec.manifest_media_type,
        "IndexDigest": rec.index_digest.as_ref().map(ToString::to_string),
        "RepoTags": tags,
        "RepoDigests": rec.repo_digests,
        "Created": rec.created,
        "Platform": rec.platform.to_string(),
        "Os": rec.platform.os,
        "Architecture": rec.platform.architecture,
        "Variant": rec.platform.variant,
        "Size": rec.size,
        "Config": config.get("config").cloned().unwrap_or(serde_json::Value::Null),
        "RootFS": {
            "Type": "layers",
            "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "Layers": rec.layers.iter().map(|l| json!({
            "Digest": l.digest.to_string(),
            "DiffID": l.diff_id.to_string(),
            "Size": l.size,
            "MediaType": l.media_type,
        })).collect::<Vec<_>>(),
    }))
}

fn print_removals(removals: &[Removal]) {
    for r in removals {
        match r {
            Removal::Untagged(t) => {
                let (repo, tag) = split_tag(t);
                println!("Untagged: {repo}:{tag}");
            }
            Removal::Deleted(id) => println!("Deleted: {id}"),
        }
    }
}

pub fn rmi(session: &mut Session, a: RmiArgs) -> Result<i32> {
    let (store, _) = session.writable_store()?;
    let in_use = images_in_use(&store);
    let mut code = 0;
    for q in &a.images {
        match store.remove_image(q, a.force, &in_use) {
            Ok(r) => print_removals(&r),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    store.gc()?;
    Ok(code)
}

pub fn tag(session: &mut Session, a: TagArgs) -> Result<i32> {
    let (store, _) = session.writable_store()?;
    let target = Reference::parse(&a.target)?;
    store.tag(&a.source, &target)?;
    Ok(0)
}

/// The container records are the container module's: the store is told what they use.
fn images_in_use(store: &Store) -> InUse {
    lifecycle::images_in_use(&Containers::new(store.root()).list())
}

fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not a terminal, so nook cannot ask: add -f to go ahead");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn prune(session: &mut Session, a: PruneArgs) -> Result<i32> {
    let what = if a.all {
        "all images without at least one container"
    } else {
        "all dangling images"
    };
    if !a.force
        && !confirm(&format!(
            "WARNING! This will remove {what}.\nAre you sure you want to continue?"
        ))?
    {
        return Ok(0);
    }
    let (store, _) = session.writable_store()?;
    let removed = store.prune(a.all, &images_in_use(&store))?;
    let freed = store.gc()?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for r in &removed {
            match r {
                Removal::Untagged(t) => println!("untagged: {t}"),
                Removal::Deleted(id) => println!("deleted: {id}"),
            }
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed.bytes));
    Ok(0)
}
