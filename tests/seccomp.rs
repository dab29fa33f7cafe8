//! docker's default seccomp profile on every container, as the unprivileged test users: the
//! calls docker refuses fail with EPERM (tests/support/scprobe.c tries each), ordinary
//! programs run unchanged, `--cap-add SYS_ADMIN` lifts the capability-dependent rules,
//! `seccomp=unconfined` turns the profile off, a custom profile takes effect, and `inspect`
//! and `info` say which profile is in force.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use support::env::{Mode, Out};
use support::sandbox::{Sandbox, assert_posix_cases, probe_dir};

/// docker's default profile, as nook embeds it.
const DEFAULT_PROFILE: &str = include_str!("../src/sandbox/seccomp/default.json");

/// The calls docker's default profile refuses without extra capabilities.
const DOCKER_BLOCKS: &[&str] = &[
    "keyctl",
    "add_key",
    "kexec_load",
    "open_by_handle_at",
    "unshare_user",
    "unshare_mount",
    "mount",
    "socket_vsock",
    "personality_bsd",
];

/// `nook run --rm --network none -v PROBES:/probe:ro FLAGS IMAGE ARGS`.
fn run_with_probes(s: &Sandbox, flags: &[&str], args: &[&str]) -> Out {
    let dir = probe_dir().expect("probes");
    let vol = format!("{}:/probe:ro", dir.display());
    let mut all = vec!["--network", "none", "-v", &vol];
    all.extend_from_slice(flags);
    all.push(&s.image);
    all.extend_from_slice(args);
    s.run(&all)
}

/// scprobe's "NAME ERRNO" lines.
fn probe(s: &Sandbox, flags: &[&str]) -> BTreeMap<String, String> {
    let out = run_with_probes(s, flags, &["/probe/scprobe"]);
    out.ok();
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn setup(mode: Mode) -> Option<Sandbox> {
    let s = Sandbox::new(mode)?;
    probe_dir()?;
    Some(s)
}

fn filters(r: &BTreeMap<String, String>) -> u32 {
    r["filters"].parse().unwrap()
}

/// A profile file the test user can read.
fn profile_file(s: &Sandbox, name: &str, profile: &serde_json::Value) -> String {
    let p = s.user.write_home(
        &format!("profiles/{name}.json"),
        profile.to_string().as_bytes(),
    );
    p.display().to_string()
}

fn default_profile_in(mode: Mode) {
    let Some(s) = setup(mode) else {
        return;
    };
    let confined = probe(&s, &[]);
    for call in DOCKER_BLOCKS {
        assert_eq!(confined[*call], "EPERM", "{call} under the default profile");
    }
    assert_eq!(
        confined["clone3"], "ENOSYS",
        "clone3: libc falls back to clone"
    );
    assert_eq!(confined["socket_unix"], "success");
    assert_eq!(confined["personality_query"], "success");

    let free = probe(&s, &["--security-opt", "seccomp=unconfined"]);
    assert_eq!(filters(&confined), filters(&free) + 1, "one filter more");
    // What the kernel itself allows an unprivileged container root.
    for call in [
        "keyctl",
        "add_key",
        "unshare_user",
        "socket_vsock",
        "personality_bsd",
    ] {
        assert_ne!(free[call], "EPERM", "{call} unconfined");
    }
    assert_ne!(free["clone3"], "ENOSYS");

    // CAP_SYS_ADMIN opens mount, unshare and clone3 (docker's capability rules).
    let admin = probe(&s, &["--cap-add", "SYS_ADMIN"]);
    for call in ["mount", "unshare_mount", "unshare_user"] {
        assert_eq!(admin[call], "success", "{call} with SYS_ADMIN");
    }
    assert_ne!(admin["clone3"], "ENOSYS");
    assert_eq!(admin["kexec_load"], "EPERM");

    busybox_runs_unchanged(&s, mode);
    exec_gets_the_profile(&s);
}

#[test]
fn default_profile_under_a_subordinate_range() {
    default_profile_in(Mode::Range);
}

#[test]
fn default_profile_under_a_single_mapping() {
    default_profile_in(Mode::Single);
}

/// Applets across the board, and (with a subordinate range) fsprobe's conformance cases
/// (chown, mknod, xattrs, setuid, links, sockets...), under the default profile.
fn busybox_runs_unchanged(s: &Sandbox, mode: Mode) {
    let script = "set -e; cd /tmp; mkdir -p a/b; echo hi > a/f; busybox cp a/f a/b/g; \
        ln -s f a/l; busybox tar -cf t.tar a; mkdir x; busybox tar -xf t.tar -C x; \
        busybox gzip -c t.tar > t.gz; busybox gunzip -c t.gz | busybox tar -t | sort | head -1; \
        find x -type f | sort | tr '\\n' ' '; echo; sed s/hi/ho/ a/f; \
        busybox awk 'BEGIN { print 6 * 7 }'; chown 0:0 a/f; chmod 600 a/f; \
        stat -c %u:%a a/f; mkfifo p; (echo piped > p &); cat p; \
        busybox timeout 5 sleep 0; ps -o pid | wc -l > /dev/null; \
        busybox md5sum a/b/g | cut -c1-8; echo done";
    let out = s.sh(&["--network", "none"], script);
    out.ok();
    assert_eq!(
        out.stdout,
        "a/\nx/a/b/g x/a/f \nho\n42\n0:600\npiped\n764efa88\ndone\n"
    );
    if mode != Mode::Range {
        // fsprobe's permission cases need more than one id mapped.
        return;
    }
    let out = run_with_probes(s, &[], &["/probe/fsprobe", "posix", "/posix"]);
    assert_posix_cases(&out, "under the default profile");
}

/// `nook exec` processes get the container's filter too.
fn exec_gets_the_profile(s: &Sandbox) {
    let dir = probe_dir().expect("probes");
    let vol = format!("{}:/probe:ro", dir.display());
    let script = format!("sleep 300; : {}", s.tag);
    let name = format!("sc{}", support::sandbox::rand_suffix());
    s.nook(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "-v",
        &vol,
        &s.image,
        "sh",
        "-c",
        &script,
    ])
    .ok();
    let out = s.nook(&["exec", &name, "/probe/scprobe"]);
    s.nook(&["rm", "-f", &name]).ok();
    out.ok();
    assert!(out.stdout.contains("keyctl EPERM\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("unshare_user EPERM\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_profile_not_the_kernel_refuses_them() {
    // Where the kernel would answer EPERM anyway, a profile answering EOPNOTSUPP shows that
    // the call never reached it.
    let Some(s) = setup(Mode::Range) else {
        return;
    };
    let mut profile: serde_json::Value = serde_json::from_str(DEFAULT_PROFILE).unwrap();
    profile["defaultErrnoRet"] = 95.into();
    let path = profile_file(&s, "eopnotsupp", &profile);
    let r = probe(&s, &["--security-opt", &format!("seccomp={path}")]);
    for call in DOCKER_BLOCKS {
        assert_eq!(r[*call], "EOPNOTSUPP", "{call}");
    }
    assert_eq!(r["socket_unix"], "success");
}

#[test]
fn a_custom_profile_denying_mkdir() {
    let Some(s) = setup(Mode::Range) else {
        return;
    };
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    });
    let path = profile_file(&s, "nomkdir", &profile);
    let opt = format!("seccomp={path}");
    let out = s.sh(
        &["--network", "none", "--security-opt", &opt],
        "touch /tmp/file && echo touched; mkdir /tmp/dir; echo $?",
    );
    out.ok();
    assert_eq!(out.stdout, "touched\n1\n");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.stderr
    );
    // The profile allows what docker's refuses.
    let r = probe(&s, &["--security-opt", &opt]);
    assert_ne!(r["keyctl"], "EPERM");

    // A profile that is not one: a one-line error, at run and at create.
    let bad = s
        .user
        .write_home("profiles/bad.json", b"{\"defaultAction\": 3}");
    let bad_opt = format!("seccomp={}", bad.display());
    for verb in ["run", "create"] {
        let out = s.nook(&[verb, "--security-opt", &bad_opt, &s.image, "true"]);
        assert_eq!(out.code, 125, "{verb}: {}", out.stderr);
        assert!(
            out.stderr.contains("seccomp") && out.stderr.trim().lines().count() == 1,
            "{verb}: {}",
            out.stderr
        );
    }
    let out = s.nook(&[
        "run",
        "--security-opt",
        "seccomp=/no/such.json",
        &s.image,
        "true",
    ]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("/no/such.json"), "{}", out.stderr);
}

