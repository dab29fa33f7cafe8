//! Volumes: list and inspect read the store; create and remove re-execute nook.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use super::{Engine, reexec};
use crate::container::volumes::{VolumeInfo, VolumeStoreError, Volumes};

fn view(vols: &Volumes, v: &VolumeInfo) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": vols.data(&v.name),
        "CreatedAt": crate::container::logs::rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(v.created)),
        "Scope": "local",
        "Labels": {},
        "Options": {},
    })
}

fn get(vols: &Volumes, name: &str) -> Result<VolumeInfo, ApiError> {
    vols.get(name).map_err(|e| match e {
        VolumeStoreError::NotFound(n) => ApiError::NotFound(format!("get {n}: no such volume")),
        other => ApiError::from_message(&super::error::chain(&other)),
    })
}

pub fn list(e: &Engine) -> Result<Response, ApiError> {
    let vols = Volumes::new(&e.root);
    let list: Vec<Value> = vols.list().iter().map(|v| view(&vols, v)).collect();
    Ok(Response::json(
        200,
        &json!({"Volumes": list, "Warnings": []}),
    ))
}

pub fn inspect(e: &Engine, name: &str) -> Result<Response, ApiError> {
    let vols = Volumes::new(&e.root);
    Ok(Response::json(200, &view(&vols, &get(&vols, name)?)))
}

pub fn create(e: &Engine, body: &Value) -> Result<Response, ApiError> {
    let name = body.get("Name").and_then(Value::as_str).unwrap_or("");
    if let Some(d) = body.get("Driver").and_then(Value::as_str)
        && !d.is_empty()
        && d != "local"
    {
        return Err(ApiError::BadRequest(format!(
            "volume driver {d:?} is not available: nook has the local driver only"
        )));
    }
    let has = |k: &str| {
        body.get(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    };
    if has("DriverOpts") {
        return Err(ApiError::BadRequest(
            "DriverOpts are not supported: nook's local volumes are plain directories".into(),
        ));
    }
    let vols = Volumes::new(&e.root);
    if !name.is_empty()
        && let Ok(v) = vols.get(name)
    {
        return Ok(Response::json(201, &view(&vols, &v)));
    }
    let mut args = vec!["volume".to_owned(), "create".to_owned()];
    if !name.is_empty() {
        args.extend(["--".to_owned(), name.to_owned()]);
    }
    let made = reexec::run(e, &args)?;
    let v = get(&vols, made.trim())?;
    Ok(Response::json(201, &view(&vols, &v)))
}

pub fn remove(e: &Engine, name: &str, _q: &Query) -> Result<Response, ApiError> {
    let vols = Volumes::new(&e.root);
    get(&vols, name)?;
    reexec::run(e, &reexec::strings(&["volume", "rm", "--", name]))?;
    Ok(Response::empty(204))
}
