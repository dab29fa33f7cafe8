//! The id maps a container gets, and the one id a single mapping maps.
//!
//! With a subordinate range the maps come from /etc/subuid and /etc/subgid. Without one only
//! one id can exist in the container, and it must be the one the command runs as: root (as
//! before), or the image's USER (or `--user`), so that an image built to run as `app` runs as
//! `app` where the range is missing. The parent writes the maps right after `clone`, before
//! anything is mounted, so it reads the image's /etc/passwd and /etc/group straight from the
//! layers (see [`crate::sandbox::user::read_layered`]).
//!
//! On nook's FUSE overlay the image's owners then decide what that user may do (the init
//! sets the container up first, as root would: `fuse::Overlay::enforce_owners`), and the
//! fakeroot shows them to `stat`. What a single mapping cannot give, because the kernel
//! knows no owner but the one id:
//! - removing or renaming an object whose owner is another id (root's file in the user's
//!   home) fails with EOVERFLOW, the kernel's `may_delete` check, where Linux would allow it;
//! - fifos, sockets and symlinks cannot carry an owner record: the kernel lets the user use
//!   them, `stat` shows them as root's;
//! - no supplementary groups (setgroups stays denied), and `chown` to anyone else is EPERM;
//! - on the kernel overlay and copy rungs (no fakeroot) every file is the user's, writable
//!   wherever its owner bits allow, as every file was root's before.

use std::path::{Path, PathBuf};

use crate::sandbox::spec::UserNs;
use crate::sandbox::user::{UserError, read_layered, resolve};
use crate::sys::idmap::{IdMap, MapLine, Mapping, SubRange};

/// The container ids the caller's uid and gid become under a single mapping.
pub type SingleIds = (u32, u32);

/// The ids `user` (`USER[:GROUP]`, names or numbers) has in the image whose layers are
/// `layers` (top first: the container's upper layer, then the image's).
pub fn single_ids(user: &str, layers: &[PathBuf]) -> Result<SingleIds, UserError> {
    let passwd = read_layered(layers, "/etc/passwd");
    let group = read_layered(layers, "/etc/group");
    let u = resolve(user, &[], &passwd, &group)?;
    Ok((u.uid, u.gid))
}

/// The layers of a container, top first, for [`single_ids`]: its upper layer when it has
/// one already (`nook start`), then the image's.
pub fn layers_top_first(upper: &Path, image_layers: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(upper.to_owned())
        .chain(image_layers.iter().rev().cloned())
        .collect()
}

fn one(inside: u32, outside: u32) -> IdMap {
    IdMap {
        lines: vec![MapLine {
            inside,
            outside,
            count: 1,
        }],
    }
}

/// The id maps for the container; `single` is the image user's ids for a single mapping
/// (root when `None`).
pub fn id_maps(
    mapping: &Mapping,
    userns: UserNs,
    (uid, gid): (u32, u32),
    single: Option<SingleIds>,
) -> (IdMap, IdMap) {
    let ranges = |m: &IdMap| -> Vec<SubRange> {
        m.lines[1..]
            .iter()
            .map(|l| SubRange {
                start: l.outside,
                count: l.count,
            })
            .collect()
    };
    match (mapping, userns) {
        (Mapping::Root, _) => {
            let all = IdMap {
                lines: vec![MapLine {
                    inside: 0,
                    outside: 0,
                    count: u32::MAX,
                }],
            };
            (all.clone(), all)
        }
        (Mapping::Range { uids, gids, .. }, UserNs::Auto) => (uids.clone(), gids.clone()),
        (Mapping::Range { uids, gids, .. }, UserNs::KeepId) => (
            IdMap::keep_id(uid, uid, &ranges(uids)),
            IdMap::keep_id(gid, gid, &ranges(gids)),
        ),
        (Mapping::Single { .. }, UserNs::Auto) => {
            let (cu, cg) = single.unwrap_or((0, 0));
            (one(cu, uid), one(cg, gid))
        }
        (Mapping::Single { .. }, UserNs::KeepId) => (one(uid, uid), one(gid, gid)),
    }
}

/// The maps for a run: for a single mapping (without `--userns keep-id`) the id is that of
/// `user` in the image, read from `layers` (top first).
pub fn maps_for_run(
    mapping: &Mapping,
    userns: UserNs,
    user: &str,
    layers: &[PathBuf],
) -> Result<(IdMap, IdMap), UserError> {
    let caller = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let single = match (mapping, userns) {
        (Mapping::Single { .. }, UserNs::Auto) => Some(single_ids(user, layers)?),
        _ => None,
    };
    Ok(id_maps(mapping, userns, caller, single))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> Mapping {
        Mapping::Single {
            uid: 1000,
            gid: 100,
            why: String::new(),
        }
    }

    #[test]
    fn single_mapping_maps_the_image_user_to_the_caller() {
        let (u, g) = id_maps(&single(), UserNs::Auto, (1000, 100), Some((1234, 50)));
        assert_eq!(u.proc_text(), "1234 1000 1\n");
        assert_eq!(g.proc_text(), "50 100 1\n");
        let (u, g) = id_maps(&single(), UserNs::Auto, (1000, 100), None);
        assert_eq!(
            (u.proc_text(), g.proc_text()),
            ("0 1000 1\n".into(), "0 100 1\n".into())
        );
        let (u, g) = id_maps(&single(), UserNs::KeepId, (1000, 100), Some((1234, 50)));
        assert_eq!(
            (u.proc_text(), g.proc_text()),
            ("1000 1000 1\n".into(), "100 100 1\n".into())
        );
    }

    #[test]
    fn range_mapping_ignores_the_single_ids() {
        let helpers = crate::sys::idmap::Helpers {
            newuidmap: "/x".into(),
            newgidmap: "/y".into(),
        };
        let r = [SubRange {
            start: 100000,
            count: 65536,
        }];
        let m = Mapping::Range {
            helpers,
            uids: IdMap::with_ranges(1000, &r),
            gids: IdMap::with_ranges(100, &r),
        };
        let (u, _) = id_maps(&m, UserNs::Auto, (1000, 100), Some((1234, 50)));
        assert_eq!(u, IdMap::with_ranges(1000, &r));
        let (u, _) = id_maps(&m, UserNs::KeepId, (1000, 100), None);
        assert_eq!(u.to_host(1000), Some(1000));
    }

    #[test]
    fn single_ids_resolve_names_through_the_layers() {
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("l");
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            layer.join("etc/group"),
            "root:x:0:\napp:x:1234:\nstaff:x:50:\n",
        )
        .unwrap();
        let layers = layers_top_first(&d.path().join("no-upper"), &[layer]);
        assert_eq!(single_ids("app", &layers), Ok((1234, 1234)));
        assert_eq!(single_ids("app:staff", &layers), Ok((1234, 50)));
        assert_eq!(single_ids("4321", &layers), Ok((4321, 0)));
        assert_eq!(single_ids("", &layers), Ok((0, 0)));
        assert_eq!(
            single_ids("ghost", &layers),
            Err(UserError::NoUser("ghost".into()))
        );
    }
}
