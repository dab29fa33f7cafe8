//! `nook build`: a Dockerfile → an image in the store, rootless, with a cache.
//!
//! The parser ([`dockerfile`]) is pure; [`plan`] picks the stages a target needs. A build runs
//! them step by step ([`builder`]): every step's result is an image state (a config blob and
//! layers) cached under a key made of its parent's key and everything that reaches the step
//! ([`cache`]). Each RUN is a nook container made by the same sandbox as `nook run`
//! ([`run`]); files that carry the container's owners are read and written in a forked child
//! that is root in the store's user namespace ([`job`]), which turns a snapshot ([`layer`]) or
//! a copy ([`context`], [`copy`]) into a layer tar, then a blob and an unpacked layer
//! ([`commit`]).

pub mod builder;
pub mod cache;
pub mod commit;
pub mod commit_container;
pub mod config;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod entry;
pub mod export;
pub mod import;
pub mod job;
pub mod layer;
pub mod mounts;
pub mod plan;
pub mod run;
mod steps;
pub mod vars;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use builder::build;

use crate::store::{ImageRecord, Store, StoreError};
use crate::sys::idmap::Mapping;
use crate::unpack::Owners;

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    #[error("{file}:{line}: {source}")]
    Expand {
        file: String,
        line: usize,
        #[source]
        source: dockerfile::ExpandError,
    },
    #[error("{file}:{line}: {what}")]
    Instruction {
        file: String,
        line: usize,
        what: String,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Commit(#[from] commit::CommitError),
    #[error(transparent)]
    Context(#[from] context::CopyError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Job(#[from] job::JobError),
    #[error("cannot pull {image}: {message}")]
    Pull { image: String, message: String },
    #[error("cannot run step {step}")]
    Run {
        step: String,
        #[source]
        source: job::JobError,
    },
    /// The command of a RUN ended with a non-zero status.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    Failed { command: String, code: i32 },
    #[error("secret {0:?} is required but was not given (--secret id={0},src=FILE)")]
    NoSecret(String),
    #[error("the image config of {0} is not valid")]
    Config(String, #[source] serde_json::Error),
    #[error("the build was interrupted")]
    Interrupted,
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// What `nook build` was asked, checked.
pub struct Options {
    /// `-t`, normalised to `repository:tag`.
    pub tags: Vec<String>,
    pub target: Option<String>,
    /// `--build-arg`, with values taken from the environment where none was given.
    pub build_args: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: bool,
    pub quiet: bool,
    pub labels: BTreeMap<String, String>,
    pub platform: Option<String>,
    pub network: crate::net::Mode,
    /// `--secret id=ID,src=PATH`.
    pub secrets: BTreeMap<String, PathBuf>,
    pub format: commit::Format,
    /// `--timestamp` or `SOURCE_DATE_EPOCH`: every time in the image is this one.
    pub timestamp: Option<i64>,
    pub driver: crate::sandbox::spec::Driver,
}

/// Finds an image by name for a platform (`None`: the build's), pulling it when missing (or
/// always, with `true`).
pub type FindImage<'a> = dyn Fn(&str, Option<&str>, bool) -> Result<ImageRecord, String> + 'a;

/// Where a build happens, and how it gets base images.
pub struct Host<'a> {
    pub store: &'a Store,
    pub mapping: &'a Mapping,
    pub runtime: &'a Path,
    /// How the store's user namespace writes owners (as `nook pull` unpacks).
    pub owners: Owners,
    /// Finds an image for a platform (`None`: the build's), pulling it when missing (or
    /// always, with `true`).
    pub image: &'a FindImage<'a>,
}

/// What a finished build made.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: ImageRecord,
    pub tags: Vec<String>,
}

/// EXPOSE's port words, for `nook commit -c`.
pub(crate) fn steps_ports(word: &str) -> Option<Vec<String>> {
    steps::expose_ports(word)
}
