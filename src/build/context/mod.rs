//! The build context: a directory (or a tar on stdin, unpacked), its Dockerfile, its
//! `.dockerignore`, and the planning of COPY and ADD from it.
//!
//! The [`Context`] is a [`SourceTree`] over the context directory in which ignored files do
//! not exist and every owner is 0:0. [`plan_copy`] turns a COPY/ADD into the entries of a
//! layer without reading any file's content: regular files name `Source::Beneath`, which the
//! layer writer opens below the context root, so no path the context controls (a symlink to
//! `/etc/passwd`, a `..`) can lead a read onto the host. ADD's archives and downloads land in
//! a scratch directory and are planned from there the same way.

mod add;
mod copy;
pub mod glob;
pub mod ignore;
mod select;
mod tar_context;
pub mod tree;

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

pub(crate) use add::{decoder, fetch};
pub use copy::{CopyError, CopyRequest, checksum, plan_copy};
pub use ignore::{Matcher, PatternError};

use crate::build::entry::{FileKind, Meta, Source, SourceTree};
use crate::sys::confined::RootDir;
use tree::{DirTree, OwnerView, rel_components};

/// The Dockerfile's text and the name messages give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileText {
    pub name: String,
    pub text: String,
}

/// Why the build context could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot open the build context {path}: it must be a readable directory")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no Dockerfile or Containerfile in the build context {0}: add one or name it with -f")]
    NoDockerfile(String),
    #[error("cannot read the Dockerfile {path}")]
    ReadDockerfile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("-f - reads the Dockerfile from stdin, but none was given")]
    NoStdinDockerfile,
    #[error("the Dockerfile {0} is outside the build context: name a path inside the archive")]
    DockerfileOutside(String),
    #[error("cannot read the ignore file {path}")]
    ReadIgnore {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("bad pattern in {path}")]
    Pattern {
        path: String,
        #[source]
        source: PatternError,
    },
    #[error("the scratch directory {0} for the build context must exist and be empty")]
    Scratch(String),
    #[error("the build context on stdin is not a usable tar archive")]
    Tar(#[source] crate::unpack::UnpackError),
}

/// The build context: a directory whose ignored files are invisible.
#[derive(Debug)]
pub struct Context {
    tree: DirTree,
    ignore: Matcher,
}

const DEFAULT_NAMES: [&str; 2] = ["Dockerfile", "Containerfile"];

/// Where `rel` really is in an image: its symlinks followed inside the image (its root is
/// `/`), the missing rest appended as written.
pub fn real_path(tree: &dyn SourceTree, rel: &Path) -> io::Result<PathBuf> {
    Ok(
        match select::resolve(tree, rel, true, select::Confine::Clamp)? {
            select::Resolved::Found(p, _) | select::Resolved::Missing(p) => p,
            select::Resolved::Outside => rel.to_path_buf(),
        },
    )
}

/// `rel` resolved inside `tree` with every symlink followed without leaving it (a context
/// refuses links out; an image's root is `/`): the real path, or `None` when nothing is
/// there or the way leads out. For bind mounts, whose sources the kernel would otherwise
/// follow on the host.
pub fn resolve_inside(
    tree: &dyn SourceTree,
    rel: &Path,
    context: bool,
) -> io::Result<Option<PathBuf>> {
    let confine = if context {
        select::Confine::Refuse
    } else {
        select::Confine::Clamp
    };
    Ok(match select::resolve(tree, rel, true, confine)? {
        select::Resolved::Found(p, _) => Some(p),
        _ => None,
    })
}

/// Reads the file `rel` below `root` (symlinks resolved inside it); `None` when absent.
fn read_beneath(root: &RootDir, rel: &str) -> io::Result<Option<String>> {
    let comps: Vec<OsString> = crate::sys::confined::components(rel);
    let fd: OwnedFd = match root.open_file(&comps, OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text)?;
    Ok(Some(text))
}

