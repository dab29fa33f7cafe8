//! The container's root filesystem, driver against driver: the kernel overlay and nook's FUSE
//! overlay run the same conformance cases (tests/support/fsprobe.c) and the same scenario on
//! the image's lower files, as the unprivileged test user, and must agree. Also: the on-disk
//! form of the writable layer, many writers at once, killed containers, the auto ladder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::env::{Mode, Out, assert_no_leftovers};
use support::image::{Comp, LayerTar};
use support::sandbox::{Sandbox, assert_posix_cases, probe_dir};

const DRIVERS: [&str; 2] = ["overlay", "fuse"];

/// The image the scenario works on: /lower with files, directories, hard links and a symlink
/// in one layer, and a whiteout and an opaque directory in the next.
fn lower_image(s: &Sandbox) -> String {
    let mmap = vec![b'a'; 8192];
    let l2 = LayerTar::new()
        .dir("lower", 0o755)
        .file("lower/file", b"lower data\n", 0o644)
        .file("lower/append", b"line1\n", 0o644)
        .file("lower/mmap", &mmap, 0o644)
        .file("lower/trunc", b"0123456789", 0o644)
        .file("lower/chmod", b"c", 0o644)
        .file("lower/chown", b"owned\n", 0o644)
        .file("lower/utime", b"u", 0o644)
        .file("lower/xattr", b"x", 0o644)
        .file("lower/gone", b"g", 0o644)
        .file("lower/recreate", b"old\n", 0o644)
        .file("lower/renamed-from", b"moved\n", 0o644)
        .file("lower/over-target", b"old target\n", 0o644)
        .file("lower/noperm", b"secret", 0o644)
        .file("lower/h1", b"hard\n", 0o644)
        .hardlink("lower/h2", "lower/h1")
        .symlink("lower/link", "file")
        .dir("lower/dir", 0o755)
        .file("lower/dir/a", b"a", 0o644)
        .file("lower/dir/b", b"b", 0o644)
        .dir("lower/dir/sub", 0o755)
        .file("lower/dir/sub/c", b"c", 0o644)
        .dir("lower/dir2", 0o755)
        .file("lower/dir2/x", b"x", 0o644)
        .dir("lower/keep", 0o755)
        .file("lower/keep/k1", b"k1", 0o644)
        .file("lower/wh", b"whited out", 0o644)
        .dir("lower/opq", 0o755)
        .file("lower/opq/old", b"old", 0o644)
        .finish();
    let l3 = LayerTar::new()
        .dir("lower", 0o755)
        .whiteout("lower", "wh")
        .dir("lower/opq", 0o755)
        .opaque("lower/opq")
        .file("lower/opq/new", b"new", 0o644)
        .finish();
    s.image_with(
        "lower",
        &[
            (support::image::busybox_base().finish(), Comp::Gzip),
            (l2, Comp::Gzip),
            (l3, Comp::Gzip),
        ],
        json!({"Cmd": ["sh"]}),
    )
}

/// `nook run` with the probe mounted at /probe.
fn probe_run(s: &Sandbox, flags: &[&str], image: &str, args: &[&str]) -> Out {
    let dir = probe_dir().expect("fsprobe");
    let vol = format!("{}:/probe:ro", dir.display());
    let mut all = vec!["run", "--network", "none", "-v", &vol];
    all.extend_from_slice(flags);
    all.push(image);
    all.push("/probe/fsprobe");
    all.extend_from_slice(args);
    s.nook(&all)
}

fn setup(mode: Mode) -> Option<Sandbox> {
    let s = Sandbox::new(mode)?;
    probe_dir()?;
    Some(s)
}

