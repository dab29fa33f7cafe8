//! `nook cp`: files between a container and the host, or a tar on standard input/output.

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Session;
use crate::container::{Containers, Record, State};

fn containers(session: &Session) -> Containers {
    Containers::new(&session.root)
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:PATH, a host path, or `-` for a tar on standard input (unpacked into the
    /// directory DEST).
    pub src: String,
    /// CONTAINER:PATH, a host path, or `-` to write SRC as a tar to standard output.
    pub dest: String,
}

/// `CONTAINER:PATH` → (container, path); a host path has no colon before its first slash.
fn container_path(s: &str) -> Option<(&str, &str)> {
    let (c, p) = s.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

pub fn cp(session: &Session, a: CpArgs) -> Result<i32> {
    let c = containers(session);
    let (name, path, out) = match (container_path(&a.src), container_path(&a.dest)) {
        (Some((name, path)), None) => (name, path, true),
        (None, Some((name, path))) => (name, path, false),
        _ => bail!("nook cp copies between a container and the host: one side is CONTAINER:PATH"),
    };
    let r = c.get(name)?;
    let runtime = crate::config::runtime_dir()?;
    let mountpoint = runtime.join(format!("cp-{}", std::process::id()));
    let stopped = if r.state == State::Running {
        None
    } else {
        Some(stopped_root(session, &c, &r, &mountpoint)?)
    };
    let result = if out && a.dest == "-" {
        crate::container::cp::copy_out_tar(&r, stopped.as_ref(), &absolute(path), std::io::stdout())
    } else if !out && a.src == "-" {
        crate::container::cp::copy_in_tar(&r, stopped.as_ref(), std::io::stdin(), &absolute(path))
    } else if out {
        crate::container::cp::copy_out(
            &r,
            stopped.as_ref(),
            &absolute(path),
            std::path::Path::new(&a.dest),
        )
    } else {
        crate::container::cp::copy_in(
            &r,
            stopped.as_ref(),
            std::path::Path::new(&a.src),
            &absolute(path),
        )
    };
    let _ = std::fs::remove_dir(&mountpoint);
    result?;
    Ok(0)
}

/// What the copy needs to assemble a stopped container's root.
fn stopped_root(
    session: &Session,
    c: &Containers,
    r: &Record,
    mountpoint: &std::path::Path,
) -> Result<crate::container::cp::Stopped> {
    let store = session.store_without_userns()?;
    let image = store
        .find_image(&r.image_id.to_string())
        .with_context(|| format!("the image of container {} is gone", r.name))?;
    std::fs::create_dir_all(mountpoint)?;
    Ok(crate::container::cp::Stopped {
        mapping: session.mapping.clone(),
        layers_dir: store.root().join("layers"),
        lowers: crate::rootfs::ladder::overlay_lowers(&store, &image),
        dir: c.dir_of(&r.id),
        mountpoint: mountpoint.to_owned(),
    })
}

fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}
