//! A single-node Slurm on loopback: Debian's munged, slurmctld and slurmd started by the test,
//! stopped on drop.
//!
//! Everything lives in one temporary directory: munge's key and socket, `slurm.conf` (found by
//! the clients through `SLURM_CONF`), the controller's state and slurmd's spool. The node is
//! `localhost` at 127.0.0.1 whatever the machine's name (`slurmd -N localhost`), its ports are
//! free loopback ports, and it claims more CPUs than the machine has
//! (`SlurmdParameters=config_overrides`) so that parallel tests and 4-rank jobs never queue.
//! The shared cluster tracks processes with `proctrack/linuxproc` and `task/none`. A cluster
//! that enforces jobs' limits ([`Slurm::with_cgroups`]) runs `proctrack/cgroup` and
//! `task/cgroup` on the cgroup v1 memory and freezer controllers, but never at the top of the
//! host's hierarchies: slurmd starts in a cgroup of its own below the suite's
//! (`nook-slurm-…`), in a cgroup namespace rooted there and a mount namespace whose
//! /sys/fs/cgroup shows only those two controllers, so the tree Slurm builds
//! (`slurm_localhost/uid_U/job_J/step_S`) lives, and is removed, inside the suite's own.
//!
//! Jobs run as the submitting user, so the tests submit as the test users (the daemons run as
//! root, as on a cluster). One Slurm is shared by the tests of a process that overlap
//! ([`Slurm::shared`]); the last one to finish stops it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::env::{ChildGuard, Out, User};
use super::registry::free_port;
use super::skip;

/// The daemons, the client programs and the packages that hold them.
const PROGRAMS: [(&str, &str); 7] = [
    ("/usr/sbin/munged", "munge"),
    ("/usr/sbin/slurmctld", "slurmctld"),
    ("/usr/sbin/slurmd", "slurmd"),
    ("/usr/bin/srun", "slurm-client"),
    ("/usr/bin/sbatch", "slurm-client"),
    ("/usr/bin/salloc", "slurm-client"),
    ("/usr/bin/sinfo", "slurm-client"),
];

/// A running single-node cluster.
pub struct Slurm {
    // Stopped in this order: slurmd, then the controller, then munge.
    daemons: Vec<ChildGuard>,
    dir: tempfile::TempDir,
    /// The cgroups slurmd was started in ([`Slurm::with_cgroups`]), removed on drop.
    cgroups: Vec<PathBuf>,
}

/// The cgroup v1 controllers a cluster with cgroups uses: memory for `--mem`, freezer for
/// `proctrack/cgroup`.
const CONTROLLERS: [&str; 2] = ["memory", "freezer"];

/// How slurmd starts in its own cgroups: `$1`… are the cgroup directories to make and enter,
/// the last argument slurm.conf. `unshare` execs (no fork), so the guard's pid stays slurmd's.
const SLURMD_IN_CGROUPS: &str = r#"set -e
conf=$1; shift
for d in "$@"; do mkdir "$d"; echo $$ > "$d/cgroup.procs"; done
exec unshare --cgroup --mount --propagation private sh -c '
  set -e
  mount -t tmpfs nook-cgroups /sys/fs/cgroup
  for c in memory freezer; do
    mkdir /sys/fs/cgroup/$c
    mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
  done
  exec /usr/sbin/slurmd -D -N localhost -f "$0"' "$conf"
"#;

/// What a site adds to its Epilog for nook (README "Slurm and MPI"): the job's private runtime
/// directory goes when the job ends. Run by slurmd as root: nothing is followed through a
/// symbolic link the user could have planted.
pub const EPILOG: &str = r#"#!/bin/sh
case "$SLURM_JOB_ID$SLURM_JOB_UID" in '' | *[!0-9]*) exit 0 ;; esac
base=/tmp/nook-$SLURM_JOB_UID
[ -d "$base" ] && [ ! -L "$base" ] && [ "$(stat -c %u "$base")" = "$SLURM_JOB_UID" ] || exit 0
rm -rf "$base/slurm-$SLURM_JOB_ID"
"#;

impl Drop for Slurm {
    /// SIGTERM first, so that slurmctld ends its script helper; SIGKILL after 10 s.
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let Some(child) = d.0.as_mut() else { continue };
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for dir in &self.cgroups {
            remove_cgroup_tree(dir);
        }
    }
}

