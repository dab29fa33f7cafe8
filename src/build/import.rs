//! `nook import`: a tar (file, URL or stdin) as a one-layer image.
