//! `nook run` as an ordinary user: exit codes, the image's layers and config, users and id
//! maps, mounts and volumes, isolation (/proc, masked paths, capabilities, descriptors),
//! hostile images, signals and terminals. Every test ends by checking that no process and no
//! mount of it remain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::env::{Mode, Out};
use support::image::{Comp, LayerTar, busybox_base};
use support::sandbox::Sandbox;

#[test]
fn exit_codes_as_docker() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.run(&[&s.image, "echo", "hello"]);
    out.ok();
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(s.sh(&[], "exit 7").code, 7);
    s.run(&[&s.image, "nothere"])
        .fails_with(127, "executable file not found in $PATH");
    s.run(&[&s.image, "/etc/passwd"])
        .fails_with(126, "permission denied");
    s.run(&[&s.image, "/no/such/file"])
        .fails_with(127, "no such file or directory");
    s.nook(&["run", "--rm", "--rootfs-driver", "bogus", &s.image])
        .fails_with(125, "invalid value 'bogus' for '--rootfs-driver");
}

#[test]
fn the_image_layers_are_the_root() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let base = busybox_base()
        .file("etc/motd", b"hi", 0o644)
        .dir("opaque", 0o755)
        .file("opaque/lower", b"l", 0o644)
        .finish();
    let top = LayerTar::new()
        .whiteout("etc", "motd")
        .opaque("opaque")
        .file("opaque/upper", b"u", 0o644)
        .file("data/orig", b"x", 0o644)
        .hardlink("data/link", "data/orig")
        .symlink("data/sym", "/etc/passwd")
        .file_owned("data/owned", b"o", 0o640, 1234, 1234)
        .finish();
    let img = s.image_with(
        "layers",
        &[(base, Comp::Gzip), (top, Comp::Zstd)],
        json!({"Cmd": ["sh"]}),
    );
    for driver in ["overlay", "copy"] {
        let out = s.run(&["--rootfs-driver", driver, &img, "sh", "-c",
            "test ! -e /etc/motd && ls /opaque && stat -c %i /data/orig /data/link && readlink /data/sym && stat -c %u:%g /data/owned"]);
        out.ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines[0], "upper",
            "{driver}: opaque dir not applied: {}",
            out.stdout
        );
        assert_eq!(lines[1], lines[2], "{driver}: hard link lost");
        assert_eq!(lines[3], "/etc/passwd");
        assert_eq!(lines[4], "1234:1234", "{driver}: owner");
    }
}

#[test]
fn config_and_its_overrides() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let img = s.image_with(
        "cfg",
        &[(busybox_base().dir("srv", 0o755).finish(), Comp::Gzip)],
        json!({"Env": ["PATH=/bin:/usr/bin", "FOO=image"], "Entrypoint": ["/bin/echo", "entry"], "Cmd": ["cmd"], "WorkingDir": "/srv", "User": "user"}),
    );
    assert_eq!(s.run(&[&img]).stdout, "entry cmd\n");
    assert_eq!(s.run(&[&img, "x", "y"]).stdout, "entry x y\n");
    let script = "echo $FOO $HOME $HOSTNAME; pwd; id -u; id -g";
    let out = s.run(&["--entrypoint", "/bin/sh", &img, "-c", script]);
    out.ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert!(l[0].starts_with("image /home/user "), "{}", out.stdout);
    assert_eq!(&l[1..], ["/srv", "1234", "1234"]);
    let out = s.run(&[
        "--entrypoint",
        "/bin/sh",
        "-e",
        "FOO=flag",
        "-w",
        "/tmp",
        "-u",
        "0:0",
        "--hostname",
        "box",
        &img,
        "-c",
        script,
    ]);
    out.ok();
    assert_eq!(out.stdout, "flag /root box\n/tmp\n0\n0\n");
    let envfile = s.user.write_home("env.list", b"# comment\nBAR=from-file\n");
    let out = s.run(&[
        "--env-file",
        envfile.to_str().unwrap(),
        "--entrypoint",
        "",
        &img,
        "sh",
        "-c",
        "echo $BAR",
    ]);
    assert_eq!(out.stdout, "from-file\n");
    let out = s.sh(&["-u", "1234", "--group-add", "65534"], "id -u; id -G");
    out.ok();
    assert_eq!(out.stdout, "1234\n1234 65534\n");
    s.run(&["-u", "nobody-here", &s.image, "true"])
        .fails_with(125, "unable to find user nobody-here");
    s.run(&[&s.image.replace("bb", "absent"), "true"])
        .fails_with(125, "pulling");
}

