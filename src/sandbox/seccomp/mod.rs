//! seccomp profiles: docker's JSON format, docker's default profile (embedded as data), and
//! their interpretation for one container.
//!
//! A profile is resolved at plan time against the container's effective capabilities, the
//! native architecture and the running kernel (`includes`/`excludes` on `caps`, `arches` and
//! `minKernel`), its call names are looked up in this architecture's table (names the
//! architecture lacks are skipped, as runc does), and the rules are compiled once into a BPF
//! program ([`compile`]) that the child installs just before it drops its capabilities.
//! Arguments compared more than once in one rule make one rule per comparison (ORed), as
//! runc splits them; otherwise a rule's comparisons are ANDed and a call's rules tried in
//! profile order, the first that matches giving the action.
//!
//! Only the native ABI is filtered: calls of another architecture (i386 through `int 0x80`)
//! and x32 calls fail with ENOSYS, so a profile cannot be sidestepped through them.

pub mod compile;
mod syscalls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use self::compile::{Cmp, CompileError, Cond, Filter, Insn, Rule};
use super::caps::Capability;

/// docker's default profile (moby's profiles/seccomp/default.json), as data.
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// How `arches` in a profile names this architecture.
#[cfg(target_arch = "x86_64")]
const ARCH_NAMES: &[&str] = &["amd64", "x86_64", "SCMP_ARCH_X86_64"];
#[cfg(target_arch = "aarch64")]
const ARCH_NAMES: &[&str] = &["arm64", "aarch64", "SCMP_ARCH_AARCH64"];

/// A profile in docker's JSON format (the fields nook acts on; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    pub default_errno_ret: Option<u32>,
    pub syscalls: Option<Vec<SyscallRule>>,
}

/// One entry of `syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    pub names: Option<Vec<String>>,
    /// The old single-name form.
    pub name: Option<String>,
    pub action: String,
    pub errno_ret: Option<u32>,
    pub args: Option<Vec<Arg>>,
    #[serde(default)]
    pub includes: Conditions,
    #[serde(default)]
    pub excludes: Conditions,
}

/// One argument comparison.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// `includes` / `excludes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    pub caps: Option<Vec<String>>,
    pub arches: Option<Vec<String>>,
    pub min_kernel: Option<String>,
}

/// `--security-opt seccomp=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    Default,
    Unconfined,
    Custom {
        path: PathBuf,
        profile: Box<Profile>,
    },
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the seccomp profile {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the seccomp profile {path} is not docker's JSON profile format: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "unsupported seccomp action {0:?}: use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_TRACE or SCMP_ACT_LOG"
    )]
    Action(String),
    #[error(
        "unsupported seccomp comparison {0:?}: use SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ"
    )]
    Op(String),
    #[error("a seccomp rule compares argument {0}: system calls have arguments 0 to 5")]
    Index(u32),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

impl Seccomp {
    /// Reads and checks a profile file (against docker's default capabilities).
    pub fn load(path: &Path) -> Result<Seccomp, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        let profile: Profile =
            serde_json::from_str(&text).map_err(|source| ProfileError::Parse {
                path: shown,
                source,
            })?;
        filter(&profile, &Target::host(super::caps::DOCKER_DEFAULT))?;
        Ok(Seccomp::Custom {
            path: path.to_owned(),
            profile: Box::new(profile),
        })
    }

    /// What `nook inspect` calls it.
    pub fn mode(&self) -> &'static str {
        match self {
            Seccomp::Default => "default",
            Seccomp::Unconfined => "unconfined",
            Seccomp::Custom { .. } => "custom",
        }
    }

    /// The program for a container with these capabilities; `None` when unconfined.
    pub fn program(&self, caps: &[Capability]) -> Result<Option<Program>, ProfileError> {
        let target = Target::host(caps);
        let resolved = match self {
            Seccomp::Unconfined => return Ok(None),
            Seccomp::Custom { profile, .. } => filter(profile, &target)?,
            Seccomp::Default => filter(&default_profile()?, &target)?,
        };
        Ok(Some(Program(compile::compile(&resolved)?)))
    }
}

fn default_profile() -> Result<Profile, ProfileError> {
    serde_json::from_str(DEFAULT_PROFILE).map_err(|source| ProfileError::Parse {
        path: "(nook's default)".into(),
        source,
    })
}

/// What a profile is resolved against.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub caps: &'a [Capability],
    pub kernel: (u32, u32),
}

impl Target<'_> {
    fn host(caps: &[Capability]) -> Target<'_> {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Target {
            caps,
            kernel: kernel_version(&release).unwrap_or((0, 0)),
        }
    }
}

/// "6.1.0-27-amd64" → (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn has_cap(caps: &[Capability], name: &str) -> bool {
    name.to_ascii_uppercase()
        .parse::<Capability>()
        .is_ok_and(|c| caps.contains(&c))
}