#[test]
fn posix_cases_pass_on_both_drivers() {
    let Some(s) = setup(Mode::Range) else { return };
    let mut outputs = Vec::new();
    for d in DRIVERS {
        let out = probe_run(
            &s,
            &["--rm", "--rootfs-driver", d],
            &s.image,
            &["posix", "/posix"],
        );
        assert_posix_cases(&out, d);
        assert!(
            out.stdout.lines().count() > 140,
            "{d}: too few cases ran:\n{}",
            out.stdout
        );
        outputs.push(out.stdout);
    }
    assert_eq!(outputs[0], outputs[1]);
}

/// The writable layer on disk: each entry's kind, and for directories whether they are opaque.
fn upper_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let ft = e.file_type().unwrap();
            let kind = if ft.is_dir() {
                stack.push(r.clone());
                let opaque = std::process::Command::new("getfattr")
                    .args(["--only-values", "-n", "user.overlay.opaque"])
                    .arg(e.path())
                    .output()
                    .unwrap();
                format!("dir opaque={}", String::from_utf8_lossy(&opaque.stdout))
            } else {
                use std::os::unix::fs::FileTypeExt;
                use std::os::unix::fs::MetadataExt;
                let m = e.metadata().unwrap();
                if ft.is_char_device() && m.rdev() == 0 {
                    "whiteout".to_owned()
                } else if ft.is_symlink() {
                    "symlink".to_owned()
                } else if ft.is_fifo() {
                    "fifo".to_owned()
                } else if ft.is_socket() {
                    "socket".to_owned()
                } else {
                    format!("file {}", m.len())
                }
            };
            out.insert(r.display().to_string(), kind);
        }
    }
    out
}

/// The directory of the container named `name` in the user's store.
fn container_dir(s: &Sandbox, name: &str) -> PathBuf {
    for e in std::fs::read_dir(s.user.store().join("containers"))
        .unwrap()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path().join("config.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["name"] == name {
            return e.path();
        }
    }
    panic!("no container named {name}");
}

