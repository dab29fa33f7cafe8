//! Build arguments and their scopes, as docker has them: an ARG before the first FROM is
//! global (usable in FROM lines) and reaches a stage only when the stage declares it again;
//! `--build-arg` overrides a declared default; ENV beats ARG; ARG values reach RUN as
//! environment but never the image's Env. docker's predefined proxy args need no ARG, and
//! the platform args (`TARGETPLATFORM`, `BUILDARCH` …) are global ones.

use std::collections::{BTreeMap, BTreeSet};

use crate::registry::platform::Platform;

/// The proxy arguments usable without an ARG (and left out of the history).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The value of `name` in a `K=V` list.
pub fn env_get(env: &[String], name: &str) -> Option<String> {
    env.iter().rev().find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_owned())
    })
}

/// Sets `name` in a `K=V` list, in place when it is there.
pub fn env_set(env: &mut Vec<String>, name: &str, value: &str) {
    let line = format!("{name}={value}");
    match env
        .iter_mut()
        .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name)
    {
        Some(slot) => *slot = line,
        None => env.push(line),
    }
}

/// docker's automatic platform args for the target and the build machine.
pub fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (prefix, p) in [("TARGET", target.clone()), ("BUILD", Platform::host())] {
        let variant = p.variant.clone().unwrap_or_default();
        let full = match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        };
        out.insert(format!("{prefix}PLATFORM"), full);
        out.insert(format!("{prefix}OS"), p.os.clone());
        out.insert(format!("{prefix}ARCH"), p.architecture.clone());
        out.insert(format!("{prefix}VARIANT"), variant);
    }
    out
}

/// The arguments of one scope (the global one, or a stage's).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Declared names with their value (`None`: declared without a value).
    pub args: BTreeMap<String, Option<String>>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it; else it clears the base's).
    pub cmd_set: bool,
}

impl Scope {
    /// Declares `name`: the `--build-arg` wins, then `default` (already expanded), then — in a
    /// stage — the global value of the same name.
    pub fn declare(
        &mut self,
        name: &str,
        default: Option<String>,
        build_args: &BTreeMap<String, String>,
        global: Option<&Scope>,
        used: &mut BTreeSet<String>,
    ) {
        let value = if let Some(v) = build_args.get(name) {
            used.insert(name.to_owned());
            Some(v.clone())
        } else if default.is_some() {
            default
        } else {
            global.and_then(|g| g.args.get(name).cloned().flatten())
        };
        self.args.insert(name.to_owned(), value);
    }

    /// A variable as a step's expansion sees it: ENV first, then this scope's ARGs.
    pub fn lookup(&self, env: &[String], name: &str) -> Option<String> {
        env_get(env, name).or_else(|| self.args.get(name).cloned().flatten())
    }

    /// The `K=V` pairs a RUN gets beyond the image's Env: declared args with a value that ENV
    /// does not set, and proxy args from `--build-arg`.
    pub fn run_env(
        &self,
        env: &[String],
        build_args: &BTreeMap<String, String>,
        used: &mut BTreeSet<String>,
    ) -> Vec<String> {
        let mut out: Vec<String> = self
            .args
            .iter()
            .filter(|(k, _)| env_get(env, k).is_none())
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        for p in PROXY_ARGS {
            if let Some(v) = build_args.get(p)
                && !self.args.contains_key(p)
            {
                used.insert(p.to_owned());
                out.push(format!("{p}={v}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_sees_a_global_arg_only_when_declared_again() {
        let mut used = BTreeSet::new();
        let ba: BTreeMap<String, String> = [("V".to_string(), "cli".to_string())].into();
        let mut global = Scope::default();
        global.declare("G", Some("g".into()), &ba, None, &mut used);
        global.declare("V", Some("d".into()), &ba, None, &mut used);
        assert_eq!(global.args["V"].as_deref(), Some("cli"));
        let mut stage = Scope::default();
        assert_eq!(stage.lookup(&[], "G"), None);
        stage.declare("G", None, &ba, Some(&global), &mut used);
        assert_eq!(stage.lookup(&[], "G").as_deref(), Some("g"));
        let env = vec!["G=fromenv".to_string()];
        assert_eq!(
            stage.lookup(&env, "G").as_deref(),
            Some("fromenv"),
            "ENV beats ARG"
        );
        assert!(stage.run_env(&env, &ba, &mut used).is_empty());
        assert_eq!(stage.run_env(&[], &ba, &mut used), vec!["G=g".to_string()]);
        assert!(used.contains("V"));
    }

    #[test]
    fn proxies_need_no_arg_and_env_set_replaces() {
        let mut used = BTreeSet::new();
        let ba: BTreeMap<String, String> =
            [("http_proxy".to_string(), "http://p".to_string())].into();
        let s = Scope::default();
        assert_eq!(
            s.run_env(&[], &ba, &mut used),
            vec!["http_proxy=http://p".to_string()]
        );
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        env_set(&mut env, "A", "3");
        env_set(&mut env, "C", "x=y");
        assert_eq!(env, vec!["A=3", "B=2", "C=x=y"]);
        assert_eq!(env_get(&env, "C").as_deref(), Some("x=y"));
        let p = platform_args(&Platform::host());
        assert!(p["TARGETPLATFORM"].starts_with("linux/"));
    }
}
