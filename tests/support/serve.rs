//! A running `nook serve` for the integration tests, and the real docker CLI pointed at it.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::env::{ChildGuard, Out};
use super::sandbox::Sandbox;

pub const DOCKER: &str = "/usr/local/bin/docker";

/// A running `nook serve` of the sandbox's user.
pub struct Server {
    pub child: ChildGuard,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn start(s: &Sandbox) -> Server {
        Server::start_env(s, &[])
    }

    /// [`Server::start`] with more environment for `nook serve`.
    pub fn start_env(s: &Sandbox, env: &[(&str, &str)]) -> Server {
        let sock = s.user.home().join("nook.sock");
        let log = s.user.home().join("serve.log");
        let file = std::fs::File::create(&log).unwrap();
        s.user.give(&log);
        let mut c = s
            .user
            .nook(&["serve", "-H", &format!("unix://{}", sock.display())]);
        c.envs(env.iter().copied())
            .env("NOOK_TEST_TAG", &s.tag)
            .stdout(Stdio::null())
            .stderr(file);
        let child = ChildGuard(Some(c.spawn().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "no socket: {}", read(&log));
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, sock, log }
    }

    /// The real docker CLI as the user, pointed at this server.
    pub fn docker(&self, s: &Sandbox, args: &[&str]) -> Out {
        let mut c = s.user.command(Path::new(DOCKER));
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args);
        Out::from(c.output().unwrap())
    }

    /// `docker ARGS` that must succeed; its standard output.
    pub fn ok(&self, s: &Sandbox, args: &[&str]) -> String {
        let out = self.docker(s, args);
        assert_eq!(
            out.code,
            0,
            "docker {args:?}: {}\n{}\nserver log:\n{}",
            out.stdout,
            out.stderr,
            read(&self.log)
        );
        out.stdout
    }

    /// A raw request by curl as the user: (status, body).
    pub fn curl(&self, s: &Sandbox, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
        let mut c = s.user.command(Path::new("/usr/bin/curl"));
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&self.sock)
            .args(["-X", method])
            .args(extra)
            .arg(format!("http://nook{path}"));
        let out = Out::from(c.output().unwrap());
        let (body, code) = out.stdout.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// Standard input and terminals through the API (issue 14, tests/serve_stdin.rs).

impl Server {
    /// `docker ARGS` as the user, pointed at this server, not started yet.
    pub fn docker_command(&self, s: &Sandbox, args: &[&str]) -> std::process::Command {
        let mut c = s.user.command(Path::new(DOCKER));
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args);
        c
    }

    /// `docker ARGS` with `input` on its standard input, closed after it.
    pub fn docker_input(&self, s: &Sandbox, args: &[&str], input: &[u8]) -> Out {
        use std::io::Write;
        let mut c = self.docker_command(s, args);
        let mut child = c.stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        Out::from(child.wait_with_output().unwrap())
    }

    /// `docker ARGS` on a terminal of `rows` x `cols` (script(1) gives it one); `input` is
    /// typed into it. `None` without script(1).
    pub fn docker_tty(
        &self,
        s: &Sandbox,
        size: (u16, u16),
        args: &[&str],
        input: &[u8],
    ) -> Option<Out> {
        use std::io::Write;
        let mut child = self.docker_tty_spawn(s, size, args)?;
        child.stdin.take().unwrap().write_all(input).unwrap();
        Some(Out::from(child.wait_with_output().unwrap()))
    }

    /// `docker ARGS` on a terminal of `rows` x `cols`, started: what is written to its
    /// standard input is typed into the terminal. `None` without script(1).
    pub fn docker_tty_spawn(
        &self,
        s: &Sandbox,
        (rows, cols): (u16, u16),
        args: &[&str],
    ) -> Option<std::process::Child> {
        let script = Path::new("/usr/bin/script");
        if !script.exists() {
            return None;
        }
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let line = format!(
            "stty rows {rows} cols {cols}; exec {DOCKER} {}",
            quoted.join(" ")
        );
        let mut c = s.user.command(script);
        c.args(["-qec", &line, "/dev/null"])
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("TERM", "vt100")
            .stdin(Stdio::piped());
        Some(c.spawn().unwrap())
    }
}
