//! docker-archive as `docker save` (before 25) and `podman save` write it: `manifest.json`
//! (`[{Config, RepoTags, Layers}]`), the config as `<id-hex>.json`, each layer uncompressed as
//! `<diff-id-hex>.tar`, and the legacy `repositories` file with the `<v1-id>/{VERSION,json,
//! layer.tar}` directories it points into (layer.tar a link to the layer), for old readers.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::out::{Entries, Source};
use super::{ArchiveError, JSON_LIMIT, SaveItem};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::Store;

#[derive(Serialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct V1Json<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
    created: &'a str,
}

/// The legacy v1 ids of an image's layers: each a digest over its parent's id and its diff_id,
/// so an id names a layer together with everything below it.
pub fn v1_ids(diff_ids: &[Digest]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let seed = match out.last() {
            Some(parent) => format!("{parent} {d}"),
            None => d.to_string(),
        };
        out.push(Digest::sha256_of(seed.as_bytes()).hex().to_owned());
    }
    out
}

/// Writes a docker-archive of `items` to `w`.
pub fn write(store: &Store, items: &[SaveItem], w: &mut dyn Write) -> Result<(), ArchiveError> {
    let mut entries = Entries::default();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items {
        let rec = &item.image;
        let mut layers = Vec::new();
        let diff_ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        let v1 = v1_ids(&diff_ids);
        for (i, l) in rec.layers.iter().enumerate() {
            let name = format!("{}.tar", l.diff_id.hex());
            entries.add(
                name.clone(),
                Source::Inflated {
                    blob: store.blob_path(&l.digest),
                    diff_id: l.diff_id.clone(),
                },
            );
            let id = &v1[i];
            if !entries.has(id) {
                let parent = i.checked_sub(1).map(|p| v1[p].as_str());
                let json = V1Json {
                    id,
                    parent,
                    created: "1970-01-01T00:00:00Z",
                };
                entries.add(id.clone(), Source::Dir);
                entries.add(format!("{id}/VERSION"), Source::Bytes(b"1.0".to_vec()));
                entries.add(format!("{id}/json"), Source::Bytes(to_json(&json)));
                entries.add(
                    format!("{id}/layer.tar"),
                    Source::Symlink(format!("../{name}")),
                );
            }
            layers.push(name);
        }
        let config = format!("{}.json", rec.id.hex());
        if !entries.has(&config) {
            entries.add(
                config.clone(),
                Source::Bytes(store.read_blob(&rec.id, JSON_LIMIT)?),
            );
        }
        if let Some(top) = v1.last() {
            for n in &item.names {
                if let Ok(r) = Reference::parse(n) {
                    repositories
                        .entry(r.repository())
                        .or_default()
                        .insert(r.tag_or_latest().to_owned(), top.clone());
                }
            }
        }
        manifest.push(ManifestEntry {
            config,
            repo_tags: (!item.names.is_empty()).then(|| item.names.clone()),
            layers,
        });
    }
    entries.add("manifest.json".into(), Source::Bytes(to_json(&manifest)));
    if !repositories.is_empty() {
        entries.add("repositories".into(), Source::Bytes(to_json(&repositories)));
    }
    entries.write_tar(w)
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data into memory: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_ids_chain_over_parents() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let one = v1_ids(std::slice::from_ref(&a));
        let two = v1_ids(&[a.clone(), b.clone()]);
        assert_eq!(one[0], two[0]);
        assert_ne!(
            two[1],
            v1_ids(std::slice::from_ref(&b))[0],
            "a parent changes the id"
        );
        assert_eq!(two[0].len(), 64);
    }
}
