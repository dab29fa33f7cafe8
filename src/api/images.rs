//! Images: list, inspect, history (library reads); tag, remove, pull (re-executed nook).

use serde_json::{Value, json};

use super::Engine;
use super::error::ApiError;
use super::http::Response;
use super::reexec;
use super::route::Query;
use crate::cli::format::parse_rfc3339;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// `repo:tag` as docker shows it (`busybox:latest`, `localhost:5000/bb:latest`).
pub fn familiar(tag: &str) -> String {
    match Reference::parse(tag) {
        Ok(r) => format!("{}:{}", r.familiar_repository(), r.tag_or_latest()),
        Err(_) => tag.to_owned(),
    }
}

fn created_secs(rec: &ImageRecord) -> i64 {
    rec.created.as_deref().and_then(parse_rfc3339).unwrap_or(0)
}

fn store(e: &Engine) -> Result<Store, ApiError> {
    e.store()?
        .ok_or_else(|| ApiError::NotFound("No such image: the store is empty".into()))
}

/// docker's `reference` filter: the name, with `*` matching within one path part.
fn reference_matches(pattern: &str, tags: &[String]) -> bool {
    tags.iter().any(|t| {
        let (repo, _) = t.rsplit_once(':').unwrap_or((t, ""));
        glob(pattern, t) || glob(pattern, repo)
    })
}

fn glob(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i) && !rest[..*i].contains('/'))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

pub fn list(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let filters = q.filters()?;
    let Some(store) = e.store()? else {
        return Ok(Response::json(200, &json!([])));
    };
    let mut out = Vec::new();
    // The read-only shared stores' images after the own store's, as `nook images` lists them.
    for (rec, tags) in store.images()?.into_iter().chain(store.shared_images()?) {
        let tags: Vec<String> = tags.iter().map(|t| familiar(t)).collect();
        let keep = filters.iter().all(|(k, v)| match k.as_str() {
            "reference" => reference_matches(v, &tags),
            "dangling" => (v == "true" || v == "1") == tags.is_empty(),
            _ => true,
        });
        if !keep {
            continue;
        }
        out.push(json!({
            "Id": rec.id.to_string(), "ParentId": "", "RepoTags": tags,
            "RepoDigests": rec.repo_digests, "Created": created_secs(&rec),
            "Size": rec.size, "SharedSize": -1, "Labels": {}, "Containers": -1,
        }));
    }
    Ok(Response::json(200, &Value::Array(out)))
}

fn config_of(store: &Store, rec: &ImageRecord) -> Result<Value, ApiError> {
    let bytes = store.read_blob(&rec.id, 8 << 20)?;
    serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::Internal(format!("image config {}: {err}", rec.id)))
}

fn find(store: &Store, name: &str) -> Result<ImageRecord, ApiError> {
    store.find_image(name).map_err(|err| match err {
        crate::store::StoreError::NoSuchImage(_) => {
            ApiError::NotFound(format!("No such image: {name}"))
        }
        other => other.into(),
    })
}

