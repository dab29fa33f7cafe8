//! Networking without root: the container's network namespace joined to the host by
//! slirp4netns or pasta (user-mode TCP/IP, no privileges), published ports, and the
//! container's `/etc/hosts` and `/etc/resolv.conf`.
//!
//! The ladder (ARCHITECTURE.md): pasta if installed and working → slirp4netns → none, with a
//! warning. The helper is started by `nook run` right after the id maps are written, while
//! the container's init mounts its root, and is tied to nook's life three ways: SIGKILL as
//! its parent-death signal, slirp4netns's exit-fd, and an explicit kill when the container
//! ends. Nothing of it ever reaches the container.

pub mod etc;
mod pasta;
pub mod ports;
mod slirp;
mod start;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

pub use ports::{Proto, Publish};
pub use start::NetStart;

/// `--network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No option given: the best driver this host has.
    Default,
    Host,
    None,
    /// `pasta[:ARGS]`: extra pasta options, comma-separated as podman takes them.
    Pasta(PastaOptions),
    /// `slirp4netns[:OPTS]`.
    Slirp(SlirpOptions),
}

/// podman's slirp4netns options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlirpOptions {
    pub allow_host_loopback: bool,
    pub mtu: u32,
    pub cidr: Option<String>,
    pub enable_ipv6: bool,
}

impl Default for SlirpOptions {
    fn default() -> Self {
        SlirpOptions {
            allow_host_loopback: false,
            mtu: 65520,
            cidr: None,
            enable_ipv6: false,
        }
    }
}

/// pasta's options: the user's own, and whether the gateway maps to the host's loopback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PastaOptions {
    pub args: Vec<String>,
    /// `--map-gw` (podman's spelling): the gateway address reaches the host's loopback.
    pub map_gw: bool,
}

