//! `run` and `create` arguments → one validated [`RunConfig`] (ripgrep's low → high args).
//!
//! clap checks the closed sets (`--pull`, `--userns`, `--rootfs-driver`) and lists the valid
//! values itself; everything else a flag can get wrong (sizes, limits, log options, mounts,
//! ports, capabilities, ulimits) is checked here, before the image is looked at or a
//! container recorded, so that `create` refuses what `start` would.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use super::container::{RunArgs, options};
use crate::container::cgroup::{Limits, parse_bytes};
use crate::container::logs::Rotation;
use crate::sandbox::spec::{Driver, RunOptions, UserNs};
use crate::sys::process::WinSize;

/// `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull when the image is not in the store.
    Missing,
    /// Pull every time.
    Always,
    /// Never pull: the image must be in the store.
    Never,
}

/// `--userns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsernsArg {
    /// The subordinate range when there is one, else your uid as the image's user.
    #[value(alias = "")]
    Auto,
    /// Your own uid and gid inside.
    KeepId,
}

impl From<UsernsArg> for UserNs {
    fn from(a: UsernsArg) -> UserNs {
        match a {
            UsernsArg::Auto => UserNs::Auto,
            UsernsArg::KeepId => UserNs::KeepId,
        }
    }
}

/// `--ipc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpcArg {
    /// An ipc namespace and /dev/shm of the container's own.
    #[value(alias = "", alias = "shareable")]
    Private,
    /// The host's ipc namespace and /dev/shm (MPI ranks in separate containers).
    Host,
}

/// `--pid`: `private` (a pid namespace of the container's own) or `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidArg {
    Private,
    /// The host's pid namespace and /proc (MPI ranks in separate containers, as Apptainer
    /// and enroot run them).
    Host,
}

/// Parses `--pid`; docker's `container:NAME` is refused with what to use instead.
pub fn parse_pid(s: &str) -> Result<PidArg, String> {
    match s {
        "" | "private" => Ok(PidArg::Private),
        "host" => Ok(PidArg::Host),
        m if m.starts_with("container:") => Err(
            "nook does not join another container's pid namespace: use --pid host (or nook exec)"
                .into(),
        ),
        _ => Err("use private or host".into()),
    }
}

/// `--rootfs-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    /// Kernel overlay, else nook's FUSE overlay, else a copy.
    Auto,
    /// Kernel overlayfs.
    Overlay,
    /// nook's FUSE overlay.
    Fuse,
    /// The layers copied into a private directory.
    Copy,
}

impl From<DriverArg> for Driver {
    fn from(a: DriverArg) -> Driver {
        match a {
            DriverArg::Auto => Driver::Auto,
            DriverArg::Overlay => Driver::Overlay,
            DriverArg::Fuse => Driver::Fuse,
            DriverArg::Copy => Driver::Copy,
        }
    }
}

