//! Choosing the daemon: nook's contexts and the docker CLI's, `-H`, `NOOK_HOST`,
//! `DOCKER_HOST` and docker's TLS variables in docker's order; `--root` keeping a command
//! local; `nook system dial-stdio`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::env::{Mode, Out};
use crate::support::sandbox::Sandbox;
use crate::support::serve::{DOCKER, Server, read};

use super::ok;

#[test]
fn contexts_environment_and_docker_contexts() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let srv = Server::start(&s);
    let good = format!("unix://{}", srv.sock.display());
    let bad = format!("unix://{}", s.user.home().join("no.sock").display());
    let vols = |env: &[(&str, &str)], pre: &[&str]| {
        let mut args = pre.to_vec();
        args.extend(["volume", "ls", "-q"]);
        s.user.run_env(&args, env)
    };
    let refused = |o: &Out, what: &str| {
        assert_eq!(o.code, 125, "{what}: {}", o.stdout);
        assert!(o.stderr.contains("cannot connect"), "{what}: {}", o.stderr);
    };
    // nook's contexts
    let host_spec = format!("host={good}");
    ok(
        s.nook(&["context", "create", "srv", "--docker", &host_spec]),
        "create",
        &srv,
    );
    let bad_spec = format!("host={bad}");
    ok(
        s.nook(&["context", "create", "gone", "--docker", &bad_spec]),
        "create",
        &srv,
    );
    assert_eq!(vols(&[], &["--context", "srv"]).code, 0);
    refused(&vols(&[], &["--context", "gone"]), "--context gone");
    ok(s.nook(&["context", "use", "gone"]), "use", &srv);
    refused(&vols(&[], &[]), "current context gone");
    let ls = ok(s.nook(&["context", "ls"]), "ls", &srv);
    assert!(ls.contains("gone *"), "{ls}");
    let inspect = ok(s.nook(&["context", "inspect", "srv"]), "inspect", &srv);
    assert!(inspect.contains(&good), "{inspect}");
    // -H and the variables come before the current context; -H before them
    assert_eq!(vols(&[], &["-H", &good]).code, 0);
    assert_eq!(vols(&[("DOCKER_HOST", &good)], &[]).code, 0);
    assert_eq!(
        vols(&[("NOOK_HOST", &good), ("DOCKER_HOST", &bad)], &[]).code,
        0
    );
    refused(
        &vols(&[("DOCKER_HOST", &bad)], &["--context", "gone"]),
        "context over env",
    );
    assert_eq!(vols(&[("DOCKER_HOST", &bad)], &["-H", &good]).code, 0);
    // docker's TLS variables and flags: the CA file is read before any connection
    let certs = s.user.write_home("certs/ca.pem", b"not a certificate");
    let cert_dir = certs.parent().unwrap().to_str().unwrap().to_owned();
    let tls_env = [
        ("DOCKER_HOST", "tcp://127.0.0.1:9"),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", cert_dir.as_str()),
    ];
    let o = vols(&tls_env, &[]);
    assert!(o.code == 125 && o.stderr.contains("ca.pem"), "{}", o.stderr);
    let o = vols(
        &[],
        &[
            "-H",
            "tcp://127.0.0.1:9",
            "--tlsverify",
            "--tlscacert",
            certs.to_str().unwrap(),
        ],
    );
    assert!(o.code == 125 && o.stderr.contains("ca.pem"), "{}", o.stderr);
    let spec = format!("host=tcp://127.0.0.1:9,ca={}", certs.display());
    ok(
        s.nook(&["context", "create", "tlsctx", "--docker", &spec]),
        "create tls",
        &srv,
    );
    let o = vols(&[], &["--context", "tlsctx"]);
    assert!(
        o.code == 125 && o.stderr.contains("nook/contexts/tls"),
        "the copy is read: {}",
        o.stderr
    );
    ok(s.nook(&["context", "rm", "tlsctx"]), "rm tls", &srv);
    ok(s.nook(&["context", "use", "default"]), "use default", &srv);
    assert_eq!(vols(&[], &[]).code, 0, "default: the local path");
    ok(s.nook(&["context", "rm", "srv", "gone"]), "rm", &srv);
    assert!(!ok(s.nook(&["context", "ls", "-q"]), "ls", &srv).contains("srv"));
    // a context made and chosen by the real docker CLI
    if !Path::new(DOCKER).exists() {
        support::skip("no docker CLI at /usr/local/bin/docker");
        return;
    }
    let docker = |args: &[&str]| {
        let out = Out::from(
            s.user
                .command(Path::new(DOCKER))
                .args(args)
                .output()
                .unwrap(),
        );
        assert_eq!(out.code, 0, "docker {args:?}: {}", out.stderr);
    };
    docker(&["context", "create", "dk", "--docker", &bad_spec]);
    docker(&["context", "use", "dk"]);
    refused(&vols(&[], &[]), "docker's current context");
    docker(&["context", "create", "dkgood", "--docker", &host_spec]);
    docker(&["context", "use", "dkgood"]);
    assert_eq!(vols(&[], &[]).code, 0);
    // nook's own current context wins over docker's
    ok(
        s.nook(&["context", "create", "mine", "--docker", &host_spec]),
        "create",
        &srv,
    );
    ok(s.nook(&["context", "use", "mine"]), "use mine", &srv);
    docker(&["context", "use", "dk"]);
    assert_eq!(vols(&[], &[]).code, 0);
    ok(s.nook(&["context", "use", "default"]), "use default", &srv);
    refused(&vols(&[], &[]), "docker's again once nook has none");
}

#[test]
fn dial_stdio_relays_to_the_socket() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let srv = Server::start(&s);
    let sock = format!("unix://{}", srv.sock.display());
    let out = s.user.run_input(
        &["system", "dial-stdio", "--socket", &sock],
        &[],
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert!(out.stdout.ends_with("OK"), "{}", out.stdout);
}

#[test]
fn a_server_whose_environment_names_a_daemon_stays_local() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    // The user's shell names the server (DOCKER_HOST) and a context elsewhere is current:
    // the server's own re-executed commands (`nook --root DIR create ...`) stay local.
    let sock = s.user.home().join("own.sock");
    let host = format!("unix://{}", sock.display());
    let gone = format!("host=unix://{}", s.user.home().join("gone.sock").display());
    s.nook(&["context", "create", "gone", "--docker", &gone])
        .ok();
    s.nook(&["context", "use", "gone"]).ok();
    let log = s.user.home().join("own.log");
    let mut c = s.user.nook(&["serve", "-H", &host]);
    c.env("DOCKER_HOST", &host)
        .env("NOOK_TEST_TAG", &s.tag)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _server = support::env::ChildGuard(Some(c.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "no socket: {}", read(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = format!("echo local; : {}", s.tag);
    let run = s.nook(&["-H", &host, "run", "--rm", &s.image, "sh", "-c", &script]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "local\n"),
        "{}\n{}",
        run.stderr,
        read(&log)
    );
    // --root and a daemon named on the command line exclude each other
    let both = s.nook(&["--root", "/nonexistent", "-H", &host, "ps"]);
    assert!(
        both.code == 125 && both.stderr.contains("not both"),
        "{}",
        both.stderr
    );
    s.nook(&["context", "use", "default"]).ok();
}
