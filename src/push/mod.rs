//! Pushing an image: store → registry, blobs in parallel, the manifest last.
