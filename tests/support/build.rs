//! `nook build` in tests: a build context owned by the test user, the build command with
//! pluggable global arguments, build flags (the rootfs rung) and environment, what the output
//! says (ids, steps served from the cache), and the store's side of a built image: its config
//! blob, its layer tars entry by entry, and a search of every stored byte for something that
//! must not be there. Also a loopback HTTP server for `ADD URL`, and `podman build` for
//! comparisons.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::env::{Out, User};
use super::sandbox::Sandbox;

/// A directory in the test user's home that a build reads as its context.
pub struct Ctx<'a> {
    user: &'a User,
    pub dir: PathBuf,
}

impl<'a> Ctx<'a> {
    /// An empty context `home/NAME`.
    pub fn new(user: &'a User, name: &str) -> Ctx<'a> {
        let dir = user.home().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        user.give(&dir);
        Ctx { user, dir }
    }

    fn rel(&self, rel: &str) -> String {
        let base = self.dir.strip_prefix(self.user.home()).unwrap();
        format!("{}/{rel}", base.display())
    }

    /// Writes `rel` (mode 0644), creating its directories.
    pub fn file(&self, rel: &str, data: &[u8]) -> &Self {
        self.user.write_home(&self.rel(rel), data);
        self
    }

    /// Writes `rel` with `mode`.
    pub fn file_mode(&self, rel: &str, data: &[u8], mode: u32) -> &Self {
        let p = self.user.write_home(&self.rel(rel), data);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Creates the directory `rel` (and its parents).
    pub fn dir(&self, rel: &str) -> &Self {
        let mut p = self.dir.clone();
        for c in Path::new(rel).components() {
            p = p.join(c);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap();
                self.user.give(&p);
            }
        }
        self
    }

    /// A symbolic link `rel` → `target`, owned by the user.
    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.dir.join(rel);
        if let Some(parent) = Path::new(rel)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            self.dir(parent.to_str().unwrap());
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
        std::os::unix::fs::lchown(&p, Some(self.user.uid), Some(self.user.gid)).unwrap();
        self
    }

    /// The `Dockerfile`, with `{base}` replaced by `base`.
    pub fn dockerfile(&self, text: &str, base: &str) -> &Self {
        self.named("Dockerfile", text, base)
    }

    /// A Dockerfile-like file `rel`, with `{base}` replaced by `base`.
    pub fn named(&self, rel: &str, text: &str, base: &str) -> &Self {
        self.file(rel, text.replace("{base}", base).as_bytes())
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// The path of `rel` inside the context.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// The rootfs rung a build's RUN steps use (`--rootfs-driver`, as `nook run` takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Whatever nook's ladder picks (the kernel overlay for a subordinate range, FUSE for a
    /// single mapping, where the host allows them).
    Auto,
    Overlay,
    Fuse,
}

impl Driver {
    pub const BOTH: [Driver; 2] = [Driver::Overlay, Driver::Fuse];

