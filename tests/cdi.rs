//! Devices through the Container Device Interface, in both id modes: fake CDI specs (JSON and
//! YAML, cdiVersion 0.5.0 to 0.8.0) in the user's home, with the host's /dev/null and
//! /dev/zero standing in for device nodes, a file standing in for a driver library, and
//! hooks that write markers (one into the container's root through the bundle, as
//! `nvidia-ctk hook update-ldcache` finds it). `--gpus` against a fake `nvidia.com/gpu`
//! spec (named by the config file's `[cdi] spec_dirs`), and the errors a user can cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::env::Mode;
use support::in_both_modes;
use support::sandbox::Sandbox;

in_both_modes!(
    cdi_devices_bring_nodes_mounts_env_and_hooks,
    gpus_map_to_the_nvidia_spec,
    device_errors_are_clear,
    gpu_check_script_with_stand_ins,
);

/// The hook that finds the container's root as nvidia-ctk's hooks do (state on stdin → the
/// bundle's config.json → root.path) and writes a marker there.
const ROOT_HOOK: &str = r#"#!/bin/sh
state=$(cat)
bundle=$(echo "$state" | sed -n 's/.*"bundle":"\([^"]*\)".*/\1/p')
root=$(sed -n 's/.*"root":{"path":"\([^"]*\)".*/\1/p' "$bundle/config.json")
echo "created $HOOK_WORD" > "$root/etc/cdi-hook-marker"
"#;

