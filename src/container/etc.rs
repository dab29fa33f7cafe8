//! The per-container `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::fs;
use std::io;
use std::path::Path;

use crate::sandbox::plan::EtcFiles;
use crate::sandbox::spec::Network;

/// The hosts file for `hostname`: loopback names, and the host's own entries with
/// `--network host`.
pub fn hosts(hostname: &str, network: Network, host_hosts: &str) -> String {
    match network {
        Network::Host => {
            let mut s = host_hosts.to_owned();
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            if !s.split_whitespace().any(|w| w == hostname) {
                s.push_str(&format!("127.0.1.1\t{hostname}\n"));
            }
            s
        }
        Network::None => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        ),
    }
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
pub fn write(dir: &Path, hostname: &str, network: Network) -> io::Result<EtcFiles> {
    let files = paths(dir);
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    fs::write(&files.hosts, hosts(hostname, network, &host_hosts))?;
    fs::write(&files.hostname, format!("{hostname}\n"))?;
    // Networking drivers replace this with their forwarder; until then the host's resolvers.
    fs::write(
        &files.resolv,
        fs::read("/etc/resolv.conf").unwrap_or_default(),
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files() {
        let none = hosts("abc123", Network::None, "ignored");
        assert!(none.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(none.contains("127.0.1.1\tabc123\n"));
        let host = hosts("box", Network::Host, "127.0.0.1 localhost\n10.0.0.1 db");
        assert!(host.contains("10.0.0.1 db\n") && host.contains("127.0.1.1\tbox\n"));
        assert_eq!(hosts("db", Network::Host, "10.0.0.1 db\n"), "10.0.0.1 db\n");
    }
}
