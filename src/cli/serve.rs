//! `nook serve`: docker's Engine API on UNIX sockets and TCP (see [`crate::api`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Session;
use crate::api::tcp::{self, Host, TcpFlags, TcpMode};
use crate::api::{Engine, server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: unix:///PATH (default $XDG_RUNTIME_DIR/nook/nook.sock), or
    /// tcp://ADDR:PORT with --tlsverify (or --insecure-tcp on loopback). Repeatable.
    #[arg(
        short = 'H',
        long = "host",
        value_name = "unix:///PATH|tcp://ADDR:PORT"
    )]
    pub hosts: Vec<String>,
    /// TCP with mutual TLS: clients must present a certificate signed by --tlscacert.
    #[arg(long)]
    pub tlsverify: bool,
    /// docker's TLS without client certificates: refused (TCP needs --tlsverify).
    #[arg(long, hide = true)]
    pub tls: bool,
    /// The CA (PEM) whose signature a client certificate must bear.
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// The server's certificate (PEM, its chain after it).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Plain TCP without TLS, on a loopback address only: every local user can drive it.
    #[arg(long)]
    pub insecure_tcp: bool,
}

impl ServeArgs {
    fn tcp_flags(&self) -> TcpFlags {
        TcpFlags {
            tlsverify: self.tlsverify,
            tls: self.tls,
            insecure: self.insecure_tcp,
            ca: self.tlscacert.clone(),
            cert: self.tlscert.clone(),
            key: self.tlskey.clone(),
        }
    }
}

/// Binds a TCP door (port 0: any free one) and says where it listens, and how kept.
fn tcp_door(ip: IpAddr, port: Option<u16>, mode: &TcpMode) -> Result<server::Listener> {
    let addr = SocketAddr::new(ip, port.unwrap_or(mode.default_port()));
    let door = tcp::bind(addr, mode)?;
    let bound = door.listener.local_addr().unwrap_or(addr);
    match mode {
        TcpMode::Mutual { .. } => {
            tracing::info!("listening on tcp://{bound} (TLS, client certificates required)")
        }
        TcpMode::Insecure => tracing::warn!(
            "listening on tcp://{bound} without TLS (--insecure-tcp): any local user can drive this engine"
        ),
    }
    Ok(server::Listener::Tcp(door))
}

pub fn serve(session: &Session, a: ServeArgs) -> Result<i32> {
    let hosts: Vec<Host> = if a.hosts.is_empty() {
        vec![Host::Unix(crate::config::runtime_dir()?.join("nook.sock"))]
    } else {
        a.hosts
            .iter()
            .map(|h| tcp::parse_host(h))
            .collect::<Result<_, _>>()?
    };
    let ips: Vec<IpAddr> = hosts
        .iter()
        .filter_map(|h| match h {
            Host::Tcp(ip, _) => Some(*ip),
            Host::Unix(_) => None,
        })
        .collect();
    let mode = tcp::tcp_mode(&a.tcp_flags(), &ips)?;
    let (mut listeners, mut paths) = (Vec::new(), Vec::new());
    for h in hosts {
        match (h, &mode) {
            (Host::Unix(p), _) => {
                listeners.push(server::Listener::Unix(server::bind(&p)?));
                tracing::info!("listening on unix://{}", p.display());
                paths.push(p);
            }
            (Host::Tcp(ip, port), Some(mode)) => listeners.push(tcp_door(ip, port, mode)?),
            // tcp_mode answers Some whenever a tcp host was given.
            (Host::Tcp(..), None) => {}
        }
    }
    let engine = Engine {
        root: session.root.clone(),
        exe: PathBuf::from("/proc/self/exe"),
        shared: session.shared.clone(),
        single_id: matches!(session.mapping, crate::sys::idmap::Mapping::Single { .. }),
        execs: Default::default(),
    };
    server::serve(engine, listeners, paths).context("nook serve")?;
    Ok(0)
}
