//! A single-node Slurm on loopback: Debian's munged, slurmctld and slurmd started by the test,
//! stopped on drop.
//!
//! Everything lives in one temporary directory: munge's key and socket, `slurm.conf` (found by
//! the clients through `SLURM_CONF`), the controller's state and slurmd's spool. The node is
//! `localhost` at 127.0.0.1 whatever the machine's name (`slurmd -N localhost`), its ports are
//! free loopback ports, and it claims more CPUs than the machine has
//! (`SlurmdParameters=config_overrides`) so that parallel tests and 4-rank jobs never queue.
//! Processes are tracked by `proctrack/linuxproc` with `task/none`. The cgroup plugins were not
//! tried: they build a tree of their own at the top of the host's hierarchy, and this host's
//! hybrid v1/v2 hierarchy (no systemd, the suite itself in a memory cgroup of its supervisor)
//! is not the tests' to change.
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
}

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
    }
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
        let s = Arc::new(Slurm::start()?);
        *held = Arc::downgrade(&s);
        Some(s)
    }

    fn start() -> Option<Slurm> {
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
        };
        s.layout();
        s.daemons.push(s.munged());
        s.write_conf();
        let conf = s.conf();
        s.daemons
            .push(s.daemon("slurmctld", &["-D", "-i", "-f", conf.to_str().unwrap()]));
        s.daemons.push(s.daemon(
            "slurmd",
            &["-D", "-N", "localhost", "-f", conf.to_str().unwrap()],
        ));
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

    fn write_conf(&self) {
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
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             SwitchType=switch/none\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             SchedulerType=sched/builtin\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             SlurmdParameters=config_overrides\n\
             NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 State=UNKNOWN\n\
             PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            sock = p("run/munge.sock"),
            state = p("state"),
            spool = p("spool"),
            run = p("run"),
            log = p("log"),
            epilog = p("epilog.sh"),
        );
        std::fs::write(self.conf(), conf).unwrap();
    }

    fn daemon(&self, name: &str, args: &[&str]) -> ChildGuard {
        let out = std::fs::File::create(self.path(&format!("log/{name}.out"))).unwrap();
        ChildGuard(Some(
            Command::new(format!("/usr/sbin/{name}"))
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
