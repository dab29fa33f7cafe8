//! The daemons and terminals tests/client.rs drives nook's client through — sshd on loopback
//! (ssh://), a real Docker Engine (Debian's dockerd), script(1)'s pty — and the tests that
//! need a daemon of their own.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::env::{Mode, Out};
use crate::support::sandbox::Sandbox;
use crate::support::serve::{Server, read};

/// sshd, killed before its directory (config, host key, log) is removed.
struct Sshd {
    _child: support::env::ChildGuard,
    dir: tempfile::TempDir,
}

/// A `sshd -D` on 127.0.0.1 for the user: a generated host key, the user's key authorized
/// with a forced command that checks ssh:// asked for `nook system dial-stdio` and runs it
/// against the server's socket. Returns the guard, the port and a PATH whose `ssh` reads
/// the test's client config.
fn start_sshd(s: &Sandbox, srv: &Server) -> Option<(Sshd, u16, String)> {
    use std::os::unix::fs::PermissionsExt;
    if !Path::new("/usr/sbin/sshd").exists() || !nix::unistd::geteuid().is_root() {
        support::skip("no /usr/sbin/sshd (or not root to start it)");
        return None;
    }
    let dir = s.user.home().join("ssh");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let keygen = |c: &mut std::process::Command, f: &Path| {
        let out = c
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let root_dir = tempfile::tempdir().unwrap();
    keygen(
        &mut std::process::Command::new("ssh-keygen"),
        &root_dir.path().join("host"),
    );
    for p in [&dir, &dir.join("bin")] {
        s.user.give(p);
    }
    keygen(
        &mut s.user.command(Path::new("/usr/bin/ssh-keygen")),
        &dir.join("id"),
    );
    let write = |name: &str, text: String, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        s.user.give(&p);
        p
    };
    let dial = write(
        "dial",
        format!(
            "#!/bin/sh\n[ \"$SSH_ORIGINAL_COMMAND\" = 'nook system dial-stdio' ] || {{ echo \"unexpected: $SSH_ORIGINAL_COMMAND\" >&2; exit 99; }}\nexec {} system dial-stdio --socket unix://{}\n",
            s.user.bin.display(),
            srv.sock.display()
        ),
        0o755,
    );
    let public = std::fs::read_to_string(dir.join("id.pub")).unwrap();
    let keys = write(
        "authorized_keys",
        format!("command=\"{}\",no-pty {public}", dial.display()),
        0o600,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = root_dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers {}\nPidFile none\n",
            root_dir.path().join("host").display(),
            keys.display(),
            s.user.name
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let log = std::fs::File::create(root_dir.path().join("sshd.log")).unwrap();
    let child = std::process::Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = Sshd {
        _child: support::env::ChildGuard(Some(child)),
        dir: root_dir,
    };
    let client = write(
        "config",
        format!(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  IdentityFile {}\n  BatchMode yes\n  LogLevel ERROR\n",
            dir.join("id").display()
        ),
        0o600,
    );
    write(
        "bin/ssh",
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            client.display()
        ),
        0o755,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = read(&guard.dir.path().join("sshd.log"));
        assert!(Instant::now() < deadline, "sshd did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", dir.join("bin").display());
    Some((guard, port, path))
}

/// A real Docker Engine (Debian's docker.io) on a private socket and on TLS over TCP (a CA,
/// its server certificate, a client certificate: `ca.pem`, `cert.pem`, `key.pem` in `dir`,
/// as DOCKER_CERT_PATH wants them), for as long as it lives.
struct Dockerd {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Drop for Dockerd {
    /// SIGTERM, so dockerd stops its containerd and shims; SIGKILL after 20 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the CA, the server's pair (for 127.0.0.1) and the client's pair into `dir`.
fn pki(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (names, cert, key) in [
        (
            vec!["127.0.0.1".to_owned()],
            "server-cert.pem",
            "server-key.pem",
        ),
        (vec!["client".to_owned()], "cert.pem", "key.pem"),
    ] {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&k, &ca)
            .unwrap();
        std::fs::write(dir.join(cert), c.pem()).unwrap();
        std::fs::write(dir.join(key), k.serialize_pem()).unwrap();
    }
}

impl Dockerd {
    pub fn start() -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() || !nix::unistd::geteuid().is_root() {
            support::skip("no /usr/sbin/dockerd (or not root to start it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let child = std::process::Command::new("/usr/sbin/dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["-H", &format!("unix://{}", p("docker.sock"))])
            .args(["-H", &format!("tcp://127.0.0.1:{port}"), "--tlsverify"])
            .args([
                "--tlscacert",
                &p("ca.pem"),
                "--tlscert",
                &p("server-cert.pem"),
            ])
            .args(["--tlskey", &p("server-key.pem")])
            .args([
                "--data-root",
                &p("root"),
                "--exec-root",
                &p("exec"),
                "--pidfile",
                &p("pid"),
            ])
            .stdout(std::fs::File::create(p("log")).unwrap())
            .stderr(std::fs::File::create(p("log2")).unwrap())
            .spawn()
            .unwrap();
        let d = Dockerd { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(d.dir.path().join("docker.sock")).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            if Instant::now() > deadline {
                support::skip("dockerd did not start here");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    /// nook's client (the test's binary, as root) with `env`, over the UNIX socket unless
    /// `args` name another daemon.
    pub fn nook_with(&self, bin: &Path, env: &[(&str, String)], args: &[&str]) -> Out {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        let mut c = std::process::Command::new(bin);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.dir.path())
            .env("DOCKER_HOST", host)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        Out::from(c.output().unwrap())
    }

    /// The flags that reach the TLS endpoint with the client certificate.
    pub fn tls_flags(&self) -> Vec<String> {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        vec![
            "-H".into(),
            format!("tcp://127.0.0.1:{}", self.port),
            "--tlsverify".into(),
            "--tlscacert".into(),
            p("ca.pem"),
            "--tlscert".into(),
            p("cert.pem"),
            "--tlskey".into(),
            p("key.pem"),
        ]
    }
}

#[test]
fn ssh_runs_dial_stdio_on_the_daemons_host() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let srv = Server::start(&s);
    let Some((_sshd, port, path)) = start_sshd(&s, &srv) else {
        return;
    };
    let host = format!("ssh://{}@127.0.0.1:{port}", s.user.name);
    let over_ssh = |args: &[&str]| {
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        s.user
            .run_env(&all, &[("PATH", &path), ("NOOK_TEST_TAG", &s.tag)])
    };
    let v = over_ssh(&["volume", "create", "sshvol"]);
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (0, "sshvol\n"),
        "{}\n{}",
        v.stderr,
        read(&srv.log)
    );
    assert_eq!(
        over_ssh(&["volume", "ls"]).stdout,
        s.nook(&["volume", "ls"]).stdout
    );
    for (script, code) in [
        (format!("echo over ssh; : {}", s.tag), 0),
        (format!("exit 7; : {}", s.tag), 7),
    ] {
        let r = over_ssh(&["run", "--rm", &s.image, "sh", "-c", &script]);
        let l = s.nook(&["run", "--rm", &s.image, "sh", "-c", &script]);
        assert_eq!((r.code, &r.stdout), (code, &l.stdout), "{}", r.stderr);
    }
}

#[test]
fn against_a_real_docker_engine() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let Some(d) = Dockerd::start() else {
        return;
    };
    let nook = |args: &[&str]| d.nook_with(&s.user.bin, &[], args);
    let must = |args: &[&str]| {
        let o = nook(args);
        let log = read(&d.dir.path().join("log2"));
        assert_eq!(
            o.code, 0,
            "{args:?}: {}\n{}\ndockerd:\n{log}",
            o.stdout, o.stderr
        );
        o.stdout
    };
    // The engine speaks 1.41 or so: nook's client follows it down.
    let pulled = must(&["pull", &s.image]);
    assert_eq!(pulled.trim(), format!("{}:latest", s.image));
    assert!(must(&["images"]).contains(&s.image));
    let run = nook(&[
        "run",
        "--rm",
        "--network",
        "none",
        &s.image,
        "sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (7, "hi\n"),
        "{}",
        run.stderr
    );
    must(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "dk1",
        &s.image,
        "sh",
        "-c",
        "echo up; sleep 100",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !must(&["logs", "dk1"]).contains("up") {
        assert!(Instant::now() < deadline, "no output from dk1");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = nook(&["exec", "dk1", "sh", "-c", "echo in; exit 3"]);
    assert_eq!((e.code, e.stdout.as_str()), (3, "in\n"), "{}", e.stderr);
    let f = d.dir.path().join("f.txt");
    std::fs::write(&f, "to docker\n").unwrap();
    must(&["cp", f.to_str().unwrap(), "dk1:/tmp/f.txt"]);
    let back = d.dir.path().join("back.txt");
    must(&["cp", "dk1:/tmp/f.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "to docker\n");
    assert!(must(&["ps"]).contains("dk1"));
    assert_eq!(must(&["rm", "-f", "dk1"]), "dk1\n");
    assert_eq!(must(&["volume", "create", "dkv"]), "dkv\n");
    assert!(must(&["volume", "ls"]).contains("dkv"));
    must(&["volume", "rm", "dkv"]);
    // push to the loopback registry, read back by the local path
    let target = format!("{}/fromdocker:1", s.reg.host);
    must(&["tag", &s.image, &target]);
    let pushed = must(&["push", &target]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let back = s.nook(&["pull", "-q", &target]);
    assert_eq!(back.code, 0, "{}", back.stderr);
    // run of an image the engine lacks: its 404 makes nook pull, then create again
    assert!(must(&["rmi", &s.image]).contains("Untagged"));
    let run = nook(&[
        "run",
        "--rm",
        "--network",
        "none",
        &s.image,
        "echo",
        "pulled",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "pulled\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Unable to find image"),
        "{}",
        run.stderr
    );
    // TLS over TCP with a client certificate: the flags, then docker's variables
    let tls = d.tls_flags();
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend([
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        &s.image,
        "sh",
        "-c",
        "cat; exit 5",
    ]);
    let mut c = std::process::Command::new(&s.user.bin);
    c.env_clear()
        .env("HOME", d.dir.path())
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"over tls\n")
            .unwrap();
    }
    let run = Out::from(child.wait_with_output().unwrap());
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (5, "over tls\n"),
        "{}",
        run.stderr
    );
    let cert_path = d.dir.path().display().to_string();
    let env = [
        ("DOCKER_HOST", format!("tcp://127.0.0.1:{}", d.port)),
        ("DOCKER_TLS_VERIFY", "1".to_owned()),
        ("DOCKER_CERT_PATH", cert_path),
    ];
    let v = d.nook_with(&s.user.bin, &env, &["volume", "ls"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    // Without the client certificate the engine turns nook away.
    let anonymous = d.nook_with(
        &s.user.bin,
        &[],
        &[&tls[0], &tls[1], &tls[2], &tls[3], &tls[4], "ps"],
    );
    assert_eq!(anonymous.code, 125, "{}", anonymous.stdout);
}