    /// `nook build`'s flag for this rung.
    fn flags(self) -> Vec<String> {
        match self {
            Driver::Auto => Vec::new(),
            Driver::Overlay => vec!["--rootfs-driver".into(), "overlay".into()],
            Driver::Fuse => vec!["--rootfs-driver".into(), "fuse".into()],
        }
    }
}

/// `nook [GLOBALS] build [FLAGS] ...` for a sandbox: the global arguments, the build flags
/// and the environment are where a rootfs rung (or any build-wide setting) is plugged in.
pub struct Builder<'a> {
    pub s: &'a Sandbox,
    pub globals: Vec<String>,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl<'a> Builder<'a> {
    pub fn new(s: &'a Sandbox) -> Builder<'a> {
        Self::with_driver(s, Driver::Auto)
    }

    pub fn with_driver(s: &'a Sandbox, d: Driver) -> Builder<'a> {
        Builder {
            s,
            globals: Vec::new(),
            flags: d.flags(),
            env: Vec::new(),
        }
    }

    fn build_args<'b>(&'b self, args: &[&'b str], ctx: Option<&'b str>) -> Vec<&'b str> {
        let mut all = vec!["build"];
        all.extend(self.flags.iter().map(String::as_str));
        all.extend_from_slice(args);
        all.extend(ctx);
        all
    }

    /// `nook build ARGS CONTEXT`.
    pub fn build(&self, args: &[&str], ctx: &Ctx<'_>) -> Out {
        self.nook(&self.build_args(args, Some(ctx.path())), &[], None)
    }

    /// `nook build ARGS CONTEXT` with extra environment variables.
    pub fn build_env(&self, args: &[&str], ctx: &Ctx<'_>, env: &[(&str, &str)]) -> Out {
        self.nook(&self.build_args(args, Some(ctx.path())), env, None)
    }

    /// `nook build ARGS` (ARGS end with the context, `-` for stdin) with `input` on stdin.
    pub fn build_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        self.nook(&self.build_args(args, None), &[], Some(input))
    }

    /// Builds and returns the image id (`sha256:...`), failing the test if the build fails.
    #[track_caller]
    pub fn id(&self, args: &[&str], ctx: &Ctx<'_>) -> String {
        let out = self.build(args, ctx);
        out.ok();
        full_id(self.s, &built_id(&out))
    }

    /// Any nook command with this builder's globals and environment.
    pub fn nook(&self, args: &[&str], env: &[(&str, &str)], input: Option<&[u8]>) -> Out {
        let mut c = self.s.user.nook(&[]);
        c.args(&self.globals).args(args);
        c.env("NOOK_TEST_TAG", &self.s.tag);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let Some(input) = input else {
            return Out::from(c.output().expect("run nook"));
        };
        c.stdin(Stdio::piped());
        let mut child = c.spawn().expect("run nook");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        // A writer thread: nook may answer (and fail) before it reads everything.
        let w = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = Out::from(child.wait_with_output().unwrap());
        let _ = w.join();
        out
    }
}

/// The id a build printed: `-q`'s only line, or `Successfully built ID`.
#[track_caller]
pub fn built_id(out: &Out) -> String {
    let text = out.stdout.trim();
    if !text.contains('\n') && text.starts_with("sha256:") {
        return text.to_owned();
    }
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no image id in the build's output:\n{}", out.stdout))
}

/// The full `sha256:...` id of an image named by a (short) id or a name.
pub fn full_id(s: &Sandbox, what: &str) -> String {
    inspect(s, what)["Id"].as_str().unwrap().to_owned()
}

/// `nook inspect IMAGE`'s object.
#[track_caller]
pub fn inspect(s: &Sandbox, what: &str) -> Value {
    let out = s.nook(&["inspect", what]);
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v[0].clone()
}

/// The image's `Config` section.
pub fn config(s: &Sandbox, what: &str) -> Value {
    inspect(s, what)["Config"].clone()
}

/// A blob of the store.
pub fn blob(s: &Sandbox, digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::read(s.user.store().join("blobs/sha256").join(hex)).unwrap()
}

/// The image's config document, read from its blob (history included).
pub fn config_blob(s: &Sandbox, what: &str) -> Value {
    let id = full_id(s, what);
    serde_json::from_slice(&blob(s, &id)).unwrap()
}

/// `bytes` uncompressed (gzip, zstd, bzip2, xz, or as they are).
pub fn decompress(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let ok = match bytes {
        [0x1f, 0x8b, ..] => flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .is_ok(),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => zstd::stream::read::Decoder::new(bytes)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok(),
        [b'B', b'Z', b'h', ..] => bzip2::read::MultiBzDecoder::new(bytes)
            .read_to_end(&mut out)
            .is_ok(),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => liblzma::read::XzDecoder::new(bytes)
            .read_to_end(&mut out)
            .is_ok(),
        _ => false,
    };
    if ok { out } else { bytes.to_vec() }
}

/// One entry of a layer tar, as its header says.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
    /// The names of the extended attributes its PAX header carries.
    pub xattrs: Vec<String>,
}

impl TarEntry {
    /// Attributes that are nook's or the overlay's bookkeeping, never the image's.
    pub fn private_xattrs(&self) -> Vec<&str> {
        self.xattrs
            .iter()
            .map(String::as_str)
            .filter(|x| {
                x.starts_with("user.containers.")
                    || x.starts_with("user.nook")
                    || x.starts_with("user.fuseoverlayfs.")
                    || x.contains(".overlay.")
            })
            .collect()
    }
}

/// The entries of a (possibly compressed) tar.
pub fn tar_entries(bytes: &[u8]) -> Vec<TarEntry> {
    let tar = decompress(bytes);
    let mut a = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e.link_name().unwrap().map(|l| {
            let l = l.to_string_lossy().into_owned();
            // A hard link names an entry of the tar; a symlink's target stays as written.
            if h.entry_type() == tar::EntryType::Link {
                l.trim_start_matches("./")
                    .trim_start_matches('/')
                    .to_owned()
            } else {
                l
            }
        });
        let xattrs = e
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .filter_map(|x| {
                x.ok()?
                    .key()
                    .ok()?
                    .strip_prefix("SCHILY.xattr.")
                    .map(str::to_owned)
            })
            .collect();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(TarEntry {
            path: path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link,
            data,
            xattrs,
        });
    }
    out
}

