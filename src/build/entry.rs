//! One entry of a layer being written: what COPY/ADD plan, what a RUN's snapshot finds, and
//! what the layer writer turns into tar headers. Pure data, shared by those three.

use std::path::PathBuf;

/// An entry of a new layer, at `path` relative to the image's root (no leading `/`, no
/// `..`, never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (no file type bits).
    pub mode: u32,
    /// Owner as the container sees it.
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (clamped by the writer under `--timestamp`).
    pub mtime: i64,
    /// Extended attributes to keep (never nook's own, never the overlay's).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file of `size` bytes, read from `source` when the layer is written.
    File {
        size: u64,
        source: Source,
    },
    Symlink(PathBuf),
    /// A hard link to an entry written earlier in the same layer (its path).
    Hardlink(PathBuf),
    Fifo,
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    /// `.wh.NAME`: the name is deleted from the layers below.
    Whiteout,
    /// `.wh..wh..opq` in this directory: nothing below shows through it.
    Opaque,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The file `rel` below the directory `root`, opened beneath it with no symlink followed
    /// (so a tree that changes under the build cannot lead the read elsewhere).
    Beneath { root: PathBuf, rel: PathBuf },
    /// Content held in memory (heredocs, small generated files).
    Bytes(Vec<u8>),
}
