//! A build step's result → blobs and an image record in the store.
//!
//! [`store_layer`] turns a layer tar into a deterministic gzip blob and an unpacked layer
//! ([`blob`]); [`store_image`] writes the config and a manifest (OCI, or docker schema2 with
//! `--format docker`) as blobs and records the image ([`image`]). Both are pure functions of
//! their inputs, so a step rebuilt from the same inputs gets the same image id and manifest
//! digest, which is what lets the build cache and `nook push` agree with the registry.

mod blob;
mod image;

use std::io;

pub use blob::store_layer;
pub use image::{image_config, store_image};

use crate::digest::Digest;
use crate::registry::manifest::{
    DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::store::StoreError;
use crate::unpack::UnpackError;

/// Docker's config media type (OCI's is [`OCI_CONFIG`]).
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's media type for an uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The media types an image is written with (`nook build --format oci|docker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Oci,
    Docker,
}

impl Format {
    pub fn manifest(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }

    /// A gzip-compressed layer.
    pub fn layer_gzip(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER_GZIP,
            Format::Docker => DOCKER_LAYER_GZIP,
        }
    }

    /// The media type a layer blob of `media_type` (a base image's, perhaps of the other
    /// format) gets in a manifest of this format: the same bytes, named this format's way.
    /// zstd has no docker name and keeps OCI's, as other builders do; unknown types are kept.
    pub fn layer_media_type(self, media_type: &str) -> String {
        use crate::registry::manifest::{Compression, layer_compression};
        let distributable =
            !media_type.contains(".nondistributable") && !media_type.contains(".foreign");
        match (layer_compression(media_type), distributable) {
            (Some(Compression::Gzip), true) => self.layer_gzip().to_owned(),
            (Some(Compression::None), true) => match self {
                Format::Oci => OCI_LAYER_TAR.to_owned(),
                Format::Docker => DOCKER_LAYER_TAR.to_owned(),
            },
            _ => media_type.to_owned(),
        }
    }
}

/// Why committing a layer or an image failed, named after the step.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot read the layer tar {path}")]
    ReadTar {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot compress the layer into {path}")]
    Compress {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare {path}")]
    Staging {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {diff_id}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("the layer tar {path} changed while it was stored (was {expected}, now {actual})")]
    TarChanged {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "the image config lists {diff_ids} layer digests for {layers} layers (or in another order)"
    )]
    LayerMismatch { diff_ids: usize, layers: usize },
    #[error("image {id}: the stored config is not valid")]
    Config {
        id: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::OCI_LAYER_ZSTD;

    #[test]
    fn base_layers_take_the_formats_names() {
        assert_eq!(
            Format::Oci.layer_media_type(DOCKER_LAYER_GZIP),
            OCI_LAYER_GZIP
        );
        assert_eq!(
            Format::Docker.layer_media_type(OCI_LAYER_GZIP),
            DOCKER_LAYER_GZIP
        );
        assert_eq!(
            Format::Docker.layer_media_type(OCI_LAYER_TAR),
            DOCKER_LAYER_TAR
        );
        assert_eq!(
            Format::Docker.layer_media_type(OCI_LAYER_ZSTD),
            OCI_LAYER_ZSTD
        );
        let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
        assert_eq!(Format::Oci.layer_media_type(foreign), foreign);
        assert_eq!(Format::Oci.layer_media_type("x/unknown"), "x/unknown");
    }
}
