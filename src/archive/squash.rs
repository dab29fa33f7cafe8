//! Single-file images: `nook save --format squashfs` and the files `nook run FILE` runs.
//!
//! Saving flattens the image's layers (whiteouts applied, owners as the image has them: the
//! walk of `nook export`, in the store's user namespace) into one tar, adds the image's config
//! at [`CONFIG_PATH`] (root-owned, 0444) and the mount targets every container needs when the
//! image lacks them, and has squashfs-tools' `sqfstar` turn the tar into
//! a squashfs. Owners are written as the tar gives them, so root's files stay root's and the
//! file means the same on every user's ids.
//!
//! Running reads the file as hostile input: a squashfs (magic `hsqs` at 0) or an Apptainer
//! SIF ([`super::sif`]: the squashfs partition at its offset). The config comes out with
//! `unsquashfs -cat`; a squashfs without one (a SIF, or one made by other tools) runs
//! `/.singularity.d/runscript` when it has one, else `/bin/sh`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::sif::{self, SifError};
use crate::digest::Digest;
use crate::registry::platform::Platform;
use crate::store::{ImageRecord, Store, StoreError};
use crate::sys::idmap::Mapping;

/// Where a saved squashfs keeps the image's config (OCI image configuration JSON).
pub const CONFIG_PATH: &str = ".nook/config.json";
const CONFIG_LIMIT: u64 = 8 << 20;
/// What every container mounts on (`sandbox::plan::standard_mounts`), and whether a directory.
const MOUNT_TARGETS: &[(&str, bool)] = &[
    ("proc/", true),
    ("dev/", true),
    ("sys/", true),
    ("etc/", true),
    ("etc/hosts", false),
    ("etc/hostname", false),
    ("etc/resolv.conf", false),
];
/// Largest /etc/passwd or /etc/group (or runscript) read from a squashfs.
const ACCOUNTS_LIMIT: u64 = 4 << 20;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a squashfs image could not be written or opened.
#[derive(Debug, thiserror::Error)]
pub enum SquashError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot flatten the image's layers")]
    Flatten(#[source] crate::build::BuildError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("cannot run {tool} (install Debian's squashfs-tools)")]
    Missing {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a squashfs or SIF file")]
    NotImage(String),
    #[error("{path}: bad SIF file")]
    Sif {
        path: String,
        #[source]
        source: SifError,
    },
}

fn io_at(what: impl Into<String>) -> impl FnOnce(io::Error) -> SquashError {
    let what = what.into();
    move |source| SquashError::Io { what, source }
}

/// Writes `image` from the store as one squashfs at `out` (replaced only when complete).
/// The caller must be single-threaded (the flattening runs in a forked child).
pub fn save(
    store: &Store,
    mapping: &Mapping,
    image: &ImageRecord,
    out: &Path,
) -> Result<(), SquashError> {
    let config = store.read_blob(&image.id, CONFIG_LIMIT)?;
    let tar_path = store.tmp_path("squash-tar");
    let partial = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map_or("image".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = write_tar(store, mapping, image, &config, &tar_path)
        .and_then(|()| sqfstar(&tar_path, &partial))
        .and_then(|()| {
            std::fs::rename(&partial, out).map_err(io_at(format!("cannot write {}", out.display())))
        });
    let _ = std::fs::remove_file(&tar_path);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The flattened tree as a tar at `path`, with the config added at [`CONFIG_PATH`].
fn write_tar(
    store: &Store,
    mapping: &Mapping,
    image: &ImageRecord,
    config: &[u8],
    path: &Path,
) -> Result<(), SquashError> {
    let what = || format!("cannot write {}", path.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_at(what()))?;
    let layers: Vec<PathBuf> = image
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_root(&l.diff_id))
        .collect();
    crate::build::export::export(mapping, &layers, &f).map_err(SquashError::Flatten)?;
    // The walk ended the tar with its two zero blocks: drop them, and add the config.
    let len = f.seek(SeekFrom::End(0)).map_err(io_at(what()))?;
    let mut tail = [0u8; 1024];
    let end = len.checked_sub(1024).ok_or_else(|| SquashError::Tool {
        tool: "nook export",
        message: "the flattened tar is too short".into(),
    })?;
    f.seek(SeekFrom::Start(end)).map_err(io_at(what()))?;
    f.read_exact(&mut tail).map_err(io_at(what()))?;
    if tail.iter().any(|b| *b != 0) {
        return Err(SquashError::Tool {
            tool: "nook export",
            message: "the flattened tar has no end marker".into(),
        });
    }
    f.set_len(end).map_err(io_at(what()))?;
    f.seek(SeekFrom::Start(end)).map_err(io_at(what()))?;
    let mut tar = tar::Builder::new(&mut f);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, ".nook/", io::empty())
        .map_err(io_at(what()))?;
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o444);
    h.set_size(config.len() as u64);
    tar.append_data(&mut h, CONFIG_PATH, config)
        .map_err(io_at(what()))?;
    // Mount targets, for images without them: a container whose only mapped id is not root
    // cannot create them in root's directories. sqfstar keeps the first of two entries, so
    // the image's own stay.
    for (path, dir) in MOUNT_TARGETS {
        let mut h = tar::Header::new_ustar();
        if *dir {
            h.set_entry_type(tar::EntryType::Directory);
        }
        h.set_mode(if *dir { 0o755 } else { 0o644 });
        h.set_size(0);
        tar.append_data(&mut h, path, io::empty())
            .map_err(io_at(what()))?;
    }
    tar.into_inner()
        .and_then(|f| f.flush())
        .map_err(io_at(what()))
}

