//! The outer tar of an archive, unpacked into a private staging directory.
//!
//! Only regular files and directories are made, by names cleaned here (no absolute paths, no
//! `..`), in a directory no one else can enter, so nothing can be written outside it and no
//! later read can be redirected: there is no symlink to follow. Links and other entries are
//! remembered by name only, so that a manifest naming one is refused with what it is — except a
//! relative symbolic link that leads, inside the archive, to one of its regular files: that is
//! how `docker save` before Docker 25 writes a layer an image repeats, and it is resolved here,
//! by name, never on disk. Every
//! file is hashed (sha256) as it is written; a blob is later checked against that digest and
//! renamed into the store, never copied again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ArchiveError, JSON_LIMIT};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::store::Store;
use crate::sys::confined::remove_tree;

const BUF: usize = 256 << 10;

/// A regular file of the archive, as staged.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    pub sha256: Digest,
    pub size: u64,
}

/// The staged archive; the directory is removed when this is dropped.
pub struct Staged {
    dir: PathBuf,
    files: HashMap<String, StagedFile>,
    /// Entries that were not staged (links, devices), by name, with what they were.
    others: HashMap<String, &'static str>,
    /// Symbolic links' targets, by name.
    links: HashMap<String, Vec<u8>>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(
                "cannot remove the load's staging directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// An archive entry's name made relative and plain, or why it is refused; `None` for the
/// archive's root (`./`).
pub fn clean_name(raw: &[u8]) -> Result<Option<String>, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8")?;
    if name.starts_with('/') {
        return Err("an absolute path");
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("a path with '..'"),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

impl Staged {
    /// Unpacks the archive `input` into a new directory below the store's `tmp/`.
    pub fn unpack(store: &Store, input: &mut dyn Read) -> Result<Staged, ArchiveError> {
        let dir = store.tmp_path("load");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ArchiveError::Stage {
                entry: dir.display().to_string(),
                source,
            })?;
        let mut staged = Staged {
            dir,
            files: HashMap::new(),
            others: HashMap::new(),
            links: HashMap::new(),
        };
        let reader = super::inflate(input).map_err(ArchiveError::Read)?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(ArchiveError::Read)? {
            let mut entry = entry.map_err(ArchiveError::Read)?;
            staged.add(&mut entry)?;
        }
        Ok(staged)
    }

    fn add(&mut self, entry: &mut tar::Entry<'_, impl Read>) -> Result<(), ArchiveError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |why: &str| ArchiveError::Entry {
            entry: shown.clone(),
            why: why.to_owned(),
        };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let name = match clean_name(&raw).map_err(&refuse)? {
            Some(n) => n,
            None if kind.is_dir() => return Ok(()),
            None => return Err(refuse("an entry without a name")),
        };
        let stage_err = |source| ArchiveError::Stage {
            entry: shown.clone(),
            source,
        };
        if kind.is_dir() {
            self.make_dirs(&name).map_err(stage_err)?;
            return Ok(());
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_hard_link() {
                "a hard link"
            } else {
                "not a regular file"
            };
            if self.others.insert(name.clone(), what).is_some() || self.files.contains_key(&name) {
                return Err(refuse("the name appears twice"));
            }
            if kind.is_symlink()
                && let Some(target) = entry.link_name_bytes()
            {
                self.links.insert(name, target.into_owned());
            }
            return Ok(());
        }
        if self.files.contains_key(&name) || self.others.contains_key(&name) {
            return Err(refuse("the name appears twice"));
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.make_dirs(parent).map_err(stage_err)?;
        }
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(stage_err)?;
        let (sha256, size) = copy_hashing(entry, file).map_err(stage_err)?;
        self.files.insert(name, StagedFile { path, sha256, size });
        Ok(())
    }

    fn make_dirs(&self, rel: &str) -> io::Result<()> {
        let mut p = self.dir.clone();
        for c in rel.split('/') {
            p.push(c);
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the archive has an entry `name` of any kind.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains_key(name) || self.others.contains_key(name)
    }

    /// The regular file `name` that `what` refers to, with its name checked as an entry's.
    pub fn file(&self, what: &str, name: &str) -> Result<&StagedFile, ArchiveError> {
        let bad = |why| ArchiveError::BadName {
            what: what.to_owned(),
            entry: name.to_owned(),
            why,
        };
        let clean = clean_name(name.as_bytes())
            .map_err(bad)?
            .ok_or_else(|| bad("an empty name"))?;
        let clean = self.follow(clean);
        if let Some(kind) = self.others.get(&clean) {
            return Err(bad(match *kind {
                "a symbolic link" => "a symbolic link, not a file",
                "a hard link" => "a hard link, not a file",
                _ => "not a regular file",
            }));
        }
        self.files.get(&clean).ok_or_else(|| ArchiveError::Missing {
            what: what.to_owned(),
            entry: name.to_owned(),
        })
    }

    /// `name`, or the regular file its relative symbolic link leads to inside the archive (a few
    /// links deep). A link leading out of the archive, or to anything but a file, is left as
    /// it is, so the caller refuses it as a link.
    fn follow(&self, name: String) -> String {
        let mut at = name.clone();
        for _ in 0..8 {
            let Some(target) = self.links.get(&at) else {
                return at;
            };
            let parent = at.rsplit_once('/').map_or("", |(p, _)| p);
            let joined = match std::str::from_utf8(target) {
                Ok(t) if !t.starts_with('/') => format!("{parent}/{t}"),
                _ => return name,
            };
            match resolve_lexically(&joined) {
                Some(next) if self.files.contains_key(&next) => return next,
                Some(next) if self.links.contains_key(&next) => at = next,
                _ => return name,
            }
        }
        name
    }

    /// The file at `name`, checked to be the blob `digest` (and `size` bytes, when known).
    pub fn blob(
        &self,
        what: &str,
        name: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<&StagedFile, ArchiveError> {
        let f = self.file(what, name)?;
        if let Some(expected) = size.filter(|s| *s != f.size) {
            return Err(ArchiveError::Size {
                entry: name.to_owned(),
                what: what.to_owned(),
                expected,
                actual: f.size,
            });
        }
        let actual = if digest.algorithm() == Algorithm::Sha256 {
            f.sha256.clone()
        } else {
            hash_file(&f.path, digest.algorithm()).map_err(|source| ArchiveError::Stage {
                entry: name.to_owned(),
                source,
            })?
        };
        if &actual != digest {
            return Err(ArchiveError::Digest {
                entry: name.to_owned(),
                what: what.to_owned(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(f)
    }

    /// The bytes of the JSON file `name` (at most [`JSON_LIMIT`]).
    pub fn json_bytes(&self, what: &str, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let f = self.file(what, name)?;
        if f.size > JSON_LIMIT {
            return Err(ArchiveError::TooLarge {
                entry: name.to_owned(),
                size: f.size,
                limit: JSON_LIMIT,
            });
        }
        fs::read(&f.path).map_err(|source| ArchiveError::Stage {
            entry: name.to_owned(),
            source,
        })
    }
}

/// `a/b/../c` → `a/c`; `None` when `..` climbs above the archive's root.
fn resolve_lexically(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn copy_hashing(from: &mut impl Read, mut to: File) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((hasher.finish(), total))
}

fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; BUF];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_plain_or_refused() {
        assert_eq!(clean_name(b"./a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(clean_name(b"./").unwrap(), None);
        assert_eq!(clean_name(b"/etc/passwd").unwrap_err(), "an absolute path");
        assert_eq!(clean_name(b"a/../../x").unwrap_err(), "a path with '..'");
        assert_eq!(clean_name(b"..").unwrap_err(), "a path with '..'");
        assert!(clean_name(b"\xff").is_err());
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_lexically("a/../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(resolve_lexically("a/../../etc/passwd"), None);
        assert_eq!(resolve_lexically("./.."), None);
    }
}
