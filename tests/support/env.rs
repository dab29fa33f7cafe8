//! Running nook as an ordinary user.
//!
//! When the suite runs as root, nook runs as the test users that scripts/setup.sh creates:
//! `nooktest` (with /etc/subuid and /etc/subgid ranges) and `nooksingle` (without). The
//! binary is copied where they can execute it. Run as an ordinary user, the suite uses that
//! user for whichever mode the host gives it.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::skip;

pub const RANGE_USER: &str = "nooktest";
pub const SINGLE_USER: &str = "nooksingle";

/// Which id mapping a test wants nook to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Range,
    Single,
}

/// A user nook runs as, with a private work directory (HOME, store) owned by them.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether the suite switches to this user (it runs as root).
    switch: bool,
    pub work: tempfile::TempDir,
    pub bin: PathBuf,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A copy of the nook binary in a directory every user can read and execute.
///
/// One copy per build of the binary, shared by every test process of a run (each test file
/// is its own process): `/tmp/nook-it-bin/SIZE-MTIME/nook`, written under a temporary name
/// and renamed into place, so parallel test binaries never see half a file. Copies of other
/// builds older than a day are removed, so repeated runs do not fill /tmp.
fn shared_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_nook"));
        if !is_root() {
            return src;
        }
        let meta = std::fs::metadata(&src).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root = Path::new("/tmp/nook-it-bin");
        let dir = root.join(format!("{}-{mtime}", meta.len()));
        let dst = dir.join("nook");
        if dst.exists() {
            return dst;
        }
        remove_stale(root);
        std::fs::create_dir_all(&dir).unwrap();
        for d in [root, dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let tmp = dir.join(format!(".nook-{}", std::process::id()));
        std::fs::copy(&src, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
        dst
    })
    .clone()
}

/// Removes the copies of earlier builds under `root` that no run has touched for a day.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn has_subid(name: &str, uid: u32) -> bool {
    let text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    text.lines().any(|l| {
        let who = l.split(':').next().unwrap_or("");
        who == name || who == uid.to_string()
    })
}

impl User {
    /// The user for `mode`, or `None` (after a printed skip) when this host cannot give it.
    pub fn new(mode: Mode) -> Option<User> {
        Self::new_in(mode, Path::new("/tmp"))
    }

    /// As [`User::new`], with the work directory (store, home) below `base`.
    pub fn new_in(mode: Mode, base: &Path) -> Option<User> {
        let (name, uid, gid, switch) = if is_root() {
            let name = if mode == Mode::Range {
                RANGE_USER
            } else {
                SINGLE_USER
            };
            let Some(u) = nix::unistd::User::from_name(name).ok().flatten() else {
                skip(&format!(
                    "test user {name} does not exist: run scripts/setup.sh as root"
                ));
                return None;
            };
            let ranged = has_subid(name, u.uid.as_raw());
            if ranged != (mode == Mode::Range) {
                skip(&format!(
                    "test user {name} has the wrong /etc/subuid setup: run scripts/setup.sh"
                ));
                return None;
            }
            (name.to_owned(), u.uid.as_raw(), u.gid.as_raw(), true)
        } else {
            let uid = nix::unistd::getuid().as_raw();
            let u = nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .expect("passwd entry");
            if has_subid(&u.name, uid) != (mode == Mode::Range) {
                skip(&format!(
                    "needs a user {} /etc/subuid entries; run the suite as root",
                    if mode == Mode::Range {
                        "with"
                    } else {
                        "without"
                    }
                ));
                return None;
            }
            (u.name, uid, u.gid.as_raw(), false)
        };
        let work = tempfile::Builder::new()
            .prefix("nook-it-")
            .tempdir_in(base)
            .unwrap();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if switch {
            nix::unistd::chown(
                work.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        let user = User {
            name,
            uid,
            gid,
            switch,
            work,
            bin: shared_bin(),
        };
        std::fs::create_dir_all(user.home()).unwrap();
        user.give(&user.home());
        Some(user)
    }

    pub fn home(&self) -> PathBuf {
        self.work.path().join("home")
    }

    pub fn store(&self) -> PathBuf {
        self.work.path().join("store")
    }

    /// Hands `path` to the user (when the suite switches users).
    pub fn give(&self, path: &Path) {
        if self.switch {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(self.uid)),
                Some(nix::unistd::Gid::from_raw(self.gid)),
            )
            .unwrap();
        }
    }

    /// A nook command as this user, with a clean environment of its own.
    pub fn nook(&self, args: &[&str]) -> Command {
        let mut c = self.command(&self.bin);
        c.args(args);
        c
    }

    /// A nook command as this user under the descriptor limits `soft`:`hard` (set by
    /// prlimit(1) before nook starts, as a login shell would).
    pub fn nook_nofile(&self, soft: u64, hard: u64, args: &[&str]) -> Command {
        let mut c = self.command(Path::new("prlimit"));
        c.arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(&self.bin)
            .args(args);
        c
    }

