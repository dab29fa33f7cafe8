//! `GET /system/df` (sizes read from the store) and the prune endpoints, which re-execute
//! nook's own `container prune`, `image prune` and `volume prune` and answer what they removed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use super::{Engine, reexec};
use crate::container::State;
use crate::container::volumes::Volumes;

/// Bytes of the files under `dir`, best effort: links are not followed, what cannot be read
/// (a directory of a subordinate id with mode 0700) counts as nothing.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else {
                continue;
            };
            if m.is_dir() {
                todo.push(entry.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn images(e: &Engine, in_use: &BTreeMap<String, u64>) -> Result<(Vec<Value>, u64), ApiError> {
    let Some(store) = e.store()? else {
        return Ok((Vec::new(), 0));
    };
    let list = store.images()?;
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for (rec, _) in &list {
        for l in &rec.layers {
            *owners.entry(l.diff_id.to_string()).or_default() += 1;
        }
    }
    let layer_size = |d: &crate::digest::Digest| store.layer_record(d).map_or(0, |r| r.size);
    let layers_size: u64 = owners
        .keys()
        .filter_map(|d| crate::digest::Digest::parse(d).ok())
        .map(|d| layer_size(&d))
        .sum();
    let mut out = Vec::new();
    for (rec, tags) in &list {
        let shared: u64 = rec
            .layers
            .iter()
            .filter(|l| owners.get(&l.diff_id.to_string()).is_some_and(|n| *n > 1))
            .map(|l| layer_size(&l.diff_id))
            .sum();
        let created = rec
            .created
            .as_deref()
            .and_then(crate::cli::format::parse_rfc3339)
            .unwrap_or(0);
        out.push(json!({
            "Id": rec.id.to_string(), "ParentId": "",
            "RepoTags": tags.iter().map(|t| super::images::familiar(t)).collect::<Vec<_>>(),
            "RepoDigests": rec.repo_digests, "Created": created, "Size": rec.size,
            "SharedSize": shared, "Labels": {},
            "Containers": in_use.get(&rec.id.to_string()).copied().unwrap_or(0),
        }));
    }
    Ok((out, layers_size))
}

fn containers(e: &Engine) -> (Vec<Value>, BTreeMap<String, u64>) {
    let c = e.containers();
    let mut users = BTreeMap::new();
    let mut out = Vec::new();
    for r in c.list_refreshed() {
        *users.entry(r.image_id.to_string()).or_default() += 1;
        let rw = disk_usage(&c.dir_of(&r.id).join("upper"));
        out.push(json!({
            "Id": r.id, "Names": [format!("/{}", r.name)], "Image": r.image,
            "ImageID": r.image_id.to_string(), "Command": r.command.join(" "),
            "Created": r.created, "Ports": [], "SizeRw": rw, "SizeRootFs": rw,
            "Labels": {}, "State": r.state.as_str(),
            "Status": crate::container::lifecycle::status(&r, crate::cli::format::human_age),
            "Mounts": [],
        }));
    }
    (out, users)
}

fn volumes(e: &Engine) -> Vec<Value> {
    let vols = Volumes::new(&e.root);
    let list = e.containers().list();
    vols.list()
        .iter()
        .map(|v| {
            let refs = list
                .iter()
                .filter(|r| r.volumes.iter().any(|u| u.name == v.name))
                .count();
            let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(v.created);
            json!({
                "Name": v.name, "Driver": "local", "Mountpoint": vols.data(&v.name),
                "CreatedAt": crate::container::logs::rfc3339_nanos(created),
                "Scope": "local", "Labels": {}, "Options": {},
                "UsageData": {"Size": disk_usage(&vols.data(&v.name)), "RefCount": refs},
            })
        })
        .collect()
}

pub fn df(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let types: Vec<&str> = q
        .get("type")
        .map_or_else(Vec::new, |t| t.split(',').collect());
    let want = |t: &str| types.is_empty() || types.contains(&t);
    let (cs, users) = containers(e);
    let (imgs, layers_size) = images(e, &users)?;
    let mut v = json!({"LayersSize": layers_size, "BuildCache": []});
    if want("image") {
        v["Images"] = Value::Array(imgs);
    }
    if want("container") {
        v["Containers"] = Value::Array(cs);
    }
    if want("volume") {
        v["Volumes"] = Value::Array(volumes(e));
    }
    Ok(Response::json(200, &v))
}

/// Refuses filters nook's prune commands do not have.
fn only_filters(q: &Query, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let filters = q.filters()?;
    if let Some((k, _)) = filters.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "invalid filter '{k}': nook's prune takes {}",
            if allowed.is_empty() {
                "no filters".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(filters)
}

/// The lines after `Deleted ...:` of a prune's output, up to the first empty one.
fn deleted(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("Deleted"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

pub fn prune_containers(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    only_filters(q, &[])?;
    let c = e.containers();
    let sizes: BTreeMap<String, u64> = c
        .list_refreshed()
        .into_iter()
        .filter(|r| r.state != State::Running)
        .map(|r| (r.id.clone(), disk_usage(&c.dir_of(&r.id).join("upper"))))
        .collect();
    let out = reexec::run(e, &reexec::strings(&["container", "prune", "-f"]))?;
    let gone = deleted(&out);
    let space: u64 = gone.iter().filter_map(|id| sizes.get(id)).sum();
    Ok(Response::json(
        200,
        &json!({"ContainersDeleted": gone, "SpaceReclaimed": space}),
    ))
}

pub fn prune_images(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let filters = only_filters(q, &["dangling"])?;
    let all = filters
        .iter()
        .any(|(_, v)| matches!(v.as_str(), "false" | "0"));
    let sizes: BTreeMap<String, u64> = match e.store()? {
        Some(s) => s
            .images()?
            .into_iter()
            .map(|(r, _)| (r.id.to_string(), r.size))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut args = reexec::strings(&["image", "prune", "-f"]);
    if all {
        args.push("-a".into());
    }
    let out = reexec::run(e, &args)?;
    let mut space = 0;
    let mut list = Vec::new();
    for l in deleted(&out) {
        if let Some(t) = l.strip_prefix("untagged: ") {
            list.push(json!({"Untagged": super::images::familiar(t)}));
        } else if let Some(id) = l.strip_prefix("deleted: ") {
            space += sizes.get(id).copied().unwrap_or(0);
            list.push(json!({"Deleted": id}));
        }
    }
    let list = if list.is_empty() {
        Value::Null
    } else {
        Value::Array(list)
    };
    Ok(Response::json(
        200,
        &json!({"ImagesDeleted": list, "SpaceReclaimed": space}),
    ))
}

pub fn prune_volumes(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let filters = only_filters(q, &["all"])?;
    let all = filters
        .iter()
        .any(|(k, v)| k == "all" && matches!(v.as_str(), "true" | "1"));
    let vols = Volumes::new(&e.root);
    let sizes: BTreeMap<String, u64> = vols
        .list()
        .into_iter()
        .map(|v| {
            let n = disk_usage(&vols.data(&v.name));
            (v.name, n)
        })
        .collect();
    let mut args = reexec::strings(&["volume", "prune", "-f"]);
    if all {
        args.push("-a".into());
    }
    let gone = deleted(&reexec::run(e, &args)?);
    let space: u64 = gone.iter().filter_map(|n| sizes.get(n)).sum();
    Ok(Response::json(
        200,
        &json!({"VolumesDeleted": gone, "SpaceReclaimed": space}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_lines_are_read_up_to_the_blank() {
        let out =
            "Deleted Images:\nuntagged: a:1\ndeleted: sha256:ab\n\nTotal reclaimed space: 0B\n";
        assert_eq!(deleted(out), vec!["untagged: a:1", "deleted: sha256:ab"]);
        assert!(deleted("Total reclaimed space: 0B\n").is_empty());
        assert_eq!(deleted("Deleted Containers:\nabc\n"), vec!["abc"]);
    }

    #[test]
    fn unknown_prune_filters_are_refused() {
        let q = Query::parse("filters=%7B%22until%22%3A%5B%2224h%22%5D%7D");
        assert_eq!(only_filters(&q, &["dangling"]).unwrap_err().status(), 400);
    }

    #[test]
    fn disk_usage_counts_files_below() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), b"12345").unwrap();
        std::fs::write(d.path().join("g"), b"12").unwrap();
        assert_eq!(disk_usage(d.path()), 7);
        assert_eq!(disk_usage(&d.path().join("missing")), 0);
    }
}