#[test]
fn id_maps_in_range_single_and_keep_id_modes() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.sh(&[], "cat /proc/self/uid_map; id -u");
    out.ok();
    let start = s.user.subuid_start();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "0",
            &s.user.uid.to_string(),
            "1",
            "1",
            &start.to_string(),
            "65536",
            "0"
        ]
    );
    let keep = s.sh(&["--userns", "keep-id"], "id -u; id -g");
    keep.ok();
    assert_eq!(keep.stdout, format!("{}\n{}\n", s.user.uid, s.user.gid));
    drop(s);
    let Some(single) = Sandbox::new(Mode::Single) else {
        return;
    };
    let out = single.sh(&[], "cat /proc/self/uid_map; id -u");
    out.ok();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", &single.user.uid.to_string(), "1", "0"]
    );
    let keep = single.sh(&["--userns", "keep-id"], "id -u");
    assert_eq!(keep.stdout.trim(), single.user.uid.to_string());
    // The one id mapped is the user the command runs as (tests/idmap.rs has the rest).
    let user = single.sh(&["-u", "1234"], "id -u; cat /proc/self/uid_map");
    user.ok();
    assert_eq!(
        user.stdout.split_whitespace().collect::<Vec<_>>(),
        ["1234", "1234", &single.user.uid.to_string(), "1"]
    );
}

#[test]
fn keep_id_gives_the_user_a_passwd_entry_and_home() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(s.user.gid))
        .unwrap()
        .unwrap()
        .name;
    let home = s.user.home().display().to_string();
    let script = "whoami; id -gn; echo $HOME; grep -c \"^$(whoami):\" /etc/passwd";
    let out = s.nook(&[
        "run", "--name", "me", "--userns", "keep-id", &s.image, "sh", "-c", script,
    ]);
    out.ok();
    assert_eq!(
        out.stdout,
        format!("{}\n{group}\n{home}\n1\n", s.user.name),
        "{out:?}"
    );
    // The entry is the user's, with the image's root shell; a second start adds none.
    let again = s.nook(&["start", "-a", "me"]);
    again.ok();
    assert_eq!(again.stdout, out.stdout);
    let entry = s.sh(
        &["--userns", "keep-id"],
        &format!("grep '^{}:' /etc/passwd", s.user.name),
    );
    entry.ok();
    assert_eq!(
        entry.stdout,
        format!(
            "{}:x:{}:{}:{}:{home}:/bin/sh\n",
            s.user.name, s.user.uid, s.user.gid, s.user.name
        )
    );
    // A passwd of the user's own, mounted in, is not nook's to change.
    let theirs = s
        .user
        .write_home("mine/passwd", b"root:x:0:0::/root:/bin/sh\n");
    let bind = format!("{}:/etc/passwd", theirs.display());
    let out = s.sh(&["--userns", "keep-id", "-v", &bind], "echo $HOME");
    out.ok();
    assert_eq!(out.stdout, "/\n", "no entry, no home");
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    // exec finds the entry too.
    let sleep = format!("sleep 300; : {}", s.tag);
    s.nook(&[
        "run", "-d", "--name", "me2", "--userns", "keep-id", &s.image, "sh", "-c", &sleep,
    ])
    .ok();
    let exec = s.nook(&["exec", "me2", "sh", "-c", "whoami; echo $HOME"]);
    exec.ok();
    assert_eq!(exec.stdout, format!("{}\n{home}\n", s.user.name));
    s.nook(&["rm", "-f", "me2"]).ok();
    s.nook(&["rm", "me"]).ok();
    drop(s);
    // With one id mapped (nook's FUSE overlay and fakeroot) as well.
    let Some(single) = Sandbox::new(Mode::Single) else {
        return;
    };
    let out = single.sh(&["--userns", "keep-id"], "whoami; echo $HOME");
    out.ok();
    assert_eq!(
        out.stdout,
        format!("{}\n{}\n", single.user.name, single.user.home().display())
    );
}