#[test]
fn scenario_agrees_between_drivers_and_on_disk() {
    let Some(s) = setup(Mode::Range) else { return };
    let image = lower_image(&s);
    let mut outs = BTreeMap::new();
    for d in DRIVERS {
        let name = format!("scenario-{d}");
        let out = probe_run(
            &s,
            &["--name", &name, "--rootfs-driver", d],
            &image,
            &["scenario", "/lower", "/scratch"],
        );
        assert_eq!(out.code, 0, "{d}: {}\n{}", out.stdout, out.stderr);
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(container_dir(&s, &name).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["driver"], d, "the run used the driver asked for");
        outs.insert(d, out.stdout);
    }
    let (kernel, nook) = (&outs["overlay"], &outs["fuse"]);
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("(driver)"))
            .map(str::to_owned)
            .collect()
    };
    let (k, n) = (lines(kernel), lines(nook));
    for (a, b) in k.iter().zip(&n) {
        assert_eq!(
            a, b,
            "kernel overlay and nook's FUSE overlay differ\nkernel:\n{kernel}\nnook:\n{nook}"
        );
    }
    assert_eq!(k.len(), n.len(), "kernel:\n{kernel}\nnook:\n{nook}");
    // What overlayfs semantics say, checked once (both drivers agree, above).
    for want in [
        "lower.listing: append/f chmod/f chown/f dir/d dir2/d file/f gone/f h1/f h2/f keep/d link/l mmap/f noperm/f opq/d over-target/f recreate/f renamed-from/f trunc/f utime/f xattr/f ",
        "lower.whiteout-hidden: ENOENT",
        "lower.opaque: new/f ",
        "copyup.write.data: lower data|more|",
        "copyup.truncate.data: 012",
        "copyup.chmod: success 600",
        "copyup.chown: success 1234:1234",
        "copyup.getxattr: 2 v1",
        "copyup.removexattr.gone: ENODATA",
        "xattr.create-exists: EEXIST",
        "unlink.gone: ENOENT",
        "recreate: success new|",
        "rmdir.full: ENOTEMPTY",
        "rmdir.emptied: success",
        "opaque.listing: []",
        "opaque.create: success a/f ",
        "merged.create: success k1/f k2/f ",
        "rename.file: success moved|",
        "rename.over-lower: success moved|",
        "rename.upper-dir.data: f",
        "hardlink.lower: 1 nlink=2",
        "hardlink.new: success nlink=2",
        "perm.unprivileged-open: EACCES",
        "append.data: line1|line2|line3|",
        "mmap.shared: mapped aMMAPa",
        "mkfifo: success 1",
        "socket.bind: success 1",
        "symlink.lower: file lower data|more|",
        "big.pread: 4 tail",
        "big.size: 5368709124",
        "big.sparse: 1",
        "big.seek-hole: 0",
        "big.truncate: success 6442450944",
        "statfs: success 1",
    ] {
        assert!(nook.contains(want), "expected {want:?} in:\n{nook}");
    }
    // nook keeps a copied-up hard link linked (overlayfs does so only with index=on).
    assert!(
        nook.contains("hardlink.copyup.h2 (driver): hard|x|"),
        "{nook}"
    );
    // ... and reports one inode number for all names of a file (overlayfs does not when a
    // copied-up file gets a new link).
    assert!(nook.contains("hardlink.new.same-ino (driver): 1"), "{nook}");
    // Both drivers leave the writable layer in the same form: whiteouts as 0/0 character
    // devices, opaque directories marked with user.overlay.opaque.
    let kernel_upper = upper_tree(&container_dir(&s, "scenario-overlay").join("upper"));
    let nook_upper = upper_tree(&container_dir(&s, "scenario-fuse").join("upper"));
    assert_eq!(
        kernel_upper.get("lower/gone").map(String::as_str),
        Some("whiteout")
    );
    assert_eq!(
        kernel_upper.get("lower/dir").map(String::as_str),
        Some("dir opaque=y")
    );
    let differ: Vec<_> = kernel_upper
        .iter()
        .filter(|(k, v)| nook_upper.get(*k) != Some(v) && k.as_str() != "lower/h2")
        .chain(
            nook_upper
                .iter()
                .filter(|(k, _)| !kernel_upper.contains_key(*k) && k.as_str() != "lower/h2"),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "upper layers differ: {differ:?}\nkernel: {kernel_upper:?}\nnook: {nook_upper:?}"
    );
}

