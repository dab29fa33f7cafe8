//! COPY and ADD planned as layer entries, and their cache key.
//!
//! [`plan_copy`] selects the sources ([`super::select`]), decides where each lands (a file
//! into a directory dest keeps its name, else it is named dest; a directory's contents go
//! into dest), adds the missing parents of dest, and walks directories without following
//! their symlinks. Nothing is read but metadata and link targets.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::add;
use super::ignore::{Matcher, PatternError};
use super::select::{Confine, Resolved, Selected, resolve, select};
use crate::build::entry::{Entry, EntryKind, FileKind, Meta, Source, SourceTree};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::sys::confined::RootDir;

/// A COPY or ADD, its words expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRequest {
    /// Source paths, possibly with wildcards (and URLs for ADD).
    pub sources: Vec<String>,
    pub dest: String,
    /// The image's WORKDIR, `/` if none.
    pub workdir: String,
    /// `--chown`, as resolved ids.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<u32>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// The sources are the build context (not a stage or an image).
    pub from_context: bool,
    /// ADD: unpack local archives, allow URLs.
    pub add: bool,
    /// ADD `--checksum=sha256:HEX` for a URL.
    pub checksum: Option<String>,
}

/// Why a COPY or ADD cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("COPY failed: file not found in build context or excluded by .dockerignore: stat {0}")]
    NotFound(String),
    #[error("COPY failed: file not found: stat {0}")]
    NotFoundInImage(String),
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    #[error("COPY failed: no source files were specified: {0} matches nothing")]
    NoMatch(String),
    #[error("COPY failed: {0}")]
    Pattern(String),
    #[error("bad --exclude pattern")]
    Exclude(#[source] PatternError),
    #[error(
        "when using COPY with more than one source file, the destination must be a directory and end with a /: {0}"
    )]
    DestNotDir(String),
    #[error("source can't be a URL for COPY: {0} (use ADD)")]
    UrlInCopy(String),
    #[error("cannot read {path} from the source")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot download {url}")]
    Download {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("cannot save the download of {url}")]
    Save {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot tell a file name from the URL {0}: end dest with a file name")]
    UrlName(String),
    #[error("invalid --checksum {0:?}: expected sha256:HEX")]
    BadChecksum(String),
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("cannot unpack the archive {path} for ADD")]
    Unpack {
        path: String,
        #[source]
        source: crate::unpack::UnpackError,
    },
    #[error("cannot use the scratch directory {path}")]
    Scratch {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl From<io::Error> for CopyError {
    fn from(source: io::Error) -> Self {
        CopyError::Read {
            path: "the source tree".to_owned(),
            source,
        }
    }
}

/// Whether an ADD source is a URL.
pub(super) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Where a COPY lands in the image.
pub(super) struct Dest {
    /// The dest path in the image (symlinks in its parents resolved inside the image).
    pub path: PathBuf,
    /// Files go into it by name rather than being named it.
    pub is_dir: bool,
}

impl Dest {
    fn resolve(
        image: &dyn SourceTree,
        req: &CopyRequest,
        several: bool,
    ) -> Result<Dest, CopyError> {
        let d = &req.dest;
        let dir_syntax = d.ends_with('/') || d == "." || d.ends_with("/.") || d == "..";
        let full = if d.starts_with('/') {
            d.clone()
        } else {
            format!("{}/{d}", req.workdir)
        };
        let rel = super::glob::clean(&format!("/{full}"));
        let rel = Path::new(rel.trim_start_matches('/'));
        let (path, exists_dir) = match resolve(image, rel, true, Confine::Clamp)? {
            Resolved::Found(p, m) if m.kind == FileKind::Dir => (p, true),
            _ => {
                // Not a directory: keep the final name as written, its parents resolved.
                let parent = rel.parent().unwrap_or(Path::new(""));
                let base = match resolve(image, parent, true, Confine::Clamp)? {
                    Resolved::Found(p, _) | Resolved::Missing(p) => p,
                    Resolved::Outside => parent.to_owned(),
                };
                (
                    rel.file_name().map_or(base.clone(), |n| base.join(n)),
                    false,
                )
            }
        };
        // The root itself, even in an image tree that does not list it, is a directory.
        let exists_dir = exists_dir || path.as_os_str().is_empty();
        if several && !(dir_syntax || exists_dir) {
            return Err(CopyError::DestNotDir(d.clone()));
        }
        Ok(Dest {
            path,
            is_dir: dir_syntax || exists_dir || several,
        })
    }
}

/// Collects entries: one per path (a later one replaces an earlier), hard links joined.
pub(super) struct Planner<'a> {
    pub req: &'a CopyRequest,
    /// `None` where a planned directory was taken back.
    entries: Vec<Option<Entry>>,
    index: HashMap<PathBuf, usize>,
    links: HashMap<(u64, u64), PathBuf>,
    made: HashSet<PathBuf>,
    excludes: Matcher,
    now: i64,
}

