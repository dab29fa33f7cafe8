//! Capabilities: docker's default set, `--cap-add` and `--cap-drop`.
//!
//! Inside the container's user namespace, root keeps exactly the resolved set as bounding,
//! permitted and effective capabilities; inheritable and ambient stay empty, as in docker.
//! A non-root user starts with empty effective and permitted sets (the kernel's rules on
//! `execve`) under the same bounding set.

use std::collections::HashSet;

pub use caps::Capability;

/// Docker's default capability set.
pub const DOCKER_DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Why a capability name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}: use names such as NET_ADMIN or CAP_SYS_PTRACE, or ALL")]
pub struct CapError(pub String);

fn parse(name: &str) -> Result<Option<Capability>, CapError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<Capability>()
        .map(Some)
        .map_err(|_| CapError(name.to_owned()))
}

/// Docker's default set with `add` and `drop` applied (`ALL` works in both; drop wins over
/// the default set, add wins over a drop of `ALL`, as docker resolves them).
pub fn resolve(add: &[String], drop: &[String]) -> Result<Vec<Capability>, CapError> {
    let mut set: HashSet<Capability> = DOCKER_DEFAULT.iter().copied().collect();
    for d in drop {
        match parse(d)? {
            None => set.clear(),
            Some(c) => {
                set.remove(&c);
            }
        }
    }
    for a in add {
        match parse(a)? {
            None => set.extend(caps::all()),
            Some(c) => {
                set.insert(c);
            }
        }
    }
    let mut out: Vec<Capability> = set.into_iter().collect();
    out.sort_by_key(|c| c.index());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_has_docker_fourteen() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(c.len(), 14);
        assert!(c.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!c.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!c.contains(&Capability::CAP_SYS_PTRACE));
    }

    #[test]
    fn add_and_drop_by_any_spelling() {
        let c = resolve(
            &["sys_ptrace".into(), "CAP_NET_ADMIN".into()],
            &["chown".into(), "Cap_Kill".into()],
        )
        .unwrap();
        assert!(c.contains(&Capability::CAP_SYS_PTRACE) && c.contains(&Capability::CAP_NET_ADMIN));
        assert!(!c.contains(&Capability::CAP_CHOWN) && !c.contains(&Capability::CAP_KILL));
    }

    #[test]
    fn all_in_either_direction() {
        assert!(resolve(&[], &["ALL".into()]).unwrap().is_empty());
        assert_eq!(
            resolve(&["NET_ADMIN".into()], &["all".into()]).unwrap(),
            vec![Capability::CAP_NET_ADMIN]
        );
        assert!(
            resolve(&["ALL".into()], &[])
                .unwrap()
                .contains(&Capability::CAP_SYS_ADMIN)
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            resolve(&["FLY".into()], &[]).unwrap_err(),
            CapError("FLY".into())
        );
    }
}
