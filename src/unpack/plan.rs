//! What one tar entry asks for, decided without touching the disk.
//!
//! Every layer is hostile. [`plan`] turns an entry's header into an [`Op`] on a [`RelPath`]: a
//! path with no empty, `.` or `..` components that cannot leave the layer root lexically.
//! Entries that would climb out (`../x`), replace the root itself (`.` as a symlink,
//! CVE-2021-29136), hard-link out of the layer, or spell a whiteout that names nothing
//! (`.wh.`, `.wh..`) are errors. Whiteouts become the overlay's own form: `.wh.NAME` a 0/0
//! character device `NAME`, `.wh..wh..opq` the opaque xattr on its directory. Xattrs that
//! steer the overlay or nook itself are dropped: an image must not set them.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The longest path nook accepts in a layer (PATH_MAX).
const PATH_MAX: usize = 4096;

/// A path below a layer root: at least one component, none empty, `.` or `..`, no `/` or NUL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelPath(Vec<OsString>);

impl RelPath {
    pub fn components(&self) -> &[OsString] {
        &self.0
    }

    /// The parent's components (empty for an entry directly below the root) and the name.
    pub fn split_last(&self) -> (&[OsString], &OsString) {
        let (last, parent) = self
            .0
            .split_last()
            .unwrap_or_else(|| unreachable!("RelPath is never empty"));
        (parent, last)
    }

    pub fn starts_with(&self, prefix: &[OsString]) -> bool {
        self.0.starts_with(prefix)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.0 {
            write!(f, "/{}", c.to_string_lossy())?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({self})")
    }
}

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    CharDevice,
    BlockDevice,
    /// Anything else (GNU volume labels, unknown types).
    Other(u8),
}

/// What an entry's header says, already decoded from ustar/GNU/PAX.
#[derive(Debug, Clone)]
pub struct EntryHeader {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub device: (u32, u32),
}

/// Owner, mode and times an entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub uid: u64,
    pub gid: u64,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One thing to do to the layer directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The entry for the layer root itself (`./`): only its metadata applies.
    Root(Meta),
    Dir(RelPath, Meta),
    /// A regular file; its bytes follow in the archive.
    File(RelPath, Meta),
    Symlink(RelPath, OsString, Meta),
    Hardlink(RelPath, RelPath),
    Fifo(RelPath, Meta),
    Whiteout(RelPath),
    /// The directory (or the root, for `None`) hides everything below it in lower layers.
    Opaque(Option<RelPath>),
    /// A device node; unprivileged users cannot create it.
    Device(RelPath, EntryKind),
    /// Nothing to do (aufs metadata, labels); the reason is for debug logs.
    Skip(&'static str),
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("entry {0:?} climbs out of the layer")]
    Escape(String),
    #[error("hard link {path:?} points out of the layer ({target:?})")]
    LinkEscape { path: String, target: String },
    #[error("entry {0:?} would replace the layer root with a non-directory")]
    ReplacesRoot(String),
    #[error("whiteout {0:?} names no file")]
    BadWhiteout(String),
    #[error("entry {0:?} has no link target")]
    MissingLink(String),
    #[error("entry path is longer than {PATH_MAX} bytes")]
    TooLong,
}

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const AUFS_META: &[u8] = b".wh..wh.";

/// Splits `raw` into components, resolving `.` and `..` lexically; `None` components means
/// the root itself. A `..` above the root is an escape.
fn normalize(raw: &[u8]) -> Result<Vec<OsString>, PlanError> {
    if raw.len() > PATH_MAX {
        return Err(PlanError::TooLong);
    }
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PlanError::Escape(String::from_utf8_lossy(raw).into_owned()));
                }
            }
            c if c.contains(&0) => {
                return Err(PlanError::Escape(String::from_utf8_lossy(raw).into_owned()));
            }
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

/// Whether an image may set this xattr. `user.*` passes except the overlay's, containers/
/// storage's and nook's own namespaces; `security.capability` passes (file capabilities).
pub fn xattr_allowed(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "user.overlay.",
        "user.containers.",
        "user.fuseoverlayfs.",
        "user.nook.",
    ];
    (name.starts_with("user.") && !RESERVED.iter().any(|r| name.starts_with(r)))
        || name == "security.capability"
}

