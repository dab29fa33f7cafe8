//! Passwords, tokens and the credentials made of them: the one holder both the configuration
//! files ([`crate::config`]) and the registry client ([`crate::registry`]) use.
//!
//! A [`Secret`] prints as `***` through `Debug` and `Display`, so it cannot leak into a log line
//! or an error message by accident; the value comes out only through [`Secret::expose`], which
//! marks every place that sends or stores it. Its bytes are overwritten when it is dropped. That
//! is best effort: copies made while the value was read (a growing buffer, an HTTP library's
//! own) are out of its reach.

use std::fmt;

use serde::Deserialize;

/// A password or token. `Debug` and `Display` print `***`. It can be read from JSON (a
/// registry's token answer) but not written by serde: storing it is an explicit `expose()`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends or stores it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        // Keeps the writes from being optimised away as dead stores before the free.
        std::hint::black_box(&bytes);
    }
}

/// Credentials for one registry, as docker's and podman's files keep them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(Secret),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:#?}"), "***");
        assert_eq!(s.expose(), "hunter2");
        let basic = Credential::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        let token = Credential::IdentityToken("refresh-me".into());
        for shown in [
            format!("{basic:?}"),
            format!("{basic:#?}"),
            format!("{token:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("refresh-me"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert!(
            format!("{basic:?}").contains("alice"),
            "the user name is not secret"
        );
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new("a"), Secret::from("a"));
        assert_ne!(Secret::new("a"), Secret::from("b".to_owned()));
        assert!(Secret::default().is_empty());
    }
}