#[test]
fn many_writers_at_once_on_fuse() {
    let Some(s) = setup(Mode::Range) else { return };
    let out = probe_run(
        &s,
        &["--rm", "--rootfs-driver", "fuse"],
        &s.image,
        &["threads", "/w", "16", "8"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("threads: 16 of 16"), "{}", out.stdout);
}

/// Waits for the container named `name` to be running; returns its pid.
fn running_pid(s: &Sandbox, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(dir) = std::fs::read_dir(s.user.store().join("containers"))
            .ok()
            .and_then(|mut it| it.next())
            .and_then(|e| e.ok())
        {
            let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && v["name"] == name
                && v["state"] == "running"
                && let Some(pid) = v["pid"].as_i64()
            {
                return pid as i32;
            }
        }
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_mid_write_leaves_no_mount_or_process() {
    let Some(s) = setup(Mode::Range) else { return };
    let script = "while :; do dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; done";
    for victim in ["container", "nook"] {
        let name = format!("writer-{victim}");
        let mut cmd = s.user.nook(&[
            "run",
            "--rm",
            "--name",
            &name,
            "--rootfs-driver",
            "fuse",
            &s.image,
            "sh",
            "-c",
            script,
        ]);
        cmd.env("NOOK_TEST_TAG", &s.tag);
        let child = support::env::ChildGuard(Some(cmd.spawn().unwrap()));
        let pid = running_pid(&s, &name);
        std::thread::sleep(Duration::from_millis(300));
        let target = if victim == "container" {
            pid
        } else {
            child.pid() as i32
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(target),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let mut child = child;
        let status = child.0.take().unwrap().wait().unwrap();
        if victim == "container" {
            assert_eq!(
                status.code(),
                Some(137),
                "nook reports the kill as docker does"
            );
        }
        assert_no_leftovers(&s.tag, s.user.work.path());
        let merged = s.user.work.path().join("nook");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&merged.display().to_string()), "{mounts}");
        // A killed nook leaves its container's directory behind (as a crashed docker would);
        // nothing of it is mounted or running.
        let _ = std::fs::remove_dir_all(s.user.store().join("containers"));
    }
}

#[test]
fn auto_takes_the_fuse_rung_when_the_kernel_refuses() {
    let Some(s) = setup(Mode::Range) else { return };
    let release = nix::sys::utsname::uname().unwrap();
    let runtime = s.user.work.path().join("nook");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    s.user.give(&runtime);
    let probe = runtime.join(format!(
        "overlay-probe-{}",
        release.release().to_string_lossy()
    ));
    std::fs::write(&probe, "refused: said no for a test\n").unwrap();
    s.user.give(&probe);
    let out = s.nook(&[
        "run",
        "--name",
        "auto",
        &s.image,
        "sh",
        "-c",
        "echo hi > /f && cat /f",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hi\n");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(container_dir(&s, "auto").join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["driver"], "fuse");
}

/// An image with files owned by uid 1234 and a setuid binary.
fn owners_image(s: &Sandbox) -> String {
    let l2 = LayerTar::new()
        .dir("srv", 0o755)
        .file_owned("srv/owned", b"data\n", 0o640, 1234, 1234)
        .dir_owned("home", 0o755, 0, 0)
        .dir_owned("home/user", 0o750, 1234, 1234)
        .file_owned("usr/bin/suid", b"#!/bin/sh\n", 0o4755, 0, 0)
        .finish();
    s.image_over_busybox("owners", l2, json!({"Cmd": ["sh"]}))
}

#[test]
fn single_mapping_stat_shows_the_image_owners() {
    let Some(s) = setup(Mode::Single) else { return };
    let image = owners_image(&s);
    let out = s.run(&[
        &image,
        "stat",
        "-c",
        "%n %u:%g %a",
        "/srv/owned",
        "/home/user",
        "/usr/bin/suid",
        "/bin",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "/srv/owned 1234:1234 640\n/home/user 1234:1234 750\n/usr/bin/suid 0:0 4755\n/bin 0:0 755\n"
    );
    // Every way of asking agrees: stat, lstat, statx and fstatat on a descriptor.
    let out = probe_run(
        &s,
        &["--rm"],
        &image,
        &["owners", "/srv/owned", "/usr/bin/suid"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "/srv/owned stat=1234:1234:640 lstat=1234:1234:640 statx=1234:1234:640 fd=1234:1234:640\n\
         /usr/bin/suid stat=0:0:4755 lstat=0:0:4755 statx=0:0:4755 fd=0:0:4755\n"
    );
    let out = s.run(&[&image, "ls", "-ln", "/srv/owned"]);
    assert!(out.stdout.contains(" 1234     1234 "), "{}", out.stdout);
}

#[test]
fn single_mapping_chown_is_recorded() {
    let Some(s) = setup(Mode::Single) else { return };
    let image = owners_image(&s);
    let script = "echo hi > /srv/f && chown 42:42 /srv/f && stat -c '%u:%g' /srv/f && \
         chown 7 /srv/owned && stat -c '%u:%g %a' /srv/owned && \
         chmod 4755 /srv/f && chown 43 /srv/f && stat -c '%u:%g %a' /srv/f && \
         chown -h 5:5 /bin/sh && cat /srv/owned";
    let out = s.nook(&["run", "--name", "chowned", &image, "sh", "-c", script]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // chown clears setuid, as chown(2) does.
    assert_eq!(out.stdout, "42:42\n7:1234 640\n43:42 755\ndata\n");
    // The record lives in the writable layer, in the form unpack writes.
    let upper = container_dir(&s, "chowned").join("upper");
    let xattr = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.containers.override_stat"])
        .arg(upper.join("srv/f"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&xattr.stdout), "43:42:0755:file");
}

#[test]
fn single_mapping_package_install_workload() {
    let Some(s) = setup(Mode::Single) else { return };
    let image = owners_image(&s);
    // What a package's maintainer scripts do: add a user and a group, make its directories,
    // hand them over, make a fifo, and check.
    let script = "echo 'app:x:2000:2000::/var/lib/app:/bin/false' >> /etc/passwd && \
         echo 'app:x:2000:' >> /etc/group && \
         mkdir -p /var/lib/app/data /var/log/app && touch /var/lib/app/data/db /var/log/app/log && \
         chown -R app:app /var/lib/app && chown app /var/log/app/log && chmod 0750 /var/lib/app && \
         mkfifo /var/lib/app/ctl && chown app:app /var/lib/app/ctl && \
         stat -c '%n %U:%G %a' /var/lib/app /var/lib/app/data /var/lib/app/data/db /var/log/app/log && \
         test -p /var/lib/app/ctl && ls -l /var/lib/app/data/db | cut -c1-30";
    let out = s.run(&[&image, "sh", "-c", script]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "/var/lib/app app:app 750",
            "/var/lib/app/data app:app 755",
            "/var/lib/app/data/db app:app 644",
            "/var/log/app/log app:root 644"
        ]
    );
    assert!(lines[4].contains("app      app"), "{}", out.stdout);
}

#[test]
fn single_mapping_exec_sees_and_records_owners() {
    let Some(s) = setup(Mode::Single) else { return };
    let image = owners_image(&s);
    let script = format!("echo up; sleep 300; : {}", s.tag);
    let out = s.nook(&["run", "-d", "--name", "fr", &image, "sh", "-c", &script]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // exec'd commands get the fakeroot too: the image's owners, and chown recorded.
    let out = s.nook(&[
        "exec",
        "fr",
        "sh",
        "-c",
        "stat -c '%u:%g %a' /srv/owned && echo x > /srv/g && chown 42:43 /srv/g && stat -c '%u:%g' /srv/g",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "1234:1234 640\n42:43\n");
    // The container's own processes see what exec recorded.
    let out = s.nook(&["exec", "fr", "stat", "-c", "%u:%g", "/srv/g"]);
    assert_eq!(out.stdout, "42:43\n");
    assert_eq!(s.nook(&["rm", "-f", "fr"]).code, 0);
}

/// An image with `n` directories below /many (1000 to a directory) in one layer.
fn huge_tree_image(s: &Sandbox, n: usize) -> String {
    let mut l = LayerTar::new().dir("many", 0o755);
    for i in 0..n.div_ceil(1000) {
        l = l.dir(&format!("many/d{i}"), 0o755);
        for j in 0..1000.min(n - i * 1000) {
            l = l.dir(&format!("many/d{i}/e{j}"), 0o755);
        }
    }
    s.image_with(
        "huge",
        &[
            (support::image::busybox_base().finish(), Comp::Gzip),
            (l.finish(), Comp::Gzip),
        ],
        json!({"Cmd": ["sh"]}),
    )
}

/// The process serving this sandbox's FUSE overlay: nook's, holding /dev/fuse.
fn fuse_server_pid(s: &Sandbox) -> u32 {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if !env.windows(s.tag.len()).any(|w| w == s.tag.as_bytes()) {
            continue;
        }
        let serves = std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l == Path::new("/dev/fuse")));
        if serves {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "FUSE servers of this sandbox: {found:?}");
    found[0]
}

/// The soft descriptor limit of process `pid`.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Under the usual soft limit of 1024 (hard 4096 here), a walk of a tree with more directories
/// than that ran nook's FUSE server out of descriptors: `ls` and later execs failed with
/// EMFILE. The server raises its own soft limit and holds a bounded share of it.
fn fds_stay_bounded(mode: Mode) {
    // A real tree's worth (issue 11): twelve times the hard limit, so no cache of one
    // descriptor per directory could hold them. The store is on tmpfs: the subject is the
    // server's descriptors, not this VM's slow directory removal.
    const DIRS: usize = 50_000;
    // Two caches of a quarter of the raised limit each, the FUSE channels and some slack.
    const BOUND: usize = 4096 / 2 + 256;
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let image = huge_tree_image(&s, DIRS);
    let nook = |args: &[&str]| {
        let mut c = s.user.nook_nofile(1024, 4096, args);
        c.env("NOOK_TEST_TAG", &s.tag);
        Out::from(c.output().unwrap())
    };
    let script = format!("sleep 600; : {}", s.tag);
    let out = nook(&[
        "run",
        "-d",
        "--name",
        "huge",
        "--network",
        "none",
        "--rootfs-driver",
        "fuse",
        &image,
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = nook(&["exec", "huge", "sh", "-c", "find / -xdev | wc -l; ls /"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.contains("Too many open files"),
        "{}",
        out.stderr
    );
    let walked: usize = out.stdout.lines().next().unwrap().trim().parse().unwrap();
    assert!(walked > DIRS, "find saw {walked} entries");
    assert!(out.stdout.lines().any(|l| l == "many"), "{}", out.stdout);
    let server = fuse_server_pid(&s);
    let fds = std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .count();
    assert!(fds <= BOUND, "the FUSE server holds {fds} descriptors");
    assert_eq!(
        soft_nofile(server),
        4096,
        "the server raised its soft limit"
    );
    let init = running_pid(&s, "huge");
    assert_eq!(
        soft_nofile(init as u32),
        1024,
        "the container keeps the caller's limit"
    );
    let out = nook(&["exec", "huge", "ls", "/many/d7/e999"]);
    assert_eq!(out.code, 0, "a later exec works: {}", out.stderr);
    assert_eq!(nook(&["rm", "-f", "huge"]).code, 0);
}

#[test]
fn fuse_server_fds_stay_bounded_on_a_huge_tree() {
    fds_stay_bounded(Mode::Single);
}

#[test]
fn fuse_server_fds_stay_bounded_on_a_huge_tree_with_a_range() {
    fds_stay_bounded(Mode::Range);
}

/// /data/keep and /data/move, each with a file of two names (k and hard, m and hard2).
fn links_image(s: &Sandbox) -> String {
    let l = LayerTar::new()
        .dir("data", 0o755)
        .dir("data/keep", 0o755)
        .file("data/keep/k", b"a\n", 0o644)
        .hardlink("data/keep/hard", "data/keep/k")
        .dir("data/move", 0o755)
        .file("data/move/m", b"a\n", 0o644)
        .hardlink("data/move/hard2", "data/move/m")
        .finish();
    s.image_over_busybox("links", l, json!({"Cmd": ["sh"]}))
}

/// Runs `script` once in a new container named `name`, then again in the same container (a
/// new server over the same writable layer); returns both outputs.
fn run_and_restart(s: &Sandbox, driver: &str, name: &str, image: &str, script: &str) -> [Out; 2] {
    let first = s.nook(&[
        "run",
        "--name",
        name,
        "--network",
        "none",
        "--rootfs-driver",
        driver,
        image,
        "sh",
        "-c",
        script,
    ]);
    let again = s.nook(&["start", "-a", name]);
    assert_eq!(s.nook(&["rm", "-f", name]).code, 0);
    [first, again]
}

/// Writing one name of a lower hard link copied it up alone: the other name showed the old
/// data with one link, and came back after a restart. Every name now follows the copy, as
/// with the kernel overlay's `index=on` (off here, so the kernel driver is not compared).
#[test]
fn hard_links_share_content_after_copy_up() {
    let Some(s) = setup(Mode::Range) else { return };
    let image = links_image(&s);
    let script = "test -e /done || { echo b >> /data/keep/k && touch /done; }; \
                  tr '\\n' '|' < /data/keep/hard; echo; stat -c %h /data/keep/hard /data/keep/k";
    for out in run_and_restart(&s, "fuse", "links", &image, script) {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.stdout, "a|b|\n2\n2\n", "{}", out.stderr);
    }
}

/// `rm -r` of a directory whose hard link was copied up failed on the other name (ENOENT),
/// which then came back with the lower data; `mv` of such a directory (a copy and an `rm -r`)
/// failed with ENOTEMPTY. Both drivers now agree, before and after a restart.
#[test]
fn rm_and_mv_of_dir_with_copied_up_hard_links() {
    let Some(s) = setup(Mode::Range) else { return };
    let image = links_image(&s);
    let script = "if ! test -e /done; then \
                    echo b >> /data/keep/k; echo b >> /data/move/m; \
                    rm -r /data/keep; echo rm=$?; mv /data/move /data/moved; echo mv=$?; \
                    touch /done; fi; \
                  ls -A /data | tr '\\n' ' '; echo; ls -A /data/moved | tr '\\n' ' '; echo; \
                  cat /data/moved/m";
    let mut outs = Vec::new();
    for d in DRIVERS {
        let [first, again] = run_and_restart(&s, d, &format!("rmmv-{d}"), &image, script);
        assert_eq!(first.code, 0, "{d}: {}\n{}", first.stdout, first.stderr);
        assert_eq!(
            first.stdout, "rm=0\nmv=0\nmoved \nhard2 m \na\nb\n",
            "{d}: {}",
            first.stderr
        );
        assert_eq!(again.code, 0, "{d}: {}", again.stderr);
        assert_eq!(
            again.stdout, "moved \nhard2 m \na\nb\n",
            "{d} after a restart: {}",
            again.stderr
        );
        outs.push((first.stdout, again.stdout));
    }
    assert_eq!(outs[0], outs[1], "the kernel overlay and nook's agree");
}

/// fuser's "Failed to send FUSE reply: No such file or directory" (a reply to a request whose
/// caller was killed) reached the container's terminal. Interrupted readers and walkers must
/// leave no such line at the default log level.
#[test]
fn interrupted_requests_leave_no_fuser_errors_on_the_terminal() {
    let Some(s) = setup(Mode::Range) else { return };
    let big = vec![b'x'; 8 << 20];
    let l = LayerTar::new()
        .dir("big", 0o755)
        .file("big/a", &big, 0o644)
        .file("big/b", &big, 0o644)
        .file("big/c", &big, 0o644)
        .finish();
    let image = s.image_over_busybox("bigfiles", l, json!({"Cmd": ["sh"]}));
    // The shell appends to a file (a WRITE each time) while a sibling signals it: the kernel
    // sends INTERRUPT for requests nook has often answered already (fuser's reply to it then
    // finds no request). Readers killed mid-file, and the container ending during readahead.
    let script = "trap 'n=$((n+1))' USR1; p=$$; \
                  (while kill -USR1 $p 2>/dev/null; do :; done) & k=$!; \
                  i=0; while [ $i -lt 3000 ]; do echo x >> /w; i=$((i+1)); done; kill $k; \
                  for f in a b c; do cat /big/$f > /dev/null & done; sleep 0.02; \
                  kill -9 $(jobs -p) 2>/dev/null; cat /big/a > /dev/null & echo done";
    let out = s.run(&[
        "--network",
        "none",
        "--rootfs-driver",
        "fuse",
        &image,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("done\n"), "{}", out.stdout);
    assert!(
        !out.stderr.contains("Failed to send FUSE reply"),
        "{}",
        out.stderr
    );
}