/// Decides what `h` asks for.
pub fn plan(h: &EntryHeader) -> Result<Op, PlanError> {
    let shown = || String::from_utf8_lossy(&h.path).into_owned();
    let comps = normalize(&h.path)?;
    let meta = Meta {
        uid: h.uid,
        gid: h.gid,
        mode: h.mode & 0o7777,
        mtime: h.mtime,
        xattrs: h
            .xattrs
            .iter()
            .filter(|(k, _)| xattr_allowed(k))
            .cloned()
            .collect(),
    };
    let Some(name) = comps.last() else {
        return match h.kind {
            EntryKind::Dir => Ok(Op::Root(meta)),
            _ => Err(PlanError::ReplacesRoot(shown())),
        };
    };
    if comps
        .iter()
        .any(|c| c.as_bytes() != OPAQUE && c.as_bytes().starts_with(AUFS_META))
    {
        return Ok(Op::Skip("aufs metadata"));
    }
    let name = name.as_bytes();
    if name == OPAQUE {
        let parent = comps[..comps.len() - 1].to_vec();
        return Ok(Op::Opaque((!parent.is_empty()).then_some(RelPath(parent))));
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT) {
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(PlanError::BadWhiteout(shown()));
        }
        let mut p = comps[..comps.len() - 1].to_vec();
        p.push(OsString::from_vec(hidden.to_vec()));
        return Ok(Op::Whiteout(RelPath(p)));
    }
    let path = RelPath(comps);
    Ok(match h.kind {
        EntryKind::File => Op::File(path, meta),
        EntryKind::Dir => Op::Dir(path, meta),
        EntryKind::Fifo => Op::Fifo(path, meta),
        EntryKind::Symlink => {
            let target = h
                .link
                .as_ref()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| PlanError::MissingLink(shown()))?;
            if target.contains(&0) || target.len() > PATH_MAX {
                return Err(PlanError::MissingLink(shown()));
            }
            Op::Symlink(path, OsString::from_vec(target.clone()), meta)
        }
        EntryKind::Hardlink => {
            let raw = h
                .link
                .as_ref()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| PlanError::MissingLink(shown()))?;
            let escape = || PlanError::LinkEscape {
                path: shown(),
                target: String::from_utf8_lossy(raw).into_owned(),
            };
            let target = normalize(raw).map_err(|_| escape())?;
            if target.is_empty() {
                return Err(escape());
            }
            Op::Hardlink(path, RelPath(target))
        }
        kind @ (EntryKind::CharDevice | EntryKind::BlockDevice) => {
            // A 0/0 character device is an overlay whiteout written by a tool that stored the
            // upper directory as is; keep it as the whiteout it is.
            if kind == EntryKind::CharDevice && h.device == (0, 0) {
                Op::Whiteout(path)
            } else {
                Op::Device(path, kind)
            }
        }
        EntryKind::Other(_) => Op::Skip("unsupported entry type"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: EntryKind) -> EntryHeader {
        EntryHeader {
            path: path.as_bytes().to_vec(),
            kind,
            link: None,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: vec![],
            device: (0, 0),
        }
    }

    fn rel(p: &str) -> RelPath {
        RelPath(p.split('/').map(OsString::from).collect())
    }

    #[test]
    fn normal_paths() {
        assert!(
            matches!(plan(&header("./etc/passwd", EntryKind::File)).unwrap(), Op::File(p, _) if p == rel("etc/passwd"))
        );
        assert!(
            matches!(plan(&header("/abs/x", EntryKind::File)).unwrap(), Op::File(p, _) if p == rel("abs/x"))
        );
        assert!(
            matches!(plan(&header("a//b/./c/", EntryKind::Dir)).unwrap(), Op::Dir(p, _) if p == rel("a/b/c"))
        );
        assert!(
            matches!(plan(&header("a/b/../c", EntryKind::File)).unwrap(), Op::File(p, _) if p == rel("a/c"))
        );
        assert!(matches!(
            plan(&header("./", EntryKind::Dir)).unwrap(),
            Op::Root(_)
        ));
    }

    #[test]
    fn escapes_are_refused() {
        for p in ["../x", "a/../../x", "/../../etc/passwd", "./../x", ".."] {
            assert!(
                matches!(plan(&header(p, EntryKind::File)), Err(PlanError::Escape(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn root_cannot_be_replaced() {
        for p in [".", "./", "/", "a/.."] {
            let mut h = header(p, EntryKind::Symlink);
            h.link = Some(b"/".to_vec());
            assert!(matches!(plan(&h), Err(PlanError::ReplacesRoot(_))), "{p}");
            assert!(
                matches!(
                    plan(&header(p, EntryKind::File)),
                    Err(PlanError::ReplacesRoot(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn hardlinks_stay_inside() {
        let mut h = header("a/link", EntryKind::Hardlink);
        h.link = Some(b"/bin/sh".to_vec());
        assert!(matches!(plan(&h).unwrap(), Op::Hardlink(_, t) if t == rel("bin/sh")));
        for bad in ["../../etc/shadow", "a/../../x", "/", "."] {
            h.link = Some(bad.as_bytes().to_vec());
            assert!(
                matches!(plan(&h), Err(PlanError::LinkEscape { .. })),
                "{bad}"
            );
        }
        h.link = None;
        assert!(matches!(plan(&h), Err(PlanError::MissingLink(_))));
    }

    #[test]
    fn whiteouts() {
        assert!(
            matches!(plan(&header("etc/.wh.motd", EntryKind::File)).unwrap(), Op::Whiteout(p) if p == rel("etc/motd"))
        );
        assert!(
            matches!(plan(&header(".wh.root", EntryKind::File)).unwrap(), Op::Whiteout(p) if p == rel("root"))
        );
        assert!(
            matches!(plan(&header("usr/.wh..wh..opq", EntryKind::File)).unwrap(), Op::Opaque(Some(p)) if p == rel("usr"))
        );
        assert!(matches!(
            plan(&header(".wh..wh..opq", EntryKind::File)).unwrap(),
            Op::Opaque(None)
        ));
        for bad in ["etc/.wh.", "etc/.wh..", ".wh...", "a/.wh.."] {
            assert!(
                matches!(
                    plan(&header(bad, EntryKind::File)),
                    Err(PlanError::BadWhiteout(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            plan(&header("../.wh.x", EntryKind::File)),
            Err(PlanError::Escape(_))
        ));
        assert!(matches!(
            plan(&header(".wh..wh.plnk/123", EntryKind::File)).unwrap(),
            Op::Skip(_)
        ));
        assert!(matches!(
            plan(&header("a/.wh..wh.aufs", EntryKind::File)).unwrap(),
            Op::Skip(_)
        ));
    }

    #[test]
    fn devices_and_overlay_whiteouts() {
        let mut h = header("dev/null", EntryKind::CharDevice);
        h.device = (1, 3);
        assert!(matches!(
            plan(&h).unwrap(),
            Op::Device(_, EntryKind::CharDevice)
        ));
        h.device = (0, 0);
        assert!(matches!(plan(&h).unwrap(), Op::Whiteout(_)));
        assert!(matches!(
            plan(&header("dev/sda", EntryKind::BlockDevice)).unwrap(),
            Op::Device(_, _)
        ));
    }

    #[test]
    fn reserved_xattrs_are_dropped() {
        let mut h = header("f", EntryKind::File);
        h.xattrs = vec![
            ("user.overlay.opaque".into(), b"y".to_vec()),
            ("user.overlay.redirect".into(), b"/x".to_vec()),
            (
                "user.containers.override_stat".into(),
                b"0:0:04755".to_vec(),
            ),
            ("user.nook.x".into(), b"".to_vec()),
            ("trusted.overlay.opaque".into(), b"y".to_vec()),
            ("security.selinux".into(), b"x".to_vec()),
            ("security.capability".into(), b"caps".to_vec()),
            ("user.mime_type".into(), b"text/plain".to_vec()),
        ];
        let Op::File(_, meta) = plan(&h).unwrap() else {
            panic!()
        };
        let names: Vec<_> = meta.xattrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["security.capability", "user.mime_type"]);
    }

    #[test]
    fn symlink_targets_are_data() {
        let mut h = header("bin/sh", EntryKind::Symlink);
        h.link = Some(b"../../../../etc/passwd".to_vec());
        assert!(matches!(plan(&h).unwrap(), Op::Symlink(_, t, _) if t == "../../../../etc/passwd"));
        h.link = Some(b"".to_vec());
        assert!(plan(&h).is_err());
    }

    #[test]
    fn overlong_and_nul_paths() {
        let long = "a/".repeat(3000);
        assert!(matches!(
            plan(&header(&long, EntryKind::File)),
            Err(PlanError::TooLong)
        ));
        let mut h = header("x", EntryKind::File);
        h.path = b"a\0b".to_vec();
        assert!(plan(&h).is_err());
    }
}