fn write_script(s: &Sandbox, rel: &str, text: &str) -> String {
    let p = s.user.write_home(rel, text.as_bytes());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// `example.com/gpu` in JSON (0.5.0) and `example.com/fpga` in YAML (0.8.0), with a library,
/// environment and hooks.
fn fake_specs(s: &Sandbox) -> String {
    let lib = s
        .user
        .write_home("driver/libfake.so.1", b"fake driver library\n");
    let hook = write_script(s, "driver/root-hook.sh", ROOT_HOOK);
    let json = serde_json::json!({
        "cdiVersion": "0.5.0",
        "kind": "example.com/gpu",
        "containerEdits": {
            "env": ["FAKE_DRIVER=1"],
            "mounts": [{"hostPath": lib, "containerPath": "/usr/lib/libfake.so.1",
                        "options": ["ro", "nosuid", "nodev", "bind"]}],
            "hooks": [{"hookName": "createContainer", "path": hook,
                       "env": ["PATH=/usr/bin:/bin", "HOOK_WORD=by-bundle"], "timeout": 30}]
        },
        "devices": [
            {"name": "0", "containerEdits": {
                "env": ["FAKE_GPU=0"],
                "deviceNodes": [{"path": "/dev/fakegpu0", "hostPath": "/dev/null",
                                 "type": "c", "major": 1, "minor": 3, "permissions": "rw"}]}},
            {"name": "1", "containerEdits": {
                "deviceNodes": [{"path": "/dev/fakegpu1", "hostPath": "/dev/zero"}]}}
        ]
    });
    s.user
        .write_home("cdi/gpu.json", json.to_string().as_bytes());
    let yaml = "\
cdiVersion: 0.8.0
kind: example.com/fpga
annotations: {vendor: example}
devices:
  - name: board-a
    annotations: {slot: '1'}
    containerEdits:
      deviceNodes:
        - path: /dev/fpga/a
          hostPath: /dev/zero
      hooks:
        - hookName: startContainer
          path: /bin/sh
          args: [sh, -c, 'echo started > /tmp/started-marker']
";
    s.user.write_home("cdi/fpga.yaml", yaml.as_bytes());
    s.user.home().join("cdi").display().to_string()
}

/// A directory in the user's home holding copies of /dev/null and /dev/zero (`a`, `sub/b`),
/// made by the suite (root); `None` where it cannot mknod.
fn stand_in_nodes(s: &Sandbox) -> Option<String> {
    use nix::sys::stat::{Mode as Perm, SFlag, makedev, mknod};
    let dir = s.user.home().join("nodes");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let perm = Perm::from_bits_truncate(0o666);
    mknod(&dir.join("a"), SFlag::S_IFCHR, perm, makedev(1, 3)).ok()?;
    mknod(&dir.join("sub/b"), SFlag::S_IFCHR, perm, makedev(1, 5)).ok()?;
    for p in [
        dir.join("sub/b"),
        dir.join("sub"),
        dir.join("a"),
        dir.clone(),
    ] {
        s.user.give(&p);
    }
    Some(dir.display().to_string())
}

fn cdi_devices_bring_nodes_mounts_env_and_hooks(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let dir = fake_specs(&s);
    let script = "stat -c '%n %F %t:%T' /dev/fakegpu0 /dev/fakegpu1 /dev/fpga/a /dev/myzero; \
                  cat /usr/lib/libfake.so.1; echo \"env $FAKE_DRIVER $FAKE_GPU\"; \
                  cat /etc/cdi-hook-marker /tmp/started-marker; \
                  echo x > /usr/lib/libfake.so.1 || echo read-only";
    let out = s.sh(
        &[
            "--cdi-spec-dir",
            &dir,
            "--device",
            "example.com/gpu=all",
            "--device",
            "example.com/fpga=board-a",
            "--device",
            "/dev/zero:/dev/myzero:rw",
        ],
        script,
    );
    out.ok();
    for want in [
        "/dev/fakegpu0 character special file 1:3",
        "/dev/fakegpu1 character special file 1:5",
        "/dev/fpga/a character special file 1:5",
        "/dev/myzero character special file 1:5",
        "fake driver library",
        "env 1 0",
        "created by-bundle",
        "started",
        "read-only",
    ] {
        assert!(
            out.stdout.contains(want),
            "{want:?} missing:\n{}",
            out.stdout
        );
    }
    // The hooks and nodes on the other rungs of the rootfs ladder too.
    for rung in ["fuse", "copy"] {
        let out = s.sh(
            &[
                "--rootfs-driver",
                rung,
                "--cdi-spec-dir",
                &dir,
                "--device",
                "example.com/gpu=0",
                "--device",
                "example.com/fpga=board-a",
            ],
            "stat -c '%t:%T' /dev/fakegpu0; cat /etc/cdi-hook-marker /tmp/started-marker",
        );
        if out.code != 0 && out.stderr.contains("not available") {
            support::skip(&format!("rootfs driver {rung}: {}", out.stderr));
            continue;
        }
        assert_eq!(
            out.ok().stdout,
            "1:3\ncreated by-bundle\nstarted\n",
            "--rootfs-driver {rung}"
        );
    }
    // A directory brings the nodes below it (as --device /dev/dri does).
    match stand_in_nodes(&s) {
        Some(nodes) => {
            let out = s.sh(
                &["--device", &format!("{nodes}:/dev/stand")],
                "stat -c '%n %t:%T' /dev/stand/a /dev/stand/sub/b",
            );
            assert_eq!(out.ok().stdout, "/dev/stand/a 1:3\n/dev/stand/sub/b 1:5\n");
        }
        None => support::skip("mknod needs the suite to run as root"),
    }
    // One device alone brings its node and the spec's edits, not the other device's.
    let out = s.sh(
        &["--cdi-spec-dir", &dir, "--device", "example.com/gpu=1"],
        "ls /dev; echo \"env ${FAKE_DRIVER:-} ${FAKE_GPU:-unset}\"",
    );
    out.ok();
    assert!(out.stdout.contains("fakegpu1"), "{}", out.stdout);
    assert!(!out.stdout.contains("fakegpu0"), "{}", out.stdout);
    assert!(out.stdout.contains("env 1 unset"), "{}", out.stdout);
    // -e has the last word over a device's environment.
    let out = s.sh(
        &[
            "--cdi-spec-dir",
            &dir,
            "--device",
            "example.com/gpu=0",
            "-e",
            "FAKE_GPU=mine",
        ],
        "echo $FAKE_GPU",
    );
    assert_eq!(out.ok().stdout.trim(), "mine");
    // create records the flags; start reads the specs again.
    let name = format!("cdi{}", support::sandbox::rand_suffix());
    let args = [
        "create",
        "--name",
        &name,
        "--cdi-spec-dir",
        &dir,
        "--device",
        "example.com/gpu=0",
        &s.image,
        "sh",
        "-c",
        "stat -c '%t:%T' /dev/fakegpu0",
    ];
    s.nook(&args).ok();
    let out = s.nook(&["start", "-a", &name]);
    assert_eq!(out.ok().stdout.trim(), "1:3");
    s.nook(&["rm", &name]).ok();
}

fn gpus_map_to_the_nvidia_spec(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let empty = s.user.home().join("empty-cdi");
    std::fs::create_dir_all(&empty).unwrap();
    s.user.give(&empty);
    let out = s.sh(
        &[
            "--cdi-spec-dir",
            &empty.display().to_string(),
            "--gpus",
            "all",
        ],
        "true",
    );
    out.fails_with(125, "nvidia.com/gpu");
    assert!(
        out.stderr.contains("nvidia-ctk cdi generate"),
        "{}",
        out.stderr
    );

    let nvidia = "\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
devices:
  - name: '0'
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]
  - name: GPU-4d2c1e6a-0000-1111-2222-333344445555
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]
  - name: '1'
    containerEdits:
      deviceNodes: [{path: /dev/nvidia1, hostPath: /dev/zero}]
  - name: all
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia0, hostPath: /dev/null}
        - {path: /dev/nvidia1, hostPath: /dev/zero}
