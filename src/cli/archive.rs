//! `nook save` and `nook load`: images to and from docker and OCI archives.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::Session;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file (or directory, for oci-dir) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// docker-archive (default), oci-archive or oci-dir.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    /// Images to save (names, name:tag or ids); all their named tags go in.
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn save(_session: &Session, _a: SaveArgs) -> Result<i32> {
    bail!("nook save: not built yet")
}

pub fn load(_session: &mut Session, _a: LoadArgs) -> Result<i32> {
    bail!("nook load: not built yet")
}
