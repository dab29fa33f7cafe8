//! `nook run`: docker's flags → validated options → the container layer.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Session;
use super::run_config::{DriverArg, IpcArg, PidArg, PullPolicy, RunConfig, UsernsArg, parse_pid};
use crate::container::run::{Host, RunRequest, run as run_container};
use crate::reference::Reference;
use crate::sandbox::seccomp::Seccomp;
use crate::sandbox::spec::{RunOptions, parse_ulimit};
use crate::sandbox::volume::{parse_mount, parse_tmpfs, parse_volume};
use crate::store::{ImageRecord, Store, StoreError};

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background: print the container's id; a monitor process holds it.
    #[arg(short, long)]
    pub detach: bool,
    /// Log options for detached runs: max-size=SIZE, max-file=N.
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// docker's StdinOnce: a detached container's input closes when its first attached
    /// client's input ends (the API server sets it for `docker run -i`).
    #[arg(long, hide = true)]
    pub stdin_once: bool,
    /// The terminal's first size, ROWSxCOLUMNS (docker's ConsoleSize, from the API server).
    #[arg(long, hide = true, value_name = "ROWSxCOLUMNS")]
    pub console_size: Option<String>,
    /// Name the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (K=V, K to take it from nook's environment, or PREFIX* for
    /// every variable of nook's environment whose name starts with PREFIX).
    #[arg(short, long = "env", value_name = "K[=V]")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional groups.
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container hostname.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Bind mount: /host/path:/container/path[:ro].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=bind|tmpfs,source=...,target=...[,readonly].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs: /path[:options].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Make the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Network: pasta[:OPTIONS], slirp4netns[:OPTIONS], host or none (default: pasta, else
    /// slirp4netns, else none).
    #[arg(long, alias = "net", default_value = "default")]
    pub network: String,
    /// IPC namespace: private, or host to share the host's and its /dev/shm.
    #[arg(long, value_enum, default_value_t = IpcArg::Private)]
    pub ipc: IpcArg,
    /// PID namespace: private, or host to run in the host's and see its /proc (the container
    /// can then signal every process of yours).
    #[arg(long, value_parser = parse_pid, default_value = "private")]
    pub pid: PidArg,
    /// Publish a container's port: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp].
    #[arg(short, long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs, each on a free host port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// User namespace: auto, or keep-id to keep your uid and gid inside (default auto, or
    /// the config's `[run] userns`).
    #[arg(long, value_enum)]
    pub userns: Option<UsernsArg>,
    /// Root filesystem: auto, overlay, fuse or copy.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    pub rootfs_driver: DriverArg,
    /// Run a small reaper as pid 1.
    #[arg(long)]
    pub init: bool,
    /// Pass descriptors 3 to 3+N-1, which nook inherited open, to the command at the same
    /// numbers (foreground runs; `nook start -a` after `create`).
    #[arg(long, value_name = "N")]
    pub preserve_fds: Option<u32>,
    /// Pass these inherited descriptors to the command at the same numbers. PMI_FD (Slurm's
    /// `--mpi=pmi2`) is passed without this flag when -e passes nook's PMI_FD on (-e 'PMI_*').
    #[arg(long, value_name = "FD[,FD...]", value_delimiter = ',')]
    pub preserve_fd: Vec<i32>,
    /// Pull the image: missing, always or never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Platform to pull.
    #[arg(long)]
    pub platform: Option<String>,
    /// Memory limit (needs a delegated cgroup v2 subtree).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit (needs a delegated cgroup v2 subtree).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process limit (needs a delegated cgroup v2 subtree).
    #[arg(long)]
    pub pids_limit: Option<u64>,
    /// Resource limit: NAME=SOFT[:HARD].
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Add a capability.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Security options: no-new-privileges, seccomp=unconfined, seccomp=PROFILE.json (docker's
    /// JSON format; default: docker's default profile).
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Set a label on the container: KEY=VALUE (KEY alone for an empty value).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Signal that stops the container (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// A device: VENDOR/CLASS=NAME from a CDI spec (NAME=all for every one), or a host node
    /// /dev/HOST[:/dev/CONTAINER][:rwm].
    #[arg(long, value_name = "DEVICE")]
    pub device: Vec<String>,
    /// NVIDIA GPUs through CDI (nvidia.com/gpu): all, a count, or device=ID[,ID...].
    #[arg(long, value_name = "GPUS")]
    pub gpus: Option<String>,
    /// Another directory of CDI specs (after /etc/cdi, /var/run/cdi and the config file's).
    #[arg(long, value_name = "DIR")]
    pub cdi_spec_dir: Vec<PathBuf>,
    /// The image.
    pub image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `--security-opt` values: whether no_new_privs is asked for, and the seccomp profile.
fn security_opts(opts: &[String]) -> Result<(bool, Seccomp)> {
    let mut nnp = false;
    let mut seccomp = Seccomp::Default;
    for o in opts {
        match o.as_str() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => nnp = true,
            "no-new-privileges:false" | "no-new-privileges=false" => nnp = false,
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp = Seccomp::Unconfined,
            // nook applies no AppArmor or SELinux profile of its own.
            "apparmor=unconfined" | "apparmor:unconfined" | "label=disable" | "label:disable" => {}
            other => match other
                .strip_prefix("seccomp=")
                .or_else(|| other.strip_prefix("seccomp:"))
            {
                Some(path) => {
                    seccomp = Seccomp::load(std::path::Path::new(path))
                        .with_context(|| format!("invalid --security-opt {other:?}"))?
                }
                None => bail!(
                    "unsupported --security-opt {other:?}: nook knows no-new-privileges, seccomp=unconfined and seccomp=PROFILE.json"
                ),
            },
        }
    }
    Ok((nnp, seccomp))
}

/// The options the sandbox takes, checked (part of [`RunConfig::new`]).
pub(super) fn options(a: &RunArgs) -> Result<RunOptions> {
    let mut volumes = Vec::new();
    for v in &a.volume {
        volumes.push(parse_volume(v)?);
    }
    for m in &a.mount {
        volumes.push(parse_mount(m)?);
    }
    for t in &a.tmpfs {
        volumes.push(parse_tmpfs(t)?);
    }
    let (no_new_privs, seccomp) = security_opts(&a.security_opt)?;
    Ok(RunOptions {
        env: crate::sandbox::env::expand_prefixes(&a.env, std::env::vars()),
        env_files: a.env_file.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        group_add: a.group_add.clone(),
        entrypoint: a.entrypoint.clone(),
        hostname: a.hostname.clone(),
        volumes,
        read_only: a.read_only,
        network: crate::net::Mode::parse(&a.network)?,
        host_ipc: a.ipc == IpcArg::Host,
        host_pid: a.pid == PidArg::Host,
        publish: a
            .publish
            .iter()
            .map(|p| crate::net::ports::parse(p))
            .collect::<Result<_, _>>()?,
        publish_all: a.publish_all,
        userns: a.userns.unwrap_or(UsernsArg::Auto).into(),
        driver: a.rootfs_driver.into(),
        init: a.init,
        tty: a.tty,
        stdin: a.interactive,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        no_new_privs,
        seccomp,
        security_opt: a.security_opt.clone(),
        ulimits: a
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        command: a.command.clone(),
        // Read from the CDI specs by RunConfig::resolve_devices.
        devices: Default::default(),
        preserve_fds: crate::sandbox::fds::requested(a.preserve_fds, &a.preserve_fd)?,
    })
}

/// Pulls `image` in a separate nook process, so that this one starts the container
/// single-threaded and outside any user namespace.
pub(super) fn pull(image: &str, platform: Option<&str>) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find nook's own binary")?;
    let mut c = Command::new(exe);
    c.arg("pull");
    if let Some(p) = platform {
        c.args(["--platform", p]);
    }
    c.arg(image).stdin(Stdio::null());
    if let Ok(err) = std::io::stderr().as_fd().try_clone_to_owned() {
        c.stdout(Stdio::from(err));
    }
    let status = c.status().context("cannot run nook pull")?;
    if !status.success() {
        // The pull has printed its own error line; a second one would only repeat it.
        return Err(super::Reported.into());
    }
    Ok(())
}

fn find_or_pull(store: &Store, c: &RunConfig) -> Result<ImageRecord> {
    let missing = match store.find_image(&c.image) {
        Ok(rec) if c.pull != PullPolicy::Always => return Ok(rec),
        Ok(_) => false,
        Err(StoreError::NoSuchImage(_)) => true,
        Err(e) => return Err(e.into()),
    };
    if missing && c.pull == PullPolicy::Never {
        bail!("no such image {}: pull it first (--pull never)", c.image);
    }
    if missing {
        eprintln!("Unable to find image '{}' locally", c.image);
    }
    // Validate before spawning, so a bad name fails with its own message.
    Reference::parse(&c.image)?;
    pull(&c.image, c.platform.as_deref())?;
    Ok(store.find_image(&c.image)?)
}

/// The image to run: a squashfs or SIF file (its config kept in the store as a blob), or an
/// image from the store, pulled when missing.
fn image_of(
    store: &Store,
    c: &RunConfig,
) -> Result<(ImageRecord, Option<crate::archive::squash::FileImage>)> {
    if !crate::archive::squash::names_file(&c.image) {
        return Ok((find_or_pull(store, c)?, None));
    }
    let file = crate::archive::squash::FileImage::open(std::path::Path::new(&c.image))?;
    let record = file
        .record(store)
        .with_context(|| format!("reading the image config in {}", c.image))?;
    Ok((record, Some(file)))
}

pub fn run(session: &Session, a: RunArgs) -> Result<i32> {
    run_as(session, RunConfig::new(&a)?, None, true)
}

/// The arguments after `run` or `create` on this command line (what `start` replays).
fn run_args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .skip_while(|a| a != "run" && a != "create")
        .skip(1)
        .collect()
}

