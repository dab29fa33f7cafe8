//! `POST /containers/create`: docker's Config and HostConfig translated into `nook create`
//! flags (a pure function, tested), then nook re-executed to make the container exactly as
//! the CLI does. What this host cannot honour is a 400 naming the field.

use serde_json::{Value, json};

use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use super::{Engine, reexec};

/// Whether a JSON value asks for something (not null, false, 0, "" or empty).
fn set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

fn bad(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("{field} is not supported by nook: {why}"))
}

/// A string or a list of strings (docker accepts both for Cmd and Entrypoint).
fn words(v: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_owned).collect())),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::BadRequest(format!("{field}: expected strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{field}: expected a list of strings"
        ))),
    }
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn text<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Fields docker clients send zeroed unless asked; set, nook cannot honour them.
const HOST_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "Privileged",
        "rootless containers get no privileges beyond the user's",
    ),
    ("VolumesFrom", "use named volumes"),
    ("Links", "links are legacy; use a shared network mode"),
    ("ExtraHosts", "not yet"),
    ("Dns", "not yet"),
    ("DnsSearch", "not yet"),
    ("CpuShares", "use NanoCpus"),
    ("CpusetCpus", "not yet"),
    ("MemorySwap", "not yet"),
    ("ShmSize", "not yet"),
    ("Sysctls", "not yet"),
    ("PidMode", "use private or host"),
    ("IpcMode", "use private or host"),
];

/// `nook create` arguments for a create request.
pub fn create_args(
    name: Option<&str>,
    platform: Option<&str>,
    body: &Value,
) -> Result<Vec<String>, ApiError> {
    let cfg = body;
    let image = text(cfg, "Image")
        .ok_or_else(|| ApiError::BadRequest("Config.Image is required".into()))?;
    let mut a: Vec<String> = vec!["create".into(), "--pull=never".into()];
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        a.push(format!("--name={}", n.trim_start_matches('/')));
    }
    if let Some(p) = platform.filter(|p| !p.is_empty()) {
        a.push(format!("--platform={p}"));
    }
    config_flags(cfg, &mut a)?;
    if let Some(h) = cfg.get("HostConfig").filter(|h| h.is_object()) {
        host_flags(h, &mut a)?;
    }
    let entry = words(cfg.get("Entrypoint"), "Entrypoint")?;
    let mut cmd = words(cfg.get("Cmd"), "Cmd")?.unwrap_or_default();
    if let Some(ep) = entry {
        a.push(format!(
            "--entrypoint={}",
            ep.first().map_or("", String::as_str)
        ));
        cmd.splice(0..0, ep.into_iter().skip(1));
    }
    a.push(image.to_owned());
    a.extend(cmd);
    Ok(a)
}

fn config_flags(c: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    if let Some(labels) = c.get("Labels").filter(|l| !l.is_null()) {
        let labels = labels
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("Config.Labels: expected an object".into()))?;
        for (k, v) in labels {
            let v = v.as_str().ok_or_else(|| {
                ApiError::BadRequest(format!("Config.Labels: {k}: expected a string"))
            })?;
            a.push(format!("--label={k}={v}"));
        }
    }
    if set(c.get("Healthcheck")) {
        return Err(bad("Config.Healthcheck", "not yet"));
    }
    if let Some(s) = text(c, "StopSignal").filter(|s| !s.is_empty()) {
        a.push(format!("--stop-signal={s}"));
    }
    a.extend(strs(c.get("Env")).map(|e| format!("--env={e}")));
    for (flag, key) in [
        ("--workdir", "WorkingDir"),
        ("--user", "User"),
        ("--hostname", "Hostname"),
    ] {
        if let Some(v) = text(c, key) {
            a.push(format!("{flag}={v}"));
        }
    }
    if set(c.get("Tty")) {
        a.push("--tty".into());
    }
    if set(c.get("OpenStdin")) {
        // The monitor holds the input; attaches write to it through its socket.
        a.push("--interactive".into());
        if set(c.get("StdinOnce")) {
            a.push("--stdin-once".into());
        }
    }
    if let Some(vols) = c.get("Volumes").and_then(Value::as_object) {
        a.extend(vols.keys().map(|p| format!("--volume={p}")));
    }
    Ok(())
}

