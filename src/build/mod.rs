//! `nook build`: a Dockerfile → an image in the store, rootless, with a cache.
//!
//! The parser ([`dockerfile`]) is pure. A build runs stage by stage: each RUN is a nook
//! container made by the same sandbox as `nook run`; each step's result is an image in the
//! store (untagged until the end), so steps chain exactly as `nook run IMAGE` would see them.
//! Files with the container's owners are read and written by a helper process in the store's
//! user namespace (`nook internal build-layer`), which turns a snapshot ([`layer`]) or a copy
//! ([`context`]) into a tar, then a blob and an unpacked layer ([`commit`]).

pub mod commit;
pub mod config;
pub mod context;
pub mod dockerfile;
pub mod entry;
pub mod layer;
