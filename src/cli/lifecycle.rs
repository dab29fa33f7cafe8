//! Containers as objects: `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `top`, `rename`, `exec`,
//! `container prune`, `pause`/`unpause`, and the container side of `inspect`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Session;
use super::format::{human_age, print_table};
use crate::container::lifecycle::{self, LifecycleError};
use crate::container::logs::{self, Entry};
use crate::container::{Containers, Record, State};

fn containers(session: &Session) -> Containers {
    Containers::new(&session.root)
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// status=running|exited|created, name=TEXT, ancestor=IMAGE, id=PREFIX, label=KEY[=VALUE].
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

fn matches(r: &Record, filters: &[(String, String)]) -> bool {
    // docker: the same key several times is OR, different keys AND.
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.iter().all(|k| {
        filters
            .iter()
            .filter(|(fk, _)| fk == k)
            .any(|(_, v)| match *k {
                "status" => r.state.as_str() == v,
                "name" => r.name.contains(v.as_str()),
                "id" => r.id.starts_with(v.as_str()),
                "label" => r.has_label(v),
                "ancestor" => {
                    r.image == *v
                        || r.image.strip_suffix(":latest") == Some(v.as_str())
                        || v.strip_suffix(":latest") == Some(r.image.as_str())
                        || r.image_id.to_string() == *v
                        || r.image_id
                            .hex()
                            .starts_with(v.trim_start_matches("sha256:"))
                }
                _ => false,
            })
    })
}

fn ports_column(r: &Record) -> String {
    r.published()
        .iter()
        .map(|p| {
            format!(
                "{}->{}/{}",
                std::net::SocketAddr::new(p.host_ip, p.host_port),
                p.container_port,
                p.proto.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ps(session: &Session, a: PsArgs) -> Result<i32> {
    let mut filters = Vec::new();
    for f in &a.filter {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("invalid --filter {f:?}: expected KEY=VALUE"))?;
        if !matches!(k, "status" | "name" | "ancestor" | "id" | "label") {
            bail!("unsupported --filter key {k:?}: use status, name, ancestor, id or label");
        }
        filters.push((k.to_owned(), v.to_owned()));
    }
    let mut list: Vec<Record> = containers(session)
        .list_refreshed()
        .into_iter()
        .filter(|r| a.all || r.state == State::Running || !filters.is_empty())
        .filter(|r| matches(r, &filters))
        .collect();
    list.sort_by(|x, y| y.created.cmp(&x.created).then(x.id.cmp(&y.id)));
    if a.quiet {
        for r in &list {
            println!("{}", if a.no_trunc { &r.id[..] } else { &r.id[..12] });
        }
        return Ok(0);
    }
    let age = |t: i64| human_age(t);
    if a.format == "json" {
        for r in &list {
            let v = serde_json::json!({
                "Id": r.id, "Names": [r.name], "Image": r.image, "ImageID": r.image_id.to_string(),
                "Command": r.command, "Created": r.created, "State": r.state,
                "Status": lifecycle::status(r, age), "Ports": ports_column(r), "ExitCode": r.exit_code,
                "Pid": r.pid, "Note": r.note, "Labels": r.labels,
            });
            println!("{v}");
        }
        return Ok(0);
    }
    if a.format != "table" {
        bail!("unsupported --format {:?}: use table or json", a.format);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let mut cmd = shell_words(&r.command);
            if !a.no_trunc && cmd.chars().count() > 20 {
                cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
            }
            vec![
                if a.no_trunc {
                    r.id.clone()
                } else {
                    r.id[..12].to_owned()
                },
                r.image.clone(),
                format!("\"{cmd}\""),
                human_age(r.created as i64),
                lifecycle::status(r, age),
                ports_column(r),
                r.name.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(0)
}

pub(super) fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the log until the container ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (or "all").
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only lines since a time: RFC 3339, or a duration such as 10m, 1h30m, 45s.
    #[arg(long)]
    pub since: Option<String>,
    pub container: String,
}

/// Seconds since the epoch for `--since`.
pub(super) fn since_secs(s: &str) -> Result<i64> {
    if let Some(t) = super::format::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .with_context(|| format!("invalid --since {s:?}"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid --since {s:?}: use RFC 3339 or a duration like 10m"),
        };
    }
    if !num.is_empty() {
        bail!("invalid --since {s:?}: a duration needs a unit (s, m, h, d)");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(now - total)
}

fn show(e: &Entry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    if e.stream == "stderr" {
        let _ = std::io::stderr().write_all(text.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
}

pub fn logs(session: &Session, a: LogsArgs) -> Result<i32> {
    let c = containers(session);
    let r = c.get(&a.container)?;
    if !r.detached {
        bail!(
            "container {} ran in the foreground: its output went to the terminal, not to a log",
            r.name
        );
    }
    let since = a.since.as_deref().map(since_secs).transpose()?;
    let path = c.dir_of(&r.id).join("container.log");
    let mut entries = logs::read_all(&path);
    if let Some(t) = since {
        entries.retain(|e| super::format::parse_rfc3339(&e.time).is_some_and(|x| x >= t));
    }
    if a.tail != "all" {
        let n: usize = a
            .tail
            .parse()
            .with_context(|| format!("invalid --tail {:?}", a.tail))?;
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    for e in &entries {
        show(e, a.timestamps);
    }
    let _ = std::io::stdout().flush();
    if !a.follow {
        return Ok(0);
    }
    // Follow: read what is appended (from the current end), until the container ends.
    let mut file = std::fs::File::open(&path).ok();
    let mut pos = file
        .as_mut()
        .and_then(|f| f.seek(SeekFrom::End(0)).ok())
        .unwrap_or(0);
    let mut pending = Vec::new();
    loop {
        let running = c
            .load(&r.id)?
            .map(|x| c.refresh(x).state == State::Running)
            .unwrap_or(false);
        // A rotation starts a new file: go back to its start.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() < pos) {
            file = std::fs::File::open(&path).ok();
            pos = 0;
        }
        if let Some(f) = file.as_mut() {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
                pos += buf.len() as u64;
                pending.extend_from_slice(&buf);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let done: Vec<u8> = pending.drain(..=end).collect();
                    for e in logs::parse(&done[..]) {
                        show(&e, a.timestamps);
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        } else {
            file = std::fs::File::open(&path).ok();
        }
        if !running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A signal by name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .with_context(|| format!("invalid signal {s}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name).with_context(|| format!("invalid signal {s:?}"))
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Signal to send first (default: the image's StopSignal, else SIGTERM).
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Each name, or an error line; returns the status (1 when any failed).
pub(super) fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> i32 {
    let mut code = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {}", super::error_line(&e));
                code = 1;
            }
        }
    }
    code
}

pub fn stop(session: &Session, a: StopArgs) -> Result<i32> {
    let c = containers(session);
    let explicit = a.signal.as_deref().map(parse_signal).transpose()?;
    Ok(each(&a.containers, |n| {
        let r = c.get(n)?;
        let sig = explicit.unwrap_or_else(|| stop_signal(&r));
        let running = r.state == State::Running;
        lifecycle::stop(&c, &r, sig, Duration::from_secs(a.time))?;
        if running {
            c.event("stop", &r, &[]);
        }
        Ok(())
    }))
}

/// The image's StopSignal, as recorded at run time, else SIGTERM.
fn stop_signal(r: &Record) -> nix::sys::signal::Signal {
    r.config
        .pointer("/Config/StopSignal")
        .and_then(|v| v.as_str())
        .and_then(|s| parse_signal(s).ok())
        .unwrap_or(nix::sys::signal::Signal::SIGTERM)
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal (default KILL).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn kill(session: &Session, a: KillArgs) -> Result<i32> {
    let c = containers(session);
    let sig = parse_signal(&a.signal)?;
    Ok(each(&a.containers, |n| {
        let r = c.get(n)?;
        lifecycle::signal(&r, sig)?;
        c.event("kill", &r, &[("signal", &(sig as i32).to_string())]);
        Ok(())
    }))
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove its anonymous volumes.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn rm(session: &Session, a: RmArgs) -> Result<i32> {
    let c = containers(session);
    let runtime = crate::config::runtime_dir()?;
    Ok(each(&a.containers, |n| {
        let r = match c.get(n) {
            Ok(r) => r,
            Err(crate::container::ContainerError::NotFound(_)) if a.force => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        lifecycle::remove(&c, &r, a.force, (&runtime, &session.mapping))?;
        if a.volumes {
            let vols = crate::container::volumes::Volumes::new(&session.root);
            let users = super::volume::volume_users(&c);
            for u in r.volumes.iter().filter(|u| u.anonymous) {
                vols.remove(&u.name, &users, &session.mapping)?;
            }
        }
        Ok(())
    }))
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn wait(session: &Session, a: WaitArgs) -> Result<i32> {
    let c = containers(session);
    let mut code = 0;
    for n in &a.containers {
        let r = c.get(n)?;
        match lifecycle::wait_exit(&c, &r.id, None) {
            Some(done) => println!("{}", done.exit_code.unwrap_or(-1)),
            None => {
                eprintln!("Error: container {n} was removed while waiting");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

pub fn rename(session: &Session, a: RenameArgs) -> Result<i32> {
    let store = session.store_without_userns()?;
    let _lock = store.lock("containers", true)?;
    let c = containers(session);
    let mut r = c.get(&a.container)?;
    if !crate::container::valid_name(&a.new_name) {
        return Err(crate::container::ContainerError::BadName(a.new_name).into());
    }
    if c.list()
        .iter()
        .any(|x| x.name == a.new_name && x.id != r.id)
    {
        return Err(crate::container::ContainerError::NameInUse(a.new_name).into());
    }
    let old = format!("/{}", r.name);
    r.name = a.new_name;
    c.save(&r)?;
    c.event("rename", &r, &[("oldName", &old)]);
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove every stopped container.
    Prune(PruneArgs),
    /// Write a container's filesystem as a tar archive.
    Export(super::export::ExportArgs),
    /// List what a container changed in its filesystem.
    Diff(super::diff::DiffArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask (nook never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

pub fn container(session: &Session, cmd: ContainerCommand) -> Result<i32> {
    match cmd {
        ContainerCommand::Ls(a) => ps(session, a),
        ContainerCommand::Export(a) => super::export::export(session, a),
        ContainerCommand::Diff(a) => super::diff::diff(session, a),
        ContainerCommand::Prune(_) => {
            let c = containers(session);
            let runtime = crate::config::runtime_dir()?;
            println!("Deleted Containers:");
            for r in c.list_refreshed() {
                if r.state != State::Running
                    && lifecycle::remove(&c, &r, false, (&runtime, &session.mapping)).is_ok()
                {
                    println!("{}", r.id);
                }
            }
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    pub container: String,
}

/// `nook top`: the processes in the container's pid namespace (with `--pid host`, the
/// host's: those in its user namespace instead, less the nook holding it).
pub fn top(session: &Session, a: TopArgs) -> Result<i32> {
    let r = containers(session).get(&a.container)?;
    let Some(pid) = r.entry_pid() else {
        bail!("container {} is not running", r.name);
    };
    let read = |p: &str, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
    let kind = match read(&pid.to_string(), "pid") {
        Some(ns) if Some(&ns) == read("self", "pid").as_ref() => "user",
        _ => "pid",
    };
    let ns = read(&pid.to_string(), kind)
        .with_context(|| format!("cannot read the namespaces of container {}", r.name))?;
    let monitor = r.monitor.map(|(p, _)| p);
    let mut rows = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // The `--init` reaper's namespaces are closed to us (it is not dumpable); it is the
        // container's pid 1 all the same.
        if Some(p) != r.pid
            && (Some(p) == monitor || read(&p.to_string(), kind) != Some(ns.clone()))
        {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        rows.push((p, vec![uid, p.to_string(), ppid, cmd.trim().to_owned()]));
    }
    rows.sort_by_key(|(p, _)| *p);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    print_table(&["UID", "PID", "PPID", "CMD"], &rows);
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `pause`/`unpause` need a cgroup freezer, which needs a delegated cgroup.
pub fn pause(session: &Session, a: PauseArgs, freeze: bool) -> Result<i32> {
    let c = containers(session);
    Ok(each(&a.containers, |n| {
        let r = c.get(n)?;
        if r.state != State::Running {
            return Err(LifecycleError::NotRunning(r.name).into());
        }
        crate::container::cgroup::freeze(&r.id, freeze)?;
        c.event(if freeze { "pause" } else { "unpause" }, &r, &[]);
        Ok(())
    }))
}

/// The container half of `nook inspect`.
pub fn inspect_json(c: &Containers, r: &Record) -> serde_json::Value {
    let age = |t: i64| human_age(t);
    let mut v = serde_json::json!({
        "Id": r.id,
        "Name": format!("/{}", r.name),
        "Created": logs::rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_secs(r.created)),
        "Path": r.command.first(),
        "Args": r.command.get(1..).unwrap_or_default(),
        "Image": r.image_id.to_string(),
        "State": {
            "Status": r.state,
            "Running": r.state == State::Running,
            "Pid": if r.state == State::Running { r.pid.unwrap_or(0) } else { 0 },
            "ExitCode": r.exit_code.unwrap_or(0),
            "StartedAt": r.started.map(|s| logs::rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_secs(s))),
            "FinishedAt": r.finished.map(|s| logs::rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_secs(s))),
            "Note": r.note,
            "Summary": lifecycle::status(r, age),
            "MonitorPid": r.monitor.map(|(p, _)| p),
        },
        "Driver": r.driver.map_or("", crate::rootfs::Rung::as_str),
        "LogPath": if r.detached { c.dir_of(&r.id).join("container.log").display().to_string() } else { String::new() },
        "NetworkSettings": {
            "Mode": r.network,
            "Ports": r.ports.iter().map(|p| (format!("{}/{}", p.container_port, p.proto.as_str()),
                serde_json::json!([{"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}])))
                .collect::<serde_json::Map<_, _>>(),
        },
    });
    if let (Some(obj), Some(cfg)) = (v.as_object_mut(), r.config.as_object()) {
        for (k, val) in cfg {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ExecArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Set an environment variable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(session: &Session, a: ExecArgs) -> Result<i32> {
    let c = containers(session);
    let r = c.get(&a.container)?;
    // docker's exec events name the command in the action.
    let shown = a.command.join(" ");
    c.event(&format!("exec_start: {shown}"), &r, &[]);
    let detach = a.detach;
    let req = crate::container::exec::ExecRequest {
        args: a.command,
        env: a.env,
        user: a.user,
        workdir: a.workdir,
        tty: a.tty,
        stdin: a.interactive,
        detach: a.detach,
        runtime: crate::config::runtime_dir()?,
    };
    match crate::container::exec::exec(&r, &req) {
        Ok(code) => {
            if !detach {
                c.event("exec_die", &r, &[("exitCode", &code.to_string())]);
            }
            Ok(code)
        }
        Err(e) => {
            let code = e.exit_code();
            eprintln!("Error: {}", super::error_line(&anyhow::Error::new(e)));
            Ok(code)
        }
    }
}
