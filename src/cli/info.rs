//! `nook info` (alias `nook doctor`): what works on this host, which rung of each ladder nook
//! will use, and for each missing piece the command that fixes it.

use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use super::Session;
use crate::rootfs::{self, OverlayProbe};
use crate::sys::idmap::{Mapping, find_helpers};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format: text (default) or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// One thing nook checked.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to run to fix it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
        fix: if ok { None } else { fix },
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn userns_checks(out: &mut Vec<Check>) {
    let max = read_trim("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok());
    out.push(check(
        "user namespaces allowed",
        max.is_none_or(|m| m > 0),
        format!(
            "user.max_user_namespaces = {}",
            max.map_or("?".into(), |m| m.to_string())
        ),
        Some("sudo sysctl -w user.max_user_namespaces=15000".into()),
    ));
    if let Some(v) = read_trim("/proc/sys/kernel/unprivileged_userns_clone") {
        out.push(check(
            "unprivileged user namespaces (Debian switch)",
            v == "1",
            format!("kernel.unprivileged_userns_clone = {v}"),
            Some("sudo sysctl -w kernel.unprivileged_userns_clone=1".into()),
        ));
    }
    if let Some(v) = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        out.push(check(
            "AppArmor lets you create user namespaces",
            v == "0",
            format!("kernel.apparmor_restrict_unprivileged_userns = {v}"),
            Some("add an AppArmor profile for nook with 'userns,' or: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".into()),
        ));
    }
    let map = read_trim("/proc/self/uid_map").unwrap_or_default();
    let nested = map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"];
    out.push(check(
        "not nested in another user namespace",
        !nested,
        if nested { format!("this process is already in a user namespace ({})", map.replace('\n', "; ")) } else { "top-level".into() },
        Some("nested runs work with the single mapping; give the outer container more ids for a range".into()),
    ));
}

/// What a single mapping means inside a container.
const SINGLE: &str =
    "the container's user (the image's USER, or root) is you; no other id exists inside";

fn mapping_checks(mapping: &Mapping, out: &mut Vec<Check>) {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    match mapping {
        Mapping::Root => out.push(check(
            "id mapping",
            true,
            "running as root: no user namespace needed for the store",
            None,
        )),
        Mapping::Range { uids, gids, .. } => out.push(check(
            "subordinate id range",
            true,
            format!(
                "from /etc/subuid and /etc/subgid: uids {}, gids {}",
                uids.proc_text().trim().replace('\n', ", "),
                gids.proc_text().trim().replace('\n', ", ")
            ),
            None,
        )),
        Mapping::Single { why, .. } => out.push(check(
            "subordinate id range",
            false,
            format!("single mapping: {why}"),
            Some(format!(
                "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
            )),
        )),
    }
    match find_helpers() {
        Ok(h) => out.push(check(
            "newuidmap/newgidmap",
            true,
            format!("{} and {}", h.newuidmap.display(), h.newgidmap.display()),
            None,
        )),
        Err(why) => out.push(check(
            "newuidmap/newgidmap",
            false,
            why,
            Some("sudo apt-get install uidmap (or dnf install shadow-utils)".into()),
        )),
    }
}

fn store_checks(session: &Session, runtime: Option<&Path>, out: &mut Vec<Check>) -> String {
    let store = &session.root;
    let probe_dir = store
        .parent()
        .filter(|p| p.exists())
        .unwrap_or(Path::new("/tmp"));
    let fs = rootfs::unsuitable_fs(if store.exists() { store } else { probe_dir });
    out.push(check(
        "store on a local filesystem",
        fs.is_none(),
        format!("{}{}", store.display(), fs.map(|f| format!(" is on {f}")).unwrap_or_default()),
        Some("set storage.root in ~/.config/nook/config.toml (or --root) to a local disk; until then the copy driver is used".into()),
    ));
    let runtime_detail = runtime.map_or("unavailable".into(), |r| r.display().to_string());
    out.push(check(
        "runtime directory",
        runtime.is_some(),
        runtime_detail,
        Some("set XDG_RUNTIME_DIR to a directory of yours".into()),
    ));
    let probe = match runtime {
        Some(rt) => rootfs::probe_overlay(&rt.join(format!("probe-{}", std::process::id())), rt),
        None => OverlayProbe::Refused("no runtime directory to probe in".into()),
    };
    let (ok, detail) = match &probe {
        OverlayProbe::Works => (
            true,
            "the kernel mounts overlayfs in a user namespace".to_owned(),
        ),
        OverlayProbe::Refused(why) => (false, why.clone()),
    };
    out.push(check("kernel overlayfs in a user namespace", ok, detail, Some("needs Linux 5.11+ (or a distribution that allows it); nook falls back to the next rung".into())));
    let single = matches!(session.mapping, crate::sys::idmap::Mapping::Single { .. });
    rootfs::choose(rootfs::Inputs {
        driver: crate::sandbox::spec::Driver::Auto,
        store_fs: fs,
        probe: Some(&probe),
        single,
        fuse: rootfs::fuse_usable(),
        shared: false,
    })
    .describe()
}

