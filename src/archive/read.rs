//! The images a staged archive holds, every reference in it checked: OCI layouts through
//! `index.json` (Docker ≥ 25's archives too, which add a `manifest.json`), docker-archives
//! through `manifest.json`. Nothing is written here; an image comes out only when its config,
//! manifest and every layer are staged, are regular files and match their digests.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::ArchiveError;
use super::names;
use super::stage::Staged;
use crate::digest::Digest;
use crate::registry::manifest::{
    self, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, Descriptor, Document, ImageManifest, OCI_LAYER_GZIP,
    OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::registry::platform::Platform;
use crate::store::LayerRef;

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// A blob of the image, checked, with where it is staged.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub path: PathBuf,
}

/// An image ready to commit.
#[derive(Debug)]
pub struct Image {
    pub config: Blob,
    pub config_size: u64,
    pub manifest: (Digest, Vec<u8>, String),
    pub index: Option<(Digest, Vec<u8>)>,
    /// The layers and, beside each, its staged blob.
    pub layers: Vec<(LayerRef, Blob)>,
    pub platform: Platform,
    pub created: Option<String>,
    pub names: Vec<String>,
}

/// One entry of a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Every image of the staged archive.
pub fn images(staged: &Staged) -> Result<Vec<Image>, ArchiveError> {
    let out = if staged.has("index.json") {
        oci_images(staged)?
    } else if staged.has("manifest.json") {
        docker_images(staged)?
    } else {
        return Err(ArchiveError::NotAnArchive);
    };
    if out.is_empty() {
        return Err(ArchiveError::Image {
            what: "the archive".into(),
            why: "it holds no image".into(),
        });
    }
    Ok(out)
}

fn json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    entry: &str,
    what: &'static str,
) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
        entry: entry.to_owned(),
        what,
        source,
    })
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// The digest an entry's name claims: `blobs/ALG/HEX`, or a docker-archive's `HEX.json`.
fn claimed_digest(name: &str) -> Option<Digest> {
    let parts: Vec<&str> = name.trim_start_matches("./").split('/').collect();
    if let [.., "blobs", alg, hex] = parts.as_slice() {
        return Digest::parse(&format!("{alg}:{hex}")).ok();
    }
    let last = parts.last()?;
    let hex = last.strip_suffix(".json")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

fn docker_images(staged: &Staged) -> Result<Vec<Image>, ArchiveError> {
    let bytes = staged.json_bytes("the archive", "manifest.json")?;
    let entries: Vec<DockerEntry> = json(&bytes, "manifest.json", "a docker-archive manifest")?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| docker_image(staged, i, e))
        .collect()
}

fn docker_image(staged: &Staged, i: usize, e: &DockerEntry) -> Result<Image, ArchiveError> {
    let what = format!("manifest.json entry {}", i + 1);
    let cfg = staged.file(&what, &e.config)?;
    let config = Blob {
        digest: cfg.sha256.clone(),
        path: cfg.path.clone(),
    };
    if let Some(claimed) = claimed_digest(&e.config) {
        staged.blob(&what, &e.config, &claimed, None)?;
    }
    let config_bytes = staged.json_bytes(&what, &e.config)?;
    let parsed: ImageConfiguration = json(&config_bytes, &e.config, "an image config")?;
    let diff_ids = diff_ids(&what, &parsed)?;
    if diff_ids.len() != e.layers.len() {
        return Err(ArchiveError::Image {
            what,
            why: format!(
                "the config lists {} layers, the manifest {}",
                diff_ids.len(),
                e.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    let mut oci = false;
    for (name, diff_id) in e.layers.iter().zip(diff_ids) {
        let f = staged.file(&what, name)?;
        if let Some(claimed) = claimed_digest(name) {
            staged.blob(&what, name, &claimed, None)?;
        }
        let media_type = sniff_layer(&f.path).map_err(|source| ArchiveError::Stage {
            entry: name.clone(),
            source,
        })?;
        oci |= media_type == OCI_LAYER_ZSTD;
        if media_type == DOCKER_LAYER_TAR && f.sha256 != diff_id {
            return Err(ArchiveError::Digest {
                entry: name.clone(),
                what: format!("{what}'s config"),
                expected: diff_id.to_string(),
                actual: f.sha256.clone(),
            });
        }
        let layer = LayerRef {
            digest: f.sha256.clone(),
            diff_id,
            size: f.size,
            media_type: media_type.to_owned(),
        };
        let blob = Blob {
            digest: f.sha256.clone(),
            path: f.path.clone(),
        };
        layers.push((layer, blob));
    }
    check_unique(&what, &layers)?;
    let mut names_out = Vec::new();
    for t in e.repo_tags.iter().flatten() {
        let n = names::docker_name(t).ok_or_else(|| ArchiveError::Image {
            what: what.clone(),
            why: format!("RepoTags has {t:?}, which is not a valid image name"),
        })?;
        names_out.push(n);
    }
    let manifest = synthesized_manifest(&config.digest, cfg.size, &layers, oci);
    Ok(Image {
        config_size: cfg.size,
        config,
        manifest,
        index: None,
        layers,
        platform: platform_of(&parsed),
        created: parsed.created().clone(),
        names: names_out,
    })
}

/// A layer's media type from its first bytes: docker's for gzip and plain tars, OCI's for zstd.
fn sniff_layer(path: &std::path::Path) -> std::io::Result<&'static str> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(path)?.take(4).read_to_end(&mut head)?;
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
        _ => DOCKER_LAYER_TAR,
    })
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: None,
    }
}

