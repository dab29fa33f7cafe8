//! The layers `nook build` writes, read back from the store's blobs with the tar crate:
//! whiteouts and opaque directories, owners and setuid bits as the container saw them, hard
//! links, nothing of nook's own mounts, no layer for a metadata step; a failed RUN that
//! leaves nothing behind; reproducible ids under a fixed timestamp. In both id modes and on
//! both overlay rungs where the snapshot differs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use support::build::{
    Builder, Ctx, Driver, TarEntry, built_id, config_blob, entry, inspect, layers, run_out, sh_out,
};
use support::env::Mode;
use support::sandbox::{Sandbox, rand_suffix};

fn paths(layer: &[TarEntry]) -> BTreeSet<&str> {
    layer
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| !p.is_empty() && *p != ".")
        .collect()
}

/// Nook's owner records and the overlay's own attributes stay out of a layer.
fn assert_no_private_xattrs(layer: &[TarEntry], d: Driver) {
    for e in layer {
        assert!(
            e.private_xattrs().is_empty(),
            "{d:?}: {} carries {:?}",
            e.path,
            e.private_xattrs()
        );
    }
}

fn whiteouts_and_opaque_dirs(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "wh");
    ctx.dockerfile(
        "FROM {base}\n\
RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && echo f > /gone && echo k > /keep\n\
RUN rm /gone && rm -rf /d && mkdir /d && echo new > /d/new\n",
        &s.image,
    );
    for d in Driver::BOTH {
        let b = Builder::with_driver(&s, d);
        let tag = format!("wh:{d:?}").to_lowercase();
        b.build(&["--no-cache", "-t", &tag], &ctx).ok();
        let all = layers(&s, &tag);
        let top = all.last().unwrap();
        let names = paths(top);
        assert!(names.contains(".wh.gone"), "{d:?}: no whiteout: {names:?}");
        assert!(
            names.contains("d/.wh..wh..opq"),
            "{d:?}: no opaque marker: {names:?}"
        );
        assert_eq!(entry(top, "d/new").unwrap().data, b"new\n", "{d:?}");
        assert_no_private_xattrs(top, d);
        for absent in ["keep", "d/a", "d/sub", "d/sub/b", "gone"] {
            assert!(
                !names.contains(absent),
                "{d:?}: {absent} in the layer: {names:?}"
            );
        }
        let seen = sh_out(
            &s,
            &tag,
            "ls -A /d; test ! -e /gone && echo gone-absent; cat /keep",
        );
        assert_eq!(seen, "new\ngone-absent\nk\n", "{d:?}");
    }
}

#[test]
fn whiteouts_and_opaque_dirs_range() {
    whiteouts_and_opaque_dirs(Mode::Range);
}

#[test]
fn whiteouts_and_opaque_dirs_single() {
    whiteouts_and_opaque_dirs(Mode::Single);
}

/// Owners the RUN set, in the layer. With a single mapping only the FUSE rung can record a
/// chown to an unmapped id (the kernel overlay fails it, in `nook run` too), so that mode
/// checks that rung alone.
fn owners_setuid_and_hardlinks(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "own");
    ctx.dockerfile(
        "FROM {base}\n\
RUN echo x > /f && chown 1234:5678 /f && chmod 4755 /f && echo h > /h1 && ln /h1 /h2 && \
mkdir /od && chown 42:43 /od && chmod 2750 /od\n",
        &s.image,
    );
    let drivers: &[Driver] = match mode {
        Mode::Range => &Driver::BOTH,
        Mode::Single => &[Driver::Fuse],
    };
    for &d in drivers {
        let b = Builder::with_driver(&s, d);
        let tag = format!("own:{d:?}").to_lowercase();
        b.build(&["--no-cache", "-t", &tag], &ctx).ok();
        let all = layers(&s, &tag);
        let top = all.last().unwrap();
        let f = entry(top, "f").unwrap_or_else(|| panic!("{d:?}: no /f: {:?}", paths(top)));
        assert_eq!(
            (f.uid, f.gid, f.mode & 0o7777),
            (1234, 5678, 0o4755),
            "{d:?}: /f"
        );
        assert_no_private_xattrs(top, d);
        let od = entry(top, "od").unwrap();
        assert_eq!(
            (od.uid, od.gid, od.mode & 0o7777),
            (42, 43, 0o2750),
            "{d:?}: /od"
        );
        let h1 = entry(top, "h1").unwrap();
        let h2 = entry(top, "h2").unwrap();
        let linked = (h1.kind == tar::EntryType::Link && h1.link.as_deref() == Some("h2"))
            || (h2.kind == tar::EntryType::Link && h2.link.as_deref() == Some("h1"));
        assert!(linked, "{d:?}: hard link lost: {h1:?} {h2:?}");
        let seen = sh_out(
            &s,
            &tag,
            "stat -c '%u:%g %a' /f /od; test $(stat -c %i /h1) = $(stat -c %i /h2) && echo same",
        );
        assert_eq!(seen, "1234:5678 4755\n42:43 2750\nsame\n", "{d:?}");
    }
}

