//! `nook serve`'s image transfers and container objects, driven by the real docker CLI (28.x)
//! as the unprivileged test users: push (with and without registry credentials), login, save
//! and load, search; export, top, pause, rename, labels, a per-container stop signal, and the
//! events they leave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::path::Path;

use support::env::{Mode, Out};
use support::push::{HTPASSWD_PASSWORD, HTPASSWD_USER, htpasswd_registry, manifest};
use support::sandbox::Sandbox;
use support::serve::{DOCKER, Server, json, read};

in_both_modes!(
    labels_top_rename_export_and_stop_signal,
    save_and_load_keep_ids,
);

/// The docker CLI at `srv` with its own client configuration directory (`config`), and
/// `input` on standard input.
fn docker_with(srv: &Server, s: &Sandbox, config: &Path, args: &[&str], input: &str) -> Out {
    use std::io::Write;
    let mut c = s.user.command(Path::new(DOCKER));
    c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Out::from(child.wait_with_output().unwrap())
}

/// A shell pipeline as the user, with the docker CLI pointed at `srv`.
fn shell(srv: &Server, s: &Sandbox, script: &str) -> Out {
    let mut c = s.user.command(Path::new("/bin/sh"));
    c.env("DOCKER_HOST", format!("unix://{}", srv.sock.display()))
        .args(["-c", script]);
    Out::from(c.output().unwrap())
}

/// The actions of the journal's events of `kind` so far.
fn actions(srv: &Server, s: &Sandbox, kind: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    srv.ok(
        s,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &now.to_string(),
            "--filter",
            &format!("type={kind}"),
            "--format",
            "{{.Action}}",
        ],
    )
}

fn labels_top_rename_export_and_stop_signal(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    // USR1 ends the script with 7; TERM (the default stop signal) would end it with 143.
    let script = format!("trap 'exit 7' USR1; sleep 30 & wait; : {}", s.tag);
    srv.ok(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "lab",
            "--label",
            "app=web",
            "--label",
            "tier=",
            "--stop-signal",
            "USR1",
            &s.image,
            "sh",
            "-c",
            &script,
        ],
    );
    let ps = srv.ok(
        &s,
        &[
            "ps",
            "--filter",
            "label=app=web",
            "--format",
            "{{.Names}} {{.Labels}}",
        ],
    );
    assert!(ps.starts_with("lab ") && ps.contains("app=web"), "{ps}");
    let none = srv.ok(&s, &["ps", "-q", "--filter", "label=app=db"]);
    assert_eq!(none.trim(), "", "label=app=db matches nothing");
    let by_key = srv.ok(&s, &["ps", "-q", "--filter", "label=tier"]);
    assert_eq!(by_key.lines().count(), 1, "{by_key}");
    let nook_ps = s.nook(&["ps", "--filter", "label=app=web"]);
    assert!(nook_ps.ok().stdout.contains("lab"), "{nook_ps:?}");
    let v = json(&srv.ok(&s, &["inspect", "lab"]));
    assert_eq!(
        v[0]["Config"]["Labels"],
        json(r#"{"app":"web","tier":""}"#),
        "{v}"
    );
    assert_eq!(v[0]["Config"]["StopSignal"], "USR1", "{v}");
    // top
    let top = srv.ok(&s, &["top", "lab"]);
    assert!(top.starts_with("UID") && top.contains("sleep 30"), "{top}");
    let bad = srv.docker(&s, &["top", "lab", "aux"]);
    assert!(
        bad.code != 0 && bad.stderr.contains("ps options"),
        "{bad:?}"
    );
    // rename
    srv.ok(
        &s,
        &["run", "-d", "--name", "other", &s.image, "sleep", "30"],
    );
    srv.ok(&s, &["rename", "lab", "renamed"]);
    let names = srv.ok(&s, &["ps", "--format", "{{.Names}}"]);
    assert!(
        names.contains("renamed") && !names.contains("lab\n"),
        "{names}"
    );
    let taken = srv.docker(&s, &["rename", "renamed", "other"]);
    assert!(
        taken.code != 0 && taken.stderr.contains("other"),
        "{taken:?}"
    );
    // export
    let listing = shell(&srv, &s, "docker export renamed | tar t");
    assert_eq!(listing.code, 0, "{listing:?}");
    assert!(listing.stdout.contains("bin/"), "{}", listing.stdout);
    let missing = srv.docker(&s, &["export", "nosuch"]);
    assert!(
        missing.code != 0 && missing.stderr.contains("nosuch"),
        "{missing:?}"
    );
    // pause of a container without a cgroup of its own (no limit): a clear refusal
    let paused = srv.docker(&s, &["pause", "renamed"]);
    assert!(
        paused.code != 0 && paused.stderr.contains("cgroup"),
        "{paused:?}"
    );
    // docker diff answers (tests/diff.rs checks what it lists)
    let diff = srv.docker(&s, &["diff", "renamed"]);
    assert_eq!(diff.code, 0, "{diff:?}");
    // the container's own stop signal
    srv.ok(&s, &["stop", "-t", "20", "renamed"]);
    let v = json(&srv.ok(&s, &["inspect", "renamed"]));
    assert_eq!(v[0]["State"]["ExitCode"], 7, "stopped by USR1: {v}");
    srv.ok(&s, &["kill", "other"]);
    let acts = actions(&srv, &s, "container");
    for a in ["rename", "stop", "kill"] {
        assert!(acts.lines().any(|l| l == a), "no {a} event: {acts}");
    }
    srv.ok(&s, &["rm", "-f", "renamed", "other"]);
}

