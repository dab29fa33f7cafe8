//! exec: instances kept in the server's memory (docker's are not persistent either), each
//! started as a `nook exec` child of the server whose output is relayed to the client on a
//! hijacked connection ([`super::relay`]), and whose exit code `GET /exec/{id}/json` reports.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::error::ApiError;
use super::http::{Request, Response};
use super::route::Query;
use super::{Engine, attach, relay};
use crate::container::State;

/// How many exec instances are kept before the ended ones are forgotten.
const MAX_KEPT: usize = 1024;

/// What an exec create asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecConfig {
    /// The container's full id.
    pub container: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The terminal's size at the start (rows, columns), as the CLI sends it.
    pub console: Option<(u16, u16)>,
}

/// One exec instance.
#[derive(Debug)]
struct Instance {
    config: ExecConfig,
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: Option<u32>,
    /// The master of its terminal, for resizes.
    pty: Option<Arc<OwnedFd>>,
}

/// The server's exec instances, by id.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, Instance>>);

impl Execs {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Instance) -> T) -> Result<T, ApiError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(id)
            .map(f)
            .ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {id}")))
    }

    /// Records the end of instance `id`.
    pub fn finish(&self, id: &str, code: i32) {
        let _ = self.with(id, |i| {
            i.running = false;
            i.exit_code = Some(code);
            i.pty = None;
        });
    }

    /// Records the start of instance `id`: its pid and terminal.
    pub fn started(&self, id: &str, pid: u32, pty: Option<Arc<OwnedFd>>) {
        let _ = self.with(id, |i| {
            i.running = true;
            i.pid = Some(pid);
            i.pty = pty;
        });
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// `ConsoleSize`: `[rows, columns]`, both set.
fn console_size(v: Option<&Value>) -> Option<(u16, u16)> {
    let a = v?.as_array()?;
    let n = |i: usize| a.get(i)?.as_u64().and_then(|x| u16::try_from(x).ok());
    Some((n(0)?, n(1)?)).filter(|(r, c)| *r > 0 && *c > 0)
}

/// An exec create body, read.
pub fn config_of(container: &str, body: &Value) -> Result<ExecConfig, ApiError> {
    let cmd = strings(body.get("Cmd"));
    if cmd.is_empty() {
        return Err(ApiError::BadRequest("No exec command specified".into()));
    }
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("Privileged") {
        return Err(ApiError::BadRequest(
            "Privileged is not supported by nook: rootless containers get no privileges beyond the user's".into(),
        ));
    }
    Ok(ExecConfig {
        container: container.to_owned(),
        cmd,
        env: strings(body.get("Env")),
        workdir: text("WorkingDir"),
        user: text("User"),
        tty: flag("Tty"),
        stdin: flag("AttachStdin"),
        stdout: flag("AttachStdout"),
        stderr: flag("AttachStderr"),
        console: console_size(body.get("ConsoleSize")),
    })
}

/// `nook exec` arguments for a start (`detach`: no terminal, no standard input).
pub fn exec_args(c: &ExecConfig, detach: bool) -> Vec<String> {
    let mut a = vec!["exec".to_owned()];
    if c.stdin && !detach {
        a.push("--interactive".into());
    }
    if c.tty && !detach {
        a.push("--tty".into());
    }
    if let Some(u) = &c.user {
        a.push(format!("--user={u}"));
    }
    a.extend(c.env.iter().map(|e| format!("--env={e}")));
    if let Some(w) = &c.workdir {
        a.push(format!("--workdir={w}"));
    }
    a.push("--".into());
    a.push(c.container.clone());
    a.extend(c.cmd.iter().cloned());
    a
}

pub fn create(e: &Engine, id: &str, body: &Value) -> Result<Response, ApiError> {
    let r = e.containers().get(id)?;
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            r.id
        )));
    }
    let config = config_of(&r.id, body)?;
    let exec_id = crate::container::new_id();
    let inst = Instance {
        config,
        started: false,
        running: false,
        exit_code: None,
        pid: None,
        pty: None,
    };
    let mut map = e.execs.0.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_KEPT {
        // Ended instances go first; their exit codes have been read, or never will be.
        map.retain(|_, i| i.exit_code.is_none());
    }
    map.insert(exec_id.clone(), inst);
    Ok(Response::json(201, &json!({ "Id": exec_id })))
}

