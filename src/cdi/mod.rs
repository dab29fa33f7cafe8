//! Devices through the Container Device Interface (CDI): `--device VENDOR/CLASS=NAME`,
//! `--gpus` (NVIDIA's `nvidia.com/gpu` kind) and plain host nodes (`--device /dev/X`).
//!
//! `spec` reads one spec file (JSON or YAML, cdiVersion 0.3.0 to 1.0.0) and checks everything
//! in it; `registry` loads the spec directories (later directories win over earlier ones,
//! two specs of one directory naming the same device are a conflict) and turns names — `all`
//! and `--gpus` included — into devices; `edits` turns the chosen devices' containerEdits into
//! the sandbox's [`DeviceEdits`]: host device nodes bound in (rootless: never mknod), bind
//! mounts with their flags, environment, extra groups, and createContainer/startContainer
//! hooks. Nothing here touches the container: the plan carries the result.

pub mod edits;
pub mod registry;
pub mod spec;

use std::path::PathBuf;

use crate::sandbox::device::DeviceEdits;
use crate::sandbox::mount::MountOp;

/// The spec directories every run reads, lowest priority first (as the CDI library's).
pub const DEFAULT_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// What is wrong with a device request or the specs it needs.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("CDI spec {path} is not valid: {why}")]
    BadSpec { path: String, why: String },
    #[error(
        "invalid --device {0:?}: expected VENDOR/CLASS=NAME (a CDI device) or /dev/HOST[:/dev/CONTAINER][:rwm]"
    )]
    Request(String),
    #[error("unknown CDI device {device}: no spec in {dirs} defines it{broken}")]
    Unknown {
        device: String,
        dirs: String,
        broken: String,
    },
    #[error("CDI device {device} is defined by both {first} and {second}: remove one")]
    Conflict {
        device: String,
        first: String,
        second: String,
    },
    #[error(
        "--gpus needs a CDI spec for nvidia.com/gpu and {dirs} has none: make one with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (or into a directory named by --cdi-spec-dir)"
    )]
    NoGpuSpec { dirs: String },
    #[error("invalid --gpus {0:?}: expected all, a count, or device=ID[,ID...] (\"device=0,1\")")]
    Gpus(String),
    #[error("--gpus {want} asks for more GPUs than the nvidia.com/gpu spec lists ({have})")]
    TooFewGpus { want: usize, have: usize },
    #[error("device {device}: the host device node {path} {why}")]
    HostNode {
        device: String,
        path: String,
        why: String,
    },
    #[error("device {device}: the mount source {path} cannot be used: {why}")]
    MountSource {
        device: String,
        path: String,
        why: String,
    },
    #[error("device {device}: {what} is not supported by nook (rootless)")]
    Unsupported { device: String, what: String },
}

/// `VENDOR/CLASS=NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QualifiedName {
    pub kind: String,
    pub name: String,
}

impl QualifiedName {
    /// Parses and checks a qualified device name.
    pub fn parse(s: &str) -> Option<QualifiedName> {
        let (kind, name) = s.split_once('=')?;
        spec::check_kind(kind).ok()?;
        spec::check_name(name).ok()?;
        Some(QualifiedName {
            kind: kind.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.kind, self.name)
    }
}

/// One `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Cdi(QualifiedName),
    /// A host node bound in (`/dev/X[:/dev/Y][:rwm]`; the permissions need a device cgroup,
    /// which a rootless container has not: nodes are as usable as on the host), or every
    /// node below a directory such as /dev/dri, as docker does.
    Host {
        source: PathBuf,
        path: String,
    },
}

