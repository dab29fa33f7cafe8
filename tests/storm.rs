//! Start storms, as a many-rank job on one node makes them: 64 containers of one image
//! started at once (under `ulimit -n 1024`, as a login shell leaves it) all succeed, share
//! the one unpacked copy of the image, and leave nothing behind; 8 at once with the default
//! (rootless, helper-backed) network; and 16 first runs of an image not yet stored
//! (`--pull missing` into an empty store) unpack each layer once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::path::Path;
use std::sync::{Arc, Barrier};

use support::env::{Mode, Out, User};
use support::sandbox::Sandbox;

in_both_modes!(
    storm_64_no_network,
    storm_8_default_network,
    storm_16_first_pulls,
    running_containers_hold_no_store_lock,
);

fn storm_64_no_network(mode: Mode) {
    storm(mode, 64, &["--network", "none"]);
}

fn storm_8_default_network(mode: Mode) {
    storm(mode, 8, &[]);
}

/// `n` containers of the sandbox's image started at once; each echoes its number.
fn storm(mode: Mode, n: usize, flags: &[&str]) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let before = layer_dirs(&s.user.store());
    assert_eq!(before.len(), 1, "busybox is one layer: {before:?}");
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    let outs = at_once(n, |i| {
        let n = format!("N={i}");
        let mut a = args.clone();
        a.extend(["-e", &n]);
        a.extend([s.image.as_str(), "sh", "-c", "echo $N"]);
        let mut c = s.user.nook_nofile(1024, 1024, &a);
        c.env("NOOK_TEST_TAG", &s.tag);
        Out::from(c.output().unwrap())
    });
    check_outputs(&outs);
    assert_eq!(layer_dirs(&s.user.store()), before, "the layer was copied");
    let ps = s.nook(&["ps", "-a", "-q"]);
    ps.ok();
    assert_eq!(ps.stdout.trim(), "", "containers left behind");
}

/// 16 first runs into an empty store, all pulling the same image.
fn storm_16_first_pulls(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    // A second user of the same mode with nothing stored; the sandbox's registry serves.
    let Some(fresh) = User::new_in(mode, &support::env::fast_base()) else {
        return;
    };
    let outs = at_once(16, |i| {
        let n = format!("N={i}");
        let a = [
            "run",
            "--rm",
            "--pull",
            "missing",
            "--network",
            "none",
            "-e",
            &n,
            &s.image,
            "sh",
            "-c",
            "echo $N",
        ];
        let mut c = fresh.nook_nofile(1024, 1024, &a);
        c.env("NOOK_TEST_TAG", &s.tag);
        Out::from(c.output().unwrap())
    });
    check_outputs(&outs);
    // The one layer was downloaded and unpacked by one run; the others waited on its lock.
    let unpacked: usize = outs
        .iter()
        .map(|o| o.stderr.matches(": Pull complete").count())
        .sum();
    assert_eq!(unpacked, 1, "the layer was unpacked {unpacked} times");
    let layers = layer_dirs(&fresh.store());
    assert_eq!(layers.len(), 1, "one layer unpacked once: {layers:?}");
    let images = fresh.run(&["images", "-q"]);
    images.ok();
    assert_eq!(images.stdout.lines().count(), 1, "{}", images.stdout);
    fresh.run(&["system", "reset", "-f"]).ok();
    support::env::assert_no_leftovers(&s.tag, fresh.work.path());
}

/// While containers run (detached ones with their monitors, and a foreground one), every lock
/// in the store is free: no lock lives as long as a container, so a start never waits on
/// another container's life.
fn running_containers_hold_no_store_lock(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let mut names = Vec::new();
    for i in 0..4 {
        let name = format!("{}-{i}", s.tag);
        s.nook(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            &s.image,
            "sleep",
            "60",
        ])
        .ok();
        names.push(name);
    }
    // A foreground one that ends when its standard input closes.
    let fg_args = [
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        &s.image,
        "sh",
        "-c",
        "echo up; cat >/dev/null",
    ];
    let mut fg = s.user.nook(&fg_args);
    fg.env("NOOK_TEST_TAG", &s.tag)
        .stdin(std::process::Stdio::piped());
    let mut child = support::env::ChildGuard(Some(fg.spawn().unwrap()));
    let running = child.0.as_mut().unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(running.stdout.as_mut().unwrap(), &mut up).unwrap();
    let locks: Vec<_> = std::fs::read_dir(s.user.store().join("locks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!locks.is_empty(), "the store takes no locks?");
    for lock in &locks {
        let f = std::fs::File::open(lock).unwrap();
        let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(
            held.is_ok(),
            "{} is held while containers run",
            lock.display()
        );
    }
    let mut running = child.0.take().unwrap();
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    s.nook(&rm).ok();
}

/// Runs `f(0..n)` on `n` threads released together; returns the outputs in order.
fn at_once<F>(n: usize, f: F) -> Vec<Out>
where
    F: Fn(usize) -> Out + Sync,
{
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let f = &f;
                scope.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every start exited 0 and printed its own number.
fn check_outputs(outs: &[Out]) {
    let failed: Vec<String> = outs
        .iter()
        .enumerate()
        .filter(|(i, o)| o.code != 0 || o.stdout.trim() != i.to_string())
        .map(|(i, o)| format!("#{i}: exit {} out {:?} err {}", o.code, o.stdout, o.stderr))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} starts failed:\n{}",
        failed.len(),
        outs.len(),
        failed.join("\n")
    );
}

/// The unpacked layers' directories in a store.
fn layer_dirs(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("layers"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
