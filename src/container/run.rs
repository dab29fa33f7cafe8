//! `nook run` in the foreground: a container record, a plan, one `clone` into the new
//! namespaces, the id maps written from outside, then signals and the terminal until the init
//! exits. No daemon, no re-exec: the child is nook's own image until it execs the command.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;

use super::cgroup::{self, Limits};
use super::supervise::{Signals, supervise};
use super::{ContainerError, Containers, Record, new_id};
use crate::net::{self, NetError, etc};
use crate::rootfs::{self, OverlayProbe, Rung};
use crate::sandbox::message::{self, Stage, ToChild, ToParent};
use crate::sandbox::plan::{Namespaces, Plan, RootfsPlan, standard_mounts};
use crate::sandbox::spec::{self, Driver, ImageProcess, RunOptions, SpecError, UserNs};
use crate::store::{ImageRecord, Store, StoreError};
use crate::sys::idmap::{IdMap, Mapping};
use crate::sys::process::{WinSize, clone_fork, thread_count, window_size};

/// Why a container could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Volume(#[from] super::volumes::VolumeStoreError),
    #[error("cannot start the container")]
    User(#[source] crate::sandbox::user::UserError),
    #[error("the image config of {0} is not valid")]
    Config(String, #[source] serde_json::Error),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} could not map the container's ids: {message}")]
    Maps { tool: String, message: String },
    /// The container's init failed before the command ran.
    #[error("{message}")]
    Setup { message: String, exit: i32 },
    #[error("nook run must start single-threaded ({0} threads): this is a bug, please report it")]
    Threads(usize),
}

impl RunError {
    /// The exit status nook ends with (docker's 125, 126, 127).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Setup { exit, .. } => *exit,
            _ => 125,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// One `nook run`.
pub struct RunRequest {
    pub image_name: String,
    pub image: ImageRecord,
    pub name: Option<String>,
    pub remove: bool,
    pub options: RunOptions,
    pub limits: Limits,
    /// `run -d`: this process is the container's monitor.
    pub detach: Option<Detach>,
    /// `nook start`: the container that `create` (or an earlier run) made.
    pub existing: Option<super::Record>,
    /// The command line's `run` arguments (kept for `nook start`).
    pub args: Vec<String>,
}

/// What a detached run's monitor holds: the read ends of the container's stdout and stderr
/// (their write ends are this process's fds 1 and 2 until the container runs), where to
/// report the start, and the log's rotation.
pub struct Detach {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub ready: std::fs::File,
    pub rotation: super::logs::Rotation,
}

/// Where the run happens.
pub struct Host<'a> {
    pub store: &'a Store,
    pub mapping: &'a Mapping,
    pub runtime: &'a Path,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the container in the foreground; returns its exit status.
pub fn run(host: &Host<'_>, req: RunRequest) -> Result<i32, RunError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(RunError::Threads(threads));
    }
    if req.limits.any() {
        cgroup::delegated_dir()?;
    }
    let config_bytes = host.store.read_blob(&req.image.id, 8 << 20)?;
    let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| RunError::Config(req.image_name.clone(), e))?;
    let o = &req.options;
    let id = req.existing.as_ref().map_or_else(new_id, |r| r.id.clone());
    let network = net::choose(&o.network, host.runtime);
    if network.mode == net::Mode::None
        && let Some(why) = &network.why
    {
        eprintln!("warning: {why}");
    }
    let mut ports = o.publish.clone();
    if o.publish_all {
        let exposed = config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        ports.extend(net::ports::exposed(exposed.iter().map(String::as_str)));
    }
    match &network.mode {
        net::Mode::Host | net::Mode::None if !ports.is_empty() => {
            return Err(NetError::Publish {
                publish: ports[0].to_string(),
                message: "ports are published only with --network pasta or slirp4netns".into(),
            }
            .into());
        }
        _ => {
            let start = match host.mapping {
                Mapping::Root => 0,
                _ => net::ports::unprivileged_start(),
            };
            net::ports::resolve(&mut ports, start).map_err(NetError::from)?
        }
    }
    let hostname = match (&o.hostname, &network.mode) {
        (Some(h), _) => h.clone(),
        (None, net::Mode::Host) => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        (None, _) => id[..12].to_owned(),
    };
    let host_env = |k: &str| std::env::var(k).ok();
    let mut process = spec::process(&ImageProcess::from_config(&config), o, &hostname, &host_env)?;
    if o.userns == UserNs::KeepId && o.user.is_none() {
        // keep-id means running as yourself, whatever the image's USER says (as podman).
        process.user = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    }
    if o.userns == UserNs::KeepId {
        process.keep_id = keep_id_account();
    }
    let containers = Containers::new(host.store.root());
    let mut record = Record::new(
        id.clone(),
        req.image_name.clone(),
        req.image.id.clone(),
        process.args.clone(),
        req.existing.as_ref().map_or_else(now, |r| r.created),
        "created",
    );
    record.name = req
        .existing
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| req.name.clone())
        .unwrap_or_default();
    record.ports = ports;
    record.monitor = super::lifecycle::this_monitor();
    record.detached = req.detach.is_some();
    record.create_args = req.args.clone();
    let stop_signal = config
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone());
    record.config = inspect_config(&req, &process, &hostname, stop_signal);
    let dir = containers.dir_of(&id);
    let rt = host.runtime.join("containers").join(&id);
    let mut req = req;
    let detach = req.detach.take();
    // Named and anonymous volumes (the image's VOLUME entries too) become bind mounts.
    let image_volumes: Vec<String> = config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    let layers: Vec<PathBuf> = req
        .image
        .layers
        .iter()
        .map(|l| host.store.layer_root(&l.diff_id))
        .collect();
    let vols = super::volumes::Volumes::new(host.store.root());
    let (mounts, uses) = super::volumes::resolve(
        &vols,
        &req.options.volumes,
        &image_volumes,
        &layers,
        host.mapping,
    )?;
    req.options.volumes = mounts;
    record.volumes = uses;
    let result = start_and_wait(
        host,
        &req,
        detach,
        &mut record,
        (&dir, &rt),
        (&hostname, network.mode),
        process,
    );
    if req.remove || !dir.join("config.json").exists() {
        let _ = std::fs::remove_dir_all(&rt);
    }
    if !dir.join("config.json").exists() {
        // Nothing was created (the name was taken, or the start failed before that).
        return result;
    }
    let code = result.as_ref().map_or_else(RunError::exit_code, |c| *c);
    record.exit_code = Some(code);
    record.finished = Some(now());
    if req.remove {
        remove_dir(host, &dir);
        // As docker's --rm: the anonymous volumes go with the container.
        let vols = super::volumes::Volumes::new(host.store.root());
        for u in record.volumes.iter().filter(|u| u.anonymous) {
            let _ = vols.remove(&u.name, &[], host.mapping);
        }
    } else {
        if record.state == "running" {
            record.state = "exited".into();
        }
        let _ = containers.save(&record);
    }
    result
}

