//! `logs` (docker's 8-byte frames unless the container has a terminal) and `wait` (the
//! status line sent when the container reaches the asked condition).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::error::ApiError;
use super::http::{Chunked, Response};
use super::route::Query;
use super::{Engine, containers::has_tty};
use crate::cli::format::parse_rfc3339;
use crate::container::logs::{self, Entry};
use crate::container::{Containers, State};

/// What `logs` (or `attach`) was asked to show.
pub(super) struct LogView {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    tty: bool,
    since: Option<i64>,
    until: Option<i64>,
}

impl LogView {
    /// The live output of a container (`attach`): no timestamps, no time bounds.
    pub(super) fn live(stdout: bool, stderr: bool, tty: bool) -> LogView {
        LogView {
            stdout,
            stderr,
            timestamps: false,
            tty,
            since: None,
            until: None,
        }
    }

    fn wanted(&self, e: &Entry) -> bool {
        let stream_ok = if e.stream == "stderr" {
            self.stderr
        } else {
            self.stdout
        };
        let t = parse_rfc3339(&e.time);
        stream_ok
            && self.since.is_none_or(|s| t.is_some_and(|x| x >= s))
            && self.until.is_none_or(|u| t.is_some_and(|x| x <= u))
    }

    /// One entry as the client reads it: framed (stream 1 or 2, big-endian length) without a
    /// terminal, raw with one.
    fn frame(&self, e: &Entry) -> Vec<u8> {
        let mut text = e.log.clone().into_bytes();
        if self.timestamps {
            let mut t = format!("{} ", e.time).into_bytes();
            t.extend(text);
            text = t;
        }
        if self.tty {
            return text;
        }
        let kind = if e.stream == "stderr" { 2u8 } else { 1u8 };
        let mut out = vec![kind, 0, 0, 0];
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend(text);
        out
    }

    /// The frames of the wanted entries, one after the other.
    pub(super) fn frames(&self, entries: &[Entry]) -> Vec<u8> {
        let mut batch = Vec::new();
        for e in entries.iter().filter(|e| self.wanted(e)) {
            batch.extend(self.frame(e));
        }
        batch
    }

    fn send_all(&self, c: &mut Chunked<'_>, entries: &[Entry]) -> std::io::Result<()> {
        c.send(&self.frames(entries))
    }
}

/// docker's `since`/`until`: seconds since the epoch, maybe with a fraction; 0 means unset.
fn epoch_param(q: &Query, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = q.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let secs = v.split('.').next().unwrap_or("").parse::<i64>().ok();
    let secs = secs
        .or_else(|| parse_rfc3339(v))
        .ok_or_else(|| ApiError::BadRequest(format!("invalid value for {key}: {v:?}")))?;
    Ok((secs != 0).then_some(secs))
}

pub fn logs(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let c = e.containers();
    let r = c.get(id)?;
    if !q.flag("stdout") && !q.flag("stderr") {
        return Err(ApiError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    if !r.detached && r.state != State::Created {
        return Err(ApiError::BadRequest(format!(
            "container {} ran in the foreground: its output went to the terminal, not to a log",
            r.name
        )));
    }
    let view = LogView {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: q.flag("timestamps"),
        tty: has_tty(&r),
        since: epoch_param(q, "since")?,
        until: epoch_param(q, "until")?,
    };
    let tail = match q.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("invalid value for tail: {t:?}")))?,
        ),
        None => None,
    };
    let follow = q.flag("follow");
    let path = c.dir_of(&r.id).join("container.log");
    let ctype = if view.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let id = r.id.clone();
    Ok(Response::stream(ctype, move |ch| {
        let mut entries: Vec<Entry> = logs::read_all(&path);
        entries.retain(|x| view.wanted(x));
        if let Some(n) = tail {
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
        view.send_all(ch, &entries)?;
        if follow {
            follow_log(&c, &id, path, &view, ch)?;
        }
        Ok(())
    }))
}

/// Sends what is appended to the log until the container stops running.
fn follow_log(
    c: &Containers,
    id: &str,
    path: PathBuf,
    view: &LogView,
    ch: &mut Chunked<'_>,
) -> std::io::Result<()> {
    let watch = super::watch::DirWatch::new(&c.dir_of(id));
    let mut tail = Tail::at_end(path);
    loop {
        let running = c
            .load(id)
            .ok()
            .flatten()
            .is_some_and(|x| c.refresh(x).state == State::Running);
        view.send_all(ch, &tail.next())?;
        if !running || ch.client_gone() {
            return Ok(());
        }
        watch.wait(Duration::from_millis(100));
    }
}

