//! Containers over the API: `run` (attached or `-d`, `-i`/`-t`) as docker runs it — create,
//! attach, wait, start, then the output until the container ends and its exit code — and
//! `create`, `start`, `exec`, `logs`.

use std::io::{self, IsTerminal};

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use super::container::{RunArgs, StartArgs};
use super::lifecycle::{ExecArgs, LogsArgs};
use super::run_config::{DriverArg, IpcArg, PidArg, PullPolicy, UsernsArg};
use crate::client::http::Body;
use crate::client::stream::{copy_raw, demux};
use crate::client::{Client, ClientError, Hijacked, enc};

/// `--memory` as docker reads it: a number with an optional b, k, m or g.
fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let mult: i64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => bail!("invalid size {s:?}: use a number with b, k, m or g"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

/// `-p [IP:][HOST_PORT:]PORT[/PROTO]` into the create body's ExposedPorts and PortBindings.
fn publish(
    specs: &[String],
    exposed: &mut Map<String, Value>,
    bindings: &mut Map<String, Value>,
) -> Result<()> {
    for spec in specs {
        let (addr, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
        let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
        let (port, host_port, ip) = match parts.as_slice() {
            [p] => (*p, "", ""),
            [p, h] => (*p, *h, ""),
            [p, h, i] => (*p, *h, *i),
            _ => bail!("invalid -p {spec:?}"),
        };
        if port.parse::<u16>().is_err() {
            bail!("invalid -p {spec:?}: the container port must be a number");
        }
        let key = format!("{port}/{proto}");
        exposed.insert(key.clone(), json!({}));
        let entry = bindings.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": ip.trim_matches(['[', ']']), "HostPort": host_port}));
        }
    }
    Ok(())
}

/// Environment entries: `K` alone takes nook's own value, as the local path does.
fn env_list(a: &RunArgs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read --env-file {}: {e}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    out.extend(crate::sandbox::env::expand_prefixes(
        &a.env,
        std::env::vars(),
    ));
    Ok(out
        .into_iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e),
            None => std::env::var(&e).ok().map(|v| format!("{e}={v}")),
        })
        .collect())
}

/// The create body's HostConfig of `run`/`create` flags.
fn host_config(a: &RunArgs, bindings: Map<String, Value>) -> Result<Value> {
    let mut host = json!({
        "AutoRemove": a.rm, "Binds": a.volume, "ReadonlyRootfs": a.read_only, "Init": a.init,
        "PortBindings": bindings, "PublishAllPorts": a.publish_all, "CapAdd": a.cap_add,
        "CapDrop": a.cap_drop, "SecurityOpt": a.security_opt, "GroupAdd": a.group_add,
        "Tmpfs": a.tmpfs.iter().map(|t| {
            let (p, o) = t.split_once(':').unwrap_or((t, ""));
            (p.to_owned(), json!(o))
        }).collect::<Map<_, _>>(),
    });
    if a.network != "default" {
        host["NetworkMode"] = json!(a.network);
    }
    if a.ipc == IpcArg::Host {
        host["IpcMode"] = json!("host");
    }
    if a.pid == PidArg::Host {
        host["PidMode"] = json!("host");
    }
    if let Some(m) = &a.memory {
        host["Memory"] = json!(parse_bytes(m)?);
    }
    if let Some(c) = a.cpus {
        host["NanoCpus"] = json!((c * 1e9) as i64);
    }
    if let Some(p) = a.pids_limit {
        host["PidsLimit"] = json!(p);
    }
    if let Some(size) = console_size().filter(|_| a.tty) {
        host["ConsoleSize"] = json!(size);
    }
    Ok(host)
}