/// `nook run -d`: forks the container's monitor (a new session, its output to the log) and
/// returns the container's id once the command runs, or the reason it could not start.
/// The monitor is `run` itself, in the forked process: it holds the container until it ends.
pub fn run_detached(
    host: &Host<'_>,
    req: RunRequest,
    rotation: super::logs::Rotation,
) -> Result<String, RunError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(RunError::Threads(threads));
    }
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("cannot create a pipe")(e.into()))?;
    match crate::sys::process::clone_fork(CloneFlags::empty())
        .map_err(io("cannot start the container's monitor"))?
    {
        None => {
            drop(ready_r);
            let mut ready = std::fs::File::from(ready_w);
            let code = match monitor(host, req, &mut ready, rotation) {
                Ok(code) => code,
                Err(e) => {
                    use std::io::Write;
                    let line = format!("err {} {}", e.exit_code(), error_chain(&e));
                    let _ = writeln!(ready, "{}", line.replace('\n', " "));
                    e.exit_code()
                }
            };
            crate::sys::process::exit_now(code)
        }
        Some(_) => {
            drop(ready_w);
            // One line: the monitor keeps its end open while it holds the container.
            let mut text = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(std::fs::File::from(ready_r)),
                &mut text,
            );
            let text = text.trim();
            if let Some(id) = text.strip_prefix("ok ") {
                return Ok(id.to_owned());
            }
            let (exit, message) = text
                .strip_prefix("err ")
                .and_then(|r| r.split_once(' '))
                .and_then(|(c, m)| Some((c.parse().ok()?, m.to_owned())))
                .unwrap_or((
                    125,
                    "the container's monitor ended before the container started".into(),
                ));
            Err(RunError::Setup { message, exit })
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The monitor's side of `run -d`: a session of its own, standard input from /dev/null, the
/// container's stdout and stderr through pipes, then the run.
fn monitor(
    host: &Host<'_>,
    mut req: RunRequest,
    ready: &mut std::fs::File,
    rotation: super::logs::Rotation,
) -> Result<i32, RunError> {
    let _ = nix::unistd::setsid();
    let null = std::fs::File::open("/dev/null").map_err(io("cannot open /dev/null"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| io("cannot set up standard input")(e.into()))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("cannot create the output pipes")(e.into()))
    };
    let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
    nix::unistd::dup2_stdout(&out_w).map_err(|e| io("cannot redirect the output")(e.into()))?;
    nix::unistd::dup2_stderr(&err_w).map_err(|e| io("cannot redirect the output")(e.into()))?;
    drop((out_w, err_w));
    req.detach = Some(Detach {
        stdout: out_r,
        stderr: err_r,
        ready: ready
            .try_clone()
            .map_err(io("cannot keep the start pipe"))?,
        rotation,
    });
    run(host, req)
}

