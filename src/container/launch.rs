//! Starting a container's init: one `clone` into the new namespaces, the id maps written from
//! outside, the network brought up, and the init's setup followed (its FUSE root served, its
//! fakeroot supervised) until the command runs or the init reports why it could not.

use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;

use super::run::{Host, RunError, io};
use crate::net::{self, NetStart};
use crate::rootfs::Rung;
use crate::sandbox::message::{self, Stage, ToChild, ToParent};
use crate::sandbox::plan::{Plan, RootfsPlan};
use crate::sys::idmap::Mapping;
use crate::sys::process::{WinSize, clone_fork};
use crate::sys::userns::map_child;

pub(super) enum Launch {
    /// Setup is done; the init waits for [`release`] to start the command.
    Ready {
        pid: Pid,
        /// The setup socket, for [`release`].
        sock: OwnedFd,
        pty: Option<OwnedFd>,
        /// The rung the init mounted (none if it ended before it said).
        driver: Option<Rung>,
        /// nook's FUSE overlay serving the root, when that rung is used.
        server: Option<crate::fuse::Server>,
        /// squashfuse serving a squashfs image's tree.
        squash: Option<crate::rootfs::squash::Squashfuse>,
        /// The fakeroot supervising stat and chown, with one id mapped on the FUSE rung, and
        /// its door for `nook exec`.
        fakeroot: Option<Box<(super::fakeroot::Fakeroot, Option<super::fakeroot::Door>)>>,
        /// slirp4netns or pasta.
        helper: Option<net::Helper>,
        /// With `--pid host`, the container's processes, for nook to end with the init.
        members: Option<super::members::Members>,
    },
    Failed {
        stage: Stage,
        message: String,
        exit: i32,
    },
}

/// Clones the init, writes its id maps, and follows its setup until the command runs.
pub(super) fn launch(
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
    let mut flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS;
    if plan.namespaces.pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if plan.namespaces.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
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
    if let Err(e) = map_child(
        host.mapping,
        pid.as_raw(),
        &plan.uid_map,
        &plan.gid_map,
        prepare,
    ) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    // Read while the init waits for its maps, before the command can have started anything.
    let members = if plan.namespaces.pid {
        None
    } else {
        match super::members::Members::of(std::path::Path::new("/proc"), pid) {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(io("cannot read the container's user namespace")(e));
            }
        }
    };
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
    let mut squash = None;
    let mut door = None;
    loop {
        match message::recv::<ToParent>(ours.as_fd()) {
            Ok(Some((ToParent::Mounted { driver: d }, _))) => driver = Some(d),
            Ok(Some((ToParent::Pty, fd))) => pty = fd,
            Ok(Some((ToParent::Fuse, Some(fd)))) if squash.is_none() && mounts_squashfs(plan) => {
                match serve_squash(plan, fd) {
                    Ok(s) => squash = Some(s),
                    Err(e) => {
                        // The init waits on a connection nobody serves: end it.
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(pid, None);
                        return Err(e);
                    }
                }
            }
            Ok(Some((ToParent::Fuse, Some(fd)))) => server = Some(serve_fuse(host, plan, pid, fd)?),
            Ok(Some((ToParent::Fakeroot, Some(fd)))) => {
                let Some(s) = &server else {
                    return Err(RunError::Protocol(
                        "the init asked for a fakeroot without nook's FUSE overlay",
                    ));
                };
                let fs = super::fakeroot::Overlayfs {
                    overlay: s.overlay().clone(),
                    invalidate: s.invalidator(),
                };
                let rt = plan.mountpoint.parent().unwrap_or(&plan.mountpoint);
                match super::fakeroot::root_dev(pid) {
                    Ok(dev) => {
                        match super::fakeroot::Door::open(rt, dev, fs.clone()) {
                            Ok(d) => door = Some(d),
                            Err(e) => tracing::warn!("fakeroot: no door for nook exec: {e}"),
                        }
                        match super::fakeroot::Fakeroot::start(fd, dev, fs) {
                            Ok(f) => fakeroot = Some(f),
                            Err(e) => return Err(io("cannot start nook's fakeroot")(e)),
                        }
                    }
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
                return Err(RunError::Protocol("the fakeroot's listener got lost"));
            }
            Ok(Some((ToParent::Fuse, None))) => {
                return Err(RunError::Protocol("the init's FUSE connection got lost"));
            }
            // (end-of-file here: the init died; `release` finds it so.)
            Ok(Some((ToParent::Ready, _))) | Ok(None) => {
                return Ok(Launch::Ready {
                    pid,
                    sock: ours,
                    pty,
                    driver,
                    server,
                    squash,
                    fakeroot: fakeroot.map(|f| Box::new((f, door))),
                    helper,
                    members,
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

/// Lets the init start the command (the caller has recorded the container as running) and
/// waits until it has: `Ok(None)` once it runs, the init's report where it could not (the
/// program could not be executed) after the init has been reaped.
pub(super) fn release(sock: &OwnedFd, pid: Pid) -> Result<Option<(Stage, String, i32)>, RunError> {
    // An init that already died finds no reader: its end shows below.
    let _ = message::send(sock.as_fd(), &ToChild::Go, None);
    loop {
        match message::recv::<ToParent>(sock.as_fd()) {
            Ok(Some((
                ToParent::Failed {
                    stage,
                    message,
                    exit,
                },
                _,
            ))) => {
                let _ = nix::sys::wait::waitpid(pid, None);
                return Ok(Some((stage, message, exit)));
            }
            // The command's copy of the socket closes with its exec (and the reaper's after
            // its fork).
            Ok(None) => return Ok(None),
            Ok(Some(_)) => return Err(RunError::Protocol("the init spoke out of turn")),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io("lost the container's init")(e.into())),
        }
    }
}

/// Whether the plan mounts a squashfs image (its first FUSE connection is squashfuse's).
fn mounts_squashfs(plan: &Plan) -> bool {
    matches!(plan.rootfs, RootfsPlan::Squash { .. })
}

/// Starts squashfuse on the connection the init mounted for the squashfs image.
fn serve_squash(plan: &Plan, fd: OwnedFd) -> Result<crate::rootfs::squash::Squashfuse, RunError> {
    let RootfsPlan::Squash { file, offset, .. } = &plan.rootfs else {
        return Err(RunError::Protocol(
            "the init mounted a squashfs nook did not ask for",
        ));
    };
    crate::rootfs::squash::Squashfuse::start(fd, file, *offset)
        .map_err(io("cannot start squashfuse (install Debian's squashfuse)"))
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
        return Err(RunError::Protocol(
            "the init sent a FUSE connection nook did not ask for",
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
    // The container is cloned already: its limit stays the caller's. The server's caches of
    // descriptors are sized from the raised one.
    match crate::fuse::raise_fd_limit() {
        Ok(n) => tracing::debug!("FUSE server descriptor limit: {n}"),
        Err(e) => tracing::debug!("FUSE server keeps its descriptor limit: {e}"),
    }
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
