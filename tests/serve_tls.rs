//! `nook serve -H tcp://…`: the real docker CLI (28.x) over mutual TLS with certificates made
//! here by rcgen, clients without a good certificate refused before any HTTP, plain TCP only
//! on loopback with --insecure-tcp, and the flag combinations that must not start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use support::env::{ChildGuard, Mode, Out, User};
use support::sandbox::Sandbox;
use support::serve::{DOCKER, Server, json, read};

in_both_modes!(docker_over_mutual_tls);

/// Certificates in the user's `tls/` folder: docker's client names (ca.pem, cert.pem,
/// key.pem, for DOCKER_CERT_PATH), the server's, and a client of another CA.
struct Pki {
    dir: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` with `purpose`, signed by `issuer`: (cert PEM, key PEM).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, "nook test");
    p.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(user: &User) -> Pki {
        let good = ca("nook test CA");
        let other = ca("another CA");
        let (server_cert, server_key) = leaf(
            &good,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (cert, key) = leaf(&good, &["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let (rogue_cert, rogue_key) =
            leaf(&other, &["client"], ExtendedKeyUsagePurpose::ClientAuth);
        for (name, pem) in [
            ("ca.pem", good.pem()),
            ("cert.pem", cert),
            ("key.pem", key),
            ("server-cert.pem", server_cert),
            ("server-key.pem", server_key),
            ("rogue/ca.pem", good.pem()),
            ("rogue/cert.pem", rogue_cert),
            ("rogue/key.pem", rogue_key),
        ] {
            user.write_home(&format!("tls/{name}"), pem.as_bytes());
        }
        Pki {
            dir: user.home().join("tls"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `nook serve`'s flags for mutual TLS.
    fn server_flags(&self) -> Vec<String> {
        vec![
            "--tlsverify".into(),
            "--tlscacert".into(),
            self.path("ca.pem"),
            "--tlscert".into(),
            self.path("server-cert.pem"),
            "--tlskey".into(),
            self.path("server-key.pem"),
        ]
    }
}

/// A `nook serve` on a UNIX socket in the user's home and on `tcp` (port 0: the server
/// says which port it got), with `flags`; and that TCP address.
fn start(user: &User, tag: &str, tcp: &str, flags: &[String]) -> (Server, String) {
    let sock = user.home().join("nook.sock");
    let log = user.home().join("serve.log");
    let file = std::fs::File::create(&log).unwrap();
    user.give(&log);
    let unix = format!("unix://{}", sock.display());
    let mut args = vec!["serve", "-H", &unix, "-H", tcp];
    args.extend(flags.iter().map(String::as_str));
    let mut c = user.nook(&args);
    c.env("NOOK_TEST_TAG", tag)
        .stdout(Stdio::null())
        .stderr(file);
    let child = ChildGuard(Some(c.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = read(&log);
        let bound = text
            .split("listening on tcp://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(a) = bound
            && std::os::unix::net::UnixStream::connect(&sock).is_ok()
        {
            break a.to_owned();
        }
        assert!(Instant::now() < deadline, "no TCP listener: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (Server { child, sock, log }, addr)
}

/// The docker CLI as `user` on `addr`, with the client certificates of `certs` (None: plain).
fn docker_tcp(user: &User, addr: &str, certs: Option<&Path>) -> std::process::Command {
    let mut c = user.command(Path::new(DOCKER));
    c.env("DOCKER_HOST", format!("tcp://{addr}"));
    if let Some(dir) = certs {
        c.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", dir);
    }
    c
}

fn run(mut c: std::process::Command, args: &[&str]) -> Out {
    Out::from(c.args(args).output().unwrap())
}

#[track_caller]
fn ok(out: Out, srv: &Server) -> String {
    assert_eq!(
        out.code,
        0,
        "{}\n{}\nserver log:\n{}",
        out.stdout,
        out.stderr,
        read(&srv.log)
    );
    out.stdout
}

/// The docker CLI over TLS (DOCKER_CERT_PATH, and docker's --tls* flags) runs, logs, execs
/// and removes containers; the UNIX socket of the same server sees them; a client that
/// leaves a followed log frees its stream.
fn docker_over_mutual_tls(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let pki = Pki::new(&s.user);
    let (srv, addr) = start(&s.user, &s.tag, "tcp://127.0.0.1:0", &pki.server_flags());
    let d = || docker_tcp(&s.user, &addr, Some(&pki.dir));
    let v = json(&ok(
        run(d(), &["version", "--format", "{{json .Server}}"]),
        &srv,
    ));
    assert_eq!(v["ApiVersion"], "1.50", "{v}");
    // docker's own flag names, as an alternative to the environment.
    let mut flags = s.user.command(Path::new(DOCKER));
    flags.args(["--tlsverify", "--tlscacert", &pki.path("ca.pem")]);
    flags.args([
        "--tlscert",
        &pki.path("cert.pem"),
        "--tlskey",
        &pki.path("key.pem"),
    ]);
    flags.args(["-H", &format!("tcp://{addr}")]);
    let v = ok(run(flags, &["version", "--format", "{{.Server.Os}}"]), &srv);
    assert_eq!(v.trim(), "linux");

    let script = format!("echo hi; : {}", s.tag);
    let out = run(d(), &["run", "--rm", &s.image, "sh", "-c", &script]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:?}");
    let script = format!("echo out; echo err >&2; exit 7; : {}", s.tag);
    let out = run(d(), &["run", "--rm", &s.image, "sh", "-c", &script]);
    assert_eq!(out.code, 7, "{out:?}\n{}", read(&srv.log));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n")
    );

    let script = format!("echo started; sleep 600; : {}", s.tag);
    let id = ok(
        run(d(), &["run", "-d", &s.image, "sh", "-c", &script]),
        &srv,
    );
    let id = id.trim();
    let unix = srv.ok(&s, &["ps", "-q", "--no-trunc"]);
    assert!(unix.contains(id), "one engine behind both doors: {unix}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(run(d(), &["logs", id]), &srv) != "started\n" {
        assert!(Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(d(), &["exec", id, "sh", "-c", "echo in; exit 3"]);
    assert_eq!((out.code, out.stdout.as_str()), (3, "in\n"), "{out:?}");
    // stdin through the relay, and its end (docker half-closes its TLS side) reaching cat.
    let mut c = d();
    c.args(["exec", "-i", id, "cat"]).stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through tls\n")
        .unwrap();
    let out = Out::from(child.wait_with_output().unwrap());
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "through tls\n"),
        "{out:?}"
    );
    // Megabytes both ways at once: the relay's buffers fill and drain.
    let mut c = d();
    c.args(["exec", "-i", id, "cat"]).stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let sent = big.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == big,
        "{} bytes back of {}",
        out.stdout.len(),
        big.len()
    );
    let out = run(d(), &["exec", id, "seq", "1", "300000"]);
    assert_eq!(out.stdout.lines().count(), 300000, "{}", out.stderr);
    assert!(out.stdout.ends_with("\n300000\n"));

    // A client that goes away from `logs -f` of a quiet container ends the stream.
    let mut follow = d();
    follow.args(["logs", "-f", id]);
    let mut child = ChildGuard(Some(follow.spawn().unwrap()));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(first.as_deref(), Ok("started\n"), "logs -f streams");
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&srv.log)
        .lines()
        .any(|l| l.contains("follow=1") && l.contains("(streamed)"))
    {
        assert!(Instant::now() < deadline, "stream held: {}", read(&srv.log));
        std::thread::sleep(Duration::from_millis(100));
    }

    ok(run(d(), &["rm", "-f", id]), &srv);
    assert!(srv.ok(&s, &["ps", "-aq"]).trim().is_empty());
    let log = read(&srv.log);
    assert!(log.contains("POST /v1.50/containers/create"), "{log}");
    assert!(!log.contains("refused a TLS client"), "{log}");
}

/// curl over TCP as the user: (exit code, what curl wrote).
fn curl(user: &User, url: &str, tls: &[&str]) -> Out {
    let mut c = user.command(Path::new("/usr/bin/curl"));
    c.args([
        "-s",
        "-S",
        "-o",
        "-",
        "-w",
        "%{http_code}",
        "--max-time",
        "20",
    ])
    .args(tls)
    .arg(url);
    Out::from(c.output().unwrap())
}

/// No certificate, a certificate of another CA, or no TLS at all: refused during the
/// handshake, nothing answered, the refusal logged with its reason.
#[test]
fn clients_without_a_good_certificate_are_refused() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let pki = Pki::new(&s.user);
    let (srv, addr) = start(&s.user, &s.tag, "tcp://127.0.0.1:0", &pki.server_flags());
    let url = format!("https://{addr}/_ping");
    let ca = pki.path("ca.pem");
    let good = curl(
        &s.user,
        &url,
        &[
            "--cacert",
            &ca,
            "--cert",
            &pki.path("cert.pem"),
            "--key",
            &pki.path("key.pem"),
        ],
    );
    assert_eq!((good.code, good.stdout.as_str()), (0, "OK200"), "{good:?}");
    let rogue = [
        "--cert",
        &pki.path("rogue/cert.pem"),
        "--key",
        &pki.path("rogue/key.pem"),
    ];
    for (what, tls) in [
        ("no certificate", vec!["--cacert", &ca]),
        ("another CA", [&["--cacert", &ca][..], &rogue].concat()),
    ] {
        let out = curl(&s.user, &url, &tls);
        assert_ne!(out.code, 0, "{what}: {out:?}");
        assert_eq!(out.stdout, "000", "{what}: nothing answered: {out:?}");
    }
    let plain = curl(&s.user, &format!("http://{addr}/_ping"), &[]);
    assert_ne!(plain.code, 0, "{plain:?}");
    assert_eq!(plain.stdout, "000", "{plain:?}");
    // docker with the other CA's client certificate.
    let out = run(
        docker_tcp(&s.user, &addr, Some(&pki.dir.join("rogue"))),
        &["run", "--rm", &s.image, "true"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(srv.ok(&s, &["ps", "-aq"]).trim().is_empty(), "nothing made");
    let log = read(&srv.log);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a TLS client from 127.0.0.1"))
        .collect();
    assert!(refusals.len() >= 4, "{log}");
    assert!(
        refusals.iter().any(|l| l.contains("no certificates")),
        "{log}"
    );
    assert!(
        log.lines().filter(|l| l.contains("GET /_ping 200")).count() == 1,
        "{log}"
    );
    // A client that connects and never says anything is dropped at the handshake deadline.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let got = std::io::Read::read(&mut idle, &mut [0u8; 64]);
    assert!(matches!(got, Ok(0)), "closed, not timed out: {got:?}");
    assert!(read(&srv.log).contains("no complete handshake in time"));
}

/// `--insecure-tcp` serves plain TCP on loopback (with a warning); off loopback, or TCP
/// without either mode, nook serve does not start and says why.
#[test]
fn insecure_tcp_only_on_loopback() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let insecure = vec!["--insecure-tcp".to_string()];
    let tag = format!("nooktagplain{}", std::process::id());
    let (srv, addr) = start(&user, &tag, "tcp://127.0.0.1:0", &insecure);
    let v = ok(
        run(
            docker_tcp(&user, &addr, None),
            &["version", "--format", "{{.Server.Os}}"],
        ),
        &srv,
    );
    assert_eq!(v.trim(), "linux");
    let log = read(&srv.log);
    assert!(
        log.lines()
            .any(|l| l.starts_with("WARNING: listening on tcp://127.0.0.1:")
                && l.contains("--insecure-tcp")),
        "{log}"
    );
    drop(srv);

    let refused = |args: &[&str], needle: &str| {
        let out = Out::from(
            user.nook(&[&["serve"][..], args].concat())
                .output()
                .unwrap(),
        );
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
    };
    for addr in ["tcp://0.0.0.0:0", "tcp://[::]:0", "tcp://10.1.2.3:0"] {
        refused(&["-H", addr, "--insecure-tcp"], "only a loopback address");
    }
    refused(&["-H", "tcp://127.0.0.1:0"], "TCP needs mutual TLS");
    refused(
        &["-H", "tcp://127.0.0.1:0", "--tls"],
        "--tls without --tlsverify",
    );
    refused(
        &["-H", "tcp://127.0.0.1:0", "--tlsverify"],
        "--tlsverify needs --tlscacert",
    );
    refused(&["--insecure-tcp"], "--insecure-tcp is for -H tcp://");
}