/// A manifest over a docker-archive's config and layers as they are (docker's schema2, or OCI's
/// when a layer is zstd, which schema2 cannot name).
fn synthesized_manifest(
    config: &Digest,
    config_size: u64,
    layers: &[(LayerRef, Blob)],
    oci: bool,
) -> (Digest, Vec<u8>, String) {
    let (mt, config_mt) = if oci {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let layer_type = |t: &str| match (oci, t) {
        (true, DOCKER_LAYER_GZIP) => OCI_LAYER_GZIP.to_owned(),
        (true, DOCKER_LAYER_TAR) => OCI_LAYER_TAR.to_owned(),
        _ => t.to_owned(),
    };
    let m = ManifestOut {
        schema_version: 2,
        media_type: mt,
        config: descriptor(config_mt, config, config_size),
        layers: layers
            .iter()
            .map(|(l, _)| descriptor(&layer_type(&l.media_type), &l.digest, l.size))
            .collect(),
    };
    // Plain data into memory: serializing cannot fail.
    let bytes = serde_json::to_vec(&m).unwrap_or_default();
    (Digest::sha256_of(&bytes), bytes, mt.to_owned())
}

fn diff_ids(what: &str, config: &ImageConfiguration) -> Result<Vec<Digest>, ArchiveError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|_| ArchiveError::Image {
                what: what.to_owned(),
                why: format!("the config has an invalid layer digest {d:?}"),
            })
        })
        .collect()
}

fn platform_of(config: &ImageConfiguration) -> Platform {
    Platform {
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        variant: config.variant().clone(),
    }
}

/// An image may list one layer more than once (docker's classic builder repeated the empty
/// layer; the image spec allows it): it is stored and unpacked once. What it may not do is
/// give one diff_id two different blobs of the same archive entry — caught by the digest
/// checks — so only a layer whose diff_id and blob disagree with an earlier listing of the
/// same blob is refused.
fn check_unique(what: &str, layers: &[(LayerRef, Blob)]) -> Result<(), ArchiveError> {
    let mut by_blob: HashMap<&Digest, &Digest> = HashMap::new();
    for (l, _) in layers {
        if let Some(diff) = by_blob.insert(&l.digest, &l.diff_id)
            && diff != &l.diff_id
        {
            return Err(ArchiveError::DuplicateLayer {
                what: what.to_owned(),
                layer: l.digest.to_string(),
            });
        }
    }
    Ok(())
}

fn oci_images(staged: &Staged) -> Result<Vec<Image>, ArchiveError> {
    let bytes = staged.json_bytes("the archive", "index.json")?;
    let top =
        manifest::parse("index.json", None, &bytes).map_err(|source| ArchiveError::Manifest {
            what: "index.json".into(),
            source,
        })?;
    let Document::Index { manifests, .. } = top else {
        return Err(ArchiveError::Image {
            what: "index.json".into(),
            why: "it is an image manifest, not an index".into(),
        });
    };
    let fallback = docker_names_by_config(staged);
    let mut out: Vec<Image> = Vec::new();
    for (i, d) in manifests.iter().enumerate() {
        if d.is_attestation() {
            continue;
        }
        let what = format!("index.json entry {}", i + 1);
        let name = names::oci_name(d.annotations.as_ref()).map_err(|v| ArchiveError::Image {
            what: what.clone(),
            why: format!("the name {v:?} is not a valid image name"),
        })?;
        let mut image = oci_image(staged, &what, d)?;
        let names: Vec<String> = match name {
            Some(n) => vec![n],
            None => fallback
                .get(&image.config.digest)
                .cloned()
                .unwrap_or_default(),
        };
        // An image named twice in the index is one image with two names.
        if let Some(seen) = out.iter_mut().find(|o| o.manifest.0 == image.manifest.0) {
            for n in names {
                if !seen.names.contains(&n) {
                    seen.names.push(n);
                }
            }
            continue;
        }
        image.names = names;
        out.push(image);
    }
    Ok(out)
}

