//! A tar layer → a directory, treating every layer as hostile.
//!
//! [`plan`] decides what each entry asks for without touching the disk (and refuses escapes);
//! [`apply`] carries it out below the layer root through root-confined descriptors. The archive
//! is read as a stream: callers feed the decompressor's output straight in while the download
//! is still running.

pub mod apply;
pub mod plan;

use std::io::{self, Read};
use std::path::Path;

pub use apply::{
    OPAQUE_XATTR, OVERRIDE_XATTR, Owners, UnpackStats, override_value, parse_override,
};
use plan::{EntryHeader, EntryKind};

use crate::sys::confined::RootDir;

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open the layer directory {0}")]
    Root(String, #[source] io::Error),
    #[error("the layer is not a valid tar archive")]
    Archive(#[source] io::Error),
    #[error("refusing layer entry: {0}")]
    Plan(#[from] plan::PlanError),
    #[error("cannot write layer entry {path}")]
    Apply {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the tar stream `input` into the existing empty directory `dest`.
pub fn unpack(input: impl Read, dest: &Path, owners: Owners) -> Result<UnpackStats, UnpackError> {
    unpack_some(input, dest, owners, &|_| true)
}

/// Unpacks the entries `keep` accepts, after it has changed their header as it wants (a build
/// context drops owners and keeps only files, directories and links).
pub fn unpack_some(
    input: impl Read,
    dest: &Path,
    owners: Owners,
    keep: &dyn Fn(&mut EntryHeader) -> bool,
) -> Result<UnpackStats, UnpackError> {
    let root = RootDir::open(dest).map_err(|e| UnpackError::Root(dest.display().to_string(), e))?;
    let mut writer = apply::LayerWriter::new(root, owners);
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let mut header = read_header(&mut entry).map_err(UnpackError::Archive)?;
        if !keep(&mut header) {
            continue;
        }
        let op = plan::plan(&header)?;
        writer
            .apply(op, &mut entry)
            .map_err(|(path, source)| UnpackError::Apply { path, source })?;
    }
    writer
        .finish()
        .map_err(|(path, source)| UnpackError::Apply { path, source })
}

/// Decodes an entry's header, with PAX records overriding the ustar fields they extend.
fn read_header<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<EntryHeader> {
    let h = entry.header();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink,
        tar::EntryType::Link => EntryKind::Hardlink,
        tar::EntryType::Fifo => EntryKind::Fifo,
        tar::EntryType::Char => EntryKind::CharDevice,
        tar::EntryType::Block => EntryKind::BlockDevice,
        other => EntryKind::Other(other.as_byte()),
    };
    let mode = h.mode()?;
    // Go's archive/tar reads empty numeric fields as 0; layers written by odd tools have them.
    let mut uid = h.uid().unwrap_or(0);
    let mut gid = h.gid().unwrap_or(0);
    let mut mtime = h.mtime().unwrap_or(0);
    let device = (
        h.device_major().ok().flatten().unwrap_or(0),
        h.device_minor().ok().flatten().unwrap_or(0),
    );
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let num = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            };
            match key {
                "uid" => uid = num().unwrap_or(uid),
                "gid" => gid = num().unwrap_or(gid),
                "mtime" => mtime = num().unwrap_or(mtime),
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(EntryHeader {
        path: entry.path_bytes().into_owned(),
        kind,
        link: entry.link_name_bytes().map(|l| l.into_owned()),
        mode,
        uid,
        gid,
        mtime,
        xattrs,
        device,
    })
}

#[cfg(test)]
mod tests;
