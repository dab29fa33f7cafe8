//! Networks: nook has no user-defined networks, only the three every container chooses from
//! (`--network`): `bridge` stands for the default user-mode network (pasta or slirp4netns),
//! `host` and `none`. They are listed and inspected in docker's shape; creating, connecting,
//! disconnecting and removing are refused with a message that says so.

use serde_json::{Value, json};

use super::Engine;
use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use crate::digest::Digest;

/// The built-in networks: (name, driver).
const BUILTIN: [(&str, &str); 3] = [("bridge", "bridge"), ("host", "host"), ("none", "null")];

/// Why nook has no network to create or change, as docker's error.
pub fn unsupported(what: &str) -> ApiError {
    ApiError::NotSupported(format!(
        "{what}: nook has no user-defined networks; a container chooses bridge (the default \
         user-mode network), host or none with --network"
    ))
}

/// A stable id per name: the same on every host and every start of the server.
fn id_of(name: &str) -> String {
    Digest::sha256_of(format!("nook-network:{name}").as_bytes())
        .hex()
        .to_owned()
}

/// When the store was made (its `storage.json`, written once): the networks exist as long
/// as it does. The directory's own time would move with every file made in it.
fn created(e: &Engine) -> String {
    let t = std::fs::metadata(e.root.join("storage.json"))
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    crate::container::logs::rfc3339_nanos(t)
}

fn view(e: &Engine, name: &str, driver: &str) -> Value {
    let ipam_config = if name == "bridge" {
        json!([{"Subnet": "10.0.2.0/24", "Gateway": "10.0.2.2"}])
    } else {
        json!([])
    };
    json!({
        "Name": name,
        "Id": id_of(name),
        "Created": created(e),
        "Scope": "local",
        "Driver": driver,
        "EnableIPv4": name == "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": ipam_config},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// The network named `key`, or whose id is or starts with it.
fn find(key: &str) -> Option<(&'static str, &'static str)> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == key)
        .or_else(|| {
            BUILTIN
                .iter()
                .find(|(n, _)| !key.is_empty() && id_of(n).starts_with(key))
        })
        .copied()
}

fn filter_matches(name: &str, driver: &str, key: &str, v: &str) -> Result<bool, ApiError> {
    Ok(match key {
        "name" => name.contains(v),
        "id" => id_of(name).starts_with(v),
        "driver" => driver == v,
        "scope" => v == "local",
        "type" => match v {
            "builtin" => true,
            "custom" => false,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "invalid filter: 'type'='{v}'"
                )));
            }
        },
        "label" | "dangling" => false,
        _ => return Err(ApiError::BadRequest(format!("invalid filter '{key}'"))),
    })
}

pub fn list(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let filters = q.filters()?;
    let mut out = Vec::new();
    for (name, driver) in BUILTIN {
        let mut keep = true;
        // docker: the same key several times is OR, different keys AND.
        for (k, _) in &filters {
            let mut any = false;
            for (_, v) in filters.iter().filter(|(fk, _)| fk == k) {
                any |= filter_matches(name, driver, k, v)?;
            }
            keep &= any;
        }
        if keep {
            out.push(view(e, name, driver));
        }
    }
    Ok(Response::json(200, &Value::Array(out)))
}

pub fn inspect(e: &Engine, key: &str) -> Result<Response, ApiError> {
    let (name, driver) =
        find(key).ok_or_else(|| ApiError::NotFound(format!("network {key} not found")))?;
    Ok(Response::json(200, &view(e, name, driver)))
}

/// `POST /networks/prune`: nothing is ever left to prune.
pub fn prune() -> Response {
    Response::json(200, &json!({"NetworksDeleted": []}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_hex_and_found_by_prefix() {
        let id = id_of("bridge");
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, id_of("bridge"));
        assert_eq!(find(&id[..12]), Some(("bridge", "bridge")));
        assert_eq!(find("none"), Some(("none", "null")));
        assert_eq!(find("mynet"), None);
        assert_eq!(find(""), None);
    }

    #[test]
    fn filters_by_name_driver_and_type() {
        assert!(filter_matches("host", "host", "driver", "host").unwrap());
        assert!(!filter_matches("none", "null", "name", "bri").unwrap());
        assert!(!filter_matches("bridge", "bridge", "type", "custom").unwrap());
        assert_eq!(
            filter_matches("bridge", "bridge", "color", "x")
                .unwrap_err()
                .status(),
            400
        );
    }
}