fn device_checks(out: &mut Vec<Check>) {
    let fuse = nix::unistd::access(
        "/dev/fuse",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    out.push(check(
        "/dev/fuse usable",
        fuse,
        "/dev/fuse",
        Some("sudo chmod 0666 /dev/fuse (as distributions ship it)".into()),
    ));
    let tun = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    out.push(check(
        "/dev/net/tun usable",
        tun,
        "/dev/net/tun",
        Some("sudo chmod 0666 /dev/net/tun".into()),
    ));
    for tool in ["pasta", "slirp4netns"] {
        let found = which(tool);
        out.push(check(
            if tool == "pasta" {
                "pasta"
            } else {
                "slirp4netns"
            },
            found.is_some(),
            found.unwrap_or_else(|| "not installed".into()),
            Some(format!(
                "sudo apt-get install {}",
                if tool == "pasta" {
                    "passt"
                } else {
                    "slirp4netns"
                }
            )),
        ));
    }
    match crate::container::cgroup::delegated_dir() {
        Ok(d) => out.push(check("delegated cgroup v2", true, d.display().to_string(), None)),
        Err(e) => out.push(check("delegated cgroup v2", false, e.0, Some("boot with cgroup v2 and run under systemd --user with Delegate=yes; --memory, --cpus and --pids-limit need it".into()))),
    }
}

fn which(tool: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

pub fn info(session: &Session, a: InfoArgs) -> Result<i32> {
    let mut checks = Vec::new();
    userns_checks(&mut checks);
    mapping_checks(&session.mapping, &mut checks);
    let runtime = crate::config::runtime_dir().ok();
    let rootfs = store_checks(session, runtime.as_deref(), &mut checks);
    device_checks(&mut checks);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let ids = match &session.mapping {
        Mapping::Root => "root".to_owned(),
        Mapping::Range { .. } => "subordinate range (newuidmap/newgidmap)".to_owned(),
        Mapping::Single { why, .. } => format!("single mapping ({why}): {SINGLE}"),
    };
    let network = crate::net::describe(
        runtime
            .as_deref()
            .unwrap_or(std::path::Path::new("/nonexistent")),
    );
    // Filtering needs the kernel's seccomp; /proc shows the field only where it is built in.
    let seccomp = if std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
    {
        "docker's default profile (--security-opt seccomp=unconfined|PROFILE.json to change)"
    } else {
        "unavailable (kernel without CONFIG_SECCOMP_FILTER)"
    };
    match a.format.as_str() {
        "json" => {
            let v = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "kernel": kernel,
                "store": session.root,
                "shared_stores": session.shared,
                "runtime": runtime,
                "seccomp": seccomp,
                "rungs": {"ids": ids, "rootfs": rootfs, "network": network, "cgroups": if checks.iter().any(|c| c.name == "delegated cgroup v2" && c.ok) { "delegated" } else { "none" }},
                "checks": checks,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "text" | "" => {
            println!("nook {} on Linux {kernel}", env!("CARGO_PKG_VERSION"));
            println!("store:    {}", session.root.display());
            for dir in &session.shared {
                println!("shared:   {} (read-only image store)", dir.display());
            }
            println!("ids:      {ids}");
            println!("rootfs:   {rootfs}");
            println!("network:  {network}");
            println!("seccomp:  {seccomp}");
            println!();
            for c in &checks {
                println!(
                    "[{}] {}: {}",
                    if c.ok { " ok " } else { "MISS" },
                    c.name,
                    c.detail
                );
                if let Some(f) = &c.fix {
                    println!("       fix: {f}");
                }
            }
        }
        other => bail!("unknown --format {other:?}: use text or json"),
    }
    Ok(0)
}
