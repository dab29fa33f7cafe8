//! The container's init: runs in the child that `clone` made in the new namespaces, executes
//! the [`Plan`], and becomes the container's process.
//!
//! Order: wait for the id maps; make every mount private; mount the root; apply the mount
//! plan through [`RealSys`]; the devices' createContainer hooks; resolve the user in the
//! container's own files; pivot_root and detach the old root; startContainer hooks;
//! terminal, limits, the fakeroot's filter and the seccomp profile, capabilities, user; chdir
//! and check the working directory is inside the root (CVE-2024-21626); mark every
//! descriptor close-on-exec; exec.
//! Any failure is reported to nook as a [`ToParent::Failed`] with the exit status to use.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, chdir, pivot_root};

use super::device::HookStage;
use super::message::{self, Stage, ToChild, ToParent};
use super::plan::{Plan, RootfsPlan};
use super::seam::{RealSys, apply};
use super::user::{User, read_confined, resolve};
use crate::rootfs::Rung;
use crate::sys::confined::{RootDir, components};
use crate::sys::process::{
    WinSize, cloexec_from, exit_now, keep_on_exec, reset_signals, set_controlling_tty,
    set_window_size,
};

pub(crate) struct Failure {
    pub(crate) stage: Stage,
    pub(crate) message: String,
    pub(crate) exit: i32,
}

fn fail<E: std::fmt::Display>(stage: Stage, what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| Failure {
        stage,
        message: format!("{what}: {e}"),
        exit: 125,
    }
}

/// Runs the init in the cloned child; never returns.
pub fn init(plan: &Plan, sock: OwnedFd, tty_size: Option<WinSize>) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let Err(f) = setup_and_exec(plan, sock.as_fd(), tty_size);
    let _ = message::send(
        sock.as_fd(),
        &ToParent::Failed {
            stage: f.stage,
            message: f.message,
            exit: f.exit,
        },
        None,
    );
    exit_now(f.exit)
}

