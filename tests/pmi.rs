//! Descriptors beyond 0-2 into the container (`--preserve-fds N`, `--preserve-fd FD,…`) and
//! Slurm's PMI2 (`srun --mpi=pmi2 nook run -e 'PMI_*' …`): each rank, in its own container,
//! speaks PMI2's wire protocol on the socket `PMI_FD` names (a busybox sh client of our own),
//! puts a key, fences, and reads the other rank's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use support::env::{Mode, Out};
use support::sandbox::Sandbox;
use support::slurm::Slurm;

in_both_modes!(
    preserve_fds_passes_two_pipes,
    a_closed_descriptor_is_refused,
    create_then_start_attached_passes_a_descriptor,
    only_the_command_holds_a_passed_descriptor,
    srun_pmi2_ranks_exchange_keys,
);

/// A named pipe in the user's home, which the user's shell opens for nook.
fn fifo(s: &Sandbox, name: &str) -> PathBuf {
    let path = s.user.home().join(name);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    s.user.give(&path);
    path
}

/// Writes `data` into the pipe once nook's shell opens it, then closes it (end of input).
fn feed(path: PathBuf, data: &'static [u8]) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(data).unwrap();
    })
}

/// `nook ARGS` as the user, from a shell that opens `redirections` first (`3<p3 4<p4`).
fn nook_with(s: &Sandbox, redirections: &str, args: &[&str]) -> std::process::Command {
    let mut c = s.user.command(Path::new("/bin/sh"));
    c.arg("-c")
        .arg(format!("exec \"$0\" \"$@\" {redirections}"))
        .arg(&s.user.bin)
        .args(args)
        .env("NOOK_TEST_TAG", &s.tag);
    c
}

fn preserve_fds_passes_two_pipes(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    for init in [false, true] {
        let (p3, p4) = (fifo(&s, "p3"), fifo(&s, "p4"));
        let redirections = format!("3<{} 4<{}", p3.display(), p4.display());
        let writers = [feed(p3, b"three\n"), feed(p4, b"four\n")];
        let mut args = vec!["run", "--rm", "--preserve-fds", "2"];
        if init {
            args.push("--init");
        }
        // The command has 3 and 4, and nothing of nook's above them.
        let script = "cat <&3; cat <&4; for n in 5 6 7 8 9 10 11 12; do \
                      (: <&$n) 2>/dev/null && echo open $n; done; echo end";
        args.extend([s.image.as_str(), "sh", "-c", script]);
        let out = Out::from(nook_with(&s, &redirections, &args).output().unwrap());
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(out.ok().stdout, "three\nfour\nend\n", "--init {init}");
    }
}

fn a_closed_descriptor_is_refused(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    s.nook(&["run", "--rm", "--preserve-fd", "7", &s.image, "true"])
        .fails_with(
            125,
            "descriptor 7 (--preserve-fds/--preserve-fd) is not open",
        );
    s.nook(&["run", "--rm", "--preserve-fds", "1", &s.image, "true"])
        .fails_with(
            125,
            "descriptor 3 (--preserve-fds/--preserve-fd) is not open",
        );
    s.nook(&["run", "--rm", "--preserve-fd", "1", &s.image, "true"])
        .fails_with(125, "standard streams");
    // PMI_FD passed on by -e names no open descriptor: the run goes on, with a warning.
    let env = [("PMI_FD", "9"), ("NOOK_TEST_TAG", s.tag.as_str())];
    let out = s
        .user
        .run_env(&["run", "--rm", "-e", "PMI_*", &s.image, "true"], &env);
    assert!(
        out.ok()
            .stderr
            .contains("PMI_FD=9 names no descriptor nook inherited"),
        "{out:?}"
    );
    // A detached container's monitor would hold it.
    let run_d = ["run", "-d", "--preserve-fds", "1", &s.image];
    Out::from(nook_with(&s, "3</dev/null", &run_d).output().unwrap()).fails_with(125, "foreground");
}

/// `create` keeps the flag for `start -a`, which runs the container in the foreground with the
/// descriptors that `start` inherited; `start` without -a refuses it.
fn create_then_start_attached_passes_a_descriptor(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let input = s.user.write_home("input", b"from-start\n");
    let created = s.nook(&[
        "create",
        "--preserve-fds",
        "1",
        &s.image,
        "sh",
        "-c",
        "cat <&3",
    ]);
    let id = created.ok().stdout.trim().to_owned();
    s.nook(&["start", &id]).fails_with(125, "foreground");
    let out = Out::from(
        nook_with(&s, &format!("3<{}", input.display()), &["start", "-a", &id])
            .output()
            .unwrap(),
    );
    assert_eq!(out.ok().stdout, "from-start\n");
    s.nook(&["rm", &id]).ok();
}

