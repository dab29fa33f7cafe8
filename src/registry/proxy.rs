//! `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, read as curl and Go read them.
//!
//! Lowercase variables win over uppercase; loopback hosts are never proxied (as Go's
//! `ProxyFromEnvironment`); `NO_PROXY` entries are `*`, domain suffixes (with or without a
//! leading dot), `host:port`, IP addresses and CIDR ranges.

use std::net::IpAddr;

/// Proxy settings taken from the environment once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Vec<String>,
}

impl ProxyEnv {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let pick = |lower: &str, upper: &str| {
            get(lower)
                .or_else(|| get(upper))
                .filter(|v| !v.trim().is_empty())
        };
        let all = pick("all_proxy", "ALL_PROXY");
        let no_proxy = pick("no_proxy", "NO_PROXY")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ProxyEnv {
            http: pick("http_proxy", "HTTP_PROXY").or_else(|| all.clone()),
            https: pick("https_proxy", "HTTPS_PROXY").or(all),
            no_proxy,
        }
    }

    /// The proxy URL to use for a request to `host:port`, if any.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Option<String> {
        let proxy = if https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if is_loopback(&host) || self.bypassed(&host, port) {
            return None;
        }
        let proxy = if proxy.contains("://") {
            proxy.clone()
        } else {
            format!("http://{proxy}")
        };
        Some(proxy)
    }

    fn bypassed(&self, host: &str, port: u16) -> bool {
        self.no_proxy
            .iter()
            .any(|entry| no_proxy_matches(entry, host, port))
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn no_proxy_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return cidr_contains(net, bits, host);
    }
    let (name, want_port) = split_entry_port(entry);
    if want_port.is_some_and(|p| p != port) {
        return false;
    }
    let name = name.trim_start_matches("*.").trim_start_matches('.');
    host == name
        || host
            .strip_suffix(name)
            .is_some_and(|pre| pre.ends_with('.'))
}

fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if entry.parse::<IpAddr>().is_ok() {
        return (entry, None);
    }
    if let Some(rest) = entry.strip_prefix('[')
        && let Some((ip, after)) = rest.split_once(']')
    {
        return (ip, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()),
        _ => (entry, None),
    }
}

fn cidr_contains(net: &str, bits: &str, host: &str) -> bool {
    let (Ok(net), Ok(bits), Ok(ip)) = (
        net.parse::<IpAddr>(),
        bits.parse::<u32>(),
        host.parse::<IpAddr>(),
    ) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn scheme_specific_and_lowercase_wins() {
        let e = env(&[
            ("HTTP_PROXY", "http://up:1"),
            ("http_proxy", "low:2"),
            ("HTTPS_PROXY", "s:3"),
        ]);
        assert_eq!(
            e.proxy_for(false, "reg.example", 80).unwrap(),
            "http://low:2"
        );
        assert_eq!(e.proxy_for(true, "reg.example", 443).unwrap(), "http://s:3");
    }

    #[test]
    fn loopback_is_never_proxied() {
        let e = env(&[("HTTP_PROXY", "p:1"), ("HTTPS_PROXY", "p:1")]);
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "a.localhost",
        ] {
            assert_eq!(e.proxy_for(false, h, 5000), None, "{h}");
        }
    }

    #[test]
    fn no_proxy_forms() {
        let e = env(&[
            ("HTTPS_PROXY", "p:1"),
            (
                "NO_PROXY",
                "internal.example, .corp.example,reg.example:5000,10.0.0.0/8,192.168.1.5",
            ),
        ]);
        let p = |h: &str, port| e.proxy_for(true, h, port).is_some();
        assert!(!p("internal.example", 443));
        assert!(!p("x.internal.example", 443));
        assert!(p("xinternal.example", 443));
        assert!(!p("corp.example", 443));
        assert!(!p("a.b.corp.example", 443));
        assert!(!p("reg.example", 5000));
        assert!(p("reg.example", 443));
        assert!(!p("10.1.2.3", 443));
        assert!(p("11.1.2.3", 443));
        assert!(!p("192.168.1.5", 443));
        assert!(p("registry-1.docker.io", 443));
    }

    #[test]
    fn star_disables_and_all_proxy_fills_in() {
        let e = env(&[("ALL_PROXY", "socks:1"), ("NO_PROXY", "*")]);
        assert_eq!(e.proxy_for(true, "x.example", 443), None);
        let e = env(&[("ALL_PROXY", "http://a:1")]);
        assert_eq!(e.proxy_for(true, "x.example", 443).unwrap(), "http://a:1");
        assert_eq!(e.proxy_for(false, "x.example", 80).unwrap(), "http://a:1");
    }
}
