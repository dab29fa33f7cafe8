//! `nook push`: an image from the store to a registry (or, with a podman-style transport
//! prefix, to an archive).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::Session;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Verify the registry's TLS certificate (--tls-verify=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Manifest format at the destination: oci or v2s2 (docker schema 2); default: as stored.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Recompress layers: gzip or zstd; default: as stored (uncompressed layers get gzip).
    #[arg(long, value_name = "ALGORITHM")]
    pub compression_format: Option<String>,
    /// Push every local tag of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the pushed manifest's digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Image to push (name, name:tag or id).
    pub image: String,
    /// Where to push it: a reference, `docker://REF`, `oci-archive:PATH[:REF]`,
    /// `docker-archive:PATH[:REF]` or `oci:DIR[:REF]`; default IMAGE.
    pub dest: Option<String>,
}

pub fn push(_session: &mut Session, _a: PushArgs) -> Result<i32> {
    bail!("nook push: not built yet")
}
