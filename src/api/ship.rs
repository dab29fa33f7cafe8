//! Images to and from registries and archives: `docker push`, `login`, `save`, `load` and
//! `search`, each through re-executed nook (`nook push`, `nook login --verify-only`, `nook
//! save`, `nook load`). A client's registry credentials (`X-Registry-Auth`) reach the child in
//! an environment variable ([`crate::config::auth::AUTH_ENV`]): never in its arguments, where
//! other users could read them, and never in the user's auth files.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Engine;
use super::error::ApiError;
use super::http::{Request, Response};
use super::reexec;
use super::route::Query;
use crate::config::auth::AUTH_ENV;

/// The JSON of `X-Registry-Auth` (base64url, padded or not), when it holds an object.
pub fn registry_auth(req: &Request) -> Option<String> {
    let raw = req.header("x-registry-auth")?.trim();
    let engines = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(raw).ok())?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.as_object().filter(|o| !o.is_empty())?;
    Some(v.to_string())
}

/// Hands the request's credentials (or none: never the server's own) to a re-executed nook.
pub fn with_auth(mut c: Command, req: &Request) -> Command {
    match registry_auth(req) {
        Some(json) => c.env(AUTH_ENV, json),
        None => c.env_remove(AUTH_ENV),
    };
    c
}

fn spawn(mut c: Command) -> Result<Child, ApiError> {
    c.spawn()
        .map_err(|err| ApiError::Internal(format!("cannot run nook: {err}")))
}

/// A line of a child's output: its standard output's, or its standard error's.
enum Line {
    Out(String),
    Err(String),
}

/// The child's output lines as they come, from both pipes (a thread reads each).
fn lines_of(child: &mut Child) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = reexec::each_line(out, |l| {
                tx.send(Line::Out(l.to_owned()))
                    .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
            });
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = reexec::each_line(err, |l| {
                tx.send(Line::Err(l.to_owned()))
                    .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
            });
        });
    }
    rx
}

fn json_line(v: &Value) -> Vec<u8> {
    format!("{v}\r\n").into_bytes()
}

/// docker's error message in a progress stream.
pub fn stream_error(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

/// One line of `nook push`'s progress (standard error, no terminal) as docker's message.
pub fn push_progress(line: &str) -> Option<Value> {
    if line.starts_with("Error: ") || line.trim().is_empty() {
        return None;
    }
    match line.split_once(": ") {
        Some((id, status)) if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(json!({"status": status, "progressDetail": {}, "id": id}))
        }
        _ => Some(json!({"status": line})),
    }
}

/// `nook push`'s result line, `TAG: digest: DIGEST size: N`, as docker's two messages.
pub fn push_result(line: &str) -> Vec<Value> {
    let parsed = line.split_once(": digest: ").and_then(|(tag, rest)| {
        let (digest, size) = rest.split_once(" size: ")?;
        Some((tag, digest, size.trim().parse::<u64>().ok()?))
    });
    let mut out = vec![json!({"status": line})];
    if let Some((tag, digest, size)) = parsed {
        out.push(json!({"progressDetail": {},
            "aux": {"Tag": tag, "Digest": digest, "Size": size}}));
    }
    out
}

/// `POST /images/{name}/push?tag=`: `nook push`'s progress as docker's JSON lines.
pub fn push(e: &Engine, name: &str, req: &Request) -> Result<Response, ApiError> {
    let mut args = vec!["push".to_owned()];
    let image = match req.query.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => {
            let image = format!("{name}:{t}");
            let store = e.store()?.ok_or_else(|| no_image(&image))?;
            store.find_image(&image).map_err(|_| no_image(&image))?;
            image
        }
        // docker: no tag pushes every tag of the repository.
        None => {
            args.push("--all-tags".into());
            name.to_owned()
        }
    };
    args.extend(["--".to_owned(), image]);
    let mut child = spawn(with_auth(reexec::command(e, &args), req))?;
    Ok(Response::stream("application/json", move |c| {
        let mut errors = Vec::new();
        let mut sent = Ok(());
        for l in lines_of(&mut child) {
            let msgs = match &l {
                Line::Out(s) => push_result(s),
                Line::Err(s) => {
                    // The error is the last lines' business: keep a bounded tail.
                    if errors.len() == 64 {
                        errors.remove(0);
                    }
                    errors.push(s.clone());
                    push_progress(s).into_iter().collect()
                }
            };
            sent = msgs.iter().try_for_each(|m| c.send(&json_line(m)));
            if sent.is_err() {
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait()?;
        sent?;
        if status.success() {
            return Ok(());
        }
        let m = reexec::error_line(&errors.join("\n"));
        c.send(&json_line(&stream_error(&m)))
    }))
}

fn no_image(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "An image does not exist locally with the tag: {name}"
    ))
}

/// `GET /images/{name}/get` and `GET /images/get?names=..`: `nook save`'s docker-archive.
pub fn save(e: &Engine, name: Option<&str>, q: &Query) -> Result<Response, ApiError> {
    let mut names: Vec<String> = name.into_iter().map(str::to_owned).collect();
    names.extend(
        q.all("names")
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    );
    if names.is_empty() {
        return Err(ApiError::BadRequest(
            "name at least one image (names=)".into(),
        ));
    }
    let mut args = reexec::strings(&["save", "--format=docker-archive", "--"]);
    args.extend(names);
    stream_stdout(e, &args)
}

