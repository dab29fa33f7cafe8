//! Containers as objects, as an ordinary user: detached runs and their monitor, ps, logs,
//! stop, kill, rm, wait, inspect, top, rename, prune, names, and many at once.
//!
//! Every test runs twice: as `plain::NAME` and as `init::NAME`, where each `run` and
//! `create` adds `--init` (pid 1 is then nook's reaper, which exec, cp and top must get past).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::time::{Duration, Instant};

use support::env::{Mode, Out, assert_no_trace_of};
use support::sandbox::Sandbox;

/// Each named test, once without `--init` (`plain::`) and once with it (`init::`).
macro_rules! with_and_without_init {
    ($($name:ident),* $(,)?) => {
        mod plain {
            $(#[test] fn $name() { super::$name(false) })*
        }
        mod init {
            $(#[test] fn $name() { super::$name(true) })*
        }
    };
}

with_and_without_init!(
    detached_run_logs_stop_wait_rm,
    kill_rm_force_and_names,
    a_dead_monitor_shows_exited,
    twenty_at_once_and_two_removals_race,
    works_without_xdg_runtime_dir,
    exec_joins_the_container,
    volumes_named_anonymous_and_in_use,
    cp_both_ways_and_no_escape,
    create_then_start_detached_and_attached,
    removed_containers_leave_no_trace,
    ps_shows_ports_only_while_running,
    running_before_the_command_starts,
);

/// A sandbox whose `run` and `create` commands get `--init` in the `init::` variants.
struct Case {
    s: Sandbox,
    init: bool,
}

impl Deref for Case {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.s
    }
}

impl Case {
    fn new(init: bool) -> Option<Case> {
        Self::in_mode(init, Mode::Range)
    }

    fn in_mode(init: bool, mode: Mode) -> Option<Case> {
        Sandbox::new(mode).map(|s| Case { s, init })
    }

    /// `args` with `--init` after `run` or `create` in the `init::` variants.
    fn args<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if self.init && matches!(args.first(), Some(&"run" | &"create")) {
            all.insert(1, "--init");
        }
        all
    }

    fn nook(&self, args: &[&str]) -> Out {
        self.s.nook(&self.args(args))
    }

    /// `nook run --rm IMAGE ARGS...`
    fn run(&self, args: &[&str]) -> Out {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        self.nook(&all)
    }

    /// `nook run --rm [FLAGS] IMAGE sh -c SCRIPT`
    fn sh(&self, flags: &[&str], script: &str) -> Out {
        let mut all: Vec<&str> = flags.to_vec();
        all.extend([self.image.as_str(), "sh", "-c", script]);
        self.run(&all)
    }
}

/// `nook run -d` with the test's tag in the command (so that leftovers are found).
fn detach(s: &Case, name: &str, script: &str) -> String {
    let script = format!("{script}; : {}", s.tag);
    let out = s.nook(&["run", "-d", "--name", name, &s.image, "sh", "-c", &script]);
    out.ok();
    let id = out.stdout.trim().to_owned();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "run -d prints the id: {id:?}"
    );
    id
}