fn read_host(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where the Dockerfile and its ignore file were found.
struct Found {
    dockerfile: DockerfileText,
    /// The ignore file's text and its name for messages.
    ignore: Option<(String, String)>,
}

impl Context {
    /// Whether a .dockerignore hides anything (a directory of the context is then bound
    /// into a RUN as a copy without the ignored files, never as it is).
    pub fn ignores_anything(&self) -> bool {
        !self.ignore.is_empty()
    }

    /// CONTEXT a directory; see the module docs. `dockerfile` is `-f` (relative to the
    /// current directory, `-` for stdin, whose text the caller passes as `stdin_dockerfile`).
    pub fn from_dir(
        dir: &Path,
        dockerfile: Option<&Path>,
        stdin_dockerfile: Option<String>,
    ) -> Result<(Context, DockerfileText), ContextError> {
        let open_err = |source| ContextError::Open {
            path: dir.display().to_string(),
            source,
        };
        // The context may be named through a symlink; below it, nothing is followed out.
        let real = std::fs::canonicalize(dir).map_err(open_err)?;
        let root = RootDir::open(&real).map_err(open_err)?;
        let found = match (dockerfile, stdin_dockerfile) {
            (_, Some(text)) => Found {
                dockerfile: DockerfileText {
                    name: "-".to_owned(),
                    text,
                },
                ignore: None,
            },
            (Some(p), None) if p == Path::new("-") => return Err(ContextError::NoStdinDockerfile),
            (Some(p), None) => from_host_file(p)?,
            (None, None) => find_default(&root, &dir.display().to_string())?,
        };
        Self::finish(root, found)
    }

    /// CONTEXT `-`: a tar on stdin, unpacked into the empty directory `scratch` (regular
    /// files, directories, symlinks and hard links only; owners dropped; nothing outside
    /// `scratch`). `dockerfile` names a path inside the archive.
    pub fn from_tar(
        input: impl Read,
        scratch: &Path,
        dockerfile: Option<&str>,
    ) -> Result<(Context, DockerfileText), ContextError> {
        let empty = std::fs::read_dir(scratch).map(|mut d| d.next().is_none());
        if !matches!(empty, Ok(true)) {
            return Err(ContextError::Scratch(scratch.display().to_string()));
        }
        let open_err = |source| ContextError::Open {
            path: scratch.display().to_string(),
            source,
        };
        let scratch = &std::fs::canonicalize(scratch).map_err(open_err)?;
        tar_context::unpack_context(input, scratch).map_err(ContextError::Tar)?;
        let root = RootDir::open(scratch).map_err(open_err)?;
        let found = match dockerfile {
            None => find_default(&root, "-")?,
            Some(name) => {
                let cleaned = glob::clean(name.trim_start_matches('/'));
                if cleaned == ".." || cleaned.starts_with("../") {
                    return Err(ContextError::DockerfileOutside(name.to_owned()));
                }
                let text = read_beneath(&root, &cleaned)
                    .map_err(|source| ContextError::ReadDockerfile {
                        path: name.to_owned(),
                        source,
                    })?
                    .ok_or_else(|| ContextError::ReadDockerfile {
                        path: name.to_owned(),
                        source: io::Error::from(io::ErrorKind::NotFound),
                    })?;
                let ignore = read_ignore_beside(&root, &cleaned)?;
                Found {
                    dockerfile: DockerfileText {
                        name: name.to_owned(),
                        text,
                    },
                    ignore,
                }
            }
        };
        Self::finish(root, found)
    }

    fn finish(root: RootDir, found: Found) -> Result<(Context, DockerfileText), ContextError> {
        let ignore = match found.ignore {
            Some(i) => Some(i),
            None => read_beneath(&root, ".dockerignore")
                .map_err(|source| ContextError::ReadIgnore {
                    path: ".dockerignore".to_owned(),
                    source,
                })?
                .map(|t| (t, ".dockerignore".to_owned())),
        };
        let ignore = match ignore {
            None => Matcher::default(),
            Some((text, path)) => Matcher::new(&ignore::read_ignore_file(&text))
                .map_err(|source| ContextError::Pattern { path, source })?,
        };
        let context = Context {
            tree: DirTree::from_root(root, OwnerView::Root),
            ignore,
        };
        Ok((context, found.dockerfile))
    }

    pub fn root(&self) -> &Path {
        self.tree.path()
    }

    /// Whether `rel` (relative to the context root) is excluded by the ignore file.
    pub fn ignored(&self, rel: &Path) -> bool {
        self.ignore.matches(&slash(rel))
    }

    /// Whether the ignored directory `rel` still holds something a `!` pattern re-includes.
    fn shows_something_below(&self, rel: &Path) -> io::Result<bool> {
        if !self.ignore.may_reinclude_below(&slash(rel)) {
            return Ok(false);
        }
        for name in self.tree.read_dir(rel)? {
            if self.stat(&rel.join(name))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `rel` as the slash path patterns are matched against.
fn slash(rel: &Path) -> String {
    glob::clean(&rel.to_string_lossy())
}

/// `-f PATH` on the host, with `PATH.dockerignore` beside it when there is one.
fn from_host_file(p: &Path) -> Result<Found, ContextError> {
    let shown = |p: &Path| p.display().to_string();
    let text = read_host(p)
        .and_then(|t| t.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
        .map_err(|source| ContextError::ReadDockerfile {
            path: shown(p),
            source,
        })?;
    let mut beside = p.as_os_str().to_owned();
    beside.push(".dockerignore");
    let beside = PathBuf::from(beside);
    let ignore = read_host(&beside).map_err(|source| ContextError::ReadIgnore {
        path: shown(&beside),
        source,
    })?;
    Ok(Found {
        dockerfile: DockerfileText {
            name: shown(p),
            text,
        },
        ignore: ignore.map(|t| (t, shown(&beside))),
    })
}

/// CONTEXT/Dockerfile, else CONTEXT/Containerfile, with the ignore file beside it.
fn find_default(root: &RootDir, shown: &str) -> Result<Found, ContextError> {
    for name in DEFAULT_NAMES {
        let text = read_beneath(root, name).map_err(|source| ContextError::ReadDockerfile {
            path: name.to_owned(),
            source,
        })?;
        if let Some(text) = text {
            let ignore = read_ignore_beside(root, name)?;
            return Ok(Found {
                dockerfile: DockerfileText {
                    name: name.to_owned(),
                    text,
                },
                ignore,
            });
        }
    }
    Err(ContextError::NoDockerfile(shown.to_owned()))
}

fn read_ignore_beside(
    root: &RootDir,
    dockerfile: &str,
) -> Result<Option<(String, String)>, ContextError> {
    let path = format!("{dockerfile}.dockerignore");
    let text = read_beneath(root, &path).map_err(|source| ContextError::ReadIgnore {
        path: path.clone(),
        source,
    })?;
    Ok(text.map(|t| (t, path)))
}

impl SourceTree for Context {
    fn stat(&self, rel: &Path) -> io::Result<Option<Meta>> {
        let Some(meta) = self.tree.stat(rel)? else {
            return Ok(None);
        };
        if rel_components(rel)?.is_empty() || !self.ignored(rel) {
            return Ok(Some(meta));
        }
        if meta.kind == FileKind::Dir && self.shows_something_below(rel)? {
            return Ok(Some(meta));
        }
        Ok(None)
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for name in self.tree.read_dir(rel)? {
            if self.stat(&rel.join(&name))?.is_some() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        self.tree.read_link(rel)
    }

    fn source(&self, rel: &Path) -> Source {
        self.tree.source(rel)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_add;