fn setup_and_exec(
    plan: &Plan,
    sock: BorrowedFd<'_>,
    tty_size: Option<WinSize>,
) -> Result<Infallible, Failure> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail(Stage::Rootfs, "cannot make the mounts private"))?;
    match message::recv::<ToChild>(sock) {
        Ok(Some((ToChild::MapsWritten, _))) => {}
        _ => {
            return Err(Failure {
                stage: Stage::Process,
                message: "nook went away before writing the id maps".into(),
                exit: 125,
            });
        }
    }
    if plan.namespaces.net {
        crate::sys::netdev::loopback_up().map_err(fail(
            Stage::Process,
            "cannot bring up the loopback interface",
        ))?;
    }
    let driver = mount_root(&plan.rootfs, &plan.mountpoint, sock)?;
    let _ = message::send(sock, &ToParent::Mounted { driver }, None);
    let root =
        RootDir::open(&plan.mountpoint).map_err(fail(Stage::Rootfs, "cannot open the root"))?;
    if let Some(a) = &plan.process.keep_id {
        // Into the writable layer, before any volume is mounted (a volume's files are not
        // nook's to change). Best effort: without the entry the command still runs, as a
        // uid without a name (HOME=/).
        let _ = super::user::add_account(&root, a);
    }
    apply(&mut RealSys { root: &root }, &plan.mounts).map_err(|e| Failure {
        stage: Stage::Mounts,
        message: format!("{e}: {}", e.source),
        exit: 125,
    })?;
    run_hooks(plan, HookStage::CreateContainer)?;
    let p = &plan.process;
    let user = resolve(
        &p.user,
        &p.group_add,
        &read_confined(&root, "/etc/passwd"),
        &read_confined(&root, "/etc/group"),
    )
    .map_err(fail(Stage::User, "cannot start the container"))?;
    root.make_dirs(&components(&p.cwd), 0o755)
        .map_err(fail(Stage::Process, "cannot create the working directory"))?;
    if plan.read_only {
        let top = root
            .open_dir(&[], OFlag::O_PATH)
            .map_err(fail(Stage::Rootfs, "cannot open the root"))?;
        crate::sys::mount::remount_bind(&top, MsFlags::MS_RDONLY)
            .map_err(fail(Stage::Rootfs, "cannot make the root read-only"))?;
    }
    drop(root);
    nix::unistd::sethostname(&plan.hostname)
        .map_err(fail(Stage::Process, "cannot set the hostname"))?;
    enter_root(&plan.mountpoint)?;
    run_hooks(plan, HookStage::StartContainer)?;
    stdio(sock, p.tty, p.stdin, tty_size)?;
    for r in &p.rlimits {
        nix::sys::resource::setrlimit(r.resource, r.soft, r.hard)
            .map_err(fail(Stage::Process, "cannot set a --ulimit"))?;
    }
    if plan.fakeroot {
        // Before the capabilities go: installing a filter needs CAP_SYS_ADMIN (in this
        // namespace) or no_new_privs. nook answers the calls from here on.
        let program = crate::sys::seccomp::notify_program(super::fakeroot::SYSCALLS);
        let listener = crate::sys::seccomp::install_listener(&program).map_err(fail(
            Stage::Process,
            "cannot install the fakeroot's seccomp filter",
        ))?;
        message::send(sock, &ToParent::Fakeroot, Some(listener.as_raw_fd())).map_err(fail(
            Stage::Process,
            "cannot hand the fakeroot's listener to nook",
        ))?;
    }
    install_profile(p)?;
    if plan.wait_network {
        match message::recv::<ToChild>(sock) {
            Ok(Some((ToChild::NetworkReady, _))) => {}
            _ => {
                return Err(Failure {
                    stage: Stage::Process,
                    message: "nook went away before the network was up".into(),
                    exit: 125,
                });
            }
        }
    }
    if plan.fakeroot {
        // The command must not run before nook applies the image's owners.
        match message::recv::<ToChild>(sock) {
            Ok(Some((ToChild::FakerootReady, _))) => {}
            _ => {
                return Err(Failure {
                    stage: Stage::Process,
                    message: "nook went away before the fakeroot was ready".into(),
                    exit: 125,
                });
            }
        }
    }
    become_user(&plan.process, plan.gid_map.lines.len() > 1, &user)?;
    chdir(p.cwd.as_str()).map_err(fail(
        Stage::Process,
        &format!("cannot change to the working directory {}", p.cwd),
    ))?;
    // The working directory must lie inside the new root (CVE-2024-21626: a leaked
    // descriptor as cwd would show as "(unreachable)").
    match nix::unistd::getcwd() {
        Ok(c) if c.starts_with("/") => {}
        _ => {
            return Err(Failure {
                stage: Stage::Process,
                message: "the working directory is outside the container".into(),
                exit: 125,
            });
        }
    }
    let program = find_program(&p.args[0], &p.env)?;
    cloexec_from(3).map_err(fail(Stage::Process, "cannot close nook's descriptors"))?;
    for &fd in &p.preserve_fds {
        // The reaper forks the command with them open, then closes its own copies.
        keep_on_exec(fd).map_err(fail(
            Stage::Process,
            &format!("cannot pass descriptor {fd} on"),
        ))?;
    }
    let args: Vec<CString> = p
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = p
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    if !p.env.iter().any(|(k, _)| k == "HOME") {
        env.push(cstring(&format!("HOME={}", user.home))?);
    }
    if p.init {
        // The reaper forks the command, which asks nook to go (so nook sees the command's pid).
        super::reaper::run(sock, &program, &args, &env)
    }
    ready_then_go(sock)?;
    reset_signals();
    let e = nix::unistd::execve(&program, &args, &env).unwrap_err();
    Err(exec_failure(&p.args[0], e))
}

/// Tells nook the command is about to start and waits for its go: nook records the container
/// as running (the command's pid, under `--init`, with it) before anything of the command's
/// can run.
pub(crate) fn ready_then_go(sock: BorrowedFd<'_>) -> Result<(), Failure> {
    message::send(sock, &ToParent::Ready, None).map_err(fail(
        Stage::Process,
        "cannot tell nook the command is ready",
    ))?;
    match message::recv::<ToChild>(sock) {
        Ok(Some((ToChild::Go, _))) => Ok(()),
        _ => Err(Failure {
            stage: Stage::Process,
            message: "nook went away before the command could start".into(),
            exit: 125,
        }),
    }
}

/// The devices' hooks of `stage`; a failing one fails the start with its output.
fn run_hooks(plan: &Plan, stage: HookStage) -> Result<(), Failure> {
    if plan.hooks.list.is_empty() {
        return Ok(());
    }
    // Nothing of the init's (its socket to nook, the FUSE connection) may reach a hook.
    cloexec_from(3).map_err(fail(Stage::Process, "cannot close nook's descriptors"))?;
    plan.hooks.run(stage).map_err(|e| Failure {
        stage: Stage::Process,
        message: e.to_string(),
        exit: 125,
    })
}

