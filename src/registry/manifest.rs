//! Manifests and indexes: the four media types nook pulls, and the checks on them.
//!
//! A manifest is classified from its `Content-Type` and its own `mediaType`; when both are
//! present they must agree, and the body's shape must fit the type (an index has `manifests`
//! and no `layers`, a manifest the reverse), so one document cannot be read two ways
//! (CVE-2021-41190). Docker's schema1 is refused with a message saying what to do.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::platform::Platform;
use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Every manifest type nook accepts, for the `Accept` header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest nook reads (Docker's registry caps them at 4 MiB too).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{0} is a Docker schema1 manifest, a format retired in 2019 that nook does not pull: rebuild or re-push the image"
    )]
    Schema1(String),
    #[error("{what}: Content-Type says {header:?} but the manifest says {body:?}")]
    MediaTypeMismatch {
        what: String,
        header: String,
        body: String,
    },
    #[error("{what}: unsupported manifest media type {media_type:?}")]
    Unsupported { what: String, media_type: String },
    #[error("{what}: media type {media_type} does not fit the document's fields ({why})")]
    Shape {
        what: String,
        media_type: String,
        why: &'static str,
    },
    #[error("{what}: malformed manifest")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: unsupported layer media type {media_type:?}")]
    LayerType { what: String, media_type: String },
}

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

impl Descriptor {
    /// BuildKit's attestation manifests sit in indexes beside the images; they are not images.
    pub fn is_attestation(&self) -> bool {
        self.platform.as_ref().is_some_and(Platform::is_unknown)
            || self.annotations.as_ref().is_some_and(|a| {
                a.get("vnd.docker.reference.type").map(String::as_str)
                    == Some("attestation-manifest")
            })
    }
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<serde_json::Value>,
}

/// A classified manifest document.
#[derive(Debug, Clone)]
pub enum Document {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Image(ImageManifest),
}

/// An image manifest (Docker schema2 or OCI).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    let base = media_type
        .replace(".nondistributable", "")
        .replace(".foreign", "");
    match base.as_str() {
        DOCKER_LAYER_GZIP | OCI_LAYER_GZIP => Some(Compression::Gzip),
        OCI_LAYER_ZSTD => Some(Compression::Zstd),
        OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        _ => None,
    }
}

fn bare_type(content_type: Option<&str>) -> Option<String> {
    let t = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    // Generic types say nothing about which manifest this is.
    match t.as_str() {
        "" | "application/json" | "text/plain" | "application/octet-stream" => None,
        _ => Some(t),
    }
}