/// The create body of `run`/`create` flags; a flag the API path does not carry is refused.
fn create_body(a: &RunArgs) -> Result<Value> {
    let local_only = [
        (!a.log_opt.is_empty(), "--log-opt"),
        (!a.ulimit.is_empty(), "--ulimit"),
        (!a.mount.is_empty(), "--mount"),
        (
            !matches!(a.userns, None | Some(UsernsArg::Auto)),
            "--userns",
        ),
        (
            !matches!(a.rootfs_driver, DriverArg::Auto),
            "--rootfs-driver",
        ),
        (
            a.preserve_fds.is_some() || !a.preserve_fd.is_empty(),
            "--preserve-fds",
        ),
    ];
    if let Some((_, flag)) = local_only.iter().find(|(set, _)| *set) {
        bail!("{flag} does not go over the API yet: unset -H/--context to run locally");
    }
    let (mut exposed, mut bindings) = (Map::new(), Map::new());
    publish(&a.publish, &mut exposed, &mut bindings)?;
    let host = host_config(a, bindings)?;
    let mut body = json!({
        "Image": a.image, "Env": env_list(a)?, "Tty": a.tty, "OpenStdin": a.interactive,
        "StdinOnce": a.interactive, "AttachStdin": a.interactive, "AttachStdout": !a.detach,
        "AttachStderr": !a.detach, "ExposedPorts": exposed, "HostConfig": host,
    });
    if !a.command.is_empty() {
        body["Cmd"] = json!(a.command);
    }
    for (key, v) in [
        ("Entrypoint", &a.entrypoint),
        ("WorkingDir", &a.workdir),
        ("User", &a.user),
        ("Hostname", &a.hostname),
    ] {
        if let Some(v) = v {
            body[key] = if key == "Entrypoint" {
                json!([v])
            } else {
                json!(v)
            };
        }
    }
    Ok(body)
}

/// Creates the container, pulling its image first when the daemon has none (docker's way).
fn create_pulling(c: &Client, a: &RunArgs) -> Result<String> {
    let body = create_body(a)?;
    let mut path = "/containers/create".to_owned();
    if let Some(n) = &a.name {
        path.push_str(&format!("?name={}", enc(n)));
    }
    if matches!(a.pull, PullPolicy::Always) {
        super::remote_io::pull_image(c, &a.image)?;
    }
    let v = match c.json("POST", &path, Some(&body)) {
        Err(ClientError::Api { status: 404, .. }) if !matches!(a.pull, PullPolicy::Never) => {
            eprintln!("Unable to find image '{}' locally", a.image);
            super::remote_io::pull_image(c, &a.image)?;
            c.json("POST", &path, Some(&body))?
        }
        other => other?,
    };
    match v["Id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("the daemon created a container without telling its id"),
    }
}

/// `nook create` over the API: the container's id.
pub fn create(c: &Client, a: RunArgs) -> Result<i32> {
    let id = create_pulling(c, &a)?;
    println!("{id}");
    Ok(0)
}

/// `nook run` over the API: `-d` prints the id; attached, the output and the exit code.
pub fn run(c: &Client, a: RunArgs) -> Result<i32> {
    let id = create_pulling(c, &a)?;
    if a.detach {
        c.json("POST", &format!("/containers/{id}/start"), None)?;
        println!("{id}");
        return Ok(0);
    }
    attached(c, &id, a.interactive, a.tty, a.rm)
}

/// Attach, wait, start; the output until the end; the container's exit code.
fn attached(c: &Client, id: &str, stdin: bool, tty: bool, removed: bool) -> Result<i32> {
    let stdin_q = if stdin { "&stdin=1" } else { "" };
    let h = c.upgrade(
        &format!("/containers/{id}/attach?stream=1&stdout=1&stderr=1{stdin_q}"),
        None,
    )?;
    let cond = if removed { "removed" } else { "next-exit" };
    let wait = c.call(
        "POST",
        &format!("/containers/{id}/wait?condition={cond}"),
        &[],
        Body::Empty,
    )?;
    // Without a terminal, the signals nook gets are the container's (docker's sig-proxy);
    // with one, ^C travels as a byte.
    if !tty {
        proxy_signals(c.clone(), id.to_owned());
    }
    c.json("POST", &format!("/containers/{id}/start"), None)?;
    if tty {
        resize(c, "containers", id);
    }
    pump(h, stdin, tty);
    let bytes = wait.body.read_limited(1 << 20)?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(msg) = v["Error"]["Message"].as_str().filter(|m| !m.is_empty()) {
        eprintln!("Error: {msg}");
    }
    match v["StatusCode"].as_i64() {
        Some(code) => Ok(code as i32),
        None => bail!("the daemon did not tell the container's exit code"),
    }
}

/// Sends SIGINT, SIGTERM, SIGHUP and SIGQUIT, when nook gets them, to the container. They
/// are blocked in this thread (and so in the threads it starts after) and taken by a waiter.
fn proxy_signals(c: Client, id: String) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        tracing::debug!("signals stay nook's own: {e}");
        return;
    }
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            let path = format!("/containers/{}/kill?signal={}", enc(&id), sig.as_str());
            if let Err(e) = c.json("POST", &path, None) {
                tracing::debug!("cannot pass {sig} on: {e}");
            }
        }
    });
}