/// A `run` of new container, or (`existing`) a `start` of one that `create` made.
fn run_as(
    session: &Session,
    mut c: RunConfig,
    existing: Option<crate::container::Record>,
    print_id: bool,
) -> Result<i32> {
    // Before nook opens anything: an inherited descriptor is open without close-on-exec.
    crate::sandbox::fds::check_inherited(&c.options.preserve_fds)?;
    c.resolve_devices(&session.config)?;
    c.site_defaults(&session.config.run)?;
    let store = session.store_without_userns()?;
    let (image, file) = image_of(&store, &c)?;
    let runtime = crate::config::runtime_dir()?;
    let host = Host {
        store: &store,
        mapping: &session.mapping,
        runtime: &runtime,
    };
    let request = RunRequest {
        image_name: c.image,
        image,
        name: c.name,
        remove: c.remove,
        options: c.options,
        limits: c.limits,
        labels: c.labels,
        stop_signal: c.stop_signal,
        detach: None,
        file,
        args: existing
            .as_ref()
            .map_or_else(run_args, |r| r.create_args.clone()),
        existing,
    };
    if c.detach {
        let options = crate::container::monitor::MonitorOptions {
            rotation: c.rotation,
            stdin_once: c.stdin_once,
            console: c.console,
        };
        return match crate::container::run::run_detached(&host, request, options) {
            Ok(id) => {
                if print_id {
                    println!("{id}");
                }
                Ok(0)
            }
            Err(e) => {
                eprintln!("Error: {}", super::error_line(&anyhow::Error::new(e)));
                Ok(125)
            }
        };
    }
    match run_container(&host, request) {
        Ok(code) => Ok(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("Error: {}", super::error_line(&anyhow::Error::new(e)));
            Ok(code)
        }
    }
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The container (name or id prefix).
    pub container: String,
    /// Only this container port: PORT[/tcp|/udp].
    pub port: Option<String>,
}

