//! `nook export` (a container's filesystem as one tar) and `nook import` (a tar as an image).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::Session;

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
    /// A tar file (plain, gzip, bzip2, xz or zstd), an http(s) URL, or - for stdin.
    pub source: String,
    /// Name for the new image.
    pub image: Option<String>,
}

pub fn export(_session: &Session, _a: ExportArgs) -> Result<i32> {
    bail!("nook export: not built yet")
}

pub fn import(_session: &mut Session, _a: ImportArgs) -> Result<i32> {
    bail!("nook import: not built yet")
}
