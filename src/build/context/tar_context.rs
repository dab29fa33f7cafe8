//! A build context sent as a tar on stdin, unpacked below a scratch directory.
//!
//! The archive is as hostile as an image layer: each entry goes through the layer unpacker's
//! planner (which refuses `..` escapes and hard links out of the tree, and makes absolute
//! paths relative) and its confined writer (which never follows a symlink out of the root).
//! A context is plain files, so only directories, regular files, symlinks and hard links are
//! written; owners are dropped (the context is 0:0 to COPY) and whiteouts, devices and fifos
//! are skipped.

use std::io::{self, Read};
use std::path::Path;

use crate::sys::confined::RootDir;
use crate::unpack::apply::LayerWriter;
use crate::unpack::plan::{self, EntryHeader, EntryKind, Op};
use crate::unpack::{Owners, UnpackError};

/// The header fields a context keeps: path, kind, link, mode and mtime.
fn header<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<Option<EntryHeader>> {
    let h = entry.header();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink,
        tar::EntryType::Link => EntryKind::Hardlink,
        _ => return Ok(None),
    };
    Ok(Some(EntryHeader {
        path: entry.path_bytes().into_owned(),
        kind,
        link: entry.link_name_bytes().map(|l| l.into_owned()),
        mode: h.mode()?,
        uid: 0,
        gid: 0,
        mtime: h.mtime().unwrap_or(0),
        xattrs: Vec::new(),
        device: (0, 0),
    }))
}

/// Unpacks the context archive `input` into the existing empty directory `dest`.
pub fn unpack_context(input: impl Read, dest: &Path) -> Result<(), UnpackError> {
    let root = RootDir::open(dest).map_err(|e| UnpackError::Root(dest.display().to_string(), e))?;
    // Every owner is 0 here, so `Keep` never chowns; it keeps modes (setuid too) as given.
    let mut writer = LayerWriter::new(root, Owners::Keep { max_id: 0 });
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let Some(h) = header(&entry).map_err(UnpackError::Archive)? else {
            continue;
        };
        let op = plan::plan(&h)?;
        let wanted = matches!(
            op,
            Op::Root(_) | Op::Dir(..) | Op::File(..) | Op::Symlink(..) | Op::Hardlink(..)
        );
        if !wanted {
            continue;
        }
        writer
            .apply(op, &mut entry)
            .map_err(|(path, source)| UnpackError::Apply { path, source })?;
    }
    writer
        .finish()
        .map(drop)
        .map_err(|(path, source)| UnpackError::Apply { path, source })
}
