//! `nook exec`: a new process in a running container, with the container's namespaces, root,
//! capabilities and no_new_privs, and nothing of nook's: no descriptor, and nook's own image
//! is not dumpable while it is inside (CVE-2019-5736: a container process must not reach
//! nook's binary through /proc/PID/exe).
//!
//! nook forks a helper that joins the user namespace first and then the others, enters the
//! container's root, and clones the command's process with CLONE_PARENT, so that the process
//! is in the container's pid namespace and nook's own child: nook waits for it, forwards
//! signals and copies the terminal as `run` does.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::Record;
use super::report::{self, Report};
use super::supervise::{Signals, supervise};
use crate::sandbox::plan::Process;

/// What `exec` needs to know of the container's process, kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub env: Vec<(String, String)>,
    pub user: String,
    pub group_add: Vec<String>,
    pub cwd: String,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    /// More than one gid mapped (setgroups works).
    pub multi_gid: bool,
    /// The container runs with nook's fakeroot: exec'd commands get its filter too.
    #[serde(default)]
    pub fakeroot: bool,
    /// The container's seccomp filter: exec'd commands get it too.
    #[serde(default)]
    pub seccomp: Option<crate::sandbox::seccomp::Program>,
}

impl ExecSpec {
    pub fn of(p: &Process, multi_gid: bool) -> ExecSpec {
        ExecSpec {
            env: p.env.clone(),
            user: p.user.clone(),
            group_add: p.group_add.clone(),
            cwd: p.cwd.clone(),
            caps: p.caps.iter().map(|c| c.to_string()).collect(),
            no_new_privs: p.no_new_privs,
            multi_gid,
            fakeroot: false,
            seccomp: p.seccomp.clone(),
        }
    }
}

/// One `nook exec`.
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `-e K=V`.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub detach: bool,
    /// nook's runtime directory (where the container's fakeroot door is).
    pub runtime: std::path::PathBuf,
}

/// Why exec failed before the command ran.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} was started by a nook that kept no exec settings: restart it")]
    NoSpec(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Setup { message: String, exit: i32 },
    #[error(transparent)]
    Env(#[from] crate::sandbox::env::EnvError),
}

impl ExecError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Setup { exit, .. } => *exit,
            _ => 125,
        }
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The namespaces exec joins, user first.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Runs `req` in container `r`; returns the command's exit status (docker's 126/127 when it
/// cannot be executed), or 0 at once with `detach`.
pub fn exec(r: &Record, req: &ExecRequest) -> Result<i32, ExecError> {
    let Some(pid) = r.entry_pid() else {
        return Err(ExecError::NotRunning(r.name.clone()));
    };
    let Some(spec) = r.exec.clone() else {
        return Err(ExecError::NoSpec(r.name.clone()));
    };
    let mut env = spec.env.clone();
    let entries = req.env.iter().map(String::as_str);
    crate::sandbox::env::merge(&mut env, entries, &|k| std::env::var(k).ok())?;
    // Everything of the container is opened before anything is joined.
    let mut joins = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let Ok(target) = std::fs::read_link(&theirs) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/self/ns/{name}")).ok() == Some(target) {
            continue; // shared with the host (--network host): nothing to join
        }
        let f =
            std::fs::File::open(&theirs).map_err(io("cannot open the container's namespaces"))?;
        joins.push((OwnedFd::from(f), *flag));
    }
    let root: OwnedFd = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io("cannot open the container's root")(e.into()))?;
    // Blocked first: a resize from here on waits in the signalfd for `supervise`.
    let signals = Signals::block().map_err(io("cannot block signals"))?;
    let pty = if req.tty && !req.detach {
        let (m, s) = open_pty().map_err(io("cannot open a terminal"))?;
        // The size before the command starts: its first `stty size` must not see 0x0.
        if let Some(size) = crate::sys::process::window_size(std::io::stdin().as_fd()) {
            let _ = crate::sys::process::set_window_size(m.as_fd(), size);
        }
        Some((m, s))
    } else {
        None
    };
    // With the fakeroot, the command's filter goes to the monitor through its door (reached
    // here, before any namespace is joined).
    let door = if spec.fakeroot {
        let rt = std::fs::File::open(req.runtime.join("containers").join(&r.id))
            .map_err(io("cannot open the container's runtime directory"))?;
        let path = format!(
            "/proc/self/fd/{}/{}",
            std::os::fd::AsRawFd::as_raw_fd(&rt),
            super::fakeroot::DOOR
        );
        Some(
            std::os::unix::net::UnixStream::connect(path)
                .map_err(io("cannot reach the container's fakeroot"))?,
        )
    } else {
        None
    };
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("cannot create a pipe")(e.into()))?;
    let root_guard = root;
    let target = Target {
        joins,
        root: root_guard.as_fd(),
        env,
        spec,
        req,
        slave: pty.as_ref().map(|(_, s)| s.as_fd()),
        door,
    };
    let helper = match crate::sys::process::clone_fork(CloneFlags::empty())
        .map_err(io("cannot start the exec helper"))?
    {
        None => {
            drop(report_r);
            helper(&target, report_w)
        }
        Some(p) => p,
    };
    drop(report_w);
    drop(target);
    drop(root_guard);
    // The helper reports the command's pid, or why it could not start it.
    let silent = "the exec helper ended without a word";
    let report = report::read(std::fs::File::from(report_r), silent);
    let _ = nix::sys::wait::waitpid(helper, None);
    let child = match report {
        Report::Spawned { pid } => Pid::from_raw(pid),
        Report::Failed { message, exit } => return Err(ExecError::Setup { message, exit }),
        _ => {
            return Err(ExecError::Setup {
                message: "the exec helper sent another helper's report".into(),
                exit: 125,
            });
        }
    };
    if req.detach {
        return Ok(0);
    }
    let (master, slave) = match pty {
        Some((m, s)) => (Some(m), Some(s)),
        None => (None, None),
    };
    drop(slave);
    supervise(child, &signals, master, req.stdin, None).map_err(io("lost track of the command"))
}

