//! `--storage-opt` and `[storage] additional_image_stores`: the shared, read-only image
//! stores a session looks in after its own.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::UserConfig;
use crate::store::check_shared;
use crate::sys::idmap::Mapping;

/// The shared stores to use: the configuration's, then `--storage-opt
/// additionalimagestore=DIR`s, without the own store and without missing ones (a warning).
/// A store that cannot serve this user is refused.
pub fn shared_stores(
    opts: &[String],
    config: &UserConfig,
    root: &Path,
    mapping: &Mapping,
) -> Result<Vec<PathBuf>> {
    let mut dirs = config.storage.additional_image_stores.clone();
    for o in opts {
        match o.split_once('=') {
            Some(("additionalimagestore", dir)) if !dir.is_empty() => {
                dirs.push(PathBuf::from(dir));
            }
            _ => bail!("unsupported --storage-opt {o:?}: nook knows additionalimagestore=DIR"),
        }
    }
    let idmap = mapping.describe();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if d == root || out.contains(&d) {
            continue;
        }
        if check_shared(&d, &idmap)? {
            out.push(d);
        } else {
            tracing::warn!("no image store at {}: skipped", d.display());
        }
    }
    Ok(out)
}