/// `nook port`: docker's `80/tcp -> 0.0.0.0:32768` lines, or the host addresses of one port.
pub fn port(session: &Session, a: PortArgs) -> Result<i32> {
    let containers = crate::container::Containers::new(&session.root);
    let record = containers.find(&a.container)?;
    if record.state != crate::container::State::Running {
        bail!("container {} is not running", a.container);
    }
    let Some(want) = &a.port else {
        for p in &record.ports {
            println!("{p}");
        }
        return Ok(0);
    };
    let (num, proto) = want.split_once('/').unwrap_or((want.as_str(), "tcp"));
    let num: u16 = num
        .parse()
        .with_context(|| format!("invalid port {want:?}: expected PORT[/tcp|/udp]"))?;
    let mut found = false;
    for p in record
        .ports
        .iter()
        .filter(|p| p.container_port == num && p.proto.as_str() == proto)
    {
        println!("{}", std::net::SocketAddr::new(p.host_ip, p.host_port));
        found = true;
    }
    if !found {
        bail!(
            "no public port '{num}/{proto}' published for {}",
            a.container
        );
    }
    Ok(0)
}

/// `nook create`: validates like `run`, pulls the image when missing, and records the
/// container without starting it; prints its id.
pub fn create(session: &Session, a: RunArgs) -> Result<i32> {
    let mut config = RunConfig::new(&a)?;
    config.resolve_devices(&session.config)?;
    config.site_defaults(&session.config.run)?;
    let store = session.store_without_userns()?;
    let (image, _) = image_of(&store, &config)?;
    let containers = crate::container::Containers::new(&session.root);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut record = crate::container::Record::new(
        crate::container::new_id(),
        a.image.clone(),
        image.id.clone(),
        a.command.clone(),
        created,
        crate::container::State::Created,
    );
    record.name = a.name.clone().unwrap_or_default();
    record.labels = config.labels;
    record.create_args = run_args();
    {
        let _lock = store.lock("containers", true)?;
        containers.create(&mut record)?;
    }
    println!("{}", record.id);
    Ok(0)
}

