//! `nook run` in the foreground: a container record, a plan, one `clone` into the new
//! namespaces, the id maps written from outside, then signals and the terminal until the init
//! exits. No daemon, no re-exec: the child is nook's own image until it execs the command.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::cgroup::{self, Limits};
pub use super::monitor::run_detached;
use super::supervise::{Signals, supervise};
use super::{ContainerError, Containers, Record, new_id};
use crate::net::{self, NetError, NetStart, etc};
use crate::rootfs::{self, OverlayProbe, Rung};
use crate::sandbox::device::Hooks;
use crate::sandbox::message::Stage;
use crate::sandbox::plan::{Namespaces, Plan, RootfsPlan, standard_mounts, with_devices};
use crate::sandbox::spec::{self, Driver, ImageProcess, RunOptions, SpecError, UserNs};
use crate::store::{ImageRecord, Store, StoreError};
use crate::sys::idmap::Mapping;
use crate::sys::process::{thread_count, window_size};

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
    #[error(transparent)]
    Squash(#[from] crate::archive::squash::SquashError),
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
    #[error(transparent)]
    Maps(#[from] crate::sys::userns::UserNsError),
    /// The container's init failed before the command ran.
    #[error("{message}")]
    Setup { message: String, exit: i32 },
    /// The container's init or monitor broke the protocol between them and nook.
    #[error("{0}")]
    Protocol(&'static str),
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

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
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
    /// `--label`s, kept in the record.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--stop-signal`: the image's STOPSIGNAL otherwise.
    pub stop_signal: Option<String>,
    /// A squashfs or SIF file to run from (`image` then has no layers).
    pub file: Option<crate::archive::squash::FileImage>,
}

/// What a detached run's monitor holds: the read ends of the container's stdout and stderr
/// (their write ends are this process's fds 1 and 2 until the container runs), the write end
/// of its input (with `-i` and no terminal; the read end is fd 0 until then), where to report
/// the start, the monitor's options, and whether the container gets an attach socket.
pub struct Detach {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
    pub ready: std::fs::File,
    pub options: super::monitor::MonitorOptions,
    pub attach: bool,
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
    if req.detach.is_none() {
        crate::sandbox::fds::settle(&mut process.preserve_fds, &process.env)
            .map_err(io("cannot mark nook's descriptors close-on-exec"))?;
    }
    let containers = Containers::new(host.store.root());
    let mut record = Record::new(
        id.clone(),
        req.image_name.clone(),
        req.image.id.clone(),
        process.args.clone(),
        req.existing.as_ref().map_or_else(now, |r| r.created),
        super::State::Created,
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
    record.labels = req.labels.clone();
    let stop_signal = req.stop_signal.clone().or_else(|| {
        config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone())
    });
    record.config = super::inspect::inspect_config(&req, &process, &hostname, stop_signal);
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
    // `nook rename` may have renamed the container while it ran: keep the name on disk.
    if let Ok(Some(saved)) = containers.load(&id) {
        record.name = saved.name;
    }
    record.exit_code = Some(code);
    record.finished = Some(now());
    if record.started.is_some() {
        containers.event("die", &record, &[("exitCode", &code.to_string())]);
    }
    if req.remove {
        containers.save_exit(&id, code);
        remove_dir(host, &dir);
        containers.event("destroy", &record, &[]);
        // As docker's --rm: the anonymous volumes go with the container.
        let vols = super::volumes::Volumes::new(host.store.root());
        for u in record.volumes.iter().filter(|u| u.anonymous) {
            let _ = vols.remove(&u.name, &[], host.mapping);
        }
    } else {
        if record.state == super::State::Running {
            record.state = super::State::Exited;
        }
        let _ = containers.save(&record);
    }
    result
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
    let mut layers = super::mapping::layers_top_first(&dir.join("upper"), &image_layers);
    if let Some(f) = &req.file
        && matches!(host.mapping, Mapping::Single { .. })
        && !process.user.is_empty()
    {
        // A single mapping maps the image's USER: read its ids from the squashfs.
        let accounts = rt.join("squash-accounts");
        f.write_accounts(&accounts)?;
        layers.push(accounts);
    }
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
        ipc: !o.host_ipc,
        pid: !o.host_pid,
    };
    let tty_gid = gid_map.to_host(5).is_some();
    let probe = rootfs::cached_probe(host.runtime);
    let (upper_base, store_fs) = match &req.file {
        Some(_) => rootfs::squash::upper_base(
            rootfs::unsuitable_fs(host.store.root()),
            rootfs::unsuitable_fs(host.runtime),
            (dir, rt),
        ),
        None => (dir, rootfs::unsuitable_fs(host.store.root())),
    };
    let choice = rootfs::choose(rootfs::Inputs {
        driver: o.driver,
        store_fs,
        probe: probe.as_ref(),
        // A squashfs shows its owners as the container's ids without nook's FUSE overlay.
        single: req.file.is_none() && matches!(host.mapping, Mapping::Single { .. }),
        fuse: rootfs::fuse_usable(),
        shared: host.store.foreign_layers(&req.image),
    });
    if let Some(why) = &choice.why {
        tracing::debug!(why, "not using the kernel overlay");
    }
    let mut rung = match &req.file {
        Some(_) => rootfs::squash::rung(o.driver, choice.rung).ok_or_else(|| RunError::Setup {
            message: "--rootfs-driver fuse does not run squashfs images: use overlay or copy"
                .into(),
            exit: 125,
        })?,
        None => choice.rung,
    };
    let tty_size = if process.tty {
        let console = detach.as_ref().and_then(|d| d.options.console);
        console.or_else(|| window_size(std::io::stdin().as_fd()))
    } else {
        None
    };
    let containers = Containers::new(host.store.root());
    loop {
        let rootfs = match &req.file {
            Some(f) => rootfs::squash::plan(&f.path, f.offset, upper_base, rt, rung),
            None => rootfs::ladder::plan(host.store, &req.image, dir, rung),
        };
        let plan = Plan {
            namespaces: ns,
            uid_map: uid_map.clone(),
            gid_map: gid_map.clone(),
            hostname: hostname.to_owned(),
            rootfs,
            mountpoint: rt.join("merged"),
            read_only: o.read_only,
            mounts: with_devices(
                standard_mounts(ns, tty_gid, &etc_files, &o.volumes),
                &o.devices.mounts,
            ),
            process: process.clone(),
            fakeroot: rung == Rung::Fuse && matches!(host.mapping, Mapping::Single { .. }),
            wait_network: net.helped(),
            hooks: Hooks {
                list: o.devices.hooks.clone(),
                id: record.id.clone(),
                bundle: rt.join("bundle"),
            },
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
            if !plan.hooks.list.is_empty() {
                write_bundle(&plan)
                    .map_err(io("cannot write the bundle for the devices' hooks"))?;
            }
            make_dirs(&plan.rootfs)
        };
        let signals = Signals::block().map_err(io("cannot block signals"))?;
        let launched = super::launch::launch(host, &plan, tty_size, &mut net, &mut prepare)?;
        match launched {
            super::launch::Launch::Ready {
                pid,
                sock,
                pty,
                driver,
                server,
                squash,
                fakeroot,
                helper,
                members,
            } => {
                for &fd in &process.preserve_fds {
                    crate::sys::process::close_inherited(fd);
                }
                if driver == Some(Rung::Overlay) && rootfs::cached_probe(host.runtime).is_none() {
                    rootfs::record_probe(host.runtime, &OverlayProbe::Works);
                }
                if req.limits.any() {
                    cgroup::apply(&record.id, &req.limits, pid)?;
                }
                // Running (and in its cgroup) before anything of the command's can run: a
                // `nook port` or `exec` the command's first output prompts finds it so.
                record.state = super::State::Running;
                record.pid = Some(pid.as_raw());
                // Under `--init` the reaper has forked the command, which waits for the go.
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
                if let Some((_, message, exit)) = super::launch::release(&sock, pid)? {
                    // The program could not be executed: the container never ran.
                    (record.state, record.pid, record.started) =
                        (super::State::Created, None, None);
                    return Err(RunError::Setup { message, exit });
                }
                drop(sock);
                containers.event("start", record, &[]);
                let outputs = match detach.take() {
                    Some(d) => {
                        let how = (process.tty, process.stdin);
                        Some(super::monitor::detached(d, dir, &record.id, how)?)
                    }
                    None => None,
                };
                let code = supervise(pid, &signals, pty, process.stdin, outputs);
                if let Some(m) = members {
                    // No pid namespace ends them with the init (see container::members).
                    let n = m.end_all(Path::new("/proc"));
                    tracing::debug!(
                        n,
                        "ended the container's processes left in the host's pid namespace"
                    );
                }
                let code = code.map_err(io("lost track of the container"))?;
                drop(helper);
                drop(fakeroot);
                drop(server);
                drop(squash);
                record.state = super::State::Exited;
                return Ok(code);
            }
            super::launch::Launch::Failed {
                stage: Stage::Overlay,
                message,
                ..
            } if o.driver == Driver::Auto && rung == Rung::Overlay => {
                // The kernel said no: remember it, and take the next rung.
                rootfs::record_probe(host.runtime, &OverlayProbe::Refused(message));
                rung = match &req.file {
                    Some(_) => Rung::Copy,
                    None => Rung::Overlay.below(rootfs::fuse_usable()),
                };
            }
            super::launch::Launch::Failed { message, exit, .. } => {
                return Err(RunError::Setup { message, exit });
            }
        }
    }
}

/// The OCI bundle the devices' hooks are told of: a `config.json` whose root is the
/// container's mount point (tools such as `nvidia-ctk hook update-ldcache` read it to find the
/// root they change, before pivot_root).
fn write_bundle(plan: &Plan) -> std::io::Result<()> {
    let p = &plan.process;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": plan.mountpoint, "readonly": plan.read_only },
        "process": {
            "args": p.args,
            "env": p.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": p.cwd,
        },
        "hostname": plan.hostname,
    });
    std::fs::create_dir_all(&plan.hooks.bundle)?;
    std::fs::write(plan.hooks.bundle.join("config.json"), config.to_string())
}

/// The directories the init mounts on or copies into that the container's record did not
/// make: a copied root, and for a file image its mount point (and its writable layer, when
/// that is in the runtime directory).
fn make_dirs(rootfs: &RootfsPlan) -> Result<(), RunError> {
    match rootfs {
        RootfsPlan::Copy { dest, .. } => {
            std::fs::create_dir_all(dest).map_err(io("cannot create the copied root"))
        }
        RootfsPlan::Squash { lower, rootfs, .. } => {
            std::fs::create_dir_all(lower).map_err(io("cannot create the squashfs mount point"))?;
            if let RootfsPlan::Overlay { upper, work, .. } = &**rootfs {
                std::fs::create_dir_all(upper)
                    .and_then(|()| std::fs::create_dir_all(work))
                    .map_err(io("cannot create the container's writable layer"))?;
            }
            make_dirs(rootfs)
        }
        _ => Ok(()),
    }
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