/// Removes a cgroup v1 directory and those below it, deepest first (a cgroup is removed with
/// rmdir once it holds no process; the last of a job's may take a moment to go).
fn remove_cgroup_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut dirs = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
            dirs.push(d);
        }
        let all = dirs.iter().rev().all(|d| std::fs::remove_dir(d).is_ok());
        if all || !dir.exists() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where this process sits in a cgroup v1 controller's hierarchy, as a directory.
fn own_cgroup(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, names, path) = (f.next()?, f.next()?, f.next()?);
        names.split(',').any(|n| n == controller).then_some(path)
    })?;
    let root = Path::new("/sys/fs/cgroup").join(controller);
    root.join("cgroup.procs")
        .exists()
        .then(|| root.join(rel.trim_start_matches('/')))
}

impl Slurm {
    /// The cluster every overlapping test of this process shares, started when none runs;
    /// `None` (after a skip) where it cannot run.
    pub fn shared() -> Option<Arc<Slurm>> {
        static SHARED: Mutex<Weak<Slurm>> = Mutex::new(Weak::new());
        let mut held = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = held.upgrade() {
            return Some(s);
        }
        let s = Arc::new(Slurm::start(false)?);
        *held = Arc::downgrade(&s);
        Some(s)
    }

    /// A cluster of its own that puts every job step in cgroups and enforces `--mem` (see the
    /// module's comment); `None` (after a skip) where the host has no cgroup v1 memory and
    /// freezer controllers.
    pub fn with_cgroups() -> Option<Slurm> {
        if CONTROLLERS.iter().any(|c| own_cgroup(c).is_none()) {
            skip(
                "no cgroup v1 memory and freezer hierarchies under /sys/fs/cgroup for Slurm's task/cgroup",
            );
            return None;
        }
        Slurm::start(true)
    }

