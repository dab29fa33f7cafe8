//! Registry authentication: `WWW-Authenticate` challenges, Bearer tokens and their cache.
//!
//! The flow is Docker's: a request answered 401 carries a challenge; for `Bearer` nook asks the
//! challenge's realm for a token for (service, scope), sending Basic credentials or an identity
//! token when it has them and going anonymous otherwise; the token is reused until it expires.
//! For `Basic` the credentials go on the request itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

pub use crate::secret::Credential;
use crate::secret::Secret;

/// The `Authorization` value for Basic credentials.
pub fn basic_header(username: &str, password: &Secret) -> Secret {
    let raw = format!("{username}:{}", password.expose());
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer`, `basic`, ...
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235: `scheme param=value, ...`,
/// values as tokens or quoted strings with backslash escapes, several challenges in one header).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_commas();
        let Some(word) = p.token() else { break };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // `word=` starts a parameter of the current challenge.
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The token endpoint's answer (Docker's `token` or OAuth2's `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub access_token: Option<Secret>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn bearer(&self) -> Option<&Secret> {
        self.token
            .as_ref()
            .or(self.access_token.as_ref())
            .filter(|t| !t.is_empty())
    }

    /// How long the token may be reused; the spec's default is 60 s. A margin keeps nook from
    /// sending a token in its last seconds.
    pub fn lifetime(&self) -> Duration {
        let secs = self.expires_in.unwrap_or(60).max(60);
        Duration::from_secs(secs.saturating_sub(10))
    }
}

/// Where a token came from and for what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub realm: String,
    pub service: String,
    pub scope: String,
}

/// Tokens by (realm, service, scope), and the scheme each registry host asked for.
#[derive(Default)]
pub struct AuthCache {
    tokens: Mutex<HashMap<TokenKey, (Secret, Instant)>>,
    /// Per registry host and scope: the token key its last challenge named, or `None` for Basic.
    hosts: Mutex<HashMap<(String, String), Option<TokenKey>>>,
}

impl AuthCache {
    /// A still-valid token for `key`.
    pub fn token(&self, key: &TokenKey) -> Option<Secret> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    pub fn store_token(&self, key: TokenKey, token: Secret, lifetime: Duration) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(key, (token, Instant::now() + lifetime));
    }

    pub fn forget_token(&self, key: &TokenKey) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(key);
    }

    /// What `host` asked for last time for `scope`: `Some(Some(key))` Bearer, `Some(None)` Basic.
    pub fn scheme_for(&self, host: &str, scope: &str) -> Option<Option<TokenKey>> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.get(&(host.to_owned(), scope.to_owned())).cloned()
    }

    pub fn remember_scheme(&self, host: &str, scope: &str, key: Option<TokenKey>) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.insert((host.to_owned(), scope.to_owned()), key);
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn insufficient_scope_and_escapes() {
        let h = r#"Bearer realm="http://a/t", error="insufficient_scope", scope="repository:x:pull,push", msg="a \"b\"""#;
        let c = parse_challenges(h);
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(c[0].param("scope"), Some("repository:x:pull,push"));
        assert_eq!(c[0].param("msg"), Some("a \"b\""));
    }

    #[test]
    fn several_challenges_and_basic() {
        let c = parse_challenges(r#"Basic realm="reg", Bearer realm="http://t",service=s"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("reg"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("service"), Some("s"));
    }

    #[test]
    fn junk_does_not_panic() {
        for h in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "Bearer =x",
            "Bearer realm",
        ] {
            let _ = parse_challenges(h);
        }
    }

    #[test]
    fn token_lifetime_and_cache() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.bearer().map(Secret::expose), Some("abc"));
        assert_eq!(t.lifetime(), Duration::from_secs(290));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert_eq!(t.bearer().map(Secret::expose), Some("x"));
        assert_eq!(t.lifetime(), Duration::from_secs(50));
        let cache = AuthCache::default();
        let key = TokenKey {
            realm: "r".into(),
            service: "s".into(),
            scope: "x".into(),
        };
        cache.store_token(key.clone(), "tok".into(), Duration::from_secs(10));
        assert_eq!(cache.token(&key), Some(Secret::new("tok")));
        cache.store_token(key.clone(), "old".into(), Duration::ZERO);
        assert_eq!(cache.token(&key), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
