//! The id maps a container gets, and the one id a single mapping maps.
//!
//! With a subordinate range the maps come from /etc/subuid and /etc/subgid. Without one only
//! one id can exist in the container, and it must be the one the command runs as: root (as
//! before), or the image's USER (or `--user`), so that an image built to run as `app` runs as
//! `app` where the range is missing. The parent writes the maps right after `clone`, before
//! anything is mounted, so it reads the image's /etc/passwd and /etc/group straight from the
//! layers (see [`crate::sandbox::user::read_layered`]). The map arithmetic itself is
//! [`crate::sys::idmap::container_maps`]; `sys::userns` writes the maps.
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
use crate::sys::idmap::{IdMap, Mapping, container_maps};

/// The container ids the caller's uid and gid become under a single mapping.
pub type SingleIds = (u32, u32);

/// The ids `user` (`USER[:GROUP]`, names or numbers) has in the image whose layers are
/// `layers` (top first: the container's upper layer, then the image's).
pub fn single_ids(user: &str, layers: &[PathBuf]) -> Result<SingleIds, UserError> {
    // No USER: root, and no reading of the image's files on the way to every start.
    if user.is_empty() {
        return Ok((0, 0));
    }
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
    Ok(container_maps(
        mapping,
        userns == UserNs::KeepId,
        caller,
        single,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
