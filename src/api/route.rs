//! Method and path → [`Route`]: a pure function, so every endpoint's addressing is tested
//! without a socket. Also the query string ([`Query`]) with docker's boolean and `filters`
//! conventions.

use super::error::ApiError;

/// The API version nook speaks, and the oldest prefix it accepts.
pub const API_VERSION: &str = "1.50";
pub const MIN_API_VERSION: &str = "1.24";
const MIN_MINOR: u32 = 24;
const MAX_MINOR: u32 = 50;

/// What a request asks for. Names are percent-decoded; image names may hold slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    ImageList,
    ImageCreate,
    ImageInspect(String),
    ImageHistory(String),
    ImageTag(String),
    ImageDelete(String),
    ContainerList,
    ContainerCreate,
    ContainerInspect(String),
    ContainerStart(String),
    ContainerStop(String),
    ContainerKill(String),
    ContainerRestart(String),
    ContainerWait(String),
    ContainerAttach(String),
    ExecCreate(String),
    ExecStart(String),
    ExecResize(String),
    ExecInspect(String),
    ContainerLogs(String),
    ContainerDelete(String),
    VolumeList,
    VolumeCreate,
    VolumeInspect(String),
    VolumeDelete(String),
    NetworkList,
    NetworkInspect(String),
    NetworkPrune,
    /// create, connect, disconnect and remove: nook has no user-defined networks.
    NetworkChange(&'static str),
    SystemDf,
    ContainerPrune,
    ImagePrune,
    VolumePrune,
    Events,
    Build,
    ArchiveGet(String),
    ArchivePut(String),
    ImagePush(String),
    /// `GET /images/{name}/get` and `GET /images/get?names=`: the names are in the query.
    ImageSave(Option<String>),
    ImageLoad,
    ImageSearch,
    Auth,
    ContainerExport(String),
    ContainerTop(String),
    ContainerPause(String),
    ContainerUnpause(String),
    ContainerRename(String),
    ContainerChanges(String),
    ContainerResize(String),
    /// A docker endpoint a later slice brings (answered 501, naming it).
    NotYet(&'static str),
}

/// Strips an optional `/v1.NN` prefix; a version outside 1.24..=1.50 is docker's 400.
pub fn strip_version(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((major, minor)) = ver.split_once('.') else {
        return Ok(path);
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Ok(path);
    };
    if major < 1 || (major == 1 && minor < MIN_MINOR) {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    if major > 1 || minor > MAX_MINOR {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    Ok(tail)
}

/// The route for `method` and the (unversioned, undecoded) `path`.
pub fn route(method: &str, raw_path: &str) -> Result<Route, ApiError> {
    let path = strip_version(raw_path)?;
    let path = percent_decode(path);
    let m = if method == "HEAD" { "GET" } else { method };
    let found = match path.strip_prefix('/').unwrap_or(&path) {
        "_ping" if m == "GET" => Some(Route::Ping),
        "version" if m == "GET" => Some(Route::Version),
        "info" if m == "GET" => Some(Route::Info),
        p if p.starts_with("images/") => image_route(m, &p["images/".len()..]),
        p if p.starts_with("containers/") => container_route(m, &p["containers/".len()..]),
        p if p == "volumes" || p.starts_with("volumes/") => volume_route(m, p),
        p if p.starts_with("exec/") => exec_route(m, &p["exec/".len()..]),
        p if p == "networks" || p.starts_with("networks/") => network_route(m, p),
        "system/df" if m == "GET" => Some(Route::SystemDf),
        "events" if m == "GET" => Some(Route::Events),
        "build" if m == "POST" => Some(Route::Build),
        "auth" if m == "POST" => Some(Route::Auth),
        p => later(p),
    };
    found.ok_or(ApiError::PageNotFound)
}

fn image_route(m: &str, p: &str) -> Option<Route> {
    let owned = |s: &str| s.to_owned();
    Some(match (m, p) {
        ("GET", "json") => Route::ImageList,
        ("POST", "create") => Route::ImageCreate,
        ("POST", "prune") => Route::ImagePrune,
        ("POST", "load") => Route::ImageLoad,
        ("GET", "get") => Route::ImageSave(None),
        ("GET", "search") => Route::ImageSearch,
        ("POST", p) if p.ends_with("/push") => Route::ImagePush(owned(p.strip_suffix("/push")?)),
        ("GET", p) if p.ends_with("/get") => Route::ImageSave(Some(owned(p.strip_suffix("/get")?))),
        ("GET", p) if p.ends_with("/json") => Route::ImageInspect(owned(p.strip_suffix("/json")?)),
        ("GET", p) if p.ends_with("/history") => {
            Route::ImageHistory(owned(p.strip_suffix("/history")?))
        }
        ("POST", p) if p.ends_with("/tag") => Route::ImageTag(owned(p.strip_suffix("/tag")?)),
        ("DELETE", p) if !p.is_empty() => Route::ImageDelete(owned(p)),
        _ => return None,
    })
}

fn container_route(m: &str, p: &str) -> Option<Route> {
    match (m, p) {
        ("GET", "json") => return Some(Route::ContainerList),
        ("POST", "create") => return Some(Route::ContainerCreate),
        ("POST", "prune") => return Some(Route::ContainerPrune),
        _ => {}
    }
    let (id, action) = p.split_once('/').unwrap_or((p, ""));
    if id.is_empty() || action.contains('/') {
        return None;
    }
    let id = id.to_owned();
    Some(match (m, action) {
        ("GET", "json") => Route::ContainerInspect(id),
        ("POST", "start") => Route::ContainerStart(id),
        ("POST", "stop") => Route::ContainerStop(id),
        ("POST", "kill") => Route::ContainerKill(id),
        ("POST", "restart") => Route::ContainerRestart(id),
        ("POST", "wait") => Route::ContainerWait(id),
        ("GET", "logs") => Route::ContainerLogs(id),
        ("DELETE", "") => Route::ContainerDelete(id),
        ("POST", "attach") => Route::ContainerAttach(id),
        ("POST", "resize") => Route::ContainerResize(id),
        ("POST", "exec") => Route::ExecCreate(id),
        ("GET", "archive") => Route::ArchiveGet(id),
        ("PUT", "archive") => Route::ArchivePut(id),
        ("GET", "export") => Route::ContainerExport(id),
        ("GET", "top") => Route::ContainerTop(id),
        ("POST", "pause") => Route::ContainerPause(id),
        ("POST", "unpause") => Route::ContainerUnpause(id),
        ("POST", "rename") => Route::ContainerRename(id),
        ("GET", "changes") => Route::ContainerChanges(id),
        (_, "stats" | "update") => Route::NotYet("container stats and update"),
        _ => return None,
    })
}

fn exec_route(m: &str, p: &str) -> Option<Route> {
    let (id, action) = p.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    let id = id.to_owned();
    Some(match (m, action) {
        ("POST", "start") => Route::ExecStart(id),
        ("POST", "resize") => Route::ExecResize(id),
        ("GET", "json") => Route::ExecInspect(id),
        _ => return None,
    })
}

fn volume_route(m: &str, p: &str) -> Option<Route> {
    Some(match (m, p) {
        ("GET", "volumes") => Route::VolumeList,
        ("POST", "volumes/create") => Route::VolumeCreate,
        ("POST", "volumes/prune") => Route::VolumePrune,
        ("GET", p) => Route::VolumeInspect(p.strip_prefix("volumes/")?.to_owned()),
        ("DELETE", p) => Route::VolumeDelete(p.strip_prefix("volumes/")?.to_owned()),
        _ => return None,
    })
}

fn network_route(m: &str, p: &str) -> Option<Route> {
    let rest = p.strip_prefix("networks/").unwrap_or("");
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    Some(match (m, p, action) {
        ("GET", "networks", _) => Route::NetworkList,
        ("POST", "networks/create", _) => Route::NetworkChange("network create"),
        ("POST", "networks/prune", _) => Route::NetworkPrune,
        (_, _, _) if id.is_empty() => return None,
        ("GET", _, "") => Route::NetworkInspect(id.to_owned()),
        ("DELETE", _, "") => Route::NetworkChange("network rm"),
        ("POST", _, "connect") => Route::NetworkChange("network connect"),
        ("POST", _, "disconnect") => Route::NetworkChange("network disconnect"),
        _ => return None,
    })
}

/// Endpoints of docker's API that later slices of issue 14 bring.
fn later(p: &str) -> Option<Route> {
    let first = p.split('/').next().unwrap_or("");
    Some(Route::NotYet(match first {
        "build" => "build cache",
        "commit" => "commit",
        "session" => "build sessions",
        "swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs" | "plugins" => {
            "swarm and plugins"
        }
        _ => return None,
    }))
}

/// Whether a request's body is an archive to spool to a file rather than hold in memory: a
/// build context, the tar `docker cp` sends, or an image archive (`docker load`).
pub fn spools_body(method: &str, raw_path: &str) -> bool {
    let Ok(path) = strip_version(raw_path) else {
        return false;
    };
    let path = percent_decode(path);
    let path = path.trim_end_matches('/');
    match method {
        "POST" => path == "/build" || path == "/images/load",
        "PUT" => path.starts_with("/containers/") && path.ends_with("/archive"),
        _ => false,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); bad escapes stay as they are.
fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// A request's query string, decoded.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k, true), decode(v, true))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key (`t=a&t=b`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// docker's boolean: absent, empty, `0`, `no`, `false` and `none` are false.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        })
    }

    /// A number, or a 400 naming the parameter.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid value for {key}: {v:?} is not a number"))
                })
            })
            .transpose()
    }

    /// `filters`: `{"key":["v",...]}` or the older `{"key":{"v":true}}`, as (key, value) pairs.
    pub fn filters(&self) -> Result<Vec<(String, String)>, ApiError> {
        let Some(raw) = self.get("filters").filter(|s| !s.is_empty()) else {
            return Ok(Vec::new());
        };
        let bad = |e: String| ApiError::BadRequest(format!("invalid filters: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let mut out = Vec::new();
        for (k, vals) in obj {
            match vals {
                serde_json::Value::Array(a) => {
                    for x in a {
                        let s = x
                            .as_str()
                            .ok_or_else(|| bad(format!("{k}: not a string")))?;
                        out.push((k.clone(), s.to_owned()));
                    }
                }
                serde_json::Value::Object(m) => {
                    out.extend(m.keys().map(|x| (k.clone(), x.clone())));
                }
                _ => return Err(bad(format!("{k}: expected a list"))),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_range_are_stripped() {
        assert_eq!(
            strip_version("/v1.50/containers/json").unwrap(),
            "/containers/json"
        );
        assert_eq!(strip_version("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(strip_version("/_ping").unwrap(), "/_ping");
        assert_eq!(strip_version("/volumes").unwrap(), "/volumes");
        let old = strip_version("/v1.23/info").unwrap_err();
        assert!(old.to_string().contains("too old"), "{old}");
        assert_eq!(old.status(), 400);
        assert!(
            strip_version("/v1.51/info")
                .unwrap_err()
                .to_string()
                .contains("too new")
        );
        assert!(strip_version("/v2.0/info").is_err());
    }

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(route("HEAD", "/_ping").unwrap(), Route::Ping);
        assert_eq!(route("GET", "/v1.50/version").unwrap(), Route::Version);
        assert_eq!(
            route("GET", "/v1.50/images/localhost:5000/bb:latest/json").unwrap(),
            Route::ImageInspect("localhost:5000/bb:latest".into())
        );
        assert_eq!(
            route("DELETE", "/images/a%2Fb").unwrap(),
            Route::ImageDelete("a/b".into())
        );
        assert_eq!(route("GET", "/images/json").unwrap(), Route::ImageList);
        assert_eq!(
            route("POST", "/containers/abc/stop").unwrap(),
            Route::ContainerStop("abc".into())
        );
        assert_eq!(
            route("DELETE", "/containers/abc").unwrap(),
            Route::ContainerDelete("abc".into())
        );
        assert_eq!(
            route("GET", "/volumes/v1").unwrap(),
            Route::VolumeInspect("v1".into())
        );
        assert_eq!(
            route("POST", "/v1.50/containers/abc/attach").unwrap(),
            Route::ContainerAttach("abc".into())
        );
        assert_eq!(route("POST", "/v1.50/build").unwrap(), Route::Build);
        assert_eq!(
            route("POST", "/v1.50/containers/abc/resize").unwrap(),
            Route::ContainerResize("abc".into())
        );
        assert!(spools_body("POST", "/v1.50/build"));
        assert!(spools_body("PUT", "/containers/abc/archive"));
        assert!(!spools_body("POST", "/containers/create"));
        assert_eq!(Query::parse("t=a&t=b&x=1").all("t"), vec!["a", "b"]);
        assert_eq!(
            route("HEAD", "/v1.50/containers/c/archive").unwrap(),
            Route::ArchiveGet("c".into())
        );
        assert_eq!(
            route("PUT", "/containers/c/archive").unwrap(),
            Route::ArchivePut("c".into())
        );
        assert_eq!(
            route("POST", "/v1.50/containers/abc/exec").unwrap(),
            Route::ExecCreate("abc".into())
        );
        assert_eq!(
            route("POST", "/exec/e1/start").unwrap(),
            Route::ExecStart("e1".into())
        );
        assert_eq!(
            route("GET", "/v1.50/exec/e1/json").unwrap(),
            Route::ExecInspect("e1".into())
        );
        assert_eq!(route("GET", "/exec/e1/start").unwrap_err().status(), 404);
    }

    #[test]
    fn networks_df_and_prune_routes() {
        assert_eq!(route("GET", "/v1.50/networks").unwrap(), Route::NetworkList);
        assert_eq!(
            route("GET", "/networks/bridge").unwrap(),
            Route::NetworkInspect("bridge".into())
        );
        for (m, p) in [
            ("POST", "/networks/create"),
            ("DELETE", "/networks/n1"),
            ("POST", "/networks/n1/connect"),
            ("POST", "/networks/n1/disconnect"),
        ] {
            assert!(
                matches!(route(m, p).unwrap(), Route::NetworkChange(_)),
                "{p}"
            );
        }
        assert_eq!(route("GET", "/system/df").unwrap(), Route::SystemDf);
        assert_eq!(
            route("POST", "/containers/prune").unwrap(),
            Route::ContainerPrune
        );
        assert_eq!(route("POST", "/images/prune").unwrap(), Route::ImagePrune);
        assert_eq!(route("POST", "/volumes/prune").unwrap(), Route::VolumePrune);
        assert_eq!(route("GET", "/v1.50/events").unwrap(), Route::Events);
        assert_eq!(route("GET", "/networks/a/b/c").unwrap_err().status(), 404);
    }

    #[test]
    fn image_transfer_and_container_object_routes() {
        assert_eq!(
            route("POST", "/v1.50/images/127.0.0.1:5000/bb/push").unwrap(),
            Route::ImagePush("127.0.0.1:5000/bb".into())
        );
        assert_eq!(
            route("GET", "/images/bb:1/get").unwrap(),
            Route::ImageSave(Some("bb:1".into()))
        );
        assert_eq!(route("GET", "/images/get").unwrap(), Route::ImageSave(None));
        assert_eq!(route("POST", "/images/load").unwrap(), Route::ImageLoad);
        assert_eq!(route("GET", "/images/search").unwrap(), Route::ImageSearch);
        assert_eq!(route("POST", "/v1.50/auth").unwrap(), Route::Auth);
        assert!(spools_body("POST", "/v1.50/images/load"));
        for (m, action, want) in [
            ("GET", "export", Route::ContainerExport("c".into())),
            ("GET", "top", Route::ContainerTop("c".into())),
            ("POST", "pause", Route::ContainerPause("c".into())),
            ("POST", "unpause", Route::ContainerUnpause("c".into())),
            ("POST", "rename", Route::ContainerRename("c".into())),
            ("GET", "changes", Route::ContainerChanges("c".into())),
        ] {
            assert_eq!(route(m, &format!("/containers/c/{action}")).unwrap(), want);
        }
    }

    #[test]
    fn unknown_paths_are_page_not_found() {
        for (m, p) in [
            ("GET", "/nothing"),
            ("POST", "/version"),
            ("GET", "/containers/a/b/c"),
            ("PUT", "/containers/abc/start"),
        ] {
            let e = route(m, p).unwrap_err();
            assert_eq!(e.status(), 404, "{m} {p}");
            assert_eq!(e.to_string(), "page not found");
        }
    }

    #[test]
    fn query_decoding_flags_and_filters() {
        let q = Query::parse(
            "all=1&size=0&name=a%20b+c&filters=%7B%22status%22%3A%5B%22running%22%5D%7D",
        );
        assert!(q.flag("all"));
        assert!(!q.flag("size"));
        assert!(!q.flag("missing"));
        assert_eq!(q.get("name"), Some("a b c"));
        assert_eq!(
            q.filters().unwrap(),
            vec![("status".to_owned(), "running".to_owned())]
        );
        let old = Query::parse("filters=%7B%22dangling%22%3A%7B%22true%22%3Atrue%7D%7D");
        assert_eq!(
            old.filters().unwrap()[0],
            ("dangling".into(), "true".into())
        );
        assert_eq!(
            Query::parse("filters=nope").filters().unwrap_err().status(),
            400
        );
        assert_eq!(
            Query::parse("t=x").number::<u64>("t").unwrap_err().status(),
            400
        );
        assert_eq!(Query::parse("t=5").number::<u64>("t").unwrap(), Some(5));
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