/// Whether a rule applies to this container (docker's includes/excludes).
fn applies(r: &SyscallRule, t: &Target<'_>) -> bool {
    let native = |a: &String| ARCH_NAMES.contains(&a.as_str());
    let (inc, exc) = (&r.includes, &r.excludes);
    let kernel_at_least = |v: &String| kernel_version(v).is_none_or(|min| t.kernel >= min);
    inc.caps.iter().flatten().all(|c| has_cap(t.caps, c))
        && inc.arches.as_ref().is_none_or(|a| a.iter().any(native))
        && inc.min_kernel.as_ref().is_none_or(kernel_at_least)
        && !exc.caps.iter().flatten().any(|c| has_cap(t.caps, c))
        && !exc.arches.iter().flatten().any(native)
        && !exc.min_kernel.as_ref().is_some_and(kernel_at_least)
}

fn action(name: &str, errno: Option<u32>) -> Result<u32, ProfileError> {
    let data = errno.unwrap_or(libc::EPERM as u32) & libc::SECCOMP_RET_DATA;
    Ok(match name {
        "SCMP_ACT_ALLOW" => libc::SECCOMP_RET_ALLOW,
        "SCMP_ACT_ERRNO" => libc::SECCOMP_RET_ERRNO | data,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => libc::SECCOMP_RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => libc::SECCOMP_RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => libc::SECCOMP_RET_TRAP,
        "SCMP_ACT_TRACE" => libc::SECCOMP_RET_TRACE | (errno.unwrap_or(0) & libc::SECCOMP_RET_DATA),
        "SCMP_ACT_LOG" => libc::SECCOMP_RET_LOG,
        other => return Err(ProfileError::Action(other.to_owned())),
    })
}

fn cond(a: &Arg) -> Result<Cond, ProfileError> {
    let index = u8::try_from(a.index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or(ProfileError::Index(a.index))?;
    let cmp = match a.op.as_str() {
        "SCMP_CMP_NE" => Cmp::Ne(a.value),
        "SCMP_CMP_LT" => Cmp::Lt(a.value),
        "SCMP_CMP_LE" => Cmp::Le(a.value),
        "SCMP_CMP_EQ" => Cmp::Eq(a.value),
        "SCMP_CMP_GE" => Cmp::Ge(a.value),
        "SCMP_CMP_GT" => Cmp::Gt(a.value),
        "SCMP_CMP_MASKED_EQ" => Cmp::MaskedEq {
            mask: a.value,
            value: a.value_two,
        },
        other => return Err(ProfileError::Op(other.to_owned())),
    };
    Ok(Cond { index, cmp })
}

/// One profile entry's conditions as rules: one, or one per comparison where an argument
/// is compared more than once.
fn rules_of(r: &SyscallRule, action: u32) -> Result<Vec<Rule>, ProfileError> {
    let conds = r
        .args
        .iter()
        .flatten()
        .map(cond)
        .collect::<Result<Vec<_>, _>>()?;
    let repeated = conds
        .iter()
        .enumerate()
        .any(|(i, c)| conds[..i].iter().any(|d| d.index == c.index));
    Ok(if repeated {
        conds
            .into_iter()
            .map(|c| Rule {
                conds: vec![c],
                action,
            })
            .collect()
    } else {
        vec![Rule { conds, action }]
    })
}

/// The number of a call on this architecture.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscalls::TABLE
        .binary_search_by_key(&name, |(n, _)| n)
        .ok()
        .map(|i| syscalls::TABLE[i].1)
}

/// The profile resolved for one container.
pub fn filter(p: &Profile, t: &Target<'_>) -> Result<Filter, ProfileError> {
    let mut calls: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for r in p.syscalls.iter().flatten() {
        // Actions and comparisons are checked even where the rule does not apply.
        let act = action(&r.action, r.errno_ret)?;
        let rules = rules_of(r, act)?;
        if !applies(r, t) {
            continue;
        }
        for name in r.names.iter().flatten().chain(r.name.iter()) {
            if let Some(nr) = syscall_number(name) {
                calls.entry(nr).or_default().extend(rules.iter().cloned());
            }
        }
    }
    Ok(Filter {
        arch: crate::sys::seccomp::AUDIT_ARCH,
        reject_x32: cfg!(target_arch = "x86_64"),
        default_action: action(&p.default_action, p.default_errno_ret)?,
        foreign_action: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        calls,
    })
}

/// A compiled filter, ready for the child to install. Kept in records as base64.
#[derive(Clone, PartialEq, Eq)]
pub struct Program(pub Vec<Insn>);

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.0.len())
    }
}

impl Program {
    pub fn sock_filters(&self) -> Vec<libc::sock_filter> {
        self.0
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    }
}

impl Serialize for Program {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 8);
        for i in &self.0 {
            bytes.extend_from_slice(&i.code.to_le_bytes());
            bytes.extend_from_slice(&[i.jt, i.jf]);
            bytes.extend_from_slice(&i.k.to_le_bytes());
        }
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Program {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(D::Error::custom)?;
        if !bytes.len().is_multiple_of(8) || bytes.len() / 8 > compile::MAX_LEN {
            return Err(D::Error::custom("not a seccomp program"));
        }
        Ok(Program(
            bytes
                .chunks_exact(8)
                .map(|c| Insn {
                    code: u16::from_le_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;
