//! One instruction of a stage: what it changes in the config, what reaches its cache key,
//! and, for RUN, COPY, ADD and WORKDIR, the layer it makes.

use std::collections::BTreeMap;

use super::builder::{Builder, State};
use super::cache::key;
use super::config::{Empty, Healthcheck, ImageConfig};
use super::context::CopyRequest;
use super::copy::{CopyFrom, CopyStep};
use super::dockerfile::{self, Command, CopySpec, HealthSpec, Instruction, Kind, RunSpec};
use super::entry::{Entry, EntryKind, Source};
use super::run::{MountSources, RunStep};
use super::vars::{Scope, env_set};
use super::{BuildError, mounts, plan};

impl Builder<'_> {
    fn expand(
        &self,
        st: &State,
        scope: &Scope,
        raw: &str,
        line: usize,
    ) -> Result<String, BuildError> {
        let env = &st.config.config.env;
        dockerfile::expand(raw, self.df.escape, &|n| scope.lookup(env, n)).map_err(|source| {
            BuildError::Expand {
                file: self.file.clone(),
                line,
                source,
            }
        })
    }

    fn expand_all(
        &self,
        st: &State,
        scope: &Scope,
        raws: &[String],
        line: usize,
    ) -> Result<Vec<String>, BuildError> {
        let env = &st.config.config.env;
        let mut out = Vec::new();
        for raw in raws {
            out.extend(
                dockerfile::expand_words(raw, self.df.escape, &|n| scope.lookup(env, n)).map_err(
                    |source| BuildError::Expand {
                        file: self.file.clone(),
                        line,
                        source,
                    },
                )?,
            );
        }
        Ok(out)
    }

    /// A step that only changes the config; `text` is its history line and cache key.
    fn meta(
        &mut self,
        st: &mut State,
        text: String,
        change: impl FnOnce(&mut ImageConfig),
    ) -> Result<(), BuildError> {
        let k = text.clone();
        self.meta_keyed(st, text, &k, change)
    }

    /// A config step whose key needs more than its history line says (`key_text`
    /// unambiguous where the line is not).
    fn meta_keyed(
        &mut self,
        st: &mut State,
        text: String,
        key_text: &str,
        change: impl FnOnce(&mut ImageConfig),
    ) -> Result<(), BuildError> {
        let k = key(&[
            st.chain.to_string().as_bytes(),
            b"meta",
            key_text.as_bytes(),
        ]);
        self.step(st, k, text, change, |_, _| Ok(None))
    }

    /// The command a RUN, CMD or ENTRYPOINT runs: exec form as is, shell form through SHELL.
    fn argv(st: &State, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = st
                    .config
                    .config
                    .shell
                    .clone()
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                v.push(s.clone());
                v
            }
        }
    }

    pub(super) fn instruction(
        &mut self,
        stage: usize,
        st: &mut State,
        scope: &mut Scope,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        match &ins.kind {
            Kind::Arg(list) => {
                for (name, default) in list {
                    let d = match default {
                        Some(raw) => Some(self.expand(st, scope, raw, line)?),
                        None => None,
                    };
                    let mut used = std::mem::take(&mut self.used);
                    scope.declare(
                        name,
                        d,
                        &self.opts.build_args,
                        Some(&self.global),
                        &mut used,
                    );
                    self.used = used;
                }
                Ok(())
            }
            Kind::Env(pairs) => {
                let mut vals = Vec::new();
                for (k, raw) in pairs {
                    vals.push((k.clone(), self.expand(st, scope, raw, line)?));
                }
                let text = format!("ENV {}", join_pairs(&vals));
                let key_text = format!("ENV {vals:?}");
                self.meta_keyed(st, text, &key_text, |c| {
                    for (k, v) in &vals {
                        env_set(&mut c.config.env, k, v);
                    }
                })
            }
            Kind::Label(pairs) => {
                let mut vals = Vec::new();
                for (k, raw) in pairs {
                    vals.push((
                        self.expand(st, scope, k, line)?,
                        self.expand(st, scope, raw, line)?,
                    ));
                }
                let text = format!("LABEL {}", join_pairs(&vals));
                let key_text = format!("LABEL {vals:?}");
                self.meta_keyed(st, text, &key_text, |c| {
                    let labels = c.config.labels.get_or_insert_with(BTreeMap::new);
                    for (k, v) in vals {
                        labels.insert(k, v);
                    }
                })
            }
            Kind::User(raw) => {
                let u = self.expand(st, scope, raw, line)?;
                self.meta(st, format!("USER {u}"), |c| c.config.user = u)
            }
            Kind::StopSignal(raw) => {
                let s = self.expand(st, scope, raw, line)?;
                self.meta(st, format!("STOPSIGNAL {s}"), |c| {
                    c.config.stop_signal = Some(s)
                })
            }
            Kind::Maintainer(m) => {
                let m = m.clone();
                self.meta(st, format!("MAINTAINER {m}"), |c| c.author = Some(m))
            }
            Kind::Expose(words) => {
                let mut ports = Vec::new();
                for w in self.expand_all(st, scope, words, line)? {
                    ports.extend(
                        expose_ports(&w)
                            .ok_or_else(|| self.err(line, format!("invalid EXPOSE port {w:?}")))?,
                    );
                }
                let text = format!("EXPOSE {}", ports.join(" "));
                self.meta(st, text, |c| {
                    let map = c.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                    for p in ports {
                        map.insert(p, Empty {});
                    }
                })
            }
            Kind::Volume(words) => {
                let vols = self.expand_all(st, scope, words, line)?;
                if vols.iter().any(|v| v.is_empty()) {
                    return Err(self.err(line, "VOLUME specified can not be an empty string"));
                }
                let text = format!("VOLUME {vols:?}");
                self.meta(st, text, |c| {
                    let map = c.config.volumes.get_or_insert_with(BTreeMap::new);
                    for v in vols {
                        map.insert(v, Empty {});
                    }
                })
            }
            Kind::Cmd(cmd) => {
                let argv = Self::argv(st, cmd);
                scope.cmd_set = true;
                self.meta(st, format!("CMD {argv:?}"), |c| c.config.cmd = Some(argv))
            }
            Kind::Entrypoint(cmd) => {
                let argv = Self::argv(st, cmd);
                let keep_cmd = scope.cmd_set;
                let key_text = format!("ENTRYPOINT {argv:?} keep CMD: {keep_cmd}");
                self.meta_keyed(st, format!("ENTRYPOINT {argv:?}"), &key_text, |c| {
                    c.config.entrypoint = Some(argv);
                    if !keep_cmd {
                        c.config.cmd = None;
                    }
                })
            }
            Kind::Shell(words) => {
                let w = words.clone();
                self.meta(st, format!("SHELL {w:?}"), |c| c.config.shell = Some(w))
            }
            Kind::Healthcheck(spec) => {
                let h = healthcheck(st, spec.as_ref());
                let text = format!("HEALTHCHECK {:?}", h.test);
                let key_text = format!("HEALTHCHECK {h:?}");
                self.meta_keyed(st, text, &key_text, |c| c.config.healthcheck = Some(h))
            }
            Kind::Onbuild(text) => {
                let t = text.clone();
                self.meta(st, format!("ONBUILD {t}"), |c| {
                    c.config.on_build.get_or_insert_with(Vec::new).push(t)
                })
            }
            Kind::Workdir(raw) => self.workdir(st, scope, raw, line),
            Kind::Run(spec) => self.run(stage, st, scope, spec, line),
            Kind::Copy(spec) => self.copy(stage, st, scope, spec, false, line),
            Kind::Add(spec) => self.copy(stage, st, scope, spec, true, line),
        }
    }

    /// The uid and gid of `spec` (`user[:group]`, names from the image's passwd and group);
    /// a user alone gives its own number as the group too, as COPY --chown does.
    fn chown_ids(&self, st: &State, spec: &str, line: usize) -> Result<(u32, u32), BuildError> {
        let lowers = st.lowers(self.host.store);
        let passwd = crate::sandbox::user::read_layered(&lowers, "/etc/passwd");
        let group = crate::sandbox::user::read_layered(&lowers, "/etc/group");
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid = match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                crate::sandbox::user::resolve(u, &[], &passwd, &group)
                    .map_err(|e| self.err(line, e.to_string()))?
                    .uid
            }
        };
        let gid = match g {
            None => uid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    crate::sandbox::user::resolve(&format!("0:{g}"), &[], &passwd, &group)
                        .map_err(|e| self.err(line, e.to_string()))?
                        .gid
                }
            },
        };
        Ok((uid, gid))
    }

    fn workdir(
        &mut self,
        st: &mut State,
        scope: &Scope,
        raw: &str,
        line: usize,
    ) -> Result<(), BuildError> {
        let w = self.expand(st, scope, raw, line)?;
        let base = if st.config.config.working_dir.is_empty() {
            "/".to_owned()
        } else {
            st.config.config.working_dir.clone()
        };
        let path = super::context::glob::clean(&if w.starts_with('/') {
            w
        } else {
            format!("{base}/{w}")
        });
        let user = st.config.config.user.clone();
        let ids = if user.is_empty() {
            (0, 0)
        } else {
            let lowers = st.lowers(self.host.store);
            let passwd = crate::sandbox::user::read_layered(&lowers, "/etc/passwd");
            let group = crate::sandbox::user::read_layered(&lowers, "/etc/group");
            let u = crate::sandbox::user::resolve(&user, &[], &passwd, &group)
                .map_err(|e| self.err(line, e.to_string()))?;
            (u.uid, u.gid)
        };
        let k = key(&[
            st.chain.to_string().as_bytes(),
            b"WORKDIR",
            path.as_bytes(),
            format!("{}:{}", ids.0, ids.1).as_bytes(),
        ]);
        let mtime = self.now_secs();
        let p = path.clone();
        self.step(
            st,
            k,
            format!("WORKDIR {path}"),
            |c| c.config.working_dir = p,
            |b, st| super::copy::workdir_step(b.host, b.opts, st, &path, ids, mtime),
        )
    }

    fn run(
        &mut self,
        stage: usize,
        st: &mut State,
        scope: &Scope,
        spec: &RunSpec,
        line: usize,
    ) -> Result<(), BuildError> {
        let argv = Self::argv(st, &spec.command);
        let mut used = std::mem::take(&mut self.used);
        let mut env = scope.run_env(&st.config.config.env, &self.opts.build_args, &mut used);
        self.used = used;
        env.sort();
        let workdir = match st.config.config.working_dir.as_str() {
            "" => "/".to_owned(),
            w => w.to_owned(),
        };
        let mut parsed = Vec::new();
        let mut layers = Vec::new();
        for m in &spec.mounts {
            let m = self.expand(st, scope, m, line)?;
            let mount = mounts::parse(&m, &workdir)?;
            if let mounts::RunMount::Bind { from: Some(f), .. } = &mount {
                let from_state = self.source_state(stage, f, line)?;
                layers.push((f.clone(), from_state.lowers(self.host.store)));
            }
            parsed.push(mount);
        }
        let network = match spec.network.as_deref() {
            None | Some("default") => self.opts.network.clone(),
            Some("none") => crate::net::Mode::None,
            Some("host") => crate::net::Mode::Host,
            Some(other) => return Err(self.err(line, format!("unsupported RUN --network={other}"))),
        };
        let shown_args = env.iter().filter(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !super::vars::PROXY_ARGS.contains(&k)
        });
        let args_text: Vec<&String> = shown_args.collect();
        let cmd_text = match &spec.command {
            Command::Exec(v) => format!("{v:?}"),
            Command::Shell(_) => argv.join(" "),
        };
        let created_by = if args_text.is_empty() {
            format!("RUN {cmd_text}")
        } else {
            let a: Vec<&str> = args_text.iter().map(|s| s.as_str()).collect();
            format!("RUN |{} {} {cmd_text}", a.len(), a.join(" "))
        };
        // What the mounts bring in: their options as expanded, and for binds of the context
        // the content (as COPY's key), so that a changed file reruns the step.
        let mut mounts_key: Vec<String> = parsed.iter().map(|m| format!("{m:?}")).collect();
        for m in &parsed {
            if let mounts::RunMount::Bind {
                source, from: None, ..
            } = m
            {
                let req = CopyRequest {
                    sources: vec![source.clone()],
                    dest: "/".into(),
                    workdir: "/".into(),
                    chown: None,
                    chmod: None,
                    exclude: vec![],
                    from_context: true,
                    add: false,
                    checksum: None,
                };
                mounts_key.push(super::context::checksum(self.ctx, &req)?.to_string());
            }
        }
        // The proxy args reach the command but not the key, as docker documents.
        let key_env: Vec<&String> = env
            .iter()
            .filter(|kv| {
                let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
                !super::vars::PROXY_ARGS.contains(&k)
            })
            .collect();
        let key_env: Vec<&str> = key_env.iter().map(|s| s.as_str()).collect();
        let layer_ids: Vec<String> = layers
            .iter()
            .flat_map(|(_, l)| l.iter().map(|p| p.display().to_string()))
            .collect();
        let k = key(&[
            st.chain.to_string().as_bytes(),
            b"RUN",
            argv.join("\0").as_bytes(),
            key_env.join("\0").as_bytes(),
            mounts_key.join("\0").as_bytes(),
            layer_ids.join("\0").as_bytes(),
            format!("{network:?}").as_bytes(),
        ]);
        // A heredoc script with a shebang runs as a file, as BuildKit runs it.
        let script = match (&spec.command, spec.heredocs.as_slice()) {
            (Command::Shell(s), [h]) if *s == h.content && s.starts_with("#!") => {
                Some((h.name.clone(), s.clone()))
            }
            _ => None,
        };
        let argv = match &script {
            Some((name, _)) => vec![format!("/dev/pipes/{name}")],
            None => argv,
        };
        let step = RunStep {
            argv,
            env,
            mounts: parsed,
            network,
            script,
        };
        let sources = MountSources {
            layers,
            context: self.ctx,
        };
        self.step(
            st,
            k,
            created_by,
            |_| {},
            |b, st| super::run::run_step(b.host, b.opts, st, &step, &sources),
        )
    }

    /// The state `--from` names: an earlier stage (name or index) or an image.
    fn source_state(&self, stage: usize, from: &str, line: usize) -> Result<State, BuildError> {
        if let Some(j) = plan::stage_ref(self.df, from, stage) {
            return self.stages[j]
                .clone()
                .ok_or_else(|| self.err(line, format!("stage {from:?} was not built")));
        }
        self.image_state(from, None)
    }

    fn copy(
        &mut self,
        stage: usize,
        st: &mut State,
        scope: &Scope,
        spec: &CopySpec,
        add: bool,
        line: usize,
    ) -> Result<(), BuildError> {
        let word = if add { "ADD" } else { "COPY" };
        let dest = self.expand(st, scope, &spec.dest, line)?;
        let mut sources = Vec::new();
        for s in &spec.sources {
            if spec.heredocs.iter().any(|h| &h.name == s) {
                continue;
            }
            sources.push(self.expand(st, scope, s, line)?);
        }
        let chown = match &spec.chown {
            Some(c) => {
                let c = self.expand(st, scope, c, line)?;
                Some(self.chown_ids(st, &c, line)?)
            }
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(m) => {
                let m = self.expand(st, scope, m, line)?;
                Some(u32::from_str_radix(&m, 8).map_err(|_| {
                    self.err(line, format!("invalid --chmod {m:?}: expected octal bits"))
                })?)
            }
            None => None,
        };
        let workdir = match st.config.config.working_dir.as_str() {
            "" => "/".to_owned(),
            w => w.to_owned(),
        };
        let req = CopyRequest {
            sources: sources.clone(),
            dest: dest.clone(),
            workdir: workdir.clone(),
            chown,
            chmod,
            exclude: spec.exclude.clone(),
            from_context: spec.from.is_none(),
            add,
            checksum: spec.checksum.clone(),
        };
        let extra = self.heredoc_entries(st, scope, spec, &dest, &workdir, chown, chmod, line)?;
        let (from, source_key) = match &spec.from {
            None => {
                let sum = if sources.is_empty() {
                    String::new()
                } else {
                    super::context::checksum(self.ctx, &req)?.to_string()
                };
                (CopyFrom::Context(self.ctx), sum)
            }
            Some(f) => {
                let f = self.expand(st, scope, f, line)?;
                let src = self.source_state(stage, &f, line)?;
                let ids: Vec<String> = src.layers.iter().map(|l| l.diff_id.to_string()).collect();
                (CopyFrom::Layers(src.lowers(self.host.store)), ids.join(","))
            }
        };
        // Each heredoc file by its path, mode, owner and content (not its mtime).
        let heredoc_key = key(&extra
            .iter()
            .map(|e| {
                let body: &[u8] = match &e.kind {
                    EntryKind::File {
                        source: Source::Bytes(b),
                        ..
                    } => b,
                    _ => &[],
                };
                let head = format!("{}\0{:o}\0{}:{}\0", e.path.display(), e.mode, e.uid, e.gid);
                [head.as_bytes(), body].concat()
            })
            .collect::<Vec<_>>()
            .iter()
            .map(Vec::as_slice)
            .collect::<Vec<_>>())
        .to_string();
        let k = key(&[
            st.chain.to_string().as_bytes(),
            word.as_bytes(),
            source_key.as_bytes(),
            sources.join("\0").as_bytes(),
            dest.as_bytes(),
            format!(
                "{chown:?}{chmod:?}{:?}{:?} link={}",
                spec.exclude, spec.checksum, spec.link
            )
            .as_bytes(),
            heredoc_key.as_bytes(),
        ]);
        let mut shown = sources.clone();
        shown.extend(spec.heredocs.iter().map(|h| format!("<<{}", h.name)));
        let created_by = format!("{word} {} {dest}", shown.join(" "));
        let step = CopyStep {
            from,
            req,
            extra,
            link: spec.link,
        };
        self.step(
            st,
            k,
            created_by,
            |_| {},
            |b, st| super::copy::copy_step(b.host, b.opts, st, &step),
        )
    }

    /// The files a COPY's heredocs make.
    #[allow(clippy::too_many_arguments)]
    fn heredoc_entries(
        &self,
        st: &State,
        scope: &Scope,
        spec: &CopySpec,
        dest: &str,
        workdir: &str,
        chown: Option<(u32, u32)>,
        chmod: Option<u32>,
        line: usize,
    ) -> Result<Vec<Entry>, BuildError> {
        let many = spec.heredocs.len() > 1
            || !spec
                .sources
                .iter()
                .all(|s| spec.heredocs.iter().any(|h| &h.name == s));
        let abs = if dest.starts_with('/') {
            dest.to_owned()
        } else {
            format!("{workdir}/{dest}")
        };
        let mut out = Vec::new();
        for h in &spec.heredocs {
            let content = if h.expand {
                self.expand_heredoc(st, scope, &h.content, line)?
            } else {
                h.content.clone()
            };
            let path = if abs.ends_with('/') || many {
                format!("{abs}/{}", h.name)
            } else {
                abs.clone()
            };
            let rel = super::context::glob::clean(&path)
                .trim_start_matches('/')
                .to_owned();
            if rel.is_empty() {
                return Err(self.err(line, "a heredoc cannot be copied to /"));
            }
            let (uid, gid) = chown.unwrap_or((0, 0));
            out.push(Entry {
                path: rel.into(),
                kind: EntryKind::File {
                    size: content.len() as u64,
                    source: Source::Bytes(content.into_bytes()),
                },
                mode: chmod.unwrap_or(0o644),
                uid,
                gid,
                mtime: self.now_secs(),
                xattrs: vec![],
            });
        }
        Ok(out)
    }

    /// A heredoc's body with `$VAR`s expanded (quotes and other characters kept).
    fn expand_heredoc(
        &self,
        st: &State,
        scope: &Scope,
        body: &str,
        line: usize,
    ) -> Result<String, BuildError> {
        let env = &st.config.config.env;
        dockerfile::expand_heredoc(body, self.df.escape, &|n| scope.lookup(env, n)).map_err(
            |source| BuildError::Expand {
                file: self.file.clone(),
                line,
                source,
            },
        )
    }
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// EXPOSE's `80`, `80/udp`, `8000-8002/tcp` → docker's `80/tcp` keys.
pub fn expose_ports(word: &str) -> Option<Vec<String>> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
        None => {
            let p = ports.parse::<u16>().ok()?;
            (p, p)
        }
    };
    if lo > hi {
        return None;
    }
    Some((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn healthcheck(st: &State, spec: Option<&HealthSpec>) -> Healthcheck {
    let Some(h) = spec else {
        return Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        };
    };
    let _ = st;
    let test = match &h.command {
        Command::Exec(v) => std::iter::once("CMD".to_owned())
            .chain(v.iter().cloned())
            .collect(),
        Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
    };
    let ns = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as i64);
    Healthcheck {
        test,
        interval: ns(h.interval),
        timeout: ns(h.timeout),
        start_period: ns(h.start_period),
        start_interval: ns(h.start_interval),
        retries: i64::from(h.retries.unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_paths() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("x").is_none());
        assert!(expose_ports("80/xyz").is_none());
    }
}