/// Relays a hijacked stream: standard input in (with -i), the output out until it ends.
fn pump(h: Hijacked, stdin: bool, tty: bool) {
    let _raw = (tty && stdin).then(RawMode::enter);
    let Hijacked { output, mut input } = h;
    // Without -i the input half stays open until the output ends: closing it early would end
    // an ssh relay.
    let _input = if stdin {
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut input);
            let _ = input.close_write();
        });
        None
    } else {
        Some(input)
    };
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let done = if tty {
        copy_raw(output, &mut out)
    } else {
        demux(output, &mut out, &mut err)
    };
    if let Err(e) = done {
        tracing::debug!("the container's output ended early: {e}");
    }
}

/// The terminal on standard input in raw mode until dropped (for `-it`).
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios;
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            let _ =
                nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSADRAIN, s);
        }
    }
}

/// The terminal's size on standard output, as docker's `[height, width]`.
fn console_size() -> Option<[u16; 2]> {
    use std::os::fd::AsFd;
    let ws = crate::sys::process::window_size(io::stdout().as_fd())?;
    (ws.rows > 0 && ws.cols > 0).then_some([ws.rows, ws.cols])
}

/// Tells the daemon the terminal's size (`what`: `containers` or `exec`); a daemon that
/// cannot resize is no reason to stop.
fn resize(c: &Client, what: &str, id: &str) {
    if let Some([h, w]) = console_size() {
        let path = format!("/{what}/{}/resize?h={h}&w={w}", enc(id));
        if let Err(e) = c.json("POST", &path, None) {
            tracing::debug!("resize: {e}");
        }
    }
}

/// Whether a container has a terminal (its output is then raw, not framed).
fn has_tty(c: &Client, name: &str) -> Result<bool> {
    let v = c.json("GET", &format!("/containers/{}/json", enc(name)), None)?;
    Ok(v["Config"]["Tty"].as_bool().unwrap_or(false))
}

/// `nook start` over the API; `-a` attaches and ends with the container's exit code.
pub fn start(c: &Client, a: StartArgs) -> Result<i32> {
    let mut code = 0;
    for name in &a.containers {
        if a.attach {
            let tty = has_tty(c, name)?;
            code = attached(c, name, a.interactive, tty, false)?;
            continue;
        }
        c.json("POST", &format!("/containers/{}/start", enc(name)), None)?;
        println!("{name}");
    }
    Ok(code)
}

/// `nook exec` over the API: the command's output and exit code.
pub fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let mut body = json!({
        "AttachStdin": a.interactive, "AttachStdout": !a.detach, "AttachStderr": !a.detach,
        "Tty": a.tty, "Cmd": a.command, "Env": a.env,
    });
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(size) = console_size().filter(|_| a.tty) {
        body["ConsoleSize"] = json!(size);
    }
    let v = c.json(
        "POST",
        &format!("/containers/{}/exec", enc(&a.container)),
        Some(&body),
    )?;
    let Some(id) = v["Id"].as_str() else {
        bail!("the daemon made an exec without telling its id");
    };
    let start = format!("/exec/{}/start", enc(id));
    if a.detach {
        c.json("POST", &start, Some(&json!({"Detach": true, "Tty": a.tty})))?;
        return Ok(0);
    }
    let h = c.upgrade(&start, Some(&json!({"Detach": false, "Tty": a.tty})))?;
    if a.tty {
        resize(c, "exec", id);
    }
    pump(h, a.interactive, a.tty);
    let info = c.json("GET", &format!("/exec/{}/json", enc(id)), None)?;
    Ok(info["ExitCode"].as_i64().unwrap_or(-1) as i32)
}

/// `nook logs` over the API (`-f` follows until the container ends).
pub fn logs(c: &Client, a: LogsArgs) -> Result<i32> {
    let tty = has_tty(c, &a.container)?;
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        enc(&a.container),
        a.follow as u8,
        a.timestamps as u8,
        enc(&a.tail)
    );
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", super::lifecycle::since_secs(s)?));
    }
    let r = c.call("GET", &path, &[], Body::Empty)?;
    let (mut out, mut err) = (io::stdout(), io::stderr());
    if tty {
        copy_raw(r.body, &mut out)?;
    } else {
        demux(r.body, &mut out, &mut err)?;
    }
    Ok(0)
}
