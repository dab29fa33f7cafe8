//! `nook context` and the choice of daemon: `-H`, `--context`, `NOOK_HOST`, `DOCKER_HOST`
//! (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`), then the current context — docker's
//! precedence. No daemon named: nook's local path, as it always was.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::format::print_table;
use crate::client::context::{Context, Contexts, DEFAULT, Origin};
use crate::client::{Endpoint, Host, TlsOptions};

/// The global flags that name a daemon (before the command, as docker's).
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Daemon to talk to: unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST[:PORT] (default:
    /// nook's local path, without a daemon).
    #[arg(short = 'H', long = "host", value_name = "URL")]
    pub host: Option<String>,
    /// Context to use (see `nook context ls`).
    #[arg(short = 'c', long, value_name = "NAME")]
    pub context: Option<String>,
    /// Use TLS (implied by --tlsverify).
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the daemon's certificate.
    #[arg(long)]
    pub tlsverify: bool,
    /// CA certificate the daemon's is signed by (default $DOCKER_CERT_PATH/ca.pem).
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (default $DOCKER_CERT_PATH/cert.pem).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Client key (default $DOCKER_CERT_PATH/key.pem).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The daemon the flags and environment name, or `None` for nook's local path.
pub fn resolve(t: &TargetArgs) -> Result<Option<Endpoint>> {
    if t.host.is_some() && t.context.is_some() {
        bail!("give -H or --context, not both");
    }
    let host = match &t.context {
        Some(_) => None,
        None => t
            .host
            .clone()
            .or_else(|| env("NOOK_HOST"))
            .or_else(|| env("DOCKER_HOST")),
    };
    if let Some(h) = host {
        let tls = tls_options(t);
        let parsed = Host::parse(&h, tls.is_some())?;
        let tls = tls.filter(|_| matches!(parsed, Host::Tcp { .. }));
        return Ok(Some(Endpoint { host: parsed, tls }));
    }
    let contexts = Contexts::of_user();
    let name = t
        .context
        .clone()
        .or_else(|| env("NOOK_CONTEXT"))
        .or_else(|| env("DOCKER_CONTEXT"))
        .unwrap_or_else(|| contexts.current());
    if name == DEFAULT {
        return Ok(None);
    }
    let ep = contexts.get(&name)?.endpoint()?;
    Ok(Some(ep))
}

/// docker's TLS flags and variables: `--tlsverify` or `DOCKER_TLS_VERIFY` verify; `--tls` or
/// any file flag encrypts; files default to `$DOCKER_CERT_PATH` (`~/.docker`).
fn tls_options(t: &TargetArgs) -> Option<TlsOptions> {
    let verify = t.tlsverify || env("DOCKER_TLS_VERIFY").is_some();
    let files_given = t.tlscacert.is_some() || t.tlscert.is_some() || t.tlskey.is_some();
    if !(verify || t.tls || files_given) {
        return None;
    }
    let dir = env("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| crate::config::home_dir().map(|h| h.join(".docker")))
        .unwrap_or_default();
    let pick = |given: &Option<PathBuf>, file: &str| {
        given
            .clone()
            .or_else(|| Some(dir.join(file)).filter(|p| p.is_file()))
    };
    Some(TlsOptions {
        ca: pick(&t.tlscacert, "ca.pem"),
        cert: pick(&t.tlscert, "cert.pem"),
        key: pick(&t.tlskey, "key.pem"),
        verify,
    })
}

/// `nook context`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create a context: a name for a daemon.
    Create(CreateArgs),
    /// List contexts; the current one is starred.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Make a context the current one (`default`: nook's local path).
    Use { name: String },
    /// Show contexts as JSON.
    Inspect { names: Vec<String> },
    /// Remove contexts.
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker's scripts.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `nook context create NAME --docker host=URL,...`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// The daemon: host=URL[,ca=FILE,cert=FILE,key=FILE,skip-tls-verify=BOOL].
    #[arg(long, value_name = "SPEC")]
    pub docker: String,
    /// A description.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// `--docker host=...,ca=...` as docker reads it.
fn parse_docker_spec(name: &str, description: &str, spec: &str) -> Result<Context> {
    let mut c = Context {
        name: name.to_owned(),
        description: description.to_owned(),
        host: String::new(),
        skip_tls_verify: false,
        tls: TlsOptions::default(),
        origin: Origin::Nook,
    };
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--docker {part:?}: expected KEY=VALUE"))?;
        match k {
            "host" => c.host = v.to_owned(),
            "ca" => c.tls.ca = Some(v.into()),
            "cert" => c.tls.cert = Some(v.into()),
            "key" => c.tls.key = Some(v.into()),
            "skip-tls-verify" => {
                c.skip_tls_verify = v
                    .parse()
                    .with_context(|| format!("--docker skip-tls-verify={v}: use true or false"))?;
            }
            _ => bail!("--docker: unknown key {k:?}: use host, ca, cert, key or skip-tls-verify"),
        }
    }
    if c.host.is_empty() {
        bail!("--docker needs host=URL, as host=unix:///run/user/1000/nook/nook.sock");
    }
    Ok(c)
}

/// Runs a `nook context` command (always local: contexts are the client's).
pub fn dispatch(cmd: ContextCommand) -> Result<i32> {
    let contexts = Contexts::of_user();
    match cmd {
        ContextCommand::Create(a) => {
            contexts.create(&parse_docker_spec(&a.name, &a.description, &a.docker)?)?;
            println!("{}", a.name);
            eprintln!("Successfully created context \"{}\"", a.name);
        }
        ContextCommand::Ls { quiet } => list(&contexts, quiet),
        ContextCommand::Use { name } => {
            contexts.use_context(&name)?;
            println!("{name}");
            eprintln!("Current context is now \"{name}\"");
        }
        ContextCommand::Inspect { names } => {
            let names = if names.is_empty() {
                vec![contexts.current()]
            } else {
                names
            };
            let mut out = Vec::new();
            for n in &names {
                out.push(inspect_json(&contexts, n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ContextCommand::Rm { names, .. } => {
            for n in &names {
                contexts.remove(n)?;
                println!("{n}");
            }
        }
    }
    Ok(0)
}

fn list(contexts: &Contexts, quiet: bool) {
    let current = contexts.current();
    let mut rows = vec![vec![
        DEFAULT.to_owned(),
        "nook's local path, no daemon".to_owned(),
        "local".to_owned(),
    ]];
    for c in contexts.list() {
        rows.push(vec![c.name, c.description, c.host]);
    }
    for r in &mut rows {
        if quiet {
            println!("{}", r[0]);
        } else if r[0] == current {
            r[0].push_str(" *");
        }
    }
    if !quiet {
        print_table(&["NAME", "DESCRIPTION", "DOCKER ENDPOINT"], &rows);
    }
}

fn inspect_json(contexts: &Contexts, name: &str) -> Result<serde_json::Value> {
    if name == DEFAULT {
        return Ok(json!({"Name": DEFAULT, "Metadata": {}, "Endpoints": {}}));
    }
    let c = contexts.get(name)?;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    Ok(json!({
        "Name": c.name,
        "Metadata": {"Description": c.description},
        "Endpoints": {"docker": {"Host": c.host, "SkipTLSVerify": c.skip_tls_verify}},
        "TLSMaterial": {"docker": {"ca": path(&c.tls.ca), "cert": path(&c.tls.cert), "key": path(&c.tls.key)}},
        "Storage": {"Origin": if c.origin == Origin::Docker { "docker" } else { "nook" }},
    }))
}

/// `nook system dial-stdio [--socket unix:///PATH]`.
#[derive(Debug, Args)]
pub struct DialStdioArgs {
    /// The socket (default: `nook serve`'s, $XDG_RUNTIME_DIR/nook/nook.sock).
    #[arg(long, value_name = "unix:///PATH")]
    pub socket: Option<String>,
}

/// `nook system dial-stdio`: what `ssh://` runs on the daemon's host.
pub fn dial_stdio(a: DialStdioArgs) -> Result<i32> {
    let path = match a.socket.as_deref() {
        Some(s) => match Host::parse(s, false)? {
            Host::Unix(p) => p,
            _ => bail!("--socket {s}: give unix:///PATH"),
        },
        None => crate::config::runtime_dir()?.join("nook.sock"),
    };
    crate::client::dial_stdio(&path)
        .with_context(|| format!("cannot relay to {}", path.display()))?;
    Ok(0)
}
