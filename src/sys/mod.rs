//! Every system call that needs `unsafe`, each with a `// SAFETY:` comment.
//!
//! The rest of nook is `#![deny(unsafe_code)]` (Cargo.toml's lints) and calls these wrappers or
//! nix's safe ones. Ids and maps (`idmap`) live here too: they are what the kernel's user
//! namespace calls take.
#![allow(unsafe_code)]

pub mod confined;
pub mod idmap;
pub mod mount;
pub mod netdev;
pub mod process;
pub mod seccomp;
pub mod socket;
pub mod stat;
pub mod userns;
pub mod xattr;
