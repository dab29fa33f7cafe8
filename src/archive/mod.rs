//! Image archives: docker-archive, Docker ≥ 25's OCI layout with manifest.json, oci-archive and
//! OCI layout directories, written from the store and read into it as hostile input.
