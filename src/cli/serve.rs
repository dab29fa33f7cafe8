//! `nook serve`: docker's Engine API on UNIX sockets (see [`crate::api`]).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Session;
use crate::api::{Engine, server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: unix:///PATH (default $XDG_RUNTIME_DIR/nook/nook.sock). Repeatable.
    #[arg(short = 'H', long = "host", value_name = "unix:///PATH")]
    pub hosts: Vec<String>,
}

/// The socket path of a `-H` value.
fn socket_path(host: &str) -> Result<PathBuf> {
    if let Some(p) = host.strip_prefix("unix://") {
        if !p.starts_with('/') {
            bail!("-H {host}: give an absolute path, as unix:///run/user/1000/nook.sock");
        }
        return Ok(PathBuf::from(p));
    }
    if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    bail!(
        "-H {host}: only unix:///PATH sockets are served so far (TCP with TLS comes later, issue 14)"
    )
}

pub fn serve(session: &Session, a: ServeArgs) -> Result<i32> {
    let paths: Vec<PathBuf> = if a.hosts.is_empty() {
        vec![crate::config::runtime_dir()?.join("nook.sock")]
    } else {
        a.hosts
            .iter()
            .map(|h| socket_path(h))
            .collect::<Result<_>>()?
    };
    let mut listeners = Vec::new();
    for p in &paths {
        listeners.push(server::bind(p)?);
        tracing::info!("listening on unix://{}", p.display());
    }
    let engine = Engine {
        root: session.root.clone(),
        exe: PathBuf::from("/proc/self/exe"),
        single_id: matches!(session.mapping, crate::sys::idmap::Mapping::Single { .. }),
        execs: Default::default(),
    };
    server::serve(engine, listeners, paths).context("nook serve")?;
    Ok(0)
}
