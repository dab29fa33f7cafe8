//! The push half of the distribution protocol: blob HEAD, cross-repository mount, monolithic
//! and chunked uploads, manifest PUT.