#[test]
fn owners_setuid_and_hardlinks_range() {
    owners_setuid_and_hardlinks(Mode::Range);
}

#[test]
fn owners_setuid_and_hardlinks_single() {
    owners_setuid_and_hardlinks(Mode::Single);
}

/// The base has no /etc/hosts, /etc/resolv.conf, /etc/hostname, /proc, /sys or /dev: the
/// files and mount points nook made for the RUN are not the step's change.
fn run_layer_leaves_out_nooks_mounts(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "mounts");
    ctx.dockerfile(
        "FROM {base}\nRUN cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null; echo m > /marker\n",
        &s.image,
    );
    for d in Driver::BOTH {
        let tag = format!("mounts:{d:?}").to_lowercase();
        Builder::with_driver(&s, d)
            .build(&["--no-cache", "-t", &tag], &ctx)
            .ok();
        let all = layers(&s, &tag);
        assert_eq!(
            paths(all.last().unwrap()),
            BTreeSet::from(["marker"]),
            "{d:?}: the RUN layer holds more than its change"
        );
    }
}

#[test]
fn run_layer_leaves_out_nooks_mounts_range() {
    run_layer_leaves_out_nooks_mounts(Mode::Range);
}

#[test]
fn run_layer_leaves_out_nooks_mounts_single() {
    run_layer_leaves_out_nooks_mounts(Mode::Single);
}

#[test]
fn metadata_steps_make_no_layer() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "meta");
    ctx.dockerfile(
        "FROM {base}\nENV X=1\nLABEL l=1\nRUN echo r > /r\nEXPOSE 80\nCMD [\"sh\"]\n",
        &s.image,
    );
    Builder::new(&s).build(&["-t", "meta:1"], &ctx).ok();
    let base_layers = inspect(&s, &s.image)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    let v = inspect(&s, "meta:1");
    assert_eq!(
        v["RootFS"]["Layers"].as_array().unwrap().len(),
        base_layers + 1
    );
    let hist = config_blob(&s, "meta:1")["history"].clone();
    let hist = hist.as_array().unwrap();
    let empty = |needle: &str| {
        let h = hist
            .iter()
            .find(|h| h["created_by"].as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no history entry for {needle}: {hist:?}"));
        h["empty_layer"].as_bool().unwrap_or(false)
    };
    for meta in ["X=1", "l=1", "80", "[\"sh\"]"] {
        assert!(empty(meta), "{meta}: a metadata step made a layer");
    }
    assert!(!empty("echo r"), "the RUN's history entry says empty_layer");
    let with_layer = hist
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(with_layer, base_layers + 1, "history and rootfs disagree");
}

fn failed_run_leaves_nothing(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "fail");
    ctx.dockerfile(
        "FROM {base}\nRUN echo ok > /ok\nRUN echo before-fail && exit 7\nRUN echo never-ran\n",
        &s.image,
    );
    let out = Builder::new(&s).build(&["-t", "failed:1"], &ctx);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "a failed RUN built: {all}");
    assert!(
        all.lines().any(|l| l == "before-fail"),
        "the step's output: {all}"
    );
    assert!(!all.contains("never-ran"), "the build went on: {all}");
    let status_line = all.lines().any(|l| {
        l.contains("echo before-fail && exit 7")
            && (l.contains(": 7") || l.contains("status 7") || l.contains("code 7"))
    });
    assert!(
        status_line,
        "no line names the step and its status 7: {all}"
    );
    assert!(!all.contains("Successfully"), "{all}");
    assert_ne!(
        s.nook(&["inspect", "failed:1"]).code,
        0,
        "a failed build tagged"
    );
    assert_nothing_left(&s);
}

/// No container (listed or on disk) and no partial file of a build remain.
fn assert_nothing_left(s: &Sandbox) {
    let ps = s.nook(&["ps", "-a", "-q"]);
    ps.ok();
    assert_eq!(ps.stdout.trim(), "", "containers left: {}", ps.stdout);
    for dir in [
        s.user.store().join("containers"),
        s.user.runtime_dir().join("containers"),
        s.user.store().join("tmp"),
    ] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
}

/// The pids of processes whose command line holds `needle` (arguments joined by spaces).
fn procs_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{} ({cmd})", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// Kills (by pid) the processes whose command line holds one of its needles, on drop.
struct Reap(Vec<String>);