/// `run -e` and `exec -e` merge the same way: later wins where the name stands, `NAME=` is
/// empty, `NAME` comes from nook's environment or is dropped, and a nameless entry fails.
#[test]
fn run_and_exec_merge_env_alike() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let img = s.image_with(
        "envmerge",
        &[(busybox_base().finish(), Comp::Gzip)],
        json!({"Env": ["PATH=/bin", "FOO=image", "BAR=image", "UNSET_ON_HOST=image"]}),
    );
    let flags = [
        "-e",
        "NEW=1",
        "-e",
        "FOO=",
        "-e",
        "BAR=x",
        "-e",
        "FROM_HOST",
        "-e",
        "UNSET_ON_HOST",
        "-e",
        "BAR=y",
    ];
    let with_host = |args: &[&str]| {
        s.user
            .run_env(args, &[("NOOK_TEST_TAG", &s.tag), ("FROM_HOST", "host")])
    };
    let ours = |out: &Out| -> Vec<String> {
        let names = ["FOO=", "BAR=", "UNSET_ON_HOST=", "NEW=", "FROM_HOST="];
        out.stdout
            .lines()
            .filter(|l| names.iter().any(|n| l.starts_with(n)))
            .map(str::to_owned)
            .collect()
    };
    let mut run = vec!["run", "--rm"];
    run.extend(flags);
    run.extend([img.as_str(), "env"]);
    let run = with_host(&run);
    run.ok();
    assert_eq!(
        ours(&run),
        // A bare name nook's environment lacks unsets the image's value, as docker does.
        ["FOO=", "BAR=y", "NEW=1", "FROM_HOST=host"],
        "{run:?}"
    );
    let sleep = format!("sleep 300; : {}", s.tag);
    s.nook(&["run", "-d", "--name", "envbox", &img, "sh", "-c", &sleep])
        .ok();
    let mut exec = vec!["exec"];
    exec.extend(flags);
    exec.extend(["envbox", "env"]);
    let exec = with_host(&exec);
    exec.ok();
    assert_eq!(ours(&exec), ours(&run), "{exec:?}");
    for bad in ["", "=x"] {
        s.nook(&["exec", "-e", bad, "envbox", "true"])
            .fails_with(125, "invalid environment variable");
        s.nook(&["run", "--rm", "-e", bad, &img, "true"])
            .fails_with(125, "invalid environment variable");
    }
    s.nook(&["rm", "-f", "envbox"]).ok();
}

/// Bad flag values fail before anything is made: `--pull` although the image is local,
/// and limits and log options at `create` rather than at `start`.
#[test]
fn bad_flags_fail_before_the_container_is_made() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.nook(&["run", "--rm", "--pull", "bogus", &s.image, "true"]);
    out.fails_with(125, "invalid value 'bogus' for '--pull");
    assert!(
        out.stderr.contains("missing, always, never"),
        "{}",
        out.stderr
    );
    for (flag, value) in [("--log-opt", "max-size=bogus"), ("--memory", "nonsense")] {
        let out = s.nook(&["create", "--name", "refused", flag, value, &s.image]);
        out.fails_with(125, &format!("invalid {flag} \"{value}\""));
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        let ps = s.nook(&["ps", "-a"]);
        ps.ok();
        assert!(!ps.stdout.contains("refused"), "{}", ps.stdout);
    }
}