/// `dirs`: the container's directory in the store and its runtime directory.
fn start_and_wait(
    host: &Host<'_>,
    req: &RunRequest,
    mut detach: Option<Detach>,
    record: &mut Record,
    (dir, rt): (&Path, &Path),
    (hostname, network): (&str, net::Mode),
    process: crate::sandbox::plan::Process,
) -> Result<i32, RunError> {
    let o = &req.options;
    let etc_files = etc::paths(rt);
    let image_layers: Vec<PathBuf> = req
        .image
        .layers
        .iter()
        .map(|l| host.store.layer_root(&l.diff_id))
        .collect();
    let layers = super::mapping::layers_top_first(&dir.join("upper"), &image_layers);
    let (uid_map, gid_map) =
        super::mapping::maps_for_run(host.mapping, o.userns, &process.user, &layers)
            .map_err(RunError::User)?;
    record.exec = Some(super::exec::ExecSpec::of(&process, gid_map.lines.len() > 1));
    let mut net = NetStart {
        fallback: o.network == net::Mode::Default,
        mode: network,
        ports: record.ports.clone(),
        runtime: host.runtime.to_owned(),
        rt: rt.to_owned(),
        hostname: hostname.to_owned(),
    };
    let ns = Namespaces {
        net: net.mode.private(),
        cgroup: Path::new("/proc/self/ns/cgroup").exists(),
    };
    let tty_gid = gid_map.to_host(5).is_some();
    let probe = rootfs::cached_probe(host.runtime);
    let choice = rootfs::choose(rootfs::Inputs {
        driver: o.driver,
        store_fs: rootfs::unsuitable_fs(host.store.root()),
        probe: probe.as_ref(),
        single: matches!(host.mapping, Mapping::Single { .. }),
        fuse: rootfs::fuse_usable(),
    });
    if let Some(why) = &choice.why {
        tracing::debug!(why, "not using the kernel overlay");
    }
    let mut rung = choice.rung;
    let tty_size = if process.tty {
        window_size(std::io::stdin().as_fd())
    } else {
        None
    };
    let containers = Containers::new(host.store.root());
    loop {
        let rootfs = rootfs::ladder::plan(host.store, &req.image, dir, rung);
        let plan = Plan {
            namespaces: ns,
            uid_map: uid_map.clone(),
            gid_map: gid_map.clone(),
            hostname: hostname.to_owned(),
            rootfs,
            mountpoint: rt.join("merged"),
            read_only: o.read_only,
            mounts: standard_mounts(ns, tty_gid, &etc_files, &o.volumes),
            process: process.clone(),
            fakeroot: rung == Rung::Fuse && matches!(host.mapping, Mapping::Single { .. }),
            wait_network: net.helped(),
        };
        // The container's files are written while newuidmap/newgidmap run.
        let mode = net.mode.clone();
        let mut prepare = || -> Result<(), RunError> {
            if !dir.join("config.json").exists() {
                let _lock = host.store.lock("containers", true)?;
                containers.create(record)?;
            }
            std::fs::create_dir_all(rt.join("merged"))
                .map_err(io("cannot create the container's runtime directory"))?;
            etc::write(rt, hostname, &mode)
                .map_err(io("cannot write the container's /etc files"))?;
            if let RootfsPlan::Copy { dest, .. } = &plan.rootfs {
                std::fs::create_dir_all(dest).map_err(io("cannot create the copied root"))?;
            }
            Ok(())
        };
        let signals = Signals::block().map_err(io("cannot block signals"))?;
        let launched = launch(host, &plan, tty_size, &mut net, &mut prepare)?;
        match launched {
            Launch::Started {
                pid,
                pty,
                driver,
                server,
                fakeroot,
                helper,
            } => {
                if driver == Some(Rung::Overlay) && rootfs::cached_probe(host.runtime).is_none() {
                    rootfs::record_probe(host.runtime, &OverlayProbe::Works);
                }
                if req.limits.any() {
                    cgroup::apply(&record.id, &req.limits, pid)?;
                }
                record.state = "running".into();
                record.pid = Some(pid.as_raw());
                // The reaper has forked the command before it reported the start.
                record.entry = o
                    .init
                    .then(|| super::lifecycle::first_child(pid.as_raw()))
                    .flatten();
                record.driver = driver;
                record.network = net.name().into();
                if let Some(e) = record.exec.as_mut() {
                    e.fakeroot = fakeroot.as_ref().is_some_and(|f| f.1.is_some());
                }
                record.started = Some(now());
                let _ = containers.save(record);
                let outputs = match detach.take() {
                    Some(d) => Some(detached(d, dir, &record.id)?),
                    None => None,
                };
                let code = supervise(pid, &signals, pty, process.stdin, outputs)
                    .map_err(io("lost track of the container"))?;
                drop(helper);
                drop(fakeroot);
                drop(server);
                record.state = "exited".into();
                return Ok(code);
            }
            Launch::Failed {
                stage: Stage::Overlay,
                message,
                ..
            } if o.driver == Driver::Auto && rung == Rung::Overlay => {
                // The kernel said no: remember it, and take the next rung.
                rootfs::record_probe(host.runtime, &OverlayProbe::Refused(message));
                rung = Rung::Overlay.below(rootfs::fuse_usable());
            }
            Launch::Failed { message, exit, .. } => return Err(RunError::Setup { message, exit }),
        }
    }
}

