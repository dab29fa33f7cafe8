//! The build itself: stages in order, one step per instruction, each step's result cached.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::cache::{Cache, Cached, key};
use super::config::{History, ImageConfig};
use super::context::{Context, DockerfileText};
use super::dockerfile::{self, Dockerfile, Instruction, Kind};
use super::vars::Scope;
use super::{BuildError, Built, Host, Options, plan};
use crate::digest::Digest;
use crate::store::{LayerRef, Store};

/// An image state between steps.
#[derive(Debug, Clone)]
pub struct State {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// The cache key of the step that made it.
    pub chain: Digest,
    /// Its config's digest (what `---> ID` shows).
    pub id: Digest,
}

impl State {
    /// Its unpacked layers, top first.
    pub fn lowers(&self, store: &Store) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|l| store.layer_root(&l.diff_id))
            .collect()
    }
}

/// One build in progress.
pub struct Builder<'a> {
    pub(super) host: &'a Host<'a>,
    pub(super) opts: &'a Options,
    pub(super) ctx: &'a Context,
    pub(super) df: &'a Dockerfile,
    pub(super) file: String,
    pub(super) global: Scope,
    pub(super) used: BTreeSet<String>,
    pub(super) stages: Vec<Option<State>>,
    step: usize,
    total: usize,
    interrupts: Option<nix::sys::signalfd::SignalFd>,
}

/// Builds the Dockerfile `text` with the context `ctx`.
pub fn build(
    host: &Host<'_>,
    opts: &Options,
    ctx: &Context,
    text: &DockerfileText,
) -> Result<Built, BuildError> {
    let df = dockerfile::parse(&text.text, &text.name)?;
    // gc must not remove layers that only this build's states reference yet.
    let _gc = host.store.lock("gc", false)?;
    let mut b = Builder {
        host,
        opts,
        ctx,
        df: &df,
        file: text.name.clone(),
        global: Scope::default(),
        used: BTreeSet::new(),
        stages: vec![None; df.stages.len()],
        step: 0,
        total: 0,
        interrupts: watch_interrupts(),
    };
    b.global_args()?;
    let bases = df
        .stages
        .iter()
        .map(|s| b.expand_global(&s.base, s.line))
        .collect::<Result<Vec<_>, _>>()?;
    let expand = |w: &str| b.expand_global(w, 0).unwrap_or_else(|_| w.to_owned());
    let order = plan::select(&df, opts.target.as_deref(), &bases, &expand)?;
    b.total = order
        .iter()
        .map(|&i| 1 + df.stages[i].instructions.len())
        .sum();
    let mut last = None;
    for &i in &order {
        let st = b.stage(i, &bases[i])?;
        b.stages[i] = Some(st.clone());
        last = Some(st);
    }
    let st = last.ok_or(plan::PlanError::Empty)?;
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !b.used.contains(*k) && !b.global.args.contains_key(*k))
        .collect();
    if !unused.is_empty() && !opts.quiet {
        let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "[Warning] One or more build-args [{}] were not consumed",
            names.join(" ")
        );
    }
    b.finish(st)
}

/// Blocks SIGINT, SIGTERM and SIGHUP for the build and watches them, so that an interrupt
/// ends the build between steps with everything cleaned up (a running step's container gets
/// the signal from `nook run`'s forwarding and fails).
fn watch_interrupts() -> Option<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().ok()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
}

