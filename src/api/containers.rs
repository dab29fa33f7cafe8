//! Containers: list and inspect (library reads); start, stop, kill, restart and remove
//! (re-executed nook, so each acts exactly as the CLI's verb does).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use super::{Engine, reexec};
use crate::container::logs::rfc3339_nanos;
use crate::container::{Record, State};

fn time(secs: Option<u64>) -> String {
    secs.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |s| rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(s)),
    )
}

/// docker's `Ports` list of a container summary.
fn ports(r: &Record) -> Vec<Value> {
    r.published()
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip.to_string(), "PrivatePort": p.container_port,
                   "PublicPort": p.host_port, "Type": p.proto.as_str()})
        })
        .collect()
}

fn filter_matches(r: &Record, key: &str, v: &str) -> bool {
    match key {
        "status" => r.state.as_str() == v,
        "name" => r.name.contains(v.trim_start_matches('/')),
        "id" => r.id.starts_with(v),
        "ancestor" => {
            r.image == v
                || r.image.strip_suffix(":latest") == Some(v)
                || v.strip_suffix(":latest") == Some(r.image.as_str())
                || r.image_id.to_string() == v
                || r.image_id
                    .hex()
                    .starts_with(v.trim_start_matches("sha256:"))
        }
        "label" => r.has_label(v),
        _ => false,
    }
}

/// docker: the same key several times is OR, different keys AND.
fn matches(r: &Record, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, _)| {
        filters
            .iter()
            .filter(|(fk, _)| fk == k)
            .any(|(_, v)| filter_matches(r, k, v))
    })
}

fn summary(r: &Record) -> Value {
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id.to_string(),
        "Command": r.command.join(" "),
        "Created": r.created,
        "Ports": ports(r),
        "Labels": r.labels,
        "State": r.state.as_str(),
        "Status": crate::container::lifecycle::status(r, crate::cli::format::human_age),
        "HostConfig": {"NetworkMode": network_mode(r)},
        "NetworkSettings": {"Networks": {}},
        "Mounts": r.config.get("Mounts").cloned().unwrap_or(json!([])),
    })
}

fn network_mode(r: &Record) -> String {
    match r.network.as_str() {
        "" | "default" | "slirp" | "pasta" => "bridge".to_owned(),
        other => other.to_owned(),
    }
}

pub fn list(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let filters = q.filters()?;
    for (k, _) in &filters {
        if !matches!(k.as_str(), "status" | "name" | "id" | "label" | "ancestor") {
            return Err(ApiError::BadRequest(format!("invalid filter '{k}'")));
        }
    }
    let all = q.flag("all");
    let mut list: Vec<Record> = e
        .containers()
        .list_refreshed()
        .into_iter()
        .filter(|r| all || r.state == State::Running || filters.iter().any(|(k, _)| k == "status"))
        .filter(|r| matches(r, &filters))
        .collect();
    list.sort_by(|x, y| y.created.cmp(&x.created).then(x.id.cmp(&y.id)));
    if let Some(n) = q.number::<i64>("limit")?.filter(|n| *n > 0) {
        list.truncate(n as usize);
    }
    Ok(Response::json(
        200,
        &Value::Array(list.iter().map(summary).collect()),
    ))
}

/// Whether the container was made with a terminal (from its run record, else its arguments).
pub fn has_tty(r: &Record) -> bool {
    if let Some(t) = r.config.pointer("/Config/Tty").and_then(Value::as_bool) {
        return t;
    }
    // Only nook's own flags count: the arguments up to the image, not the command's.
    r.create_args
        .iter()
        .take_while(|a| **a != r.image)
        .any(|a| a == "--tty" || (a.starts_with('-') && !a.starts_with("--") && a.contains('t')))
}

/// Whether the container was made with open input (`-i`; docker's OpenStdin).
pub fn has_stdin(r: &Record) -> bool {
    if let Some(i) = r
        .config
        .pointer("/Config/OpenStdin")
        .and_then(Value::as_bool)
    {
        return i;
    }
    r.create_args
        .iter()
        .take_while(|a| **a != r.image)
        .any(|a| {
            a == "--interactive" || (a.starts_with('-') && !a.starts_with("--") && a.contains('i'))
        })
}

