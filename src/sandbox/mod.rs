//! The sandbox: image config + run options → a [`plan::Plan`] (namespaces, id maps, mount
//! operations, the process), and the child side that executes it.
//!
//! Everything that decides is pure and tested without privileges (`plan`, `spec`, `env`,
//! `volume`, `mount`, `user`, `fds`, `caps`, `seccomp` (profiles and their BPF), and the mount order
//! through the `seam`); `child` and `reaper` run inside
//! the new namespaces.

pub mod caps;
pub mod child;
pub mod device;
pub mod env;
pub mod fakeroot;
pub mod fds;
pub mod message;
pub mod mount;
pub mod plan;
mod reaper;
pub mod seam;
pub mod seccomp;
pub mod spec;
pub mod user;
pub mod volume;
