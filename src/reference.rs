//! Image references, parsed and normalised as docker reads them.
//!
//! `busybox` means `docker.io/library/busybox:latest`; `index.docker.io/x` means
//! `docker.io/library/x`; a first component with a `.` or `:` or equal to `localhost` is a
//! registry host; `name:tag@digest` pulls by digest (the digest wins). Each error names the rule
//! of the reference grammar that the input breaks.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Docker Hub's canonical domain in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Which rule of the reference grammar an input breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: the reference is empty")]
    Empty,
    #[error(
        "invalid repository name {0:?}: a 64-character hexadecimal string is an image id, not a name"
    )]
    HexName(String),
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error(
        "invalid reference format: path component {component:?} of {input:?} must be lowercase letters and digits, separated by '.', '_', '__' or dashes"
    )]
    PathComponent { input: String, component: String },
    #[error(
        "invalid reference format: registry host {0:?} must be a DNS name or [IPv6] address with an optional :port"
    )]
    Domain(String),
    #[error(
        "invalid reference format: tag {0:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )]
    Tag(String),
    #[error("invalid reference format: {0}")]
    Digest(#[source] DigestError),
    #[error("invalid reference format: repository name {0:?} is longer than 255 characters")]
    TooLong(String),
}

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way `docker pull` does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ReferenceError::HexName(input.to_owned()));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(ReferenceError::Digest)?)),
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (domain, path) = split_domain(name);
        validate_domain(&domain)?;
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(path));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                return Err(ReferenceError::PathComponent {
                    input: input.to_owned(),
                    component: component.to_owned(),
                });
            }
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(ReferenceError::TooLong(format!("{domain}/{path}")));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry domain as written in references (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The host that answers the registry API for this reference.
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.domain
        }
    }

    /// `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form docker shows: `busybox`, `user/app`, `ghcr.io/org/app`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DOCKER_HUB {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_owned()
        } else {
            self.repository()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if given, else the tag.
    pub fn manifest_reference(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().to_owned(),
        }
    }

    /// The tag, defaulting to `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The `repository:tag` this reference records in the store, if it names a tag (a
    /// reference with only a digest records none, as docker).
    pub fn tagged(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(format!("{}:{}", self.repository(), t)),
            (None, None) => Some(format!("{}:latest", self.repository())),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

/// Splits `name` into registry domain and repository path, normalising Docker Hub.
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    let domain = if domain == "index.docker.io" {
        DOCKER_HUB
    } else {
        domain
    };
    let path = if domain == DOCKER_HUB && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    (domain.to_owned(), path)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host(:port)?` where host is a DNS name of `[a-zA-Z0-9-]` labels or a bracketed IPv6.
fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Domain(domain.to_owned());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5)
    {
        return Err(bad());
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(tag.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation_cases() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "docker.io/library/busybox"),
            ("docker.io/busybox", "docker.io/library/busybox"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox",
            ),
            ("index.docker.io/busybox", "docker.io/library/busybox"),
            ("user/app", "docker.io/user/app"),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/x:tag", "localhost:5000/x:tag"),
            ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000/a/b/c"),
            ("[::1]:5000/x", "[::1]:5000/x"),
            ("ghcr.io/org/img", "ghcr.io/org/img"),
            ("Foo.Bar:5000/x", "Foo.Bar:5000/x"),
            ("a__b/c-d/e--f/g.h", "docker.io/a__b/c-d/e--f/g.h"),
        ];
        for (input, want) in cases {
            assert_eq!(full(input), want, "{input}");
        }
    }

    #[test]
    fn digest_wins_over_tag() {
        let r = Reference::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.tag(), Some("1.36"));
        let r = Reference::parse(&format!("ghcr.io/org/img@{D}")).unwrap();
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.tagged(), None);
    }

    #[test]
    fn default_tag_is_latest() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn hub_api_host_and_familiar_name() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.familiar_repository(), "busybox");
        let r = Reference::parse("user/app").unwrap();
        assert_eq!(r.familiar_repository(), "user/app");
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.familiar_repository(), "localhost:5000/app");
    }

    #[test]
    fn port_with_tag_is_not_confused() {
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.tag(), None);
    }

    #[test]
    fn errors_name_the_rule() {
        assert!(matches!(Reference::parse(""), Err(ReferenceError::Empty)));
        assert!(matches!(
            Reference::parse("Busybox"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(matches!(
            Reference::parse("user/App"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(matches!(
            Reference::parse("a..b"),
            Err(ReferenceError::PathComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("a___b"),
            Err(ReferenceError::PathComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("-ab"),
            Err(ReferenceError::PathComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("ab/"),
            Err(ReferenceError::PathComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("x:-tag"),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("x:"),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("x@sha256:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("x@sha256:../../x"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("ex-.com/x"),
            Err(ReferenceError::Domain(_))
        ));
        assert!(matches!(
            Reference::parse("host:port/x"),
            Err(ReferenceError::Domain(_))
        ));
        assert!(matches!(
            Reference::parse(&"a".repeat(64).replace('a', "b")),
            Err(ReferenceError::HexName(_))
        ));
        let long = format!("x/{}", "a".repeat(260));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::TooLong(_))
        ));
        let long_tag = format!("x:{}", "a".repeat(129));
        assert!(matches!(
            Reference::parse(&long_tag),
            Err(ReferenceError::Tag(_))
        ));
    }

    #[test]
    fn path_components() {
        for ok in ["a", "a0", "a.b", "a_b", "a__b", "a-b", "a---b", "0"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["", "A", "a.", ".a", "a._b", "a__-b", "a___b", "a..b", "a/b"] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }
}