pub(crate) fn cstring(s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| Failure {
        stage: Stage::Process,
        message: format!("{s:?} contains a NUL byte"),
        exit: 125,
    })
}

/// Mounts the container's root on the plan's mount point.
fn mount_root(
    rootfs: &RootfsPlan,
    mountpoint: &Path,
    sock: BorrowedFd<'_>,
) -> Result<Rung, Failure> {
    match rootfs {
        RootfsPlan::Overlay {
            layers_dir,
            lowers,
            upper,
            work,
        } => {
            crate::rootfs::mount_overlay(layers_dir, lowers, upper, work, mountpoint).map_err(
                |e| Failure {
                    stage: Stage::Overlay,
                    message: format!("the kernel refused overlayfs: {e}"),
                    exit: 125,
                },
            )?;
            Ok(Rung::Overlay)
        }
        RootfsPlan::Fuse { .. } => {
            let fuse = crate::rootfs::mount_fuse(mountpoint)
                .map_err(fail(Stage::Rootfs, "cannot mount nook's FUSE overlay"))?;
            message::send(sock, &ToParent::Fuse, Some(fuse.as_raw_fd())).map_err(fail(
                Stage::Rootfs,
                "cannot hand the FUSE connection to nook",
            ))?;
            Ok(Rung::Fuse)
        }
        RootfsPlan::Squash { lower, rootfs, .. } => {
            let fuse = crate::rootfs::mount_fuse(lower)
                .map_err(fail(Stage::Rootfs, "cannot mount the squashfs image"))?;
            message::send(sock, &ToParent::Fuse, Some(fuse.as_raw_fd())).map_err(fail(
                Stage::Rootfs,
                "cannot hand the squashfs connection to nook",
            ))?;
            drop(fuse);
            mount_root(rootfs, mountpoint, sock)
        }
        RootfsPlan::Copy { layers, dest } => {
            crate::rootfs::copy_layers(layers, dest)
                .map_err(fail(Stage::Rootfs, "cannot copy the image's layers"))?;
            // pivot_root needs a mount point.
            mount(
                Some(dest.as_path()),
                mountpoint,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail(Stage::Rootfs, "cannot bind the copied root"))?;
            Ok(Rung::Copy)
        }
    }
}

/// pivot_root into `root` and detach the old root, leaving nothing of the host reachable.
fn enter_root(root: &Path) -> Result<(), Failure> {
    chdir(root).map_err(fail(Stage::Rootfs, "cannot enter the root"))?;
    pivot_root(".", ".").map_err(fail(Stage::Rootfs, "pivot_root failed"))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(fail(Stage::Rootfs, "cannot detach the old root"))?;
    chdir("/").map_err(fail(Stage::Rootfs, "cannot enter the root"))?;
    Ok(())
}

/// A new session; with `tty`, a terminal from the container's own devpts whose master goes to
/// nook; without `stdin`, /dev/null as standard input.
fn stdio(
    sock: BorrowedFd<'_>,
    tty: bool,
    stdin: bool,
    size: Option<WinSize>,
) -> Result<(), Failure> {
    nix::unistd::setsid().map_err(fail(Stage::Process, "setsid failed"))?;
    if tty {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(fail(Stage::Process, "cannot open /dev/ptmx"))?;
        nix::pty::grantpt(&master).map_err(fail(Stage::Process, "grantpt failed"))?;
        nix::pty::unlockpt(&master).map_err(fail(Stage::Process, "unlockpt failed"))?;
        let name = nix::pty::ptsname_r(&master).map_err(fail(Stage::Process, "ptsname failed"))?;
        let slave = nix::fcntl::open(
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(fail(Stage::Process, "cannot open the terminal"))?;
        if let Some(s) = size {
            let _ = set_window_size(slave.as_fd(), s);
        }
        message::send(sock, &ToParent::Pty, Some(master.as_raw_fd()))
            .map_err(fail(Stage::Process, "cannot hand the terminal to nook"))?;
        drop(master);
        set_controlling_tty(slave.as_fd())
            .map_err(fail(Stage::Process, "cannot take the terminal"))?;
        for dup in [
            nix::unistd::dup2_stdin,
            nix::unistd::dup2_stdout,
            nix::unistd::dup2_stderr,
        ] {
            dup(&slave).map_err(fail(Stage::Process, "cannot attach the terminal"))?;
        }
    } else if !stdin {
        let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, Mode::empty())
            .map_err(fail(Stage::Process, "cannot open /dev/null"))?;
        nix::unistd::dup2_stdin(&null)
            .map_err(fail(Stage::Process, "cannot set up standard input"))?;
    }
    Ok(())
}