/// The image an index entry names: a manifest, or an index to choose the host's manifest from.
fn oci_image(staged: &Staged, what: &str, d: &Descriptor) -> Result<Image, ArchiveError> {
    let (doc, bytes) = document(staged, what, d)?;
    match doc {
        Document::Image(m) => image_from_manifest(staged, what, d, bytes, m, None),
        Document::Index { manifests, .. } => {
            let host = Platform::host();
            let chosen =
                manifest::choose(&manifests, &host).map_err(|offered| ArchiveError::Image {
                    what: what.to_owned(),
                    why: format!(
                        "no image for {host} in its index (it has {})",
                        offered.join(", ")
                    ),
                })?;
            let (inner, inner_bytes) = document(staged, what, chosen)?;
            let Document::Image(m) = inner else {
                return Err(ArchiveError::Image {
                    what: what.to_owned(),
                    why: "an index inside an index".into(),
                });
            };
            let index = Some((d.digest.clone(), bytes));
            image_from_manifest(staged, what, chosen, inner_bytes, m, index)
        }
    }
}

/// The manifest or index a descriptor names, checked against it.
fn document(
    staged: &Staged,
    what: &str,
    d: &Descriptor,
) -> Result<(Document, Vec<u8>), ArchiveError> {
    let name = blob_name(&d.digest);
    staged.blob(what, &name, &d.digest, Some(d.size))?;
    let bytes = staged.json_bytes(what, &name)?;
    let media_type = (!d.media_type.is_empty()).then_some(d.media_type.as_str());
    let doc =
        manifest::parse(&name, media_type, &bytes).map_err(|source| ArchiveError::Manifest {
            what: name.clone(),
            source,
        })?;
    Ok((doc, bytes))
}

fn image_from_manifest(
    staged: &Staged,
    what: &str,
    d: &Descriptor,
    bytes: Vec<u8>,
    m: ImageManifest,
    index: Option<(Digest, Vec<u8>)>,
) -> Result<Image, ArchiveError> {
    let cfg_name = blob_name(&m.config.digest);
    let cfg = staged.blob(what, &cfg_name, &m.config.digest, Some(m.config.size))?;
    let config_bytes = staged.json_bytes(what, &cfg_name)?;
    let parsed: ImageConfiguration = json(&config_bytes, &cfg_name, "an image config")?;
    let diff_ids = diff_ids(what, &parsed)?;
    if diff_ids.len() != m.layers.len() {
        return Err(ArchiveError::Image {
            what: what.to_owned(),
            why: format!(
                "the config lists {} layers, the manifest {}",
                diff_ids.len(),
                m.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers.iter().zip(diff_ids) {
        let name = blob_name(&l.digest);
        let f = staged.blob(what, &name, &l.digest, Some(l.size))?;
        let layer = LayerRef {
            digest: l.digest.clone(),
            diff_id,
            size: l.size,
            media_type: l.media_type.clone(),
        };
        let blob = Blob {
            digest: l.digest.clone(),
            path: f.path.clone(),
        };
        layers.push((layer, blob));
    }
    check_unique(what, &layers)?;
    Ok(Image {
        config: Blob {
            digest: m.config.digest.clone(),
            path: cfg.path.clone(),
        },
        config_size: m.config.size,
        manifest: (d.digest.clone(), bytes, m.media_type.clone()),
        index,
        layers,
        platform: platform_of(&parsed),
        created: parsed.created().clone(),
        names: Vec::new(),
    })
}

/// Docker ≥ 25's `manifest.json` beside `index.json`: its RepoTags by config digest, for
/// index entries without a name. Best effort: the index is what the load trusts.
fn docker_names_by_config(staged: &Staged) -> HashMap<Digest, Vec<String>> {
    let mut out = HashMap::new();
    let Ok(bytes) = staged.json_bytes("the archive", "manifest.json") else {
        return out;
    };
    let Ok(entries) = serde_json::from_slice::<Vec<DockerEntry>>(&bytes) else {
        return out;
    };
    for e in entries {
        let Some(d) = claimed_digest(&e.config) else {
            continue;
        };
        let names: Vec<String> = e
            .repo_tags
            .iter()
            .flatten()
            .filter_map(|t| names::docker_name(t))
            .collect();
        out.insert(d, names);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_claimed_by_entry_names() {
        let hex = "ab".repeat(32);
        assert_eq!(
            claimed_digest(&format!("{hex}.json")).unwrap().hex(),
            hex.as_str()
        );
        assert_eq!(
            claimed_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .hex(),
            hex.as_str()
        );
        assert!(claimed_digest("config.json").is_none());
        assert!(claimed_digest(&format!("{hex}/layer.tar")).is_none());
    }
}