/// `sqfstar OUT < TAR`.
fn sqfstar(tar: &Path, out: &Path) -> Result<(), SquashError> {
    let _ = std::fs::remove_file(out);
    let input = File::open(tar).map_err(io_at(format!("cannot read {}", tar.display())))?;
    let done = Command::new("sqfstar")
        // zstd: a start reads what it runs through squashfuse, decompressing on every run; zstd
        // starts busybox in ~2/3 of gzip's time (lz4 is faster still, but 45 % larger).
        .args(["-quiet", "-no-progress", "-exit-on-error", "-comp", "zstd"])
        .args(["-root-uid", "0", "-root-gid", "0", "-root-mode", "755"])
        .arg(out)
        .stdin(input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SquashError::Missing {
            tool: "sqfstar",
            source,
        })?;
    if !done.status.success() {
        return Err(SquashError::Tool {
            tool: "sqfstar",
            message: String::from_utf8_lossy(&done.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A squashfs to run from: the file, and where in it the squashfs starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileImage {
    pub path: PathBuf,
    pub offset: u64,
}

/// Whether `arg` (an image argument to `nook run`) names a file image: a path ending in
/// `.sqsh`, `.squashfs` or `.sif`, or a path (starting with `/` or `.`) to an existing file.
/// Image references never start with `/` or `.`.
pub fn names_file(arg: &str) -> bool {
    let by_suffix = [".sqsh", ".squashfs", ".sif"]
        .iter()
        .any(|s| arg.len() > s.len() && arg.ends_with(s));
    by_suffix || ((arg.starts_with('/') || arg.starts_with('.')) && Path::new(arg).is_file())
}

impl FileImage {
    /// Opens `path` and finds its squashfs: at 0, or a SIF's system partition.
    pub fn open(path: &Path) -> Result<FileImage, SquashError> {
        let shown = path.display().to_string();
        let path = std::fs::canonicalize(path).map_err(io_at(format!("cannot open {shown}")))?;
        let mut f = File::open(&path).map_err(io_at(format!("cannot open {shown}")))?;
        let len = f
            .metadata()
            .map_err(io_at(format!("cannot open {shown}")))?
            .len();
        let mut head = [0u8; 64];
        let n = read_up_to(&mut f, &mut head).map_err(io_at(format!("cannot read {shown}")))?;
        let offset = if head[..n].starts_with(b"hsqs") {
            0
        } else if sif::is_sif(&head[..n]) {
            let p = sif::squashfs_partition(&mut f, len).map_err(|source| SquashError::Sif {
                path: shown.clone(),
                source,
            })?;
            let mut magic = [0u8; 4];
            f.seek(SeekFrom::Start(p.offset))
                .and_then(|_| f.read_exact(&mut magic))
                .map_err(io_at(format!("cannot read {shown}")))?;
            if &magic != b"hsqs" {
                return Err(SquashError::Sif {
                    path: shown,
                    source: SifError::Header("its system partition is not a squashfs".into()),
                });
            }
            p.offset
        } else {
            return Err(SquashError::NotImage(shown));
        };
        Ok(FileImage { path, offset })
    }

    /// `unsquashfs -cat` of one file inside, read up to `limit` bytes; `None` when it has no
    /// such file (or a larger one: the file is hostile input).
    fn cat(&self, inside: &str, limit: u64) -> Result<Option<Vec<u8>>, SquashError> {
        let mut child = Command::new("unsquashfs")
            .arg("-o")
            .arg(self.offset.to_string())
            .arg("-cat")
            .arg(&self.path)
            .arg(inside)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SquashError::Missing {
                tool: "unsquashfs",
                source,
            })?;
        let mut out = Vec::new();
        let read = match child.stdout.take() {
            Some(stdout) => stdout.take(limit + 1).read_to_end(&mut out),
            None => Ok(0),
        };
        if read.is_err() || out.len() as u64 > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        let status = child
            .wait()
            .map_err(io_at(format!("cannot read {}", self.path.display())))?;
        Ok(status.success().then_some(out))
    }

    /// The image's /etc/passwd and /etc/group written below `dest` (as a layer nook reads a
    /// single mapping's USER from), those it has.
    pub fn write_accounts(&self, dest: &Path) -> Result<(), SquashError> {
        let etc = dest.join("etc");
        std::fs::create_dir_all(&etc).map_err(io_at(format!("cannot create {}", etc.display())))?;
        for name in ["passwd", "group"] {
            if let Some(text) = self.cat(&format!("/etc/{name}"), ACCOUNTS_LIMIT)? {
                let p = etc.join(name);
                std::fs::write(&p, text).map_err(io_at(format!("cannot write {}", p.display())))?;
            }
        }
        Ok(())
    }

    /// The image's config: the saved one, or one that runs the SIF's runscript (else a shell).
    pub fn config(&self) -> Result<Vec<u8>, SquashError> {
        if let Some(c) = self.cat(CONFIG_PATH, CONFIG_LIMIT)? {
            return Ok(c);
        }
        let runscript = "/.singularity.d/runscript";
        let cmd = match self.cat(runscript, ACCOUNTS_LIMIT)? {
            Some(_) => runscript,
            None => "/bin/sh",
        };
        let host = Platform::host();
        let config = serde_json::json!({
            "architecture": host.architecture,
            "os": "linux",
            "config": { "Env": [DEFAULT_PATH], "Cmd": [cmd] },
            "rootfs": { "type": "layers", "diff_ids": [] },
        });
        Ok(config.to_string().into_bytes())
    }

    /// The config kept in the store (a blob, no tag) and a record with no layers, for the run.
    pub fn record(&self, store: &Store) -> Result<ImageRecord, SquashError> {
        let config = self.config()?;
        let id = Digest::sha256_of(&config);
        store.put_blob(&id, &config)?;
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(ImageRecord {
            id: id.clone(),
            manifest_digest: id,
            manifest_media_type: String::new(),
            index_digest: None,
            repo_digests: Vec::new(),
            platform: Platform::host(),
            created: None,
            layers: Vec::new(),
            config_size: config.len() as u64,
            size,
            pulled_at: 0,
        })
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_told_from_references() {
        assert!(names_file("image.sqsh"));
        assert!(names_file("dir/app.sif"));
        assert!(names_file("/x/app.squashfs"));
        assert!(!names_file("busybox"));
        assert!(!names_file("localhost:5000/busybox:1"));
        assert!(!names_file(".sqsh"));
    }

    #[test]
    fn other_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.sqsh");
        std::fs::write(&p, b"not a squashfs at all").unwrap();
        assert!(matches!(FileImage::open(&p), Err(SquashError::NotImage(_))));
        std::fs::write(&p, b"hsqs").unwrap();
        assert_eq!(FileImage::open(&p).unwrap().offset, 0);
    }
}