#[test]
fn a_missing_image_is_one_error_line() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let missing = format!("{}/nosuchimage", s.reg.host);
    let out = s.nook(&["run", "--rm", &missing, "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].contains("nosuchimage"), "{}", out.stderr);
}

#[test]
fn volumes_tmpfs_and_read_only_root() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let host = s.user.work.path().join("vol");
    std::fs::create_dir(&host).unwrap();
    s.user.give(&host);
    std::fs::write(host.join("in"), b"from host").unwrap();
    let v = format!("{}:/data", host.display());
    let out = s.sh(&["-v", &v], "cat /data/in; echo written > /data/out");
    out.ok();
    assert_eq!(out.stdout, "from host");
    assert_eq!(std::fs::read(host.join("out")).unwrap(), b"written\n");
    let ro = format!("{}:/data:ro", host.display());
    s.sh(&["-v", &ro], "echo x > /data/nope")
        .fails_with(1, "Read-only file system");
    let m = format!("type=bind,source={},target=/m,readonly", host.display());
    s.sh(&["--mount", &m], "cat /m/in && ! touch /m/x").ok();
    s.sh(
        &["--tmpfs", "/scratch:size=1m"],
        "echo x > /scratch/f && grep -q '/scratch' /proc/mounts",
    )
    .ok();
    s.sh(&["--mount", "type=tmpfs,target=/t"], "touch /t/a")
        .ok();
    s.sh(&["--read-only"], "touch /newfile")
        .fails_with(1, "Read-only file system");
    s.sh(
        &["--read-only", "-v", &v],
        "touch /data/ok && touch /dev/shm/ok",
    )
    .ok();
    s.sh(&["-v", "./relative:/x"], "true")
        .fails_with(125, "invalid volume name");
}

#[test]
fn rm_leaves_nothing_and_records_stay_without_it() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let containers = s.user.store().join("containers");
    // A container that writes files as other users: their removal needs the range.
    s.sh(
        &[],
        "mkdir /d && touch /d/f && chown -R 4000:4000 /d && chmod 0 /d",
    )
    .ok();
    assert_eq!(
        std::fs::read_dir(&containers).unwrap().count(),
        0,
        "--rm left a container directory"
    );
    let out = s.nook(&["run", "--name", "kept", &s.image, "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3);
    let dirs: Vec<_> = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs[0].join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            rec["name"].as_str(),
            rec["state"].as_str(),
            rec["exit_code"].as_i64()
        ),
        (Some("kept"), Some("exited"), Some(3))
    );
    s.nook(&["run", "--name", "kept", &s.image, "true"])
        .fails_with(125, "already in use");
    // The image is in use now.
    s.nook(&["rmi", &s.image])
        .fails_with(1, "used by container");
}

#[test]
fn isolation_proc_masks_caps_and_descriptors() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.sh(
        &["--network", "none"],
        "echo $$; ls /proc | grep -c '^[0-9]'; hostname",
    );
    out.ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "1", "the command is pid 1");
    assert!(
        l[1].parse::<u32>().unwrap() <= 3,
        "/proc shows other processes: {}",
        out.stdout
    );
    assert_eq!(
        l[2].len(),
        12,
        "default hostname is the id's first 12 characters"
    );
    // Masked files read empty, masked directories list nothing (where this kernel has them).
    let out = s.sh(&[], "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do [ -e $f ] && wc -c < $f; done; \
        for d in /proc/acpi /proc/scsi /sys/firmware; do [ -d $d ] && ls $d | wc -l; done; \
        echo 1 > /proc/sysrq-trigger || echo ro; touch /proc/sys/x 2>/dev/null || echo ro2");
    out.ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(&words[words.len() - 2..], ["ro", "ro2"]);
    assert!(
        words.len() > 3 && words[..words.len() - 2].iter().all(|w| *w == "0"),
        "{}",
        out.stdout
    );
    let caps = |flags: &[&str]| {
        let out = s.sh(
            flags,
            "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
        );
        out.ok();
        out.stdout
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        caps(&[]),
        [
            "0000000000000000",
            "00000000a80425fb",
            "00000000a80425fb",
            "00000000a80425fb",
            "0000000000000000",
            "0"
        ]
    );
    assert_eq!(caps(&["--security-opt", "no-new-privileges"])[5], "1");
    assert_eq!(caps(&["--cap-drop", "ALL"])[2], "0000000000000000");
    let with_admin = u64::from_str_radix(
        &caps(&["--cap-add", "SYS_ADMIN", "--cap-drop", "CHOWN"])[2],
        16,
    )
    .unwrap();
    assert!(with_admin & (1 << 21) != 0 && with_admin & 1 == 0);
    let user = caps(&["-u", "1234"]);
    assert_eq!(
        (user[1].as_str(), user[2].as_str(), user[3].as_str()),
        ("0000000000000000", "0000000000000000", "00000000a80425fb")
    );
    // Two commands, so that the shell does not exec ls (which would list its own directory fd).
    let out = s.sh(&[], "ls /proc/$$/fd; true");
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "nook's descriptors reached the container"
    );
    s.sh(&["--ulimit", "nofile=100:200"], "test $(ulimit -n) = 100")
        .ok();
    // No nook process can be seen, so none of its binary can be reached through /proc/PID/exe.
    let out = s.sh(&[], "for p in /proc/[0-9]*; do readlink $p/exe; done");
    assert!(!out.stdout.contains("nook"), "{}", out.stdout);
}