/// A log being followed: the whole entries appended since the last look. The open file is
/// kept, so a log removed with its container is still read to its end; a log that shrank
/// (rotated) is opened again by its path.
pub(super) struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    pos: u64,
    pending: Vec<u8>,
}

impl Tail {
    /// Follows `file` (at `path`) from its current offset.
    pub(super) fn new(path: PathBuf, mut file: std::fs::File) -> Tail {
        let pos = file.stream_position().unwrap_or(0);
        Tail {
            path,
            file: Some(file),
            pos,
            pending: Vec::new(),
        }
    }

    /// Follows the log at `path` from its end (from its start once it appears).
    fn at_end(path: PathBuf) -> Tail {
        let mut file = std::fs::File::open(&path).ok();
        let pos = file
            .as_mut()
            .and_then(|f| f.seek(SeekFrom::End(0)).ok())
            .unwrap_or(0);
        Tail {
            path,
            file,
            pos,
            pending: Vec::new(),
        }
    }

    /// The entries completed since the last call.
    pub(super) fn next(&mut self) -> Vec<Entry> {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() < self.pos) || self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
            self.pos = 0;
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return Vec::new();
        }
        self.pos += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let done: Vec<u8> = self.pending.drain(..=end).collect();
                logs::parse(&done[..])
            }
            None => Vec::new(),
        }
    }
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

fn condition(q: &Query) -> Result<Condition, ApiError> {
    match q.get("condition").unwrap_or("") {
        "" | "not-running" => Ok(Condition::NotRunning),
        "next-exit" => Ok(Condition::NextExit),
        "removed" => Ok(Condition::Removed),
        other => Err(ApiError::BadRequest(format!(
            "invalid condition: {other:?}: use not-running, next-exit or removed"
        ))),
    }
}

pub fn wait(e: &Engine, id: &str, q: &Query) -> Result<Response, ApiError> {
    let cond = condition(q)?;
    let c = e.containers();
    let r = c.get(id)?;
    let id = r.id.clone();
    c.want_exit(&id);
    Ok(Response::stream("application/json", move |ch| {
        let code = wait_for(&c, &id, cond, (r.started, r.monitor), &|| ch.client_gone());
        c.forget_exit(&id);
        let line = match code {
            Ok(n) => json!({"StatusCode": n, "Error": null}),
            Err(m) => json!({"StatusCode": -1, "Error": {"Message": m}}),
        };
        ch.send(format!("{line}\n").as_bytes())
    }))
}

/// Polls the record until `cond` holds; the exit code then. `before`: the record's start time
/// and monitor when the wait began.
fn wait_for(
    c: &Containers,
    id: &str,
    cond: Condition,
    before: (Option<u64>, Option<(i32, u64)>),
    gone: &dyn Fn() -> bool,
) -> Result<i64, String> {
    let watch = super::watch::DirWatch::new(&c.dir_of(id));
    let mut last: Option<i64> = None;
    let mut seen_run = false;
    loop {
        let Some(r) = c.load(id).ok().flatten().map(|x| c.refresh(x)) else {
            // An AutoRemove container's monitor keeps its exit code before it removes it.
            let last = c.exit_of(id).map(i64::from).or(last);
            return match cond {
                Condition::Removed => Ok(last.unwrap_or(0)),
                _ => last.ok_or_else(|| format!("container {id} was removed while waiting")),
            };
        };
        let running = r.state == State::Running;
        // Each start has a new monitor: the start time alone has only seconds.
        seen_run |= running || (r.started, r.monitor) != before;
        if !running {
            last = Some(r.exit_code.unwrap_or(0).into());
        }
        let done = match cond {
            Condition::NotRunning => !running,
            Condition::NextExit => seen_run && !running && r.state == State::Exited,
            Condition::Removed => false,
        };
        if done {
            return Ok(last.unwrap_or(0));
        }
        if gone() {
            return Err("the client went away".into());
        }
        watch.wait(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_length() {
        let view = LogView {
            stdout: true,
            stderr: true,
            timestamps: false,
            tty: false,
            since: None,
            until: None,
        };
        let e = Entry {
            log: "hi\n".into(),
            stream: "stderr".into(),
            time: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(view.frame(&e), b"\x02\0\0\0\0\0\0\x03hi\n");
        let raw = LogView { tty: true, ..view };
        assert_eq!(raw.frame(&e), b"hi\n");
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(condition(&Query::parse("")).unwrap(), Condition::NotRunning);
        assert_eq!(
            condition(&Query::parse("condition=removed")).unwrap(),
            Condition::Removed
        );
        assert_eq!(
            condition(&Query::parse("condition=x"))
                .unwrap_err()
                .status(),
            400
        );
    }
}
