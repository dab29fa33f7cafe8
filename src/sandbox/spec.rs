//! Run options and the image config → the process to start, with docker's rules for
//! entrypoint, command, environment, working directory and limits.

use std::path::PathBuf;

use super::caps;
use super::env;
use super::plan::{Process, Rlimit};
use super::volume::Volume;

/// `--userns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNs {
    /// The subordinate range when there is one, else a single mapping: the user the
    /// command runs as (the image's USER, or root) is you.
    Auto,
    /// Your own uid and gid inside, as Apptainer users expect.
    KeepId,
}

/// `--rootfs-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Auto,
    Overlay,
    Fuse,
    Copy,
}

/// Validated `nook run` options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub group_add: Vec<String>,
    pub entrypoint: Option<String>,
    pub hostname: Option<String>,
    pub volumes: Vec<Volume>,
    pub read_only: bool,
    pub network: crate::net::Mode,
    /// `--ipc host`: the host's ipc namespace and /dev/shm instead of the container's own.
    pub host_ipc: bool,
    /// `--pid host`: the host's pid namespace and /proc instead of the container's own.
    pub host_pid: bool,
    /// `-p`, and `-P`'s ports added by the run from the image's EXPOSE.
    pub publish: Vec<crate::net::Publish>,
    pub publish_all: bool,
    pub userns: UserNs,
    pub driver: Driver,
    pub init: bool,
    pub tty: bool,
    pub stdin: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privs: bool,
    /// `--security-opt seccomp=...`.
    pub seccomp: super::seccomp::Seccomp,
    /// `--security-opt` as given (for `nook inspect`).
    pub security_opt: Vec<String>,
    pub ulimits: Vec<Rlimit>,
    pub command: Vec<String>,
    /// `--device` and `--gpus`, resolved (CDI specs read) by the caller.
    pub devices: super::device::DeviceEdits,
    /// `--preserve-fds` and `--preserve-fd` (`sandbox::fds`), checked open by the caller.
    pub preserve_fds: Vec<std::os::fd::RawFd>,
}

impl Default for RunOptions {
    /// What `nook run IMAGE` means with no flags.
    fn default() -> Self {
        RunOptions {
            env: vec![],
            env_files: vec![],
            workdir: None,
            user: None,
            group_add: vec![],
            entrypoint: None,
            hostname: None,
            volumes: vec![],
            read_only: false,
            network: crate::net::Mode::Default,
            host_ipc: false,
            host_pid: false,
            publish: Vec::new(),
            publish_all: false,
            userns: UserNs::Auto,
            driver: Driver::Auto,
            init: false,
            tty: false,
            stdin: false,
            cap_add: vec![],
            cap_drop: vec![],
            no_new_privs: false,
            seccomp: super::seccomp::Seccomp::Default,
            security_opt: vec![],
            ulimits: vec![],
            command: vec![],
            devices: Default::default(),
            preserve_fds: vec![],
        }
    }
}

/// What is wrong with the options for this image.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "no command specified: the image has no Entrypoint or Cmd, so give one after the image name"
    )]
    NoCommand,
    #[error("the working directory {0:?} is invalid: it needs to be an absolute path")]
    Workdir(String),
    #[error("cannot read --env-file {path}")]
    EnvFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error(transparent)]
    Cap(#[from] caps::CapError),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::ProfileError),
    #[error("invalid --ulimit {0:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048")]
    Ulimit(String),
    #[error(
        "--init cannot be combined with CAP_SYS_PTRACE: the container could then reach nook's binary through /proc/1/exe"
    )]
    InitWithPtrace,
    #[error(
        "--pid host cannot be combined with CAP_SYS_PTRACE: the container could then trace nook's own processes, which it sees"
    )]
    HostPidWithPtrace,
}

/// PATH when the image sets none (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image config's fields that shape the process.
#[derive(Debug, Clone, Default)]
pub struct ImageProcess {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
}

