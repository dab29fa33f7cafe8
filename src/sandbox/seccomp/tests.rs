use super::compile::run;
use super::*;
use crate::sandbox::caps::{self, Capability};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

fn program(p: &Profile, caps: &[Capability]) -> Vec<Insn> {
    let t = Target {
        caps,
        kernel: (6, 1),
    };
    compile::compile(&filter(p, &t).unwrap()).unwrap()
}

fn default_with(add: &[&str]) -> Vec<Insn> {
    let add: Vec<String> = add.iter().map(|s| (*s).to_owned()).collect();
    program(
        &default_profile().unwrap(),
        &caps::resolve(&add, &[]).unwrap(),
    )
}

fn call(p: &[Insn], name: &str, args: [u64; 6]) -> u32 {
    let nr = syscall_number(name).unwrap_or_else(|| panic!("{name} has no number"));
    run(p, crate::sys::seccomp::AUDIT_ARCH, nr, args).unwrap()
}

const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const FORK_FLAGS: u64 =
    (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;

#[test]
fn docker_default_blocks_what_docker_blocks() {
    let p = default_with(&[]);
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "open_by_handle_at",
        "unshare",
        "mount",
        "umount2",
        "setns",
        "bpf",
        "reboot",
        "init_module",
        "swapon",
        "pivot_root",
        "perf_event_open",
        "userfaultfd",
    ] {
        assert_eq!(call(&p, name, [0; 6]), EPERM, "{name}");
    }
    for name in [
        "read",
        "write",
        "execve",
        "openat",
        "mkdir",
        "getcwd",
        "chroot",
        "ptrace",
        "seccomp",
        "setresuid",
        "capset",
        "prctl",
        "close_range",
        "wait4",
    ] {
        assert_eq!(call(&p, name, [0; 6]), ALLOW, "{name}");
    }
    assert_eq!(
        call(&p, "clone3", [0; 6]),
        ENOSYS,
        "clone3 falls back to clone"
    );
}

