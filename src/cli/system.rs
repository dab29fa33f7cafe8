//! `nook system`: maintenance of nook's own state.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Session;
use crate::sys::confined::remove_tree;
use crate::sys::idmap::Mapping;

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove every image, layer and container record: the store starts afresh.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn dispatch(session: &mut Session, c: SystemCommand) -> Result<i32> {
    match c {
        SystemCommand::Reset(a) => reset(session, a),
    }
}

fn reset(session: &mut Session, a: ResetArgs) -> Result<i32> {
    if !a.force {
        bail!(
            "this removes everything in {}: add -f to go ahead",
            session.root.display()
        );
    }
    // Located before a user namespace is entered: the fallback's name holds our uid.
    let runtime = crate::config::runtime_dir()?;
    if !session.root.exists() {
        return remove_runtime(&runtime);
    }
    // Files owned by the subordinate range can only be removed from inside its namespace.
    if let Mapping::Range {
        helpers,
        uids,
        gids,
    } = &session.mapping
    {
        crate::sys::userns::enter(uids, gids, Some(helpers))
            .context("cannot enter the store's user namespace")?;
    }
    remove_tree(&session.root)
        .with_context(|| format!("cannot remove {}", session.root.display()))?;
    println!("Removed {}", session.root.display());
    remove_runtime(&runtime)
}

/// Removes the runtime directory: every container's mount point and generated files, and
/// the probes cached there.
fn remove_runtime(runtime: &std::path::Path) -> Result<i32> {
    remove_tree(runtime).with_context(|| format!("cannot remove {}", runtime.display()))?;
    Ok(0)
}
