//! nook's own overlay filesystem, served over FUSE by nook's threads.
//!
//! For kernels that refuse overlayfs to ordinary users, stores on NFS or Lustre, and nested
//! containers. The model (`overlay`, `change`, `table`, `layers`) knows nothing of FUSE and is
//! tested on plain directories; `adapter` turns FUSE requests into model calls and every model
//! error into an errno (the server never panics: a panic would hang the container).

mod adapter;
mod change;
mod layers;
pub mod overlay;
mod table;

pub use adapter::{Server, serve};
pub use change::{Caller, SetAttr, Time};
pub use layers::Layers;
pub use overlay::{Attr, Overlay, Owners};
pub use table::{Kind, Owner};

#[cfg(test)]
mod tests;
