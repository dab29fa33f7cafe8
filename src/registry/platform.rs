//! Platforms (`os/arch[/variant]`) and how an index entry is chosen for a host.
//!
//! Names are normalised as containerd does (`x86_64` → `amd64`, `aarch64` → `arm64`, arm64's
//! variant `v8` is its default, arm's is `v7`). A host of variant vN runs images of variant vM for
//! M ≤ N (arm v7 runs v6 and v5); the closest variant wins.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A platform as written in an OCI index or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a `--platform` value is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")]
pub struct PlatformError(pub String);

impl Platform {
    /// The platform this nook binary runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` (also `linux/x86_64` and other aliases).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok_part(p)) {
            return Err(PlatformError(s.to_owned()));
        }
        let p = Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        };
        Ok(p.normalized())
    }

    /// Canonical names and default variants.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            o => o.to_owned(),
        };
        let mut variant = self.variant.clone().filter(|v| !v.is_empty());
        let arch = match self.architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "i386" | "i686" => "386".to_owned(),
            "aarch64" | "arm64" => {
                if variant.as_deref().is_none_or(|v| v == "8") {
                    variant = Some("v8".into());
                }
                "arm64".to_owned()
            }
            "armhf" => {
                variant = Some("v7".into());
                "arm".to_owned()
            }
            "armel" => {
                variant = Some("v6".into());
                "arm".to_owned()
            }
            "arm" => {
                variant = Some(match variant.as_deref() {
                    None | Some("7") => "v7".into(),
                    Some("6") => "v6".into(),
                    Some("5") => "v5".into(),
                    Some(v) => v.to_owned(),
                });
                "arm".to_owned()
            }
            a => a.to_owned(),
        };
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }

    /// Index entries that carry no runnable image (BuildKit's attestations).
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }

    /// How well an image of `self` runs on `host`: `None` if it does not, else a rank where
    /// lower is better (0 = the same variant).
    pub fn fitness_on(&self, host: &Platform) -> Option<u32> {
        let img = self.normalized();
        let host = host.normalized();
        if img.os != host.os || img.architecture != host.architecture {
            return None;
        }
        match (
            variant_level(img.variant.as_deref()),
            variant_level(host.variant.as_deref()),
        ) {
            (None, None) => Some(0),
            (Some(i), Some(h)) if i == h => Some(0),
            (Some(i), Some(h)) if i < h => Some(h - i),
            // An image without a variant runs on any host variant, after a closer one.
            (None, Some(_)) => Some(50),
            // Unnumbered variants must match exactly; a host without a variant takes the base.
            (Some(_), None) if img.variant.as_deref() == Some("v1") => Some(1),
            _ if img.variant == host.variant => Some(0),
            _ => None,
        }
    }
}

fn variant_level(v: Option<&str>) -> Option<u32> {
    v?.strip_prefix('v')?.parse().ok()
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arm64_matches_v8_and_no_variant() {
        let host = p("linux/arm64");
        let entry = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(entry.fitness_on(&host), Some(0));
        let v8 = Platform {
            variant: Some("v8".into()),
            ..entry.clone()
        };
        assert_eq!(v8.fitness_on(&host), Some(0));
        assert_eq!(p("linux/amd64").fitness_on(&host), None);
    }

    #[test]
    fn arm_v7_accepts_v6_and_v5_but_prefers_v7() {
        let host = p("linux/arm/v7");
        let v7 = p("linux/arm/v7").fitness_on(&host).unwrap();
        let v6 = p("linux/arm/v6").fitness_on(&host).unwrap();
        let v5 = p("linux/arm/v5").fitness_on(&host).unwrap();
        assert!(v7 < v6 && v6 < v5);
        assert_eq!(p("linux/arm/v7").fitness_on(&p("linux/arm/v6")), None);
        assert_eq!(p("linux/arm/v8").fitness_on(&host), None);
    }

    #[test]
    fn os_must_match_and_unknown_is_flagged() {
        assert_eq!(p("windows/amd64").fitness_on(&p("linux/amd64")), None);
        assert!(
            Platform {
                os: "unknown".into(),
                architecture: "unknown".into(),
                variant: None
            }
            .is_unknown()
        );
    }

    #[test]
    fn amd64_without_variant() {
        let host = p("linux/amd64");
        assert_eq!(p("linux/amd64").fitness_on(&host), Some(0));
        assert_eq!(p("linux/amd64/v3").fitness_on(&host), None);
        assert_eq!(
            p("linux/amd64/v2").fitness_on(&p("linux/amd64/v3")),
            Some(1)
        );
    }

    #[test]
    fn host_is_linux() {
        assert_eq!(Platform::host().os, "linux");
    }
}