impl<'a> Planner<'a> {
    pub fn new(req: &'a CopyRequest) -> Result<Self, CopyError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(Planner {
            req,
            entries: Vec::new(),
            index: HashMap::new(),
            links: HashMap::new(),
            made: HashSet::new(),
            excludes: Matcher::new(&req.exclude).map_err(CopyError::Exclude)?,
            now,
        })
    }

    pub fn push(&mut self, e: Entry) {
        match self.index.get(&e.path) {
            Some(&i) => self.entries[i] = Some(e),
            None => {
                self.index.insert(e.path.clone(), self.entries.len());
                self.entries.push(Some(e));
            }
        }
    }

    pub fn owner(&self, meta: &Meta) -> (u32, u32) {
        self.req.chown.unwrap_or((meta.uid, meta.gid))
    }

    /// The missing directories of `dir` and `dir` itself, 0755, owned by the chown ids.
    pub fn ensure_dir(&mut self, image: &dyn SourceTree, dir: &Path) -> io::Result<()> {
        let mut prefix = PathBuf::new();
        for c in dir.components() {
            prefix.push(c);
            if self.made.contains(&prefix) {
                continue;
            }
            self.made.insert(prefix.clone());
            if self.index.contains_key(&prefix) || image.stat(&prefix)?.is_some() {
                continue;
            }
            let (uid, gid) = self.req.chown.unwrap_or((0, 0));
            self.push(Entry {
                path: prefix.clone(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid,
                gid,
                mtime: self.now,
                xattrs: Vec::new(),
            });
        }
        Ok(())
    }

    /// A now-stamped file entry (ADD's downloads).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The entry for `rel` of `tree` at `path`; `None` for sockets.
    pub fn entry(
        &mut self,
        tree: &dyn SourceTree,
        rel: &Path,
        meta: &Meta,
        path: PathBuf,
    ) -> io::Result<Option<Entry>> {
        let kind = match meta.kind {
            FileKind::Dir => EntryKind::Dir,
            FileKind::File => {
                let first = (meta.nlink > 1)
                    .then(|| self.links.get(&meta.dev_ino).cloned())
                    .flatten();
                match first {
                    Some(first) => EntryKind::Hardlink(first),
                    None => {
                        if meta.nlink > 1 {
                            self.links.insert(meta.dev_ino, path.clone());
                        }
                        EntryKind::File {
                            size: meta.size,
                            source: tree.source(rel),
                        }
                    }
                }
            }
            FileKind::Symlink => EntryKind::Symlink(tree.read_link(rel)?),
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::CharDevice => EntryKind::CharDevice(meta.rdev.0, meta.rdev.1),
            FileKind::BlockDevice => EntryKind::BlockDevice(meta.rdev.0, meta.rdev.1),
            FileKind::Socket => return Ok(None),
        };
        let plain = matches!(meta.kind, FileKind::Dir | FileKind::File);
        let mode = match self.req.chmod {
            Some(m) if plain => m & 0o7777,
            _ => meta.mode,
        };
        let (uid, gid) = self.owner(meta);
        let xattrs = if plain { tree.xattrs(rel) } else { Vec::new() };
        Ok(Some(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime: meta.mtime,
            xattrs,
        }))
    }

    /// Whether `--exclude` drops the entry `below` (relative to the copied directory).
    fn excluded(&self, below: &Path) -> bool {
        self.excludes
            .matches(&super::glob::clean(&below.to_string_lossy()))
    }

    /// The contents of the directory `rel` of `tree`, below `dest`, depth first; returns
    /// whether anything was planned.
    pub fn walk(
        &mut self,
        tree: &dyn SourceTree,
        rel: &Path,
        below: &Path,
        dest: &Path,
    ) -> Result<bool, CopyError> {
        let read = |e: io::Error| CopyError::Read {
            path: rel.display().to_string(),
            source: e,
        };
        let mut any = false;
        for name in tree.read_dir(rel).map_err(read)? {
            let child = rel.join(&name);
            let child_below = below.join(&name);
            let Some(meta) = tree.stat(&child).map_err(read)? else {
                continue;
            };
            let path = dest.join(&name);
            let skip = self.excluded(&child_below);
            if meta.kind == FileKind::Dir {
                let look = !skip
                    || self
                        .excludes
                        .may_reinclude_below(&child_below.to_string_lossy());
                if !look {
                    continue;
                }
                let fresh = !self.index.contains_key(&path);
                if let Some(e) = self.entry(tree, &child, &meta, path.clone())? {
                    self.push(e);
                }
                let inner = self.walk(tree, &child, &child_below, &path)?;
                if skip && !inner && fresh {
                    // Only there for what a `!` pattern might have re-included: nothing was.
                    if let Some(i) = self.index.remove(&path) {
                        self.entries[i] = None;
                    }
                }
                any |= !skip || inner;
                continue;
            }
            if skip {
                continue;
            }
            if let Some(e) = self.entry(tree, &child, &meta, path)? {
                self.push(e);
                any = true;
            }
        }
        Ok(any)
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.entries.into_iter().flatten().collect()
    }
}

