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

/// The kind of a file in a source tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// A file's metadata as a source tree shows it (owners as the container sees them: through
/// the id mapping, or from nook's owner record for a single mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// `(major, minor)` of a device.
    pub rdev: (u32, u32),
    /// Identity for hard links: `(dev, ino)` and the link count.
    pub dev_ino: (u64, u64),
    pub nlink: u64,
}

/// A read-only tree COPY and ADD take files from: the build context, or an image's or
/// stage's layers seen merged. Paths are relative to the tree's root; nothing is followed
/// out of it.
pub trait SourceTree {
    /// The entry at `rel` (a symlink itself, not its target); `None` when there is none.
    fn stat(&self, rel: &std::path::Path) -> std::io::Result<Option<Meta>>;
    /// The names in the directory `rel`, sorted.
    fn read_dir(&self, rel: &std::path::Path) -> std::io::Result<Vec<std::ffi::OsString>>;
    fn read_link(&self, rel: &std::path::Path) -> std::io::Result<PathBuf>;
    /// Where the content of the regular file `rel` is read from.
    fn source(&self, rel: &std::path::Path) -> Source;
    /// Extended attributes worth keeping (not nook's, not the overlay's).
    fn xattrs(&self, _rel: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
}