enum Launch {
    Started {
        pid: Pid,
        pty: Option<OwnedFd>,
        /// The rung the init mounted (none if it ended before it said).
        driver: Option<Rung>,
        /// nook's FUSE overlay serving the root, when that rung is used.
        server: Option<crate::fuse::Server>,
        /// The fakeroot supervising stat and chown, with one id mapped on the FUSE rung, and
        /// its door for `nook exec`.
        fakeroot: Option<Box<(super::fakeroot::Fakeroot, Option<super::fakeroot::Door>)>>,
        /// slirp4netns or pasta.
        helper: Option<net::Helper>,
    },
    Failed {
        stage: Stage,
        message: String,
        exit: i32,
    },
}

/// Clones the init, writes its id maps, and follows its setup until the command runs.
fn launch(
    host: &Host<'_>,
    plan: &Plan,
    tty_size: Option<WinSize>,
    net: &mut NetStart,
    prepare: &mut dyn FnMut() -> Result<(), RunError>,
) -> Result<Launch, RunError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io("cannot create the setup socket")(e.into()))?;
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if plan.namespaces.cgroup {
        flags |= CloneFlags::CLONE_NEWCGROUP;
    }
    if plan.namespaces.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let pid = match clone_fork(flags).map_err(io(
        "cannot create the container's namespaces (see 'nook info')",
    ))? {
        None => {
            drop(ours);
            crate::sandbox::child::init(plan, theirs, tty_size)
        }
        Some(pid) => pid,
    };
    drop(theirs);
    if let Err(e) = write_maps(host.mapping, pid, &plan.uid_map, &plan.gid_map, prepare) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    // If the init already gave up, its report is waiting below: read it rather than fail here.
    let _ = message::send(ours.as_fd(), &ToChild::MapsWritten, None);
    // The network comes up while the init mounts its root.
    let helper = match net.start(pid) {
        Ok(h) => h,
        // The init gave up first (its namespace went with it): its own report follows.
        Err(_) if !crate::sys::process::alive(pid.as_raw()) => None,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e.into());
        }
    };
    if plan.wait_network {
        let _ = message::send(ours.as_fd(), &ToChild::NetworkReady, None);
    }
    let (mut pty, mut driver, mut server, mut fakeroot) = (None, None, None, None);
    let mut door = None;
    loop {
        match message::recv::<ToParent>(ours.as_fd()) {
            Ok(Some((ToParent::Mounted { driver: d }, _))) => driver = Some(d),
            Ok(Some((ToParent::Pty, fd))) => pty = fd,
            Ok(Some((ToParent::Fuse, Some(fd)))) => server = Some(serve_fuse(host, plan, pid, fd)?),
            Ok(Some((ToParent::Fakeroot, Some(fd)))) => {
                let Some(s) = &server else {
                    return Err(io(
                        "the init asked for a fakeroot without nook's FUSE overlay",
                    )(std::io::Error::from_raw_os_error(
                        libc::EPROTO,
                    )));
                };
                let fs = super::fakeroot::Overlayfs {
                    overlay: s.overlay().clone(),
                    invalidate: s.invalidator(),
                };
                let rt = plan.mountpoint.parent().unwrap_or(&plan.mountpoint);
                match super::fakeroot::Door::open(rt, pid, fs.clone()) {
                    Ok(d) => door = Some(d),
                    Err(e) => tracing::warn!("fakeroot: no door for nook exec: {e}"),
                }
                match super::fakeroot::Fakeroot::start(fd, pid, fs) {
                    Ok(f) => fakeroot = Some(f),
                    // The init is gone already (its report follows): nothing to supervise.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(io("cannot start nook's fakeroot")(e)),
                }
                let invalidate = s.invalidator();
                for ino in s.overlay().enforce_owners() {
                    invalidate(ino);
                }
                let _ = message::send(ours.as_fd(), &ToChild::FakerootReady, None);
            }
            Ok(Some((ToParent::Fakeroot, None))) => {
                return Err(io("the fakeroot's listener got lost")(
                    std::io::Error::from_raw_os_error(libc::EPROTO),
                ));
            }
            Ok(Some((ToParent::Fuse, None))) => {
                return Err(io("the init's FUSE connection got lost")(
                    std::io::Error::from_raw_os_error(libc::EPROTO),
                ));
            }
            Ok(Some((ToParent::Started, _))) | Ok(None) => {
                return Ok(Launch::Started {
                    pid,
                    pty,
                    driver,
                    server,
                    fakeroot: fakeroot.map(|f| Box::new((f, door))),
                    helper,
                });
            }
            Ok(Some((
                ToParent::Failed {
                    stage,
                    message,
                    exit,
                },
                _,
            ))) => {
                let _ = nix::sys::wait::waitpid(pid, None);
                return Ok(Launch::Failed {
                    stage,
                    message,
                    exit,
                });
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io("lost the container's init")(e.into())),
        }
    }
}

