//! COPY, ADD and WORKDIR as layers: planned and written in the store's user namespace (where
//! an image's files can be read whatever their owners, and a layer's owners written), then
//! committed as a blob and an unpacked layer.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::builder::State;
use super::context::{Context, CopyRequest, plan_copy};
use super::entry::{Entry, EntryKind, FileKind, SourceTree};
use super::layer::{Layered, WriteOptions, write_tar};
use super::{BuildError, Host, Options, commit, job};
use crate::store::LayerRef;

/// Writes `entries` as a layer (nothing when there are none). Runs in the store's namespace.
pub fn write_layer(
    host: &Host<'_>,
    (clamp, format): (Option<i64>, commit::Format),
    entries: &[Entry],
) -> Result<Option<LayerRef>, String> {
    if entries.is_empty() {
        return Ok(None);
    }
    let tmp = host.store.tmp_path("layer-tar");
    let written = std::fs::File::create(&tmp)
        .and_then(|f| {
            let mut w = BufWriter::new(f);
            write_tar(entries, &mut w, &WriteOptions { clamp })?;
            std::io::Write::flush(&mut w)
        })
        .map_err(|e| format!("cannot write the layer: {e}"));
    let stored = written.and_then(|()| {
        commit::store_layer(host.store, &tmp, host.owners, format)
            .map_err(|e| crate::cli::error_line(&anyhow::Error::new(e)))
    });
    let _ = std::fs::remove_file(&tmp);
    stored.map(Some)
}

/// What a COPY or ADD takes its files from.
pub enum CopyFrom<'a> {
    Context(&'a Context),
    /// A stage's or an image's layers, top first.
    Layers(Vec<PathBuf>),
}

/// A COPY or ADD, ready to go.
pub struct CopyStep<'a> {
    pub from: CopyFrom<'a>,
    pub req: CopyRequest,
    /// Files written from heredocs.
    pub extra: Vec<Entry>,
    /// `--link`: the layer stands alone, without the image's parent directories.
    pub link: bool,
}

/// Runs a COPY or ADD; returns its layer.
pub fn copy_step(
    host: &Host<'_>,
    o: &Options,
    st: &State,
    step: &CopyStep<'_>,
) -> Result<Option<LayerRef>, BuildError> {
    let lowers = st.lowers(host.store);
    Ok(job::in_store(host.mapping, || {
        let image =
            Layered::new(&lowers).map_err(|e| format!("cannot read the image's layers: {e}"))?;
        let scratch = host.store.tmp_path("copy");
        std::fs::create_dir(&scratch)
            .map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
        let planned = plan(&image, step, &scratch);
        let result = planned.and_then(|mut entries| {
            entries.extend(rebase(step.extra.clone(), &image)?);
            let entries = if step.link {
                entries
            } else {
                with_parents(entries, &image)?
            };
            write_layer(host, (o.timestamp, o.format), &entries)
        });
        let _ = crate::sys::confined::remove_tree(&scratch);
        result
    })?)
}

fn plan(image: &Layered, step: &CopyStep<'_>, scratch: &Path) -> Result<Vec<Entry>, String> {
    if step.req.sources.is_empty() {
        return Ok(Vec::new());
    }
    let shown = |e: super::context::CopyError| e.to_string();
    match &step.from {
        CopyFrom::Context(ctx) => plan_copy(*ctx, image, &step.req, scratch).map_err(shown),
        CopyFrom::Layers(layers) => {
            let tree =
                Layered::new(layers).map_err(|e| format!("cannot read the source layers: {e}"))?;
            plan_copy(&tree, image, &step.req, scratch).map_err(shown)
        }
    }
}

/// WORKDIR: the directory and any missing parents, owned by `ids`, when the image lacks it.
pub fn workdir_step(
    host: &Host<'_>,
    o: &Options,
    st: &State,
    path: &str,
    ids: (u32, u32),
    mtime: i64,
) -> Result<Option<LayerRef>, BuildError> {
    let lowers = st.lowers(host.store);
    Ok(job::in_store(host.mapping, || {
        let image =
            Layered::new(&lowers).map_err(|e| format!("cannot read the image's layers: {e}"))?;
        let mut rel = PathBuf::new();
        let mut entries = Vec::new();
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            rel.push(c);
            let found = image
                .stat(&rel)
                .map_err(|e| format!("WORKDIR {path}: {e}"))?;
            match found {
                Some(m) if m.kind == FileKind::Dir || m.kind == FileKind::Symlink => {}
                Some(_) => {
                    return Err(format!(
                        "WORKDIR {path}: {} is not a directory",
                        rel.display()
                    ));
                }
                None => entries.push(Entry {
                    path: rel.clone(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: ids.0,
                    gid: ids.1,
                    mtime,
                    xattrs: vec![],
                }),
            }
        }
        let entries = with_parents(rebase(entries, &image)?, &image)?;
        write_layer(host, (o.timestamp, o.format), &entries)
    })?)
}