";
    s.user.write_home("site-cdi/nvidia.yaml", nvidia.as_bytes());
    let site = s.user.home().join("site-cdi");
    s.user.write_home(
        ".config/nook/config.toml",
        format!("[cdi]\nspec_dirs = [{:?}]\n", site.display().to_string()).as_bytes(),
    );
    let ls = "ls /dev | grep nvidia | tr '\\n' ' '; echo $NVIDIA_VISIBLE_DEVICES";
    for (gpus, want) in [
        ("all", "nvidia0 nvidia1 void"),
        ("1", "nvidia0 void"),
        ("2", "nvidia0 nvidia1 void"),
        ("\"device=1\"", "nvidia1 void"),
        (
            "device=GPU-4d2c1e6a-0000-1111-2222-333344445555",
            "nvidia0 void",
        ),
    ] {
        let out = s.sh(&["--gpus", gpus], ls);
        assert_eq!(out.ok().stdout.trim(), want, "--gpus {gpus}");
    }
    // docker's CLI through nook serve: --gpus and CDI names arrive as DeviceRequests, host
    // nodes as Devices.
    let srv = support::serve::Server::start(&s);
    let out = srv.ok(
        &s,
        &["run", "--rm", "--gpus", "all", &s.image, "sh", "-c", ls],
    );
    assert_eq!(out.trim(), "nvidia0 nvidia1 void");
    let only = "ls /dev | grep -e nvidia -e myzero | tr '\\n' ' '";
    let args = [
        "run",
        "--rm",
        "--device",
        "nvidia.com/gpu=1",
        "--device",
        "/dev/zero:/dev/myzero",
        &s.image,
        "sh",
        "-c",
        only,
    ];
    assert_eq!(srv.ok(&s, &args).trim(), "myzero nvidia1");
    let out = srv.docker(
        &s,
        &["run", "--rm", "--device", "nvidia.com/gpu=7", &s.image],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("unknown CDI device nvidia.com/gpu=7"),
        "{}",
        out.stderr
    );
    s.sh(&["--gpus", "3"], "true")
        .fails_with(125, "more GPUs than");
    s.sh(&["--gpus", "device=7"], "true")
        .fails_with(125, "unknown CDI device nvidia.com/gpu=7");
}

