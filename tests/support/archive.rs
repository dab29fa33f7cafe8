//! Image archives built by hand (docker-archive, OCI layouts, Docker ≥ 25's mix of both, hostile
//! variants) from [`Built`] images, and a listing of a store's files to show a refused load
//! changed nothing.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use super::image::{Built, LayerTar};

/// An entry of an archive being built.
pub enum Item {
    File(String, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
    Dir(String),
}

/// A tar of `items`, names written as given (hostile ones included).
pub fn tar(items: &[Item]) -> Vec<u8> {
    let mut t = LayerTar::new();
    for i in items {
        t = match i {
            Item::File(n, d) => t.raw(n.as_bytes(), tar::EntryType::Regular, b"", d, 0o644, 0, 0),
            Item::Symlink(n, to) => t.raw(
                n.as_bytes(),
                tar::EntryType::Symlink,
                to.as_bytes(),
                b"",
                0o777,
                0,
                0,
            ),
            Item::Hardlink(n, to) => t.raw(
                n.as_bytes(),
                tar::EntryType::Link,
                to.as_bytes(),
                b"",
                0o644,
                0,
                0,
            ),
            Item::Dir(n) => t.raw(
                n.as_bytes(),
                tar::EntryType::Directory,
                b"",
                b"",
                0o755,
                0,
                0,
            ),
        };
    }
    t.finish()
}

pub fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The blob `digest` of `b`.
pub fn blob<'a>(b: &'a Built, digest: &str) -> &'a [u8] {
    &b.blobs.iter().find(|(d, _)| d == digest).unwrap().1
}

/// A docker-archive of `b` (its layer blobs as they are, gzip inside allowed): the items, to
/// change before [`tar`].
pub fn docker_items(b: &Built, tags: &[&str]) -> Vec<Item> {
    let mut items = vec![Item::File(
        format!("{}.json", hex(&b.config_digest)),
        b.config.clone(),
    )];
    let mut layers = Vec::new();
    for d in &b.layer_digests {
        let name = format!("{}.tar", hex(d));
        if !layers.contains(&name) {
            items.push(Item::File(name.clone(), blob(b, d).to_vec()));
        }
        layers.push(name);
    }
    let m = json!([{
        "Config": format!("{}.json", hex(&b.config_digest)),
        "RepoTags": tags,
        "Layers": layers,
    }]);
    items.push(Item::File(
        "manifest.json".into(),
        serde_json::to_vec(&m).unwrap(),
    ));
    items
}

/// An OCI layout of `b` whose index entry carries `annotations`; with `docker25`, also the
/// `manifest.json` and legacy layer links docker ≥ 25 writes beside it.
pub fn oci_items(b: &Built, annotations: Value, docker25: bool) -> Vec<Item> {
    let mut items = vec![
        Item::File(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        Item::Dir("blobs".into()),
        Item::Dir("blobs/sha256".into()),
    ];
    for (d, data) in &b.blobs {
        items.push(Item::File(format!("blobs/sha256/{}", hex(d)), data.clone()));
    }
    items.push(Item::File(
        format!("blobs/sha256/{}", hex(&b.digest)),
        b.manifest.clone(),
    ));
    let mut desc = json!({"mediaType": b.media_type, "digest": b.digest, "size": b.manifest.len()});
    if !annotations.is_null() {
        desc["annotations"] = annotations;
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]});
    items.push(Item::File(
        "index.json".into(),
        serde_json::to_vec(&index).unwrap(),
    ));
    if docker25 {
        let layers: Vec<String> = b
            .layer_digests
            .iter()
            .map(|d| format!("blobs/sha256/{}", hex(d)))
            .collect();
        for d in &b.layer_digests {
            items.push(Item::Dir(hex(d).to_owned()));
            items.push(Item::Symlink(
                format!("{}/layer.tar", hex(d)),
                format!("../blobs/sha256/{}", hex(d)),
            ));
        }
        let m = json!([{
            "Config": format!("blobs/sha256/{}", hex(&b.config_digest)),
            "RepoTags": ["docker25/app:v1"],
            "Layers": layers,
        }]);
        items.push(Item::File(
            "manifest.json".into(),
            serde_json::to_vec(&m).unwrap(),
        ));
    }
    items
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Every file below `store` (locks aside), with its size, for before/after comparisons.
pub fn store_files(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![store.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(store).unwrap().display().to_string();
            if rel.starts_with("locks") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                dirs.push(p);
            }
            out.insert(format!(
                "{rel} {}",
                if meta.is_dir() { 0 } else { meta.len() }
            ));
        }
    }
    out
}

/// `items` with the file `name` replaced by `with` (or dropped, for `None`).
pub fn replace(items: Vec<Item>, name: &str, with: Option<Item>) -> Vec<Item> {
    let mut with = with;
    items
        .into_iter()
        .filter_map(|i| match &i {
            Item::File(n, _) if n == name => with.take(),
            _ => Some(i),
        })
        .collect()
}

/// The docker-archive `manifest.json` of `items`, changed by `f`.
pub fn edit_manifest(items: Vec<Item>, f: impl FnOnce(&mut Value)) -> Vec<Item> {
    let Some(Item::File(_, bytes)) = items
        .iter()
        .find(|i| matches!(i, Item::File(n, _) if n == "manifest.json"))
    else {
        panic!("no manifest.json")
    };
    let mut m: Value = serde_json::from_slice(bytes).unwrap();
    f(&mut m);
    replace(
        items,
        "manifest.json",
        Some(Item::File(
            "manifest.json".into(),
            serde_json::to_vec(&m).unwrap(),
        )),
    )
}
