//! What a push sends, decided before any byte moves: the manifest format, and per layer
//! whether it goes out as stored or recompressed, with which media type. Pure, so every rule
//! is unit-tested: blobs go out as stored unless a flag asks otherwise (or the layer is an
//! uncompressed tar, which goes out gzip-compressed as docker push sends it), and the stored
//! manifest's bytes go out unchanged when nothing in it changes.

use serde_json::Value;

use super::{LayerCompression, ManifestFormat, PushError};
use crate::registry::manifest::{
    self, Compression, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
    OCI_MANIFEST,
};
use crate::store::LayerRef;

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How one layer goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// The stored compression, and the one to recompress to (`None`: send as stored).
    pub from: Compression,
    pub convert: Option<LayerCompression>,
    /// The layer's media type in the pushed manifest.
    pub media_type: String,
}

/// The format a stored manifest has.
pub fn stored_format(media_type: &str) -> ManifestFormat {
    if media_type == DOCKER_MANIFEST {
        ManifestFormat::V2s2
    } else {
        ManifestFormat::Oci
    }
}

impl ManifestFormat {
    pub fn manifest_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_MANIFEST,
            ManifestFormat::V2s2 => DOCKER_MANIFEST,
        }
    }

    pub fn config_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_CONFIG,
            ManifestFormat::V2s2 => DOCKER_CONFIG,
        }
    }
}

fn as_layer_compression(c: Compression) -> Option<LayerCompression> {
    match c {
        Compression::None => None,
        Compression::Gzip => Some(LayerCompression::Gzip),
        Compression::Zstd => Some(LayerCompression::Zstd),
    }
}

/// The plan for one layer stored as `layer.media_type`, pushed in `format` with `--compression-format`
/// `wanted`; `format_changed` says the manifest's format differs from the stored one.
pub fn plan_layer(
    layer: &LayerRef,
    format: ManifestFormat,
    format_changed: bool,
    wanted: Option<LayerCompression>,
) -> Result<LayerPlan, PushError> {
    let from =
        manifest::layer_compression(&layer.media_type).ok_or_else(|| PushError::LayerType {
            digest: layer.digest.to_string(),
            media_type: layer.media_type.clone(),
        })?;
    let to = wanted
        .or(as_layer_compression(from))
        .unwrap_or(LayerCompression::Gzip);
    if format == ManifestFormat::V2s2 && to == LayerCompression::Zstd {
        return Err(PushError::ZstdNeedsOci);
    }
    let convert = (as_layer_compression(from) != Some(to)).then_some(to);
    let media_type = if convert.is_none() && !format_changed {
        layer.media_type.clone()
    } else {
        match (format, to) {
            (ManifestFormat::Oci, LayerCompression::Gzip) => OCI_LAYER_GZIP,
            (ManifestFormat::Oci, LayerCompression::Zstd) => OCI_LAYER_ZSTD,
            (ManifestFormat::V2s2, _) => DOCKER_LAYER_GZIP,
        }
        .to_owned()
    };
    Ok(LayerPlan {
        from,
        convert,
        media_type,
    })
}