/// A `run` or `create`, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub image: String,
    pub name: Option<String>,
    pub remove: bool,
    pub detach: bool,
    pub pull: PullPolicy,
    pub platform: Option<String>,
    pub options: RunOptions,
    pub limits: Limits,
    /// `--log-opt`: used by detached runs, checked for every run.
    pub rotation: Rotation,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--stop-signal`, checked.
    pub stop_signal: Option<String>,
    /// docker's StdinOnce (detached runs with `-i`).
    pub stdin_once: bool,
    /// `--console-size`: the terminal's first size for a detached run with `-t`.
    pub console: Option<WinSize>,
    /// `--device`, `--gpus` and `--cdi-spec-dir`, checked; [`RunConfig::resolve_devices`]
    /// reads the specs.
    pub devices: DeviceFlags,
    /// Whether `--userns` was given (else the config's `[run] userns` applies).
    pub userns_given: bool,
}

/// The device flags of a run, checked but not yet resolved.
#[derive(Debug, Clone, Default)]
pub struct DeviceFlags {
    pub requests: Vec<crate::cdi::Request>,
    pub gpus: Option<String>,
    pub spec_dirs: Vec<std::path::PathBuf>,
}

impl RunConfig {
    pub fn new(a: &RunArgs) -> Result<RunConfig> {
        let options = options(a)?;
        if a.detach && !options.preserve_fds.is_empty() {
            // The monitor would hold them, and the caller's peer would wait on it.
            bail!(
                "--preserve-fds and --preserve-fd need the container in the foreground: drop -d \
                 (or start a created container with nook start -a)"
            );
        }
        Ok(RunConfig {
            image: a.image.clone(),
            name: a.name.clone(),
            remove: a.rm,
            detach: a.detach,
            pull: a.pull,
            platform: a.platform.clone(),
            options,
            limits: limits(a.memory.as_deref(), a.cpus, a.pids_limit)?,
            rotation: log_options(&a.log_opt)?,
            labels: labels(&a.label)?,
            stop_signal: a
                .stop_signal
                .as_deref()
                .map(|s| {
                    super::lifecycle::parse_signal(s)
                        .map(|_| s.to_owned())
                        .with_context(|| format!("invalid --stop-signal {s:?}"))
                })
                .transpose()?,
            stdin_once: a.stdin_once,
            console: a.console_size.as_deref().map(console_size).transpose()?,
            devices: DeviceFlags {
                requests: a
                    .device
                    .iter()
                    .map(|d| crate::cdi::Request::parse(d))
                    .collect::<Result<_, _>>()?,
                gpus: a
                    .gpus
                    .as_deref()
                    .map(|g| crate::cdi::registry::GpuRequest::parse(g).map(|_| g.to_owned()))
                    .transpose()?,
                spec_dirs: a.cdi_spec_dir.clone(),
            },
            userns_given: a.userns.is_some(),
        })
    }

    /// The config's `[run]` defaults: its `userns` where the command line gives none, and its
    /// `binds` (`/path` for `/path:/path`) after the `-v`s, except where a `-v` or `--mount`
    /// already uses the container path. A bind whose source is missing is skipped with a
    /// warning: a site's list (home, scratch) need not exist on every node.
    pub fn site_defaults(&mut self, run: &crate::config::RunDefaults) -> Result<()> {
        if let (false, Some(u)) = (self.userns_given, run.userns.as_deref()) {
            let arg = UsernsArg::from_str(u, true).map_err(|_| {
                anyhow::anyhow!("invalid [run] userns {u:?} in the config: auto or keep-id")
            })?;
            self.options.userns = arg.into();
        }
        for b in &run.binds {
            let spec = if b.contains(':') {
                b.clone()
            } else {
                format!("{b}:{b}")
            };
            let source = spec.split(':').next().unwrap_or_default();
            if !source.starts_with('/') {
                bail!(
                    "invalid [run] binds entry {b:?} in the config: the source must be an absolute path"
                );
            }
            if std::fs::symlink_metadata(source).is_err() {
                tracing::warn!("[run] binds: {source} does not exist here: not bound");
                continue;
            }
            let v = crate::sandbox::volume::parse_volume(&spec)
                .with_context(|| format!("invalid [run] binds entry {b:?} in the config"))?;
            let taken = self
                .options
                .volumes
                .iter()
                .any(|o| o.target() == v.target());
            if !taken {
                self.options.volumes.push(v);
            }
        }
        Ok(())
    }

    /// Reads the CDI specs that `--device` and `--gpus` need (from /etc/cdi, /var/run/cdi,
    /// the config file's `[cdi] spec_dirs` and `--cdi-spec-dir`) into the options.
    pub fn resolve_devices(&mut self, config: &crate::config::UserConfig) -> Result<()> {
        let d = &self.devices;
        let dirs = crate::cdi::spec_dirs(&config.cdi.spec_dirs, &d.spec_dirs);
        self.options.devices = crate::cdi::resolve(&d.requests, d.gpus.as_deref(), &dirs)?;
        Ok(())
    }
}

/// `--label KEY=VALUE` (or `KEY`, an empty value), as docker takes them.
fn labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in raw {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k.trim().is_empty() {
            bail!("invalid --label {l:?}: expected KEY=VALUE");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// `--console-size 40x120`: rows and columns, both at least 1.
fn console_size(s: &str) -> Result<WinSize> {
    let size = s
        .split_once('x')
        .and_then(|(r, c)| Some((r.parse::<u16>().ok()?, c.parse::<u16>().ok()?)))
        .filter(|(r, c)| *r > 0 && *c > 0);
    let (rows, cols) = size
        .with_context(|| format!("invalid --console-size {s:?}: ROWSxCOLUMNS, such as 40x120"))?;
    Ok(WinSize { rows, cols })
}

/// `--memory`, `--cpus`, `--pids-limit`.
fn limits(memory: Option<&str>, cpus: Option<f64>, pids: Option<u64>) -> Result<Limits> {
    let memory = memory
        .map(|m| {
            parse_bytes(m).with_context(|| format!("invalid --memory {m:?}: a size such as 512m"))
        })
        .transpose()?;
    // cpu.max takes a quota of at least 1ms per 100ms period.
    if let Some(c) = cpus
        && !(c.is_finite() && c >= 0.01)
    {
        bail!("invalid --cpus {c}: a number of CPUs of 0.01 or more, such as 1.5");
    }
    Ok(Limits { memory, cpus, pids })
}

/// `--log-opt max-size=10m --log-opt max-file=3`.
fn log_options(opts: &[String]) -> Result<Rotation> {
    let mut r = Rotation::default();
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                r.max_size = parse_bytes(v)
                    .filter(|n| *n >= 1024)
                    .with_context(|| format!("invalid --log-opt {o:?}: a size such as 10m"))?
            }
            Some(("max-file", v)) => {
                r.max_files = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("invalid --log-opt {o:?}: a count of 1 or more"))?
            }
            _ => bail!("unsupported --log-opt {o:?}: nook knows max-size and max-file"),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Line {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Line::try_parse_from(std::iter::once("nook-run").chain(args.iter().copied())).map(|l| l.run)
    }

    fn config(args: &[&str]) -> Result<RunConfig> {
        RunConfig::new(&parse(args)?)
    }

    #[test]
    fn defaults() {
        let c = config(&["img"]).unwrap();
        assert_eq!(c.pull, PullPolicy::Missing);
        assert_eq!(c.options.userns, UserNs::Auto);
        assert_eq!(c.options.driver, Driver::Auto);
        assert!(!c.limits.any());
        assert_eq!(c.rotation, Rotation::default());
    }

    #[test]
    fn labels_and_stop_signal_are_checked() {
        let c = config(&["-l", "a=1", "--label", "b", "--label", "a=2=x", "img"]).unwrap();
        let want: BTreeMap<String, String> =
            [("a".into(), "2=x".into()), ("b".into(), String::new())].into();
        assert_eq!(c.labels, want);
        assert!(config(&["--label", "=v", "img"]).is_err());
        let c = config(&["--stop-signal", "USR1", "img"]).unwrap();
        assert_eq!(c.stop_signal.as_deref(), Some("USR1"));
        let e = config(&["--stop-signal", "NOPE", "img"]).unwrap_err();
        assert!(e.to_string().contains("--stop-signal"), "{e}");
    }

    #[test]
    fn value_enums_keep_their_spellings() {
        let c = config(&[
            "--pull",
            "never",
            "--userns",
            "keep-id",
            "--rootfs-driver",
            "fuse",
            "img",
        ])
        .unwrap();
        assert_eq!(c.pull, PullPolicy::Never);
        assert_eq!(c.options.userns, UserNs::KeepId);
        assert_eq!(c.options.driver, Driver::Fuse);
        let c = config(&["--userns", "", "--pull", "always", "img"]).unwrap();
        assert_eq!(c.options.userns, UserNs::Auto);
        assert_eq!(c.pull, PullPolicy::Always);
    }

    #[test]
    fn clap_refuses_unknown_values_and_lists_the_valid_ones() {
        for (flag, valid) in [
            ("--pull", "missing, always, never"),
            ("--userns", "auto, keep-id"),
            ("--rootfs-driver", "auto, overlay, fuse, copy"),
        ] {
            let e = parse(&[flag, "bogus", "img"]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(valid), "{e}");
        }
    }

    #[test]
    fn limits_are_checked() {
        let c = config(&["-m", "64m", "--cpus", "1.5", "--pids-limit", "10", "img"]).unwrap();
        assert_eq!(c.limits.memory, Some(64 << 20));
        assert_eq!(c.limits.cpus, Some(1.5));
        assert_eq!(c.limits.pids, Some(10));
        for bad in [
            &["--memory", "nonsense"][..],
            &["--cpus", "0"],
            &["--cpus=-1"],
            &["--cpus", "NaN"],
            &["--cpus", "inf"],
        ] {
            let mut args = bad.to_vec();
            args.push("img");
            let flag = bad[0].split('=').next().unwrap_or_default();
            let e = config(&args).unwrap_err().to_string();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
        assert!(parse(&["--pids-limit", "-1", "img"]).is_err());
    }

    #[test]
    fn log_options_are_checked_without_detach() {
        let c = config(&["--log-opt", "max-size=2k", "--log-opt", "max-file=5", "img"]).unwrap();
        assert_eq!(
            c.rotation,
            Rotation {
                max_size: 2048,
                max_files: 5
            }
        );
        for bad in ["max-size=bogus", "max-size=10", "max-file=0", "color=red"] {
            let e = config(&["--log-opt", bad, "img"]).unwrap_err().to_string();
            assert!(e.contains("--log-opt") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_api_s_console_size_and_stdin_once() {
        let c = config(&["--stdin-once", "--console-size", "40x120", "img"]).unwrap();
        assert!(c.stdin_once);
        assert_eq!(
            c.console,
            Some(WinSize {
                rows: 40,
                cols: 120
            })
        );
        for bad in ["40", "0x80", "40x", "ax1", "70000x1"] {
            let e = config(&["--console-size", bad, "img"])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--console-size"), "{e}");
        }
    }

    #[test]
    fn other_options_are_checked_too() {
        for bad in [
            &["--network", "bogus"][..],
            &["-p", "notaport"],
            &["-v", "/x:relative"],
            &["--ulimit", "nofile"],
            &["--security-opt", "bogus"],
        ] {
            let mut args = bad.to_vec();
            args.push("img");
            assert!(config(&args).is_err(), "{bad:?}");
        }
    }
}