/// nook's standard output (a tar), streamed. The first bytes are read before answering, so
/// that a child that fails at once (no such image or container) is docker's error status
/// rather than a broken tar.
pub fn stream_stdout(e: &Engine, args: &[String]) -> Result<Response, ApiError> {
    let mut child = reexec::spawn(e, args)?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::Internal("nook has no output".into()))?;
    let mut first = vec![0u8; 64 << 10];
    let n = read_some(&mut out, &mut first)
        .map_err(|err| ApiError::Internal(format!("cannot read nook's output: {err}")))?;
    if n == 0 {
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let _ = child.wait();
        return Err(ApiError::from_message(&reexec::error_line(&err)));
    }
    first.truncate(n);
    Ok(Response::stream("application/x-tar", move |c| {
        let sent = c.send(&first).and_then(|()| copy_chunks(&mut out, c));
        if sent.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
        sent
    }))
}

/// Reads until `buf` has something or the reader ends.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn copy_chunks(r: &mut impl Read, c: &mut super::http::Chunked<'_>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = read_some(r, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        c.send(&buf[..n])?;
    }
}

/// `POST /images/load`: the spooled archive to `nook load -q`; its `Loaded image` lines as
/// docker's `{"stream": ..}` messages.
pub fn load(e: &Engine, req: &Request) -> Result<Response, ApiError> {
    let body = req
        .body_file
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("send the archive as the request body".into()))?
        .try_clone()
        .map_err(|err| ApiError::Internal(format!("cannot read the archive: {err}")))?;
    let out = reexec::command(e, &reexec::strings(&["load", "-q"]))
        .stdin(Stdio::from(body))
        .output()
        .map_err(|err| ApiError::Internal(format!("cannot run nook load: {err}")))?;
    if !out.status.success() {
        let m = reexec::error_line(&String::from_utf8_lossy(&out.stderr));
        return Err(if m.contains("archive") || m.contains("tar") {
            ApiError::BadRequest(m)
        } else {
            ApiError::from_message(&m)
        });
    }
    let mut body = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = body.write_all(&json_line(&json!({"stream": format!("{l}\n")})));
    }
    Ok(Response {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: super::http::Body::Bytes(body),
    })
}

/// `GET /images/search`: nook searches no index; docker's CLI shows this message.
pub fn search() -> ApiError {
    ApiError::NotSupported(
        "nook does not search registries: docker search needs Docker Hub's search index; browse https://hub.docker.com or list a registry's repositories with its /v2/_catalog".into(),
    )
}

/// `POST /auth`: the credentials checked against the registry, as `nook login` checks them,
/// and saved nowhere. The password travels on the child's standard input.
pub fn auth(e: &Engine, body: &Value) -> Result<Response, ApiError> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let (user, password) = (text("username"), text("password"));
    if user.is_empty() || password.is_empty() {
        return Err(ApiError::BadRequest(
            "give a username and password (identity tokens are checked when they are used)".into(),
        ));
    }
    let server = match text("serveraddress") {
        "" => "docker.io",
        s => s,
    };
    let user = format!("--username={user}");
    let args = reexec::strings(&[
        "login",
        "--verify-only",
        "--password-stdin",
        &user,
        "--",
        server,
    ]);
    let mut child = spawn({
        let mut c = reexec::command(e, &args);
        c.stdin(Stdio::piped()).env_remove(AUTH_ENV);
        c
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(password.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|err| ApiError::Internal(format!("cannot run nook login: {err}")))?;
    if out.status.success() {
        return Ok(Response::json(
            200,
            &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        ));
    }
    let m = reexec::error_line(&String::from_utf8_lossy(&out.stderr));
    if m.contains("incorrect username or password") {
        return Ok(Response::json(401, &json!({"message": m})));
    }
    Err(ApiError::from_message(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_lines_become_docker_messages() {
        assert_eq!(
            push_progress("0123456789ab: Pushed").unwrap(),
            json!({"status": "Pushed", "progressDetail": {}, "id": "0123456789ab"})
        );
        assert_eq!(
            push_progress("The push refers to repository [127.0.0.1:5000/bb]").unwrap(),
            json!({"status": "The push refers to repository [127.0.0.1:5000/bb]"})
        );
        assert_eq!(push_progress("Error: pushing x: denied"), None);
        let done = push_result("v1: digest: sha256:ab size: 527");
        assert_eq!(
            done[1]["aux"],
            json!({"Tag": "v1", "Digest": "sha256:ab", "Size": 527})
        );
        assert_eq!(push_result("something else").len(), 1);
    }

    #[test]
    fn registry_auth_is_base64url_json() {
        let mut req = Request {
            method: "POST".into(),
            path: "/images/x/push".into(),
            target: String::new(),
            query: Query::default(),
            headers: Vec::new(),
            body: Vec::new(),
            body_file: None,
            close: false,
        };
        let raw = r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#;
        let enc = base64::engine::general_purpose::URL_SAFE.encode(raw);
        req.headers.push(("x-registry-auth".into(), enc));
        let json = registry_auth(&req).unwrap();
        let c = crate::config::auth::from_auth_json(&json, "127.0.0.1:5000").unwrap();
        assert!(
            matches!(c, crate::secret::Credential::Basic { ref username, .. } if username == "u")
        );
        assert_eq!(
            crate::config::auth::from_auth_json(&json, "other:5000"),
            None
        );
        assert_eq!(crate::config::auth::from_auth_json("{}", "x"), None);
        req.headers[0].1 = "e30=".into();
        assert_eq!(registry_auth(&req), None);
        req.headers[0].1 = "%%%".into();
        assert_eq!(registry_auth(&req), None);
    }
}
