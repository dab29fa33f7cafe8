//! Single-file images: `nook save --format squashfs` flattens an image (whiteouts applied,
//! owners kept, its config inside), `nook run FILE.sqsh` runs it over squashfuse with its own
//! writable layer, and an Apptainer SIF made by hand around the same squashfs runs too;
//! hostile SIF files are refused. Both id modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::env::Mode;
use support::image::{LayerTar, sha256};
use support::sandbox::Sandbox;

const MODES: [Mode; 2] = [Mode::Range, Mode::Single];

/// Whether squashfuse and squashfs-tools are here (a printed skip otherwise).
fn tools() -> bool {
    for t in ["squashfuse", "sqfstar", "unsquashfs"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
        if !found {
            support::skip(&format!(
                "{t} is not installed (squashfuse, squashfs-tools)"
            ));
            return false;
        }
    }
    true
}

/// busybox with a deleted file, owners other than root's, and a config to keep.
fn squash_image(s: &Sandbox) -> String {
    let top = LayerTar::new()
        .whiteout("bin", "true")
        .dir("work", 0o755)
        .file("work/hello", b"from the image\n", 0o644)
        .file_owned("work/app", b"app's\n", 0o640, 1000, 1000)
        .finish();
    s.image_over_busybox(
        "sq",
        top,
        json!({
            "Entrypoint": ["sh", "-c"],
            "Cmd": ["echo $GREETING; pwd; cat hello"],
            "Env": ["PATH=/bin", "GREETING=hello from the config"],
            "WorkingDir": "/work",
        }),
    )
}

/// Saves `image` as `NAME` in the user's home; returns its path.
fn save(s: &Sandbox, image: &str, name: &str) -> PathBuf {
    let out = s.user.home().join(name);
    s.nook(&[
        "save",
        "--format",
        "squashfs",
        "-o",
        out.to_str().unwrap(),
        image,
    ])
    .ok();
    out
}

fn digest_of(p: &Path) -> String {
    sha256(&std::fs::read(p).unwrap())
}

#[test]
fn saved_image_runs_with_its_config_and_owners() {
    if !tools() {
        return;
    }
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = squash_image(&s);
        let file = save(&s, &image, "app.sqsh");
        let f = file.to_str().unwrap();
        let out = s.run(&[f]);
        out.ok();
        assert_eq!(
            out.stdout, "hello from the config\n/work\nfrom the image\n",
            "{mode:?}"
        );
        // Whiteouts applied; root's files stay root's; another owner is kept where it is
        // mapped (a single mapping shows it as nobody, as the kernel does for unmapped ids).
        let out = s.run(&[
            "--entrypoint",
            "",
            f,
            "sh",
            "-c",
            "test ! -e /bin/true && echo gone; stat -c '%u %n' /bin/busybox /work/app",
        ]);
        out.ok();
        let app = if mode == Mode::Range { "1000" } else { "65534" };
        assert_eq!(
            out.stdout,
            format!("gone\n0 /bin/busybox\n{app} /work/app\n"),
            "{mode:?}"
        );
    }
}

#[test]
fn image_user_is_mapped_from_the_squashfs() {
    if !tools() {
        return;
    }
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let top = LayerTar::new()
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/work:/bin/sh\n",
                0o644,
            )
            .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644)
            .dir_owned("work", 0o755, 1000, 1000)
            .file_owned("work/app", b"app's\n", 0o600, 1000, 1000)
            .finish();
        let image = s.image_over_busybox("squser", top, json!({"User": "app"}));
        let file = save(&s, &image, "user.sqsh");
        let out = s.run(&[file.to_str().unwrap(), "sh", "-c", "id -u; cat /work/app"]);
        out.ok();
        assert_eq!(out.stdout, "1000\napp's\n", "{mode:?}");
    }
}

#[test]
fn writes_land_in_the_writable_layer() {
    if !tools() {
        return;
    }
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = squash_image(&s);
        let file = save(&s, &image, "w.sqsh");
        let f = file.to_str().unwrap();
        let before = digest_of(&file);
        let script = "echo changed >> /work/hello && cat /work/hello";
        let out = s.nook(&[
            "run",
            "--name",
            "sqw",
            "--entrypoint",
            "",
            f,
            "sh",
            "-c",
            script,
        ]);
        out.ok();
        assert_eq!(out.stdout, "from the image\nchanged\n", "{mode:?}");
        assert_eq!(digest_of(&file), before, "the squashfs changed ({mode:?})");
        // Started again, the container finds its own writes.
        let out = s.nook(&["start", "-a", "sqw"]);
        out.ok();
        assert_eq!(out.stdout, "from the image\nchanged\nchanged\n", "{mode:?}");
        // A second container sees the image as saved.
        let out = s.run(&["--entrypoint", "", f, "sh", "-c", "cat /work/hello"]);
        assert_eq!(out.stdout, "from the image\n", "{mode:?}");
        s.nook(&["rm", "sqw"]).ok();
        assert_eq!(digest_of(&file), before, "{mode:?}");
    }
}

