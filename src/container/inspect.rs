//! `nook inspect`'s view of a container's configuration, made when the run starts and kept in
//! its record: docker's `Config`, `HostConfig` and `Mounts` fields.

use crate::sandbox::volume::Volume;

/// docker's `Config`, `HostConfig` and `Mounts` as `nook inspect` shows them.
pub(super) fn inspect_config(
    req: &super::run::RunRequest,
    process: &crate::sandbox::plan::Process,
    hostname: &str,
    stop_signal: Option<String>,
) -> serde_json::Value {
    let o = &req.options;
    let env: Vec<String> = process
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mounts: Vec<serde_json::Value> = o.volumes.iter().map(mount_view).collect();
    serde_json::json!({
        "Config": {
            "Hostname": hostname,
            "User": process.user,
            "Env": env,
            "Cmd": process.args,
            "Image": req.image_name,
            "WorkingDir": process.cwd,
            "Tty": process.tty,
            "OpenStdin": process.stdin,
            "StopSignal": stop_signal,
            "Labels": req.labels,
        },
        "HostConfig": {
            "AutoRemove": req.remove,
            "ReadonlyRootfs": o.read_only,
            "Init": o.init,
            "SecurityOpt": (!o.security_opt.is_empty()).then_some(&o.security_opt),
            "Seccomp": o.seccomp.mode(),
        },
        "Mounts": mounts,
    })
}

/// One entry of `Mounts`.
fn mount_view(v: &Volume) -> serde_json::Value {
    match v {
        Volume::Bind {
            source,
            target,
            read_only,
            ..
        } => serde_json::json!({
            "Type": "bind", "Source": source, "Destination": target, "RW": !read_only,
        }),
        Volume::Tmpfs { target, .. } => serde_json::json!({
            "Type": "tmpfs", "Source": "", "Destination": target, "RW": true,
        }),
        Volume::Named {
            name,
            target,
            read_only,
        } => serde_json::json!({
            "Type": "volume", "Name": name, "Destination": target, "RW": !read_only,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_show_as_docker_names_them() {
        let bind = Volume::Bind {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: true,
            dir: true,
        };
        assert_eq!(
            mount_view(&bind),
            serde_json::json!({"Type": "bind", "Source": "/srv/data", "Destination": "/data", "RW": false})
        );
        let tmpfs = Volume::Tmpfs {
            target: "/tmp".into(),
            flags: nix::mount::MsFlags::empty(),
            data: String::new(),
        };
        assert_eq!(
            mount_view(&tmpfs),
            serde_json::json!({"Type": "tmpfs", "Source": "", "Destination": "/tmp", "RW": true})
        );
        let named = Volume::Named {
            name: "cache".into(),
            target: "/cache".into(),
            read_only: false,
        };
        assert_eq!(
            mount_view(&named),
            serde_json::json!({"Type": "volume", "Name": "cache", "Destination": "/cache", "RW": true})
        );
    }
}