/// pause and unpause of a container with a cgroup of its own (a resource limit), where this
/// host delegates a cgroup v2 subtree; elsewhere the run is refused, saying why.
#[test]
fn pause_and_unpause_with_a_cgroup() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = Server::start(&s);
    let script = format!("sleep 30; : {}", s.tag);
    let run = [
        "run", "-d", "--name", "frozen", "--memory", "64m", &s.image, "sh", "-c", &script,
    ];
    if nook::container::cgroup::delegated_dir().is_err() {
        let refused = srv.docker(&s, &run);
        assert!(
            refused.code != 0 && refused.stderr.contains("cgroup"),
            "{refused:?}"
        );
        let _ = srv.docker(&s, &["rm", "-f", "frozen"]);
        return;
    }
    srv.ok(&s, &run);
    srv.ok(&s, &["pause", "frozen"]);
    srv.ok(&s, &["unpause", "frozen"]);
    let acts = actions(&srv, &s, "container");
    assert!(
        acts.lines().any(|l| l == "pause") && acts.lines().any(|l| l == "unpause"),
        "{acts}"
    );
    srv.ok(&s, &["rm", "-f", "frozen"]);
}

fn save_and_load_keep_ids(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let id = srv.ok(&s, &["images", "--no-trunc", "-q", &s.image]);
    let id = id.trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    let file = s.user.home().join("saved.tar");
    let file = file.to_str().unwrap();
    srv.ok(&s, &["save", "-o", file, &s.image]);
    let listing = shell(&srv, &s, &format!("tar tf {file}"));
    assert!(listing.stdout.contains("manifest.json"), "{listing:?}");
    srv.ok(&s, &["rmi", &s.image]);
    let gone = srv.docker(&s, &["image", "inspect", &s.image]);
    assert_ne!(gone.code, 0, "{gone:?}");
    let loaded = srv.ok(&s, &["load", "-i", file]);
    assert!(loaded.contains("Loaded image: "), "{loaded}");
    let again = srv.ok(&s, &["images", "--no-trunc", "-q", &s.image]);
    assert_eq!(again.trim(), id, "the id survives the round trip");
    // two names, and a stream to stdout
    srv.ok(&s, &["tag", &s.image, "second:v2"]);
    let both = shell(
        &srv,
        &s,
        &format!("docker save {} second:v2 | tar xO manifest.json", s.image),
    );
    assert!(both.stdout.contains("second:v2"), "{both:?}");
    let missing = srv.docker(&s, &["save", "-o", "x.tar", "nosuch:image"]);
    assert!(
        missing.code != 0 && missing.stderr.contains("nosuch"),
        "{missing:?}"
    );
    let junk = shell(&srv, &s, "echo not-a-tar | docker load");
    assert_ne!(junk.code, 0, "{junk:?}");
    let acts = actions(&srv, &s, "image");
    for a in ["save", "load"] {
        assert!(acts.lines().any(|l| l == a), "no {a} event: {acts}");
    }
}

