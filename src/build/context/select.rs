//! Which entries of a source tree a COPY names: cleaning, the context's `..` rule, glob
//! expansion and the lexical symlink resolution that keeps every lookup inside the tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use super::copy::CopyError;
use super::glob::{Glob, clean, has_meta};
use crate::build::entry::{FileKind, Meta, SourceTree};

/// What a `..` or an absolute symlink above the root does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confine {
    /// The build context: leaving it is refused (an absolute link target counts as leaving).
    Refuse,
    /// An image: the root is `/`, and `..` there stays at `/`.
    Clamp,
}

/// The outcome of resolving a path inside a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Found(PathBuf, Meta),
    /// Nothing there; the path as far as it resolved, the rest appended as written.
    Missing(PathBuf),
    /// A symlink or `..` on the way leads out of the tree.
    Outside,
}

const MAX_LINKS: usize = 40;

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

/// The names and `..`s of a path, in order (a leading `/` and `.`s dropped).
fn steps(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_owned()),
            std::path::Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Resolves `path` (relative to the tree root, `..` allowed) following symlinks on the way,
/// and the final one too when `follow_last`.
pub fn resolve(
    tree: &dyn SourceTree,
    path: &Path,
    follow_last: bool,
    confine: Confine,
) -> io::Result<Resolved> {
    let mut pending = steps(path);
    let mut cur: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            if cur.pop().is_none() && confine == Confine::Refuse {
                return Ok(Resolved::Outside);
            }
            continue;
        }
        let mut candidate = cur.clone();
        candidate.push(c);
        let Some(meta) = tree.stat(&join(&candidate))? else {
            candidate.extend(pending);
            return Ok(Resolved::Missing(join(&candidate)));
        };
        let last = pending.is_empty();
        if meta.kind == FileKind::Symlink && (!last || follow_last) {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = tree.read_link(&join(&candidate))?;
            if target.is_absolute() {
                if confine == Confine::Refuse {
                    return Ok(Resolved::Outside);
                }
                cur.clear();
            }
            let mut next = steps(&target);
            next.extend(pending);
            pending = next;
            continue;
        }
        if !last && meta.kind != FileKind::Dir {
            candidate.extend(pending);
            return Ok(Resolved::Missing(join(&candidate)));
        }
        cur = candidate;
        if last {
            return Ok(Resolved::Found(join(&cur), meta));
        }
    }
    let here = join(&cur);
    match tree.stat(&here)? {
        Some(meta) => Ok(Resolved::Found(here, meta)),
        None => Ok(Resolved::Missing(here)),
    }
}

/// One source a COPY takes.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Where it is in the tree (a named symlink that resolves inside: its target).
    pub rel: PathBuf,
    pub meta: Meta,
    /// The name a file is copied as into a directory dest.
    pub name: OsString,
}

/// The source as a path below the tree root; `None` when it climbs out of the context.
fn source_path(source: &str, confine: Confine) -> Option<String> {
    let cleaned = clean(source);
    let rel = match cleaned.strip_prefix('/') {
        Some(r) => r.to_owned(),
        None if cleaned == ".." || cleaned.starts_with("../") => {
            if confine == Confine::Refuse {
                return None;
            }
            clean(&format!("/{cleaned}"))[1..].to_owned()
        }
        None if cleaned == "." => String::new(),
        None => cleaned,
    };
    Some(rel)
}

/// The paths a source names: itself, or what its wildcards match.
fn expand(tree: &dyn SourceTree, rel: &str, confine: Confine) -> Result<Vec<PathBuf>, CopyError> {
    let mut found = vec![PathBuf::new()];
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        if !has_meta(seg) {
            found.iter_mut().for_each(|p| p.push(seg));
            continue;
        }
        let glob = Glob::segment(seg).map_err(|e| CopyError::Pattern(e.to_string()))?;
        let mut next = Vec::new();
        for dir in found {
            let Resolved::Found(real, meta) = resolve(tree, &dir, true, confine)? else {
                continue;
            };
            if meta.kind != FileKind::Dir {
                continue;
            }
            for name in tree.read_dir(&real)? {
                if glob.matches(&name.to_string_lossy()) {
                    next.push(dir.join(name));
                }
            }
        }
        found = next;
    }
    Ok(found)
}

/// The entries `sources` name in `tree`, in order.
pub fn select(
    tree: &dyn SourceTree,
    sources: &[String],
    confine: Confine,
) -> Result<Vec<Selected>, CopyError> {
    let mut out = Vec::new();
    for source in sources {
        let rel = source_path(source, confine).ok_or_else(|| CopyError::Outside(source.clone()))?;
        let paths = expand(tree, &rel, confine)?;
        if paths.is_empty() {
            return Err(CopyError::NoMatch(source.clone()));
        }
        for path in paths {
            out.push(select_one(tree, source, &path, confine)?);
        }
    }
    Ok(out)
}

/// A named entry: a symlink is followed when it resolves inside the tree, else kept.
fn select_one(
    tree: &dyn SourceTree,
    source: &str,
    path: &Path,
    confine: Confine,
) -> Result<Selected, CopyError> {
    let not_found = || match confine {
        Confine::Refuse => CopyError::NotFound(source.to_owned()),
        Confine::Clamp => CopyError::NotFoundInImage(source.to_owned()),
    };
    let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let (rel, meta) = match resolve(tree, path, false, confine)? {
        Resolved::Found(rel, meta) => (rel, meta),
        Resolved::Missing(_) | Resolved::Outside => return Err(not_found()),
    };
    if meta.kind == FileKind::Symlink
        && let Resolved::Found(target, tmeta) = resolve(tree, &rel, true, confine)?
    {
        return Ok(Selected {
            rel: target,
            meta: tmeta,
            name,
        });
    }
    Ok(Selected { rel, meta, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_that_climb_out_of_the_context_are_refused() {
        assert_eq!(source_path("../x", Confine::Refuse), None);
        assert_eq!(source_path("a/../../x", Confine::Refuse), None);
        assert_eq!(source_path("..", Confine::Refuse), None);
        assert_eq!(source_path("/../x", Confine::Refuse).as_deref(), Some("x"));
        assert_eq!(source_path("a/../b", Confine::Refuse).as_deref(), Some("b"));
        assert_eq!(source_path(".", Confine::Refuse).as_deref(), Some(""));
        assert_eq!(source_path("../x", Confine::Clamp).as_deref(), Some("x"));
        assert_eq!(
            source_path("a/../../../x/y", Confine::Clamp).as_deref(),
            Some("x/y")
        );
    }
}