/// The image's layers, bottom first, each as its tar's entries (read from the store's blobs).
pub fn layers(s: &Sandbox, what: &str) -> Vec<Vec<TarEntry>> {
    let v = inspect(s, what);
    v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| tar_entries(&blob(s, l["Digest"].as_str().unwrap())))
        .collect()
}

/// The entry at `path` of a layer.
pub fn entry<'e>(layer: &'e [TarEntry], path: &str) -> Option<&'e TarEntry> {
    layer.iter().find(|e| e.path == path)
}

/// Every file of the user's store (blobs decompressed too) and runtime directory whose bytes
/// hold `needle`.
pub fn stored_files_holding(s: &Sandbox, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![s.user.store(), s.user.runtime_dir()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(p);
            } else if meta.is_file() && meta.len() < 256 << 20 {
                let Ok(bytes) = std::fs::read(&p) else {
                    continue;
                };
                let holds = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
                if holds(&bytes) || holds(&decompress(&bytes)) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// The steps a classic-builder output lists (`Step N/M : ...`), each with whether its
/// block says `Using cache`.
pub fn steps(out: &Out) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = Vec::new();
    for l in out.stdout.lines() {
        if l.starts_with("Step ") && l.contains(" : ") {
            v.push((l.to_owned(), false));
        } else if l.contains("Using cache")
            && let Some(last) = v.last_mut()
        {
            last.1 = true;
        }
    }
    v
}

/// Which steps (1-based) were served from the cache.
pub fn cached(out: &Out) -> Vec<usize> {
    steps(out)
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| *c)
        .map(|(i, _)| i + 1)
        .collect()
}

/// Whether a build printed `line` as a line of its own (a step's output, not the `Step`
/// line that names the command).
pub fn printed(out: &Out, line: &str) -> bool {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .any(|l| l == line)
}

/// `nook run --rm IMAGE ARGS...` that must succeed; its stdout.
#[track_caller]
pub fn run_out(s: &Sandbox, image: &str, args: &[&str]) -> String {
    let mut all = vec![image];
    all.extend_from_slice(args);
    let out = s.run(&all);
    out.ok();
    out.stdout
}

/// `sh -c SCRIPT` in IMAGE (its entrypoint replaced), that must succeed; its stdout.
#[track_caller]
pub fn sh_out(s: &Sandbox, image: &str, script: &str) -> String {
    let out = s.run(&["--entrypoint", "/bin/sh", image, "-c", script]);
    out.ok();
    out.stdout
}

/// A tar of `files` (path, data, mode), as a context or an archive to ADD.
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A loopback HTTP server answering every GET with `body` (200) until the test ends; its
/// base URL, `http://127.0.0.1:PORT`.
pub fn http_serve(body: Vec<u8>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            if !req.starts_with(b"HEAD ") {
                let _ = c.write_all(&body);
            }
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// `--runtime runc` where runc is installed: crun (podman's default) refuses a hybrid cgroup
/// v1/v2 hierarchy, which these VMs have, and runc runs rootless containers there.
fn runtime() -> Vec<&'static str> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(|p| vec!["--runtime", p])
        .unwrap_or_default()
}

/// Rootless podman as the sandbox's user, with a store in its work directory.
pub struct Podman<'a> {
    user: &'a User,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// `None` (after a printed skip) where podman is missing or cannot run here.
    pub fn new(user: &'a User) -> Option<Podman<'a>> {
        if Command::new("podman").arg("--version").output().is_err() {
            super::skip("podman is not installed (apt-get install podman)");
            return None;
        }
        let dir = user.work.path().join("podman");
        std::fs::create_dir_all(&dir).unwrap();
        user.give(&dir);
        Some(Podman { user, dir })
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let mut c = Command::new("podman");
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.dir)
            .env("XDG_RUNTIME_DIR", &self.dir)
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(runtime())
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            c.uid(self.user.uid).gid(self.user.gid);
        }
        Out::from(c.output().expect("run podman"))
    }

    /// `podman build --format docker ARGS CONTEXT` and the image's inspect object, or `None`
    /// (after a printed skip) when podman cannot build here.
    pub fn build(&self, args: &[&str], ctx: &Ctx<'_>, tag: &str) -> Option<Value> {
        let mut all = vec![
            "build",
            "--tls-verify=false",
            "--format",
            "docker",
            "-t",
            tag,
        ];
        all.extend_from_slice(args);
        all.push(ctx.path());
        let out = self.run(&all);
        if out.code != 0 {
            super::skip(&format!("podman cannot build here: {}", out.stderr));
            return None;
        }
        let out = self.run(&["image", "inspect", tag]);
        out.ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        Some(v[0].clone())
    }
}
