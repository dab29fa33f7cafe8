//! Containers after `run`: their state as seen from outside (a monitor that died shows as
//! exited, never as running forever), signals, stop, wait and removal. No daemon: every
//! command reads the records and acts on the processes they name.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ContainerError, Containers, Record, State};
use crate::store::InUse;
use crate::sys::idmap::Mapping;
use crate::sys::process::start_time;

/// The images that containers use, each with the name of the first container found using it:
/// what `rmi` refuses and `image prune` keeps.
pub fn images_in_use(records: &[Record]) -> InUse {
    let mut out = InUse::new();
    for r in records {
        out.entry(r.image_id.clone())
            .or_insert_with(|| r.name.clone());
    }
    out
}

/// This process as a record's monitor.
pub fn this_monitor() -> Option<(i32, u64)> {
    let pid = std::process::id() as i32;
    start_time(pid).map(|t| (pid, t))
}

/// Whether the record's monitor still runs (the same process, not a reused pid).
pub fn monitor_alive(r: &Record) -> bool {
    r.monitor
        .is_some_and(|(pid, started)| start_time(pid) == Some(started))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first child of `pid` (the command an `--init` reaper started: the reaper forks it
/// before anything else, and the kernel lists children in the order they came).
pub fn first_child(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    first_pid(&text)
}

fn first_pid(text: &str) -> Option<i32> {
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
}

/// Why a lifecycle command failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is running: stop it first, or remove it with -f (it will be killed)")]
    Running(String),
    #[error("container {0} is being removed by another nook")]
    BeingRemoved(String),
    #[error("cannot signal container {name}")]
    Signal {
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("cannot remove container {name}")]
    Remove {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} did not stop")]
    StillRunning(String),
}

impl Containers {
    /// The record with its state checked against its monitor: running only while the monitor
    /// lives. A dead monitor's container is recorded as exited, with a note.
    pub fn refresh(&self, mut r: Record) -> Record {
        if r.state == State::Running && !monitor_alive(&r) {
            // The record may have been finished meanwhile by the monitor's last act.
            if let Ok(Some(fresh)) = self.load(&r.id)
                && fresh.state != State::Running
            {
                return fresh;
            }
            r.state = State::Exited;
            r.finished = Some(now());
            r.note = "nook's monitor of this container died; its exit code is unknown".into();
            let _ = self.save(&r);
        }
        r
    }

    /// The record of container `id`, if it still exists.
    pub fn load(&self, id: &str) -> Result<Option<Record>, ContainerError> {
        let path = self.dir_of(id).join("config.json");
        match std::fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ContainerError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The id of every container directory: records that cannot be read and containers
    /// being removed included.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| n.strip_prefix(".removing-").unwrap_or(&n).to_owned())
            .filter(|n| is_id(n))
            .collect()
    }

    /// Every record, refreshed.
    pub fn list_refreshed(&self) -> Vec<Record> {
        self.list().into_iter().map(|r| self.refresh(r)).collect()
    }

    /// Says that a client waits for `id`'s exit code (`.wait-<id>`): an auto-removed container's
    /// monitor then keeps it after the directory goes. Nothing is kept for a container no one
    /// waits for, so a removed container leaves no trace.
    pub fn want_exit(&self, id: &str) {
        let _ = std::fs::write(self.dir.join(format!(".wait-{id}")), b"");
    }

    /// Keeps an auto-removed container's exit code after its directory goes (`.exit-<id>`)
    /// when a client said it waits for it. Markers and codes older than an hour (of waiters
    /// that went away) go at the same time, so the directory is scanned only when one waits.
    pub fn save_exit(&self, id: &str, code: i32) {
        // The common case, no client waiting, costs one lookup on `run --rm`'s way out.
        if !self.dir.join(format!(".wait-{id}")).exists() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let hour = Duration::from_secs(3600);
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > hour);
                let name = e.file_name().to_string_lossy().into_owned();
                if old && (name.starts_with(".exit-") || name.starts_with(".wait-")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::write(self.dir.join(format!(".exit-{id}")), code.to_string());
    }

    /// The waiter is done with `id`: its marker and kept code go.
    pub fn forget_exit(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!(".wait-{id}")));
        let _ = std::fs::remove_file(self.dir.join(format!(".exit-{id}")));
    }

    /// Writes a container event to the store's journal (best effort: see [`crate::events`]).
    pub fn event(&self, action: &str, r: &Record, extra: &[(&str, &str)]) {
        let Some(root) = self.dir.parent() else {
            return;
        };
        let mut attrs = vec![("image", r.image.as_str()), ("name", r.name.as_str())];
        attrs.extend_from_slice(extra);
        crate::events::record(root, "container", action, &r.id, &attrs);
    }

    /// The exit code [`Containers::save_exit`] kept for a removed container.
    pub fn exit_of(&self, id: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join(format!(".exit-{id}"))).ok()?;
        text.trim().parse().ok()
    }

    /// The container `key` names, refreshed.
    pub fn get(&self, key: &str) -> Result<Record, ContainerError> {
        self.find(key).map(|r| self.refresh(r))
    }
}

