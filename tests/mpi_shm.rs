//! `--pid host` and OpenMPI's shared memory transport (vader) between the ranks' containers.
//!
//! A container in the host's pid namespace sees the host's processes in its /proc (the host's,
//! bound in, with docker's masked paths still masked) and leaves none of its own behind when
//! it ends (`nook rm -f`, or its command's exit): nook ends every process of the container's
//! user namespace, orphans and `nook exec` processes too. With the host's pid and ipc
//! namespaces, four ranks under `mpirun` run an allreduce over vader alone
//! (`OMPI_MCA_btl=self,vader`: no other transport is left), in both models and id modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::path::Path;

use support::env::{Mode, Out, User, assert_no_leftovers};
use support::mpi::{BIND_VOLUMES, material};
use support::sandbox::Sandbox;

in_both_modes!(
    host_pid_sees_the_hosts_processes_and_keeps_proc_masked,
    rm_f_ends_every_process_of_the_container,
    the_end_of_the_command_ends_its_orphans,
    vader_between_containers_hybrid,
    vader_between_containers_bind,
);

fn host_pid_sees_the_hosts_processes_and_keeps_proc_masked(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let me = std::process::id();
    let script = format!(
        "test -d /proc/{me} && echo sees-test; wc -c < /proc/keys; \
         grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6"
    );
    let out = s.sh(&["--pid", "host"], &script);
    out.ok();
    assert_eq!(
        out.stdout,
        "sees-test\n0\nro,nosuid,nodev,noexec,relatime\n"
    );
    // Its own pid namespace (the default) hides them.
    let out = s.sh(&[], &format!("test -d /proc/{me} || echo hidden"));
    assert_eq!(out.stdout, "hidden\n", "{out:?}");
    s.nook(&["run", "--rm", "--pid", "container:x", &s.image, "true"])
        .fails_with(125, "use --pid host");
    s.nook(&[
        "run",
        "--rm",
        "--pid",
        "host",
        "--cap-add",
        "SYS_PTRACE",
        &s.image,
        "true",
    ])
    .fails_with(125, "cannot be combined with CAP_SYS_PTRACE");
}

fn rm_f_ends_every_process_of_the_container(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let env = format!("NOOK_TEST_TAG={}", s.tag);
    let out = s.nook(&[
        "run",
        "-d",
        "--pid",
        "host",
        "-e",
        &env,
        &s.image,
        "sh",
        "-c",
        "(setsid sleep 1000 </dev/null >/dev/null 2>&1 &); exec sleep 1001",
    ]);
    out.ok();
    let id = out.stdout.trim().to_owned();
    s.nook(&["exec", "-d", &id, "sleep", "1002"]).ok();
    // The command, its orphan (now the host's) and the exec'd process.
    let want = ["sleep 1000", "sleep 1001", "sleep 1002"];
    wait_for(
        || want.iter().all(|w| tagged(&s.tag).iter().any(|c| c == w)),
        &s.tag,
    );
    // `nook top` lists the container's processes, not the host's.
    let top = s.nook(&["top", &id]);
    top.ok();
    for w in want {
        assert!(top.stdout.contains(w), "{top:?}");
    }
    assert!(!top.stdout.contains("mpi_shm"), "{top:?}");
    s.nook(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&s.tag, s.user.work.path());
}

fn the_end_of_the_command_ends_its_orphans(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let env = format!("NOOK_TEST_TAG={}", s.tag);
    for init in [&[][..], &["--init"][..]] {
        let mut flags = vec!["--pid", "host", "-e", &env];
        flags.extend(init);
        let out = s.sh(
            &flags,
            "(setsid sleep 1000 </dev/null >/dev/null 2>&1 &); sleep 0.2; echo done",
        );
        out.ok();
        assert_eq!(out.stdout, "done\n");
        assert_no_leftovers(&s.tag, s.user.work.path());
    }
}

/// The command lines of processes whose environment holds `tag` (not this test's own).
fn tagged(tag: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && *p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|b| b.windows(tag.len()).any(|w| w == tag.as_bytes()))
        })
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .collect()
}

fn wait_for(cond: impl Fn() -> bool, tag: &str) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the container's processes never showed: {:?}", tagged(tag));
}

#[test]
fn api_pid_mode_host_is_pid_host() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = support::serve::Server::start(&s);
    let me = std::process::id();
    let script = format!("test -d /proc/{me} && echo sees-test");
    let out = srv.ok(
        &s,
        &[
            "run", "--rm", "--pid", "host", &s.image, "sh", "-c", &script,
        ],
    );
    assert_eq!(out, "sees-test\n");
    let out = srv.docker(&s, &["create", "--pid", "container:x", &s.image]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("HostConfig.PidMode"), "{out:?}");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    Hybrid,
    Bind,
}

fn vader_between_containers_hybrid(mode: Mode) {
    vader(mode, Model::Hybrid);
}

fn vader_between_containers_bind(mode: Mode) {
    vader(mode, Model::Bind);
}

/// The launcher's settings: vader and self only. CMA (vader's single copy) needs ptrace rights
/// on the peer, which the kernel refuses between user namespaces; `none` copies through the
/// shared segment without the warning OpenMPI prints when it finds that out itself.
const LAUNCHER_ENV: [(&str, &str); 4] = [
    ("PMIX_MCA_gds", "hash"),
    ("OMPI_MCA_pml", "ob1"),
    ("OMPI_MCA_btl", "self,vader"),
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
];

fn vader(mode: Mode, model: Model) {
    let dir = match material() {
        Ok(d) => d,
        Err(why) => return support::skip(&why),
    };
    let Some(user) = User::new(mode) else {
        return;
    };
    let (tar, image) = match model {
        Model::Hybrid => ("hybrid.tar", "mpi-hybrid"),
        Model::Bind => ("bind.tar", "mpi-bind"),
    };
    user.run(&["import", dir.join(tar).to_str().unwrap(), image])
        .ok();
    let tag = format!(
        "nookshm{}",
        std::process::id() as u64 * 1_000_003 + support::sandbox::rand_suffix()
    );
    let bin = user.bin.to_str().unwrap().to_owned();
    let mut args = vec!["-s", "KILL", "120", "mpirun", "-np", "4", "--oversubscribe"];
    args.extend([
        &bin,
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "--network",
        "host",
    ]);
    args.extend(["--ipc", "host", "--pid", "host"]);
    args.extend(["-e", "OMPI_*", "-e", "PMIX_*", "-e", "PMI_*"]);
    if model == Model::Bind {
        args.extend(BIND_VOLUMES);
    }
    args.extend([image, "/hello"]);
    let mut c = user.command(Path::new("timeout"));
    c.args(&args).env("NOOK_TEST_TAG", &tag);
    for (k, v) in LAUNCHER_ENV {
        c.env(k, v);
    }
    let out = Out::from(c.output().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("btl_vader"), "{out:?}");
    let mut lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rank "))
        .collect();
    lines.sort_unstable();
    let want: Vec<String> = (0..4)
        .map(|r| format!("rank {r} of 4 sum 10 shm 4"))
        .collect();
    assert_eq!(lines, want, "{out:?}");
    assert_no_leftovers(&tag, user.work.path());
}
