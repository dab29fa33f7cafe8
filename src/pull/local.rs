//! Unpacking an image whose blobs are all in the store already (an archive's, after `nook load`
//! verified and stored them): the pull pipeline's layer stage replays each stored blob, checks
//! its digest and the config's diff_id and unpacks it, several layers at once. No request is
//! ever made: every blob is checked to be stored whole before the pipeline starts, and the
//! pipeline only asks the registry for bytes the stored file lacks.

use super::{LayerProgress, LayerState, Progress, PullError, Puller};
use crate::digest::Digest;
use crate::registry::platform::Platform;
use crate::registry::{Endpoint, Registry, RegistryOptions};
use crate::store::{LayerRef, Store};
use crate::unpack::Owners;

/// Unpacks the layers of `layers` the store lacks from their stored blobs; returns the
/// diff_ids it unpacked (so that a caller giving up can remove them again). The caller holds
/// `store.lock("gc", false)`.
pub fn unpack_stored(
    store: &Store,
    owners: Owners,
    layers: &[LayerRef],
) -> Result<Vec<Digest>, PullError> {
    for l in layers {
        let path = store.blob_path(&l.digest);
        let len = std::fs::metadata(&path)
            .map_err(|source| PullError::Staging {
                path: path.display().to_string(),
                source,
            })?
            .len();
        if len != l.size {
            return Err(PullError::Size {
                digest: l.digest.to_string(),
                expected: l.size,
                actual: len,
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    let missing: Vec<LayerRef> = layers
        .iter()
        .filter(|l| !store.has_layer(&l.diff_id) && seen.insert(l.diff_id.clone()))
        .cloned()
        .collect();
    // Never contacted: every blob above is whole, so the pipeline reads only the store.
    let registry = Registry::new(RegistryOptions::default());
    let nowhere = Endpoint {
        base: "http://stored-blobs.invalid".into(),
        host: "stored-blobs.invalid".into(),
        login_host: "stored-blobs.invalid".into(),
        tls_verify: true,
        http_fallback: false,
        mirror: false,
    };
    let puller = Puller {
        registry: &registry,
        store,
        owners,
        platform: Platform::host(),
        platform_given: false,
        progress: &Silent,
    };
    puller.fetch_layers(&nowhere, "", &missing)?;
    Ok(missing.into_iter().map(|l| l.diff_id).collect())
}

struct Silent;

impl Progress for Silent {
    fn say(&self, _: &str) {}
    fn layer(&self, _: &Digest, _: u64) -> Box<dyn LayerProgress + '_> {
        Box::new(Silent)
    }
}

impl LayerProgress for Silent {
    fn status(&self, _: LayerState) {}
    fn advance(&self, _: u64) {}
    fn done(&self, _: LayerState) {}
}
