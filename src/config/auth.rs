//! Registry credentials in docker's and podman's files.
//!
//! Read in podman's order: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, then docker's `$DOCKER_CONFIG/config.json`
//! (`~/.docker/config.json`). In each file a `credHelpers` entry for the host wins, then
//! `credsStore`, then the `auths` entry (`auth` = base64 `user:password`, or `identitytoken`).
//! `nook login` writes docker's format to `$REGISTRY_AUTH_FILE` if set, else docker's file,
//! through the configured helper when there is one; unknown fields are kept.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{ConfigError, config_home, home_dir};
use crate::secret::{Credential, Secret};

/// Docker Hub's key in docker's `auths`, and what its helpers are asked for.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// `host` as docker's files key it: `docker.io` for every Hub alias, no scheme or path.
pub fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    if HUB_ALIASES.contains(&k.as_str()) {
        "docker.io".to_owned()
    } else {
        k
    }
}

/// The files to read, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(rt).join("containers/auth.json"));
    }
    if let Some(c) = config_home() {
        out.push(c.join("containers/auth.json"));
    }
    out.push(docker_config_path());
    out
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => home_dir()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".docker/config.json"),
    }
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, ConfigError> {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(ConfigError::Parse {
                path: path.display().to_string(),
                message: "not a JSON object".into(),
            }),
            Err(e) => Err(ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The helper configured for `host` in a parsed file, if any.
fn helper_for(file: &Map<String, Value>, host: &str) -> Option<String> {
    let per_host = file
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_key(k) == host)
                .and_then(|(_, v)| v.as_str())
                .map(str::to_owned)
        });
    per_host
        .or_else(|| {
            file.get("credsStore")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|h| !h.is_empty())
}

/// Decodes one `auths` entry.
pub fn decode_entry(entry: &Value) -> Option<Credential> {
    if let Some(t) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential::IdentityToken(Secret::new(t)));
    }
    if let Some(a) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Credential::Basic {
            username: u.to_owned(),
            password: Secret::new(p),
        });
    }
    let u = entry.get("username").and_then(Value::as_str)?;
    let p = entry.get("password").and_then(Value::as_str)?;
    Some(Credential::Basic {
        username: u.to_owned(),
        password: Secret::new(p),
    })
}