impl Drop for Reap {
    fn drop(&mut self) {
        for p in self.0.iter().flat_map(|n| procs_with(n)) {
            if let Some(pid) = p.split(' ').next().and_then(|p| p.parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Ctrl-C (SIGINT to the build's process group) during a RUN: the build stops at once and
/// leaves no tag, container, process or partial layer.
/// `whole_group`: Ctrl-C as a terminal sends it; else the signal goes to the builder's pid
/// alone (a CI runner cancelling a job, a service manager stopping it).
fn interrupted_build_leaves_nothing(mode: Mode, sig: nix::sys::signal::Signal, whole_group: bool) {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "int");
    let needle = format!("sleep {}", 100_000 + rand_suffix() % 900_000);
    ctx.dockerfile(
        &format!("FROM {{base}}\nRUN echo ok > /ok\nRUN {needle}\n"),
        &s.image,
    );
    let mut c = s.user.nook(&["build", "-t", "int:1", ctx.path()]);
    c.env("NOOK_TEST_TAG", &s.tag).process_group(0);
    let mut proc = c.spawn().unwrap();
    let pid = proc.id() as i32;
    // Whatever happens below, the build and its RUN do not outlive the test.
    let _reap = Reap(vec![needle.clone(), ctx.path().to_owned()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while procs_with(&needle).is_empty() {
        assert!(Instant::now() < deadline, "the RUN never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    if whole_group {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    } else {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = proc.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = proc.kill();
            let _ = proc.wait();
            panic!("nook build did not stop on {sig}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "an interrupted build succeeded");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the RUN's process outlived the build: {:?}",
            procs_with(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(
        s.nook(&["inspect", "int:1"]).code,
        0,
        "an interrupted build tagged"
    );
    assert_nothing_left(&s);
}

#[test]
fn interrupted_build_leaves_nothing_range() {
    interrupted_build_leaves_nothing(Mode::Range, nix::sys::signal::Signal::SIGINT, true);
}

#[test]
fn terminated_builder_leaves_nothing_range() {
    interrupted_build_leaves_nothing(Mode::Range, nix::sys::signal::Signal::SIGTERM, false);
}

#[test]
fn interrupted_build_leaves_nothing_single() {
    interrupted_build_leaves_nothing(Mode::Single, nix::sys::signal::Signal::SIGINT, true);
}

#[test]
fn failed_run_leaves_nothing_range() {
    failed_run_leaves_nothing(Mode::Range);
}

#[test]
fn failed_run_leaves_nothing_single() {
    failed_run_leaves_nothing(Mode::Single);
}

#[test]
fn fixed_timestamp_gives_the_same_id() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "repro");
    ctx.file("in.txt", b"input\n").dockerfile(
        "FROM {base}\nCOPY in.txt /in.txt\nRUN mkdir /out && touch /out/t && sleep 1 && echo r > /out/r\nENV E=1\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let one = b.id(&["--timestamp", "0"], &ctx);
    let two = b.id(&["--timestamp", "0", "--no-cache"], &ctx);
    assert_eq!(one, two, "--timestamp 0 twice");
    let created = config_blob(&s, &one)["created"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(created.starts_with("1970-01-01T00:00:00"), "{created}");
    for layer in layers(&s, &one).iter().skip(1) {
        for e in layer {
            assert_eq!(e.mtime, 0, "{}: mtime under --timestamp 0", e.path);
        }
    }
    // A file's mtime changes, its content does not.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("in.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .unwrap();
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let three = b.build_env(&["-q", "--no-cache"], &ctx, &epoch);
    three.ok();
    let four = b.build_env(&["-q", "--no-cache"], &ctx, &epoch);
    four.ok();
    assert_eq!(built_id(&three), built_id(&four), "SOURCE_DATE_EPOCH twice");
    assert_ne!(built_id(&three), one, "another epoch, another id");
    let unfixed = b.id(&["--no-cache"], &ctx);
    assert_ne!(
        unfixed, one,
        "without a fixed time the id carries the build's time"
    );
}

#[test]
fn a_layer_is_a_tar_nook_run_reads_back() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "rt");
    ctx.dockerfile(
        "FROM {base}\nRUN mkdir -p /a/b && echo deep > /a/b/c && ln -s /a/b/c /link && mkfifo /fifo\n",
        &s.image,
    );
    let id = Builder::new(&s).id(&[], &ctx);
    assert_eq!(
        run_out(
            &s,
            &id,
            &[
                "sh",
                "-c",
                "cat /link; readlink /link; test -p /fifo && echo fifo"
            ]
        ),
        "deep\n/a/b/c\nfifo\n"
    );
    let all = layers(&s, &id);
    let top = all.last().unwrap();
    assert_eq!(entry(top, "link").unwrap().kind, tar::EntryType::Symlink);
    assert_eq!(entry(top, "fifo").unwrap().kind, tar::EntryType::Fifo);
}