impl Builder<'_> {
    pub(super) fn say(&self, line: &str) {
        if !self.opts.quiet {
            println!("{line}");
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupts
            .as_ref()
            .is_some_and(|fd| matches!(fd.read_signal(), Ok(Some(_))))
    }

    pub(super) fn err(&self, line: usize, what: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            file: self.file.clone(),
            line,
            what: what.into(),
        }
    }

    /// The ARGs before the first FROM, with the platform args.
    fn global_args(&mut self) -> Result<(), BuildError> {
        let platform = self.target_platform();
        for (k, v) in super::vars::platform_args(&platform) {
            self.global.args.insert(k, Some(v));
        }
        for ins in &self.df.meta_args {
            if let Kind::Arg(list) = &ins.kind {
                for (name, default) in list {
                    let d = match default {
                        Some(raw) => Some(self.expand_global(raw, ins.line)?),
                        None => None,
                    };
                    let mut used = std::mem::take(&mut self.used);
                    self.global
                        .declare(name, d, &self.opts.build_args, None, &mut used);
                    self.used = used;
                }
            }
        }
        Ok(())
    }

    pub(super) fn target_platform(&self) -> crate::registry::platform::Platform {
        self.opts
            .platform
            .as_deref()
            .and_then(|p| crate::registry::platform::Platform::parse(p).ok())
            .unwrap_or_else(crate::registry::platform::Platform::host)
    }

    fn expand_global(&self, raw: &str, line: usize) -> Result<String, BuildError> {
        let g = &self.global;
        dockerfile::expand(raw, self.df.escape, &|n| g.lookup(&[], n)).map_err(|source| {
            BuildError::Expand {
                file: self.file.clone(),
                line,
                source,
            }
        })
    }

    /// Builds stage `i` from its expanded FROM word.
    fn stage(&mut self, i: usize, base: &str) -> Result<State, BuildError> {
        let stage = &self.df.stages[i];
        self.step += 1;
        self.say(&format!(
            "Step {}/{} : {}",
            self.step, self.total, stage.original
        ));
        let mut st = self.base(i, base)?;
        self.say(&format!(" ---> {}", st.id.short()));
        let mut scope = Scope::default();
        let triggers = st.config.config.on_build.take().unwrap_or_default();
        if !triggers.is_empty() {
            self.say(&format!(
                "# Executing {} build trigger{}",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            for t in &triggers {
                let ins = trigger(t, &self.file, stage.line)?;
                self.instruction(i, &mut st, &mut scope, &ins)?;
            }
        }
        for ins in &stage.instructions {
            if self.interrupted() {
                return Err(BuildError::Interrupted);
            }
            self.step += 1;
            self.say(&format!(
                "Step {}/{} : {}",
                self.step, self.total, ins.original
            ));
            self.instruction(i, &mut st, &mut scope, ins)?;
            self.say(&format!(" ---> {}", st.id.short()));
        }
        if self.interrupted() {
            return Err(BuildError::Interrupted);
        }
        Ok(st)
    }

    /// The state a stage starts from: scratch, an earlier stage, or an image.
    fn base(&mut self, i: usize, base: &str) -> Result<State, BuildError> {
        if base.eq_ignore_ascii_case("scratch") {
            let p = self.target_platform();
            let config = ImageConfig {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
                variant: p.variant.clone(),
                ..ImageConfig::default()
            };
            let bytes = config.to_bytes();
            return Ok(State {
                id: Digest::sha256_of(&bytes),
                chain: key(&[
                    b"scratch",
                    bytes.as_slice(),
                    self.timestamp_key().as_bytes(),
                ]),
                config,
                layers: vec![],
            });
        }
        if let Some(j) = plan::stage_ref(self.df, base, i)
            && let Some(st) = &self.stages[j]
        {
            return Ok(st.clone());
        }
        let platform = match &self.df.stages[i].platform {
            Some(raw) => Some(self.expand_global(raw, self.df.stages[i].line)?),
            None => None,
        };
        self.image_state(base, platform.as_deref())
    }

    /// The state of an image, pulled when missing (or always with `--pull`).
    pub(super) fn image_state(
        &self,
        name: &str,
        platform: Option<&str>,
    ) -> Result<State, BuildError> {
        let rec = (self.host.image)(name, platform, self.opts.pull).map_err(|message| {
            BuildError::Pull {
                image: name.to_owned(),
                message,
            }
        })?;
        let bytes = self.host.store.read_blob(&rec.id, 8 << 20)?;
        let mut config =
            ImageConfig::from_bytes(&bytes).map_err(|e| BuildError::Config(name.to_owned(), e))?;
        pad_history(&mut config, rec.layers.len());
        Ok(State {
            config,
            layers: rec.layers.clone(),
            // --timestamp changes every step's times and mtimes: its own chain of keys.
            chain: key(&[
                b"image",
                rec.id.to_string().as_bytes(),
                self.timestamp_key().as_bytes(),
            ]),
            id: rec.id,
        })
    }

    fn timestamp_key(&self) -> String {
        format!("{:?}", self.opts.timestamp)
    }

    pub(super) fn created(&self) -> String {
        let t = match self.opts.timestamp {
            Some(s) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64),
            None => std::time::SystemTime::now(),
        };
        let s = crate::container::logs::rfc3339_nanos(t);
        // Seconds are enough, and what docker's builders write.
        match s.split_once('.') {
            Some((head, _)) => format!("{head}Z"),
            None => s,
        }
    }

    pub(super) fn now_secs(&self) -> i64 {
        self.opts.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
    }

    /// A step: the cached state under `key` when there is one, else `make` (which returns the
    /// step's layer, if any) with `change` applied to the config and a history entry.
    pub(super) fn step(
        &mut self,
        st: &mut State,
        key: Digest,
        created_by: String,
        change: impl FnOnce(&mut ImageConfig),
        make: impl FnOnce(&mut Self, &State) -> Result<Option<LayerRef>, BuildError>,
    ) -> Result<(), BuildError> {
        let cache = Cache::new(self.host.store);
        if !self.opts.no_cache
            && let Some(c) = cache.get(&key)
        {
            let bytes = self.host.store.read_blob(&c.config, 8 << 20)?;
            let config = ImageConfig::from_bytes(&bytes)
                .map_err(|e| BuildError::Config(c.config.to_string(), e))?;
            self.say(" ---> Using cache");
            *st = State {
                config,
                layers: c.layers,
                chain: key,
                id: c.config,
            };
            return Ok(());
        }
        let layer = make(self, st)?;
        let mut config = st.config.clone();
        change(&mut config);
        let created = self.created();
        let mut layers = st.layers.clone();
        if let Some(l) = &layer {
            config.rootfs.diff_ids.push(l.diff_id.to_string());
            layers.push(l.clone());
        }
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(created_by),
            author: None,
            comment: None,
            empty_layer: layer.is_none(),
        });
        config.created = Some(created);
        let bytes = config.to_bytes();
        let id = Digest::sha256_of(&bytes);
        self.host.store.put_blob(&id, &bytes)?;
        cache.put(
            &key,
            &Cached {
                config: id.clone(),
                layers: layers.clone(),
            },
        )?;
        *st = State {
            config,
            layers,
            chain: key,
            id,
        };
        Ok(())
    }

    /// The end: `--label`s, the image stored and tagged.
    fn finish(&self, st: State) -> Result<Built, BuildError> {
        let mut config = st.config;
        if !self.opts.labels.is_empty() {
            let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        let image = super::commit::store_image(
            self.host.store,
            &config,
            &st.layers,
            self.opts.format,
            &self.opts.tags,
        )?;
        Ok(Built {
            image,
            tags: self.opts.tags.clone(),
        })
    }
}

/// An ONBUILD trigger as an instruction of the child's build.
fn trigger(text: &str, file: &str, line: usize) -> Result<Instruction, BuildError> {
    let df = dockerfile::parse(&format!("FROM scratch\n{text}\n"), file)?;
    let mut ins = df
        .stages
        .into_iter()
        .next()
        .and_then(|s| s.instructions.into_iter().next())
        .ok_or_else(|| BuildError::Instruction {
            file: file.to_owned(),
            line,
            what: format!("invalid ONBUILD trigger {text:?}"),
        })?;
    ins.line = line;
    Ok(ins)
}

/// Gives a base image without a history entry for each of its layers (images made by other
/// tools) the missing ones, so that the steps added after them pair with their own layers.
fn pad_history(config: &mut ImageConfig, layers: usize) {
    let have = config.history.iter().filter(|h| !h.empty_layer).count();
    if have < layers {
        let missing = (0..layers - have).map(|_| History {
            created: config.created.clone(),
            ..History::default()
        });
        config.history.splice(0..0, missing);
    }
}
