//! The command line: clap definitions, one file per command group, and the session every
//! command starts from (configuration, store, id mapping, registry client).
//!
//! Commands return an exit status; errors travel up as `anyhow` chains and are printed once,
//! on one line, by [`main`], with docker's status 125 for nook's own failures.

mod archive;
mod build;
mod container;
mod context;
mod cp;
mod diff;
mod export;
pub(crate) mod format;
mod history;
mod image;
mod info;
mod internal;
mod lifecycle;
mod logging;
mod login;
mod progress;
mod push;
mod remote;
mod remote_io;
mod remote_run;
mod run_config;
mod serve;
mod storage;
mod system;
mod volume;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{self, UserConfig};
use crate::registry::proxy::ProxyEnv;
use crate::registry::transport::TransportOptions;
use crate::registry::{Registry, RegistryOptions};
use crate::secret::Credential;
use crate::store::Store;
use crate::sys::idmap::Mapping;
use crate::unpack::Owners;

/// Exit status for nook's own errors (docker's).
pub const EXIT_NOOK: i32 = 125;

/// nook: rootless containers, docker's verbs.
#[derive(Debug, Parser)]
#[command(name = "nook", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Store directory (default $XDG_DATA_HOME/nook, ~/.local/share/nook).
    #[arg(long, global = true, env = "NOOK_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Storage option, podman's spelling: additionalimagestore=DIR (a read-only shared image
    /// store, looked in after your own; repeatable).
    #[arg(long = "storage-opt", global = true, value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,
    /// Diagnostic log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    #[command(flatten)]
    pub target: context::TargetArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Make an image of a container's changes.
    Commit(build::CommitArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(build::BuilderCommand),
    /// Download an image from a registry.
    Pull(image::PullArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Show an image's details as JSON.
    Inspect(image::InspectArgs),
    /// Remove images.
    Rmi(image::RmiArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Show the steps an image was made of.
    History(history::HistoryArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Upload an image to a registry.
    Push(push::PushArgs),
    /// Write images to an archive (docker-archive, oci-archive, oci-dir).
    Save(archive::SaveArgs),
    /// Read images from an archive made by save (nook's, docker's or podman's).
    Load(archive::LoadArgs),
    /// Write a container's filesystem as a tar archive.
    Export(export::ExportArgs),
    /// List the files a container added (A), changed (C) and deleted (D).
    Diff(diff::DiffArgs),
    /// Make an image of a filesystem tar archive.
    Import(export::ImportArgs),
    /// Save credentials for a registry.
    Login(login::LoginArgs),
    /// Remove saved credentials for a registry.
    Logout(login::LogoutArgs),
    /// Run a command in a new container.
    Run(Box<container::RunArgs>),
    /// Create a container without starting it.
    Create(Box<container::RunArgs>),
    /// Start created or stopped containers.
    Start(container::StartArgs),
    /// List a container's published ports.
    Port(container::PortArgs),
    /// List containers.
    Ps(lifecycle::PsArgs),
    /// Run a command in a running container.
    Exec(lifecycle::ExecArgs),
    /// Copy files between a running container and the host.
    Cp(cp::CpArgs),
    /// Show a detached container's output.
    Logs(lifecycle::LogsArgs),
    /// Stop containers: their stop signal, then SIGKILL after a grace time.
    Stop(lifecycle::StopArgs),
    /// Send a signal to containers.
    Kill(lifecycle::KillArgs),
    /// Remove containers.
    Rm(lifecycle::RmArgs),
    /// Wait for containers to end; print their exit codes.
    Wait(lifecycle::WaitArgs),
    /// Rename a container.
    Rename(lifecycle::RenameArgs),
    /// Show the processes of a container.
    Top(lifecycle::TopArgs),
    /// Freeze a container's processes (needs a cgroup freezer).
    Pause(lifecycle::PauseArgs),
    /// Thaw a paused container.
    Unpause(lifecycle::PauseArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(lifecycle::ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Serve docker's Engine API on UNIX sockets or TCP (mutual TLS), for the docker CLI and SDKs.
    Serve(serve::ServeArgs),
    /// Show what works on this host and which fallbacks nook will use.
    #[command(alias = "doctor")]
    Info(info::InfoArgs),
    /// Manage nook itself.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Manage contexts: names for daemons (`nook serve` or a Docker Engine) to talk to.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Tools for nook's benchmarks and debugging.
    #[command(subcommand, hide = true)]
    Internal(internal::InternalCommand),
}

/// What every command starts from.
pub struct Session {
    pub config: UserConfig,
    pub root: PathBuf,
    pub mapping: Mapping,
    /// Read-only shared image stores, after the own one.
    pub shared: Vec<PathBuf>,
    entered: bool,
}

impl Session {
    fn new(cli: &Cli) -> Result<Session> {
        let config = UserConfig::load()?;
        let root = config::store_root(cli.root.as_deref(), &config)?;
        let mapping = Mapping::detect();
        let shared = storage::shared_stores(&cli.storage_opt, &config, &root, &mapping)?;
        Ok(Session {
            config,
            root,
            mapping,
            shared,
            entered: false,
        })
    }

    /// Opens the store for writing. With a subordinate range this first moves the process
    /// into a user namespace mapping it (so files can carry the image's owners); it must
    /// therefore run before any thread is started.
    pub fn writable_store(&mut self) -> Result<(Store, Owners)> {
        if let Mapping::Range {
            helpers,
            uids,
            gids,
        } = &self.mapping
            && !self.entered
        {
            crate::sys::userns::enter(uids, gids, Some(helpers))
                .context("cannot enter the user namespace that owns the store")?;
            self.entered = true;
        }
        let store = Store::open(&self.root, &self.mapping.describe())?.with_shared(&self.shared);
        let owners = match self.mapping {
            Mapping::Single { .. } => Owners::Record,
            _ => Owners::Keep {
                max_id: self.mapping.max_id(),
            },
        };
        Ok((store, owners))
    }

    /// Opens (creating) the store without entering a user namespace: containers get their
    /// own, made from outside.
    pub fn store_without_userns(&self) -> Result<Store> {
        Ok(Store::open(&self.root, &self.mapping.describe())?.with_shared(&self.shared))
    }

    /// Opens the store for reading, if there is one (created when shared stores stand behind
    /// it, so that their images are found).
    pub fn readable_store(&self) -> Result<Option<Store>> {
        if !self.shared.is_empty() {
            return self.store_without_userns().map(Some);
        }
        Ok(Store::open_existing(&self.root)?)
    }

    /// A registry client with the user's mirrors, insecure list and credentials.
    pub fn registry(&self, tls_verify: bool) -> Registry {
        Registry::new(RegistryOptions {
            transport: TransportOptions {
                proxy: ProxyEnv::from_env(),
                certs_dirs: certs_dirs(),
                retry_base: std::time::Duration::ZERO,
            },
            tls_verify,
            insecure: self.config.insecure_registries.clone(),
            mirrors: self.config.mirrors.clone(),
            credentials: Arc::new(|host: &str| lookup_credential(host)),
        })
    }
}

/// Credentials from docker's and podman's files, as the registry client wants them.
fn lookup_credential(host: &str) -> Option<Credential> {
    match config::auth::lookup(host) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// Per-registry CA folders, as docker and podman keep them.
fn certs_dirs() -> Vec<PathBuf> {
    let mut out = vec![
        PathBuf::from("/etc/docker/certs.d"),
        PathBuf::from("/etc/containers/certs.d"),
    ];
    if let Some(c) = config::config_home() {
        out.push(c.join("containers/certs.d"));
    }
    if let Some(h) = config::home_dir() {
        out.push(h.join(".docker/certs.d"));
    }
    out
}

/// Commands that only print: a reader that goes away (`| head`) ends them quietly. The others
/// keep SIGPIPE ignored (a container's monitor, network helpers and pulls must not die of it).
fn prints_only(c: &Command) -> bool {
    matches!(
        c,
        Command::Images(_)
            | Command::Inspect(_)
            | Command::History(_)
            | Command::Ps(_)
            | Command::Logs(_)
            | Command::Top(_)
            | Command::Port(_)
            | Command::Info(_)
            | Command::Diff(_)
    )
}

/// Runs nook with the process arguments; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_NOOK } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // The server logs a line per request at info unless told otherwise.
    let level = match cli.command {
        Command::Serve(_) if cli.log_level == "warn" => "info",
        _ => cli.log_level.as_str(),
    };
    logging::init(level);
    match run(cli) {
        Ok(code) => code,
        Err(e) if e.is::<Reported>() => EXIT_NOOK,
        Err(e) => {
            eprintln!("Error: {}", error_line(&e));
            EXIT_NOOK
        }
    }
}

/// A failure the user has been told about already (by a child nook, on the same standard
/// error): nook exits with its status and prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("the error above")]
pub struct Reported;

/// The whole error chain on one line, skipping links that only repeat the next one.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

fn run(cli: Cli) -> Result<i32> {
    if prints_only(&cli.command) {
        crate::sys::process::default_sigpipe();
    }
    // A daemon named by -H, a context or the environment: the command goes over the API.
    let cli = match remote::divert(cli)? {
        remote::Diverted::Done(code) => return Ok(code),
        remote::Diverted::Local(cli) => *cli,
    };
    let mut session = Session::new(&cli)?;
    match cli.command {
        Command::Build(a) => build::build(&session, *a),
        Command::Commit(a) => build::commit(&session, a),
        Command::Builder(c) => build::builder(&session, c),
        Command::Pull(a) => image::pull(&mut session, a),
        Command::Images(a) => image::images(&session, a),
        Command::Inspect(a) => image::inspect(&session, a),
        Command::Rmi(a) => image::rmi(&mut session, a),
        Command::Tag(a) => image::tag(&mut session, a),
        Command::History(a) => history::history(&session, a),
        Command::Image(c) => image::dispatch(&mut session, c),
        Command::Push(a) => push::push(&mut session, a),
        Command::Save(a) => archive::save(&session, a),
        Command::Load(a) => archive::load(&mut session, a),
        Command::Export(a) => export::export(&session, a),
        Command::Diff(a) => diff::diff(&session, a),
        Command::Import(a) => export::import(&mut session, a),
        Command::Login(a) => login::login(&session, a),
        Command::Logout(a) => login::logout(a),
        Command::Run(a) => container::run(&session, *a),
        Command::Port(a) => container::port(&session, a),
        Command::Create(a) => container::create(&session, *a),
        Command::Start(a) => container::start(&session, a),
        Command::Ps(a) => lifecycle::ps(&session, a),
        Command::Exec(a) => lifecycle::exec(&session, a),
        Command::Cp(a) => cp::cp(&session, a),
        Command::Logs(a) => lifecycle::logs(&session, a),
        Command::Stop(a) => lifecycle::stop(&session, a),
        Command::Kill(a) => lifecycle::kill(&session, a),
        Command::Rm(a) => lifecycle::rm(&session, a),
        Command::Wait(a) => lifecycle::wait(&session, a),
        Command::Rename(a) => lifecycle::rename(&session, a),
        Command::Top(a) => lifecycle::top(&session, a),
        Command::Pause(a) => lifecycle::pause(&session, a, true),
        Command::Unpause(a) => lifecycle::pause(&session, a, false),
        Command::Container(c) => lifecycle::container(&session, c),
        Command::Volume(c) => volume::volume(&session, c),
        Command::Info(a) => info::info(&session, a),
        Command::Serve(a) => serve::serve(&session, a),
        Command::System(c) => system::dispatch(&mut session, c),
        Command::Internal(c) => internal::dispatch(c),
        Command::Context(c) => context::dispatch(c),
    }
}