/// clap's view of the replayed arguments.
#[derive(Debug, clap::Parser)]
#[command(name = "nook run", disable_help_flag = true)]
struct Replay {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach: stay in the foreground with the container's output, and end with its status.
    #[arg(short, long)]
    pub attach: bool,
    /// Keep standard input open (with -a).
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `nook start`: runs created (or exited) containers again, with the arguments they were made
/// with, in the background, or attached with `-a`.
pub fn start(session: &Session, a: StartArgs) -> Result<i32> {
    let containers = crate::container::Containers::new(&session.root);
    let mut code = 0;
    for name in &a.containers {
        let r = containers.get(name)?;
        if r.state == crate::container::State::Running {
            println!("{name}");
            continue;
        }
        let replay = <Replay as clap::Parser>::try_parse_from(
            std::iter::once("nook-run".to_owned()).chain(r.create_args.iter().cloned()),
        )
        .with_context(|| format!("container {name} was made by a nook that kept no arguments"))?;
        let mut args = replay.run;
        args.name = None;
        // Detached, a container made with -i keeps its input open for `attach` (its monitor
        // holds it); attached, input is this terminal's only with -i, as docker's start.
        args.interactive = a.interactive || (args.interactive && !a.attach);
        args.detach = !a.attach;
        // Detached, start prints the name it was given (not the id, as run -d), as docker.
        let out = run_as(session, RunConfig::new(&args)?, Some(r), false)?;
        if out != 0 || a.attach {
            code = out;
        } else {
            println!("{name}");
        }
    }
    Ok(code)
}