/// docker's ContainerInspect: the record's own Config/HostConfig/Mounts, completed.
pub fn inspect_value(r: &Record) -> Value {
    let running = r.state == State::Running;
    let mut config = r.config.get("Config").cloned().unwrap_or_else(|| json!({}));
    if let Some(c) = config.as_object_mut() {
        c.entry("Image").or_insert(json!(r.image));
        c.entry("Cmd").or_insert(json!(r.command));
        c.insert("Tty".into(), json!(has_tty(r)));
        c.insert("Labels".into(), json!(r.labels));
        // Before the first start the record holds only its arguments (`docker start -ai`
        // reads OpenStdin).
        c.insert("OpenStdin".into(), json!(has_stdin(r)));
        let mut own = r.create_args.iter().take_while(|a| **a != r.image);
        let once = own.any(|a| a == "--stdin-once");
        c.insert("StdinOnce".into(), json!(once));
        c.entry("AttachStdout").or_insert(json!(false));
    }
    let mut host = r
        .config
        .get("HostConfig")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(h) = host.as_object_mut() {
        h.insert("NetworkMode".into(), json!(network_mode(r)));
        // nook keeps every container's output in its own log, read by `logs` (docker-py reads
        // the type to know whether logs can be read back).
        h.entry("LogConfig")
            .or_insert(json!({"Type": "json-file", "Config": {}}));
    }
    json!({
        "Id": r.id,
        "Created": time(Some(r.created)),
        "Path": r.command.first(),
        "Args": r.command.get(1..).unwrap_or_default(),
        "State": {
            "Status": r.state.as_str(), "Running": running, "Paused": false, "Restarting": false,
            "OOMKilled": false, "Dead": false,
            "Pid": if running { r.pid.unwrap_or(0) } else { 0 },
            "ExitCode": r.exit_code.unwrap_or(0), "Error": r.note,
            "StartedAt": time(r.started), "FinishedAt": time(r.finished),
        },
        "Image": r.image_id.to_string(),
        "Name": format!("/{}", r.name),
        "RestartCount": 0,
        "Driver": r.driver.map_or("", crate::rootfs::Rung::as_str),
        "Platform": "linux",
        "Config": config,
        "HostConfig": host,
        "Mounts": r.config.get("Mounts").cloned().unwrap_or(json!([])),
        "NetworkSettings": {
            "Ports": r.published().iter().map(|p| (format!("{}/{}", p.container_port, p.proto.as_str()),
                json!([{"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}])))
                .collect::<serde_json::Map<_, _>>(),
            "Networks": {},
        },
    })
}

pub fn inspect(e: &Engine, id: &str) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    Ok(Response::json(200, &inspect_value(&r)))
}

pub fn start(e: &Engine, id: &str) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state == State::Running {
        return Ok(Response::empty(304));
    }
    reexec::run(e, &reexec::strings(&["start", &r.id]))?;
    Ok(Response::empty(204))
}

fn stop_args(r: &Record, q: &Query) -> Result<Vec<String>, ApiError> {
    let mut args = vec!["stop".to_owned()];
    if let Some(t) = q.number::<i64>("t")? {
        // docker: -1 waits for ever; nook's stop takes seconds.
        args.push(format!("--time={}", if t < 0 { 86_400 } else { t }));
    }
    if let Some(s) = q.get("signal").filter(|s| !s.is_empty()) {
        args.push(format!("--signal={s}"));
    }
    args.push(r.id.clone());
    Ok(args)
}

pub fn stop(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state != State::Running {
        return Ok(Response::empty(304));
    }
    reexec::run(e, &stop_args(&r, q)?)?;
    Ok(Response::empty(204))
}

pub fn kill(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            r.id
        )));
    }
    let sig = q.get("signal").filter(|s| !s.is_empty()).unwrap_or("KILL");
    reexec::run(e, &reexec::strings(&["kill", "--signal", sig, &r.id]))?;
    Ok(Response::empty(204))
}

pub fn restart(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state == State::Running {
        reexec::run(e, &stop_args(&r, q)?)?;
    }
    reexec::run(e, &reexec::strings(&["start", &r.id]))?;
    Ok(Response::empty(204))
}

pub fn remove(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state == State::Running && !q.flag("force") {
        return Err(ApiError::Conflict(format!(
            "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
            r.name
        )));
    }
    let mut args = vec!["rm".to_owned()];
    if q.flag("force") {
        args.push("--force".into());
    }
    if q.flag("v") {
        args.push("--volumes".into());
    }
    args.push(r.id.clone());
    reexec::run(e, &args)?;
    Ok(Response::empty(204))
}

/// `GET /containers/{id}/export`: `nook export`'s tar of the container's filesystem, streamed.
pub fn export(e: &Engine, id: &str) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    super::ship::stream_stdout(e, &reexec::strings(&["export", "--", &r.id]))
}