/// Why networking could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unknown --network {0:?}: use pasta[:OPTIONS], slirp4netns[:OPTIONS], host or none")]
    UnknownMode(String),
    #[error("invalid slirp4netns option {0:?}: {1}")]
    SlirpOption(String, &'static str),
    #[error("{0} is not installed (see 'nook info')")]
    Missing(&'static str),
    #[error("cannot start {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed to set up the container's network: {message}")]
    Failed { tool: &'static str, message: String },
    #[error("{tool} did not set up the container's network within {secs} s: {message}")]
    Timeout {
        tool: &'static str,
        secs: u64,
        message: String,
    },
    #[error("cannot publish {publish}: {message}")]
    Publish { publish: String, message: String },
    #[error(transparent)]
    Port(#[from] ports::PortError),
}

impl Mode {
    /// Parses `--network`.
    pub fn parse(s: &str) -> Result<Mode, NetError> {
        let (name, opts) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o)),
            None => (s, None),
        };
        let items = || -> Vec<String> {
            opts.map(|o| {
                o.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        match (name, opts) {
            ("host", None) => Ok(Mode::Host),
            ("none", None) => Ok(Mode::None),
            ("default" | "private" | "bridge", None) => Ok(Mode::Default),
            ("pasta", _) => {
                let mut p = PastaOptions::default();
                for a in items() {
                    if a == "--map-gw" {
                        p.map_gw = true;
                    } else {
                        p.args.push(a);
                    }
                }
                Ok(Mode::Pasta(p))
            }
            ("slirp4netns", _) => {
                let mut o = SlirpOptions::default();
                for item in items() {
                    let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                    let bool_of = |v: &str| match v {
                        "true" => Ok(true),
                        "false" => Ok(false),
                        _ => Err(NetError::SlirpOption(
                            item.clone(),
                            "expected true or false",
                        )),
                    };
                    match k {
                        "allow_host_loopback" => o.allow_host_loopback = bool_of(v)?,
                        "enable_ipv6" => o.enable_ipv6 = bool_of(v)?,
                        "mtu" => {
                            o.mtu = v
                                .parse()
                                .ok()
                                .filter(|m| (68..=65521).contains(m))
                                .ok_or_else(|| {
                                    NetError::SlirpOption(item.clone(), "MTU is 68 to 65521")
                                })?
                        }
                        "cidr" => {
                            if slirp::cidr_base(v).is_none() {
                                return Err(NetError::SlirpOption(
                                    item.clone(),
                                    "expected an IPv4 network such as 10.0.2.0/24",
                                ));
                            }
                            o.cidr = Some(v.to_owned())
                        }
                        "port_handler" => match v {
                            "slirp4netns" => {}
                            "rootlesskit" => {
                                return Err(NetError::SlirpOption(
                                    item.clone(),
                                    "nook publishes ports through slirp4netns itself (it keeps the client's address)",
                                ));
                            }
                            _ => {
                                return Err(NetError::SlirpOption(
                                    item.clone(),
                                    "port_handler is slirp4netns",
                                ));
                            }
                        },
                        "outbound_addr" | "outbound_addr6" => {
                            return Err(NetError::SlirpOption(item.clone(), "not supported"));
                        }
                        _ => return Err(NetError::SlirpOption(item.clone(), "unknown option")),
                    }
                }
                Ok(Mode::Slirp(o))
            }
            _ => Err(NetError::UnknownMode(s.to_owned())),
        }
    }

    /// Whether the container gets a network namespace of its own.
    pub fn private(&self) -> bool {
        !matches!(self, Mode::Host)
    }
}

/// A helper found on this host.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Where the ladder's probe result is kept (pasta failed once on this host: why).
fn probe_file(runtime: &Path) -> PathBuf {
    runtime.join("pasta-refused")
}

/// Remembers that pasta could not set up a network here, so that later runs go to
/// slirp4netns at once.
pub fn record_pasta_refused(runtime: &Path, why: &str) {
    let _ = std::fs::write(probe_file(runtime), why);
}

/// Whether the network namespace whose /proc view is `proc_net` (`/proc/net`,
/// `/proc/PID/net`) has a default route: pasta copies the host's, and adds it last.
fn has_default_route(proc_net: &str) -> bool {
    let v4 = std::fs::read_to_string(format!("{proc_net}/route")).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("{proc_net}/ipv6_route")).unwrap_or_default();
    v4.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
        || v6
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000000 00") && !l.ends_with(" lo"))
}

/// The driver `--network` resolves to on this host, and why a better one was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub mode: Mode,
    pub why: Option<String>,
}

/// Resolves [`Mode::Default`] with the ladder; other modes are kept.
pub fn choose(mode: &Mode, runtime: &Path) -> Choice {
    if *mode != Mode::Default {
        return Choice {
            mode: mode.clone(),
            why: None,
        };
    }
    let tun = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    );
    if let Err(e) = tun {
        return Choice {
            mode: Mode::None,
            why: Some(format!(
                "/dev/net/tun is not usable ({e}): the container has no network (sudo chmod 0666 /dev/net/tun)"
            )),
        };
    }
    let pasta_no = if find_tool("pasta").is_none() {
        Some("pasta is not installed".to_owned())
    } else if let Ok(why) = std::fs::read_to_string(probe_file(runtime)) {
        Some(format!("pasta failed here before: {}", why.trim()))
    } else if !has_default_route("/proc/net") {
        Some("the host has no default route for pasta to copy".to_owned())
    } else {
        None
    };
    let Some(pasta_no) = pasta_no else {
        return Choice {
            mode: Mode::Pasta(PastaOptions::default()),
            why: None,
        };
    };
    if find_tool("slirp4netns").is_some() {
        return Choice {
            mode: Mode::Slirp(SlirpOptions::default()),
            why: Some(pasta_no),
        };
    }
    Choice {
        mode: Mode::None,
        why: Some(format!(
            "{pasta_no} and slirp4netns is not installed: the container has no network"
        )),
    }
}

/// The network rung for `nook info`: the default driver, and why a better one is not used.
pub fn describe(runtime: &Path) -> String {
    let c = choose(&Mode::Default, runtime);
    let name = match c.mode {
        Mode::Pasta(_) => "pasta",
        Mode::Slirp(_) => "slirp4netns",
        _ => "none",
    };
    match c.why {
        Some(why) => format!("{name} ({why})"),
        None => format!("{name} (installed and working)"),
    }
}

/// What the container's /etc files say about its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Nameservers for resolv.conf (`None`: copy the host's file).
    pub nameservers: Option<Vec<String>>,
    /// The address of `host.containers.internal`, where the host's loopback is reachable.
    pub host_gateway: Option<String>,
}

/// The host's IPv4 default gateway.
fn host_gateway() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").ok()?;
    v4.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"00000000") {
            return None;
        }
        let g = u32::from_str_radix(f.get(2)?, 16).ok()?;
        Some(std::net::Ipv4Addr::from(g.to_le_bytes()).to_string())
    })
}

