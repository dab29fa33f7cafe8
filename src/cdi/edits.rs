//! The chosen devices' containerEdits → the sandbox's [`DeviceEdits`]. A spec's own edits
//! apply once for every spec a chosen device comes from, then each device's. Rootless, a
//! device node is the host's node bound in (never mknod, which a user namespace refuses);
//! its cgroup permissions, mode and owner cannot be changed and are left as the host has them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use nix::mount::MsFlags;

use super::CdiError;
use super::registry::Chosen;
use super::spec::{ContainerEdits, DeviceNode, Hook, Mount};
use crate::sandbox::device::{DeviceEdits, Hook as SandboxHook, HookStage};
use crate::sandbox::mount::{MountOp, Target};

/// Checks that `path` is a device node on the host (and of the spec's type and numbers, when
/// it gives them).
pub fn check_node(device: &str, path: &Path, want: Option<&DeviceNode>) -> Result<(), CdiError> {
    let err = |why: String| CdiError::HostNode {
        device: device.to_owned(),
        path: path.display().to_string(),
        why,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                "does not exist: is the driver loaded, and is the spec current?".into(),
            ));
        }
        Err(e) => return Err(err(format!("cannot be read: {e}"))),
    };
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(err("is not a device node".into()));
    };
    let Some(n) = want else { return Ok(()) };
    if let Some(t) = &n.kind
        && t != kind
        && !(t == "u" && kind == "c")
    {
        return Err(err(format!("is of type {kind}, the spec says {t}")));
    }
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()) as i64,
        nix::sys::stat::minor(meta.rdev()) as i64,
    );
    if n.major.is_some_and(|m| m != major) || n.minor.is_some_and(|m| m != minor) {
        return Err(err(format!(
            "is {major}:{minor}, the spec says {}:{}",
            n.major.map_or("*".into(), |m| m.to_string()),
            n.minor.map_or("*".into(), |m| m.to_string())
        )));
    }
    Ok(())
}

/// The most device nodes a directory given to `--device` may bring.
const MAX_DIR_NODES: usize = 1024;

/// Every device node below the host directory `dir` (symbolic links not followed), bound at
/// the same place below `path`: `--device /dev/dri` brings card0, renderD128, ...
pub fn nodes_below(dir: &Path, path: &str, out: &mut Vec<MountOp>) -> Result<(), CdiError> {
    let err = |why: String| CdiError::HostNode {
        device: dir.display().to_string(),
        path: dir.display().to_string(),
        why,
    };
    let mut todo = vec![(dir.to_owned(), path.trim_end_matches('/').to_owned(), 0)];
    let mut found = 0;
    while let Some((host, inside, depth)) = todo.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&host)
            .map_err(|e| err(format!("cannot be read: {e}")))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let (Ok(ft), Some(name)) = (e.file_type(), e.file_name().to_str().map(str::to_owned))
            else {
                continue;
            };
            let to = format!("{inside}/{name}");
            if ft.is_dir() && depth < 4 {
                todo.push((e.path(), to, depth + 1));
            } else if ft.is_char_device() || ft.is_block_device() {
                found += 1;
                if found > MAX_DIR_NODES {
                    return Err(err(format!("holds more than {MAX_DIR_NODES} device nodes")));
                }
                out.push(MountOp::HostDevice {
                    source: e.path(),
                    path: to,
                });
            }
        }
    }
    if found == 0 {
        return Err(err("holds no device node".into()));
    }
    Ok(())
}

