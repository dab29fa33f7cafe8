//! `attach`: a container's output on a hijacked connection (HTTP 101 `Upgrade: tcp`, or
//! docker's old plain 200), framed without a terminal, raw with one, from now (from the log's
//! start with `logs=1`) until the container's next exit.
//!
//! The docker CLI attaches before it starts the container, and a short command can start,
//! end and (AutoRemove) be removed between two polls. So the log file is opened at once,
//! made empty if the container has not run yet (the monitor appends to it): whatever the
//! container writes is read from the open file, even after its directory is gone.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use super::containers::has_tty;
use super::error::ApiError;
use super::http::{Request, Response};
use super::logs::{LogView, Tail};
use super::{Engine, route::Query};
use crate::container::{Containers, State};

/// The stream's content type: docker's multiplexed frames, or raw bytes under a terminal.
pub fn stream_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Whether the request asks to upgrade the connection (`Connection: Upgrade`, `Upgrade: tcp`).
pub fn wants_upgrade(req: &Request) -> bool {
    let has = |h: &str, v: &str| {
        req.header(h)
            .is_some_and(|x| x.split(',').any(|p| p.trim().eq_ignore_ascii_case(v)))
    };
    has("connection", "upgrade") && req.header("upgrade").is_some()
}

pub fn attach(e: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let c = e.containers();
    let r = c.get(id)?;
    let q: &Query = &req.query;
    let tty = has_tty(&r);
    let view = LogView::live(q.flag("stdout"), q.flag("stderr"), tty);
    let path = c.dir_of(&r.id).join("container.log");
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|err| ApiError::Internal(format!("cannot open the log of {}: {err}", r.name)))?;
    if !q.flag("logs") {
        file.seek(SeekFrom::End(0))
            .map_err(|err| ApiError::Internal(format!("cannot read the log: {err}")))?;
    }
    let stream = q.flag("stream");
    let id = r.id.clone();
    let mut tail = Tail::new(path, file);
    let watch = RunWatch {
        before: (r.started, r.monitor),
        seen_run: r.state == State::Running,
    };
    Ok(Response::hijack(
        stream_type(tty),
        wants_upgrade(req),
        move |h| {
            let mut out = h.conn;
            let mut watch = watch;
            let changes = super::watch::DirWatch::new(&c.dir_of(&id));
            loop {
                let ended = !stream || watch.ended(&c, &id);
                let batch = view.frames(&tail.next());
                if !batch.is_empty() {
                    out.write_all(&batch)?;
                }
                if ended || h.client_gone() {
                    return Ok(());
                }
                changes.wait(Duration::from_millis(50));
            }
        },
    ))
}

/// Whether the container has run and ended since the attach: its record gone, or not
/// running after it was seen running or after a new start (each start has a new monitor
/// process; the start time alone has only seconds).
struct RunWatch {
    before: (Option<u64>, Option<(i32, u64)>),
    seen_run: bool,
}

impl RunWatch {
    fn ended(&mut self, c: &Containers, id: &str) -> bool {
        let Some(r) = c.load(id).ok().flatten().map(|x| c.refresh(x)) else {
            return true;
        };
        let running = r.state == State::Running;
        self.seen_run |= running || (r.started, r.monitor) != self.before;
        self.seen_run && !running
    }
}
