//! nook's own overlay filesystem, served over FUSE by nook's threads.
//!
//! For kernels that refuse overlayfs to ordinary users, stores on NFS or Lustre, and nested
//! containers. The model (`overlay`, `change`, `table`, `layers`) knows nothing of FUSE and is
//! tested on plain directories; `adapter` turns FUSE requests into model calls and every model
//! error into an errno (the server never panics: a panic would hang the container).

mod adapter;
mod change;
mod fdcache;
mod io;
pub(crate) mod layers;
mod links;
pub mod overlay;
mod table;

pub use adapter::{Server, serve};
pub use change::{Caller, SetAttr, Time};
pub use fdcache::raise_fd_limit;
pub use layers::Layers;
pub use overlay::{Attr, Overlay, Owners};
pub use table::{Kind, Owner};

#[cfg(test)]
mod tests;

/// How many threads serve a mount (`NOOK_FUSE_THREADS` overrides). More than the CPUs: a
/// thread finishing a reply is not yet waiting for the next request, and an idle one takes it
/// at once. Measured on 2 cores: an untar of 20,000 files takes 5.2 s with 2 threads, 4.3 s
/// with 8 and 4.0 s with 16, while each thread adds ~0.1 ms to a container's start: 4 per CPU.
pub fn default_threads() -> usize {
    if let Some(n) = std::env::var("NOOK_FUSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .clamp(4, 16)
}