/// The edits of `chosen`, in order: each spec's own edits (once), then the device's.
pub fn collect(chosen: &[Chosen<'_>]) -> Result<DeviceEdits, CdiError> {
    let mut out = DeviceEdits::default();
    let mut specs_done = Vec::new();
    for c in chosen {
        let device = format!("{}={}", c.loaded.spec.kind, c.device.name);
        if !specs_done.contains(&c.spec) {
            specs_done.push(c.spec);
            apply(&device, &c.loaded.spec.container_edits, &mut out)?;
        }
        apply(&device, &c.device.container_edits, &mut out)?;
    }
    Ok(out)
}

fn apply(device: &str, e: &ContainerEdits, out: &mut DeviceEdits) -> Result<(), CdiError> {
    let unsupported = |what: &str| CdiError::Unsupported {
        device: device.to_owned(),
        what: what.to_owned(),
    };
    if e.intel_rdt.is_some() {
        return Err(unsupported("intelRdt (it needs a resource-control group)"));
    }
    if !e.net_devices.is_empty() {
        return Err(unsupported("netDevices (moving a host interface)"));
    }
    out.env.extend(e.env.iter().cloned());
    for n in &e.device_nodes {
        let host = n.host_path.as_deref().unwrap_or(&n.path);
        check_node(device, Path::new(host), Some(n))?;
        out.mounts.push(MountOp::HostDevice {
            source: host.into(),
            path: n.path.clone(),
        });
    }
    for m in &e.mounts {
        out.mounts.push(mount(device, m)?);
    }
    for h in &e.hooks {
        out.hooks.push(hook(device, h)?);
    }
    out.group_add
        .extend(e.additional_gids.iter().map(u32::to_string));
    Ok(())
}

/// A spec's mount → a bind mount with its flags (`bind`: only the top mount; `rbind` and the
/// default: the whole tree).
fn mount(device: &str, m: &Mount) -> Result<MountOp, CdiError> {
    if !matches!(m.kind.as_deref(), None | Some("bind" | "rbind" | "")) {
        return Err(CdiError::Unsupported {
            device: device.to_owned(),
            what: format!(
                "a mount of type {:?} on {} (only bind mounts)",
                m.kind.as_deref().unwrap_or_default(),
                m.container_path
            ),
        });
    }
    let meta = std::fs::metadata(&m.host_path).map_err(|e| CdiError::MountSource {
        device: device.to_owned(),
        path: m.host_path.clone(),
        why: e.to_string(),
    })?;
    let mut flags = MsFlags::empty();
    let mut recursive = true;
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => recursive = false,
            "rbind" => recursive = true,
            // Propagation (every mount of a container is private), and flags that leave the
            // host's as they are.
            "suid" | "dev" | "exec" | "private" | "rprivate" | "slave" | "rslave" | "shared"
            | "rshared" | "relatime" | "norelatime" | "strictatime" => {}
            other => {
                return Err(CdiError::Unsupported {
                    device: device.to_owned(),
                    what: format!("mount option {other:?} on {}", m.container_path),
                });
            }
        }
    }
    Ok(MountOp::Bind {
        source: m.host_path.clone().into(),
        target: Target {
            path: m.container_path.clone(),
            dir: meta.is_dir(),
        },
        recursive,
        flags,
    })
}

