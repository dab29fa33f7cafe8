//! Debian's docker-registry on a free loopback port, stopped on drop.
//!
//! It reads any `REGISTRY_*` variable as configuration, so it starts with an empty
//! environment and a config file of its own.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::env::ChildGuard;
use super::skip;

pub const BINARY: &str = "/usr/bin/docker-registry";

pub struct TestRegistry {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// `http://127.0.0.1:PORT` (or https with TLS)
    pub url: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS material for a registry: certificate and key PEM files.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl TestRegistry {
    pub fn start() -> Option<TestRegistry> {
        Self::start_with(None, "")
    }

    /// Starts a registry; `extra` is appended to its YAML config (auth sections).
    pub fn start_with(tls: Option<Tls<'_>>, extra: &str) -> Option<TestRegistry> {
        if !Path::new(BINARY).exists() {
            skip("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        }
        // One start at a time: a free port is only free until someone binds it.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        // Other tests pick free ports too (a container's published port, a server's): where
        // one took this port first, the registry exits and something else answers on it.
        for _ in 0..5 {
            if let Some(reg) = Self::try_start(tls.as_ref(), extra) {
                return Some(reg);
            }
        }
        panic!("docker-registry did not start on any of 5 free ports");
    }

    /// One try on one free port: the registry, once it answers as a registry, or `None` where
    /// it exited or something else holds the port.
    fn try_start(tls: Option<&Tls<'_>>, extra: &str) -> Option<TestRegistry> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_yaml = match &tls {
            Some(t) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{extra}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&cfg)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut reg = TestRegistry {
            _child: ChildGuard(Some(child)),
            _dir: dir,
            port,
            host: format!("127.0.0.1:{port}"),
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        let exited = |reg: &mut TestRegistry| {
            let child = reg._child.0.as_mut();
            child.is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if exited(&mut reg) {
                return None;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        if exited(&mut reg) || (tls.is_none() && !answers_as_registry(port)) || exited(&mut reg) {
            return None;
        }
        Some(reg)
    }
}

/// Whether what listens on `port` is a registry (`GET /v2/` answers with docker's API
/// version header).
fn answers_as_registry(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut head);
    String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version")
}
