//! Where a client connects: `unix:///PATH`, `tcp://HOST:PORT` (optionally with TLS) or
//! `ssh://[USER@]HOST[:PORT]`, parsed as docker parses `-H` and `DOCKER_HOST`.

use std::path::PathBuf;

use super::ClientError;

/// The transport and address of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A UNIX socket.
    Unix(PathBuf),
    /// A TCP address; TLS is chosen by [`Endpoint::tls`].
    Tcp { host: String, port: u16 },
    /// `ssh [-p PORT] [USER@]HOST -- nook system dial-stdio`.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
}

impl Host {
    /// Parses a `-H` value. `tcp://HOST` without a port gets docker's 2375 (2376 with TLS).
    pub fn parse(s: &str, tls: bool) -> Result<Host, ClientError> {
        let bad = |why: &str| ClientError::BadHost(format!("{s}: {why}"));
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(bad(
                    "give an absolute path, as unix:///run/user/1000/nook.sock",
                ));
            }
            return Ok(Host::Unix(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let default = if tls { 2376 } else { 2375 };
            let (host, port) = split_port(rest).map_err(&bad)?;
            if host.is_empty() {
                return Err(bad("no host name"));
            }
            return Ok(Host::Tcp {
                host,
                port: port.unwrap_or(default),
            });
        }
        if let Some(rest) = s.strip_prefix("ssh://") {
            let rest = rest.trim_end_matches('/');
            if rest.contains('/') || rest.contains('?') {
                return Err(bad("an ssh host takes no path or query"));
            }
            let (user, hostport) = match rest.rsplit_once('@') {
                Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
                Some(_) => return Err(bad("empty user name")),
                None => (None, rest),
            };
            let (host, port) = split_port(hostport).map_err(&bad)?;
            // A host or user starting with '-' would be read by ssh as an option.
            if host.is_empty()
                || host.starts_with('-')
                || user.as_deref().is_some_and(|u| u.starts_with('-'))
            {
                return Err(bad("no usable host name"));
            }
            return Ok(Host::Ssh { user, host, port });
        }
        Err(bad(
            "use unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST[:PORT]",
        ))
    }

    /// The URL form, as `context ls` shows it.
    pub fn url(&self) -> String {
        match self {
            Host::Unix(p) => format!("unix://{}", p.display()),
            Host::Tcp { host, port } if host.contains(':') => format!("tcp://[{host}]:{port}"),
            Host::Tcp { host, port } => format!("tcp://{host}:{port}"),
            Host::Ssh { user, host, port } => {
                let user = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("ssh://{user}{host}{port}")
            }
        }
    }
}

/// `HOST[:PORT]` or `[V6]:PORT`.
fn split_port(s: &str) -> Result<(String, Option<u16>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or("unclosed [ in the address")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| "bad port")?),
            None if tail.is_empty() => None,
            None => return Err("junk after the address"),
        };
        return Ok((h.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), Some(p.parse().map_err(|_| "bad port")?))),
        None => Ok((s.to_owned(), None)),
    }
}

/// TLS for a TCP endpoint: PEM files and whether the server's certificate is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates that sign the server's (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// The client certificate chain, presented when the server asks.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    /// Check the server's certificate and name (docker's --tlsverify).
    pub verify: bool,
}

/// A daemon to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    /// TLS over TCP; `None` is plain TCP (or a UNIX socket, or ssh).
    pub tls: Option<TlsOptions>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_as_docker_writes_them() {
        assert_eq!(
            Host::parse("unix:///run/x.sock", false).unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://example.org", true).unwrap(),
            Host::Tcp {
                host: "example.org".into(),
                port: 2376
            }
        );
        assert_eq!(
            Host::parse("tcp://[::1]:99", false).unwrap().url(),
            "tcp://[::1]:99"
        );
        assert_eq!(
            Host::parse("ssh://me@box:2222", false).unwrap(),
            Host::Ssh {
                user: Some("me".into()),
                host: "box".into(),
                port: Some(2222)
            }
        );
        assert_eq!(Host::parse("ssh://box", false).unwrap().url(), "ssh://box");
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for bad in [
            "unix://rel",
            "ssh://-oProxyCommand=x",
            "ssh://-u@h",
            "tcp://:5",
            "http://x",
            "ssh://h/p",
            "tcp://h:99999",
        ] {
            assert!(Host::parse(bad, false).is_err(), "{bad}");
        }
    }
}
