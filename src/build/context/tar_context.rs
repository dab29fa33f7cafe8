//! A build context sent as a tar on stdin, unpacked below a scratch directory.
//!
//! The archive is as hostile as an image layer: each entry goes through the layer unpacker's
//! planner (which refuses `..` escapes and hard links out of the tree, and makes absolute
//! paths relative) and its confined writer (which never follows a symlink out of the root).
//! A context is plain files, so only directories, regular files, symlinks and hard links are
//! written; owners are dropped (the context is 0:0 to COPY) and whiteouts, devices and fifos
//! are skipped.

use std::io::Read;
use std::path::Path;

use crate::unpack::plan::{EntryHeader, EntryKind};
use crate::unpack::{Owners, UnpackError};

/// What a context keeps of an entry: files, directories and links, owned by 0:0, without
/// xattrs; whiteouts, devices and fifos are skipped.
fn context_entry(h: &mut EntryHeader) -> bool {
    h.uid = 0;
    h.gid = 0;
    h.xattrs.clear();
    let name = h
        .path
        .rsplit(|b| *b == b'/')
        .find(|c| !c.is_empty())
        .unwrap_or(&[]);
    matches!(
        h.kind,
        EntryKind::File | EntryKind::Dir | EntryKind::Symlink | EntryKind::Hardlink
    ) && !name.starts_with(b".wh.")
}

/// Unpacks the context archive `input` into the existing empty directory `dest`.
pub fn unpack_context(input: impl Read, dest: &Path) -> Result<(), UnpackError> {
    // Every owner is 0 here, so `Keep` never chowns; it keeps modes (setuid too) as given.
    crate::unpack::unpack_some(input, dest, Owners::Keep { max_id: 0 }, &context_entry).map(drop)
}
