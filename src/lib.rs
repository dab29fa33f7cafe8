//! nook: a rootless container sandbox.
//!
//! The rooms of `ARCHITECTURE.md`, one module per concern. Data flows one way: a
//! [`reference`](mod@reference) is resolved by the [`registry`] client into blobs kept by the
//! [`store`], layers are unpacked by [`unpack`] ([`pull`] runs those three as one pipeline); a
//! [`container`] runs them through the [`sandbox`] on a [`rootfs`]. `unsafe` lives in [`sys`]
//! only.

pub mod api;
pub mod archive;
pub mod build;
pub mod cdi;
pub mod cli;
pub mod client;
pub mod config;
pub mod container;
pub mod digest;
pub mod events;
pub mod fuse;
pub mod net;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod sandbox;
pub mod secret;
pub mod store;
pub mod sys;
pub mod unpack;