/// `nook top`'s table (`UID PID PPID CMD`, the command last and holding spaces) as docker's
/// `{"Titles", "Processes"}`.
pub fn top_value(table: &str) -> Value {
    let mut lines = table.lines().filter(|l| !l.trim().is_empty());
    let titles: Vec<&str> = lines
        .next()
        .map(|h| h.split_whitespace().collect())
        .unwrap_or_default();
    let processes: Vec<Vec<String>> = lines
        .map(|l| {
            let mut rest = l.trim_start();
            let mut row = Vec::new();
            for _ in 1..titles.len() {
                let (cell, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                row.push(cell.to_owned());
                rest = tail.trim_start();
            }
            row.push(rest.trim_end().to_owned());
            row
        })
        .collect();
    json!({"Titles": titles, "Processes": processes})
}

/// `GET /containers/{id}/top`: nook lists `UID PID PPID CMD` of the container's pid namespace
/// (no `ps` runs); `ps_args` beyond docker's default `-ef` are refused rather than ignored.
pub fn top(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    if let Some(a) = q
        .get("ps_args")
        .filter(|a| !matches!(*a, "" | "-ef" | "-e" | "-f"))
    {
        return Err(ApiError::BadRequest(format!(
            "ps_args {a:?}: nook's top shows UID, PID, PPID and CMD and takes no ps options"
        )));
    }
    let r = e.containers().get(id)?;
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            r.id
        )));
    }
    let table = reexec::run(e, &reexec::strings(&["top", &r.id]))?;
    Ok(Response::json(200, &top_value(&table)))
}

/// `POST /containers/{id}/pause` and `unpause`: `nook pause`, which needs the container's own
/// cgroup (a delegated cgroup v2 subtree and a resource limit).
pub fn pause(e: &Engine, id: &str, freeze: bool) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            r.id
        )));
    }
    let verb = if freeze { "pause" } else { "unpause" };
    match reexec::run(e, &reexec::strings(&[verb, &r.id])) {
        Err(ApiError::Internal(m)) if m.contains("cgroup") => Err(ApiError::NotSupported(m)),
        other => other.map(|_| Response::empty(204)),
    }
}

/// `POST /containers/{id}/rename?name=`.
pub fn rename(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let name = q
        .get("name")
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("the new name (name=) is required".into()))?;
    let r = e.containers().get(id)?;
    reexec::run(e, &reexec::strings(&["rename", "--", &r.id, name]))?;
    Ok(Response::empty(204))
}

/// `GET /containers/{id}/changes` (docker diff): `nook diff --format json`, re-executed
/// because reading the writable layer needs the store's user namespace, which the server never
/// enters. No changes is `null`, as docker writes it.
pub fn changes(e: &Engine, id: &str) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    let out = reexec::run(
        e,
        &reexec::strings(&["diff", "--format", "json", "--", &r.id]),
    )?;
    let list: Vec<crate::build::layer::Change> = serde_json::from_str(out.trim())
        .map_err(|err| ApiError::Internal(format!("nook diff gave no list: {err}")))?;
    let body = if list.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(&list)
            .map_err(|err| ApiError::Internal(format!("cannot write the changes: {err}")))?
    };
    Ok(Response::json(200, &body))
}

/// `POST /containers/{id}/resize?h=&w=`: the new size goes to the container's monitor, which
/// holds its terminal. As docker: 409 when it is not running, 200 without a terminal.
pub fn resize(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let c = e.containers();
    let r = c.get(id)?;
    let (Some(rows), Some(cols)) = (q.number::<u16>("h")?, q.number::<u16>("w")?) else {
        return Err(ApiError::BadRequest("h and w are required".into()));
    };
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "Container {} is not running",
            r.id
        )));
    }
    if !has_tty(&r) {
        return Ok(Response::empty(200));
    }
    let size = crate::sys::process::WinSize { rows, cols };
    let monitor = crate::container::attach::Client::connect(&c.dir_of(&r.id)).map_err(|_| {
        ApiError::Conflict(format!(
            "the terminal of {} is not held by a monitor (a foreground nook run owns it)",
            r.name
        ))
    })?;
    monitor
        .send(&crate::container::attach::ToMonitor::Resize(size))
        .map_err(|err| ApiError::Internal(format!("cannot resize the terminal: {err}")))?;
    Ok(Response::empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_table_becomes_titles_and_processes() {
        let table =
            "UID   PID   PPID   CMD\n0     1     0      sleep 30\n1000  12    1      sh -c  x\n";
        let v = top_value(table);
        assert_eq!(v["Titles"], json!(["UID", "PID", "PPID", "CMD"]));
        assert_eq!(v["Processes"][0], json!(["0", "1", "0", "sleep 30"]));
        assert_eq!(v["Processes"][1], json!(["1000", "12", "1", "sh -c  x"]));
        assert_eq!(top_value("")["Processes"], json!([]));
    }
}
