//! One CDI spec file: JSON or YAML → a checked [`Spec`]. Everything a vendor (or whoever
//! wrote the directory) controls is checked here, before any of it reaches a plan: the
//! version, the kind and device names, and every path (absolute, no `..`, no NUL; device
//! nodes under /dev).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;

use super::CdiError;

/// The CDI versions nook reads (0.3.0 to 0.8.0; 1.0.0's netDevices are refused by the edits).
pub const VERSIONS: &[&str] = &[
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
];

/// A spec file larger than this is refused (NVIDIA's for eight GPUs is about 100 KiB).
pub const MAX_BYTES: u64 = 4 << 20;

/// A CDI spec.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a spec or device changes in the container.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Refused when present (resource control needs a cgroup nook does not have).
    #[serde(default)]
    pub intel_rdt: Option<serde_json::Value>,
    /// Refused when non-empty (no network devices in a rootless network namespace).
    #[serde(default)]
    pub net_devices: Vec<serde_json::Value>,
}

/// A device node: `path` in the container, `hostPath` (default: `path`) on the host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    pub host_path: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    pub permissions: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A mount (a bind mount; `type` other than bind is refused).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// An OCI hook.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

/// Reads and checks the spec at `path` (`.json`, or YAML for `.yaml`/`.yml`).
pub fn load(path: &Path) -> Result<Spec, CdiError> {
    let bad = |why: String| CdiError::BadSpec {
        path: path.display().to_string(),
        why,
    };
    // O_NONBLOCK: a FIFO planted in a spec directory must not hang the run.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_BYTES {
        return Err(bad(format!("larger than {} MiB", MAX_BYTES >> 20)));
    }
    let mut text = String::new();
    file.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    parse(&text, yaml).map_err(bad)
}

/// Parses and checks a spec's text.
pub fn parse(text: &str, yaml: bool) -> Result<Spec, String> {
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {} MiB", MAX_BYTES >> 20));
    }
    let spec: Spec = if yaml {
        // serde-saphyr's default budget bounds depth, anchors and aliases (no YAML bombs).
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    check(&spec)?;
    Ok(spec)
}

fn check(s: &Spec) -> Result<(), String> {
    if !VERSIONS.contains(&s.cdi_version.as_str()) {
        return Err(format!(
            "cdiVersion {:?} is not one nook reads ({})",
            s.cdi_version,
            VERSIONS.join(", ")
        ));
    }
    check_kind(&s.kind)?;
    if s.devices.is_empty() {
        return Err("it lists no devices".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &s.devices {
        check_name(&d.name)?;
        if !seen.insert(d.name.as_str()) {
            return Err(format!("device {:?} is listed twice", d.name));
        }
        check_edits(&d.container_edits).map_err(|e| format!("device {:?}: {e}", d.name))?;
    }
    check_edits(&s.container_edits)
}

/// `vendor.com/class`: a DNS-like vendor and a class of letters, digits, `-`, `_`, `.`.
pub fn check_kind(kind: &str) -> Result<(), String> {
    let err = || format!("kind {kind:?} is not VENDOR/CLASS (such as nvidia.com/gpu)");
    let (vendor, class) = kind.split_once('/').ok_or_else(err)?;
    let alnum_ends = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    let vendor_ok = alnum_ends(vendor)
        && vendor.len() <= 253
        && vendor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    let class_ok = alnum_ends(class)
        && class.len() <= 63
        && class
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if vendor_ok && class_ok {
        Ok(())
    } else {
        Err(err())
    }
}

/// A device name: letters, digits, `-`, `_`, `.`, `:`, starting and ending alphanumeric.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 253
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "device name {name:?} is invalid: use letters, digits, '-', '_', '.' and ':'"
        ))
    }
}

/// An absolute path without `..`, NUL or an empty name, and not `/` itself.
pub fn check_path(what: &str, p: &str) -> Result<(), String> {
    let ok = p.starts_with('/')
        && p.len() <= 4096
        && !p.contains('\0')
        && !p.trim_end_matches('/').is_empty()
        && !p.split('/').any(|c| c == "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {p:?} must be an absolute path without '..' (and not /)"
        ))
    }
}

/// Whether `p` lies below /dev.
pub fn under_dev(p: &str) -> bool {
    p.strip_prefix("/dev/")
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

fn check_env(e: &str) -> Result<(), String> {
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(format!("environment entry {e:?} is not NAME=VALUE")),
    }
}

