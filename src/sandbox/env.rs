//! The environment merge `run` and `exec` share, with docker's rules: entries apply in
//! order over a base (the image's, or the running container's), a later entry for a name
//! replaces the earlier value where it stands, `NAME=` sets an empty value, and `NAME`
//! alone takes nook's own value or, when nook has none, unsets the variable (docker's CLI
//! passes the bare name and the daemon removes it from the image's environment). An entry
//! without a name (`""`, `=x`) is an error, as in docker's CLI.

/// An entry that names no variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable {0:?}: expected NAME=VALUE or NAME")]
pub struct EnvError(pub String);

/// Sets `name` to `value`: in place when it is set already, else at the end.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(e) => e.1 = value,
        None => env.push((name.to_owned(), value)),
    }
}

/// Applies `entries` in order to `env`. `host` reads nook's environment (for `NAME`).
pub fn merge<'a>(
    env: &mut Vec<(String, String)>,
    entries: impl IntoIterator<Item = &'a str>,
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<(), EnvError> {
    for entry in entries {
        match entry.split_once('=') {
            Some(("", _)) => return Err(EnvError(entry.to_owned())),
            Some((name, value)) => set(env, name, value.to_owned()),
            None if entry.is_empty() => return Err(EnvError(entry.to_owned())),
            None => match host(entry) {
                Some(value) => set(env, entry, value),
                None => env.retain(|(k, _)| k != entry),
            },
        }
    }
    Ok(())
}

/// Expands podman's `-e PREFIX*`: every variable of `host` whose name starts with PREFIX, as
/// `NAME=VALUE` entries sorted by name, in the entry's place; other entries pass unchanged.
/// MPI ranks started by a launcher take its environment this way
/// (`-e 'SLURM_*' -e 'PMI*' -e 'OMPI_*'`).
pub fn expand_prefixes(
    entries: &[String],
    host: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let is_prefix = |e: &str| !e.contains('=') && e.ends_with('*');
    if !entries.iter().any(|e| is_prefix(e)) {
        return entries.to_vec();
    }
    let host: std::collections::BTreeMap<String, String> = host.into_iter().collect();
    let mut out = Vec::new();
    for e in entries {
        match e.strip_suffix('*').filter(|_| is_prefix(e)) {
            Some(prefix) => out.extend(
                host.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| format!("{k}={v}")),
            ),
            None => out.push(e.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn host(name: &str) -> Option<String> {
        (name == "FROM_HOST").then(|| "host".to_owned())
    }

    #[test]
    fn later_wins_in_place_and_new_names_append() {
        let mut env = pairs(&[("PATH", "/bin"), ("A", "image"), ("B", "image")]);
        merge(&mut env, ["A=1", "C=3", "A=2"], &host).unwrap();
        assert_eq!(
            env,
            pairs(&[("PATH", "/bin"), ("A", "2"), ("B", "image"), ("C", "3")])
        );
    }

    #[test]
    fn name_alone_takes_the_host_value_or_unsets() {
        let mut env = pairs(&[("UNSET_ON_HOST", "image"), ("KEPT", "image")]);
        merge(&mut env, ["FROM_HOST", "UNSET_ON_HOST", "NOWHERE"], &host).unwrap();
        assert_eq!(env, pairs(&[("KEPT", "image"), ("FROM_HOST", "host")]));
    }

    #[test]
    fn name_with_equals_sets_empty() {
        let mut env = pairs(&[("A", "image")]);
        merge(&mut env, ["A=", "B="], &host).unwrap();
        assert_eq!(env, pairs(&[("A", ""), ("B", "")]));
    }

    #[test]
    fn values_keep_their_equals_signs() {
        let mut env = Vec::new();
        merge(&mut env, ["A=b=c"], &host).unwrap();
        assert_eq!(env, pairs(&[("A", "b=c")]));
    }

    #[test]
    fn entries_without_a_name_are_errors() {
        for bad in ["", "=x", "="] {
            let mut env = Vec::new();
            let e = merge(&mut env, [bad], &host).unwrap_err();
            assert_eq!(e.0, bad);
        }
    }

    #[test]
    fn a_prefix_entry_takes_every_matching_host_variable_in_its_place() {
        let host = pairs(&[
            ("SLURM_PROCID", "3"),
            ("PMIX_RANK", "3"),
            ("SLURM_JOB_ID", "7"),
            ("PMI_FD", "5"),
            ("HOME", "/h"),
        ]);
        let entries: Vec<String> = ["A=1", "SLURM_*", "B", "PMI*", "NONE_*"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            expand_prefixes(&entries, host),
            [
                "A=1",
                "SLURM_JOB_ID=7",
                "SLURM_PROCID=3",
                "B",
                "PMIX_RANK=3",
                "PMI_FD=5"
            ]
        );
        // A value that ends with '*' is a value.
        let literal = vec!["A=b*".to_owned()];
        assert_eq!(expand_prefixes(&literal, pairs(&[("A", "x")])), literal);
    }
}