    fn start(cgroups: bool) -> Option<Slurm> {
        if !nix::unistd::geteuid().is_root() {
            skip("Slurm's daemons run as root: run the suite as root");
            return None;
        }
        if let Some((_, pkg)) = PROGRAMS.iter().find(|(p, _)| !Path::new(p).exists()) {
            skip(&format!(
                "Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge): no {pkg}"
            ));
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("nook-slurm-")
            .tempdir()
            .unwrap();
        let mut s = Slurm {
            daemons: Vec::new(),
            dir,
            cgroups: Vec::new(),
        };
        s.layout();
        s.daemons.push(s.munged());
        s.write_conf(cgroups);
        let conf = s.conf();
        let conf = conf.to_str().unwrap();
        s.daemons
            .push(s.daemon("slurmctld", &["-D", "-i", "-f", conf]));
        let slurmd = if cgroups {
            let name = format!("nook-slurm-{}", super::sandbox::rand_suffix());
            s.cgroups = CONTROLLERS
                .iter()
                .filter_map(|c| own_cgroup(c))
                .map(|d| d.join(&name))
                .collect();
            let mut args = vec!["-c", SLURMD_IN_CGROUPS, "sh", conf];
            args.extend(s.cgroups.iter().map(|d| d.to_str().unwrap()));
            s.daemon_as("slurmd", "/bin/sh", &args)
        } else {
            s.daemon("slurmd", &["-D", "-N", "localhost", "-f", conf])
        };
        s.daemons.push(slurmd);
        s.wait_idle();
        // The order of drops: slurmd first.
        s.daemons.reverse();
        Some(s)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The configuration the clients read (`SLURM_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.path("slurm.conf")
    }

    /// Directories: readable by every user where the clients look (the conf, munge's
    /// socket); munge's key private to root, as munged insists.
    fn layout(&self) {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(self.dir.path(), 0o755).unwrap();
        for (d, m) in [("munge", 0o700), ("run", 0o755), ("state", 0o700)] {
            std::fs::create_dir(self.path(d)).unwrap();
            mode(&self.path(d), m).unwrap();
        }
        for d in ["spool", "log"] {
            std::fs::create_dir(self.path(d)).unwrap();
        }
        let mut key = [0u8; 128];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut key)
            .unwrap();
        let key_path = self.path("munge/munge.key");
        std::fs::write(&key_path, key).unwrap();
        mode(&key_path, 0o600).unwrap();
        let epilog = self.path("epilog.sh");
        std::fs::write(&epilog, EPILOG).unwrap();
        mode(&epilog, 0o755).unwrap();
    }

    fn munged(&self) -> ChildGuard {
        let p = |rel| self.path(rel).display().to_string();
        let child = ChildGuard(Some(
            Command::new("/usr/sbin/munged")
                .arg("-F")
                .arg(format!("--key-file={}", p("munge/munge.key")))
                .arg(format!("--socket={}", p("run/munge.sock")))
                .arg(format!("--pid-file={}", p("run/munged.pid")))
                .arg(format!("--log-file={}", p("log/munged.log")))
                .arg(format!("--seed-file={}", p("munge/seed")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start munged"),
        ));
        self.wait_for(|| self.path("run/munge.sock").exists(), "munged's socket");
        child
    }

    /// slurm.conf, and with `cgroups` the cgroup.conf Slurm reads beside it.
    fn write_conf(&self, cgroups: bool) {
        let p = |rel| self.path(rel).display().to_string();
        let (ctld, slurmd) = (free_port(), free_port());
        // Job ids name runtime directories (/tmp/nook-UID/slurm-ID): clusters of parallel
        // test processes count from different places.
        let first_job = 1 + (super::sandbox::rand_suffix() % 60_000) * 1000;
        let conf = format!(
            "ClusterName=nooktest\n\
             SlurmctldHost=localhost(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmdPort={slurmd}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={sock}\n\
             CredType=cred/munge\n\
             StateSaveLocation={state}\n\
             SlurmdSpoolDir={spool}\n\
             SlurmctldPidFile={run}/slurmctld.pid\n\
             SlurmdPidFile={run}/slurmd.pid\n\
             SlurmctldLogFile={log}/slurmctld.log\n\
             SlurmdLogFile={log}/slurmd.log\n\
             MailProg=/bin/true\n\
             Epilog={epilog}\n\
             FirstJobId={first_job}\n\
             ProctrackType=proctrack/{track}\n\
             TaskPlugin=task/{task}\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             SwitchType=switch/none\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             SchedulerType=sched/builtin\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters={select}\n\
             SlurmdParameters=config_overrides\n\
             NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 RealMemory=4000 State=UNKNOWN\n\
             PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            sock = p("run/munge.sock"),
            state = p("state"),
            spool = p("spool"),
            run = p("run"),
            log = p("log"),
            epilog = p("epilog.sh"),
            track = if cgroups { "cgroup" } else { "linuxproc" },
            task = if cgroups { "cgroup" } else { "none" },
            select = if cgroups { "CR_Core_Memory" } else { "CR_Core" },
        );
        std::fs::write(self.conf(), conf).unwrap();
        if cgroups {
            // Only memory is constrained: cores and devices would need the cpuset and
            // devices controllers too, and no swap limit (the VM has no swap).
            let cgroup_conf = "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\n\
                 ConstrainRAMSpace=yes\nConstrainSwapSpace=no\nConstrainCores=no\n\
                 ConstrainDevices=no\n";
            std::fs::write(self.path("cgroup.conf"), cgroup_conf).unwrap();
        }
    }

    fn daemon(&self, name: &str, args: &[&str]) -> ChildGuard {
        self.daemon_as(name, &format!("/usr/sbin/{name}"), args)
    }

    /// A daemon `name` (its output in log/NAME.out) started by `program`.
    fn daemon_as(&self, name: &str, program: &str, args: &[&str]) -> ChildGuard {
        let out = std::fs::File::create(self.path(&format!("log/{name}.out"))).unwrap();
        ChildGuard(Some(
            Command::new(program)
                .args(args)
                .env("SLURM_CONF", self.conf())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("start {name}: {e}")),
        ))
    }

    /// Waits until the node takes jobs.
    fn wait_idle(&self) {
        self.wait_for(
            || {
                Command::new("/usr/bin/sinfo")
                    .args(["-h", "-o", "%T"])
                    .env("SLURM_CONF", self.conf())
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
            },
            "the node to be idle",
        );
    }

    fn wait_for(&self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "Slurm: no {what} after 60 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.path("log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            all.push_str(&format!("== {}\n", e.path().display()));
            for l in tail.into_iter().rev() {
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    }

    /// A Slurm client (`srun`, `sbatch`, `salloc`) run by `user` as a batch system sees a
    /// user: nook's clean environment without XDG_RUNTIME_DIR (jobs rarely have one), under a
    /// two-minute limit.
    pub fn client(&self, user: &User, program: &str, args: &[&str]) -> Command {
        let mut c = user.command(Path::new("timeout"));
        c.arg("120")
            .arg(program)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .env_remove("XDG_RUNTIME_DIR");
        c
    }

    /// Runs [`Slurm::client`] and returns its output, with the daemons' logs on failure.
    pub fn run(&self, user: &User, program: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.client(user, program, args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = Out::from(c.output().expect("run a Slurm client"));
        if out.code != 0 {
            eprintln!("{program} failed; Slurm's logs:\n{}", self.logs());
        }
        out
    }
}