#[test]
fn init_reaps_and_hides_its_binary() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.sh(
        &["--init"],
        "echo $$; readlink /proc/1/exe || echo hidden; (sleep 0.2 &); exit 5",
    );
    assert_eq!(out.code, 5);
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(l[0], "1", "with --init the command is not pid 1");
    assert_eq!(
        l[1], "hidden",
        "pid 1 (nook) must not be reachable through /proc/1/exe"
    );
    s.sh(&["--init", "--cap-add", "SYS_PTRACE"], "true")
        .fails_with(125, "CAP_SYS_PTRACE");
}

#[test]
fn hostile_images_mount_nothing_of_the_host() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let secret = s.user.work.path().join("host-secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("marker"), s.tag.as_bytes()).unwrap();
    s.user.give(&secret);
    let abs = secret.display().to_string();
    let up = "../../../../../../../../..";
    // Every mount destination is a symlink pointing at the host's directory or files.
    let evil = LayerTar::new()
        .symlink("dev", &format!("{up}{abs}/dev"))
        .symlink("proc", &format!("{abs}/proc"))
        .symlink("sys", &format!("{abs}/../host-secret/sys"))
        .symlink("etc/hosts", &format!("{up}/etc/shadow"))
        .symlink("etc/hostname", &format!("{abs}/marker"))
        .symlink("data", &format!("{abs}/datadir"))
        .finish();
    let img = s.image_over_busybox("evil", evil, json!({"Cmd": ["sh"]}));
    let vol = s.user.work.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("volfile"), b"v").unwrap();
    s.user.give(&vol);
    let v = format!("{}:/data", vol.display());
    // Any file named like the host's marker, anywhere but the kernel's trees, must not hold it.
    let script = format!(
        "for f in $(find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -name marker -print); do grep -l {} $f; done; \
         cat /etc/hosts | head -1; ls /data",
        s.tag
    );
    let out = s.run(&["-v", &v, &img, "sh", "-c", &script]);
    out.ok();
    assert!(
        !out.stdout.contains("marker"),
        "a host path reached the container: {}",
        out.stdout
    );
    assert!(out.stdout.contains("localhost"), "{}", out.stdout);
    assert!(
        out.stdout.contains("volfile"),
        "the volume is mounted inside the root: {}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_dir(&secret).unwrap().count(),
        1,
        "the host directory was written to"
    );
    assert_eq!(
        std::fs::read(secret.join("marker")).unwrap(),
        s.tag.as_bytes()
    );
    // /etc/passwd linked to /dev/zero or a FIFO: user lookup must end, quickly, in an error.
    let zero = LayerTar::new().symlink("etc/passwd", "/dev/zero").finish();
    let img = s.image_over_busybox("zero", zero, json!({"Cmd": ["sh"]}));
    let t = Instant::now();
    s.run(&["-u", "user", &img, "true"])
        .fails_with(125, "unable to find user user");
    assert!(t.elapsed() < Duration::from_secs(10));
    s.run(&[&img, "true"]).ok();
}