/// Once the command closes a passed write end, its reader sees the end: neither nook, the
/// init, `--init`'s reaper nor the network helper kept a copy (a PMI socket held so would
/// keep `srun` waiting after the job).
fn only_the_command_holds_a_passed_descriptor(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else { return };
    let path = fifo(&s, "w3");
    let redirection = format!("3>{}", path.display());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut f = std::fs::File::open(path).unwrap();
        let _ = f.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let script = "echo hello >&3; exec 3>&-; read x; echo done-$x";
    let args = [
        "run",
        "--rm",
        "-i",
        "--init",
        "--preserve-fd",
        "3",
        &s.image,
        "sh",
        "-c",
        script,
    ];
    let mut child = nook_with(&s, &redirection, &args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard, not a timing: the reader returns as soon as every writer has closed.
    let got = rx.recv_timeout(std::time::Duration::from_secs(120));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    let out = Out::from(child.wait_with_output().unwrap());
    assert_eq!(
        got.as_deref(),
        Ok("hello\n"),
        "the pipe stayed open: {out:?}"
    );
    reader.join().unwrap();
    assert_eq!(out.ok().stdout, "done-go\n");
}

/// Our own PMI2 client, in busybox sh, on the socket Slurm names in `PMI_FD`: the PMI1-style
/// init line, then PMI2 commands (a 6-character length, then `key=value;` pairs), each
/// answered the same way.
const PMI2_CLIENT: &str = r#"
fd=$PMI_FD
send() { printf '%-6d%s' "${#1}" "$1" >&"$fd"; }
recv() { read -r -n 6 len <&"$fd" && read -r -n "$len" body <&"$fd" && echo "$body"; }
expect() { case "$2" in *"$1"*) ;; *) echo "rank $PMI_RANK: expected $1, got: $2"; exit 1 ;; esac; }
printf 'cmd=init pmi_version=2 pmi_subversion=0\n' >&"$fd"
read -r line <&"$fd"
expect 'cmd=response_to_init rc=0' "$line"
send "cmd=fullinit;pmijobid=$PMI_JOBID;pmirank=$PMI_RANK;threaded=FALSE;"
expect ";rc=0;" "$(recv)"
send "cmd=kvs-put;key=nook-$PMI_RANK;value=from-rank-$PMI_RANK;"
expect "cmd=kvs-put-response;rc=0;" "$(recv)"
send "cmd=kvs-fence;"
expect "cmd=kvs-fence-response;rc=0;" "$(recv)"
send "cmd=kvs-get;jobid=$PMI_JOBID;srcid=-1;key=nook-$((1 - PMI_RANK));"
got=$(recv)
expect "found=TRUE;" "$got"
value=${got#*value=}
echo "rank $PMI_RANK of $PMI_SIZE got ${value%;}"
send "cmd=finalize;"
expect "cmd=finalize-response;rc=0;" "$(recv)"
"#;

/// Two ranks of `srun --mpi=pmi2`, each in its own container that takes the step's PMI_*
/// variables by prefix and so keeps the PMI_FD socket (no --preserve-fd): both see the
/// other's key after the fence.
fn srun_pmi2_ranks_exchange_keys(mode: Mode) {
    let plugin = "/usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmi2.so";
    if !Path::new(plugin).exists() {
        support::skip(&format!(
            "Slurm's PMI2 plugin is not installed: no {plugin}"
        ));
        return;
    }
    let Some(slurm) = Slurm::shared() else { return };
    let Some(s) = Sandbox::new(mode) else { return };
    let client = s.user.write_home("pmi2.sh", PMI2_CLIENT.as_bytes());
    let volume = format!("{}:/pmi2.sh:ro", client.display());
    let step =
        r#"exec "$NOOK" run --rm --network none -e 'PMI_*' -v "$CLIENT" "$IMAGE" sh /pmi2.sh"#;
    let env = [
        ("NOOK", s.user.bin.to_str().unwrap()),
        ("IMAGE", s.image.as_str()),
        ("CLIENT", volume.as_str()),
        ("NOOK_TEST_TAG", s.tag.as_str()),
    ];
    let out = slurm.run(
        &s.user,
        "srun",
        &["-n2", "--mpi=pmi2", "sh", "-c", step],
        &env,
    );
    out.ok();
    assert!(
        out.stdout.contains("rank 0 of 2 got from-rank-1\n"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("rank 1 of 2 got from-rank-0\n"),
        "{out:?}"
    );
}
