//! `nook internal`: tools for nook's own benchmarks and debugging, hidden from `--help`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::sys::process::thread_count;

#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Mount nook's FUSE overlay of the lower directories on MOUNTPOINT, in a new user and
    /// mount namespace where you are root, run COMMAND there, and unmount when it ends.
    FuseMount(FuseMountArgs),
}

#[derive(Debug, Args)]
pub struct FuseMountArgs {
    /// Lower directories, top first, separated by ':'.
    #[arg(long, value_delimiter = ':', required = true)]
    pub lower: Vec<PathBuf>,
    /// The writable upper directory.
    #[arg(long)]
    pub upper: PathBuf,
    /// An empty work directory on the upper's filesystem.
    #[arg(long)]
    pub work: PathBuf,
    pub mountpoint: PathBuf,
    /// The command to run with the overlay mounted.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn dispatch(c: InternalCommand) -> Result<i32> {
    match c {
        InternalCommand::FuseMount(a) => fuse_mount(a),
    }
}

fn fuse_mount(a: FuseMountArgs) -> Result<i32> {
    if thread_count() > 1 {
        bail!("nook internal fuse-mount must start single-threaded");
    }
    let abs = |p: &PathBuf| std::fs::canonicalize(p).with_context(|| format!("{}", p.display()));
    let lowers = a.lower.iter().map(abs).collect::<Result<Vec<_>>>()?;
    let (upper, work, mountpoint) = (abs(&a.upper)?, abs(&a.work)?, abs(&a.mountpoint)?);
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .context("cannot create a user and mount namespace")?;
    std::fs::write("/proc/self/setgroups", "deny").context("cannot deny setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")).context("cannot map your uid")?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")).context("cannot map your gid")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the mounts private")?;
    let fd = crate::rootfs::mount_fuse(&mountpoint)
        .with_context(|| format!("cannot mount FUSE on {}", mountpoint.display()))?;
    let hints: Vec<bool> = lowers
        .iter()
        .map(|l| crate::store::Store::may_have_owner_records(l))
        .collect();
    let layers = crate::fuse::Layers::new(&upper, &work, &lowers)
        .context("cannot open the layers")?
        .with_owner_hints(&hints);
    let threads = crate::fuse::default_threads();
    let server = crate::fuse::serve(
        fd,
        crate::fuse::Overlay::new(layers, crate::fuse::Owners::Single),
        threads,
    )
    .context("cannot start nook's FUSE overlay")?;
    let status = std::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .status()
        .with_context(|| format!("cannot run {}", a.command[0]));
    let _ = nix::mount::umount2(&mountpoint, MntFlags::MNT_DETACH);
    server.join();
    let status = status?;
    Ok(status
        .code()
        .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
}