/// The container's seccomp profile, while the capabilities needed to install it remain
/// (CAP_SYS_ADMIN in this namespace); what follows until exec is allowed by docker's.
pub(crate) fn install_profile(process: &super::plan::Process) -> Result<(), Failure> {
    match &process.seccomp {
        Some(program) => crate::sys::seccomp::install(&program.sock_filters())
            .map_err(fail(Stage::Process, "cannot install the seccomp profile")),
        None => Ok(()),
    }
}

/// Capabilities, groups and ids, in the order that keeps the capabilities needed to set them.
pub(crate) fn become_user(
    process: &super::plan::Process,
    multi_gid: bool,
    user: &User,
) -> Result<(), Failure> {
    use caps::CapSet;
    let keep: caps::CapsHashSet = process.caps.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            let _ = caps::drop(None, CapSet::Bounding, c);
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(fail(
        Stage::Process,
        "cannot clear inheritable capabilities",
    ))?;
    let _ = caps::clear(None, CapSet::Ambient);
    let unmapped = |what: &str, id: u32| Failure {
        stage: Stage::User,
        message: format!(
            "{what} {id} is not mapped in this container: without a subordinate id range (/etc/subuid) only the container's user is (the image's USER, or nook run --user)"
        ),
        exit: 125,
    };
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // With a single mapping setgroups is denied: the process keeps no extra groups.
        if multi_gid || e != nix::errno::Errno::EPERM {
            return Err(fail(Stage::User, "cannot set supplementary groups")(e));
        }
    }
    let (g, u) = (Gid::from_raw(user.gid), Uid::from_raw(user.uid));
    nix::unistd::setresgid(g, g, g).map_err(|_| unmapped("group", user.gid))?;
    nix::unistd::setresuid(u, u, u).map_err(|_| unmapped("user", user.uid))?;
    if user.uid == 0 {
        caps::set(None, CapSet::Effective, &keep)
            .map_err(fail(Stage::Process, "cannot set capabilities"))?;
        caps::set(None, CapSet::Permitted, &keep)
            .map_err(fail(Stage::Process, "cannot set capabilities"))?;
    } else {
        // Under a single mapping the init already runs as this id, so setresuid changed
        // nothing and the kernel kept the namespace's full capabilities: drop them here.
        caps::clear(None, CapSet::Effective)
            .map_err(fail(Stage::Process, "cannot drop capabilities"))?;
        caps::clear(None, CapSet::Permitted)
            .map_err(fail(Stage::Process, "cannot drop capabilities"))?;
    }
    if process.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(fail(Stage::Process, "cannot set no_new_privs"))?;
    }
    Ok(())
}

/// The program to exec: a path as given, else the first executable match in `PATH`.
pub(crate) fn find_program(arg0: &str, env: &[(String, String)]) -> Result<CString, Failure> {
    let not_found = |msg: String| Failure {
        stage: Stage::Exec,
        message: msg,
        exit: 127,
    };
    if arg0.contains('/') {
        return cstring(arg0);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(super::spec::DEFAULT_PATH, |(_, v)| v.as_str());
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                let c = CString::new(candidate.as_os_str().as_bytes())
                    .map_err(|_| not_found(String::new()))?;
                if nix::unistd::access(c.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok() {
                    return Ok(c);
                }
                denied.get_or_insert(c);
            }
            _ => {}
        }
    }
    match denied {
        Some(c) => Ok(c),
        None => Err(not_found(format!(
            "exec: {arg0:?}: executable file not found in $PATH"
        ))),
    }
}

/// The exit status and message docker gives for a failed exec.
pub(crate) fn exec_failure(arg0: &str, e: nix::errno::Errno) -> Failure {
    use nix::errno::Errno;
    let (exit, why) = match e {
        Errno::ENOENT => (127, "no such file or directory"),
        Errno::EACCES | Errno::EPERM => (126, "permission denied"),
        Errno::ENOEXEC => (126, "exec format error"),
        _ => (126, e.desc()),
    };
    Failure {
        stage: Stage::Exec,
        message: format!("exec {arg0:?}: {why}"),
        exit,
    }
}