/// A pushed layer: what the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentLayer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The stored manifest rewritten for `format` with `layers`; other fields (annotations, a
/// layer's `urls`) are kept. The config blob is the same, only its descriptor's type changes.
pub fn rewrite_manifest(
    stored: &[u8],
    format: ManifestFormat,
    layers: &[SentLayer],
) -> Result<Vec<u8>, PushError> {
    let bad = |why: &str| PushError::StoredManifest(why.to_owned());
    let mut doc: Value =
        serde_json::from_slice(stored).map_err(|e| PushError::StoredManifest(e.to_string()))?;
    let obj = doc.as_object_mut().ok_or_else(|| bad("not an object"))?;
    obj.insert("schemaVersion".into(), 2.into());
    obj.insert("mediaType".into(), format.manifest_type().into());
    let config = obj
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no config"))?;
    config.insert("mediaType".into(), format.config_type().into());
    let stored_layers = obj
        .get_mut("layers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no layers"))?;
    if stored_layers.len() != layers.len() {
        return Err(bad("layer count differs from the image record"));
    }
    for (entry, sent) in stored_layers.iter_mut().zip(layers) {
        let e = entry
            .as_object_mut()
            .ok_or_else(|| bad("a layer is not an object"))?;
        e.insert("mediaType".into(), sent.media_type.clone().into());
        e.insert("digest".into(), sent.digest.clone().into());
        e.insert("size".into(), sent.size.into());
    }
    serde_json::to_vec_pretty(&doc).map_err(|e| PushError::StoredManifest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::registry::manifest::{DOCKER_LAYER_GZIP, OCI_LAYER_TAR};

    fn layer(media_type: &str) -> LayerRef {
        LayerRef {
            digest: Digest::sha256_of(b"blob"),
            diff_id: Digest::sha256_of(b"tar"),
            size: 4,
            media_type: media_type.into(),
        }
    }

    #[test]
    fn stored_layers_go_out_as_stored() {
        let p = plan_layer(&layer(DOCKER_LAYER_GZIP), ManifestFormat::V2s2, false, None).unwrap();
        assert_eq!(p.convert, None);
        assert_eq!(p.media_type, DOCKER_LAYER_GZIP);
        let nd = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
        let p = plan_layer(&layer(nd), ManifestFormat::Oci, false, None).unwrap();
        assert_eq!((p.convert, p.media_type.as_str()), (None, nd));
    }

    #[test]
    fn uncompressed_layers_go_out_gzipped() {
        let p = plan_layer(&layer(OCI_LAYER_TAR), ManifestFormat::Oci, false, None).unwrap();
        assert_eq!(p.from, Compression::None);
        assert_eq!(p.convert, Some(LayerCompression::Gzip));
        assert_eq!(p.media_type, OCI_LAYER_GZIP);
        let docker_tar = "application/vnd.docker.image.rootfs.diff.tar";
        let p = plan_layer(&layer(docker_tar), ManifestFormat::V2s2, false, None).unwrap();
        assert_eq!(p.media_type, DOCKER_LAYER_GZIP);
    }

    #[test]
    fn format_and_compression_flags_convert() {
        let p = plan_layer(&layer(DOCKER_LAYER_GZIP), ManifestFormat::Oci, true, None).unwrap();
        assert_eq!((p.convert, p.media_type.as_str()), (None, OCI_LAYER_GZIP));
        let z = Some(LayerCompression::Zstd);
        let p = plan_layer(&layer(OCI_LAYER_GZIP), ManifestFormat::Oci, false, z).unwrap();
        assert_eq!(p.convert, z);
        assert_eq!(p.media_type, OCI_LAYER_ZSTD);
        let p = plan_layer(&layer(OCI_LAYER_ZSTD), ManifestFormat::Oci, false, z).unwrap();
        assert_eq!(p.convert, None);
    }

    #[test]
    fn zstd_in_a_docker_manifest_is_refused() {
        let z = Some(LayerCompression::Zstd);
        let e = plan_layer(&layer(OCI_LAYER_GZIP), ManifestFormat::V2s2, true, z).unwrap_err();
        assert!(e.to_string().contains("--format oci"), "{e}");
        let e = plan_layer(&layer("text/plain"), ManifestFormat::Oci, false, None).unwrap_err();
        assert!(matches!(e, PushError::LayerType { .. }));
    }

    #[test]
    fn manifests_are_rewritten_keeping_other_fields() {
        let stored = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:aa","size":3},
            "layers":[{"mediaType":"x","digest":"sha256:bb","size":1,"annotations":{"k":"v"}}]}"#;
        let sent = [SentLayer {
            media_type: OCI_LAYER_ZSTD.into(),
            digest: "sha256:cc".into(),
            size: 9,
        }];
        let out = rewrite_manifest(stored, ManifestFormat::Oci, &sent).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(v["config"]["digest"], "sha256:aa");
        assert_eq!(v["layers"][0]["digest"], "sha256:cc");
        assert_eq!(v["layers"][0]["size"], 9);
        assert_eq!(v["layers"][0]["mediaType"], OCI_LAYER_ZSTD);
        assert_eq!(v["layers"][0]["annotations"]["k"], "v");
        assert!(rewrite_manifest(stored, ManifestFormat::Oci, &[]).is_err());
        assert!(rewrite_manifest(b"[]", ManifestFormat::Oci, &sent).is_err());
    }
}
