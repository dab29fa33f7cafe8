//! Standard input and terminals of containers started through `nook serve`, driven by the
//! real docker CLI: `docker run -i` (StdinOnce: the input's end closes the container's),
//! `docker run -it` on a terminal, the terminal's size and `POST /containers/{id}/resize`,
//! `docker run -d -i` then `docker attach` (the input stays open across attaches), and an
//! attach client killed mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::env::{ChildGuard, Mode};
use support::sandbox::Sandbox;
use support::serve::{Server, read};

in_both_modes!(
    run_i_reads_stdin_to_its_end,
    run_it_on_a_terminal,
    resize_reaches_the_terminal,
    attach_to_a_detached_container_with_open_stdin,
    run_i_client_killed_closes_stdin_once,
);

/// `echo hi | docker run -i --rm busybox cat` → hi; a shell's exit code from its input.
fn run_i_reads_stdin_to_its_end(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("cat; : {}", s.tag);
    let out = srv.docker_input(
        &s,
        &["run", "-i", "--rm", &s.image, "sh", "-c", &script],
        b"hi\n",
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hi\n"),
        "{out:?}\n{}",
        read(&srv.log)
    );
    let out = srv.docker_input(
        &s,
        &["run", "-i", "--rm", &s.image, "sh"],
        b"echo in; exit 3\n",
    );
    assert_eq!((out.code, out.stdout.as_str()), (3, "in\n"), "{out:?}");
    // docker create -i, then start -ai: OpenStdin from the arguments before any run.
    srv.ok(
        &s,
        &[
            "create", "-i", "--name", "ci", &s.image, "sh", "-c", &script,
        ],
    );
    let out = srv.docker_input(&s, &["start", "-ai", "ci"], b"started\n");
    assert_eq!((out.code, out.stdout.as_str()), (0, "started\n"), "{out:?}");
    srv.ok(&s, &["rm", "ci"]);
    // Under --init, nook's reaper (pid 1) holds none of the monitor's descriptors.
    let out = srv.docker_input(
        &s,
        &["run", "-i", "--init", "--rm", &s.image, "sh", "-c", &script],
        b"init\n",
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, "init\n"), "{out:?}");
    // Without -i the input is not the container's: cat reads /dev/null.
    let out = srv.docker_input(
        &s,
        &["run", "--rm", &s.image, "sh", "-c", &script],
        b"lost\n",
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    // Larger than a pipe's buffer and than one message to the monitor.
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = srv.docker_input(&s, &["run", "-i", "--rm", &s.image, "wc", "-c"], &big);
    assert_eq!((out.code, out.stdout.trim()), (0, "200000"), "{out:?}");
}

/// `docker run -it` on a terminal: typed input reaches the shell, its exit code is docker's,
/// and the terminal's size is the client's (ConsoleSize at create).
fn run_it_on_a_terminal(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let Some(out) = srv.docker_tty(
        &s,
        (30, 100),
        &["run", "-it", "--rm", &s.image, "sh"],
        b"echo $((6*7)); exit 5\n",
    ) else {
        support::skip("script(1) from util-linux is needed to give docker a terminal");
        return;
    };
    assert_eq!(out.code, 5, "{out:?}\n{}", read(&srv.log));
    assert!(out.stdout.lines().any(|l| l.trim() == "42"), "{out:?}");
    let out = srv
        .docker_tty(
            &s,
            (33, 77),
            &["run", "-it", "--rm", &s.image, "sh", "-c", "stty size"],
            b"",
        )
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("33 77"), "{out:?}");
    // ctrl-p ctrl-q: the client detaches, the container runs on.
    let mut c = srv
        .docker_tty_spawn(
            &s,
            (24, 80),
            &["run", "-it", "--name", "dk", &s.image, "sh"],
        )
        .unwrap();
    let mut typed = c.stdin.take().unwrap();
    let lines = line_reader(c.stdout.take().unwrap());
    let mut client = ChildGuard(Some(c));
    typed.write_all(b"echo $((6*7))\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines
        .recv_timeout(Duration::from_secs(30))
        .map(|l| l.trim().to_owned())
        != Ok("42".into())
    {
        assert!(
            Instant::now() < deadline,
            "no answer from the shell: {}",
            read(&srv.log)
        );
    }
    typed.write_all(b"\x10\x11").unwrap();
    let ch = client.0.as_mut().unwrap();
    wait_for(|| ch.try_wait().unwrap().is_some(), "the client to detach");
    assert_eq!(ch.try_wait().unwrap().and_then(|st| st.code()), Some(0));
    let running = srv.ok(&s, &["inspect", "-f", "{{.State.Running}}", "dk"]);
    assert_eq!(running.trim(), "true", "detached, not ended");
    srv.ok(&s, &["rm", "-f", "dk"]);
}

