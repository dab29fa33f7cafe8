//! The last rung: the layers copied, bottom first, into a private directory, applying
//! whiteouts and opaque directories as the overlay would. Slow for large images, but it
//! works where no overlay does. Run inside the container's user namespace, so owners carry
//! over as the container sees them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::sys::xattr;

/// Copies `layers` (bottom first) into the existing empty directory `dest`.
pub fn copy_layers(layers: &[impl AsRef<Path>], dest: &Path) -> io::Result<()> {
    for layer in layers {
        let mut links = HashMap::new();
        copy_dir(layer.as_ref(), dest, &mut links)?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_opaque(dir: &Path) -> bool {
    fs::File::open(dir)
        .ok()
        .and_then(|f| xattr::fget(&f, crate::unpack::OPAQUE_XATTR).ok().flatten())
        .as_deref()
        == Some(b"y")
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let m = fs::symlink_metadata(&s)?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            remove_any(&d)?;
            continue;
        }
        if ft.is_dir() {
            let existing = fs::symlink_metadata(&d).ok();
            if existing.as_ref().is_some_and(|e| !e.is_dir())
                || (existing.is_some() && is_opaque(&s))
            {
                remove_any(&d)?;
            }
            if fs::symlink_metadata(&d).is_err() {
                fs::create_dir(&d)?;
            }
            copy_dir(&s, &d, links)?;
            finish(&d, &m)?;
            continue;
        }
        remove_any(&d)?;
        if m.nlink() > 1
            && let Some(first) = links.get(&(m.dev(), m.ino()))
        {
            fs::hard_link(first, &d)?;
            continue;
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
            let _ = std::os::unix::fs::lchown(&d, Some(m.uid()), Some(m.gid()));
            continue;
        }
        if ft.is_file() {
            fs::copy(&s, &d)?;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(&d, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        } else {
            // Sockets and device nodes are not part of a root filesystem nook can build.
            continue;
        }
        finish(&d, &m)?;
        if m.nlink() > 1 {
            links.insert((m.dev(), m.ino()), d);
        }
    }
    Ok(())
}

/// Owner, mode and modification time of a copied file or directory.
fn finish(d: &Path, m: &fs::Metadata) -> io::Result<()> {
    // An id the namespace does not map cannot be set; the copy keeps the caller's.
    let _ = std::os::unix::fs::lchown(d, Some(m.uid()), Some(m.gid()));
    fs::set_permissions(d, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    let t = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        d,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_merge_with_whiteouts_and_opaque_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, dest) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("dest"),
        );
        for d in [&l1, &l2, &dest] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir_all(l1.join("etc/old")).unwrap();
        fs::write(l1.join("etc/motd"), "hi").unwrap();
        fs::write(l1.join("etc/old/x"), "x").unwrap();
        fs::create_dir_all(l1.join("opq")).unwrap();
        fs::write(l1.join("opq/lower"), "l").unwrap();
        fs::write(l1.join("a"), "a").unwrap();
        fs::hard_link(l1.join("a"), l1.join("b")).unwrap();
        std::os::unix::fs::symlink("a", l1.join("s")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &l2.join("etc/motd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        nix::sys::stat::mknod(
            &l2.join("etc/old"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir_all(l2.join("opq")).unwrap();
        fs::write(l2.join("opq/upper"), "u").unwrap();
        let f = fs::File::open(l2.join("opq")).unwrap();
        xattr::fset(&f, crate::unpack::OPAQUE_XATTR, b"y").unwrap();
        copy_layers(&[&l1, &l2], &dest).unwrap();
        assert!(!dest.join("etc/motd").exists());
        assert!(!dest.join("etc/old").exists());
        assert!(dest.join("opq/upper").exists() && !dest.join("opq/lower").exists());
        assert_eq!(
            fs::metadata(dest.join("a")).unwrap().ino(),
            fs::metadata(dest.join("b")).unwrap().ino()
        );
        assert_eq!(fs::read_link(dest.join("s")).unwrap(), Path::new("a"));
    }
}