#[test]
fn argument_rules_on_clone_socket_and_personality() {
    let p = default_with(&[]);
    assert_eq!(call(&p, "clone", [FORK_FLAGS, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        call(&p, "clone", [FORK_FLAGS | CLONE_NEWUSER, 0, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        call(&p, "clone", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        call(&p, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        call(&p, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]),
        EPERM
    );
    for ok in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(
            call(&p, "personality", [ok, 0, 0, 0, 0, 0]),
            ALLOW,
            "{ok:#x}"
        );
    }
    assert_eq!(call(&p, "personality", [1, 0, 0, 0, 0, 0]), EPERM);
}

#[test]
fn capabilities_open_their_calls() {
    let p = default_with(&["SYS_ADMIN"]);
    for name in ["mount", "unshare", "setns", "umount2", "clone3"] {
        assert_eq!(call(&p, name, [0; 6]), ALLOW, "{name} with SYS_ADMIN");
    }
    assert_eq!(
        call(&p, "clone", [FORK_FLAGS | CLONE_NEWUSER, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(call(&p, "open_by_handle_at", [0; 6]), EPERM);
    let p = default_with(&["DAC_READ_SEARCH", "SYS_BOOT"]);
    assert_eq!(call(&p, "open_by_handle_at", [0; 6]), ALLOW);
    assert_eq!(call(&p, "reboot", [0; 6]), ALLOW);
    // Dropping SYS_CHROOT takes chroot away.
    let p = program(
        &default_profile().unwrap(),
        &caps::resolve(&[], &["SYS_CHROOT".into()]).unwrap(),
    );
    assert_eq!(call(&p, "chroot", [0; 6]), EPERM);
}

#[test]
fn the_fakeroots_calls_pass_the_default_profile() {
    // Stacked filters: ERRNO outranks USER_NOTIF, so each must be allowed here.
    let p = default_with(&[]);
    for nr in crate::sandbox::fakeroot::SYSCALLS {
        let r = run(&p, crate::sys::seccomp::AUDIT_ARCH, *nr as u32, [0; 6]);
        assert_eq!(r, Some(ALLOW), "fakeroot call {nr}");
    }
}

#[test]
fn min_kernel_is_honoured() {
    let old = Target {
        caps: &[],
        kernel: (4, 4),
    };
    let prog = compile::compile(&filter(&default_profile().unwrap(), &old).unwrap()).unwrap();
    assert_eq!(call(&prog, "ptrace", [0; 6]), EPERM);
    assert_eq!(kernel_version("6.1.0-27-amd64"), Some((6, 1)));
    assert_eq!(kernel_version("4.8"), Some((4, 8)));
    assert_eq!(kernel_version("x"), None);
}

fn parse(json: &str) -> Profile {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_custom_profile_denying_one_call() {
    let p = parse(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "args": null}
        ]}"#,
    );
    let prog = program(&p, &[]);
    assert_eq!(call(&prog, "mkdirat", [0; 6]), EPERM);
    assert_eq!(call(&prog, "keyctl", [0; 6]), ALLOW);
    // The x32 twin of an allowed call is still refused.
    let nr = syscall_number("mkdirat").unwrap_or(0) | compile::X32_SYSCALL_BIT;
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            run(&prog, crate::sys::seccomp::AUDIT_ARCH, nr, [0; 6]),
            Some(ENOSYS)
        );
    }
}

#[test]
fn repeated_arguments_are_ored_as_runc_does() {
    let p = parse(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13, "syscalls": [
            {"name": "personality", "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}
        ]}"#,
    );
    let prog = program(&p, &[]);
    let eacces = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
    assert_eq!(call(&prog, "personality", [1, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&prog, "personality", [2, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&prog, "personality", [3, 0, 0, 0, 0, 0]), eacces);
    assert_eq!(call(&prog, "read", [0; 6]), eacces);
}

#[test]
fn bad_profiles_are_refused() {
    let t = Target {
        caps: &[],
        kernel: (6, 1),
    };
    let bad_action = parse(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#);
    assert!(matches!(
        filter(&bad_action, &t),
        Err(ProfileError::Action(_))
    ));
    let notify = parse(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
    assert!(matches!(filter(&notify, &t), Err(ProfileError::Action(_))));
    let bad_op = parse(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#,
    );
    assert!(matches!(filter(&bad_op, &t), Err(ProfileError::Op(_))));
    let bad_index = parse(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    assert!(matches!(
        filter(&bad_index, &t),
        Err(ProfileError::Index(6))
    ));
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.json");
    std::fs::write(&f, "{ not json").unwrap();
    assert!(matches!(Seccomp::load(&f), Err(ProfileError::Parse { .. })));
    assert!(matches!(
        Seccomp::load(&d.path().join("missing.json")),
        Err(ProfileError::Read { .. })
    ));
}

#[test]
fn programs_survive_the_record() {
    let prog = Seccomp::Default
        .program(caps::DOCKER_DEFAULT)
        .unwrap()
        .unwrap();
    // Runs of allowed calls share segments: a few hundred instructions, not one per call.
    assert!(prog.0.len() < 400, "{} instructions", prog.0.len());
    let json = serde_json::to_string(&prog).unwrap();
    let back: Program = serde_json::from_str(&json).unwrap();
    assert_eq!(back, prog);
    assert!(serde_json::from_str::<Program>("\"AAAA\"").is_err());
    assert_eq!(Seccomp::Unconfined.program(&[]).unwrap(), None);
}

#[test]
fn the_table_agrees_with_libc() {
    assert_eq!(syscall_number("read"), Some(libc::SYS_read as u32));
    assert_eq!(syscall_number("keyctl"), Some(libc::SYS_keyctl as u32));
    assert_eq!(syscall_number("clone3"), Some(libc::SYS_clone3 as u32));
    assert_eq!(
        syscall_number("open_by_handle_at"),
        Some(libc::SYS_open_by_handle_at as u32)
    );
    assert_eq!(syscall_number("chown32"), None);
    assert!(
        syscalls::TABLE.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted for the search"
    );
}