#[test]
fn sigterm_reaches_a_trapping_container() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let script = format!(
        "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done; : {}",
        s.tag
    );
    let mut child = s.user.nook(&["run", "--rm", &s.image, "sh", "-c", &script]);
    child.env("NOOK_TEST_TAG", &s.tag);
    let mut child = child.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn killing_nook_takes_the_container_with_it() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let script = format!("echo up; sleep 1000; : {}", s.tag);
    let mut cmd = s.user.nook(&["run", &s.image, "sh", "-c", &script]);
    cmd.env("NOOK_TEST_TAG", &s.tag);
    let mut child = cmd.spawn().unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut up).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // Drop checks that the container's processes are gone too.
}

#[test]
fn stdin_only_with_dash_i() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.user.run_input(
        &["run", "--rm", "-i", &s.image, "cat"],
        &[("NOOK_TEST_TAG", &s.tag)],
        b"piped\n",
    );
    out.ok();
    assert_eq!(out.stdout, "piped\n");
    let out = s.user.run_input(
        &["run", "--rm", &s.image, "cat"],
        &[("NOOK_TEST_TAG", &s.tag)],
        b"ignored\n",
    );
    out.ok();
    assert_eq!(out.stdout, "");
}

#[test]
fn tty_through_a_real_pty() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    if !Path::new("/usr/bin/script").exists() {
        support::skip("script(1) from util-linux is needed to give nook a terminal");
        return;
    }
    let out = support::sandbox::under_pty(
        &s,
        &format!(
            "run --rm -t {} sh -c 'tty; test -t 0 && echo is-a-tty; echo $TERM'",
            s.image
        ),
    );
    out.ok();
    assert!(out.stdout.contains("/dev/pts/0"), "{}", out.stdout);
    assert!(out.stdout.contains("is-a-tty"), "{}", out.stdout);
    assert!(
        out.stdout.contains("xterm"),
        "TERM inside is docker's default: {}",
        out.stdout
    );
    // The terminal's size is the container's from its first instruction, for run and exec
    // alike (exec once set it only after the command had started: `stty size` saw 0x0).
    s.nook(&["run", "-d", "--name", "ttybox", &s.image, "sleep", "60"])
        .ok();
    let out = support::sandbox::under_pty_sh(
        &s,
        &format!(
            "stty rows 33 cols 77; $NOOK run --rm -t {} busybox stty size; \
             for i in $(seq 30); do $NOOK exec -t ttybox busybox stty size; done",
            s.image
        ),
    );
    out.ok();
    let sizes: Vec<&str> = out
        .stdout
        .split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(sizes, ["33 77"; 31], "{out:?}");
    s.nook(&["rm", "-f", "ttybox"]).ok();
}

#[test]
fn cgroup_flags_fail_clearly_without_delegation() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.sh(&["--memory", "64m"], "true");
    if nook::container::cgroup::delegated_dir().is_ok() {
        out.ok();
    } else {
        out.fails_with(125, "need a delegated cgroup v2 subtree");
    }
    s.sh(&["--memory", "lots"], "true")
        .fails_with(125, "invalid --memory");
}

#[test]
fn info_reports_every_rung() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let out = s.nook(&["info", "--format", "json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["rungs"]["ids"], "subordinate range (newuidmap/newgidmap)");
    assert!(
        v["rungs"]["rootfs"]
            .as_str()
            .unwrap()
            .starts_with("overlay")
    );
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "user namespaces allowed",
        "subordinate id range",
        "newuidmap/newgidmap",
        "kernel overlayfs in a user namespace",
        "/dev/fuse usable",
        "pasta",
        "slirp4netns",
        "delegated cgroup v2",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let text = s.nook(&["doctor"]);
    text.ok();
    assert!(text.stdout.contains("rootfs:"));
}