fn inspect(s: &Case, name: &str) -> serde_json::Value {
    let out = s.nook(&["inspect", name]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v[0].clone()
}

fn detached_run_logs_stop_wait_rm(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let id = detach(
        &s,
        "ticker",
        "echo started; echo to-stderr >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    );
    let ps = s.nook(&["ps"]);
    ps.ok();
    let line = ps.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        line.starts_with(&id[..12]) && line.contains("Up ") && line.ends_with("ticker"),
        "{}",
        ps.stdout
    );
    assert!(
        ps.stdout.starts_with("CONTAINER ID   IMAGE"),
        "{}",
        ps.stdout
    );
    // logs -f follows output written after it started.
    let mut follow = s.user.nook(&["logs", "-f", "--tail", "1", "ticker"]);
    follow.env("NOOK_TEST_TAG", &s.tag);
    let mut child = follow.spawn().unwrap();
    // The last line may still be `started` when the ticker has not ticked yet (a loaded
    // machine): the ticks are what is followed.
    let mut ticks = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .filter_map(|l| l.strip_prefix("tick ").map(|n| n.parse::<u32>().unwrap()));
    let first: u32 = ticks.next().unwrap();
    let later: u32 = ticks.nth(3).unwrap();
    assert!(
        later > first,
        "follow shows new lines: {first} then {later}"
    );
    // The whole log, streams kept apart, with timestamps.
    let all = s.nook(&["logs", "-t", "ticker"]);
    all.ok();
    assert!(
        all.stdout.lines().next().unwrap().ends_with("Z started"),
        "{}",
        all.stdout
    );
    assert!(all.stderr.contains("to-stderr"), "{}", all.stderr);
    assert_eq!(
        s.nook(&["logs", "--tail", "2", "ticker"])
            .stdout
            .lines()
            .count(),
        2
    );
    assert!(
        s.nook(&["logs", "--since", "1h", "ticker"])
            .stdout
            .starts_with("started\n")
    );
    assert_eq!(
        s.nook(&["logs", "--since", "2099-01-01T00:00:00Z", "ticker"])
            .stdout,
        ""
    );
    // sh as pid 1 ignores SIGTERM: stop ends it with SIGKILL after the timeout. Under
    // --init the reaper passes SIGTERM on to sh, which is no pid 1 there and ends of it.
    let t = Instant::now();
    s.nook(&["stop", "-t", "1", "ticker"]).ok();
    let took = t.elapsed();
    assert!(
        init || took >= Duration::from_millis(900),
        "stop waited for the timeout: {took:?}"
    );
    // logs -f ends with the container.
    assert!(child.wait().unwrap().success());
    let v = inspect(&s, "ticker");
    assert_eq!(v["State"]["Status"], "exited");
    let code = if init { 143 } else { 137 };
    assert_eq!(v["State"]["ExitCode"], code);
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "/ticker");
    assert!(v["LogPath"].as_str().unwrap().ends_with("container.log"));
    assert_eq!(s.nook(&["wait", "ticker"]).stdout, format!("{code}\n"));
    let ps = s.nook(&["ps", "-a", "--filter", "status=exited"]);
    assert!(
        ps.stdout.contains(&format!("Exited ({code})")),
        "{}",
        ps.stdout
    );
    assert_eq!(s.nook(&["ps", "-q"]).stdout, "", "nothing runs");
    s.nook(&["rm", "ticker"]).ok();
    assert_eq!(s.nook(&["ps", "-aq"]).stdout, "");
    assert_no_trace_of(&id[..12], &s.user);
    s.nook(&["logs", "ticker"])
        .fails_with(125, "no such container: ticker");
}