/// Finds credentials for `host` in one parsed file.
pub fn lookup_in(file: &Map<String, Value>, host: &str) -> Result<Option<Credential>, ConfigError> {
    let host = normalize_key(host);
    if let Some(helper) = helper_for(file, &host) {
        match helper_get(&helper, &host) {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let auths = file.get("auths").and_then(Value::as_object);
    Ok(auths
        .and_then(|a| a.iter().find(|(k, _)| normalize_key(k) == host))
        .and_then(|(_, v)| decode_entry(v)))
}

/// The variable through which `nook serve` hands a client's `X-Registry-Auth` to the nook it
/// re-executes (never its arguments, never the user's files): docker's JSON, `{"username",
/// "password", "serveraddress"}` or `{"identitytoken", "serveraddress"}`.
pub const AUTH_ENV: &str = "NOOK_REGISTRY_AUTH";

/// The credentials of [`AUTH_ENV`], when they are for `host` (or name no server).
fn from_env(host: &str) -> Option<Credential> {
    let raw = std::env::var(AUTH_ENV).ok()?;
    from_auth_json(&raw, host)
}

/// docker's `X-Registry-Auth` JSON → the credentials it gives for `host`, if any.
pub fn from_auth_json(raw: &str, host: &str) -> Option<Credential> {
    let v: Value = serde_json::from_str(raw).ok()?;
    let server = v.get("serveraddress").and_then(Value::as_str).unwrap_or("");
    if !server.is_empty() && normalize_key(server) != normalize_key(host) {
        return None;
    }
    decode_entry(&v).filter(|c| match c {
        Credential::Basic { username, password } => !username.is_empty() || !password.is_empty(),
        Credential::IdentityToken(t) => !t.is_empty(),
    })
}

/// Credentials for `host`: a client's through `nook serve` ([`AUTH_ENV`]), else from the
/// first file that has them.
pub fn lookup(host: &str) -> Result<Option<Credential>, ConfigError> {
    if let Some(c) = from_env(host) {
        return Ok(Some(c));
    }
    for path in auth_files() {
        let Some(file) = read_json(&path)? else {
            continue;
        };
        if let Some(s) = lookup_in(&file, host)? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

fn server_url(host: &str) -> String {
    if host == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

fn run_helper(
    helper: &str,
    verb: &str,
    input: &str,
) -> Result<(bool, String, String), ConfigError> {
    let name = format!("docker-credential-{helper}");
    let fail = |message: String| ConfigError::Helper {
        helper: helper.to_owned(),
        message,
    };
    let mut child = Command::new(&name)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {name}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// `docker-credential-HELPER get`.
fn helper_get(helper: &str, host: &str) -> Result<Option<Credential>, ConfigError> {
    let (ok, stdout, stderr) = run_helper(helper, "get", &server_url(host))?;
    if !ok {
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        return Err(ConfigError::Helper {
            helper: helper.to_owned(),
            message: format!("{} {}", stdout.trim(), stderr),
        });
    }
    let v: Value = serde_json::from_str(&stdout).map_err(|e| ConfigError::Helper {
        helper: helper.to_owned(),
        message: format!("bad answer: {e}"),
    })?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credential::IdentityToken(Secret::new(secret))
    } else {
        Credential::Basic {
            username: user.to_owned(),
            password: Secret::new(secret),
        }
    }))
}

/// The file `nook login` writes.
pub fn login_file() -> PathBuf {
    match std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => docker_config_path(),
    }
}

fn write_json(path: &Path, file: &Map<String, Value>) -> Result<(), ConfigError> {
    let err = |source| ConfigError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let text = serde_json::to_vec_pretty(&Value::Object(file.clone())).unwrap_or_default();
    f.write_all(&text).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Saves credentials for `host`; returns where they went.
pub fn save(host: &str, username: &str, password: &Secret) -> Result<String, ConfigError> {
    let host = normalize_key(host);
    let path = login_file();
    let mut file = read_json(&path)?.unwrap_or_default();
    if let Some(helper) = helper_for(&file, &host) {
        let input = serde_json::json!({"ServerURL": server_url(&host), "Username": username, "Secret": password.expose()});
        let (ok, stdout, stderr) = run_helper(&helper, "store", &input.to_string())?;
        if !ok {
            return Err(ConfigError::Helper {
                helper,
                message: format!("{} {}", stdout.trim(), stderr),
            });
        }
        return Ok(format!("docker-credential-{helper}"));
    }
    let auths = file
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Some(a) = auths.as_object_mut() {
        a.retain(|k, _| normalize_key(k) != host);
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()));
        a.insert(server_url(&host), serde_json::json!({ "auth": encoded }));
    }
    write_json(&path, &file)?;
    Ok(path.display().to_string())
}

/// Removes saved credentials for `host`; returns whether there were any.
pub fn erase(host: &str) -> Result<bool, ConfigError> {
    let host = normalize_key(host);
    let path = login_file();
    let Some(mut file) = read_json(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(helper) = helper_for(&file, &host) {
        let (ok, _, _) = run_helper(&helper, "erase", &server_url(&host))?;
        removed |= ok;
    }
    if let Some(a) = file.get_mut("auths").and_then(Value::as_object_mut) {
        let before = a.len();
        a.retain(|k, _| normalize_key(k) != host);
        removed |= a.len() != before;
    }
    if removed {
        write_json(&path, &file)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Map<String, Value> {
        match serde_json::from_str(s).unwrap() {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("docker.io"), "docker.io");
        assert_eq!(normalize_key("http://Localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalize_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn auths_entries() {
        let f = parse(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "ghcr.io":{"identitytoken":"tok"},
                "localhost:5000":{"username":"u","password":"p"}}}"#,
        );
        assert_eq!(
            lookup_in(&f, "docker.io").unwrap(),
            Some(Credential::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            lookup_in(&f, "registry-1.docker.io").unwrap(),
            lookup_in(&f, "docker.io").unwrap()
        );
        assert_eq!(
            lookup_in(&f, "ghcr.io").unwrap(),
            Some(Credential::IdentityToken("tok".into()))
        );
        assert_eq!(
            lookup_in(&f, "localhost:5000").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(lookup_in(&f, "quay.io").unwrap(), None);
    }

    #[test]
    fn broken_auth_is_ignored_not_fatal() {
        let f = parse(r#"{"auths":{"x.io":{"auth":"!!!"}}}"#);
        assert_eq!(lookup_in(&f, "x.io").unwrap(), None);
    }

    #[test]
    fn missing_helper_falls_back_to_auths() {
        let f = parse(r#"{"credsStore":"nook-test-absent","auths":{"x.io":{"auth":"dTpw"}}}"#);
        assert_eq!(
            lookup_in(&f, "x.io").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
    }

    #[test]
    fn helper_is_chosen_per_host() {
        let f = parse(r#"{"credHelpers":{"ghcr.io":"gh"},"credsStore":"desktop"}"#);
        assert_eq!(helper_for(&f, "ghcr.io").as_deref(), Some("gh"));
        assert_eq!(helper_for(&f, "docker.io").as_deref(), Some("desktop"));
    }
}
