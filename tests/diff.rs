//! `nook diff` and `GET /containers/{id}/changes`: a container's added (A), changed (C) and
//! deleted (D) paths against its image, in path order, on a stopped and a running container,
//! on every rootfs rung in both id modes; the same set podman lists for the same image and
//! commands, and the same lines through `docker diff` against `nook serve`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::build::Podman;
use support::env::Mode;
use support::image::LayerTar;
use support::sandbox::Sandbox;
use support::serve::{Server, json};

const MODES: [Mode; 2] = [Mode::Range, Mode::Single];
const RUNGS: [&str; 3] = ["overlay", "fuse", "copy"];

/// Adds, appends to, deletes, replaces a directory (`/d/e`: removed and made again, its old
/// names gone) and changes a directory's mode.
const SCRIPT: &str = "echo a > /new && echo b >> /etc/passwd && rm /bin/true \
    && mkdir -p /d/deep/er && echo z > /d/deep/er/z \
    && rm -rf /d/e && mkdir /d/e && echo n > /d/e/n && chmod 700 /d/h";

/// What `SCRIPT` changes, as docker prints it: every parent of a change is changed too, what
/// was under a deleted name is not listed.
const EXPECTED: [&str; 14] = [
    "C /bin",
    "D /bin/true",
    "C /d",
    "A /d/deep",
    "A /d/deep/er",
    "A /d/deep/er/z",
    "C /d/e",
    "D /d/e/f",
    "A /d/e/n",
    "D /d/e/sub",
    "C /d/h",
    "C /etc",
    "C /etc/passwd",
    "A /new",
];

fn expected() -> Vec<String> {
    EXPECTED.iter().map(|l| (*l).to_owned()).collect()
}

/// busybox with a tree the script changes and names it leaves alone.
fn diff_image(s: &Sandbox) -> String {
    let top = LayerTar::new()
        .dir("d", 0o755)
        .dir("d/e", 0o755)
        .file("d/e/f", b"hidden later\n", 0o644)
        .dir("d/e/sub", 0o755)
        .file("d/e/sub/s", b"deep\n", 0o644)
        .file("d/g", b"left alone\n", 0o644)
        .dir("d/h", 0o755)
        .finish();
    s.image_over_busybox("diffimg", top, json!({"Cmd": ["sh"]}))
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// `nook diff NAME`, which must succeed.
fn diff(s: &Sandbox, name: &str) -> Vec<String> {
    let out = s.nook(&["diff", name]);
    out.ok();
    lines(&out.stdout)
}

/// Whether `out` says the rung cannot be used here (after a printed skip).
fn unavailable(out: &support::env::Out, rung: &str) -> bool {
    if out.code != 0 && out.stderr.contains("not available") {
        support::skip(&format!("rootfs driver {rung}: {}", out.stderr));
        return true;
    }
    false
}

#[test]
fn diff_lists_a_stopped_containers_changes_on_every_rung() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = diff_image(&s);
        for rung in RUNGS {
            let name = format!("stopped-{rung}");
            let out = s.nook(&[
                "run",
                "--name",
                &name,
                "--rootfs-driver",
                rung,
                &image,
                "sh",
                "-c",
                SCRIPT,
            ]);
            if unavailable(&out, rung) {
                continue;
            }
            out.ok();
            assert_eq!(diff(&s, &name), expected(), "{mode:?} {rung}");
            // The Engine API's form: the same paths with docker's kind numbers.
            let out = s.nook(&["diff", "--format", "json", &name]);
            out.ok();
            let v = json(&out.stdout);
            let from_json: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let k = ["C", "A", "D"][c["Kind"].as_u64().unwrap() as usize];
                    format!("{k} {}", c["Path"].as_str().unwrap())
                })
                .collect();
            assert_eq!(from_json, expected(), "{mode:?} {rung}");
            s.nook(&["rm", &name]).ok();
        }
    }
}

#[test]
fn diff_lists_a_running_containers_changes_on_every_rung() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = diff_image(&s);
        for rung in RUNGS {
            let name = format!("running-{rung}");
            let script = format!("sleep 300; : {}", s.tag);
            let out = s.nook(&[
                "run",
                "-d",
                "--name",
                &name,
                "--rootfs-driver",
                rung,
                &image,
                "sh",
                "-c",
                &script,
            ]);
            if unavailable(&out, rung) {
                continue;
            }
            out.ok();
            assert_eq!(diff(&s, &name), Vec::<String>::new(), "{mode:?} {rung}");
            s.nook(&["exec", &name, "sh", "-c", SCRIPT]).ok();
            assert_eq!(diff(&s, &name), expected(), "{mode:?} {rung}");
            s.nook(&["rm", "-f", &name]).ok();
        }
    }
}

#[test]
fn diff_of_an_unchanged_or_missing_container() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    s.nook(&["create", "--name", "fresh", &s.image, "true"])
        .ok();
    assert_eq!(diff(&s, "fresh"), Vec::<String>::new());
    s.nook(&["run", "--name", "ran", &s.image, "true"]).ok();
    assert_eq!(diff(&s, "ran"), Vec::<String>::new());
    s.nook(&["diff", "nosuchcontainer"])
        .fails_with(125, "nosuchcontainer");
}

#[test]
fn diff_agrees_with_podman_diff() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let Some(p) = Podman::new(&s.user) else {
        return;
    };
    let image = diff_image(&s);
    s.nook(&["run", "--name", "oracle", &image, "sh", "-c", SCRIPT])
        .ok();
    let ours: BTreeSet<String> = diff(&s, "oracle").into_iter().collect();
    p.run(&["pull", "-q", "--tls-verify=false", &image]).ok();
    p.run(&[
        "run",
        "--network",
        "none",
        "--name",
        "oracle",
        &image,
        "sh",
        "-c",
        SCRIPT,
    ])
    .ok();
    let out = p.run(&["diff", "oracle"]);
    out.ok();
    let theirs: BTreeSet<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours, expected().into_iter().collect());
}

#[test]
fn docker_diff_through_serve_lists_the_same_changes() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = diff_image(&s);
        s.nook(&["run", "--name", "changed", &image, "sh", "-c", SCRIPT])
            .ok();
        s.nook(&["create", "--name", "fresh", &image, "true"]).ok();
        let srv = Server::start(&s);
        assert_eq!(
            lines(&srv.ok(&s, &["diff", "changed"])),
            expected(),
            "{mode:?}"
        );
        assert_eq!(srv.ok(&s, &["container", "diff", "fresh"]), "", "{mode:?}");
        let (code, body) = srv.curl(&s, "GET", "/containers/changed/changes", &[]);
        assert_eq!(code, 200, "{body}");
        let v = json(&body);
        assert_eq!(v[0], json!({"Path": "/bin", "Kind": 0}), "{v}");
        assert_eq!(v[1], json!({"Path": "/bin/true", "Kind": 2}), "{v}");
        assert_eq!(v[3], json!({"Path": "/d/deep", "Kind": 1}), "{v}");
        // No changes: docker's null.
        let (code, body) = srv.curl(&s, "GET", "/v1.50/containers/fresh/changes", &[]);
        assert_eq!((code, body.trim()), (200, "null"));
        let (code, body) = srv.curl(&s, "GET", "/containers/nosuch/changes", &[]);
        assert_eq!(code, 404, "{body}");
    }
}