/// What the helper needs.
struct Target<'a> {
    joins: Vec<(OwnedFd, CloneFlags)>,
    root: std::os::fd::BorrowedFd<'a>,
    env: Vec<(String, String)>,
    spec: ExecSpec,
    req: &'a ExecRequest,
    slave: Option<std::os::fd::BorrowedFd<'a>>,
    door: Option<std::os::unix::net::UnixStream>,
}

/// A new pty: (master, slave), both close-on-exec.
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let master: OwnedFd = master.into();
    Ok((master, slave))
}

/// The helper: joins, enters the root, clones the command as nook's child, reports its pid.
fn helper(t: &Target<'_>, report: OwnedFd) -> ! {
    let mut report = std::fs::File::from(report);
    let _ = nix::sys::prctl::set_dumpable(false);
    let result = (|| -> Result<Pid, (i32, String)> {
        let fail = |what: &str| {
            let what = what.to_owned();
            move |e: nix::errno::Errno| (125, format!("{what}: {e}"))
        };
        for (fd, flag) in &t.joins {
            nix::sched::setns(fd, *flag).map_err(fail("cannot join the container's namespaces"))?;
        }
        nix::unistd::fchdir(t.root).map_err(fail("cannot enter the container's root"))?;
        nix::unistd::chroot(".").map_err(fail("cannot enter the container's root"))?;
        nix::unistd::chdir("/").map_err(fail("cannot enter the container's root"))?;
        let flags = CloneFlags::CLONE_PARENT;
        match crate::sys::process::clone_fork(flags)
            .map_err(|e| (125, format!("cannot start the command: {e}")))?
        {
            None => command(t, &mut report),
            Some(p) => Ok(p),
        }
    })();
    match result {
        Ok(p) => {
            report::write(&report, &Report::Spawned { pid: p.as_raw() });
            crate::sys::process::exit_now(0)
        }
        Err((exit, message)) => {
            report::write(&report, &Report::Failed { exit, message });
            crate::sys::process::exit_now(exit)
        }
    }
}

