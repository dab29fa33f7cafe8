//! slirp4netns: started against the container's network namespace with `--configure`, the
//! ready-fd handshake and the exit-fd; ports through its API socket (`add_hostfwd`), which
//! keeps the client's address where libslirp can (connections from the host's loopback show
//! as the gateway, 10.0.2.2, never as the container's own 127.0.0.1).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Helper, NetError, Publish, READY_TIMEOUT, SlirpOptions, find_tool, stderr_text};

const TOOL: &str = "slirp4netns";

/// slirp4netns's default network, 10.0.2.0/24.
pub const DEFAULT_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);

/// The network address of an IPv4 CIDR (`10.0.2.0/24` → 10.0.2.0); the prefix must leave
/// room for the gateway (.2), DNS (.3) and the container (.100).
pub fn cidr_base(cidr: &str) -> Option<Ipv4Addr> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if !(1..=25).contains(&bits) {
        return None;
    }
    let mask = u32::MAX << (32 - bits);
    Some(Ipv4Addr::from(u32::from(ip) & mask))
}

/// What the installed slirp4netns supports, read once from its --help and kept in the
/// runtime directory, keyed by the binary's size and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Features {
    sandbox: bool,
    seccomp: bool,
}

fn features(tool: &Path, runtime: &Path) -> Features {
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(tool)
        .map(|m| format!("{} {} {}", tool.display(), m.size(), m.mtime()))
        .unwrap_or_default();
    let cache = runtime.join("slirp4netns-features");
    let parse = |text: &str| Features {
        sandbox: text.contains("--enable-sandbox"),
        seccomp: text.contains("--enable-seccomp"),
    };
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Some((k, rest)) = text.split_once('\n')
        && k == key
    {
        return parse(rest);
    }
    let help = Command::new(tool)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let f = parse(&help);
    let flags = [
        if f.sandbox { "--enable-sandbox" } else { "" },
        if f.seccomp { "--enable-seccomp" } else { "" },
    ];
    let _ = std::fs::write(&cache, format!("{key}\n{}", flags.join(" ")));
    f
}

/// A close-on-exec copy of `fd` numbered 10 or more, so that placing the helper's
/// descriptors at 3 and 4 cannot overwrite one another.
fn high(fd: OwnedFd) -> Result<OwnedFd, NetError> {
    crate::sys::process::dup_above(fd.as_fd(), 10)
        .map_err(|source| NetError::Spawn { tool: TOOL, source })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), NetError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| NetError::Spawn {
        tool: TOOL,
        source: e.into(),
    })?;
    Ok((high(r)?, high(w)?))
}

/// Starts slirp4netns for the init `pid`; `runtime` is nook's runtime directory and `rt`
/// the container's.
pub fn start(
    o: &SlirpOptions,
    pid: i32,
    (runtime, rt): (&Path, &Path),
    ports: &[Publish],
) -> Result<Helper, NetError> {
    let tool = find_tool(TOOL).ok_or(NetError::Missing(TOOL))?;
    let f = features(&tool, runtime);
    let (ready_r, ready_w) = pipe()?;
    let (exit_r, exit_w) = pipe()?;
    let log = rt.join("slirp4netns.log");
    let err =
        std::fs::File::create(&log).map_err(|source| NetError::Spawn { tool: TOOL, source })?;
    let mut cmd = Command::new(&tool);
    cmd.args([
        "--configure",
        "--mtu",
        &o.mtu.to_string(),
        "-r",
        "3",
        "-e",
        "4",
    ]);
    if !o.allow_host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    if f.sandbox {
        cmd.arg("--enable-sandbox");
    }
    if f.seccomp {
        cmd.arg("--enable-seccomp");
    }
    if let Some(c) = &o.cidr {
        cmd.args(["--cidr", c]);
    }
    if o.enable_ipv6 {
        cmd.arg("--enable-ipv6");
    }
    if !ports.is_empty() {
        // Relative to the helper's working directory: the runtime path may be longer than a
        // socket address can hold.
        cmd.args(["-a", "slirp.sock"]);
    }
    cmd.arg(pid.to_string())
        .arg("tap0")
        .current_dir(rt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    let child = crate::sys::process::spawn_tied(
        &mut cmd,
        &[(ready_w.as_raw_fd(), 3), (exit_r.as_raw_fd(), 4)],
    )
    .map_err(|source| NetError::Spawn { tool: TOOL, source })?;
    drop((ready_w, exit_r));
    let mut helper = Helper {
        child,
        _exit_fd: Some(exit_w),
    };
    wait_ready(&mut helper, ready_r, &log)?;
    for p in ports {
        add_hostfwd(rt, p)?;
    }
    Ok(helper)
}

/// Waits for slirp4netns to write to its ready-fd; end-of-file means it died.
fn wait_ready(helper: &mut Helper, ready: OwnedFd, log: &Path) -> Result<(), NetError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut file = std::fs::File::from(ready);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::Timeout {
                tool: TOOL,
                secs: READY_TIMEOUT.as_secs(),
                message: stderr_text(log),
            });
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                return Err(NetError::Spawn {
                    tool: TOOL,
                    source: e.into(),
                });
            }
        }
        let mut b = [0u8; 1];
        return match file.read(&mut b) {
            Ok(1) => Ok(()),
            _ => {
                let _ = helper.child.wait();
                Err(NetError::Failed {
                    tool: TOOL,
                    message: stderr_text(log),
                })
            }
        };
    }
}

/// One request to slirp4netns's API socket, through the container's runtime directory.
fn api(rt: &Path, request: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    let dir = std::fs::File::open(rt)?;
    let path = format!("/proc/self/fd/{}/slirp.sock", dir.as_raw_fd());
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(READY_TIMEOUT))?;
    s.write_all(request.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    s.take(64 << 10).read_to_end(&mut reply)?;
    serde_json::from_slice(&reply)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn add_hostfwd(rt: &Path, p: &Publish) -> Result<(), NetError> {
    let fail = |message: String| NetError::Publish {
        publish: format!("{p} through slirp4netns"),
        message,
    };
    let IpAddr::V4(host) = p.host_ip else {
        return Err(fail(
            "slirp4netns publishes on IPv4 host addresses only; use pasta for IPv6".into(),
        ));
    };
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": p.proto.as_str(),
            "host_addr": host.to_string(),
            "host_port": p.host_port,
            "guest_port": p.container_port,
        }
    });
    let reply = api(rt, &request).map_err(|e| fail(format!("slirp4netns's API: {e}")))?;
    if let Some(e) = reply.get("error") {
        let desc = e.get("desc").and_then(|d| d.as_str()).unwrap_or("refused");
        return Err(fail(format!("{desc} (is the port in use?)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(cidr_base("10.0.2.0/24"), Some(Ipv4Addr::new(10, 0, 2, 0)));
        assert_eq!(cidr_base("10.5.7.9/16"), Some(Ipv4Addr::new(10, 5, 0, 0)));
        assert_eq!(cidr_base("10.0.2.0/30"), None);
        assert_eq!(cidr_base("10.0.2.0"), None);
        assert_eq!(cidr_base("fd00::/64"), None);
    }
}