/// The names a container on `mode` gets.
pub fn names(mode: &Mode) -> Names {
    match mode {
        Mode::Slirp(o) => {
            let base = o
                .cidr
                .as_deref()
                .and_then(slirp::cidr_base)
                .unwrap_or(slirp::DEFAULT_BASE);
            let at = |n: u32| std::net::Ipv4Addr::from(u32::from(base) + n).to_string();
            Names {
                nameservers: Some(vec![at(3)]),
                host_gateway: o.allow_host_loopback.then(|| at(2)),
            }
        }
        Mode::Pasta(o) => Names {
            nameservers: Some(vec![pasta::DNS_FORWARD.to_owned()]),
            host_gateway: if o.map_gw { host_gateway() } else { None },
        },
        Mode::Host | Mode::None | Mode::Default => Names {
            nameservers: None,
            host_gateway: None,
        },
    }
}

/// A running slirp4netns or pasta, killed and reaped when dropped.
pub struct Helper {
    child: Child,
    /// Kept open: slirp4netns exits when it closes (its --exit-fd).
    _exit_fd: Option<std::os::fd::OwnedFd>,
}

impl Drop for Helper {
    /// Kills the helper without waiting for it: tearing down its tap device and the
    /// namespace it holds takes the kernel ~20 ms, which must not hold up the container's exit.
    /// A helper still dying when nook exits is reaped by whoever inherits it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.try_wait();
    }
}

/// How long a helper may take to set up the network.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the network for the container whose init is `pid`, publishes `ports`, and returns
/// once the container's interface is configured. `runtime` is nook's runtime directory, `rt`
/// the container's.
pub fn start(
    mode: &Mode,
    pid: i32,
    (runtime, rt): (&Path, &Path),
    ports: &[Publish],
) -> Result<Option<Helper>, NetError> {
    match mode {
        Mode::Host | Mode::None | Mode::Default => Ok(None),
        Mode::Slirp(o) => slirp::start(o, pid, (runtime, rt), ports).map(Some),
        Mode::Pasta(o) => pasta::start(o, pid, rt, ports).map(Some),
    }
}

/// Reads what a failed helper wrote to its stderr (a file in the runtime directory).
fn stderr_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.contains("syslog") && !l.starts_with("WARNING: Support for seccomp")
        })
        .collect();
    let tail = lines.len().saturating_sub(6);
    if lines.is_empty() {
        "(it printed nothing)".to_owned()
    } else {
        lines[tail..].join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("host").unwrap(), Mode::Host);
        assert_eq!(Mode::parse("none").unwrap(), Mode::None);
        assert_eq!(
            Mode::parse("slirp4netns").unwrap(),
            Mode::Slirp(SlirpOptions::default())
        );
        let Mode::Slirp(o) = Mode::parse(
            "slirp4netns:allow_host_loopback=true,mtu=1500,cidr=10.5.0.0/24,enable_ipv6=true,port_handler=slirp4netns",
        )
        .unwrap() else {
            panic!("not slirp")
        };
        assert!(o.allow_host_loopback && o.enable_ipv6);
        assert_eq!((o.mtu, o.cidr.as_deref()), (1500, Some("10.5.0.0/24")));
        for bad in [
            "slirp4netns:mtu=70000",
            "slirp4netns:allow_host_loopback=yes",
            "slirp4netns:cidr=banana",
            "slirp4netns:port_handler=rootlesskit",
            "slirp4netns:frob=1",
            "bridge:x",
            "weave",
        ] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        let Mode::Pasta(p) = Mode::parse("pasta:--mtu,1500,--map-gw").unwrap() else {
            panic!("not pasta")
        };
        assert_eq!(p.args, ["--mtu", "1500"]);
        assert!(p.map_gw);
        assert!(!Mode::parse("host").unwrap().private());
    }

    #[test]
    fn names_per_driver() {
        let n = names(&Mode::Slirp(SlirpOptions::default()));
        assert_eq!(n.nameservers, Some(vec!["10.0.2.3".to_owned()]));
        assert_eq!(n.host_gateway, None);
        let n = names(&Mode::Slirp(SlirpOptions {
            allow_host_loopback: true,
            cidr: Some("10.9.0.0/24".into()),
            ..SlirpOptions::default()
        }));
        assert_eq!(n.nameservers, Some(vec!["10.9.0.3".to_owned()]));
        assert_eq!(n.host_gateway.as_deref(), Some("10.9.0.2"));
        assert_eq!(names(&Mode::None).nameservers, None);
    }
}
