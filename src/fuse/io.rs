//! File data by inode: nook's FUSE server tells the kernel it does not open files (the kernel
//! then sends no OPEN, FLUSH or RELEASE), so reads and writes name an inode, and this cache of
//! open backing files serves them. A write first copies the file up; a cached lower copy is
//! never used again once the upper one exists.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::fdcache::Lru;
use super::layers::Layer;
use super::overlay::{Overlay, Result, errno};
use super::table::Kind;

struct Open {
    file: Arc<File>,
    layer: Layer,
    writable: bool,
}

/// Open backing files by inode, as many as the descriptor limit allows (see `fdcache`): one
/// dropped while a request reads it closes when that request is done, and the next use opens
/// it again by its path, through the layer's root-confined handle.
pub struct Files {
    open: Mutex<Lru<u64, Open>>,
}

impl Files {
    pub fn new() -> Files {
        Files {
            open: Mutex::new(Lru::new(super::fdcache::capacity())),
        }
    }

    fn get(&self, ino: u64, layer: Layer, write: bool) -> Option<Arc<File>> {
        let mut open = self.open.lock().ok()?;
        let o = open.get(&ino)?;
        (o.layer == layer && (o.writable || !write)).then(|| o.file.clone())
    }

    fn put(&self, ino: u64, o: Open) {
        if let Ok(mut open) = self.open.lock() {
            open.insert(ino, o);
        }
    }

    /// The kernel will not ask for `ino` again.
    pub fn forget(&self, ino: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&ino);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(n)
}

/// Removes what an earlier server left in the work directory (files removed while in use,
/// interrupted copies); the kernel overlay's own `work` directory is left alone.
pub fn clear_work(work: BorrowedFd<'_>) {
    let Ok(fd) = nix::fcntl::openat(
        work,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
        return;
    };
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .map_while(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| {
            let b = n.to_bytes();
            b.starts_with(b"orphan-") || b.starts_with(b"copyup-")
        })
        .collect();
    for n in names {
        let _ = nix::unistd::unlinkat(work, n.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

impl Overlay {
    /// The open backing file of `ino`, copied up first when `write`.
    fn file(&self, ino: u64, write: bool) -> Result<Arc<File>> {
        if write {
            self.copy_up(ino)?;
        }
        self.cached_file(ino, write)
    }

    /// The open backing file of `ino` as it is now (no copy-up: the caller did it, holding
    /// the change lock).
    pub(super) fn cached_file(&self, ino: u64, write: bool) -> Result<Arc<File>> {
        let (node, layer, path) = self.location(ino)?;
        if node.kind != Kind::File {
            return Err(if node.kind == Kind::Dir {
                Errno::EISDIR
            } else {
                Errno::EINVAL
            });
        }
        if let Some(f) = self.files.get(ino, layer, write) {
            return Ok(f);
        }
        let writable = matches!(layer, Layer::Upper | Layer::Work);
        let fd = match self.layers.open(
            layer,
            &path,
            if writable {
                OFlag::O_RDWR
            } else {
                OFlag::O_RDONLY
            },
        ) {
            Ok(fd) => fd,
            Err(e) if writable && !write && e.raw_os_error() == Some(libc::EACCES) => self
                .layers
                .open(layer, &path, OFlag::O_RDONLY)
                .map_err(errno)?,
            Err(e) => return Err(errno(e)),
        };
        let file = Arc::new(File::from(fd));
        self.files.put(
            ino,
            Open {
                file: file.clone(),
                layer,
                writable,
            },
        );
        Ok(file)
    }

    /// READ of `ino`, handing `reply` the data, read into a buffer of this thread.
    pub fn read_with<R>(
        &self,
        ino: u64,
        offset: u64,
        size: usize,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let f = self.file(ino, false)?;
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            // Grown to the largest read and reused: no allocation and no zeroing per read.
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let n = read_full(&f, offset, &mut buf[..size])?;
            Ok(reply(&buf[..n]))
        })
    }

    /// READ of `ino` into `buf`.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let f = self.file(ino, false)?;
        read_full(&f, offset, buf)
    }

    /// WRITE to `ino` (copying it up first).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let f = self.file(ino, true)?;
        f.write_all_at(data, offset).map_err(errno)?;
        Ok(data.len())
    }

    /// FSYNC of `ino`: only an upper copy has anything to sync.
    pub fn fsync(&self, ino: u64, datasync: bool) -> Result<()> {
        let (node, layer, _) = self.location(ino)?;
        if node.kind != Kind::File || !matches!(layer, Layer::Upper | Layer::Work) {
            return Ok(());
        }
        let f = self.file(ino, false)?;
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
        .map_err(errno)
    }

    /// fallocate(2) on `ino`.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let f = self.file(ino, true)?;
        let mode = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
        nix::fcntl::fallocate(f.as_fd(), mode, offset as i64, len as i64)?;
        Ok(())
    }

    /// lseek(2) for SEEK_DATA and SEEK_HOLE (sparse files).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64> {
        let f = self.file(ino, false)?;
        let w = match whence {
            libc::SEEK_DATA => nix::unistd::Whence::SeekData,
            libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
            libc::SEEK_END => nix::unistd::Whence::SeekEnd,
            libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
            _ => nix::unistd::Whence::SeekSet,
        };
        nix::unistd::lseek(f.as_fd(), offset, w)
    }

    /// A file of no name in the work directory (to ask the kernel about passthrough).
    pub fn scratch_file(&self) -> Result<File> {
        let fd = nix::fcntl::openat(
            self.layers.root(Layer::Work),
            ".",
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// The open backing file of `ino` for a truncate, a chmod or new times on a file that
    /// lost its name (copied up into the work directory first if it was a lower copy).
    pub(super) fn file_for_change(&self, ino: u64) -> Result<Arc<File>> {
        self.file(ino, true)
    }
}