    /// `program` as this user, with nook's clean environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.home())
            .env("USER", &self.name)
            .env("NOOK_ROOT", self.store())
            .env("XDG_RUNTIME_DIR", self.work.path())
            .current_dir(self.work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("NOOK_TEST_NO_XDG").is_some() {
            // scripts/test.sh runs the lifecycle suite once more like this (Slurm-like jobs).
            c.env_remove("XDG_RUNTIME_DIR");
        }
        if self.switch {
            c.uid(self.uid).gid(self.gid);
        }
        c
    }

    /// Runs nook and returns its output.
    pub fn run(&self, args: &[&str]) -> Out {
        Out::from(self.nook(args).output().expect("run nook"))
    }

    /// Runs nook with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.nook(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Out::from(c.output().expect("run nook"))
    }

    /// Runs nook with extra environment variables and `input` on standard input.
    pub fn run_input(&self, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Out {
        use std::io::Write;
        let mut c = self.nook(args);
        c.stdin(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("run nook");
        child.stdin.take().unwrap().write_all(input).unwrap();
        Out::from(child.wait_with_output().unwrap())
    }

    /// Writes a file in the user's home (creating directories), owned by the user.
    pub fn write_home(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.home().join(rel);
        let mut dir = self.home();
        for c in Path::new(rel).parent().unwrap().components() {
            dir = dir.join(c);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                self.give(&dir);
            }
        }
        std::fs::write(&p, data).unwrap();
        self.give(&p);
        p
    }

    /// The user's subordinate uid range start (range mode).
    pub fn subuid_start(&self) -> u32 {
        let text = std::fs::read_to_string("/etc/subuid").unwrap();
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() == 3 && (f[0] == self.name || f[0] == self.uid.to_string()))
                    .then(|| f[1].parse().unwrap())
            })
            .expect("subuid entry")
    }
}

/// A finished nook run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "nook failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected status:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Kills and reaps a child process on drop unless disarmed (crun's guard).
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// OS string helper for env values.
pub fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// Fails the test if a process still carries `tag` in its command line or environment (nook's
/// processes and the containers' both), or if a mount below `below` is visible on the host.
pub fn assert_no_leftovers(tag: &str, below: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if pid == std::process::id().to_string() {
                continue;
            }
            for f in ["cmdline", "environ"] {
                if let Ok(b) = std::fs::read(e.path().join(f))
                    && b.windows(tag.len()).any(|w| w == tag.as_bytes())
                {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    found.push(format!("{pid} ({f}: {})", cmd.trim()));
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let below = below.display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&below)).collect();
        if found.is_empty() && leaked.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: processes {found:?}, mounts {leaked:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl User {
    /// Where nook keeps this user's runtime state: `$XDG_RUNTIME_DIR/nook` (the work
    /// directory here) and the fallback without XDG_RUNTIME_DIR.
    pub fn runtime_dirs(&self) -> [PathBuf; 2] {
        [
            self.work.path().join("nook"),
            PathBuf::from(format!("/tmp/nook-{}", self.uid)),
        ]
    }

    /// The runtime directory [`User::nook`]'s commands use.
    pub fn runtime_dir(&self) -> PathBuf {
        let [xdg, fallback] = self.runtime_dirs();
        if std::env::var_os("NOOK_TEST_NO_XDG").is_some() {
            fallback
        } else {
            xdg
        }
    }
}

/// Fails the test if anything of container `id` remains with `user`: a file or directory
/// whose name holds the id, or a small file whose text does (records, logs, generated /etc
/// files), in the store, the home, or either runtime directory.
pub fn assert_no_trace_of(id: &str, user: &User) {
    let mut found = Vec::new();
    // The first runtime directory lies inside the work directory.
    let [_, fallback] = user.runtime_dirs();
    let mut dirs = vec![user.work.path().to_owned(), fallback];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            // The events journal is history by design: docker's events name a container
            // after it is gone too.
            if e.file_name().to_string_lossy().starts_with("events.log") {
                continue;
            }
            if e.file_name().to_string_lossy().contains(id) {
                found.push(path.clone());
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file()
                && meta.len() < 1 << 20
                && std::fs::read(&path)
                    .is_ok_and(|b| b.windows(id.len()).any(|w| w == id.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    assert!(found.is_empty(), "container {id} left behind: {found:?}");
}

/// A directory on tmpfs that holds user xattrs (what a single mapping's store needs), for tests
/// whose subject is not the disk: making and removing tens of thousands of directories costs
/// minutes on this VM's discard-mounted ext4. `/tmp` where there is none.
pub fn fast_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!("nook-xattr-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok()
        && std::process::Command::new("setfattr")
            .args(["-n", "user.nook", "-v", "1"])
            .arg(&probe)
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&probe);
    if ok {
        shm.to_owned()
    } else {
        PathBuf::from("/tmp")
    }
}