#[test]
fn inspect_and_info_say_which_profile() {
    let Some(s) = setup(Mode::Range) else {
        return;
    };
    let host_config = |flags: &[&str]| {
        let name = format!("sc{}", support::sandbox::rand_suffix());
        let mut args = vec!["run", "--name", &name, "--network", "none"];
        args.extend_from_slice(flags);
        args.extend([s.image.as_str(), "true"]);
        s.nook(&args).ok();
        let out = s.nook(&["inspect", &name]);
        s.nook(&["rm", &name]).ok();
        out.ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v[0]["HostConfig"].clone()
    };
    let h = host_config(&[]);
    assert_eq!(h["Seccomp"], "default");
    assert!(h["SecurityOpt"].is_null());
    let h = host_config(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(h["Seccomp"], "unconfined");
    assert_eq!(h["SecurityOpt"], serde_json::json!(["seccomp=unconfined"]));
    let info = s.nook(&["info"]);
    info.ok();
    assert!(
        info.stdout
            .lines()
            .any(|l| l.starts_with("seccomp:") && l.contains("default")),
        "{}",
        info.stdout
    );
}

/// The host's own compiler and dpkg (its /usr and dpkg database mounted read-only into a
/// busybox container) work under the default profile, in both id modes: real programs, not
/// only busybox's applets, meet no refused call.
#[test]
fn a_compiler_and_dpkg_run_under_the_default_profile() {
    for p in ["/usr/bin/gcc", "/usr/bin/dpkg", "/var/lib/dpkg/status"] {
        if !std::path::Path::new(p).exists() {
            support::skip(&format!("{p} is missing (scripts/setup.sh installs gcc)"));
            return;
        }
    }
    for mode in [Mode::Range, Mode::Single] {
        let Some(s) = Sandbox::new(mode) else {
            continue;
        };
        let script = "set -e
            printf '#include <stdio.h>\\nint main(void){puts(\"compiled\");return 0;}\\n' >/tmp/c.c
            gcc -O1 -o /tmp/c /tmp/c.c
            /tmp/c
            /usr/bin/dpkg -s dpkg | grep -q '^Status: install ok installed'
            echo dpkg-ok";
        let out = s.run(&[
            "--network",
            "none",
            "-e",
            "PATH=/bin:/usr/bin",
            "-v",
            "/usr:/usr:ro",
            // The loader's absolute links point into /lib (merged /usr on Debian).
            "-v",
            "/lib:/lib:ro",
            "-v",
            "/lib64:/lib64:ro",
            "-v",
            "/var/lib/dpkg:/var/lib/dpkg:ro",
            &s.image,
            "sh",
            "-c",
            script,
        ]);
        out.ok();
        assert_eq!(
            out.stdout.lines().collect::<Vec<_>>(),
            ["compiled", "dpkg-ok"],
            "{mode:?}: {}",
            out.stderr
        );
    }
}
