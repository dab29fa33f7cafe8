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
    /// Connect standard input and output to the local `nook serve` socket (what ssh:// runs).
    DialStdio(super::context::DialStdioArgs),
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
        SystemCommand::DialStdio(a) => super::context::dial_stdio(a),
    }
}

fn reset(session: &mut Session, a: ResetArgs) -> Result<i32> {
    if !a.force {
        bail!(
            "this removes everything in {}: add -f to go ahead",
            session.root.display()
        );
    }
    if !session.root.exists() {
        return Ok(0);
    }
    // Found before a user namespace is entered: the fallback's name holds our uid. Other
    // stores' containers share the runtime directory: only this store's go.
    let runtime = crate::config::runtime_dir()?;
    let ids = crate::container::Containers::new(&session.root).ids();
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
    for id in ids {
        // Mount points and generated /etc files, owned by the user.
        let dir = crate::container::lifecycle::runtime_dir_of(&runtime, &id);
        match remove_tree(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", dir.display()));
            }
            _ => {}
        }
    }
    println!("Removed {}", session.root.display());
    Ok(0)
}