/// Sends `sig` to the container's init. The user owns the container's user namespace, so
/// the signal reaches the init whatever uid it runs as there.
pub fn signal(r: &Record, sig: Signal) -> Result<(), LifecycleError> {
    let Some(pid) = r.pid.filter(|_| r.state == State::Running) else {
        return Err(LifecycleError::NotRunning(r.name.clone()));
    };
    kill(Pid::from_raw(pid), sig).map_err(|source| LifecycleError::Signal {
        name: r.name.clone(),
        source,
    })
}

/// Waits until the container is no longer running (or `timeout` passes); returns its record.
pub fn wait_exit(c: &Containers, id: &str, timeout: Option<Duration>) -> Option<Record> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut nap = Duration::from_millis(5);
    loop {
        let r = c.refresh(c.load(id).ok().flatten()?);
        if r.state != State::Running {
            return Some(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(r);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(100));
    }
}

/// `nook stop`: `sig` (the image's StopSignal or SIGTERM), then SIGKILL after `grace`.
pub fn stop(
    c: &Containers,
    r: &Record,
    sig: Signal,
    grace: Duration,
) -> Result<Record, LifecycleError> {
    if r.state != State::Running {
        return Ok(r.clone());
    }
    signal(r, sig)?;
    if let Some(done) = wait_exit(c, &r.id, Some(grace))
        && done.state != State::Running
    {
        return Ok(done);
    }
    let _ = signal(r, Signal::SIGKILL);
    match wait_exit(c, &r.id, Some(Duration::from_secs(10))) {
        Some(done) if done.state != State::Running => Ok(done),
        Some(_) => Err(LifecycleError::StillRunning(r.name.clone())),
        None => Ok(r.clone()),
    }
}

/// `nook rm [-f]`: claims the container by renaming its directory (one of two concurrent
/// removals wins), kills it with `force`, and removes its files: those in the store and
/// those in the `runtime` directory. Files the subordinate range owns are removed from
/// inside a user namespace that maps it.
pub fn remove(
    c: &Containers,
    r: &Record,
    force: bool,
    (runtime, mapping): (&Path, &Mapping),
) -> Result<(), LifecycleError> {
    if r.state == State::Running && !force {
        return Err(LifecycleError::Running(r.name.clone()));
    }
    let dir = c.dir_of(&r.id);
    let claimed = dir.with_file_name(format!(".removing-{}", r.id));
    if let Err(e) = std::fs::rename(&dir, &claimed) {
        return Err(if e.kind() == std::io::ErrorKind::NotFound {
            LifecycleError::BeingRemoved(r.name.clone())
        } else {
            LifecycleError::Remove {
                name: r.name.clone(),
                source: e,
            }
        });
    }
    if r.state == State::Running {
        let _ = signal(r, Signal::SIGKILL);
        // The monitor ends once the init has: its record is gone, so watch the processes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (monitor_alive(r) || r.pid.is_some_and(crate::sys::process::alive))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let failed = |source| LifecycleError::Remove {
        name: r.name.clone(),
        source,
    };
    remove_tree(&claimed, mapping).map_err(failed)?;
    c.event("destroy", r, &[]);
    // A monitor that ends now removes this directory as well: one of the two finds it gone.
    match remove_tree(&runtime_dir_of(runtime, &r.id), mapping) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
        _ => Ok(()),
    }
}

/// Whether `name` has the form of a container id (64 hex digits), so that it names nothing
/// but a container's directory when joined to a path.
fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container's directory in the runtime directory (mount point, generated `/etc` files,
/// the network helper's log).
pub fn runtime_dir_of(runtime: &Path, id: &str) -> std::path::PathBuf {
    runtime.join("containers").join(id)
}

/// Removes a container's directory, entering a user namespace that maps the subordinate
/// range where its files belong to it.
pub fn remove_tree(dir: &Path, mapping: &Mapping) -> std::io::Result<()> {
    match crate::sys::confined::remove_tree(dir) {
        Ok(()) => Ok(()),
        // Nothing there (a created container has no runtime directory yet): say so as it is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => as_store(mapping, || crate::sys::confined::remove_tree(dir)),
    }
}

