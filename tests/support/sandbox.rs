//! A test user with a registry and the busybox image pulled, and the container probe.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::env::{Mode, Out, User, assert_no_leftovers};
use super::image::{self, Comp, ImageOpts, busybox_base};
use super::registry::TestRegistry;

/// A user with a registry and the busybox image pulled.
pub struct Sandbox {
    pub user: User,
    pub reg: TestRegistry,
    pub image: String,
    pub tag: String,
}

impl Sandbox {
    pub fn new(mode: Mode) -> Option<Sandbox> {
        Self::with_user(User::new(mode)?)
    }

    /// A sandbox whose store is on tmpfs where the host allows it ([`super::env::fast_base`]).
    pub fn on_tmpfs(mode: Mode) -> Option<Sandbox> {
        Self::with_user(User::new_in(mode, &super::env::fast_base())?)
    }

    fn with_user(user: User) -> Option<Sandbox> {
        let reg = TestRegistry::start()?;
        let b = image::build(
            &[(busybox_base().finish(), Comp::Gzip)],
            &ImageOpts::default(),
        );
        image::push(&reg.url, "bb", "latest", &b);
        let image = format!("{}/bb", reg.host);
        user.run(&["pull", "-q", &image]).ok();
        let tag = format!(
            "nooktag{}",
            std::process::id() as u64 * 1_000_003 + rand_suffix()
        );
        Some(Sandbox {
            user,
            reg,
            image,
            tag,
        })
    }

    /// Pushes and pulls another image; returns its reference.
    pub fn image_with(
        &self,
        name: &str,
        layers: &[(Vec<u8>, Comp)],
        config: serde_json::Value,
    ) -> String {
        let b = image::build(
            layers,
            &ImageOpts {
                config,
                ..ImageOpts::default()
            },
        );
        image::push(&self.reg.url, name, "latest", &b);
        let r = format!("{}/{name}", self.reg.host);
        self.user.run(&["pull", "-q", &r]).ok();
        r
    }

    /// [`Sandbox::image_with`] for the common case: busybox with one layer on top.
    pub fn image_over_busybox(
        &self,
        name: &str,
        top: Vec<u8>,
        config: serde_json::Value,
    ) -> String {
        self.image_with(
            name,
            &[(busybox_base().finish(), Comp::Gzip), (top, Comp::Gzip)],
            config,
        )
    }

    pub fn nook(&self, args: &[&str]) -> Out {
        self.user.run_env(args, &[("NOOK_TEST_TAG", &self.tag)])
    }

    /// `nook run --rm IMAGE ARGS...`
    pub fn run(&self, args: &[&str]) -> Out {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        self.nook(&all)
    }

    /// `nook run --rm [FLAGS] IMAGE sh -c SCRIPT`
    pub fn sh(&self, flags: &[&str], script: &str) -> Out {
        let mut all: Vec<&str> = flags.to_vec();
        all.extend([self.image.as_str(), "sh", "-c", script]);
        self.run(&all)
    }
}

pub fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() as u64
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_leftovers(&self.tag, self.user.work.path());
        }
    }
}

/// A directory every user can read holding `fsprobe`, `fsops`, `netprobe` and `scprobe`
/// (tests/support/*.c),
/// built static with the host's gcc so they run in any image; mount it into a container with
/// `-v DIR:/probe:ro`.
pub fn probe_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DIR.get_or_init(build_probes);
    match built {
        Ok(d) => Some(d.clone()),
        Err(why) => {
            super::skip(why);
            None
        }
    }
}

const PROBES: [&str; 4] = ["fsprobe", "fsops", "netprobe", "scprobe"];

/// Builds the probes once per version of their sources, shared by every test process:
/// `/tmp/nook-it-probe/HASH`, built in a private directory and renamed into place.
fn build_probes() -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in PROBES {
        let src = format!("{}/tests/support/{name}.c", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&src)
            .map_err(|e| format!("{src}: {e}"))?
            .hash(&mut hasher);
    }
    let root = Path::new("/tmp/nook-it-probe");
    let dir = root.join(format!("{:016x}", hasher.finish()));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = root.join(format!(".build-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    for d in [root, tmp.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    for name in PROBES {
        let src = format!("{}/tests/support/{name}.c", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("gcc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(tmp.join(name))
            .arg(src)
            .arg("-lpthread")
            .output()
            .map_err(|e| format!("gcc: {e} (apt-get install gcc libc6-dev)"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(format!(
                "gcc -static failed (apt-get install gcc libc6-dev): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // Another test process may have won the race: its copy is as good as ours.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

/// Asserts that fsprobe's `posix` cases all passed (every line `ok ...`), naming `what` ran them.
pub fn assert_posix_cases(out: &Out, what: &str) {
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .collect();
    assert!(
        out.code == 0 && failed.is_empty(),
        "{what}: conformance cases failed:\n{}\n{}",
        failed.join("\n"),
        out.stderr
    );
}

/// `nook ARGS…` (a shell command line) as the user under script(1)'s terminal.
pub fn under_pty(s: &Sandbox, line: &str) -> Out {
    under_pty_sh(s, &format!("{} {line}", s.user.bin.display()))
}

/// A shell command line as the user under script(1)'s terminal; `$NOOK` is nook.
pub fn under_pty_sh(s: &Sandbox, line: &str) -> Out {
    let mut c = std::process::Command::new("/usr/bin/script");
    c.args(["-qec", line, "/dev/null"]).env_clear();
    c.env("NOOK", &s.user.bin);
    for (k, v) in s.user.nook(&[]).get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.env("NOOK_TEST_TAG", &s.tag).env("TERM", "vt100");
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        c.uid(s.user.uid).gid(s.user.gid);
    }
    c.current_dir(s.user.work.path())
        .stdin(std::process::Stdio::null());
    Out::from(c.output().unwrap())
}