/// The network to start for one container, once its init exists.
struct NetStart {
    mode: net::Mode,
    /// No `--network` was given: where pasta fails, slirp4netns takes over.
    fallback: bool,
    ports: Vec<net::Publish>,
    runtime: PathBuf,
    rt: PathBuf,
    /// For the /etc files of a driver that takes over from pasta.
    hostname: String,
}

impl NetStart {
    /// Whether a helper sets up the namespace (the init waits for it).
    fn helped(&self) -> bool {
        matches!(self.mode, net::Mode::Pasta(_) | net::Mode::Slirp(_))
    }

    fn name(&self) -> &'static str {
        match self.mode {
            net::Mode::Host => "host",
            net::Mode::None | net::Mode::Default => "none",
            net::Mode::Pasta(_) => "pasta",
            net::Mode::Slirp(_) => "slirp4netns",
        }
    }

    fn start(&mut self, pid: Pid) -> Result<Option<net::Helper>, NetError> {
        let dirs = (self.runtime.as_path(), self.rt.as_path());
        match net::start(&self.mode, pid.as_raw(), dirs, &self.ports) {
            Err(e @ (NetError::Failed { .. } | NetError::Timeout { .. }))
                if self.fallback
                    && matches!(self.mode, net::Mode::Pasta(_))
                    && crate::sys::process::alive(pid.as_raw()) =>
            {
                // pasta does not work here: remember it, and take slirp4netns.
                net::record_pasta_refused(&self.runtime, &e.to_string());
                tracing::debug!(error = %e, "pasta failed; using slirp4netns");
                self.mode = net::Mode::Slirp(net::SlirpOptions::default());
                etc::write(&self.rt, &self.hostname, &self.mode).map_err(|source| {
                    NetError::Spawn {
                        tool: "slirp4netns",
                        source,
                    }
                })?;
                net::start(&self.mode, pid.as_raw(), dirs, &self.ports)
            }
            r => r,
        }
    }
}

