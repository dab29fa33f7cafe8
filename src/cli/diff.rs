//! `nook diff CONTAINER`: the files and directories a container added (`A`), changed (`C`) and
//! deleted (`D`) against its image, one per line in path order, as `docker diff` prints them.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::Session;
use crate::build::layer::container_changes;
use crate::container::Containers;

/// How the changes are printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DiffFormat {
    /// `KIND /path` lines.
    Table,
    /// The Engine API's list: `[{"Path": "/path", "Kind": 0|1|2}]` (0 changed, 1 added,
    /// 2 deleted).
    Json,
}

/// `nook diff` (docker's and podman's `diff` of a container).
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: DiffFormat,
    pub container: String,
}

/// Prints the changes of a container, stopped or running, against its image.
pub fn diff(session: &Session, a: DiffArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let record = Containers::new(store.root()).get(&a.container)?;
    let changes = container_changes(&store, &session.mapping, &record)
        .with_context(|| format!("listing the changes of {}", a.container))?;
    let mut out = std::io::stdout().lock();
    match a.format {
        DiffFormat::Table => {
            for c in &changes {
                writeln!(out, "{} {}", c.kind.letter(), c.path)?;
            }
        }
        DiffFormat::Json => writeln!(out, "{}", serde_json::to_string(&changes)?)?,
    }
    out.flush()?;
    Ok(0)
}