/// The entries of the layer a COPY/ADD makes: see the module docs.
pub fn plan_copy(
    tree: &dyn SourceTree,
    image: &dyn SourceTree,
    req: &CopyRequest,
    scratch: &Path,
) -> Result<Vec<Entry>, CopyError> {
    let confine = if req.from_context {
        Confine::Refuse
    } else {
        Confine::Clamp
    };
    let (urls, locals): (Vec<String>, Vec<String>) =
        req.sources.iter().cloned().partition(|s| is_url(s));
    if let Some(u) = urls.first().filter(|_| !req.add) {
        return Err(CopyError::UrlInCopy(u.clone()));
    }
    let selected = select(tree, &locals, confine)?;
    let several = req.sources.len() > 1 || selected.len() + urls.len() > 1;
    let dest = Dest::resolve(image, req, several)?;
    let mut plan = Planner::new(req)?;
    for url in &urls {
        add::plan_url(&mut plan, image, url, &dest, scratch)?;
    }
    for (i, sel) in selected.iter().enumerate() {
        plan_selected(&mut plan, tree, image, sel, &dest, scratch, i)?;
    }
    Ok(plan.into_entries())
}

fn plan_selected(
    plan: &mut Planner<'_>,
    tree: &dyn SourceTree,
    image: &dyn SourceTree,
    sel: &Selected,
    dest: &Dest,
    scratch: &Path,
    n: usize,
) -> Result<(), CopyError> {
    if sel.meta.kind == FileKind::Dir {
        plan.ensure_dir(image, &dest.path)?;
        plan.walk(tree, &sel.rel, Path::new(""), &dest.path)?;
        return Ok(());
    }
    if plan.excluded(Path::new(&sel.name)) || plan.excluded(&sel.rel) {
        return Ok(());
    }
    if plan.req.add
        && sel.meta.kind == FileKind::File
        && add::plan_archive(plan, tree, image, sel, dest, scratch, n)?
    {
        return Ok(());
    }
    let path = if dest.is_dir {
        dest.path.join(&sel.name)
    } else {
        dest.path.clone()
    };
    if let Some(parent) = path.parent() {
        plan.ensure_dir(image, parent)?;
    }
    if let Some(e) = plan.entry(tree, &sel.rel, &sel.meta, path)? {
        plan.push(e);
    }
    Ok(())
}