/// Puts entries where the image's symlinks lead: `/bin/x` in an image whose `/bin` links to
/// `usr/bin` is `usr/bin/x` (a layer with `bin/x` would make `/bin` a directory over the link).
pub fn rebase(entries: Vec<Entry>, image: &Layered) -> Result<Vec<Entry>, String> {
    let mut seen: std::collections::HashMap<PathBuf, PathBuf> = std::collections::HashMap::new();
    let mut real = |p: &Path| -> Result<PathBuf, String> {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Ok(p.to_path_buf());
        };
        if parent.as_os_str().is_empty() {
            return Ok(p.to_path_buf());
        }
        if let Some(r) = seen.get(parent) {
            return Ok(r.join(name));
        }
        let r = super::context::real_path(image, parent)
            .map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
        seen.insert(parent.to_path_buf(), r.clone());
        Ok(r.join(name))
    };
    entries
        .into_iter()
        .map(|mut e| {
            e.path = real(&e.path)?;
            if let EntryKind::Hardlink(t) = &e.kind {
                e.kind = EntryKind::Hardlink(real(t)?);
            }
            Ok(e)
        })
        .collect()
}

/// Adds the parent directories of `entries` that the image already has, with the image's
/// metadata: unpacked alone, a layer's `a/b` would otherwise make a fresh `a` that hides the
/// owner and mode the image gave it (an overlay shows the top layer's directory).
pub fn with_parents(entries: Vec<Entry>, image: &Layered) -> Result<Vec<Entry>, String> {
    let have: std::collections::BTreeSet<PathBuf> =
        entries.iter().map(|e| e.path.clone()).collect();
    let mut added: std::collections::BTreeMap<PathBuf, Entry> = std::collections::BTreeMap::new();
    for e in &entries {
        for parent in e.path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || have.contains(parent) || added.contains_key(parent)
            {
                continue;
            }
            let meta = image
                .stat(parent)
                .map_err(|err| format!("cannot read {}: {err}", parent.display()))?;
            if let Some(m) = meta.filter(|m| m.kind == FileKind::Dir) {
                added.insert(
                    parent.to_path_buf(),
                    Entry {
                        path: parent.to_path_buf(),
                        kind: EntryKind::Dir,
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                        mtime: m.mtime,
                        xattrs: image.xattrs(parent),
                    },
                );
            }
        }
    }
    let mut out: Vec<Entry> = added.into_values().collect();
    out.extend(entries);
    Ok(out)
}

/// Makes `rel` of `layers` (top first) into files below the empty directory `dir`, for a
/// RUN's `--mount=type=bind,from=`; returns what to mount.
pub fn materialize(
    host: &Host<'_>,
    from: &CopyFrom<'_>,
    rel: &Path,
    dir: &Path,
) -> Result<PathBuf, BuildError> {
    let rel_text = if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        rel.to_string_lossy().into_owned()
    };
    let owners = host.owners;
    let made = job::in_store(host.mapping, || {
        let layered;
        let tree: &dyn SourceTree = match from {
            CopyFrom::Context(c) => *c,
            CopyFrom::Layers(l) => {
                layered =
                    Layered::new(l).map_err(|e| format!("cannot read the mount's layers: {e}"))?;
                &layered
            }
        };
        let empty = Layered::new(&[]).map_err(|e| e.to_string())?;
        let not_found = || format!("bind source {rel_text:?} not found");
        // Followed inside its own tree, as BuildKit does: never a link the kernel would
        // follow on the host once mounted.
        let context = matches!(from, CopyFrom::Context(_));
        let rel = super::context::resolve_inside(tree, rel, context)
            .map_err(|e| e.to_string())?
            .ok_or_else(not_found)?;
        let rel_text = if rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            rel.to_string_lossy().into_owned()
        };
        let kind = tree
            .stat(&rel)
            .map_err(|e| e.to_string())?
            .ok_or_else(not_found)?
            .kind;
        if kind == FileKind::Symlink {
            return Err(not_found());
        }
        let req = CopyRequest {
            sources: vec![rel_text.clone()],
            dest: "/".into(),
            workdir: "/".into(),
            chown: None,
            chmod: None,
            exclude: vec![],
            from_context: matches!(from, CopyFrom::Context(_)),
            add: false,
            checksum: None,
        };
        let entries = plan_copy(tree, &empty, &req, dir).map_err(|e| e.to_string())?;
        let tmp = host.store.tmp_path("bind-tar");
        let unpacked = std::fs::File::create(&tmp)
            .and_then(|f| write_tar(&entries, BufWriter::new(f), &WriteOptions { clamp: None }))
            .map_err(|e| e.to_string())
            .and_then(|_| {
                let f = std::fs::File::open(&tmp).map_err(|e| e.to_string())?;
                crate::unpack::unpack(f, dir, owners).map_err(|e| e.to_string())
            });
        let _ = std::fs::remove_file(&tmp);
        unpacked?;
        Ok(if kind == FileKind::Dir {
            dir.to_path_buf()
        } else {
            dir.join(rel.file_name().unwrap_or_default())
        })
    })?;
    Ok(made)
}