#[test]
fn push_to_a_registry_and_search_is_refused() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = Server::start(&s);
    let dest = format!("{}/pushed/bb:v1", s.reg.host);
    srv.ok(&s, &["tag", &s.image, &dest]);
    let out = srv.ok(&s, &["push", &dest]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    let (_, digest) = manifest(&s.reg.url, "pushed/bb", "v1");
    assert!(out.contains(&digest), "{out} vs {digest}");
    srv.ok(
        &s,
        &["tag", &s.image, &format!("{}/pushed/bb:v2", s.reg.host)],
    );
    let all = srv.ok(
        &s,
        &["push", "--all-tags", &format!("{}/pushed/bb", s.reg.host)],
    );
    assert!(
        all.contains("v1: digest") && all.contains("v2: digest"),
        "{all}"
    );
    manifest(&s.reg.url, "pushed/bb", "v2");
    let missing = srv.docker(&s, &["push", &format!("{}/nothing:here", s.reg.host)]);
    assert!(
        missing.code != 0 && missing.stderr.contains("does not exist"),
        "{missing:?}"
    );
    let acts = actions(&srv, &s, "image");
    assert!(acts.lines().any(|l| l == "push"), "{acts}");
    let search = srv.docker(&s, &["search", "busybox"]);
    assert_ne!(search.code, 0);
    assert!(
        search.stderr.contains("does not search registries"),
        "{search:?}"
    );
}

#[test]
fn login_then_push_and_pull_with_credentials() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(reg) = htpasswd_registry(dir.path()) else {
        return;
    };
    let srv = Server::start(&s);
    // The docker CLI keeps its credentials apart from the files nook reads: what reaches the
    // registry comes through X-Registry-Auth.
    let cli = s.user.home().join("docker-cli");
    let stranger = s.user.home().join("docker-stranger");
    for d in [&cli, &stranger] {
        std::fs::create_dir_all(d).unwrap();
        s.user.give(d);
    }
    let login = ["login", "-u", HTPASSWD_USER, "--password-stdin", &reg.host];
    let wrong = docker_with(&srv, &s, &cli, &login, "wrong\n");
    assert!(
        wrong.code != 0 && wrong.stderr.contains("incorrect username or password"),
        "{wrong:?}"
    );
    let ok = docker_with(&srv, &s, &cli, &login, &format!("{HTPASSWD_PASSWORD}\n"));
    assert_eq!(ok.code, 0, "{ok:?}\n{}", read(&srv.log));
    assert!(ok.stdout.contains("Login Succeeded"), "{ok:?}");
    let dest = format!("{}/private/bb:v1", reg.host);
    srv.ok(&s, &["tag", &s.image, &dest]);
    let denied = docker_with(&srv, &s, &stranger, &["push", &dest], "");
    assert!(
        denied.code != 0 && denied.stderr.contains("denied"),
        "pushed without credentials: {denied:?}"
    );
    let pushed = docker_with(&srv, &s, &cli, &["push", &dest], "");
    assert_eq!(pushed.code, 0, "{pushed:?}\n{}", read(&srv.log));
    assert!(pushed.stdout.contains("v1: digest: sha256:"), "{pushed:?}");
    srv.ok(&s, &["rmi", &dest]);
    let pulled = docker_with(&srv, &s, &cli, &["pull", &dest], "");
    assert_eq!(pulled.code, 0, "{pulled:?}\n{}", read(&srv.log));
    assert!(
        !read(&s.user.home().join(".docker/config.json")).contains(HTPASSWD_USER),
        "the server saved no credentials"
    );
}