fn device_errors_are_clear(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let dir = fake_specs(&s);
    let run = |device: &str| s.sh(&["--cdi-spec-dir", &dir, "--device", device], "echo ran");
    run("example.com/gpu=9").fails_with(125, "unknown CDI device example.com/gpu=9");
    run("example.com/none=0").fails_with(125, "unknown CDI device");
    s.sh(&["--device", "gpu0"], "true")
        .fails_with(125, "invalid --device \"gpu0\"");
    s.sh(&["--device", "/dev/null:/etc/passwd"], "true")
        .fails_with(125, "invalid --device");
    s.sh(&["--gpus", "lots"], "true")
        .fails_with(125, "invalid --gpus");

    let broken = |file: &str, text: &str| {
        s.user.write_home(&format!("cdi/{file}"), text.as_bytes());
    };
    // A broken spec is named when its device is asked for; the others still work.
    broken("broken.json", "{\"cdiVersion\": \"0.5.0\", \"kind\": ");
    run("example.com/broken=0").fails_with(125, "broken.json");
    run("example.com/gpu=0").ok();
    broken(
        "old.yaml",
        "cdiVersion: 0.1.0\nkind: example.com/old\ndevices: [{name: a}]\n",
    );
    run("example.com/old=a").fails_with(125, "cdiVersion");
    broken(
        "escape.yaml",
        "cdiVersion: 0.6.0\nkind: example.com/esc\ndevices:\n  - name: a\n    containerEdits:\n      deviceNodes: [{path: /etc/shadow, hostPath: /dev/null}]\n",
    );
    run("example.com/esc=a").fails_with(125, "not below /dev");
    broken(
        "missing.yaml",
        "cdiVersion: 0.7.0\nkind: example.com/gone\ndevices:\n  - name: a\n    containerEdits:\n      deviceNodes: [{path: /dev/gone0, hostPath: /dev/nook-missing-node}]\n",
    );
    run("example.com/gone=a").fails_with(125, "/dev/nook-missing-node does not exist");
    let failing = write_script(
        &s,
        "driver/fail.sh",
        "#!/bin/sh\necho 'ldconfig: cannot write cache' >&2\nexit 4\n",
    );
    broken(
        "hookfail.yaml",
        &format!(
            "cdiVersion: 0.8.0\nkind: example.com/hook\ndevices:\n  - name: a\n    containerEdits:\n      hooks: [{{hookName: createContainer, path: {failing}}}]\n"
        ),
    );
    let out = run("example.com/hook=a");
    out.fails_with(125, "ldconfig: cannot write cache");
    assert!(!out.stdout.contains("ran"), "{}", out.stdout);
    assert!(Path::new(&failing).exists());
}

/// scripts/gpu-check.sh (the device check for a machine with GPUs) where nvidia-ctk is absent:
/// the spec it makes by hand from stand-ins for /dev/nvidia0, /dev/nvidia1, /dev/nvidiactl and
/// nvidia-smi (a script that lists the GPU nodes it sees) gives `nook run --gpus all IMAGE
/// nvidia-smi -L` both GPUs and the control node, run as the test user.
fn gpu_check_script_with_stand_ins(mode: Mode) {
    use nix::sys::stat::{Mode as Perm, SFlag, makedev, mknod};
    let Some(s) = Sandbox::new(mode) else { return };
    let dev = s.user.home().join("gpudev");
    std::fs::create_dir_all(&dev).unwrap();
    for (name, minor) in [("nvidia0", 3), ("nvidia1", 5), ("nvidiactl", 3)] {
        let perm = Perm::from_bits_truncate(0o666);
        if let Err(e) = mknod(&dev.join(name), SFlag::S_IFCHR, perm, makedev(1, minor)) {
            support::skip(&format!("cannot make stand-in device nodes: {e}"));
            return;
        }
    }
    s.user.give(&dev);
    let smi = s.user.write_home(
        "nvidia-smi",
        concat!(
            "#!/bin/sh\nfor d in /dev/nvidia[0-9]*; do\n",
            "  echo \"GPU ${d#/dev/nvidia}: stand-in $(stat -c %t:%T $d)\"\ndone\n",
            "test -c /dev/nvidiactl && echo control\n"
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = s.user.write_home(
        "gpu-check.sh",
        include_str!("../scripts/gpu-check.sh").as_bytes(),
    );
    let out: support::env::Out = s
        .user
        .command(Path::new("/bin/sh"))
        .arg(&script)
        .arg(&s.user.bin)
        .arg(&s.image)
        .env("GPU_DEV", &dev)
        .env("NVIDIA_SMI", &smi)
        .env("NOOK_TEST_TAG", &s.tag)
        .output()
        .unwrap()
        .into();
    let text = format!("{out:?}");
    assert!(out.stdout.contains(r#""kind":"nvidia.com/gpu""#), "{text}");
    assert!(
        out.stdout
            .contains("GPU 0: stand-in 1:3\nGPU 1: stand-in 1:5\ncontrol\n"),
        "{text}"
    );
    assert_eq!(out.code, 0, "{text}");
}
