//! The per-container `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Mode, Names};

/// Files nook writes per container and binds over the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv: PathBuf,
}

const LOCAL: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The hosts file for `hostname`: the host's own entries with `--network host`, else the
/// loopback names, the container's name and, where the host's loopback is reachable,
/// `host.containers.internal`.
pub fn hosts(hostname: &str, mode: &Mode, names: &Names, host_hosts: &str) -> String {
    if *mode == Mode::Host {
        let mut s = host_hosts.to_owned();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        if !s.split_whitespace().any(|w| w == hostname) {
            s.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        return s;
    }
    let mut s = format!("{LOCAL}127.0.1.1\t{hostname}\n");
    if let Some(gw) = &names.host_gateway {
        s.push_str(&format!(
            "{gw}\thost.containers.internal host.docker.internal\n"
        ));
    }
    s
}

/// resolv.conf: the driver's forwarder with the host's search domains and options, or the
/// host's own file.
pub fn resolv(names: &Names, host_resolv: &str) -> String {
    let Some(servers) = &names.nameservers else {
        return host_resolv.to_owned();
    };
    let mut s = String::new();
    for l in host_resolv.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if matches!(first, "search" | "domain" | "options") {
            s.push_str(l.trim());
            s.push('\n');
        }
    }
    for n in servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    s
}

/// Where the three files live in the container directory.
pub fn paths(dir: &Path) -> EtcFiles {
    EtcFiles {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv: dir.join("resolv.conf"),
    }
}

/// Writes the three files into the container directory.
pub fn write(dir: &Path, hostname: &str, mode: &Mode) -> io::Result<EtcFiles> {
    let files = paths(dir);
    let names = super::names(mode);
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    fs::write(&files.hosts, hosts(hostname, mode, &names, &host_hosts))?;
    fs::write(&files.hostname, format!("{hostname}\n"))?;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    fs::write(&files.resolv, resolv(&names, &host_resolv))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::SlirpOptions;

    #[test]
    fn hosts_files() {
        let none = Names {
            nameservers: None,
            host_gateway: None,
        };
        let h = hosts("abc123", &Mode::None, &none, "ignored");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.1.1\tabc123\n") && !h.contains("ignored"));
        let host = hosts(
            "box",
            &Mode::Host,
            &none,
            "127.0.0.1 localhost\n10.0.0.1 db",
        );
        assert!(host.contains("10.0.0.1 db\n") && host.contains("127.0.1.1\tbox\n"));
        assert_eq!(
            hosts("db", &Mode::Host, &none, "10.0.0.1 db\n"),
            "10.0.0.1 db\n"
        );
        let loopback = Mode::Slirp(SlirpOptions {
            allow_host_loopback: true,
            ..SlirpOptions::default()
        });
        let h = hosts("c", &loopback, &crate::net::names(&loopback), "");
        assert!(h.contains("10.0.2.2\thost.containers.internal"), "{h}");
        let closed = Mode::Slirp(SlirpOptions::default());
        let h = hosts("c", &closed, &crate::net::names(&closed), "");
        assert!(!h.contains("host.containers.internal"), "{h}");
    }

    #[test]
    fn resolv_files() {
        let host =
            "# generated\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0 trust-ad\n";
        let slirp = crate::net::names(&Mode::Slirp(SlirpOptions::default()));
        assert_eq!(
            resolv(&slirp, host),
            "search corp.example\noptions edns0 trust-ad\nnameserver 10.0.2.3\n"
        );
        let none = crate::net::names(&Mode::None);
        assert_eq!(resolv(&none, host), host);
    }
}