#[test]
fn rungs_for_file_images() {
    if !tools() {
        return;
    }
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let image = squash_image(&s);
    let file = save(&s, &image, "r.sqsh");
    let f = file.to_str().unwrap();
    let out = s.run(&["--rootfs-driver", "copy", f]);
    out.ok();
    assert_eq!(out.stdout, "hello from the config\n/work\nfrom the image\n");
    let out = s.nook(&["run", "--name", "sqi", f]);
    out.ok();
    let inspect = s.nook(&["inspect", "sqi"]);
    inspect.ok();
    let v: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(v[0]["Driver"], "overlay", "{}", inspect.stdout);
    s.nook(&["rm", "sqi"]).ok();
    s.run(&["--rootfs-driver", "fuse", f])
        .fails_with(125, "--rootfs-driver fuse does not run squashfs images");
    // Without squashfuse the run fails with what to install, and leaves nothing waiting.
    let bin = s.user.home().join("bin-without-squashfuse");
    std::fs::create_dir_all(&bin).unwrap();
    let unsquashfs = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("unsquashfs"))
        .find(|p| p.is_file())
        .unwrap();
    std::os::unix::fs::symlink(unsquashfs, bin.join("unsquashfs")).unwrap();
    s.user.give(&bin);
    let out = s.user.run_env(
        &["run", "--rm", "--network", "none", f, "true"],
        &[("PATH", bin.to_str().unwrap()), ("NOOK_TEST_TAG", &s.tag)],
    );
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("install Debian's squashfuse"),
        "{}",
        out.stderr
    );
    let out = s.nook(&["save", "--format", "squashfs", &image]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("needs -o FILE"), "{}", out.stderr);
}

/// squashfuse processes serving `file`, by pid.
fn squashfuse_of(file: &Path) -> Vec<String> {
    let needle = file.to_str().unwrap();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("squashfuse ") && cmd.contains(needle) {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// Root mounts of any process that stand on a squashfs lower layer and hold container `id`'s
/// writable layer (the squashfs mount itself is detached below the container's overlay).
fn squash_mounts(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let info = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        found.extend(
            info.lines()
                .filter(|l| l.contains("lowerdir=squash,") && l.contains(id))
                .map(str::to_owned),
        );
    }
    found
}

#[test]
fn detached_container_leaves_no_mount_behind() {
    if !tools() {
        return;
    }
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let image = squash_image(&s);
        let file = save(&s, &image, "d.sqsh");
        let f = file.to_str().unwrap();
        let out = s.nook(&[
            "run",
            "-d",
            "--name",
            "sqd",
            "--entrypoint",
            "",
            f,
            "sh",
            "-c",
            "echo up; exec sleep 600",
        ]);
        out.ok();
        let id = out.stdout.trim().to_owned();
        assert_eq!(squashfuse_of(&file).len(), 1, "{mode:?}");
        assert!(!squash_mounts(&id).is_empty(), "{mode:?}: no mount seen");
        let ps = s.nook(&["ps", "--format", "json"]);
        let line = ps
            .stdout
            .lines()
            .find(|l| l.contains("\"sqd\""))
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["Image"], f, "{}", ps.stdout);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !s.nook(&["logs", "sqd"]).stdout.contains("up") {
            assert!(std::time::Instant::now() < deadline, "no output from sqd");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s.nook(&["rm", "-f", "sqd"]).ok();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !squashfuse_of(&file).is_empty() || !squash_mounts(&id).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode:?}: left behind: {:?} {:?}",
                squashfuse_of(&file),
                squash_mounts(&id)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

const DESCRIPTOR_LEN: usize = 585;

/// A SIF file made by hand (github.com/apptainer/sif's layout): the global header, one
/// descriptor (a primary system partition of type squashfs), the squashfs at 4096.
fn sif_around(squashfs: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 128];
    h[..31].copy_from_slice(b"#!/usr/bin/env run-singularity\n");
    h[32..41].copy_from_slice(b"SIF_MAGIC");
    h[42..44].copy_from_slice(b"01");
    h[45..47].copy_from_slice(b"02");
    let put = |h: &mut Vec<u8>, at: usize, v: i64| h[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut h, 80, 47); // free descriptors
    put(&mut h, 88, 48); // total descriptors
    put(&mut h, 96, 128); // descriptors' offset
    put(&mut h, 104, DESCRIPTOR_LEN as i64);
    put(&mut h, 112, 32768); // data offset
    put(&mut h, 120, squashfs.len() as i64);
    let mut table = vec![0u8; 48 * DESCRIPTOR_LEN];
    let d = &mut table[..DESCRIPTOR_LEN];
    d[..4].copy_from_slice(&0x4004i32.to_le_bytes()); // a partition
    d[4] = 1; // used
    d[5..9].copy_from_slice(&1u32.to_le_bytes());
    d[17..25].copy_from_slice(&32768i64.to_le_bytes());
    d[25..33].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
    let extra = 201;
    d[extra..extra + 4].copy_from_slice(&1i32.to_le_bytes()); // squashfs
    d[extra + 4..extra + 8].copy_from_slice(&2i32.to_le_bytes()); // primary system
    let mut out = h;
    out.extend_from_slice(&table);
    out.resize(32768, 0);
    out.extend_from_slice(squashfs);
    out
}

