//! nook's events journal: `events.log` in the store, one JSON line per event in docker's
//! event shape (`Type`, `Action`, `Actor`, `time`, `timeNano`), so that `nook serve`'s
//! `/events` shows what any nook process did — the CLI, a container's monitor, a re-executed
//! nook — with no daemon watching. Writers append one line with one `write` (O_APPEND), so
//! lines of concurrent writers do not interleave. Past [`MAX_BYTES`] the journal is renamed
//! to `events.log.1` (one older file is kept). Writing is best effort: an event that cannot
//! be written is logged at debug level and never fails the operation that made it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The journal is rotated once it is this long.
pub const MAX_BYTES: u64 = 1 << 20;

pub fn journal(store_root: &Path) -> PathBuf {
    store_root.join("events.log")
}

fn rotated(store_root: &Path) -> PathBuf {
    store_root.join("events.log.1")
}

/// One event in docker's shape, stamped now.
pub fn event(kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let attrs: Map<String, Value> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let mut v = json!({
        "Type": kind,
        "Action": action,
        "Actor": {"ID": id, "Attributes": attrs},
        "scope": "local",
        "time": now.as_secs(),
        "timeNano": now.as_nanos() as u64,
    });
    // The fields of API versions before 1.22, which docker still sends for these two.
    if kind == "container" || kind == "image" {
        v["status"] = action.into();
        v["id"] = id.into();
        if let Some((_, image)) = attributes.iter().find(|(k, _)| *k == "image") {
            v["from"] = (*image).into();
        }
    }
    v
}

/// `repo:tag` as docker names it in events (`busybox:latest`, `localhost:5000/bb:1`).
pub fn familiar(tag: &str) -> String {
    match crate::reference::Reference::parse(tag) {
        Ok(r) => format!("{}:{}", r.familiar_repository(), r.tag_or_latest()),
        Err(_) => tag.to_owned(),
    }
}

/// An image event: `tag`, `untag` and `delete` name the image by id and the tag in `name`.
pub fn image(store_root: &Path, action: &str, id: &str, tag: Option<&str>) {
    let name = tag.map(familiar);
    let attrs: Vec<(&str, &str)> = name.iter().map(|n| ("name", n.as_str())).collect();
    record(store_root, "image", action, id, &attrs);
}

/// Appends an event to the store's journal; never fails.
pub fn record(store_root: &Path, kind: &str, action: &str, id: &str, attrs: &[(&str, &str)]) {
    if !store_root.is_dir() {
        return;
    }
    if let Err(e) = append(store_root, &event(kind, action, id, attrs)) {
        tracing::debug!("cannot write the event {kind} {action} {id}: {e}");
    }
}

fn append(store_root: &Path, v: &Value) -> std::io::Result<()> {
    let path = journal(store_root);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_BYTES) {
        // Two writers may both rotate: the second renames a short new journal over the
        // older one, losing old events but never a line being written.
        std::fs::rename(&path, rotated(store_root))?;
    }
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&line)
}

fn parse(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Every event the journal (and its rotated part) holds, oldest first.
pub fn read_all(store_root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for p in [rotated(store_root), journal(store_root)] {
        if let Ok(b) = std::fs::read(&p) {
            out.extend(parse(&b));
        }
    }
    out
}

/// Follows the journal from its current end: the events appended since the last look,
/// across a rotation (the old file is read to its end before the new one is opened).
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
}

impl Follower {
    pub fn at_end(store_root: &Path) -> Follower {
        let path = journal(store_root);
        let file = File::open(&path).ok().and_then(|mut f| {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).ok()?;
            Some(f)
        });
        Follower {
            path,
            file,
            pending: Vec::new(),
        }
    }

    /// Follows the journal from its start: the first [`appended`](Self::appended) returns what the
    /// rotated part and the journal hold, so nothing appended meanwhile is missed or doubled.
    pub fn at_start(store_root: &Path) -> Follower {
        let pending = std::fs::read(rotated(store_root))
            .map(|mut b| {
                if b.last().is_some_and(|c| *c != b'\n') {
                    b.push(b'\n');
                }
                b
            })
            .unwrap_or_default();
        let path = journal(store_root);
        Follower {
            file: File::open(&path).ok(),
            path,
            pending,
        }
    }

    fn read_more(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut self.pending);
        }
    }

    /// Whether the path now names another file than the one open.
    fn replaced(&self) -> bool {
        let Ok(now) = std::fs::metadata(&self.path) else {
            return false;
        };
        match self.file.as_ref().and_then(|f| f.metadata().ok()) {
            Some(open) => (open.dev(), open.ino()) != (now.dev(), now.ino()),
            None => true,
        }
    }

    /// The whole events appended since the last call.
    pub fn appended(&mut self) -> Vec<Value> {
        self.read_more();
        if self.replaced() {
            self.file = File::open(&self.path).ok();
            self.read_more();
        }
        match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let done: Vec<u8> = self.pending.drain(..=end).collect();
                parse(&done)
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), "container", "create", "abc", &[("image", "bb")]);
        record(d.path(), "image", "tag", "sha256:1", &[("name", "x:1")]);
        let all = read_all(d.path());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["Action"], "create");
        assert_eq!(all[0]["from"], "bb");
        assert_eq!(all[1]["Actor"]["Attributes"]["name"], "x:1");
        assert!(all[1]["timeNano"].as_u64().unwrap() >= all[0]["timeNano"].as_u64().unwrap());
    }

    #[test]
    fn a_missing_store_is_not_created() {
        let d = tempfile::tempdir().unwrap();
        record(&d.path().join("none"), "container", "start", "a", &[]);
        assert!(!d.path().join("none").exists());
    }

    #[test]
    fn the_follower_sees_new_events_across_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), "container", "old", "a", &[]);
        let mut f = Follower::at_end(d.path());
        assert!(f.appended().is_empty());
        record(d.path(), "container", "start", "a", &[]);
        assert_eq!(f.appended()[0]["Action"], "start");
        // A big journal rotates on the next write.
        let big = "x".repeat(MAX_BYTES as usize);
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal(d.path()))
            .unwrap()
            .write_all(big.as_bytes())
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal(d.path()))
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        record(d.path(), "container", "die", "a", &[]);
        assert!(rotated(d.path()).exists());
        let seen = f.appended();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["Action"], "die");
        assert_eq!(read_all(d.path()).last().unwrap()["Action"], "die");
        let mut all = Follower::at_start(d.path());
        let seen = all.appended();
        assert_eq!(seen.first().unwrap()["Action"], "old");
        assert_eq!(seen.last().unwrap()["Action"], "die");
        assert!(all.appended().is_empty());
    }
}
