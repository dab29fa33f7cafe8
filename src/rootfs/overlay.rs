//! The kernel's overlayfs, mounted inside the container's user namespace.
//!
//! `userxattr` makes the kernel use `user.overlay.*` xattrs (the form unpack writes opaque
//! markers in); lower layers are given relative to the store's `layers/` directory, the
//! process's working directory at mount time, which keeps the option string within its one
//! page for images with many layers.

use std::io;
use std::path::Path;

use nix::mount::{MsFlags, mount};

/// The mount data for `lowers` (top first, relative to the layers directory).
pub fn overlay_options(lowers: &[String], upper: &Path, work: &Path) -> io::Result<String> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel copies mount data into one page.
    if opts.len() >= 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} layers do not fit one overlay mount", lowers.len()),
        ));
    }
    Ok(opts)
}

/// Mounts the overlay on `target`.
pub fn mount_overlay(
    layers_dir: &Path,
    lowers: &[String],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let opts = overlay_options(lowers, upper, work)?;
    std::env::set_current_dir(layers_dir)?;
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_page_limit() {
        let o = overlay_options(
            &["a/root".into(), "b/root".into()],
            Path::new("/c/upper"),
            Path::new("/c/work"),
        )
        .unwrap();
        assert_eq!(
            o,
            "lowerdir=a/root:b/root,upperdir=/c/upper,workdir=/c/work,userxattr"
        );
        let many: Vec<String> = (0..80).map(|i| format!("{:064x}/root", i)).collect();
        assert!(overlay_options(&many, Path::new("/u"), Path::new("/w")).is_err());
    }
}
