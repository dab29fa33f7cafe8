//! The names an archive gives its images, normalised as the store keeps them (`repo:tag`).
//!
//! docker-archive's `RepoTags` are docker references (`busybox:1` is
//! `docker.io/library/busybox:1`). In an OCI index, `io.containerd.image.name` (docker ≥ 25,
//! containerd) holds the full name; `org.opencontainers.image.ref.name` holds a tag or a name,
//! which podman 4.3 reads as its own short names: without a registry domain it goes below
//! `localhost/`, so a bare tag `1.0` loads as `localhost/1.0:latest`.

use std::collections::HashMap;

use crate::reference::Reference;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A docker reference with a tag (or none, meaning `latest`), normalised; `None` for a name
/// that is not a valid tagged reference.
pub fn docker_name(name: &str) -> Option<String> {
    let r = Reference::parse(name).ok()?;
    if r.digest().is_some() {
        return None;
    }
    r.tagged()
}

/// The name an OCI index entry's annotations give, if any; `Err` with the value when it is
/// not a valid name.
pub fn oci_name(annotations: Option<&HashMap<String, String>>) -> Result<Option<String>, String> {
    let Some(a) = annotations else {
        return Ok(None);
    };
    if let Some(full) = a.get(CONTAINERD_NAME) {
        return docker_name(full).map(Some).ok_or_else(|| full.clone());
    }
    let Some(name) = a.get(REF_NAME) else {
        return Ok(None);
    };
    let has_domain = name.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    });
    let full = if has_domain {
        name.clone()
    } else {
        format!("localhost/{name}")
    };
    docker_name(&full).map(Some).ok_or_else(|| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn docker_names_are_normalised() {
        assert_eq!(
            docker_name("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            docker_name("localhost:5000/a/b:1").as_deref(),
            Some("localhost:5000/a/b:1")
        );
        assert_eq!(docker_name("Bad:1"), None);
        assert_eq!(docker_name(&format!("x@sha256:{}", "a".repeat(64))), None);
    }

    #[test]
    fn oci_names_as_podman_and_containerd_read_them() {
        let full = ann(&[
            (CONTAINERD_NAME, "docker.io/library/busybox:1.36"),
            (REF_NAME, "1.36"),
        ]);
        assert_eq!(
            oci_name(Some(&full)).unwrap().as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        let tag = ann(&[(REF_NAME, "1.0")]);
        assert_eq!(
            oci_name(Some(&tag)).unwrap().as_deref(),
            Some("localhost/1.0:latest")
        );
        let short = ann(&[(REF_NAME, "app:2")]);
        assert_eq!(
            oci_name(Some(&short)).unwrap().as_deref(),
            Some("localhost/app:2")
        );
        let named = ann(&[(REF_NAME, "quay.io/x/y:3")]);
        assert_eq!(
            oci_name(Some(&named)).unwrap().as_deref(),
            Some("quay.io/x/y:3")
        );
        assert_eq!(oci_name(None).unwrap(), None);
        assert_eq!(oci_name(Some(&ann(&[]))).unwrap(), None);
        assert_eq!(
            oci_name(Some(&ann(&[(REF_NAME, "../x")]))).unwrap_err(),
            "../x"
        );
    }
}