pub fn start(e: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let detach = body.get("Detach").and_then(Value::as_bool).unwrap_or(false);
    let config = e.execs.with(id, |i| {
        let again = std::mem::replace(&mut i.started, true);
        (!again).then(|| i.config.clone())
    })?;
    let config = config.ok_or_else(|| {
        ApiError::Conflict(format!("exec instance {id} has already been started"))
    })?;
    let r = e.containers().get(&config.container)?;
    if r.state != State::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            r.id
        )));
    }
    let args = exec_args(&config, detach);
    let execs = e.execs.clone();
    let id = id.to_owned();
    if detach {
        let on_exit = {
            let (execs, id) = (e.execs.clone(), id.clone());
            move |code| execs.finish(&id, code)
        };
        relay::spawn_detached(e, &args, |pid| execs.started(&id, pid, None), on_exit)?;
        return Ok(Response::empty(200));
    }
    let child = relay::spawn(e, &args, &config)?;
    execs.started(&id, child.pid(), child.pty());
    let done = e.execs.clone();
    Ok(Response::hijack(
        attach::stream_type(config.tty),
        attach::wants_upgrade(req),
        move |h| {
            let code = child.relay(h, (config.stdout, config.stderr));
            done.finish(&id, code);
            Ok(())
        },
    ))
}

pub fn inspect(e: &Engine, id: &str) -> Result<Response, ApiError> {
    let v = e.execs.with(id, |i| {
        let c = &i.config;
        json!({
            "ID": id, "Running": i.running, "ExitCode": i.exit_code,
            "ProcessConfig": {"tty": c.tty, "entrypoint": c.cmd.first(),
                "arguments": c.cmd.get(1..).unwrap_or_default(), "privileged": false,
                "user": c.user.clone().unwrap_or_default()},
            "OpenStdin": c.stdin, "OpenStdout": c.stdout, "OpenStderr": c.stderr,
            "CanRemove": false, "ContainerID": c.container, "DetachKeys": "",
            "Pid": i.pid.unwrap_or(0),
        })
    })?;
    Ok(Response::json(200, &v))
}

pub fn resize(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let rows = q.number::<u16>("h")?.unwrap_or(0);
    let cols = q.number::<u16>("w")?.unwrap_or(0);
    let pty = e.execs.with(id, |i| i.pty.clone())?;
    if let Some(m) = pty {
        let size = crate::sys::process::WinSize { rows, cols };
        crate::sys::process::set_window_size(std::os::fd::AsFd::as_fd(&*m), size)
            .map_err(|err| ApiError::Internal(format!("cannot resize the terminal: {err}")))?;
    }
    Ok(Response::empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_request_becomes_nook_exec_flags() {
        let body = json!({"Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "User": "nobody",
            "WorkingDir": "/tmp", "Tty": true, "AttachStdin": true, "AttachStdout": true,
            "ConsoleSize": [40, 100]});
        let c = config_of("abc", &body).unwrap();
        assert_eq!(c.console, Some((40, 100)));
        assert_eq!(
            exec_args(&c, false),
            [
                "exec",
                "--interactive",
                "--tty",
                "--user=nobody",
                "--env=A=1",
                "--workdir=/tmp",
                "--",
                "abc",
                "sh",
                "-c",
                "echo hi"
            ]
        );
        assert_eq!(exec_args(&c, true)[1], "--user=nobody");
        assert_eq!(
            config_of("abc", &json!({"Cmd": []})).unwrap_err().status(),
            400
        );
    }
}