/// Classifies and checks a manifest document. `what` names it in errors (the reference).
pub fn parse(
    what: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Document, ManifestError> {
    let header = bare_type(content_type);
    if header.as_deref().is_some_and(|h| SCHEMA1.contains(&h)) {
        return Err(ManifestError::Schema1(what.to_owned()));
    }
    let raw: RawDocument = serde_json::from_slice(body).map_err(|source| ManifestError::Json {
        what: what.to_owned(),
        source,
    })?;
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        return Err(ManifestError::Schema1(what.to_owned()));
    }
    if let (Some(h), Some(b)) = (&header, &raw.media_type)
        && h != b
    {
        return Err(ManifestError::MediaTypeMismatch {
            what: what.to_owned(),
            header: h.clone(),
            body: b.clone(),
        });
    }
    let media_type = header.or(raw.media_type.clone()).unwrap_or_else(|| {
        if raw.manifests.is_some() {
            OCI_INDEX.to_owned()
        } else {
            OCI_MANIFEST.to_owned()
        }
    });
    let shape = |why| ManifestError::Shape {
        what: what.to_owned(),
        media_type: media_type.clone(),
        why,
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            if raw.layers.is_some() || raw.config.is_some() {
                return Err(shape("an index has no config or layers"));
            }
            let manifests = raw
                .manifests
                .ok_or_else(|| shape("an index needs manifests"))?;
            Ok(Document::Index {
                media_type,
                manifests,
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            if raw.manifests.is_some() {
                return Err(shape("an image manifest has no manifests list"));
            }
            let config = raw
                .config
                .ok_or_else(|| shape("an image manifest needs a config"))?;
            let layers = raw
                .layers
                .ok_or_else(|| shape("an image manifest needs layers"))?;
            for l in &layers {
                if layer_compression(&l.media_type).is_none() {
                    return Err(ManifestError::LayerType {
                        what: what.to_owned(),
                        media_type: l.media_type.clone(),
                    });
                }
            }
            Ok(Document::Image(ImageManifest {
                media_type,
                config,
                layers,
            }))
        }
        _ => Err(ManifestError::Unsupported {
            what: what.to_owned(),
            media_type,
        }),
    }
}

/// Picks the index entry that best fits `want`, skipping attestations; on failure, the list of
/// platforms the index offers.
pub fn choose<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let best = manifests
        .iter()
        .filter(|d| !d.is_attestation())
        .filter_map(|d| Some((d.platform.as_ref()?.fitness_on(want)?, d)))
        .min_by_key(|(rank, _)| *rank);
    match best {
        Some((_, d)) => Ok(d),
        None => Err(manifests
            .iter()
            .filter(|d| !d.is_attestation())
            .filter_map(|d| d.platform.as_ref().map(|p| p.normalized().to_string()))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn image_json(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D1}","size":10}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{D2}","size":20}}]}}"#
        )
    }

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D3}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}},
              "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        )
    }

    #[test]
    fn docker_schema2_by_header() {
        let doc = parse(
            "x",
            Some(DOCKER_MANIFEST),
            image_json(Some(DOCKER_MANIFEST)).as_bytes(),
        )
        .unwrap();
        let Document::Image(m) = doc else {
            panic!("not an image")
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.config.digest.to_string(), D1);
    }

    #[test]
    fn oci_manifest_without_media_type_field() {
        let doc = parse("x", Some(OCI_MANIFEST), image_json(None).as_bytes()).unwrap();
        assert!(matches!(doc, Document::Image(_)));
        let doc = parse(
            "x",
            Some("application/json; charset=utf-8"),
            image_json(None).as_bytes(),
        )
        .unwrap();
        assert!(matches!(doc, Document::Image(m) if m.media_type == OCI_MANIFEST));
    }

    #[test]
    fn contradicting_media_types_are_rejected() {
        let err = parse(
            "x",
            Some(OCI_INDEX),
            image_json(Some(DOCKER_MANIFEST)).as_bytes(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ManifestError::MediaTypeMismatch { .. }),
            "{err}"
        );
        let err = parse("x", Some(OCI_INDEX), image_json(None).as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Shape { .. }), "{err}");
    }

    #[test]
    fn schema1_is_refused() {
        let err = parse("x", Some(SCHEMA1[1]), b"{}").unwrap_err();
        assert!(matches!(err, ManifestError::Schema1(_)));
        let err = parse("x", None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(matches!(err, ManifestError::Schema1(_)));
        assert!(err.to_string().contains("re-push"));
    }

    #[test]
    fn hostile_digests_fail_to_parse() {
        let body = image_json(None).replace(D2, "sha256:../../x");
        assert!(matches!(
            parse("x", Some(OCI_MANIFEST), body.as_bytes()),
            Err(ManifestError::Json { .. })
        ));
    }

    #[test]
    fn unknown_layer_type_is_named() {
        let body = image_json(None).replace(DOCKER_LAYER_GZIP, "application/x-weird");
        let err = parse("x", Some(OCI_MANIFEST), body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("application/x-weird"));
    }

    #[test]
    fn index_choice_skips_attestations() {
        let Document::Index { manifests, .. } = parse("x", None, index_json().as_bytes()).unwrap()
        else {
            panic!("not an index")
        };
        let amd = choose(&manifests, &Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(amd.digest.to_string(), D1);
        let arm = choose(&manifests, &Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.digest.to_string(), D2);
        let avail = choose(&manifests, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(avail, vec!["linux/amd64", "linux/arm64/v8"]);
    }

    #[test]
    fn compression_by_media_type() {
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression(OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(layer_compression(OCI_LAYER_TAR), Some(Compression::None));
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression("text/html"), None);
    }
}