impl ImageProcess {
    pub fn from_config(c: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(cfg) = c.config() else {
            return ImageProcess::default();
        };
        ImageProcess {
            env: cfg.env().clone().unwrap_or_default(),
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            workdir: cfg.working_dir().clone().unwrap_or_default(),
            user: cfg.user().clone().unwrap_or_default(),
        }
    }
}

/// Builds the process from the image and the options. `host_env` reads nook's environment
/// (for `-e NAME` without a value).
pub fn process(
    image: &ImageProcess,
    o: &RunOptions,
    hostname: &str,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, SpecError> {
    let (entrypoint, image_cmd) = match &o.entrypoint {
        // --entrypoint replaces the image's and drops its Cmd, as docker does.
        Some(e) if e.is_empty() => (vec![], vec![]),
        Some(e) => (vec![e.clone()], vec![]),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if o.command.is_empty() {
        image_cmd
    } else {
        o.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let mut env: Vec<(String, String)> = Vec::new();
    env::set(&mut env, "PATH", DEFAULT_PATH.to_owned());
    env::set(&mut env, "HOSTNAME", hostname.to_owned());
    env::merge(&mut env, image.env.iter().map(String::as_str), host_env)?;
    for f in &o.env_files {
        let text = std::fs::read_to_string(f).map_err(|source| SpecError::EnvFile {
            path: f.display().to_string(),
            source,
        })?;
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        env::merge(&mut env, lines, host_env)?;
    }
    // A device's environment (CDI) over the image's; -e still has the last word.
    env::merge(&mut env, o.devices.env.iter().map(String::as_str), &|_| {
        None
    })?;
    env::merge(&mut env, o.env.iter().map(String::as_str), host_env)?;
    if o.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let cwd = o.workdir.clone().unwrap_or_else(|| image.workdir.clone());
    let cwd = if cwd.is_empty() { "/".to_owned() } else { cwd };
    if !cwd.starts_with('/') {
        return Err(SpecError::Workdir(cwd));
    }
    let caps = caps::resolve(&o.cap_add, &o.cap_drop)?;
    // docker resolves the profile's capability rules against the container's set.
    let seccomp = o.seccomp.program(&caps)?;
    if o.init && caps.contains(&caps::Capability::CAP_SYS_PTRACE) {
        return Err(SpecError::InitWithPtrace);
    }
    // nook's FUSE server joins the container's user namespace, where CAP_SYS_PTRACE reaches it.
    if o.host_pid && caps.contains(&caps::Capability::CAP_SYS_PTRACE) {
        return Err(SpecError::HostPidWithPtrace);
    }
    Ok(Process {
        args,
        env,
        cwd,
        user: o.user.clone().unwrap_or_else(|| image.user.clone()),
        group_add: o
            .group_add
            .iter()
            .chain(&o.devices.group_add)
            .cloned()
            .collect(),
        caps,
        no_new_privs: o.no_new_privs,
        seccomp,
        rlimits: o.ulimits.clone(),
        tty: o.tty,
        stdin: o.stdin,
        keep_id: None,
        init: o.init,
        preserve_fds: o.preserve_fds.clone(),
    })
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (`-1` or `unlimited` for no limit).
pub fn parse_ulimit(spec: &str) -> Result<Rlimit, SpecError> {
    use nix::sys::resource::Resource;
    let bad = || SpecError::Ulimit(spec.to_owned());
    let (name, values) = spec.split_once('=').ok_or_else(bad)?;
    let resource = match name {
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        _ => return Err(bad()),
    };
    let num = |v: &str| match v {
        "-1" | "unlimited" => Ok(u64::MAX),
        v => v.parse::<u64>().map_err(|_| bad()),
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(values)?, num(values)?),
    };
    if soft > hard {
        return Err(bad());
    }
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn opts() -> RunOptions {
        RunOptions {
            network: crate::net::Mode::None,
            ..RunOptions::default()
        }
    }

    fn image() -> ImageProcess {
        ImageProcess {
            env: vec!["PATH=/img/bin".into(), "A=1".into()],
            entrypoint: vec!["/entry".into(), "--flag".into()],
            cmd: vec!["default".into()],
            workdir: "/work".into(),
            user: "app".into(),
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn entrypoint_and_cmd_rules() {
        let p = process(&image(), &opts(), "h", &none).unwrap();
        assert_eq!(p.args, ["/entry", "--flag", "default"]);
        let p = process(
            &image(),
            &RunOptions {
                command: vec!["x".into()],
                ..opts()
            },
            "h",
            &none,
        )
        .unwrap();
        assert_eq!(p.args, ["/entry", "--flag", "x"]);
        let p = process(
            &image(),
            &RunOptions {
                entrypoint: Some("/bin/sh".into()),
                ..opts()
            },
            "h",
            &none,
        )
        .unwrap();
        assert_eq!(p.args, ["/bin/sh"], "--entrypoint drops the image's Cmd");
        let p = process(
            &image(),
            &RunOptions {
                entrypoint: Some(String::new()),
                command: vec!["ls".into()],
                ..opts()
            },
            "h",
            &none,
        )
        .unwrap();
        assert_eq!(p.args, ["ls"]);
        let err = process(&ImageProcess::default(), &opts(), "h", &none).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand));
    }

    #[test]
    fn environment_layers() {
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_owned());
        let o = RunOptions {
            env: vec!["A=2".into(), "FROM_HOST".into(), "UNSET_ON_HOST".into()],
            tty: true,
            ..opts()
        };
        let p = process(&image(), &o, "box", &host).unwrap();
        let get = |k: &str| {
            p.env
                .iter()
                .find(|(ek, _)| ek == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH"), Some("/img/bin"));
        assert_eq!(get("A"), Some("2"));
        assert_eq!(get("FROM_HOST"), Some("h"));
        assert_eq!(get("UNSET_ON_HOST"), None);
        assert_eq!(get("HOSTNAME"), Some("box"));
        assert_eq!(get("TERM"), Some("xterm"));
        let p = process(
            &ImageProcess {
                cmd: vec!["x".into()],
                ..Default::default()
            },
            &opts(),
            "h",
            &none,
        )
        .unwrap();
        assert_eq!(p.env[0], ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
        assert!(
            process(
                &image(),
                &RunOptions {
                    env: vec!["=x".into()],
                    ..opts()
                },
                "h",
                &none
            )
            .is_err()
        );
    }

    #[test]
    fn env_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("env");
        std::fs::write(&f, "# comment\n\nB=file\nA=from-file\n").unwrap();
        let o = RunOptions {
            env_files: vec![f],
            env: vec!["A=flag".into()],
            ..opts()
        };
        let p = process(&image(), &o, "h", &none).unwrap();
        assert!(p.env.contains(&("B".into(), "file".into())));
        assert!(
            p.env.contains(&("A".into(), "flag".into())),
            "-e wins over --env-file"
        );
    }

    #[test]
    fn workdir_user_and_init() {
        let p = process(
            &image(),
            &RunOptions {
                workdir: Some("/tmp".into()),
                user: Some("1234".into()),
                ..opts()
            },
            "h",
            &none,
        )
        .unwrap();
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "1234"));
        let p = process(&image(), &opts(), "h", &none).unwrap();
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/work", "app"));
        assert!(matches!(
            process(
                &image(),
                &RunOptions {
                    workdir: Some("rel".into()),
                    ..opts()
                },
                "h",
                &none
            ),
            Err(SpecError::Workdir(_))
        ));
        let bad = RunOptions {
            init: true,
            cap_add: vec!["SYS_PTRACE".into()],
            ..opts()
        };
        assert!(matches!(
            process(&image(), &bad, "h", &none),
            Err(SpecError::InitWithPtrace)
        ));
        let bad = RunOptions {
            host_pid: true,
            cap_add: vec!["SYS_PTRACE".into()],
            ..opts()
        };
        assert!(matches!(
            process(&image(), &bad, "h", &none),
            Err(SpecError::HostPidWithPtrace)
        ));
    }

    #[test]
    fn ulimits() {
        let r = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((r.soft, r.hard), (1024, 2048));
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, u64::MAX);
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }
}