fn host_flags(h: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    for (k, why) in HOST_UNSUPPORTED {
        let asked = if matches!(*k, "PidMode" | "IpcMode") {
            mode_set(h, k)
        } else {
            set(h.get(*k))
        };
        if asked {
            return Err(bad(&format!("HostConfig.{k}"), why));
        }
    }
    if let Some(p) = h.pointer("/RestartPolicy/Name").and_then(Value::as_str)
        && !matches!(p, "" | "no")
    {
        return Err(bad(
            "HostConfig.RestartPolicy",
            "nook restarts nothing; a supervisor can",
        ));
    }
    if let Some(t) = h.pointer("/LogConfig/Type").and_then(Value::as_str)
        && !matches!(t, "" | "json-file" | "local")
    {
        return Err(bad(
            "HostConfig.LogConfig",
            &format!("the {t} driver; nook writes json-file logs"),
        ));
    }
    if let Some((rows, cols)) = console_size(h.get("ConsoleSize")) {
        a.push(format!("--console-size={rows}x{cols}"));
    }
    a.extend(strs(h.get("Binds")).map(|b| format!("--volume={b}")));
    a.extend(strs(h.get("CapAdd")).map(|c| format!("--cap-add={c}")));
    a.extend(strs(h.get("CapDrop")).map(|c| format!("--cap-drop={c}")));
    a.extend(strs(h.get("SecurityOpt")).map(|s| format!("--security-opt={s}")));
    a.extend(strs(h.get("GroupAdd")).map(|g| format!("--group-add={g}")));
    for (flag, key) in [
        ("--rm", "AutoRemove"),
        ("--init", "Init"),
        ("--read-only", "ReadonlyRootfs"),
        ("--publish-all", "PublishAllPorts"),
    ] {
        if set(h.get(key)) {
            a.push(flag.into());
        }
    }
    for (flag, key) in [("--ipc=host", "IpcMode"), ("--pid=host", "PidMode")] {
        if text(h, key) == Some("host") {
            a.push(flag.into());
        }
    }
    match text(h, "NetworkMode") {
        None | Some("default" | "bridge") => {}
        Some(m @ ("host" | "none")) => a.push(format!("--network={m}")),
        Some(m) => {
            return Err(bad(
                "HostConfig.NetworkMode",
                &format!("{m:?}: use bridge, host or none"),
            ));
        }
    }
    if let Some(t) = h.get("Tmpfs").and_then(Value::as_object) {
        for (path, opts) in t {
            match opts.as_str().filter(|o| !o.is_empty()) {
                Some(o) => a.push(format!("--tmpfs={path}:{o}")),
                None => a.push(format!("--tmpfs={path}")),
            }
        }
    }
    limit_flags(h, a)?;
    mount_flags(h, a)?;
    device_flags(h, a)?;
    port_flags(h, a)
}

