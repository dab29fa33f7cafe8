//! `nook export`: a container's filesystem flattened into one tar, no whiteouts.