fn kill_rm_force_and_names(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    detach(&s, "sleeper", "sleep 300");
    s.nook(&["run", "-d", "--name", "sleeper", &s.image, "true"])
        .fails_with(125, "already in use");
    s.nook(&["rm", "sleeper"])
        .fails_with(1, "is running: stop it first, or remove it with -f");
    s.nook(&["kill", "-s", "TERM", "sleeper"]).ok();
    if init {
        // The reaper passes TERM on to the command, which has no handler for it.
        assert_eq!(s.nook(&["wait", "sleeper"]).stdout, "143\n");
    } else {
        std::thread::sleep(Duration::from_millis(300));
        // pid 1 has no handler for TERM: still up.
        assert!(s.nook(&["ps", "-q"]).stdout.len() == 13);
        s.nook(&["kill", "sleeper"]).ok();
        assert_eq!(s.nook(&["wait", "sleeper"]).stdout, "137\n");
    }
    s.nook(&["kill", "sleeper"])
        .fails_with(1, "container sleeper is not running");
    s.nook(&["rename", "sleeper", "napper"]).ok();
    assert!(s.nook(&["ps", "-a"]).stdout.contains("napper"));
    let id = detach(&s, "other", "sleep 300");
    // An id prefix works; an ambiguous one does not.
    // A header, sh and its sleep, and the reaper as pid 1 under --init (on a loaded machine
    // sh may not have forked its sleep yet: look again for a while).
    let rows = if init { 4 } else { 3 };
    let mut top = s.nook(&["top", &id[..8]]);
    for _ in 0..50 {
        if top.stdout.lines().count() == rows {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        top = s.nook(&["top", &id[..8]]);
    }
    top.ok();
    assert!(top.stdout.contains("sleep 300"), "{}", top.stdout);
    assert_eq!(top.stdout.lines().count(), rows, "{}", top.stdout);
    s.nook(&["pause", "other"]).fails_with(1, "cgroup");
    s.nook(&["inspect", "nosuch"])
        .fails_with(1, "no such image");
    s.nook(&["rm", "-f", "other"]).ok();
    s.nook(&["container", "prune"]).ok();
    assert_eq!(s.nook(&["ps", "-aq"]).stdout, "");
}

fn a_dead_monitor_shows_exited(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    detach(&s, "orphan", "sleep 300");
    let monitor = inspect(&s, "orphan")["State"]["MonitorPid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = s.nook(&["ps", "-a"]);
        if ps.stdout.contains("Exited (unknown)") {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {}", ps.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = inspect(&s, "orphan");
    assert!(
        v["State"]["Note"].as_str().unwrap().contains("monitor"),
        "{v}"
    );
    s.nook(&["rm", "orphan"]).ok();
}

fn twenty_at_once_and_two_removals_race(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let names: Vec<String> = (0..20).map(|i| format!("par{i}")).collect();
    std::thread::scope(|scope| {
        for n in &names {
            let s = &s;
            scope.spawn(move || detach(s, n, "sleep 300"));
        }
    });
    let ps = s.nook(&["ps", "--format", "json"]);
    ps.ok();
    let mut running: Vec<String> = ps
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["State"] == "running")
        .map(|v| v["Names"][0].as_str().unwrap().to_owned())
        .collect();
    running.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(running, want);
    // Stopped, then removed twice at once: one removal wins, the other says why it lost.
    let mut kill = vec!["kill"];
    kill.extend(names.iter().map(String::as_str));
    s.nook(&kill).ok();
    for n in &names {
        assert_eq!(s.nook(&["wait", n]).stdout, "137\n");
    }
    std::thread::scope(|scope| {
        for n in &names {
            let s = &s;
            scope.spawn(move || {
                let (a, b) = std::thread::scope(|inner| {
                    let a = inner.spawn(|| s.nook(&["rm", n]));
                    let b = inner.spawn(|| s.nook(&["rm", n]));
                    (a.join().unwrap(), b.join().unwrap())
                });
                let (won, lost) = if a.code == 0 { (a, b) } else { (b, a) };
                assert_eq!(won.code, 0, "{n}: neither removal won: {won:?} {lost:?}");
                assert_ne!(lost.code, 0, "{n}: both removals won");
                assert!(
                    lost.stderr.contains("being removed")
                        || lost.stderr.contains("no such container"),
                    "{n}: {lost:?}"
                );
            });
        }
    });
    assert_eq!(s.nook(&["ps", "-aq"]).stdout, "");
}

fn works_without_xdg_runtime_dir(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let run = |args: &[&str]| {
        let mut c = s.user.nook(&s.args(args));
        c.env_remove("XDG_RUNTIME_DIR").env("NOOK_TEST_TAG", &s.tag);
        support::env::Out::from(c.output().unwrap())
    };
    let script = format!("echo no-xdg; sleep 300; : {}", s.tag);
    run(&[
        "run", "-d", "--name", "batch", &s.image, "sh", "-c", &script,
    ])
    .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !run(&["logs", "batch"]).stdout.contains("no-xdg") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(run(&["ps"]).stdout.contains("batch"));
    run(&["rm", "-f", "batch"]).ok();
    let out = run(&["run", "--rm", &s.image, "echo", "fg"]);
    out.ok();
    assert_eq!(out.stdout, "fg\n");
}

fn exec_joins_the_container(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    detach(&s, "box", "echo inside > /tmp/marker; sleep 300");
    std::thread::sleep(Duration::from_millis(200));
    let run_caps = s.sh(&[], "grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status");
    run_caps.ok();
    // The command is pid 1, or pid 2 under the reaper.
    let command_pid = if init { 2 } else { 1 };
    let script = format!(
        "cat /tmp/marker; hostname; cat /proc/{command_pid}/cmdline | tr '\\0' ' '; echo; ls /proc/self/fd | wc -l; grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status"
    );
    let out = s.nook(&["exec", "box", "sh", "-c", &script]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "inside", "same filesystem: {}", out.stdout);
    let hostname = inspect(&s, "box")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lines[1], hostname, "same hostname");
    assert!(
        lines[2].starts_with("sh -c echo inside"),
        "same pid namespace: {}",
        lines[2]
    );
    // 0, 1, 2 and the directory ls reads: nothing of nook's.
    assert_eq!(lines[3], "4", "leaked descriptors: {}", out.stdout);
    assert_eq!(
        lines[4..].join("\n") + "\n",
        run_caps.stdout,
        "the same capabilities as run"
    );
    let out = s.nook(&[
        "exec",
        "-u",
        "1234",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $FOO",
    ]);
    out.ok();
    assert_eq!(out.stdout, "1234\n/tmp\nbar\n");
    assert_eq!(s.nook(&["exec", "box", "sh", "-c", "exit 3"]).code, 3);
    s.nook(&["exec", "box", "nothere"])
        .fails_with(127, "executable file not found");
    let out = s.user.run_input(
        &["exec", "-i", "box", "cat"],
        &[("NOOK_TEST_TAG", &s.tag)],
        b"piped\n",
    );
    assert_eq!(out.stdout, "piped\n");
    s.nook(&[
        "exec",
        "-d",
        "box",
        "sh",
        "-c",
        "sleep 0.2; echo later > /tmp/detached",
    ])
    .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.nook(&["exec", "box", "cat", "/tmp/detached"]).stdout != "later\n" {
        assert!(Instant::now() < deadline, "exec -d did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.nook(&["stop", "-t", "0", "box"]).ok();
    s.nook(&["exec", "box", "true"])
        .fails_with(125, "is not running");
    s.nook(&["rm", "box"]).ok();
}

fn volumes_named_anonymous_and_in_use(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    use support::image::{Comp, LayerTar, busybox_base};
    let content = LayerTar::new()
        .dir("srv", 0o755)
        .file_owned("srv/index.html", b"from-image", 0o640, 33, 33)
        .symlink("escape", "/etc")
        .finish();
    let img = s.image_with(
        "vols",
        &[(busybox_base().finish(), Comp::Gzip), (content, Comp::Gzip)],
        serde_json::json!({"Cmd": ["sh"], "Volumes": {"/var/lib/app": {}, "/escape": {}}}),
    );
    // A named volume is made on first use and filled from the image's content there.
    let out = s.nook(&["run", "--name", "writer", "-v", "site:/srv", &img, "sh", "-c",
        "cat /srv/index.html; stat -c %u:%g /srv/index.html; echo added > /srv/new; echo anon > /var/lib/app/f"]);
    out.ok();
    assert_eq!(out.stdout, "from-image33:33\n");
    let out = s.run(&[
        "-v",
        "site:/data:ro",
        &img,
        "sh",
        "-c",
        "cat /data/new; touch /data/x 2>/dev/null || echo read-only",
    ]);
    out.ok();
    assert_eq!(
        out.stdout, "added\nread-only\n",
        "the volume persists across containers"
    );
    let ls = s.nook(&["volume", "ls", "-q"]);
    ls.ok();
    let names: Vec<&str> = ls.stdout.lines().collect();
    assert!(names.contains(&"site"), "{names:?}");
    let anonymous: Vec<&str> = names.iter().copied().filter(|n| n.len() == 64).collect();
    assert_eq!(anonymous.len(), 2, "one per image VOLUME: {names:?}");
    // The image's /escape is a link to /etc: nothing of the host's /etc was copied in.
    let v = inspect(&s, "writer");
    let escape = v["Mounts"].as_array().unwrap().len();
    assert!(escape >= 1);
    for a in &anonymous {
        let vi = s.nook(&["volume", "inspect", a]);
        vi.ok();
        let info: serde_json::Value = serde_json::from_str(&vi.stdout).unwrap();
        let dir = std::path::PathBuf::from(info[0]["Mountpoint"].as_str().unwrap());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.is_empty() || names == ["f"],
            "host files copied into a volume: {names:?}"
        );
    }
    s.nook(&["volume", "rm", "site"])
        .fails_with(1, "in use by container writer");
    s.nook(&["rm", "-v", "writer"]).ok();
    let left = s.nook(&["volume", "ls", "-q"]).stdout;
    assert_eq!(left, "site\n", "rm -v removes the anonymous volumes only");
    s.nook(&["volume", "rm", "site"]).ok();
    s.nook(&["volume", "create", "made"]).ok();
    s.nook(&["volume", "create", "made"])
        .fails_with(125, "already exists");
    s.nook(&["volume", "prune", "-a", "-f"]).ok();
    assert_eq!(s.nook(&["volume", "ls", "-q"]).stdout, "");
}

fn cp_both_ways_and_no_escape(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    detach(
        &s,
        "files",
        "mkdir -p /data/sub && echo inside > /data/sub/f && chown 33:33 /data/sub/f && ln -s /etc /data/etc-link && ln -s ../../../../../../etc/hostname /data/up && sleep 300",
    );
    std::thread::sleep(Duration::from_millis(300));
    let host = s.user.write_home("in/hello.txt", b"from-host\n");
    let dest = s.user.home().join("out");
    s.nook(&["cp", "files:/data", dest.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(dest.join("sub/f")).unwrap(), b"inside\n");
    // Links come over as links, not as what they point to.
    let link = std::fs::symlink_metadata(dest.join("etc-link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(dest.join("etc-link")).unwrap(),
        std::path::Path::new("/etc")
    );
    // A link's target resolves inside the container's root, never on the host.
    let via = s.user.home().join("via");
    s.nook(&["cp", "files:/data/etc-link/hostname", via.to_str().unwrap()])
        .ok();
    let container_hostname = s.nook(&["exec", "files", "cat", "/etc/hostname"]).stdout;
    assert_eq!(std::fs::read_to_string(&via).unwrap(), container_hostname);
    s.nook(&["cp", host.to_str().unwrap(), "files:/data/sub/"])
        .ok();
    let out = s.nook(&["exec", "files", "cat", "/data/sub/hello.txt"]);
    assert_eq!(out.stdout, "from-host\n");
    s.nook(&["cp", host.to_str().unwrap(), "files:/data/renamed.txt"])
        .ok();
    assert_eq!(
        s.nook(&["exec", "files", "cat", "/data/renamed.txt"])
            .stdout,
        "from-host\n"
    );
    // Writing through a link that points out of the root lands inside the root.
    s.nook(&["cp", host.to_str().unwrap(), "files:/data/etc-link/planted"])
        .ok();
    assert!(
        !std::path::Path::new("/etc/planted").exists(),
        "escaped to the host's /etc"
    );
    assert_eq!(
        s.nook(&["exec", "files", "cat", "/etc/planted"]).stdout,
        "from-host\n"
    );
    s.nook(&["cp", "files:/nonexistent", dest.to_str().unwrap()])
        .fails_with(125, "cannot read /nonexistent");
    // A stopped container: its root is assembled again for the copy.
    s.nook(&["stop", "-t", "0", "files"]).ok();
    let stopped = s.user.home().join("stopped-f");
    s.nook(&["cp", "files:/data/sub/f", stopped.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&stopped).unwrap(), b"inside\n");
    s.nook(&["cp", host.to_str().unwrap(), "files:/data/after-stop.txt"])
        .ok();
    let back = s.user.home().join("back.txt");
    s.nook(&["cp", "files:/data/after-stop.txt", back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), b"from-host\n");
    s.nook(&["rm", "-f", "files"]).ok();
}

fn create_then_start_detached_and_attached(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let script = format!(
        "echo run-$(cat /count 2>/dev/null || echo 0); echo 1 > /count; : {}",
        s.tag
    );
    let out = s.nook(&["create", "--name", "later", &s.image, "sh", "-c", &script]);
    out.ok();
    assert_eq!(out.stdout.trim().len(), 64);
    assert!(s.nook(&["ps", "-a"]).stdout.contains("Created"));
    assert_eq!(s.nook(&["ps", "-q"]).stdout, "", "created is not running");
    let started = s.nook(&["start", "later"]);
    started.ok();
    assert_eq!(started.stdout, "later\n");
    assert_eq!(s.nook(&["wait", "later"]).stdout, "0\n");
    assert_eq!(s.nook(&["logs", "later"]).stdout, "run-0\n");
    // Started again, attached: the same writable layer, the output here.
    let again = s.nook(&["start", "-a", "later"]);
    again.ok();
    assert_eq!(again.stdout, "run-1\n");
    s.nook(&["rm", "later"]).ok();
}

fn removed_containers_leave_no_trace(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let id_of = |name: &str| inspect(&s, name)["Id"].as_str().unwrap().to_owned();
    // Run in the foreground without --rm, then removed.
    let script = format!("hostname; : {}", s.tag);
    s.nook(&["run", "--name", "fg", &s.image, "sh", "-c", &script])
        .ok();
    let fg = id_of("fg");
    s.nook(&["rm", "fg"]).ok();
    assert_no_trace_of(&fg[..12], &s.user);
    // Detached, stopped, removed.
    let bg = detach(&s, "bg", "sleep 300");
    s.nook(&["stop", "-t", "0", "bg"]).ok();
    s.nook(&["rm", "bg"]).ok();
    assert_no_trace_of(&bg[..12], &s.user);
    // Running, removed with -f.
    let forced = detach(&s, "forced", "sleep 300");
    s.nook(&["rm", "-f", "forced"]).ok();
    assert_no_trace_of(&forced[..12], &s.user);
    // Removed by prune.
    s.nook(&["run", "--name", "pruned", &s.image, "sh", "-c", &script])
        .ok();
    let pruned = id_of("pruned");
    s.nook(&["container", "prune"]).ok();
    assert_no_trace_of(&pruned[..12], &s.user);
    // A reset takes every container's files, stopped ones' too.
    let stopped = detach(&s, "stopped", "sleep 300");
    s.nook(&["stop", "-t", "0", "stopped"]).ok();
    s.nook(&["run", "--name", "exited", &s.image, "sh", "-c", &script])
        .ok();
    let exited = id_of("exited");
    // The runtime directory is the user's, shared by every store: another store's
    // container keeps its directory there.
    let other = s
        .user
        .runtime_dir()
        .join("containers")
        .join(format!("{:0>64}", support::sandbox::rand_suffix()));
    std::fs::create_dir_all(&other).unwrap();
    let reset = s.nook(&["system", "reset", "-f"]);
    let kept = other.is_dir();
    let _ = std::fs::remove_dir(&other);
    reset.ok();
    assert!(kept, "reset removed another store's container directory");
    assert_no_trace_of(&stopped[..12], &s.user);
    assert_no_trace_of(&exited[..12], &s.user);
}

fn ps_shows_ports_only_while_running(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let port = support::registry::free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let script = format!("sleep 300; : {}", s.tag);
    s.nook(&[
        "run", "-d", "--name", "web", "-p", &publish, &s.image, "sh", "-c", &script,
    ])
    .ok();
    let shown = format!("127.0.0.1:{port}->80/tcp");
    let ps = s.nook(&["ps"]);
    assert!(ps.stdout.contains(&shown), "{}", ps.stdout);
    s.nook(&["stop", "-t", "0", "web"]).ok();
    let ps = s.nook(&["ps", "-a"]);
    ps.ok();
    assert!(ps.stdout.contains("Exited"), "{}", ps.stdout);
    assert!(
        !ps.stdout.contains("->"),
        "an exited container publishes nothing: {}",
        ps.stdout
    );
    let json = s.nook(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["Ports"], "", "{v}");
    s.nook(&["rm", "web"]).ok();
}

/// The record says running, with the init's pid (and under `--init` the command's, which
/// `exec`, `cp` and `top` enter by), before anything of the command's runs (nook saves it
/// before it lets the command start): its first action, reading the record through a bind of
/// the store's containers directory, finds it so. Eight at once, so that a record saved only
/// after the command started would be caught by the load.
fn running_before_the_command_starts(init: bool) {
    let Some(s) = Case::new(init) else {
        return;
    };
    let records = s.user.store().join("containers");
    let bind = format!("{}:/c:ro", records.display());
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|i| {
                let (s, bind) = (&s, &bind);
                scope.spawn(move || {
                    let name = format!("early{i}");
                    let script = format!(
                        "grep -l '\"name\": \"{name}\"' /c/*/config.json | \
                         xargs grep -h -e '\"state\"' -e '\"pid\"' -e '\"entry\"'; : {}",
                        s.tag
                    );
                    s.run(&["--name", &name, "-v", bind, &s.image, "sh", "-c", &script])
                })
            })
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            out.ok();
            assert!(
                out.stdout.contains("\"state\": \"running\""),
                "{}",
                out.stdout
            );
            assert!(out.stdout.contains("\"pid\": "), "{}", out.stdout);
            assert!(!out.stdout.contains("\"pid\": null"), "{}", out.stdout);
            if init {
                assert!(out.stdout.contains("\"entry\": "), "{}", out.stdout);
                assert!(!out.stdout.contains("\"entry\": null"), "{}", out.stdout);
            }
        }
    });
}

