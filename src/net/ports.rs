//! Published ports: docker's `-p [hostip:][hostport:]containerport[/tcp|/udp]` and `-P`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: the host's address and port → the container's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub host_ip: IpAddr,
    /// 0 until a free port is picked.
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for Publish {
    /// `nook port`'s line: `80/tcp -> 127.0.0.1:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.proto.as_str(),
            SocketAddr::new(self.host_ip, self.host_port)
        )
    }
}

/// What is wrong with a published port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "invalid -p {0:?}: expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp], e.g. 8080:80"
    )]
    Syntax(String),
    #[error(
        "cannot publish host port {port}: ports below {start} (net.ipv4.ip_unprivileged_port_start) need privileges an ordinary user lacks; use a higher host port (e.g. -p {suggest}:{container}) or lower that sysctl"
    )]
    Privileged {
        port: u16,
        start: u16,
        suggest: u32,
        container: u16,
    },
    #[error("cannot find a free host port on {addr} for -p {spec}")]
    NoFreePort {
        addr: IpAddr,
        spec: String,
        #[source]
        source: std::io::Error,
    },
}

fn port(s: &str) -> Option<u16> {
    s.parse().ok().filter(|p| *p != 0)
}

/// Parses one `-p` value. Ranges are not taken (one port each).
pub fn parse(spec: &str) -> Result<Publish, PortError> {
    let bad = || PortError::Syntax(spec.to_owned());
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some(_) => return Err(bad()),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 host address comes in brackets: [::1]:8080:80.
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once("]:").ok_or_else(bad)?;
        (Some(ip.parse::<IpAddr>().map_err(|_| bad())?), r)
    } else {
        match rest.matches(':').count() {
            2 => {
                let (ip, r) = rest.split_once(':').ok_or_else(bad)?;
                let ip = if ip.is_empty() {
                    None
                } else {
                    Some(ip.parse::<IpAddr>().map_err(|_| bad())?)
                };
                (ip, r)
            }
            0 | 1 => (None, rest),
            _ => return Err(bad()),
        }
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some(("", c)) => (0, port(c).ok_or_else(bad)?),
        Some((h, c)) => (port(h).ok_or_else(bad)?, port(c).ok_or_else(bad)?),
        None => (0, port(rest).ok_or_else(bad)?),
    };
    Ok(Publish {
        host_ip: host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        host_port,
        container_port,
        proto,
    })
}

/// `-P`: the image's `ExposedPorts` keys (`80/tcp`, `53/udp`, `8080`), each to a free port.
pub fn exposed<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<Publish> {
    let mut out: Vec<Publish> = keys
        .into_iter()
        .filter_map(|k| {
            let (p, proto) = match k.split_once('/') {
                Some((p, "udp")) => (p, Proto::Udp),
                Some((p, "tcp")) | Some((p, "")) => (p, Proto::Tcp),
                Some(_) => return None,
                None => (k, Proto::Tcp),
            };
            Some(Publish {
                host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host_port: 0,
                container_port: port(p)?,
                proto,
            })
        })
        .collect();
    out.sort_by_key(|p| (p.container_port, p.proto.as_str()));
    out.dedup();
    out
}

/// The first port an ordinary user may bind.
pub fn unprivileged_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Checks that no host port lies below `start` (the first port this user may bind: see
/// [`unprivileged_start`]), and picks free ones where none is given (bound and released at
/// once, as docker and podman do).
pub fn resolve(ports: &mut [Publish], start: u16) -> Result<(), PortError> {
    for p in ports.iter_mut() {
        if p.host_port != 0 && p.host_port < start {
            return Err(PortError::Privileged {
                port: p.host_port,
                start,
                suggest: 8000 + u32::from(p.host_port),
                container: p.container_port,
            });
        }
        if p.host_port == 0 {
            let addr = SocketAddr::new(p.host_ip, 0);
            let got = match p.proto {
                Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
                Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
            };
            p.host_port = got
                .map_err(|source| PortError::NoFreePort {
                    addr: p.host_ip,
                    spec: format!("{}/{}", p.container_port, p.proto.as_str()),
                    source,
                })?
                .port();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let p = parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(p.to_string(), "80/tcp -> 127.0.0.1:8080");
        let p = parse("8080:80/udp").unwrap();
        assert_eq!(p.to_string(), "80/udp -> 0.0.0.0:8080");
        let p = parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse("127.0.0.1::53/udp").unwrap();
        assert_eq!((p.host_port, p.proto), (0, Proto::Udp));
        let p = parse("[::1]:9000:90").unwrap();
        assert_eq!(p.to_string(), "90/tcp -> [::1]:9000");
        for bad in [
            "",
            "0",
            "80/sctp",
            "a:b",
            "1.2.3.4:1:2:3",
            "70000",
            "x.y:1:2",
            "8080:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposed_ports() {
        let e = exposed(["8080/tcp", "53/udp", "80", "bad/sctp", "80/tcp"]);
        let shown: Vec<String> = e
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.proto.as_str()))
            .collect();
        assert_eq!(shown, ["53/udp", "80/tcp", "8080/tcp"]);
    }

    #[test]
    fn privileged_ports_are_refused_with_a_reason() {
        let mut p = vec![parse("127.0.0.1:80:80").unwrap()];
        let e = resolve(&mut p, 1024).unwrap_err().to_string();
        assert!(
            e.contains("ip_unprivileged_port_start") && e.contains("-p 8080:80"),
            "{e}"
        );
        resolve(&mut p, 0).unwrap();
        let mut free = vec![parse("127.0.0.1::80").unwrap()];
        resolve(&mut free, 1024).unwrap();
        assert!(free[0].host_port >= 1);
    }
}