/// Serves the container's root with nook's FUSE overlay. The server joins the container's
/// user namespace first (this process is still single-threaded), so that it reads and writes
/// the layers with the ids the container sees, and then starts its threads.
fn serve_fuse(
    host: &Host<'_>,
    plan: &Plan,
    pid: Pid,
    fd: OwnedFd,
) -> Result<crate::fuse::Server, RunError> {
    let RootfsPlan::Fuse {
        lowers,
        upper,
        work,
    } = &plan.rootfs
    else {
        return Err(io("the init sent a FUSE connection nook did not ask for")(
            std::io::Error::from_raw_os_error(libc::EPROTO),
        ));
    };
    let ns = std::fs::File::open(format!("/proc/{}/ns/user", pid.as_raw()))
        .map_err(io("cannot open the container's user namespace"))?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| io("cannot join the container's user namespace")(e.into()))?;
    let owners = match host.mapping {
        Mapping::Single { .. } => crate::fuse::Owners::Single,
        _ => crate::fuse::Owners::Mapped,
    };
    let hints: Vec<bool> = lowers
        .iter()
        .map(|l| crate::store::Store::may_have_owner_records(l))
        .collect();
    let layers = crate::fuse::Layers::new(upper, work, lowers)
        .map_err(io("cannot open the image's layers"))?
        .with_owner_hints(&hints);
    let threads = crate::fuse::default_threads();
    crate::fuse::serve(fd, crate::fuse::Overlay::new(layers, owners), threads)
        .map_err(io("cannot start nook's FUSE overlay"))
}