/// The commands of issue 11 on a container run with `--init` (whose pid 1, nook's reaper,
/// is not dumpable and so closed to them): exec, cp and top go in through the command. With
/// a single mapping the exec's calls also go to the fakeroot, through the monitor's door.
fn exec_cp_top_enter_an_init_container(mode: Mode) {
    let Some(s) = Case::in_mode(true, mode) else {
        return;
    };
    detach(&s, "i1", "sleep 300");
    // The reaper starts the command after `run -d` returns: look until it shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = s.nook(&["exec", "i1", "ps"]);
        out.ok();
        if out.stdout.contains("sleep 300") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", out.stdout);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let copied = s.user.home().join("hostname");
    s.nook(&["cp", "i1:/etc/hostname", copied.to_str().unwrap()])
        .ok();
    let hostname = inspect(&s, "i1")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), hostname + "\n");
    let into = s.user.write_home("in.txt", b"from-host\n");
    s.nook(&["cp", into.to_str().unwrap(), "i1:/tmp/in.txt"])
        .ok();
    let out = s.nook(&["exec", "i1", "cat", "/tmp/in.txt"]);
    assert_eq!(out.stdout, "from-host\n");
    let top = s.nook(&["top", "i1"]);
    top.ok();
    assert!(top.stdout.contains("sleep 300"), "{}", top.stdout);
    // The reaper stays out of the container's reach all the same.
    let out = s.nook(&[
        "exec",
        "i1",
        "sh",
        "-c",
        "readlink /proc/1/exe || echo hidden",
    ]);
    assert_eq!(out.stdout, "hidden\n", "{out:?}");
    let out = s.nook(&[
        "exec",
        "i1",
        "sh",
        "-c",
        "touch /tmp/o && chown 5:6 /tmp/o && stat -c %u:%g /tmp/o",
    ]);
    assert_eq!(out.stdout, "5:6\n", "{out:?}");
    s.nook(&["rm", "-f", "i1"]).ok();
}

#[test]
fn exec_cp_top_enter_an_init_container_range() {
    exec_cp_top_enter_an_init_container(Mode::Range);
}

#[test]
fn exec_cp_top_enter_an_init_container_single() {
    exec_cp_top_enter_an_init_container(Mode::Single);
}