fn check_edits(e: &ContainerEdits) -> Result<(), String> {
    for v in &e.env {
        check_env(v)?;
    }
    for n in &e.device_nodes {
        check_path("device node", &n.path)?;
        if !under_dev(&n.path) {
            return Err(format!("device node {:?} is not below /dev", n.path));
        }
        if let Some(h) = &n.host_path {
            check_path("device node hostPath", h)?;
        }
        if let Some(t) = &n.kind
            && !matches!(t.as_str(), "c" | "b" | "u")
        {
            return Err(format!(
                "device node {:?}: type {t:?} is not c, b or u (nook binds existing nodes only)",
                n.path
            ));
        }
    }
    for m in &e.mounts {
        check_path("mount hostPath", &m.host_path)?;
        check_path("mount containerPath", &m.container_path)?;
    }
    for h in &e.hooks {
        check_path("hook path", &h.path)?;
        for v in &h.env {
            check_env(v)?;
        }
        if h.args.iter().any(|a| a.contains('\0')) {
            return Err(format!("hook {:?} has an argument with a NUL byte", h.path));
        }
        if h.timeout.is_some_and(|t| t <= 0) {
            return Err(format!("hook {:?}: timeout must be above zero", h.path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{
        "cdiVersion": "0.5.0", "kind": "example.com/gpu",
        "devices": [{"name": "0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/fake0", "hostPath": "/dev/null", "type": "c",
                             "major": 1, "minor": 3, "permissions": "rw"}]}}],
        "containerEdits": {"env": ["A=1"], "mounts": [{"hostPath": "/lib/x.so",
            "containerPath": "/usr/lib/x.so", "options": ["ro", "nosuid", "bind"]}],
            "hooks": [{"hookName": "createContainer", "path": "/bin/true", "timeout": 5}]}
    }"#;

    const YAML: &str = "
cdiVersion: 0.8.0
kind: example.com/gpu
annotations: {a: b}
devices:
  - name: gpu-0
    annotations: {x: y}
    containerEdits:
      deviceNodes:
        - path: /dev/fake0
  - name: all
    containerEdits:
      env: [ALL=1]
containerEdits:
  additionalGids: [44]
";

    #[test]
    fn json_and_yaml_parse() {
        let s = parse(JSON, false).unwrap();
        assert_eq!(s.kind, "example.com/gpu");
        assert_eq!(
            s.devices[0].container_edits.device_nodes[0]
                .host_path
                .as_deref(),
            Some("/dev/null")
        );
        assert_eq!(s.container_edits.hooks[0].timeout, Some(5));
        let y = parse(YAML, true).unwrap();
        assert_eq!(y.cdi_version, "0.8.0");
        assert_eq!(y.devices.len(), 2);
        assert_eq!(y.container_edits.additional_gids, [44]);
        // YAML reads JSON too, as the Go library does.
        assert_eq!(parse(JSON, true).unwrap(), s);
    }

    #[test]
    fn hostile_specs_are_refused() {
        let with = |from: &str, to: &str| {
            let t = JSON.replace(from, to);
            assert_ne!(t, JSON, "{from}");
            parse(&t, false).unwrap_err()
        };
        assert!(with("0.5.0", "9.9.9").contains("cdiVersion"));
        assert!(with("example.com/gpu", "gpu").contains("kind"));
        assert!(with("\"name\": \"0\"", "\"name\": \"-x\"").contains("device name"));
        assert!(with("/dev/fake0", "/etc/fake0").contains("not below /dev"));
        assert!(with("/dev/fake0", "/dev/../etc/x").contains(".."));
        assert!(with("/dev/null", "dev/null").contains("absolute"));
        assert!(with("/usr/lib/x.so", "/").contains("not /"));
        assert!(with("/lib/x.so", "/lib/../../etc/shadow").contains(".."));
        assert!(with("\"A=1\"", "\"=1\"").contains("NAME=VALUE"));
        assert!(with("\"timeout\": 5", "\"timeout\": 0").contains("timeout"));
        assert!(with("\"type\": \"c\"", "\"type\": \"p\"").contains("type"));
        assert!(with("\"permissions\"", "\"colour\"").contains("colour"));
        assert!(parse(&format!("{{\"x\": \"{}\"}}", "a".repeat(5 << 20)), false).is_err());
        // Aliases that would expand a small file into a large one stop at the parser's budget.
        let bomb = format!(
            "cdiVersion: 0.8.0\nkind: example.com/gpu\nannotations: {{a: &a \"A={}\"}}\n\
             devices:\n  - name: x\n    containerEdits:\n      env: [{}]\n",
            "x".repeat(1024),
            vec!["*a"; 20000].join(", ")
        );
        let e = parse(&bomb, true).unwrap_err();
        assert!(e.contains("budget") || e.contains("alias"), "{e}");
    }

    #[test]
    fn a_fifo_or_a_directory_is_no_spec() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("x.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = d.path().join("y.yaml");
        std::fs::create_dir(&dir).unwrap();
        assert!(load(&dir).is_err());
    }
}