/// The command's process: in every namespace of the container, inside its root.
fn command(t: &Target<'_>, report: &mut std::fs::File) -> ! {
    use std::io::Write;
    let result = (|| -> Result<std::convert::Infallible, crate::sandbox::child::Failure> {
        // Still nook's image: not dumpable until exec (the flag is reset by execve).
        let _ = nix::sys::prctl::set_dumpable(false);
        if !t.req.detach {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        }
        let fail = |what: &str| {
            let what = what.to_owned();
            move |e: nix::errno::Errno| crate::sandbox::child::Failure {
                stage: crate::sandbox::message::Stage::Process,
                message: format!("{what}: {e}"),
                exit: 125,
            }
        };
        let _ = nix::unistd::setsid();
        stdio(t).map_err(fail("cannot set up standard input and output"))?;
        let process = Process {
            args: t.req.args.clone(),
            env: t.env.clone(),
            cwd: t.req.workdir.clone().unwrap_or_else(|| t.spec.cwd.clone()),
            user: t.req.user.clone().unwrap_or_else(|| t.spec.user.clone()),
            group_add: t.spec.group_add.clone(),
            caps: t.spec.caps.iter().filter_map(|c| c.parse().ok()).collect(),
            no_new_privs: t.spec.no_new_privs,
            seccomp: t.spec.seccomp.clone(),
            rlimits: Vec::new(),
            tty: t.req.tty,
            stdin: t.req.stdin,
            keep_id: None,
            init: false,
            preserve_fds: Vec::new(),
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let user =
            crate::sandbox::user::resolve(&process.user, &process.group_add, &passwd, &group)
                .map_err(|e| crate::sandbox::child::Failure {
                    stage: crate::sandbox::message::Stage::User,
                    message: format!("cannot exec in the container: {e}"),
                    exit: 125,
                })?;
        if let Some(door) = &t.door {
            fakeroot(door).map_err(|e| crate::sandbox::child::Failure {
                stage: crate::sandbox::message::Stage::Process,
                message: format!("cannot hand the fakeroot this command: {e}"),
                exit: 125,
            })?;
        }
        crate::sandbox::child::install_profile(&process)?;
        crate::sandbox::child::become_user(&process, t.spec.multi_gid, &user)?;
        nix::unistd::chdir(process.cwd.as_str()).map_err(fail(&format!(
            "cannot change to the working directory {}",
            process.cwd
        )))?;
        let program = crate::sandbox::child::find_program(&process.args[0], &process.env)?;
        let args: Vec<CString> = process
            .args
            .iter()
            .map(|a| crate::sandbox::child::cstring(a))
            .collect::<Result<_, _>>()?;
        let mut env: Vec<CString> = process
            .env
            .iter()
            .map(|(k, v)| crate::sandbox::child::cstring(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        if !process.env.iter().any(|(k, _)| k == "HOME") {
            env.push(crate::sandbox::child::cstring(&format!(
                "HOME={}",
                user.home
            ))?);
        }
        crate::sys::process::cloexec_from(3).map_err(|e| crate::sandbox::child::Failure {
            stage: crate::sandbox::message::Stage::Process,
            message: format!("cannot close nook's descriptors: {e}"),
            exit: 125,
        })?;
        crate::sys::process::reset_signals();
        let e = nix::unistd::execve(&program, &args, &env).unwrap_err();
        Err(crate::sandbox::child::exec_failure(&process.args[0], e))
    })();
    let Err(f) = result;
    // The helper reported our pid already; the reason goes to standard error.
    let _ = report;
    let _ = writeln!(std::io::stderr(), "Error: {}", f.message);
    crate::sys::process::exit_now(f.exit)
}

/// Installs the fakeroot's filter (while the capabilities last) and hands its listener to
/// the monitor; returns once the monitor supervises it.
fn fakeroot(door: &std::os::unix::net::UnixStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let program = crate::sys::seccomp::notify_program(crate::sandbox::fakeroot::SYSCALLS);
    let listener = crate::sys::seccomp::install_listener(&program)?;
    crate::sandbox::message::send(
        door.as_fd(),
        &crate::sandbox::message::ToParent::Fakeroot,
        Some(listener.as_raw_fd()),
    )?;
    drop(listener);
    let mut ack = [0u8; 1];
    let mut d = door;
    match std::io::Read::read(&mut d, &mut ack)? {
        1 => Ok(()),
        _ => Err(std::io::Error::other("the monitor did not take it")),
    }
}

/// The command's standard streams: the terminal, the caller's (stdin only with -i), or
/// /dev/null when detached.
fn stdio(t: &Target<'_>) -> nix::Result<()> {
    use nix::fcntl::OFlag;
    let null = || nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty());
    if let Some(slave) = t.slave {
        crate::sys::process::set_controlling_tty(slave).map_err(|_| nix::errno::Errno::ENOTTY)?;
        nix::unistd::dup2_stdin(slave)?;
        nix::unistd::dup2_stdout(slave)?;
        nix::unistd::dup2_stderr(slave)?;
        return Ok(());
    }
    if t.req.detach {
        let n = null()?;
        nix::unistd::dup2_stdin(&n)?;
        nix::unistd::dup2_stdout(&n)?;
        nix::unistd::dup2_stderr(&n)?;
    } else if !t.req.stdin {
        nix::unistd::dup2_stdin(&null()?)?;
    }
    Ok(())
}