#[test]
fn sif_made_by_hand_runs() {
    if !tools() {
        return;
    }
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        // A squashfs of the busybox tree made here with mksquashfs, no nook config in it.
        let tree = tempfile::tempdir().unwrap();
        let bb = s.user.home().join("bb.sqsh");
        let file = save(&s, &s.image, "bb.sqsh");
        assert_eq!(file, bb);
        let extract = tree.path().join("root");
        let st = std::process::Command::new("unsquashfs")
            .args(["-q", "-d"])
            .arg(&extract)
            .arg(&bb)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_dir_all(extract.join(".nook")).unwrap();
        std::fs::create_dir_all(extract.join(".singularity.d")).unwrap();
        std::fs::write(
            extract.join(".singularity.d/runscript"),
            "#!/bin/sh\necho runscript \"$@\"\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(extract.join(".singularity.d/runscript"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(extract.join(".singularity.d/runscript"), perm).unwrap();
        let plain = tree.path().join("plain.sqsh");
        let st = std::process::Command::new("mksquashfs")
            .arg(&extract)
            .arg(&plain)
            .args(["-quiet", "-no-progress"])
            .status()
            .unwrap();
        assert!(st.success());
        let sif = s.user.home().join("app.sif");
        std::fs::write(&sif, sif_around(&std::fs::read(&plain).unwrap())).unwrap();
        s.user.give(&sif);
        let f = sif.to_str().unwrap();
        let out = s.run(&[f]);
        out.ok();
        assert_eq!(out.stdout, "runscript\n", "{mode:?}");
        let out = s.run(&[f, "sh", "-c", "echo $PATH; stat -c %u /bin/busybox"]);
        out.ok();
        assert_eq!(
            out.stdout, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n0\n",
            "{mode:?}"
        );
    }
}

#[test]
fn hostile_sif_files_are_refused() {
    if !tools() {
        return;
    }
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let squashfs = std::fs::read(save(&s, &s.image, "h.sqsh")).unwrap();
    let good = sif_around(&squashfs);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut past_end = good.clone();
    past_end[128 + 25..128 + 33].copy_from_slice(&(1i64 << 40).to_le_bytes());
    cases.push(("past_end", past_end, "outside the file"));
    let mut overlapping = good.clone();
    overlapping[128 + 17..128 + 25].copy_from_slice(&200i64.to_le_bytes());
    cases.push(("overlapping", overlapping, "outside the file's data"));
    let mut huge = good.clone();
    huge[88..96].copy_from_slice(&(1i64 << 40).to_le_bytes());
    cases.push(("huge", huge, "descriptors"));
    let mut not_squashfs = good.clone();
    not_squashfs[32768..32772].copy_from_slice(b"nope");
    cases.push(("not_squashfs", not_squashfs, "not a squashfs"));
    let mut no_partition = good;
    no_partition[128 + 4] = 0;
    cases.push(("no_partition", no_partition, "no squashfs system partition"));
    cases.push((
        "garbage",
        b"just some bytes".to_vec(),
        "not a squashfs or SIF file",
    ));
    for (name, bytes, needle) in cases {
        let p = s.user.home().join(format!("{name}.sif"));
        std::fs::write(&p, bytes).unwrap();
        s.user.give(&p);
        let out = s.run(&[p.to_str().unwrap(), "true"]);
        assert_eq!(out.code, 125, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{name}: {}", out.stderr);
    }
}