impl Request {
    /// Parses a `--device` value.
    pub fn parse(s: &str) -> Result<Request, CdiError> {
        let bad = || CdiError::Request(s.to_owned());
        if !s.starts_with('/') {
            return QualifiedName::parse(s).map(Request::Cdi).ok_or_else(bad);
        }
        let mut parts: Vec<&str> = s.split(':').collect();
        if parts.len() > 1
            && parts
                .last()
                .is_some_and(|p| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')))
        {
            parts.pop();
        }
        let (source, path) = match parts.as_slice() {
            [h] => (*h, *h),
            [h, c] => (*h, *c),
            _ => return Err(bad()),
        };
        if spec::check_path("", source).is_err()
            || spec::check_path("", path).is_err()
            || !spec::under_dev(path)
        {
            return Err(bad());
        }
        Ok(Request::Host {
            source: source.into(),
            path: path.to_owned(),
        })
    }
}

/// The spec directories of a run: the defaults, then the config file's, then
/// `--cdi-spec-dir`'s (later ones win).
pub fn spec_dirs(config: &[PathBuf], flags: &[PathBuf]) -> Vec<PathBuf> {
    DEFAULT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(config.iter().cloned())
        .chain(flags.iter().cloned())
        .collect()
}

/// Resolves `--device`s and `--gpus` against the specs in `dirs` (read only when a CDI
/// device or `--gpus` is asked for).
pub fn resolve(
    requests: &[Request],
    gpus: Option<&str>,
    dirs: &[PathBuf],
) -> Result<DeviceEdits, CdiError> {
    let mut names = Vec::new();
    let mut out = DeviceEdits::default();
    for r in requests {
        match r {
            Request::Cdi(n) => names.push(n.clone()),
            Request::Host { source, path } if source.is_dir() => {
                edits::nodes_below(source, path, &mut out.mounts)?;
            }
            Request::Host { source, path } => {
                let device = source.display().to_string();
                edits::check_node(&device, source, None)?;
                out.mounts.push(MountOp::HostDevice {
                    source: source.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    let gpus = gpus.map(registry::GpuRequest::parse).transpose()?;
    if names.is_empty() && gpus.is_none() {
        return Ok(out);
    }
    let reg = registry::Registry::load(dirs);
    if let Some(g) = &gpus {
        names.extend(reg.gpus(g)?);
    }
    let chosen = reg.devices(&names)?;
    let cdi = edits::collect(&chosen)?;
    out.env.extend(cdi.env);
    out.mounts.extend(cdi.mounts);
    out.hooks.extend(cdi.hooks);
    out.group_add.extend(cdi.group_add);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_requests() {
        assert_eq!(
            Request::parse("nvidia.com/gpu=0").unwrap(),
            Request::Cdi(QualifiedName {
                kind: "nvidia.com/gpu".into(),
                name: "0".into()
            })
        );
        assert!(matches!(
            Request::parse("vendor.example/fpga=all").unwrap(),
            Request::Cdi(_)
        ));
        assert_eq!(
            Request::parse("/dev/null:/dev/fake0:rw").unwrap(),
            Request::Host {
                source: "/dev/null".into(),
                path: "/dev/fake0".into()
            }
        );
        assert_eq!(
            Request::parse("/dev/zero").unwrap(),
            Request::Host {
                source: "/dev/zero".into(),
                path: "/dev/zero".into()
            }
        );
        for bad in [
            "gpu=0",
            "nvidia.com/gpu",
            "nvidia.com/gpu=",
            "nvidia.com/gpu=-0",
            "a/b/c=0",
            "/dev/null:/etc/passwd",
            "/dev/null:/dev/../etc/x",
            "/dev/a:/dev/b:rw:x",
            "relative",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_dirs_in_priority_order() {
        let d = spec_dirs(&["/cfg".into()], &["/flag".into()]);
        assert_eq!(
            d,
            ["/etc/cdi", "/var/run/cdi", "/cfg", "/flag"].map(PathBuf::from)
        );
    }

    #[test]
    fn no_cdi_device_reads_no_spec() {
        let e = resolve(&[], None, &["/nonexistent".into()]).unwrap();
        assert!(e.is_empty());
        let e = resolve(
            &[Request::parse("/dev/null:/dev/fake0").unwrap()],
            None,
            &[],
        )
        .unwrap();
        assert_eq!(e.mounts.len(), 1);
        let e = resolve(
            &[Request::parse("/dev/nonexistent-nook").unwrap()],
            None,
            &[],
        );
        assert!(matches!(e, Err(CdiError::HostNode { .. })));
    }
}
