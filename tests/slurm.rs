//! nook under Slurm: `srun`, `sbatch --wait` and `salloc` jobs on a single-node Slurm that the
//! test starts (tests/support/slurm.rs), submitted by the test users, so that each job runs
//! as its user, with no XDG_RUNTIME_DIR and the store on a path the job names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use support::env::Mode;
use support::sandbox::Sandbox;
use support::slurm::Slurm;

in_both_modes!(
    srun_runs_a_container_as_the_job_user,
    sbatch_wait_runs_a_job_script,
    salloc_then_srun_runs_a_container,
    job_memory_limit_holds_in_the_container,
);

/// What each job step runs on the node: nook (from `$NOOK`) runs `$IMAGE` with the store
/// `$NOOK_ROOT` names, then the step reports where nook kept its runtime state.
const STEP: &str = r#"
test -z "$XDG_RUNTIME_DIR" || { echo "XDG_RUNTIME_DIR is set"; exit 90; }
"$NOOK" run --rm "$IMAGE" sh -c 'echo container-uid=$(id -u)' || exit 91
id=$("$NOOK" run -d "$IMAGE" sleep 60) || exit 92
pid=$("$NOOK" inspect "$id" | grep -o '"Pid": *[0-9]*' | grep -o '[0-9]*$')
if [ "$(cat /proc/$pid/cgroup)" = "$(cat /proc/self/cgroup)" ]; then echo cgroup=job; else
  echo "cgroup: container $(cat /proc/$pid/cgroup | tr '\n' ' ') step $(cat /proc/self/cgroup | tr '\n' ' ')"; fi
"$NOOK" rm -f "$id" >/dev/null || exit 93
d=/tmp/nook-$(id -u)/slurm-$SLURM_JOB_ID
echo runtime=$(stat -c %a:%u "$d") containers-left=$(ls "$d/containers" | wc -l)
echo job=$SLURM_JOB_ID user=$(id -u)
"#;

fn srun_runs_a_container_as_the_job_user(mode: Mode) {
    let Some((s, slurm)) = setup(mode) else {
        return;
    };
    let out = slurm.run(&s.user, "srun", &["-n1", "sh", "-c", STEP], &job_env(&s));
    check_step(&s, &out.ok().stdout);
}

fn sbatch_wait_runs_a_job_script(mode: Mode) {
    let Some((s, slurm)) = setup(mode) else {
        return;
    };
    // The job names its own store, fills it from the registry and runs from it.
    let log = s.user.home().join("job.out");
    let script = format!(
        "#!/bin/sh\n#SBATCH -n 1\n#SBATCH -o {log}\nset -e\n\
         store=$HOME/jobstore\n\
         \"$NOOK\" --root \"$store\" pull -q \"$IMAGE\" >/dev/null\n\
         test -d \"$store/blobs\" && echo store=jobstore\n\
         export NOOK_ROOT=\"$store\"\n{STEP}",
        log = log.display(),
    );
    let path = s.user.write_home("job.sh", script.as_bytes());
    let out = slurm.run(
        &s.user,
        "sbatch",
        &["--wait", path.to_str().unwrap()],
        &job_env(&s),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.code, 0, "sbatch: {out:?}\njob output:\n{text}");
    assert!(text.contains("store=jobstore\n"), "{text}");
    check_step(&s, &text);
}

fn salloc_then_srun_runs_a_container(mode: Mode) {
    let Some((s, slurm)) = setup(mode) else {
        return;
    };
    let out = slurm.run(
        &s.user,
        "salloc",
        &["-n1", "srun", "sh", "-c", STEP],
        &job_env(&s),
    );
    check_step(&s, &out.ok().stdout);
}

/// A step of a job with `--mem=100M` on a cluster whose `task/cgroup` enforces it: the step's
/// memory cgroup carries the limit; a container that stays under it runs; one that takes three
/// times as much is killed by the kernel (137), because the container is inside the step's
/// cgroup and nook adds no cgroup of its own that could escape it. Slurm sees the kill.
fn job_memory_limit_holds_in_the_container(mode: Mode) {
    const LIMITED: &str = r#"
step=/sys/fs/cgroup/memory$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
echo step-limit=$(cat "$step/../memory.limit_in_bytes")
"$NOOK" run --rm "$IMAGE" sh -c 'x=$(head -c 10000000 /dev/zero | tr "\0" a); echo small=${#x}'
echo small-rc=$?
"$NOOK" run --rm "$IMAGE" sh -c 'x=$(head -c 300000000 /dev/zero | tr "\0" a); echo big=${#x}'
echo big-rc=$?
"#;
    let Some(slurm) = Slurm::with_cgroups() else {
        return;
    };
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let out = slurm.run(
        &s.user,
        "srun",
        &["-n1", "--mem=100M", "sh", "-c", LIMITED],
        &job_env(&s),
    );
    let text = format!("{out:?}\n{}", slurm.logs());
    assert!(out.stdout.contains("step-limit=104857600\n"), "{text}");
    assert!(
        out.stdout.contains("small=10000000\nsmall-rc=0\n"),
        "{text}"
    );
    assert!(out.stdout.contains("big-rc=137\n"), "{text}");
    assert!(!out.stdout.contains("big=300000000"), "{text}");
    assert!(out.stderr.contains("oom-kill"), "{text}");
}

fn setup(mode: Mode) -> Option<(Sandbox, std::sync::Arc<Slurm>)> {
    let slurm = Slurm::shared()?;
    Some((Sandbox::new(mode)?, slurm))
}

/// The submitter's environment, which Slurm hands to the job (`--export=ALL`).
fn job_env(s: &Sandbox) -> Vec<(&str, &str)> {
    vec![
        ("NOOK", s.user.bin.to_str().unwrap()),
        ("IMAGE", s.image.as_str()),
        ("NOOK_TEST_TAG", s.tag.as_str()),
    ]
}

/// The step ran the container as the image's root in the user's namespace, as the job's
/// user, in the step's own cgroups (nook adds none of its own, so the job's limits hold), and
/// nook kept its state in a runtime directory private to the job (mode 0700, the
/// user's, empty of containers after `--rm`), which the cluster's epilog removes when the job
/// ends.
#[track_caller]
fn check_step(s: &Sandbox, out: &str) {
    assert!(out.contains("container-uid=0\n"), "{out}");
    assert!(out.contains("cgroup=job\n"), "{out}");
    let uid = s.user.uid;
    assert!(out.contains(&format!(" user={uid}\n")), "{out}");
    assert!(
        out.contains(&format!("runtime=700:{uid} containers-left=0\n")),
        "{out}"
    );
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("job="))
        .and_then(|l| l.split(' ').next())
        .expect("job id");
    assert!(job.bytes().all(|b| b.is_ascii_digit()), "{out}");
    let dir = std::path::PathBuf::from(format!("/tmp/nook-{uid}/slurm-{job}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the epilog left {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