/// The cache key of a COPY/ADD: sha256 over each selected entry's path (relative to its
/// source), kind, mode and owner as they will be written, link target and content. A URL
/// counts by its text and `--checksum` (it is not downloaded here).
pub fn checksum(tree: &dyn SourceTree, req: &CopyRequest) -> Result<Digest, CopyError> {
    let confine = if req.from_context {
        Confine::Refuse
    } else {
        Confine::Clamp
    };
    let (urls, locals): (Vec<String>, Vec<String>) = req
        .sources
        .iter()
        .cloned()
        .partition(|s| req.add && is_url(s));
    let mut h = Hasher::new(Algorithm::Sha256);
    for u in &urls {
        h.update(format!("url\0{u}\0{}\0", req.checksum.as_deref().unwrap_or("")).as_bytes());
    }
    let selected = select(tree, &locals, confine)?;
    let mut plan = Planner::new(req)?;
    for sel in &selected {
        h.update(b"source\0");
        if sel.meta.kind == FileKind::Dir {
            plan.walk(tree, &sel.rel, Path::new(""), Path::new(""))?;
        } else if let Some(e) = plan.entry(tree, &sel.rel, &sel.meta, PathBuf::from(&sel.name))? {
            plan.push(e);
        }
        for e in std::mem::replace(&mut plan, Planner::new(req)?).into_entries() {
            hash_entry(&mut h, &e)?;
        }
    }
    Ok(h.finish())
}

fn hash_entry(h: &mut Hasher, e: &Entry) -> Result<(), CopyError> {
    let (tag, link): (&str, Option<&Path>) = match &e.kind {
        EntryKind::Dir => ("dir", None),
        EntryKind::File { .. } => ("file", None),
        EntryKind::Symlink(t) => ("symlink", Some(t)),
        EntryKind::Hardlink(t) => ("hardlink", Some(t)),
        EntryKind::Fifo => ("fifo", None),
        EntryKind::CharDevice(..) => ("char", None),
        EntryKind::BlockDevice(..) => ("block", None),
        EntryKind::Whiteout => ("whiteout", None),
        EntryKind::Opaque => ("opaque", None),
    };
    use std::os::unix::ffi::OsStrExt;
    h.update(e.path.as_os_str().as_bytes());
    h.update(format!("\0{tag}\0{:o}\0{}:{}\0", e.mode, e.uid, e.gid).as_bytes());
    h.update(link.map_or(&[][..], |l| l.as_os_str().as_bytes()));
    h.update(b"\0");
    if let EntryKind::File { source, .. } = &e.kind {
        hash_content(h, source).map_err(|source| CopyError::Read {
            path: e.path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Hashes a file's content, opened beneath its root with no symlink followed at the end.
fn hash_content(h: &mut Hasher, source: &Source) -> io::Result<()> {
    let (root, rel) = match source {
        Source::Bytes(b) => {
            h.update(b);
            return Ok(());
        }
        Source::Beneath { root, rel } => (root, rel),
    };
    let root = RootDir::open(root)?;
    let comps: Vec<OsString> = super::tree::rel_components(rel)?;
    let fd = root.open_file(&comps, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?;
    let mut f = std::fs::File::from(fd);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}
