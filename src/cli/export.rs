//! `nook export` (a container's filesystem as one tar) and `nook import` (a tar as an image).

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::Session;
use super::build::{FormatArg, offline_host, tag_of};
use crate::build::commit::Format;
use crate::build::export::{container_layers, export as export_tree};
use crate::build::import::{ImportRequest, ImportSource, import as import_tar};
use crate::registry::platform::Platform;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// A commit message for the image's history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Platform recorded in the config (os/arch[/variant]); default the host's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Image format: oci or docker.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: FormatArg,
    /// A tar file (plain, gzip, bzip2, xz or zstd), an http(s) URL, or - for stdin.
    pub source: String,
    /// Name for the new image.
    pub image: Option<String>,
}

pub fn export(session: &Session, a: ExportArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let containers = crate::container::Containers::new(store.root());
    let record = containers.find(&a.container)?;
    let layers = container_layers(&store, &record)?;
    let out = match &a.output {
        Some(p) => File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal: give -o FILE or redirect stdout");
            }
            File::from(std::io::stdout().as_fd().try_clone_to_owned()?)
        }
    };
    let done = export_tree(&session.mapping, &layers, &out);
    if let (Err(_), Some(p)) = (&done, &a.output) {
        let _ = std::fs::remove_file(p);
    }
    done.with_context(|| format!("exporting {}", a.container))?;
    Ok(0)
}

pub fn import(session: &mut Session, a: ImportArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let runtime = crate::config::runtime_dir()?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}"))?,
        None => Platform::host(),
    };
    let tags = match &a.image {
        Some(t) => vec![tag_of(t)?],
        None => vec![],
    };
    let host = offline_host(&store, &session.mapping, &runtime);
    let req = ImportRequest {
        source: ImportSource::parse(&a.source),
        changes: a.change.clone(),
        message: a.message.clone(),
        platform,
        format: match a.format {
            FormatArg::Oci => Format::Oci,
            FormatArg::Docker => Format::Docker,
        },
        tags,
    };
    let rec = import_tar(&host, &req).with_context(|| format!("importing {}", a.source))?;
    let id = rec.id.to_string();
    crate::events::image(
        store.root(),
        "import",
        &id,
        req.tags.first().map(String::as_str),
    );
    println!("{}", rec.id);
    Ok(0)
}
