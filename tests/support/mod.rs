//! Test support: unprivileged users, the nook binary, a real registry, fixture images built
//! from the host's busybox, and scripted mock registries.
//!
//! Outcomes are pass, fail or skip-with-reason: [`skip`] prints why a test cannot run here and
//! panics instead when `CI=true` (a missing prerequisite in CI is a failure).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
pub mod build;
pub mod env;
pub mod hub;
pub mod image;
pub mod mock;
pub mod mpi;
pub mod push;
pub mod registry;
pub mod sandbox;
pub mod serve;
pub mod slurm;

/// Each named test once with a subordinate id range and once with a single id (the test
/// file must have `Mode` in scope). Not every test binary uses it.
#[allow(unused_macros)]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod range {
            $(#[test] fn $name() { super::$name(super::Mode::Range) })*
        }
        mod single {
            $(#[test] fn $name() { super::$name(super::Mode::Single) })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use in_both_modes;

/// Reports a missing prerequisite: a failure under CI, a printed skip elsewhere.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {reason}");
    }
    eprintln!("SKIP: {reason}");
    // The harness hides a passing test's output: scripts/test.sh names a file where every
    // skip is written, and prints their count and reasons at the end.
    if let Some(path) = std::env::var_os("NOOK_SKIP_LOG") {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed test")
            .to_owned();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}