/// `Devices` (host nodes) and `DeviceRequests`: docker's CLI sends `--device
/// VENDOR/CLASS=NAME` as a request with driver "cdi", `--gpus` as one with the "gpu"
/// capability, which nook maps onto NVIDIA's CDI kind as `nook run --gpus` does.
fn device_flags(h: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    let list = |k: &str| h.get(k).and_then(Value::as_array).into_iter().flatten();
    for d in list("Devices") {
        let host = text(d, "PathOnHost")
            .ok_or_else(|| ApiError::BadRequest("Devices: PathOnHost is required".into()))?;
        let inside = text(d, "PathInContainer").unwrap_or(host);
        match text(d, "CgroupPermissions") {
            Some(p) => a.push(format!("--device={host}:{inside}:{p}")),
            None => a.push(format!("--device={host}:{inside}")),
        }
    }
    for r in list("DeviceRequests") {
        let ids: Vec<&str> = strs(r.get("DeviceIDs")).collect();
        let gpu = strs(r.get("Capabilities").and_then(|c| c.get(0))).any(|c| c == "gpu");
        match text(r, "Driver") {
            Some("cdi") => a.extend(ids.iter().map(|id| format!("--device={id}"))),
            None | Some("nvidia") if gpu || text(r, "Driver").is_some() => {
                let count = r.get("Count").and_then(Value::as_i64).unwrap_or(0);
                if !ids.is_empty() {
                    a.push(format!("--gpus=device={}", ids.join(",")));
                } else if count < 0 {
                    a.push("--gpus=all".into());
                } else if count > 0 {
                    a.push(format!("--gpus={count}"));
                }
            }
            other => {
                return Err(bad(
                    "HostConfig.DeviceRequests",
                    &format!(
                        "driver {:?}: nook knows the cdi driver and GPUs (nvidia, or the gpu capability)",
                        other.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `ConsoleSize`: `[rows, columns]`, both set (the CLI sends `[0, 0]` without a terminal).
fn console_size(v: Option<&Value>) -> Option<(u16, u16)> {
    let a = v?.as_array()?;
    let n = |i: usize| a.get(i)?.as_u64().and_then(|x| u16::try_from(x).ok());
    Some((n(0)?, n(1)?)).filter(|(r, c)| *r > 0 && *c > 0)
}

/// PidMode/IpcMode: "" and "private" are nook's own behaviour ("shareable" is docker's
/// private ipc that others may join), and a mode of "host" is `--ipc host` or `--pid host`.
fn mode_set(h: &Value, k: &str) -> bool {
    text(h, k).is_some_and(|m| match k {
        "IpcMode" => !matches!(m, "private" | "shareable" | "host"),
        _ => !matches!(m, "private" | "host"),
    })
}

fn limit_flags(h: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    if let Some(m) = h.get("Memory").and_then(Value::as_i64).filter(|m| *m > 0) {
        a.push(format!("--memory={m}"));
    }
    if let Some(n) = h.get("NanoCpus").and_then(Value::as_i64).filter(|n| *n > 0) {
        a.push(format!("--cpus={}", n as f64 / 1e9));
    }
    if let Some(p) = h
        .get("PidsLimit")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
    {
        a.push(format!("--pids-limit={p}"));
    }
    for u in h
        .get("Ulimits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = text(u, "Name")
            .ok_or_else(|| ApiError::BadRequest("Ulimits: Name is required".into()))?;
        let soft = u.get("Soft").and_then(Value::as_i64).unwrap_or(0);
        let hard = u.get("Hard").and_then(Value::as_i64).unwrap_or(soft);
        a.push(format!("--ulimit={name}={soft}:{hard}"));
    }
    Ok(())
}

fn mount_flags(h: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    for m in h
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = text(m, "Type").unwrap_or("volume");
        if !matches!(kind, "bind" | "volume" | "tmpfs") {
            return Err(bad("HostConfig.Mounts", &format!("type {kind}")));
        }
        let target = text(m, "Target")
            .ok_or_else(|| ApiError::BadRequest("Mounts: Target is required".into()))?;
        let mut spec = format!("type={kind},target={target}");
        if let Some(s) = text(m, "Source") {
            spec.push_str(&format!(",source={s}"));
        }
        if set(m.get("ReadOnly")) {
            spec.push_str(",readonly");
        }
        a.push(format!("--mount={spec}"));
    }
    Ok(())
}

fn port_flags(h: &Value, a: &mut Vec<String>) -> Result<(), ApiError> {
    let Some(map) = h.get("PortBindings").and_then(Value::as_object) else {
        return Ok(());
    };
    for (port, binds) in map {
        let list = binds.as_array().cloned().unwrap_or_else(|| vec![json!({})]);
        for b in list {
            let ip = text(&b, "HostIp");
            let hp = text(&b, "HostPort").unwrap_or("");
            a.push(match ip {
                Some(ip) => format!("--publish={ip}:{hp}:{port}"),
                None if hp.is_empty() => format!("--publish={port}"),
                None => format!("--publish={hp}:{port}"),
            });
        }
    }
    Ok(())
}

pub fn create(e: &Engine, q: &Query, body: &Value) -> Result<Response, ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object (docker's container config)".into(),
        ));
    }
    let args = create_args(q.get("name"), q.get("platform"), body)?;
    let image = text(body, "Image").unwrap_or_default();
    let store = e
        .store()?
        .ok_or_else(|| ApiError::NotFound(format!("No such image: {image}")))?;
    if let Err(err) = store.find_image(image) {
        return Err(match err {
            crate::store::StoreError::NoSuchImage(_) => {
                ApiError::NotFound(format!("No such image: {image}"))
            }
            other => other.into(),
        });
    }
    let out = reexec::run(e, &args)?;
    let id = out.lines().last().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return Err(ApiError::Internal("nook create printed no id".into()));
    }
    Ok(Response::json(201, &json!({"Id": id, "Warnings": []})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_device_requests_become_device_and_gpus_flags() {
        let body = |host: Value| json!({"Image": "bb", "HostConfig": host});
        let a = create_args(
            None,
            None,
            &body(json!({
                "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x",
                             "CgroupPermissions": "rwm"}, {"PathOnHost": "/dev/zero"}],
                "DeviceRequests": [
                    {"Driver": "cdi", "DeviceIDs": ["example.com/gpu=0", "example.com/gpu=1"]},
                    {"Driver": "", "Count": -1, "DeviceIDs": null, "Capabilities": [["gpu"]]}]
            })),
        )
        .unwrap();
        assert_eq!(
            a[2..6],
            [
                "--device=/dev/null:/dev/x:rwm",
                "--device=/dev/zero:/dev/zero",
                "--device=example.com/gpu=0",
                "--device=example.com/gpu=1",
            ]
        );
        assert_eq!(a[6], "--gpus=all");
        let gpus = |r: Value| {
            create_args(None, None, &body(json!({"DeviceRequests": [r]})))
                .map(|a| a[2..a.len() - 1].to_vec())
        };
        assert_eq!(
            gpus(json!({"Count": 2, "Capabilities": [["gpu"]]})).unwrap(),
            ["--gpus=2"]
        );
        assert_eq!(
            gpus(json!({"Driver": "nvidia", "DeviceIDs": ["0", "GPU-1"]})).unwrap(),
            ["--gpus=device=0,GPU-1"]
        );
        assert!(gpus(json!({"Driver": "amd", "Count": 1})).is_err());
        assert!(gpus(json!({"Count": 1, "Capabilities": [["tpu"]]})).is_err());
    }

    #[test]
    fn a_docker_run_request_becomes_create_flags() {
        let body = json!({
            "Image": "bb", "Cmd": ["sleep", "30"], "Env": ["A=1"], "Tty": false, "Labels": {},
            "WorkingDir": "", "Entrypoint": null, "OpenStdin": false,
            "HostConfig": {"AutoRemove": true, "Binds": ["/a:/b:ro"], "NetworkMode": "bridge",
                "Privileged": false, "Tmpfs": {"/t": "size=1m"}, "CapAdd": ["NET_ADMIN"],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "RestartPolicy": {"Name": "no"}, "LogConfig": {"Type": ""}, "Memory": 0}
        });
        let a = create_args(Some("x"), None, &body).unwrap();
        assert_eq!(
            a,
            vec![
                "create",
                "--pull=never",
                "--name=x",
                "--env=A=1",
                "--volume=/a:/b:ro",
                "--cap-add=NET_ADMIN",
                "--rm",
                "--tmpfs=/t:size=1m",
                "--publish=8080:80/tcp",
                "bb",
                "sleep",
                "30"
            ]
        );
    }

    #[test]
    fn labels_and_stop_signal_become_flags() {
        let body = json!({"Image": "bb", "Labels": {"a": "1", "b.c": ""}, "StopSignal": "SIGUSR1"});
        let a = create_args(None, None, &body).unwrap();
        assert_eq!(
            a[2..],
            ["--label=a=1", "--label=b.c=", "--stop-signal=SIGUSR1", "bb"]
        );
        let bad = json!({"Image": "bb", "Labels": {"a": 1}});
        assert_eq!(create_args(None, None, &bad).unwrap_err().status(), 400);
    }

    #[test]
    fn entrypoint_lists_split_into_flag_and_command() {
        let body = json!({"Image": "bb", "Entrypoint": ["sh", "-c"], "Cmd": ["echo hi"]});
        let a = create_args(None, None, &body).unwrap();
        assert_eq!(a[2..], ["--entrypoint=sh", "bb", "-c", "echo hi"]);
    }

    #[test]
    fn docker_run_it_keeps_its_input_and_console_size() {
        let body = json!({"Image": "bb", "Tty": true, "OpenStdin": true, "StdinOnce": true,
            "HostConfig": {"ConsoleSize": [40, 120]}});
        let a = create_args(None, None, &body).unwrap();
        assert_eq!(
            a[2..],
            [
                "--tty",
                "--interactive",
                "--stdin-once",
                "--console-size=40x120",
                "bb"
            ]
        );
        let body = json!({"Image": "bb", "OpenStdin": false, "StdinOnce": true,
            "HostConfig": {"ConsoleSize": [0, 0]}});
        assert_eq!(create_args(None, None, &body).unwrap()[2..], ["bb"]);
    }

    #[test]
    fn what_nook_cannot_honour_is_named() {
        for (body, field) in [
            (
                json!({"Image": "bb", "HostConfig": {"Privileged": true}}),
                "HostConfig.Privileged",
            ),
            (
                json!({"Image": "bb", "HostConfig": {"Dns": ["10.0.0.1"]}}),
                "HostConfig.Dns",
            ),
            (
                json!({"Image": "bb", "HostConfig": {"NetworkMode": "mynet"}}),
                "HostConfig.NetworkMode",
            ),
            (
                json!({"Image": "bb", "HostConfig": {"RestartPolicy": {"Name": "always"}}}),
                "HostConfig.RestartPolicy",
            ),
            (
                json!({"Image": "bb", "HostConfig": {"IpcMode": "container:x"}}),
                "HostConfig.IpcMode",
            ),
        ] {
            let e = create_args(None, None, &body).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(field), "{e}");
        }
        assert_eq!(
            create_args(None, None, &json!({})).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn host_ipc_is_a_flag_and_private_modes_are_none() {
        let args = |mode: &str| {
            create_args(
                None,
                None,
                &json!({"Image": "bb", "HostConfig": {"IpcMode": mode}}),
            )
            .unwrap()
        };
        assert!(args("host").contains(&"--ipc=host".to_owned()));
        for private in ["", "private", "shareable"] {
            assert!(!args(private).iter().any(|a| a.starts_with("--ipc")));
        }
    }

    #[test]
    fn host_pid_is_a_flag_and_another_containers_is_refused() {
        let body = |mode: &str| json!({"Image": "bb", "HostConfig": {"PidMode": mode}});
        let args = create_args(None, None, &body("host")).unwrap();
        assert!(args.contains(&"--pid=host".to_owned()));
        for private in ["", "private"] {
            let args = create_args(None, None, &body(private)).unwrap();
            assert!(!args.iter().any(|a| a.starts_with("--pid")));
        }
        let e = create_args(None, None, &body("container:x")).unwrap_err();
        assert!(e.to_string().contains("HostConfig.PidMode"), "{e}");
    }
}
