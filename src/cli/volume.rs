//! `nook volume`: create, ls, inspect, rm and prune of named volumes.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use super::Session;
use super::format::print_table;
use crate::container::Containers;
use crate::container::logs;

fn containers(session: &Session) -> Containers {
    Containers::new(&session.root)
}

/// Every container's volumes, for the in-use check.
pub(super) fn volume_users(
    c: &Containers,
) -> Vec<(String, Vec<crate::container::volumes::VolumeUse>)> {
    c.list().into_iter().map(|r| (r.name, r.volumes)).collect()
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a generated name without NAME).
    Create { name: Option<String> },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker's scripts: a volume in use is never removed.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        #[arg(short, long)]
        force: bool,
        /// Named volumes too (default: anonymous ones only, as docker).
        #[arg(short, long)]
        all: bool,
    },
}

fn volume_json(
    vols: &crate::container::volumes::Volumes,
    v: &crate::container::volumes::VolumeInfo,
) -> serde_json::Value {
    serde_json::json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": vols.data(&v.name),
        "CreatedAt": logs::rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_secs(v.created)),
        "Scope": "local",
        "Labels": {},
        "Options": {},
        "Anonymous": v.anonymous,
    })
}

pub fn volume(session: &Session, cmd: VolumeCommand) -> Result<i32> {
    use crate::container::volumes::Volumes;
    let vols = Volumes::new(&session.root);
    let c = containers(session);
    match cmd {
        VolumeCommand::Create { name } => {
            let v = vols.create(name.as_deref().unwrap_or(""), false)?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls { quiet } => {
            let list = vols.list();
            if quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| vec!["local".to_owned(), v.name.clone()])
                    .collect();
                print_table(&["DRIVER", "VOLUME NAME"], &rows);
            }
            Ok(0)
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &names {
                match vols.get(n) {
                    Ok(v) => out.push(volume_json(&vols, &v)),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(code)
        }
        VolumeCommand::Rm { names, .. } => {
            let users = volume_users(&c);
            Ok(super::lifecycle::each(&names, |n| {
                vols.remove(n, &users, &session.mapping)?;
                Ok(())
            }))
        }
        VolumeCommand::Prune { all, .. } => {
            let users = volume_users(&c);
            println!("Deleted Volumes:");
            for v in vols.list() {
                if (all || v.anonymous) && vols.remove(&v.name, &users, &session.mapping).is_ok() {
                    println!("{}", v.name);
                }
            }
            Ok(0)
        }
    }
}