/// Writes the child's uid and gid maps: through newuidmap/newgidmap (run side by side) for a
/// subordinate range, directly for a single mapping.
fn write_maps(
    mapping: &Mapping,
    pid: Pid,
    uids: &IdMap,
    gids: &IdMap,
    meanwhile: &mut dyn FnMut() -> Result<(), RunError>,
) -> Result<(), RunError> {
    if let Mapping::Range { helpers, .. } = mapping {
        let spawn = |tool: &Path, m: &IdMap| {
            Command::new(tool)
                .arg(pid.to_string())
                .args(m.helper_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        };
        let u = spawn(&helpers.newuidmap, uids).map_err(io("cannot run newuidmap"))?;
        let g = spawn(&helpers.newgidmap, gids).map_err(io("cannot run newgidmap"))?;
        let prepared = meanwhile();
        for (tool, child) in [("newuidmap", u), ("newgidmap", g)] {
            let out = child
                .wait_with_output()
                .map_err(io(format!("cannot wait for {tool}")))?;
            if !out.status.success() {
                let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                return Err(RunError::Maps {
                    tool: tool.into(),
                    message: format!("{message} (check /etc/subuid and /etc/subgid)"),
                });
            }
        }
        return prepared;
    }
    let proc = PathBuf::from(format!("/proc/{}", pid.as_raw()));
    let write = |file: &str, text: &str| {
        std::fs::write(proc.join(file), text).map_err(io(format!("cannot write {file}")))
    };
    if !matches!(mapping, Mapping::Root) {
        write("setgroups", "deny")?;
    }
    write("uid_map", &uids.proc_text())?;
    write("gid_map", &gids.proc_text())?;
    meanwhile()
}

/// The user as `--userns keep-id` adds them to the container's passwd and group: the
/// host's names (the uid and gid as names where the host has none) and home path.
fn keep_id_account() -> Option<crate::sandbox::user::Account> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let home = crate::config::home_dir()?.to_str()?.to_owned();
    Some(crate::sandbox::user::Account {
        name: user.map_or_else(|| uid.to_string(), |u| u.name),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        group: nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name),
        home,
    })
}

/// Removes a container directory (files owned by the subordinate range included).
fn remove_dir(host: &Host<'_>, dir: &Path) {
    let _ = super::lifecycle::remove_tree(dir, host.mapping);
}

/// A detached container has started: its output goes to `container.log`, the `nook run -d`
/// that waits is told, and this monitor's own fds 1 and 2 let go of the output pipes.
fn detached(d: Detach, dir: &Path, id: &str) -> Result<super::supervise::Outputs, RunError> {
    use std::io::Write;
    let log = super::logs::LogWriter::create(&dir.join("container.log"), d.rotation)
        .map_err(io("cannot create the container's log"))?;
    let mut ready = d.ready;
    let _ = writeln!(ready, "ok {id}");
    drop(ready);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    Ok(super::supervise::Outputs {
        stdout: d.stdout,
        stderr: d.stderr,
        log,
    })
}

/// docker's `Config`, `HostConfig` and `Mounts` as `nook inspect` shows them.
fn inspect_config(
    req: &RunRequest,
    process: &crate::sandbox::plan::Process,
    hostname: &str,
    stop_signal: Option<String>,
) -> serde_json::Value {
    let o = &req.options;
    let env: Vec<String> = process
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mounts: Vec<serde_json::Value> = o
        .volumes
        .iter()
        .map(|v| match v {
            crate::sandbox::volume::Volume::Bind {
                source,
                target,
                read_only,
                ..
            } => serde_json::json!({
                "Type": "bind", "Source": source, "Destination": target, "RW": !read_only,
            }),
            crate::sandbox::volume::Volume::Tmpfs { target, .. } => serde_json::json!({
                "Type": "tmpfs", "Source": "", "Destination": target, "RW": true,
            }),
            crate::sandbox::volume::Volume::Named {
                name,
                target,
                read_only,
            } => serde_json::json!({
                "Type": "volume", "Name": name, "Destination": target, "RW": !read_only,
            }),
        })
        .collect();
    serde_json::json!({
        "Config": {
            "Hostname": hostname,
            "User": process.user,
            "Env": env,
            "Cmd": process.args,
            "Image": req.image_name,
            "WorkingDir": process.cwd,
            "Tty": process.tty,
            "OpenStdin": process.stdin,
            "StopSignal": stop_signal,
        },
        "HostConfig": {
            "AutoRemove": req.remove,
            "ReadonlyRootfs": o.read_only,
            "Init": o.init,
        },
        "Mounts": mounts,
    })
}
