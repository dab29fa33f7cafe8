//! pasta (passt's namespace mode): started against the container's init with
//! `--config-net`, in the foreground so that it stays nook's child and dies with it. It has no
//! ready-fd: the network is ready when the container's namespace has the default route pasta
//! copies from the host (`/proc/PID/net/route`), which pasta adds last.
//!
//! Ports go on its command line (`-t`, `-u`); nothing else is forwarded (`-t none -u none
//! -T none -U none`: no automatic forwarding either way). Connections a published port
//! receives from the host's own loopback reach the container from 127.0.0.1 (pasta splices
//! them through the container's loopback); those from other hosts keep their address.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    Helper, NetError, PastaOptions, Proto, Publish, READY_TIMEOUT, find_tool, stderr_text,
};

const TOOL: &str = "pasta";

/// The address pasta's DNS forwarder answers on in the container (podman's choice).
pub const DNS_FORWARD: &str = "169.254.1.1";

/// pasta's port options for `ports`.
fn port_args(ports: &[Publish]) -> Vec<String> {
    let mut args = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let flag = if proto == Proto::Tcp { "-t" } else { "-u" };
        let mine: Vec<&Publish> = ports.iter().filter(|p| p.proto == proto).collect();
        if mine.is_empty() {
            args.extend([flag.to_owned(), "none".to_owned()]);
        }
        for p in mine {
            let spec = if p.host_ip.is_unspecified() {
                format!("{}:{}", p.host_port, p.container_port)
            } else {
                format!("{}/{}:{}", p.host_ip, p.host_port, p.container_port)
            };
            args.extend([flag.to_owned(), spec]);
        }
    }
    args.extend(["-T", "none", "-U", "none"].map(str::to_owned));
    args
}

/// The whole command line after the tool's name.
fn args(o: &PastaOptions, pid: i32, ports: &[Publish]) -> Vec<String> {
    let mut a: Vec<String> = ["-f", "-q", "--config-net", "--dns-forward", DNS_FORWARD]
        .map(str::to_owned)
        .to_vec();
    if !o.map_gw {
        a.push("--no-map-gw".into());
    }
    a.extend(port_args(ports));
    a.extend(o.args.iter().cloned());
    a.push(pid.to_string());
    a
}

/// Starts pasta for the init `pid`.
pub fn start(o: &PastaOptions, pid: i32, rt: &Path, ports: &[Publish]) -> Result<Helper, NetError> {
    let tool = find_tool(TOOL).ok_or(NetError::Missing(TOOL))?;
    let log = rt.join("pasta.log");
    let err =
        std::fs::File::create(&log).map_err(|source| NetError::Spawn { tool: TOOL, source })?;
    let mut cmd = Command::new(&tool);
    cmd.args(args(o, pid, ports))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    let child = crate::sys::process::spawn_tied(&mut cmd, &[])
        .map_err(|source| NetError::Spawn { tool: TOOL, source })?;
    let mut helper = Helper {
        child,
        _exit_fd: None,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut nap = Duration::from_micros(200);
    loop {
        if super::has_default_route(&format!("/proc/{pid}/net")) {
            return Ok(helper);
        }
        if !crate::sys::process::alive(pid) {
            return Err(NetError::Failed {
                tool: TOOL,
                message: "the container ended before its network was up".into(),
            });
        }
        if let Ok(Some(_)) = helper.child.try_wait() {
            return Err(NetError::Failed {
                tool: TOOL,
                message: stderr_text(&log),
            });
        }
        if Instant::now() > deadline {
            return Err(NetError::Timeout {
                tool: TOOL,
                secs: READY_TIMEOUT.as_secs(),
                message: stderr_text(&log),
            });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ports::parse;

    #[test]
    fn command_line() {
        let ports = [
            parse("127.0.0.1:8080:80").unwrap(),
            parse("5353:53/udp").unwrap(),
        ];
        let a = args(&PastaOptions::default(), 42, &ports).join(" ");
        assert_eq!(
            a,
            "-f -q --config-net --dns-forward 169.254.1.1 --no-map-gw -t 127.0.0.1/8080:80 -u 5353:53 -T none -U none 42"
        );
        let o = PastaOptions {
            args: vec!["--mtu".into(), "1500".into()],
            map_gw: true,
        };
        let a = args(&o, 7, &[]).join(" ");
        assert_eq!(
            a,
            "-f -q --config-net --dns-forward 169.254.1.1 -t none -u none -T none -U none --mtu 1500 7"
        );
    }
}