pub fn inspect(e: &Engine, name: &str) -> Result<Response, ApiError> {
    let store = store(e)?;
    let rec = find(&store, name)?;
    let config = config_of(&store, &rec)?;
    let tags: Vec<String> = store
        .images()?
        .into_iter()
        .find(|(r, _)| r.id == rec.id)
        .map(|(_, t)| t.iter().map(|x| familiar(x)).collect())
        .unwrap_or_default();
    let v = json!({
        "Id": rec.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": rec.repo_digests,
        "Parent": "",
        "Comment": config.get("comment").cloned().unwrap_or(json!("")),
        "Created": rec.created,
        "DockerVersion": "",
        "Author": config.get("author").cloned().unwrap_or(json!("")),
        "Config": config.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": rec.platform.architecture,
        "Variant": rec.platform.variant,
        "Os": rec.platform.os,
        "Size": rec.size,
        "GraphDriver": {"Name": "nook", "Data": null},
        "RootFS": {
            "Type": "layers",
            "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    });
    Ok(Response::json(200, &v))
}

pub fn history(e: &Engine, name: &str) -> Result<Response, ApiError> {
    let store = store(e)?;
    let rec = find(&store, name)?;
    let config = config_of(&store, &rec)?;
    let steps = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut layers = rec.layers.iter();
    let mut out: Vec<Value> = steps
        .iter()
        .map(|h| {
            let empty = h
                .get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let size = if empty {
                0
            } else {
                layers.next().map_or(0, |l| l.size)
            };
            let text = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            json!({
                "Id": "<missing>",
                "Created": parse_rfc3339(&text("created")).unwrap_or(0),
                "CreatedBy": text("created_by"),
                "Tags": null,
                "Size": size,
                "Comment": text("comment"),
            })
        })
        .collect();
    out.reverse();
    if let Some(top) = out.first_mut() {
        top["Id"] = json!(rec.id.to_string());
    }
    Ok(Response::json(200, &Value::Array(out)))
}

pub fn tag(e: &Engine, name: &str, q: &Query) -> Result<Response, ApiError> {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::BadRequest("repository name (repo) is required".into()))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_owned(),
    };
    store(e).and_then(|s| find(&s, name))?;
    // `--`: names from the request are never taken for flags.
    reexec::run(e, &reexec::strings(&["tag", "--", name, &target]))?;
    Ok(Response::empty(201))
}

pub fn remove(e: &Engine, name: &str, q: &Query) -> Result<Response, ApiError> {
    store(e).and_then(|s| find(&s, name))?;
    let mut args = vec!["rmi".to_owned()];
    if q.flag("force") {
        args.push("-f".into());
    }
    args.extend(["--".to_owned(), name.to_owned()]);
    let out = reexec::run(e, &args)?;
    let items: Vec<Value> = out
        .lines()
        .filter_map(|l| {
            if let Some(t) = l.strip_prefix("Untagged: ") {
                Some(json!({"Untagged": t}))
            } else {
                l.strip_prefix("Deleted: ").map(|d| json!({"Deleted": d}))
            }
        })
        .collect();
    Ok(Response::json(200, &Value::Array(items)))
}

/// The reference `POST /images/create` names.
pub fn pull_reference(q: &Query) -> Result<String, ApiError> {
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::NotImplemented("image import (fromSrc)"));
    }
    let from = q
        .get("fromImage")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::BadRequest("fromImage is required".into()))?;
    Ok(match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) if !from.contains('@') => format!("{from}:{t}"),
        _ => from.to_owned(),
    })
}

/// `POST /images/create`: `nook pull`, with the client's `X-Registry-Auth` credentials.
pub fn pull(e: &Engine, q: &Query, req: &super::http::Request) -> Result<Response, ApiError> {
    let image = pull_reference(q)?;
    let mut args = vec!["pull".to_owned()];
    if let Some(p) = q.get("platform").filter(|p| !p.is_empty()) {
        args.push(format!("--platform={p}"));
    }
    args.extend(["--".to_owned(), image.clone()]);
    let mut child = super::ship::with_auth(reexec::command(e, &args), req)
        .spawn()
        .map_err(|err| ApiError::Internal(format!("cannot run nook pull: {err}")))?;
    Ok(Response::stream("application/json", move |c| {
        let line = |v: Value| format!("{v}\r\n").into_bytes();
        c.send(&line(json!({"status": format!("Pulling {image}")})))?;
        let stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = stderr {
                let _ = std::io::Read::read_to_string(&mut r, &mut s);
            }
            s
        });
        if let Some(out) = child.stdout.take() {
            reexec::each_line(out, |l| c.send(&line(json!({"status": l}))))?;
        }
        let status = child.wait()?;
        let errs = err_reader.join().unwrap_or_default();
        if status.success() {
            let done = format!("Status: Downloaded newer image for {image}");
            c.send(&line(json!({"status": done})))
        } else {
            let m = reexec::error_line(&errs);
            c.send(&line(json!({"errorDetail": {"message": m}, "error": m})))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_globs_within_a_path_part() {
        let tags = vec!["localhost:5000/bb:latest".to_owned()];
        assert!(reference_matches("localhost:5000/bb", &tags));
        assert!(reference_matches("localhost:5000/*", &tags));
        assert!(reference_matches("*/bb:latest", &tags));
        assert!(!reference_matches("bb", &tags));
    }

    #[test]
    fn pull_reference_joins_tag_or_digest() {
        let q = Query::parse("fromImage=localhost%3A5000%2Fbb&tag=latest");
        assert_eq!(pull_reference(&q).unwrap(), "localhost:5000/bb:latest");
        let q = Query::parse("fromImage=bb&tag=sha256%3Aab");
        assert_eq!(pull_reference(&q).unwrap(), "bb@sha256:ab");
        assert_eq!(pull_reference(&Query::parse("")).unwrap_err().status(), 400);
        assert_eq!(
            pull_reference(&Query::parse("fromSrc=-"))
                .unwrap_err()
                .status(),
            501
        );
    }
}
