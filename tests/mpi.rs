//! MPI the way HPC centres run it: the host's launcher starts one container per rank
//! (`mpirun -np 4 nook run …`, `srun -n 4 --mpi=pmix nook run …`), each with the host's
//! network and ipc namespace (`--network host --ipc host`), the user's own uid
//! (`--userns keep-id`: PMIx checks its client's uid), and the launcher's environment passed
//! by prefix (`-e 'OMPI_*' -e 'PMIX_*' …`). Four ranks print rank and size, an allreduce sums
//! them, and every rank reads rank 0's shared memory object. Both models: the MPI library
//! inside the image ("hybrid") and the host's bound in ("bind").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::path::Path;

use support::env::{Mode, Out, User, assert_no_leftovers};
use support::mpi::{BIND_VOLUMES, material};
use support::slurm::Slurm;

in_both_modes!(mpirun_hybrid, mpirun_bind, srun_pmix_hybrid, srun_pmix_bind,);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    Hybrid,
    Bind,
}

fn mpirun_hybrid(mode: Mode) {
    mpirun(mode, Model::Hybrid);
}

fn mpirun_bind(mode: Mode) {
    mpirun(mode, Model::Bind);
}

fn srun_pmix_hybrid(mode: Mode) {
    srun(mode, Model::Hybrid);
}

fn srun_pmix_bind(mode: Mode) {
    srun(mode, Model::Bind);
}

/// The launcher's settings. PMIx keeps its job data in the server's memory (its shared
/// memory store lives in a /tmp the containers do not share). OpenMPI's shared memory
/// transport (vader) cannot work between containers that each have their own pid namespace:
/// opal's shmem attaches a segment by address instead of mapping it when the creator's pid
/// equals the caller's, and every rank has the same pid in its container, so it crashes. The
/// ranks talk over TCP on the host's loopback instead (`--network host`).
const LAUNCHER_ENV: [(&str, &str); 3] = [
    ("PMIX_MCA_gds", "hash"),
    ("OMPI_MCA_pml", "ob1"),
    ("OMPI_MCA_btl", "self,tcp"),
];

fn mpirun(mode: Mode, model: Model) {
    let Some((user, image)) = setup(mode, model) else {
        return;
    };
    let tag = tag();
    let mut args = vec!["-s", "KILL", "120", "mpirun", "-np", "4", "--oversubscribe"];
    let bin = user.bin.to_str().unwrap().to_owned();
    let run = rank_command(&bin, &image, model);
    args.extend(run.iter().map(String::as_str));
    let mut c = user.command(Path::new("timeout"));
    c.args(&args).env("NOOK_TEST_TAG", &tag);
    for (k, v) in LAUNCHER_ENV {
        c.env(k, v);
    }
    let out = Out::from(c.output().unwrap());
    check_ranks(&out);
    assert_no_leftovers(&tag, user.work.path());
}

fn srun(mode: Mode, model: Model) {
    let Some(slurm) = Slurm::shared() else {
        return;
    };
    let Some((user, image)) = setup(mode, model) else {
        return;
    };
    let tag = tag();
    let bin = user.bin.to_str().unwrap().to_owned();
    let run = rank_command(&bin, &image, model);
    let mut args = vec!["-n", "4", "--mpi=pmix"];
    args.extend(run.iter().map(String::as_str));
    let mut env = vec![("NOOK_TEST_TAG", tag.as_str())];
    env.extend(LAUNCHER_ENV);
    let out = slurm.run(&user, "srun", &args, &env);
    check_ranks(&out);
    assert_no_leftovers(&tag, user.work.path());
}

/// A user with the model's image imported (`mpi-hybrid` or `mpi-bind`).
fn setup(mode: Mode, model: Model) -> Option<(User, String)> {
    let dir = match material() {
        Ok(d) => d,
        Err(why) => {
            support::skip(&why);
            return None;
        }
    };
    let user = User::new(mode)?;
    let (tar, image) = match model {
        Model::Hybrid => ("hybrid.tar", "mpi-hybrid"),
        Model::Bind => ("bind.tar", "mpi-bind"),
    };
    user.run(&["import", dir.join(tar).to_str().unwrap(), image])
        .ok();
    Some((user, image.to_owned()))
}

/// `nook run` of one rank.
fn rank_command(bin: &str, image: &str, model: Model) -> Vec<String> {
    let mut c: Vec<&str> = vec![
        bin,
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "--network",
        "host",
        "--ipc",
        "host",
        "-e",
        "OMPI_*",
        "-e",
        "PMIX_*",
        "-e",
        "PMI_*",
        "-e",
        "SLURM_*",
    ];
    if model == Model::Bind {
        c.extend(BIND_VOLUMES);
    }
    c.extend([image, "/hello"]);
    c.into_iter().map(str::to_owned).collect()
}

/// Four ranks, each once, each with the sum 1+2+3+4 and shared memory seen by all four.
#[track_caller]
fn check_ranks(out: &Out) {
    assert_eq!(out.code, 0, "{out:?}");
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
}

fn tag() -> String {
    format!(
        "nookmpi{}",
        std::process::id() as u64 * 1_000_003 + support::sandbox::rand_suffix()
    )
}
