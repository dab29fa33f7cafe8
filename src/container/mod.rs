//! Containers as records on disk: `containers/<id>/` in the store holds `config.json` (this
//! module's [`Record`], whose `image_id` gc respects) and the writable layer (`upper/`,
//! `work/`). What is cheap to make again lives in the runtime directory, on tmpfs where
//! XDG_RUNTIME_DIR is one: `containers/<id>/` there holds the mount point (`merged/`) and the
//! generated `/etc` files.
//!
//! `run` is the foreground lifecycle; detached containers and their monitor come with the
//! lifecycle issue and build on the same records.

pub mod attach;
pub mod cgroup;
pub mod cp;
pub mod exec;
mod fakeroot;
mod ids;
mod inspect;
mod launch;
pub mod lifecycle;
pub mod logs;
mod mapping;
mod members;

pub mod monitor;
mod report;
pub mod run;
mod supervise;
pub mod volumes;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use ids::{generate_name, new_id, valid_name};

use crate::digest::Digest;

/// What nook keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: Digest,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub state: State,
    #[serde(default)]
    pub pid: Option<i32>,
    /// With `--init`, the command under the reaper: exec, cp and top enter the container
    /// through it (see [`Record::entry_pid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<i32>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub finished: Option<u64>,
    /// The rootfs rung that was used (`""` before the first run).
    #[serde(default, with = "crate::rootfs::ladder::or_empty")]
    pub driver: Option<crate::rootfs::Rung>,
    /// The network driver that was used (`pasta`, `slirp4netns`, `host`, `none`).
    #[serde(default)]
    pub network: String,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<crate::net::Publish>,
    /// The record's format, for later versions of nook to read older ones.
    #[serde(default)]
    pub version: u32,
    /// The process that holds the container (`nook run` itself, or a detached run's
    /// monitor) and its start time in clock ticks, so that a reused pid is not taken for it.
    #[serde(default)]
    pub monitor: Option<(i32, u64)>,
    /// Seconds since the epoch when the command started.
    #[serde(default)]
    pub started: Option<u64>,
    /// Whether its output goes to `container.log` (detached).
    #[serde(default)]
    pub detached: bool,
    /// Why the state is what it is, when nook had to guess (a monitor that died).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The container's configuration as `nook inspect` shows it (docker's Config, Mounts,
    /// HostConfig fields).
    #[serde(default)]
    pub config: serde_json::Value,
    /// What `nook exec` needs of the container's process.
    #[serde(default)]
    pub exec: Option<exec::ExecSpec>,
    /// The volumes it uses.
    #[serde(default)]
    pub volumes: Vec<volumes::VolumeUse>,
    /// The `run`/`create` arguments it was made with, for `nook start`.
    #[serde(default)]
    pub create_args: Vec<String>,
    /// Its labels (`--label`, docker's `Config.Labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where a container is in its life, as records store it (`created`, `running`, `exited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Made by `nook create` (or a run that has not started its command yet).
    Created,
    /// Its command runs, held by a monitor.
    Running,
    /// Its command ended (or its monitor died).
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version of [`Record`] this nook writes.
pub const RECORD_VERSION: u32 = 1;

impl Record {
    /// A record in state `state` with nothing run yet.
    pub fn new(
        id: String,
        image: String,
        image_id: Digest,
        command: Vec<String>,
        created: u64,
        state: State,
    ) -> Record {
        Record {
            id,
            name: String::new(),
            image,
            image_id,
            command,
            created,
            state,
            pid: None,
            entry: None,
            exit_code: None,
            finished: None,
            driver: None,
            network: String::new(),
            ports: Vec::new(),
            version: RECORD_VERSION,
            monitor: None,
            started: None,
            detached: false,
            note: String::new(),
            config: serde_json::Value::Null,
            exec: None,
            volumes: Vec::new(),
            create_args: Vec::new(),
            labels: BTreeMap::new(),
        }
    }
}

impl Record {
    /// docker's `label` filter: `KEY` (the label is set) or `KEY=VALUE`.
    pub fn has_label(&self, filter: &str) -> bool {
        match filter.split_once('=') {
            Some((k, v)) => self.labels.get(k).is_some_and(|x| x == v),
            None => self.labels.contains_key(filter),
        }
    }

    /// The process through which exec, cp and top reach a running container's namespaces
    /// and root. The `--init` reaper is a fork of nook that never execs; it is not dumpable
    /// (so that the container cannot reach nook's binary through `/proc/1/exe`), and that
    /// also closes its `/proc/<pid>/ns` and `/root` to the user. The command under it was
    /// exec'd inside the container's user namespace, so its entries are open to the user,
    /// as the init's are without `--init`.
    pub fn entry_pid(&self) -> Option<i32> {
        if self.state != State::Running {
            return None;
        }
        self.entry.or(self.pid)
    }

    /// The ports published now: those of the run while it runs, none once it has stopped
    /// (as docker's `ps`: the forwarders are gone with the container).
    pub fn published(&self) -> &[crate::net::Publish] {
        if self.state == State::Running {
            &self.ports
        } else {
            &[]
        }
    }
}