/// `POST /containers/{id}/resize` sets a running container's terminal size (its shell sees
/// SIGWINCH); 200 without a terminal, 409 once it has stopped, 404 for none.
fn resize_reaches_the_terminal(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!(
        "trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done; : {}",
        s.tag
    );
    srv.ok(
        &s,
        &[
            "run", "-d", "-t", "--name", "rs", &s.image, "sh", "-c", &script,
        ],
    );
    // A SIGWINCH before the trap would be lost.
    wait_for(|| srv.ok(&s, &["logs", "rs"]).contains("ready"), "the trap");
    let (code, body) = srv.curl(&s, "POST", "/v1.50/containers/rs/resize?h=21&w=55", &[]);
    assert_eq!(code, 200, "{body}");
    wait_for(
        || srv.ok(&s, &["logs", "rs"]).contains("21 55"),
        "the new size in the log",
    );
    let (code, _) = srv.curl(&s, "POST", "/containers/rs/resize?h=1", &[]);
    assert_eq!(code, 400);
    srv.ok(
        &s,
        &[
            "run", "-d", "--name", "plain", &s.image, "sh", "-c", &script,
        ],
    );
    let (code, body) = srv.curl(&s, "POST", "/containers/plain/resize?h=21&w=55", &[]);
    assert_eq!(code, 200, "no terminal: nothing to do, as docker: {body}");
    srv.ok(&s, &["rm", "-f", "plain"]);
    srv.ok(&s, &["stop", "-t", "1", "rs"]);
    let (code, body) = srv.curl(&s, "POST", "/containers/rs/resize?h=21&w=55", &[]);
    assert_eq!(code, 409, "{body}");
    let (code, _) = srv.curl(&s, "POST", "/containers/nosuch/resize?h=1&w=1", &[]);
    assert_eq!(code, 404);
    srv.ok(&s, &["rm", "rs"]);
}

/// `docker run -d -i --name x busybox cat`, then `echo a | docker attach x`: as docker's,
/// the attach sends `a`, shows cat's echo, and stays until the container ends (its input
/// stays open: no StdinOnce without an attached run). A killed attach client leaves the
/// container running, its input open for the next attach, no server thread behind, and
/// `docker stop` works.
fn attach_to_a_detached_container_with_open_stdin(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("cat; : {}", s.tag);
    srv.ok(
        &s,
        &[
            "run", "-d", "-i", "--name", "x", &s.image, "sh", "-c", &script,
        ],
    );
    let threads = || threads_of(srv.child.pid());
    let before = threads();
    for word in ["alpha", "beta"] {
        let (mut client, lines) = spawn_attach(&srv, &s, "x", format!("{word}\n").as_bytes());
        let seen = lines.recv_timeout(Duration::from_secs(30));
        assert_eq!(seen.as_deref(), Ok(word), "{}", read(&srv.log));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            client.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "docker attach stays while the container runs"
        );
        drop(client);
        let running = srv.ok(&s, &["inspect", "-f", "{{.State.Running}}", "x"]);
        assert_eq!(running.trim(), "true", "a killed client kills nothing");
    }
    wait_for(|| threads() <= before, "the attach threads to end");
    assert_eq!(srv.ok(&s, &["logs", "x"]), "alpha\nbeta\n");
    srv.ok(&s, &["stop", "-t", "2", "x"]);
    let state = srv.ok(&s, &["inspect", "-f", "{{.State.Status}}", "x"]);
    assert_eq!(state.trim(), "exited");
    srv.ok(&s, &["rm", "x"]);
    // One engine, two doors: `nook run -d -i` (here on the FUSE rung, whose monitor serves
    // the root from inside the container's user namespace) takes input from `docker attach`.
    let made = ["run", "-d", "-i", "--rootfs-driver", "fuse", "--name", "f"];
    let made: Vec<&str> = made
        .iter()
        .copied()
        .chain([s.image.as_str(), "sh", "-c", &script])
        .collect();
    s.nook(&made).ok();
    let (client, lines) = spawn_attach(&srv, &s, "f", b"fuse\n");
    let seen = lines.recv_timeout(Duration::from_secs(30));
    assert_eq!(seen.as_deref(), Ok("fuse"), "{}", read(&srv.log));
    drop(client);
    srv.ok(&s, &["rm", "-f", "f"]);
}

/// `docker run -i` whose client is killed: StdinOnce closes the container's input, so cat
/// ends and the container exits 0, as docker's does.
fn run_i_client_killed_closes_stdin_once(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("cat; : {}", s.tag);
    let mut c = srv.docker_command(
        &s,
        &["run", "-i", "--name", "once", &s.image, "sh", "-c", &script],
    );
    let mut child = ChildGuard(Some(c.stdin(Stdio::piped()).spawn().unwrap()));
    let ch = child.0.as_mut().unwrap();
    let mut input = ch.stdin.take().unwrap();
    input.write_all(b"one\n").unwrap();
    let lines = line_reader(ch.stdout.take().unwrap());
    let seen = lines.recv_timeout(Duration::from_secs(30));
    assert_eq!(seen.as_deref(), Ok("one"), "{}", read(&srv.log));
    drop(child);
    drop(input);
    let code = srv.ok(&s, &["wait", "once"]);
    assert_eq!(code.trim(), "0");
    assert_eq!(srv.ok(&s, &["logs", "once"]), "one\n");
    srv.ok(&s, &["rm", "once"]);
}

/// `docker attach NAME` with `input` written to it and its input then closed (`echo a |
/// docker attach`); the lines it prints.
fn spawn_attach(
    srv: &Server,
    s: &Sandbox,
    name: &str,
    input: &[u8],
) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut c = srv.docker_command(s, &["attach", name]);
    let mut child = c.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let lines = line_reader(child.stdout.take().unwrap());
    (ChildGuard(Some(child)), lines)
}

fn line_reader(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