/// Runs `f` where the store's files can be handled with their owners: in a child process
/// that enters a user namespace mapping the subordinate range (so that the caller stays
/// outside any namespace), or here with a single mapping.
pub fn as_store(mapping: &Mapping, f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    let Mapping::Range {
        helpers,
        uids,
        gids,
    } = mapping
    else {
        return f();
    };
    match crate::sys::process::clone_fork(nix::sched::CloneFlags::empty())? {
        None => {
            let ok = crate::sys::userns::enter(uids, gids, Some(helpers)).is_ok() && f().is_ok();
            crate::sys::process::exit_now(if ok { 0 } else { 1 })
        }
        Some(child) => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            _ => Err(std::io::Error::other(
                "the work in the store's user namespace failed",
            )),
        },
    }
}

/// docker's STATUS column: `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`.
pub fn status(r: &Record, age: impl Fn(i64) -> String) -> String {
    match r.state {
        State::Running => {
            let since = r.started.unwrap_or(r.created) as i64;
            format!("Up {}", age(since).trim_end_matches(" ago"))
        }
        State::Exited => {
            let code = r
                .exit_code
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
            let when = r.finished.map(|f| age(f as i64)).unwrap_or_default();
            format!("Exited ({code}) {when}").trim_end().to_owned()
        }
        State::Created => "Created".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auto_removed_containers_exit_code_outlives_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("containers")).unwrap();
        let c = Containers::new(dir.path());
        let id = "a".repeat(64);
        assert_eq!(c.exit_of(&id), None);
        // No one waits: nothing is kept.
        c.save_exit(&id, 7);
        assert_eq!(c.exit_of(&id), None);
        c.want_exit(&id);
        c.save_exit(&id, 7);
        assert_eq!(c.exit_of(&id), Some(7));
        assert!(c.list().is_empty(), "a tombstone is no container");
        assert!(c.ids().is_empty());
        c.forget_exit(&id);
        assert_eq!(c.exit_of(&id), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("containers"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn own_start_time_and_monitor() {
        let me = this_monitor().unwrap();
        assert_eq!(me.0, std::process::id() as i32);
        assert!(start_time(i32::MAX - 1).is_none());
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "id": "a", "name": "n", "image": "i",
            "image_id": crate::digest::Digest::sha256_of(b"x"),
            "command": [], "created": 1, "state": "running"
        }))
        .unwrap();
        assert!(!monitor_alive(&r), "no monitor recorded");
        r.monitor = Some(me);
        assert!(monitor_alive(&r));
        r.monitor = Some((me.0, me.1 + 1));
        assert!(!monitor_alive(&r), "a reused pid is not the monitor");
    }

    #[test]
    fn ids_of_every_container_directory_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let c = Containers::new(d.path());
        let (a, b) = ("a".repeat(64), "0123456789abcdef".repeat(4));
        for n in [
            a.clone(),
            format!(".removing-{b}"),
            "..".into(),
            "x".repeat(64),
        ] {
            std::fs::create_dir_all(d.path().join("containers").join(n)).unwrap();
        }
        let mut ids = c.ids();
        ids.sort();
        assert_eq!(ids, vec![b, a]);
    }

    #[test]
    fn first_pid_of_a_children_list() {
        assert_eq!(first_pid("4242 4250 \n"), Some(4242));
        assert_eq!(first_pid(""), None);
        assert_eq!(first_pid("x 12"), None);
        assert_eq!(first_pid("-3"), None);
    }

    #[test]
    fn images_in_use_names_one_container_each() {
        let rec = |name: &str, image: &[u8]| -> Record {
            serde_json::from_value(serde_json::json!({
                "id": name, "name": name, "image": "i",
                "image_id": crate::digest::Digest::sha256_of(image),
                "command": [], "created": 1, "state": "exited"
            }))
            .unwrap()
        };
        let used = images_in_use(&[rec("a", b"x"), rec("b", b"x"), rec("c", b"y")]);
        assert_eq!(used.len(), 2);
        assert_eq!(used[&crate::digest::Digest::sha256_of(b"x")], "a");
        assert_eq!(used[&crate::digest::Digest::sha256_of(b"y")], "c");
        assert!(images_in_use(&[]).is_empty());
    }

    #[test]
    fn status_lines() {
        let age = |_| "3 seconds ago".to_owned();
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "id": "a", "name": "n", "image": "i",
            "image_id": crate::digest::Digest::sha256_of(b"x"),
            "command": [], "created": 1, "state": "running", "started": 2
        }))
        .unwrap();
        assert_eq!(status(&r, age), "Up 3 seconds");
        r.state = State::Exited;
        r.exit_code = Some(137);
        r.finished = Some(5);
        assert_eq!(status(&r, age), "Exited (137) 3 seconds ago");
        r.exit_code = None;
        assert_eq!(status(&r, age), "Exited (unknown) 3 seconds ago");
        r.state = State::Created;
        assert_eq!(status(&r, age), "Created");
    }
}
