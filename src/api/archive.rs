//! `HEAD`, `GET` and `PUT /containers/{id}/archive` for `docker cp`, through re-executed
//! `nook cp ID:PATH -` (a tar to its standard output) and `nook cp - ID:DIR` (a tar from its
//! standard input): the server never enters a container. Where a PUT's entries may land is
//! nook cp's to confine (its helper is chrooted into the container, and absolute or `..`
//! entries are refused).

use std::io::Read;
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Engine;
use super::error::ApiError;
use super::http::{Request, Response};
use super::reexec;

/// Go's `os.FileMode` bits, which docker's stat carries (the CLI asks `IsDir()` of it).
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

fn path_of(req: &Request) -> Result<String, ApiError> {
    req.query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("path is required".into()))
}

/// docker's path stat of a tar entry's header.
fn stat_of(h: &tar::Header, name: &str) -> Value {
    let raw = h.mode().unwrap_or(0);
    let mut mode = raw & 0o777;
    for (unix, go) in [
        (0o4000, GO_SETUID),
        (0o2000, GO_SETGID),
        (0o1000, GO_STICKY),
    ] {
        if raw & unix != 0 {
            mode |= go;
        }
    }
    let kind = h.entry_type();
    if kind.is_dir() {
        mode |= GO_DIR;
    } else if kind.is_symlink() {
        mode |= GO_SYMLINK;
    }
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(h.mtime().unwrap_or(0));
    let link = h
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "name": name,
        "size": h.size().unwrap_or(0),
        "mode": mode,
        "mtime": crate::container::logs::rfc3339_nanos(mtime),
        "linkTarget": link,
    })
}

fn stat_header(v: &Value) -> (&'static str, String) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(v.to_string());
    ("X-Docker-Container-Path-Stat", b64)
}

fn out_args(id: &str, path: &str) -> Vec<String> {
    // The container and path are one argument, `ID:PATH`: never taken for a flag.
    reexec::strings(&["cp", &format!("{id}:{path}"), "-"])
}

/// The stat of `path` in the container: the first header of `nook cp ID:PATH -`'s tar (the
/// copy is stopped there).
fn stat(e: &Engine, id: &str, path: &str) -> Result<Value, ApiError> {
    let mut child = reexec::spawn(e, &out_args(id, path))?;
    let first = child.stdout.take().and_then(|out| {
        let mut a = tar::Archive::new(out);
        let mut entries = a.entries().ok()?;
        let entry = entries.next()?.ok()?;
        Some(entry.header().clone())
    });
    if first.is_some() {
        let _ = child.kill();
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let _ = child.wait();
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned());
    match first {
        Some(h) => Ok(stat_of(&h, &name)),
        None => Err(ApiError::from_message(&reexec::error_line(&err))),
    }
}

/// `HEAD` (the stat alone) and `GET` (the stat, and the tar as the body).
pub fn get(e: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let path = path_of(req)?;
    let header = stat_header(&stat(e, id, &path)?);
    if req.method == "HEAD" {
        let mut r = Response::empty(200);
        r.headers.push(header);
        return Ok(r);
    }
    let mut child = reexec::spawn(e, &out_args(id, &path))?;
    let mut r = Response::stream("application/x-tar", move |c| {
        let mut buf = vec![0u8; 64 << 10];
        let sent = (|| -> std::io::Result<()> {
            let Some(out) = child.stdout.as_mut() else {
                return Ok(());
            };
            loop {
                let n = out.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                c.send(&buf[..n])?;
            }
        })();
        if sent.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
        sent
    });
    r.headers.push(header);
    Ok(r)
}

/// `PUT`: the body, a tar, unpacked into the directory `path`.
pub fn put(e: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let path = path_of(req)?;
    // noOverwriteDirNonDir: the unpacker already refuses to put a file over a directory.
    let body = match &req.body_file {
        Some(f) => f.try_clone().map(Stdio::from),
        None => Err(std::io::ErrorKind::InvalidInput.into()),
    }
    .map_err(|err| ApiError::Internal(format!("cannot read the archive: {err}")))?;
    let args = reexec::strings(&["cp", "-", &format!("{id}:{path}")]);
    let out = reexec::command(e, &args)
        .stdin(body)
        .output()
        .map_err(|err| ApiError::Internal(format!("cannot run nook cp: {err}")))?;
    if out.status.success() {
        return Ok(Response::empty(200));
    }
    let m = reexec::error_line(&String::from_utf8_lossy(&out.stderr));
    Err(if m.contains("is not a directory") {
        ApiError::BadRequest(m)
    } else {
        ApiError::from_message(&m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_carries_go_mode_bits() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o1755);
        h.set_mtime(0);
        let v = stat_of(&h, "tmp");
        assert_eq!(v["mode"], GO_DIR | GO_STICKY | 0o755);
        assert_eq!(v["name"], "tmp");
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_link_name("target").unwrap();
        l.set_mode(0o777);
        let v = stat_of(&l, "l");
        assert_eq!(v["mode"], GO_SYMLINK | 0o777);
        assert_eq!(v["linkTarget"], "target");
        let (name, b64) = stat_header(&json!({"a": 1}));
        assert_eq!(
            (name, b64.as_str()),
            ("X-Docker-Container-Path-Stat", "eyJhIjoxfQ==")
        );
    }
}