fn hook(device: &str, h: &Hook) -> Result<SandboxHook, CdiError> {
    let stage = match h.hook_name.as_str() {
        "createContainer" => HookStage::CreateContainer,
        "startContainer" => HookStage::StartContainer,
        other => {
            return Err(CdiError::Unsupported {
                device: device.to_owned(),
                what: format!(
                    "a {other:?} hook (nook runs createContainer and startContainer hooks)"
                ),
            });
        }
    };
    Ok(SandboxHook {
        stage,
        path: h.path.clone().into(),
        args: h.args.clone(),
        env: h.env.clone(),
        timeout: h
            .timeout
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::super::registry::Registry;
    use super::super::{QualifiedName, spec};
    use super::*;

    fn edits(text: &str, names: &[&str]) -> Result<DeviceEdits, CdiError> {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("s.yaml"), text).unwrap();
        let reg = Registry::load(&[d.path().into()]);
        assert!(reg.broken.is_empty(), "{:?}", reg.broken);
        let names: Vec<QualifiedName> = names
            .iter()
            .map(|n| QualifiedName::parse(n).unwrap())
            .collect();
        collect(&reg.devices(&names)?)
    }

    const SPEC: &str = "
cdiVersion: 0.7.0
kind: example.com/gpu
containerEdits:
  env: [SHARED=1]
  mounts:
    - {hostPath: /etc/hostname, containerPath: /usr/lib/libfake.so, options: [ro, nosuid, nodev, bind]}
  hooks:
    - {hookName: createContainer, path: /bin/true, args: [true, x], timeout: 3}
devices:
  - name: '0'
    containerEdits:
      deviceNodes: [{path: /dev/fake0, hostPath: /dev/null, type: c, major: 1, minor: 3}]
      env: [GPU=0]
  - name: '1'
    containerEdits:
      deviceNodes: [{path: /dev/fake1, hostPath: /dev/zero}]
      additionalGids: [44]
";

    #[test]
    fn spec_edits_once_then_each_device() {
        let e = edits(SPEC, &["example.com/gpu=0", "example.com/gpu=1"]).unwrap();
        assert_eq!(e.env, ["SHARED=1", "GPU=0"]);
        assert_eq!(e.group_add, ["44"]);
        assert_eq!(e.hooks.len(), 1);
        assert_eq!(e.hooks[0].stage, HookStage::CreateContainer);
        assert_eq!(e.hooks[0].timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            e.mounts,
            [
                MountOp::Bind {
                    source: "/etc/hostname".into(),
                    target: Target::file("/usr/lib/libfake.so"),
                    recursive: false,
                    flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                },
                MountOp::HostDevice {
                    source: "/dev/null".into(),
                    path: "/dev/fake0".into()
                },
                MountOp::HostDevice {
                    source: "/dev/zero".into(),
                    path: "/dev/fake1".into()
                },
            ]
        );
    }

    #[test]
    fn a_directory_brings_the_nodes_below_it() {
        let mut out = Vec::new();
        nodes_below(Path::new("/dev/pts"), "/dev/host/", &mut out).unwrap();
        assert!(out.contains(&MountOp::HostDevice {
            source: "/dev/pts/ptmx".into(),
            path: "/dev/host/ptmx".into()
        }));
        let empty = tempfile::tempdir().unwrap();
        let e = nodes_below(empty.path(), "/dev/x", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no device node"), "{e}");
    }

    #[test]
    fn what_cannot_be_done_rootless_is_refused_by_name() {
        let wrong_numbers = SPEC.replace("minor: 3", "minor: 4");
        let e = edits(&wrong_numbers, &["example.com/gpu=0"]).unwrap_err();
        assert!(e.to_string().contains("1:3"), "{e}");
        let missing = SPEC.replace("hostPath: /dev/zero", "hostPath: /dev/nonexistent-nook");
        let e = edits(&missing, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let not_node = SPEC.replace("hostPath: /dev/zero", "hostPath: /dev/shm");
        let e = edits(&not_node, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("not a device node"), "{e}");
        let poststop = SPEC.replace("createContainer", "poststop");
        let e = edits(&poststop, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("poststop"), "{e}");
        let tmpfs = SPEC.replace("bind]}", "bind], type: tmpfs}");
        let e = edits(&tmpfs, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("tmpfs"), "{e}");
        let opt = SPEC.replace("nodev, bind", "nodev, bind, loud");
        let e = edits(&opt, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("loud"), "{e}");
        let rdt = SPEC.replace("  env: [SHARED=1]", "  intelRdt: {closID: x}");
        let e = edits(&rdt, &["example.com/gpu=1"]).unwrap_err();
        assert!(e.to_string().contains("intelRdt"), "{e}");
        let gone = SPEC.replace("/etc/hostname", "/nonexistent-nook/lib.so");
        assert!(matches!(
            edits(&gone, &["example.com/gpu=1"]),
            Err(CdiError::MountSource { .. })
        ));
        assert!(spec::parse(SPEC, true).is_ok());
    }
}
