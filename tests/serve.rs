//! `nook serve` driven by the real docker CLI (28.x, /usr/local/bin/docker) over a UNIX
//! socket, as the unprivileged test users: system, images, volumes, containers (one engine,
//! two doors: `docker` and `nook` see the same containers), bad input, SIGTERM and restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::env::{ChildGuard, Mode, Out};
use support::sandbox::Sandbox;
use support::serve::{DOCKER, Server, json, read};

in_both_modes!(
    system_images_volumes_and_pull,
    containers_through_both_doors,
    create_then_start_and_wait,
    run_flags_reach_the_container,
    run_attached_streams_and_exit_codes,
    exec_output_stdin_exit_codes_and_detach,
);

fn system_images_volumes_and_pull(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let v = srv.ok(&s, &["version", "--format", "{{json .Server}}"]);
    let v = json(&v);
    assert_eq!(v["ApiVersion"], "1.50", "{v}");
    assert_eq!(v["MinAPIVersion"], "1.24", "{v}");
    assert_eq!(v["Os"], "linux");
    let info = json(&srv.ok(&s, &["info", "--format", "{{json .}}"]));
    assert_eq!(info["OSType"], "linux", "{info}");
    assert_eq!(info["Images"], 1, "{info}");
    assert_eq!(info["DockerRootDir"], s.user.store().display().to_string());
    assert!(
        ["overlay", "fuse", "copy"].contains(&info["Driver"].as_str().unwrap()),
        "{info}"
    );
    // images, tag, rmi
    let images = srv.ok(&s, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.trim(), format!("{}:latest", s.image));
    srv.ok(&s, &["tag", &s.image, "other/name:v1"]);
    let images = srv.ok(&s, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("other/name:v1"), "{images}");
    assert!(
        s.nook(&["images"]).stdout.contains("other/name"),
        "one store"
    );
    let rmi = srv.ok(&s, &["rmi", "other/name:v1"]);
    assert!(rmi.contains("Untagged: other/name:v1"), "{rmi}");
    let inspect = json(&srv.ok(&s, &["image", "inspect", &s.image]));
    assert_eq!(inspect[0]["RootFS"]["Type"], "layers", "{inspect}");
    assert!(inspect[0]["Id"].as_str().unwrap().starts_with("sha256:"));
    let history = srv.ok(&s, &["history", "-q", &s.image]);
    assert!(history.lines().count() >= 1, "{history}");
    let refs = srv.ok(
        &s,
        &[
            "images",
            "-q",
            "--filter",
            &format!("reference={}", s.image),
        ],
    );
    assert_eq!(refs.lines().count(), 1, "{refs}");
    let dangling = srv.ok(&s, &["images", "-q", "--filter", "dangling=true"]);
    assert!(dangling.trim().is_empty(), "{dangling}");
    let missing = srv.docker(&s, &["image", "inspect", "no/such:image"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("No such image"),
        "{}",
        missing.stderr
    );
    // volumes
    srv.ok(&s, &["volume", "create", "vol1"]);
    assert!(
        srv.ok(&s, &["volume", "ls", "-q"])
            .lines()
            .any(|l| l == "vol1")
    );
    let vi = json(&srv.ok(&s, &["volume", "inspect", "vol1"]));
    assert_eq!(vi[0]["Driver"], "local", "{vi}");
    srv.ok(&s, &["volume", "rm", "vol1"]);
    assert!(!srv.ok(&s, &["volume", "ls", "-q"]).contains("vol1"));
    // run -d of a missing image: the 404 makes the CLI pull, then create again
    srv.ok(&s, &["rmi", &s.image]);
    assert!(srv.ok(&s, &["images", "-q"]).trim().is_empty());
    let script = format!("true; : {}", s.tag);
    srv.ok(
        &s,
        &["run", "-d", "--name", "auto", &s.image, "sh", "-c", &script],
    );
    assert_eq!(srv.ok(&s, &["images", "-q"]).lines().count(), 1);
    srv.ok(&s, &["rm", "-f", "auto"]);
    // pull from the loopback registry, after removing the image
    srv.ok(&s, &["rmi", &s.image]);
    let pull = srv.ok(&s, &["pull", &s.image]);
    assert!(pull.contains("Downloaded newer image"), "{pull}");
    assert_eq!(srv.ok(&s, &["images", "-q"]).lines().count(), 1);
    let bad = srv.docker(&s, &["pull", &format!("{}/nothing:here", s.reg.host)]);
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    let log = read(&srv.log);
    assert!(
        log.contains("GET /v1.50/images/json"),
        "one line per request:\n{log}"
    );
}

/// Waits until `docker ps -a` shows `name` with a status starting with `prefix`.
fn wait_status(srv: &Server, s: &Sandbox, name: &str, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = srv.ok(
            s,
            &[
                "ps",
                "-a",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Status}}",
            ],
        );
        if st.trim().starts_with(prefix) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn containers_through_both_doors(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("echo out; echo err >&2; sleep 30; : {}", s.tag);
    let id = srv.ok(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "viadocker",
            &s.image,
            "sh",
            "-c",
            &script,
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let ps = srv.ok(&s, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("viadocker Up"), "{ps}");
    assert!(
        s.nook(&["ps"]).stdout.contains("viadocker"),
        "nook sees docker's container"
    );
    let nook_id = s.nook(&["run", "-d", "--name", "vianook", &s.image, "sleep", "30"]);
    nook_id.ok();
    let ps = srv.ok(&s, &["ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"]);
    assert!(
        ps.contains(&format!("{} vianook", nook_id.stdout.trim())),
        "{ps}"
    );
    // logs, framed by stream
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = srv.docker(&s, &["logs", "viadocker"]);
        if logs.stdout == "out\n" && logs.stderr == "err\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{logs:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = srv.docker(&s, &["logs", "--tail", "1", "--timestamps", "viadocker"]);
    assert!(
        tail.stderr.ends_with(" err\n") && tail.stdout.is_empty(),
        "{tail:?}"
    );
    // inspect
    let v = json(&srv.ok(&s, &["inspect", "viadocker"]));
    assert_eq!(v[0]["Name"], "/viadocker", "{v}");
    assert_eq!(v[0]["Id"], id);
    assert_eq!(v[0]["State"]["Running"], true);
    assert_eq!(v[0]["State"]["Status"], "running");
    assert_eq!(v[0]["Path"], "sh");
    assert_eq!(v[0]["Config"]["Tty"], false);
    let filtered = srv.ok(&s, &["ps", "-q", "--filter", "name=vianook"]);
    assert_eq!(filtered.trim(), &nook_id.stdout.trim()[..12]);
    // kill, restart, rm of a running container
    let busy = srv.docker(&s, &["rm", "vianook"]);
    assert!(busy.stderr.contains("container is running"), "{busy:?}");
    srv.ok(&s, &["kill", "vianook"]);
    wait_status(&srv, &s, "vianook", "Exited");
    srv.ok(&s, &["restart", "vianook"]);
    wait_status(&srv, &s, "vianook", "Up");
    // A waiting client blocks no other; its status comes at the exit.
    let mut waiter = s.user.command(Path::new(DOCKER));
    waiter
        .env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
        .args(["wait", "viadocker"]);
    let waiter = waiter.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.ok(&s, &["ps", "-q"]).lines().count() == 2);
    // stop, rm -f
    srv.ok(&s, &["stop", "-t", "1", "viadocker"]);
    wait_status(&srv, &s, "viadocker", "Exited");
    let waited = Out::from(waiter.wait_with_output().unwrap());
    assert!(["137", "143"].contains(&waited.stdout.trim()), "{waited:?}");
    assert!(
        s.nook(&["ps", "-a"]).stdout.contains("Exited"),
        "nook sees it stopped"
    );
    // docker's status line: "Exited (137) 2 seconds ago".
    let status = srv.ok(
        &s,
        &[
            "ps",
            "-a",
            "--filter",
            "name=viadocker",
            "--format",
            "{{.Status}}",
        ],
    );
    assert!(
        status.starts_with("Exited (") && status.trim_end().ends_with(" ago"),
        "{status:?}"
    );
    srv.ok(&s, &["rm", "-f", "vianook", "viadocker"]);
    assert!(srv.ok(&s, &["ps", "-aq"]).trim().is_empty());
    assert!(!s.nook(&["ps", "-a"]).stdout.contains("via"));
    // AutoRemove: the engine removes the container when it ends.
    let script = format!("true; : {}", s.tag);
    srv.ok(
        &s,
        &[
            "run", "-d", "--rm", "--name", "gone", &s.image, "sh", "-c", &script,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !srv.ok(&s, &["ps", "-aq"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "--rm container stays");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = srv.docker(&s, &["inspect", "--type", "container", "viadocker"]);
    assert!(gone.stderr.contains("No such container"), "{gone:?}");
}

fn create_then_start_and_wait(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("echo made; exit 3; : {}", s.tag);
    let id = srv.ok(
        &s,
        &[
            "create", "--name", "made", "-e", "X=1", &s.image, "sh", "-c", &script,
        ],
    );
    assert_eq!(id.trim().len(), 64);
    wait_status(&srv, &s, "made", "Created");
    srv.ok(&s, &["start", "made"]);
    let code = srv.ok(&s, &["wait", "made"]);
    assert_eq!(code.trim(), "3");
    assert_eq!(srv.docker(&s, &["logs", "made"]).stdout, "made\n");
    let v = json(&srv.ok(&s, &["inspect", "made"]));
    assert_eq!(v[0]["State"]["ExitCode"], 3, "{v}");
    assert!(
        v[0]["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "X=1"),
        "{v}"
    );
    srv.ok(&s, &["rm", "made"]);
    // A terminal: Config.Tty before and after the start, and raw (unframed) logs.
    let script = format!("echo tty; : {}", s.tag);
    srv.ok(
        &s,
        &[
            "create", "-t", "--name", "tty", &s.image, "sh", "-c", &script,
        ],
    );
    let v = json(&srv.ok(&s, &["inspect", "tty"]));
    assert_eq!(v[0]["Config"]["Tty"], true, "{v}");
    srv.ok(&s, &["start", "tty"]);
    assert_eq!(srv.ok(&s, &["wait", "tty"]).trim(), "0");
    let v = json(&srv.ok(&s, &["inspect", "tty"]));
    assert_eq!(v[0]["Config"]["Tty"], true, "{v}");
    let logs = srv.ok(&s, &["logs", "tty"]);
    assert!(logs.starts_with("tty"), "{logs:?}");
    srv.ok(&s, &["rm", "tty"]);
    // Several clients at once.
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let mut c = s.user.command(Path::new(DOCKER));
            let script = format!("sleep 20; : {}", s.tag);
            c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("many{i}"),
                    &s.image,
                    "sh",
                    "-c",
                    &script,
                ]);
            c.spawn().unwrap()
        })
        .collect();
    for r in runs {
        let out = Out::from(r.wait_with_output().unwrap());
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(srv.ok(&s, &["ps", "-q"]).lines().count(), 6);
    let ids: Vec<String> = srv
        .ok(&s, &["ps", "-aq"])
        .lines()
        .map(str::to_owned)
        .collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    srv.ok(&s, &rm);
}

#[test]
fn bad_input_is_refused() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = Server::start(&s);
    let (code, body) = srv.curl(&s, "GET", "/_ping", &[]);
    assert_eq!((code, body.as_str()), (200, "OK"));
    let (code, head) = srv.curl(&s, "HEAD", "/_ping", &["-I"]);
    assert_eq!(code, 200);
    for h in [
        "Api-Version: 1.50",
        "Builder-Version: 1",
        "Ostype: linux",
        "Pragma: no-cache",
    ] {
        assert!(head.contains(h), "{h}: {head}");
    }
    let (code, body) = srv.curl(&s, "POST", "/v1.50/containers/create", &["-d", "{not json"]);
    assert_eq!(code, 400, "{body}");
    assert!(
        json(&body)["message"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    let (code, _) = srv.curl(
        &s,
        "POST",
        "/v1.50/volumes/create",
        &["-H", "Content-Length: 20000000", "-d", "{}"],
    );
    assert_eq!(code, 413);
    let (code, body) = srv.curl(&s, "GET", "/v1.50/no/such/endpoint", &[]);
    assert_eq!(
        (code, json(&body)["message"].clone()),
        (404, "page not found".into())
    );
    let (code, body) = srv.curl(&s, "GET", "/v1.12/info", &[]);
    assert_eq!(code, 400, "{body}");
    let (code, body) = srv.curl(&s, "POST", "/v1.50/containers/x/attach", &[]);
    assert_eq!(code, 404, "{body}");
    let (code, body) = srv.curl(&s, "GET", "/v1.50/containers/nosuch/json", &[]);
    assert_eq!(code, 404, "{body}");
    let body = r#"{"Image":"x","HostConfig":{"Privileged":true}}"#;
    let (code, body) = srv.curl(
        &s,
        "POST",
        "/v1.50/containers/create",
        &["-H", "Content-Type: application/json", "-d", body],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Privileged"), "{body}");
    // This test runs as root: another uid than the socket's owner.
    if nix::unistd::getuid().as_raw() != s.user.uid {
        let mut c = UnixStream::connect(&srv.sock).unwrap();
        let _ = c.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    let mode = std::fs::metadata(&srv.sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

/// docker's own contexts name the server: `docker context create` + `--context`, and
/// `docker context use`.
#[test]
fn docker_contexts_name_the_server() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = Server::start(&s);
    let docker = |args: &[&str]| {
        let mut c = s.user.command(Path::new(DOCKER));
        c.args(args);
        let out = Out::from(c.output().unwrap());
        assert_eq!(out.code, 0, "docker {args:?}: {out:?}\n{}", read(&srv.log));
        out.stdout
    };
    let host = format!("host=unix://{}", srv.sock.display());
    docker(&["context", "create", "nookctx", "--docker", &host]);
    let v = docker(&[
        "--context",
        "nookctx",
        "version",
        "--format",
        "{{.Server.Os}}",
    ]);
    assert_eq!(v.trim(), "linux");
    let name = format!("ctx{}", s.tag);
    docker(&[
        "--context",
        "nookctx",
        "run",
        "-d",
        "--name",
        &name,
        &s.image,
        "sleep",
        "60",
    ]);
    docker(&["context", "use", "nookctx"]);
    let ps = docker(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), name, "docker context use");
    assert!(s.nook(&["ps", "-q"]).ok().stdout.trim().len() >= 12);
    docker(&["rm", "-f", &name]);
}

#[test]
fn sigterm_removes_the_socket_and_a_restart_sees_containers() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let run = s.nook(&["run", "-d", "--name", "before", &s.image, "sleep", "30"]);
    run.ok();
    let mut srv = Server::start(&s);
    assert!(srv.ok(&s, &["ps"]).contains("before"));
    let pid = nix::unistd::Pid::from_raw(srv.child.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = srv.child.0.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", read(&srv.log));
    assert!(!srv.sock.exists(), "the socket is removed");
    // A second server on the same path, and a stale socket file is replaced.
    std::os::unix::net::UnixListener::bind(&srv.sock)
        .map(drop)
        .unwrap();
    s.user.give(&srv.sock);
    let srv2 = Server::start(&s);
    assert!(
        srv2.ok(&s, &["ps"]).contains("before"),
        "a restarted server sees it"
    );
    assert!(
        s.nook(&["ps"]).stdout.contains("before"),
        "the container lived on"
    );
    srv2.ok(&s, &["rm", "-f", "before"]);
    // A second server on a live socket is refused.
    let again = s
        .user
        .run(&["serve", "-H", &format!("unix://{}", srv2.sock.display())]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("another server listens"),
        "{}",
        again.stderr
    );
}

fn run_flags_reach_the_container(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let data = s.user.home().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "bound\n").unwrap();
    s.user.give(&data);
    s.user.give(&data.join("f"));
    let bind = format!("{}:/data:ro", data.display());
    let script = format!(
        "pwd; echo $GREETING; cat /data/f; touch /etc/x 2>/dev/null || echo read-only; \
         grep -c ' /scratch tmpfs' /proc/mounts; echo $(hostname); : {}",
        s.tag
    );
    let args = [
        "run",
        "-d",
        "--name",
        "flags",
        "-w",
        "/tmp",
        "-e",
        "GREETING=hello",
        "-v",
        &bind,
        "--read-only",
        "--tmpfs",
        "/scratch",
        "--network",
        "none",
        "--hostname",
        "box",
        "--entrypoint",
        "sh",
        &s.image,
        "-c",
        &script,
    ];
    srv.ok(&s, &args);
    assert_eq!(srv.ok(&s, &["wait", "flags"]).trim(), "0");
    let logs = srv.docker(&s, &["logs", "flags"]);
    assert_eq!(
        logs.stdout, "/tmp\nhello\nbound\nread-only\n1\nbox\n",
        "{logs:?}"
    );
    let v = json(&srv.ok(&s, &["inspect", "flags"]));
    assert_eq!(v[0]["HostConfig"]["ReadonlyRootfs"], true, "{v}");
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], "none", "{v}");
    srv.ok(&s, &["rm", "flags"]);
    let refused = srv.docker(&s, &["run", "-d", "--privileged", &s.image, "true"]);
    assert!(refused.stderr.contains("Privileged"), "{refused:?}");
    assert!(srv.ok(&s, &["ps", "-aq"]).trim().is_empty(), "nothing made");
}

/// `docker run` without -d: attach (101, frames), wait and start; output on the right
/// streams, the exit code (also of an AutoRemove container, removed before the wait ends).
fn run_attached_streams_and_exit_codes(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("echo hi; : {}", s.tag);
    let out = srv.docker(&s, &["run", "--rm", &s.image, "sh", "-c", &script]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:?}");
    let script = format!("echo out; echo err >&2; exit 7; : {}", s.tag);
    let out = srv.docker(&s, &["run", "--rm", &s.image, "sh", "-c", &script]);
    assert_eq!(out.code, 7, "{out:?}\n{}", read(&srv.log));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n")
    );
    assert!(
        srv.ok(&s, &["ps", "-aq"]).trim().is_empty(),
        "--rm removed them"
    );
    // Without --rm (wait next-exit), then docker start -a of the same container.
    let script = format!("echo x; exit 2; : {}", s.tag);
    let out = srv.docker(
        &s,
        &["run", "--name", "kept", &s.image, "sh", "-c", &script],
    );
    assert_eq!((out.code, out.stdout.as_str()), (2, "x\n"), "{out:?}");
    let again = srv.docker(&s, &["start", "-a", "kept"]);
    assert_eq!((again.code, again.stdout.as_str()), (2, "x\n"), "{again:?}");
    assert_eq!(srv.docker(&s, &["logs", "kept"]).stdout, "x\nx\n");
    srv.ok(&s, &["rm", "kept"]);
    // A terminal: one raw stream.
    let script = format!("echo tty; echo err >&2; : {}", s.tag);
    let out = srv.docker(&s, &["run", "--rm", "-t", &s.image, "sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.replace('\r', ""), "tty\nerr\n", "{out:?}");
    // A request without the upgrade header gets the same stream on a plain 200.
    let script = format!("sleep 1; echo plain; : {}", s.tag);
    let id = srv.ok(&s, &["create", &s.image, "sh", "-c", &script]);
    let id = id.trim();
    let mut c = s.user.command(Path::new("/usr/bin/curl"));
    c.args(["-s", "-i", "--unix-socket"])
        .arg(&srv.sock)
        .args(["-X", "POST"])
        .arg(format!(
            "http://nook/v1.50/containers/{id}/attach?stream=1&stdout=1"
        ));
    let curl = c.stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    srv.ok(&s, &["start", id]);
    let out = Out::from(curl.wait_with_output().unwrap());
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert!(
        out.stdout.ends_with("\u{1}\0\0\0\0\0\0\u{6}plain\n"),
        "{out:?}"
    );
    srv.ok(&s, &["rm", id]);
}

/// `docker exec`: output on its streams, the exit code from the exec's inspect, stdin
/// through the hijacked connection (half-closed at its end), -d, and -t.
fn exec_output_stdin_exit_codes_and_detach(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("sleep 60; : {}", s.tag);
    srv.ok(
        &s,
        &["run", "-d", "--name", "box", &s.image, "sh", "-c", &script],
    );
    assert_eq!(srv.ok(&s, &["exec", "box", "echo", "hi"]), "hi\n");
    let out = srv.docker(
        &s,
        &["exec", "box", "sh", "-c", "echo o; echo e >&2; exit 3"],
    );
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "o\n", "e\n")
    );
    let mut c = s.user.command(Path::new(DOCKER));
    c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
        .args(["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = Out::from(child.wait_with_output().unwrap());
    assert_eq!((out.code, out.stdout.as_str()), (0, "piped\n"), "{out:?}");
    srv.ok(&s, &["exec", "-d", "box", "sh", "-c", "echo done > /tmp/d"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.docker(&s, &["exec", "box", "cat", "/tmp/d"]).stdout != "done\n" {
        assert!(Instant::now() < deadline, "exec -d did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tty = srv.docker(
        &s,
        &["exec", "-t", "box", "sh", "-c", "test -t 1 && echo tty"],
    );
    assert_eq!(tty.stdout.replace('\r', ""), "tty\n", "{tty:?}");
    // -it under a terminal: its size at the start, and the CLI's resize when it changes,
    // reach the command's terminal.
    let mut c = s.user.command(Path::new("/usr/bin/script"));
    let line = format!(
        "stty rows 40 cols 100; (sleep 1; stty rows 30 cols 90 </dev/tty) & \
         {DOCKER} exec -it box sh -c 'busybox stty size; sleep 2; busybox stty size'"
    );
    c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null());
    let out = Out::from(c.output().unwrap());
    // (the terminal may echo a stray NUL between the two lines, raw or as `^@`: timing of
    // `script`'s pty; only the sizes `stty size` printed are compared)
    let sizes: Vec<&str> = out
        .stdout
        .split(['\n', '\r', '\0'])
        .map(|l| l.trim_start_matches("^@"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(sizes, ["40 100", "30 90"], "{out:?}\n{}", read(&srv.log));
    let (code, body) = srv.curl(&s, "GET", "/v1.50/exec/nosuch/json", &[]);
    assert_eq!(code, 404, "{body}");
    srv.ok(&s, &["rm", "-f", "box"]);
    let stopped = srv.docker(&s, &["exec", "box", "true"]);
    assert_ne!(stopped.code, 0);
}

/// Networks, `system df` and the prunes (issue 14's system slice).
mod sysapi {
    use super::*;

    #[test]
    fn networks_df_and_prune_range() {
        networks_df_and_prune(Mode::Range)
    }

    #[test]
    fn networks_df_and_prune_single() {
        networks_df_and_prune(Mode::Single)
    }

    fn networks(srv: &Server, s: &Sandbox) {
        let ls = srv.ok(s, &["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
        assert_eq!(ls, "bridge bridge\nhost host\nnone null\n", "{ls}");
        let b = json(&srv.ok(s, &["network", "inspect", "bridge"]));
        assert_eq!(b[0]["Scope"], "local", "{b}");
        let id = b[0]["Id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 64);
        let again = json(&srv.ok(s, &["network", "inspect", &id[..12]]));
        assert_eq!(again[0]["Name"], "bridge");
        let made = srv.docker(s, &["network", "create", "mynet"]);
        assert_ne!(made.code, 0);
        assert!(made.stderr.contains("no user-defined networks"), "{made:?}");
        let (code, body) = srv.curl(s, "DELETE", "/v1.50/networks/bridge", &[]);
        assert_eq!(code, 501, "{body}");
        assert!(json(&body)["message"].is_string());
        let missing = srv.docker(s, &["network", "inspect", "nosuch"]);
        assert_ne!(missing.code, 0);
    }

    #[test]
    fn events_replayed_and_followed_range() {
        events_replayed_and_followed(Mode::Range)
    }

    #[test]
    fn events_replayed_and_followed_single() {
        events_replayed_and_followed(Mode::Single)
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// `docker events ARGS` bounded by `--until`: it must end by itself.
    fn bounded(srv: &Server, s: &Sandbox, args: &[&str]) -> String {
        let mut all = vec![DOCKER, "events", "--until", "0s"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ]);
        let mut c = s.user.command(Path::new("/usr/bin/timeout"));
        c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
            .arg("20")
            .args(&all);
        let out = Out::from(c.output().unwrap());
        assert_eq!(out.code, 0, "{out:?}\n{}", read(&srv.log));
        out.stdout
    }

    fn events_replayed_and_followed(mode: Mode) {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let srv = Server::start(&s);
        // A follower started before the run sees it happen.
        let since = (unix_now() - 1).to_string();
        let mut c = s.user.command(Path::new(DOCKER));
        c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
            .args(["events", "--since", &since, "--filter", "container=evt"])
            .args(["--format", "{{.Action}} {{.Actor.Attributes.name}}"])
            .stdout(Stdio::piped());
        let mut follower = ChildGuard(Some(c.spawn().unwrap()));
        let stdout = follower.0.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut r = std::io::BufReader::new(stdout);
            while std::io::BufRead::read_line(&mut r, &mut text).unwrap_or(0) > 0 {
                if tx.send(text.clone()).is_err() {
                    return;
                }
            }
        });
        let script = format!("exit 3; : {}", s.tag);
        let run = srv.docker(&s, &["run", "--name", "evt", &s.image, "sh", "-c", &script]);
        assert_eq!(run.code, 3, "{run:?}");
        srv.ok(&s, &["rm", "evt"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        while !seen.contains("destroy evt") {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(t) => seen = t,
                Err(_) => panic!("followed: {seen}\n{}", read(&srv.log)),
            }
        }
        assert_eq!(seen, "create evt\nstart evt\ndie evt\ndestroy evt\n");
        drop(follower);
        // Bounded replays: the API's container, one made by nook's own CLI, image changes.
        let cli_script = format!("true; : {}", s.tag);
        s.nook(&[
            "run",
            "--name",
            "clidoor",
            &s.image,
            "sh",
            "-c",
            &cli_script,
        ]);
        // exec through the API, commit through the CLI.
        let sleeper = format!("sleep 60; : {}", s.tag);
        srv.ok(
            &s,
            &["run", "-d", "--name", "evx", &s.image, "sh", "-c", &sleeper],
        );
        assert_eq!(
            srv.docker(&s, &["exec", "evx", "sh", "-c", "exit 4"]).code,
            4
        );
        s.nook(&["commit", "evx", "evc:1"]).ok();
        srv.ok(&s, &["rm", "-f", "evx"]);
        srv.ok(&s, &["tag", &s.image, "ev:1"]);
        srv.ok(&s, &["rmi", "ev:1"]);
        // The CLI's `--until 0s` is now in whole seconds: let this second pass.
        std::thread::sleep(Duration::from_millis(1100));
        let all = bounded(&srv, &s, &["--since", "1m"]);
        for want in [
            "container die evt",
            "container create clidoor",
            "container die clidoor",
            "image tag ev:1",
            "image untag ev:1",
            "container exec_start: sh -c exit 4 evx",
            "container exec_die evx",
            "container commit evx",
            "image tag evc:1",
        ] {
            assert!(
                all.contains(want),
                "{want}: {all}\njournal:\n{}",
                read(&s.user.store().join("events.log"))
            );
        }
        let query = format!(
            "/v1.50/events?since={since}&until={}&filters=%7B%22event%22%3A%5B%22die%22%5D%7D",
            unix_now() + 1
        );
        let (code, body) = srv.curl(&s, "GET", &query, &[]);
        assert_eq!(code, 200, "{body}");
        let die = json(body.lines().next().unwrap());
        assert_eq!(die["Actor"]["Attributes"]["exitCode"], "3", "{body}");
        assert_eq!(die["Actor"]["Attributes"]["name"], "evt", "{body}");
        assert!(die["timeNano"].as_u64().unwrap() > 0);
        let images = bounded(&srv, &s, &["--since", "1m", "--filter", "type=image"]);
        assert!(
            images.ends_with("image tag ev:1\nimage untag ev:1\n"),
            "{images}"
        );
        assert!(
            images.starts_with("image pull "),
            "the sandbox's pull: {images}"
        );
        let (code, body) = srv.curl(&s, "GET", "/v1.50/events?since=x", &[]);
        assert_eq!(code, 400, "{body}");
    }

    fn networks_df_and_prune(mode: Mode) {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let srv = Server::start(&s);
        networks(&srv, &s);
        let script = format!(
            "echo data > /v/f; head -c 3000 /dev/zero > /big; : {}",
            s.tag
        );
        srv.ok(
            &s,
            &[
                "run", "--name", "done", "-v", "/v", &s.image, "sh", "-c", &script,
            ],
        );
        let df = srv.ok(&s, &["system", "df"]);
        assert!(
            df.contains("Images") && df.contains("Local Volumes"),
            "{df}"
        );
        let v = json(&srv.ok(&s, &["system", "df", "-v", "--format", "{{json .}}"]));
        assert_eq!(v["Images"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["Containers"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["Volumes"].as_array().unwrap().len(), 1, "{v}");
        let (_, raw) = srv.curl(&s, "GET", "/v1.50/system/df", &[]);
        let raw = json(&raw);
        assert!(raw["LayersSize"].as_u64().unwrap() > 0, "{raw}");
        assert!(
            raw["Containers"][0]["SizeRw"].as_u64().unwrap() >= 3000,
            "{raw}"
        );
        assert_eq!(raw["BuildCache"], serde_json::json!([]));
        // prunes: the stopped container, then its anonymous volume, then images
        let pruned = srv.ok(&s, &["container", "prune", "-f"]);
        assert!(pruned.contains("Deleted Containers:"), "{pruned}");
        assert!(srv.ok(&s, &["ps", "-aq"]).trim().is_empty());
        srv.ok(&s, &["volume", "create", "named"]);
        let vp = srv.ok(&s, &["volume", "prune", "-f"]);
        assert!(vp.contains("Deleted Volumes:"), "{vp}");
        assert_eq!(srv.ok(&s, &["volume", "ls", "-q"]), "named\n");
        srv.ok(&s, &["volume", "prune", "-a", "-f"]);
        assert!(srv.ok(&s, &["volume", "ls", "-q"]).trim().is_empty());
        let ip = srv.ok(&s, &["image", "prune", "-f"]);
        assert!(ip.contains("Total reclaimed space"), "{ip}");
        assert_eq!(srv.ok(&s, &["images", "-q"]).lines().count(), 1);
        srv.ok(&s, &["tag", &s.image, "extra:1"]);
        let all = srv.ok(&s, &["image", "prune", "-a", "-f"]);
        assert!(all.contains("untagged: extra:1"), "{all}");
        assert!(all.contains("deleted: sha256:"), "{all}");
        assert!(srv.ok(&s, &["images", "-q"]).trim().is_empty());
    }
}

/// `docker build` (the classic builder, as no buildx is installed) and `docker cp`.
mod build_and_cp {
    use super::support::build::Ctx;
    use super::*;

    in_both_modes!(
        build_run_quiet_args_and_failures,
        build_of_a_gzip_context_sent_chunked,
        cp_both_ways_and_hostile_archives
    );

    /// `docker build -t` of a directory, then `docker run` of the image; --build-arg,
    /// --target, -q (only the id), and a failing RUN (the CLI fails with its text).
    fn build_run_quiet_args_and_failures(mode: Mode) {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let srv = Server::start(&s);
        let ctx = Ctx::new(&s.user, "ctx");
        ctx.file("hello.txt", b"hello from the context\n").dockerfile(
            "FROM {base} AS base\nARG GREETING=none\nRUN echo \"greeting $GREETING\" > /greeting\n\
             COPY hello.txt /hello.txt\nCMD [\"cat\", \"/greeting\", \"/hello.txt\"]\n\
             FROM base AS broken\nRUN echo about to fail; exit 3\n",
            &s.image,
        );
        let tag = format!("built-{}", s.tag);
        let out = srv.ok(
            &s,
            &[
                "build",
                "-t",
                &tag,
                "--target",
                "base",
                "--build-arg",
                "GREETING=hi",
                ctx.path(),
            ],
        );
        assert!(out.contains("Step 1/"), "{out}");
        assert!(out.contains("Successfully built "), "{out}");
        assert!(
            out.contains(&format!("Successfully tagged {tag}:latest")),
            "{out}"
        );
        let ran = srv.ok(&s, &["run", "--rm", &tag]);
        assert_eq!(ran, "greeting hi\nhello from the context\n");
        let id = srv.ok(
            &s,
            &[
                "build",
                "-q",
                "--target=base",
                "--build-arg=GREETING=hi",
                ctx.path(),
            ],
        );
        let full = json(&srv.ok(&s, &["image", "inspect", &tag]))[0]["Id"].clone();
        assert!(
            id.starts_with("sha256:") && id.lines().count() == 1,
            "{id:?}"
        );
        assert_eq!(
            id.trim(),
            full.as_str().unwrap().trim(),
            "the same steps, cached: one id"
        );
        let failed = srv.docker(&s, &["build", "-t", "broken", ctx.path()]);
        assert_eq!(
            failed.code, 3,
            "the step's code, as docker's errorDetail gives it: {failed:?}"
        );
        assert!(failed.stdout.contains("about to fail"), "{failed:?}");
        assert!(
            failed.stderr.contains("exit") || failed.stderr.contains("3"),
            "{failed:?}"
        );
        assert!(srv.docker(&s, &["image", "inspect", "broken"]).code != 0);
    }

    /// A raw `POST /build` of a gzip context with a Dockerfile of another name, sent chunked:
    /// the stream's lines, the aux id and the tag.
    fn build_of_a_gzip_context_sent_chunked(mode: Mode) {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let srv = Server::start(&s);
        let df = format!("FROM {}\nCOPY f /f\nLABEL t={}\n", s.image, s.tag);
        let tar = support::build::tar_of(&[("sub/Df", df.as_bytes(), 0o644), ("f", b"x", 0o644)]);
        let gz = s
            .user
            .write_home("ctx.tar.gz", &support::archive::gzip(&tar));
        let (code, body) = srv.curl(
            &s,
            "POST",
            "/v1.50/build?version=1&dockerfile=sub%2FDf&t=gz%3Av1&t=gz2",
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "Content-Type: application/x-tar",
                "-H",
                "X-Registry-Config: e30=",
                "--data-binary",
                &format!("@{}", gz.display()),
            ],
        );
        assert_eq!(code, 200, "{body}");
        let lines: Vec<serde_json::Value> = body.lines().map(json).collect();
        assert!(
            lines[0]["stream"]
                .as_str()
                .unwrap()
                .starts_with("Step 1/3 : FROM"),
            "{body}"
        );
        let aux = lines.iter().find_map(|l| l["aux"]["ID"].as_str()).unwrap();
        let shown = format!("Successfully built {}\n", &aux["sha256:".len()..][..12]);
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(3)
            .filter_map(|l| l["stream"].as_str())
            .collect();
        assert_eq!(
            tail,
            [
                "Successfully tagged gz2:latest\n",
                "Successfully tagged gz:v1\n",
                shown.as_str()
            ],
            "{body}"
        );
        let v = json(&srv.ok(&s, &["image", "inspect", "gz:v1"]));
        assert_eq!(v[0]["Id"], aux);
        let (code, body) = srv.curl(&s, "POST", "/v1.50/build?version=2", &[]);
        assert_eq!(code, 400, "{body}");
    }

    /// A tar holding one file under a raw name (escapes included, as a hostile client sends).
    fn raw_tar(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// `docker cp` out of and into a running container (HEAD, GET and PUT of its archive),
    /// and PUTs whose entries try to leave the container's root.
    fn cp_both_ways_and_hostile_archives(mode: Mode) {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let srv = Server::start(&s);
        let script = format!("sleep 60; : {}", s.tag);
        srv.ok(
            &s,
            &["run", "-d", "--name", "box", &s.image, "sh", "-c", &script],
        );
        let home = s.user.home();
        let x = home.join("x");
        srv.ok(&s, &["cp", "box:/etc/hostname", x.to_str().unwrap()]);
        assert_eq!(
            read(&x),
            srv.ok(&s, &["exec", "box", "cat", "/etc/hostname"])
        );
        let ctx = Ctx::new(&s.user, "dir");
        ctx.file("f", b"in a file\n").file("sub/g", b"deeper\n");
        srv.ok(&s, &["cp", ctx.path(), "box:/tmp/"]);
        let got = srv.ok(&s, &["exec", "box", "cat", "/tmp/dir/f", "/tmp/dir/sub/g"]);
        assert_eq!(got, "in a file\ndeeper\n");
        let back = home.join("back");
        srv.ok(&s, &["cp", "box:/tmp/dir", back.to_str().unwrap()]);
        assert_eq!(read(&back.join("sub/g")), "deeper\n");
        let missing = srv.docker(&s, &["cp", "box:/nonexistent", x.to_str().unwrap()]);
        assert_ne!(missing.code, 0, "{missing:?}");
        let archive = "/v1.50/containers/box/archive?path=/nonexistent";
        let (code, body) = srv.curl(&s, "GET", archive, &[]);
        assert_eq!(code, 404, "{body}");
        for (i, bad) in ["../../../../../../escape", "/abs", "a/../../../escape"]
            .iter()
            .enumerate()
        {
            let name = bad
                .replace("escape", &format!("escape-{}", s.tag))
                .replace("abs", &format!("abs-{}", s.tag));
            let tar = s.user.write_home(&format!("bad{i}.tar"), &raw_tar(&name));
            let (code, body) = srv.curl(
                &s,
                "PUT",
                "/v1.50/containers/box/archive?path=/tmp",
                &["--data-binary", &format!("@{}", tar.display())],
            );
            assert!(code >= 400, "{bad}: {code} {body}");
        }
        let escaped = format!("escape-{}", s.tag);
        let listing = srv.ok(&s, &["exec", "box", "sh", "-c", "ls / /tmp"]);
        assert!(
            !listing.contains(&escaped) && !listing.contains("abs-"),
            "{listing}"
        );
        for dir in [
            home.clone(),
            PathBuf::from("/tmp"),
            home.join(".local/share"),
        ] {
            assert!(!dir.join(&escaped).exists(), "{}", dir.display());
        }
        srv.ok(&s, &["rm", "-f", "box"]);
    }
}
