//! `/_ping`, `/version` and `/info`.

use serde_json::json;

use super::Engine;
use super::error::ApiError;
use super::http::{Body, Response};
use super::route::{API_VERSION, MIN_API_VERSION};
use crate::container::State;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn ping() -> Response {
    Response {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: vec![
            ("Builder-Version", "1".into()),
            (
                "Cache-Control",
                "no-cache, no-store, must-revalidate".into(),
            ),
            ("Pragma", "no-cache".into()),
        ],
        body: Body::Bytes(b"OK".to_vec()),
    }
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// docker's architecture names for Rust's.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

pub fn version() -> Response {
    let details = json!({
        "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "n/a",
        "GoVersion": "n/a", "Os": "linux", "Arch": arch(), "KernelVersion": kernel(),
        "Experimental": "false", "BuildTime": "n/a",
    });
    Response::json(
        200,
        &json!({
            "Platform": {"Name": "nook"},
            "Components": [{"Name": "Engine", "Version": VERSION, "Details": details}],
            "Version": VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "n/a",
            "GoVersion": "n/a",
            "Os": "linux",
            "Arch": arch(),
            "KernelVersion": kernel(),
            "BuildTime": "n/a",
        }),
    )
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let kb = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| Some(l.strip_prefix("PRETTY_NAME=")?.trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The rootfs rung a run would take now (from the probe a run or `nook info` recorded).
fn driver(e: &Engine) -> String {
    let runtime = crate::config::runtime_dir().ok();
    let probe = runtime.as_deref().and_then(crate::rootfs::cached_probe);
    let fs = crate::rootfs::unsuitable_fs(if e.root.exists() {
        &e.root
    } else {
        std::path::Path::new("/tmp")
    });
    crate::rootfs::choose(crate::rootfs::Inputs {
        driver: crate::sandbox::spec::Driver::Auto,
        store_fs: fs,
        probe: probe.as_ref(),
        single: e.single_id,
        fuse: crate::rootfs::fuse_usable(),
        shared: false,
    })
    .rung
    .to_string()
}

pub fn info(e: &Engine) -> Result<Response, ApiError> {
    let list = e.containers().list_refreshed();
    let count = |s: State| list.iter().filter(|r| r.state == s).count();
    let images = match e.store()? {
        Some(s) => s.images()?.len(),
        None => 0,
    };
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Response::json(
        200,
        &json!({
            "ID": format!("nook-{}", nix::unistd::getuid()),
            "Containers": list.len(),
            "ContainersRunning": count(State::Running),
            "ContainersPaused": 0,
            "ContainersStopped": list.len() - count(State::Running),
            "Images": images,
            "Driver": driver(e),
            "DockerRootDir": e.root.display().to_string(),
            "OperatingSystem": os_name(),
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": ncpu,
            "MemTotal": mem_total(),
            "KernelVersion": kernel(),
            "Name": host,
            "ServerVersion": VERSION,
            "SecurityOptions": ["name=rootless", "name=seccomp,profile=default"],
            "CgroupVersion": cgroup,
            "CgroupDriver": "none",
            "LoggingDriver": "json-file",
            "Runtimes": {},
            "DefaultRuntime": "nook",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Log": ["json-file"]},
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false},
            "Labels": [],
            "Warnings": [],
        }),
    ))
}