/// Why a container record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot use container directory {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the container name {0:?} is already in use: remove that container or choose another --name"
    )]
    NameInUse(String),
    #[error(
        "invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{key:?} matches {count} containers: give more of the id, or the name")]
    Ambiguous { key: String, count: usize },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The containers directory of a store.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    pub fn new(store_root: &Path) -> Self {
        Containers {
            dir: store_root.join("containers"),
        }
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Every record that can be read.
    pub fn list(&self) -> Vec<Record> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            // `.removing-<id>`: claimed by a `nook rm`.
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| fs::read(e.path().join("config.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// The container named `key`, or whose id starts with it (docker's rules: an exact name
    /// or full id wins; a prefix must match one container only).
    pub fn find(&self, key: &str) -> Result<Record, ContainerError> {
        let all = self.list();
        if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
            return Ok(r.clone());
        }
        let matches: Vec<&Record> = all
            .iter()
            .filter(|r| !key.is_empty() && r.id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ContainerError::NotFound(key.to_owned())),
            many => Err(ContainerError::Ambiguous {
                key: key.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// Creates the container's directory and first record; an explicit name must be free, an
    /// empty one is generated. Callers hold the store's `containers` lock so that two runs
    /// cannot take one name.
    pub fn create(&self, record: &mut Record) -> Result<PathBuf, ContainerError> {
        let taken: Vec<String> = self.list().into_iter().map(|r| r.name).collect();
        if record.name.is_empty() {
            let base = generate_name(&record.id);
            let mut name = base.clone();
            let mut n = 1;
            while taken.contains(&name) {
                n += 1;
                name = format!("{base}{n}");
            }
            record.name = name;
        } else if !valid_name(&record.name) {
            return Err(ContainerError::BadName(record.name.clone()));
        } else if taken.contains(&record.name) {
            return Err(ContainerError::NameInUse(record.name.clone()));
        }
        let dir = self.dir_of(&record.id);
        for sub in ["", "upper", "work"] {
            let p = dir.join(sub);
            fs::create_dir(&p).map_err(io_at(&p))?;
        }
        self.save(record)?;
        self.event("create", record, &[]);
        Ok(dir)
    }

    /// Replaces the record (write and rename; no fsync on the hot path: a lost update after a
    /// power cut leaves an older but valid record).
    pub fn save(&self, record: &Record) -> Result<(), ContainerError> {
        let dir = self.dir_of(&record.id);
        let tmp = dir.join(".config.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(record).unwrap_or_default())
            .map_err(io_at(&tmp))?;
        let dst = dir.join("config.json");
        fs::rename(&tmp, &dst).map_err(io_at(&dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> Record {
        let mut r = Record::new(
            id.into(),
            "busybox".into(),
            Digest::sha256_of(b"x"),
            vec!["true".into()],
            1,
            State::Created,
        );
        r.name = name.into();
        r
    }

    #[test]
    fn stopped_containers_publish_nothing_and_init_ones_are_entered_through_the_command() {
        let mut r = record("abc", "web");
        r.ports = vec![crate::net::ports::parse("8080:80").unwrap()];
        r.pid = Some(10);
        assert!(r.published().is_empty(), "created");
        assert_eq!(r.entry_pid(), None, "created");
        r.state = State::Running;
        assert_eq!(r.published().len(), 1);
        assert_eq!(r.entry_pid(), Some(10), "without --init: the init");
        r.entry = Some(11);
        assert_eq!(r.entry_pid(), Some(11), "with --init: the command");
        r.state = State::Exited;
        assert!(r.published().is_empty(), "exited");
        assert_eq!(r.entry_pid(), None, "exited");
    }

    #[test]
    fn an_old_record_reads_and_writes_back_unchanged() {
        // As nook wrote it before the state and the driver were types.
        let old = serde_json::json!({
            "id": "abc", "name": "web", "image": "busybox",
            "image_id": Digest::sha256_of(b"x").to_string(),
            "command": ["sh"], "created": 1, "state": "exited", "pid": 7,
            "exit_code": 0, "finished": 3, "driver": "fuse", "network": "pasta",
            "ports": [], "version": 1, "monitor": [7, 100], "started": 2, "detached": true,
            "config": {"Config": {}}, "exec": null, "volumes": [], "create_args": ["-d"],
        });
        let r: Record = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(r.state, State::Exited);
        assert_eq!(r.driver, Some(crate::rootfs::Rung::Fuse));
        assert_eq!(serde_json::to_value(&r).unwrap(), old);
        for (state, text) in [(State::Created, "created"), (State::Running, "running")] {
            let mut v = old.clone();
            v["state"] = text.into();
            v["driver"] = "".into();
            let r: Record = serde_json::from_value(v.clone()).unwrap();
            assert_eq!((r.state, r.driver), (state, None));
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
    }

    #[test]
    fn found_by_name_or_unique_prefix() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("containers")).unwrap();
        let c = Containers::new(d.path());
        c.create(&mut record("abc123", "web")).unwrap();
        c.create(&mut record("abd456", "db")).unwrap();
        assert_eq!(c.find("web").unwrap().id, "abc123");
        assert_eq!(c.find("abd").unwrap().name, "db");
        assert_eq!(c.find("abc123").unwrap().name, "web");
        assert!(matches!(
            c.find("ab"),
            Err(ContainerError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(c.find("zz"), Err(ContainerError::NotFound(_))));
        assert!(matches!(c.find(""), Err(ContainerError::NotFound(_))));
    }

    #[test]
    fn names_are_unique_and_valid() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("containers")).unwrap();
        let c = Containers::new(d.path());
        let dir = c.create(&mut record("a1", "web")).unwrap();
        assert!(dir.join("upper").is_dir() && dir.join("work").is_dir());
        assert!(matches!(
            c.create(&mut record("b2", "web")),
            Err(ContainerError::NameInUse(_))
        ));
        assert!(matches!(
            c.create(&mut record("c3", "-bad")),
            Err(ContainerError::BadName(_))
        ));
        assert_eq!(c.list().len(), 1);
        // Generated names never collide: the same id twice gets a suffix.
        let (mut g1, mut g2) = (record("d4e5f6a7b8c9", ""), record("d4e5f6a7b8c9x", ""));
        c.create(&mut g1).unwrap();
        c.create(&mut g2).unwrap();
        assert_ne!(g1.name, g2.name);
        assert!(g2.name.starts_with(&g1.name));
    }
}
