//! `GET /events`: nook has no daemon that sees things happen, so every nook process writes
//! what it did to the store's journal ([`crate::events`]); this endpoint replays the journal
//! from `since` and follows it, as JSON lines, until `until` or until the client hangs up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Engine;
use super::error::ApiError;
use super::http::Response;
use super::route::Query;
use crate::events::Follower;

/// docker's `since`/`until`: seconds since the epoch with an optional fraction, or RFC 3339;
/// nanoseconds.
fn time_param(q: &Query, key: &str) -> Result<Option<u128>, ApiError> {
    let Some(v) = q.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || ApiError::BadRequest(format!("invalid value for {key}: {v:?}"));
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if let Ok(s) = secs.parse::<u64>() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let nanos = format!("{digits:0<9}").parse::<u128>().map_err(|_| bad())?;
        return Ok(Some(u128::from(s) * 1_000_000_000 + nanos));
    }
    let s = crate::cli::format::parse_rfc3339(v).ok_or_else(bad)?;
    Ok(Some(u128::try_from(s).map_err(|_| bad())? * 1_000_000_000))
}

/// The filters docker's CLI sends: the same key several times is OR, different keys AND.
#[derive(Debug, Default)]
struct Filters(Vec<(String, String)>);

impl Filters {
    fn parse(q: &Query) -> Result<Filters, ApiError> {
        let f = q.filters()?;
        for (k, _) in &f {
            if !matches!(
                k.as_str(),
                "type" | "container" | "image" | "event" | "label" | "volume" | "network" | "scope"
            ) {
                return Err(ApiError::BadRequest(format!("invalid filter '{k}'")));
            }
        }
        Ok(Filters(f))
    }

    fn one(ev: &Value, key: &str, v: &str) -> bool {
        let kind = ev["Type"].as_str().unwrap_or("");
        let id = ev["Actor"]["ID"].as_str().unwrap_or("");
        let attr = |a: &str| {
            ev["Actor"]["Attributes"][a]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        match key {
            "type" => kind == v,
            // docker matches "exec_start: CMD" by its part before the colon.
            "event" => ev["Action"]
                .as_str()
                .is_some_and(|a| a == v || a.split_once(':').is_some_and(|(k, _)| k == v)),
            "scope" => v == "local",
            "container" => kind == "container" && (id.starts_with(v) || attr("name") == v),
            "image" => {
                let named = |n: &str| n == v || n.strip_suffix(":latest") == Some(v);
                (kind == "image" && (id == v || named(id) || named(&attr("name"))))
                    || (kind == "container" && named(&attr("image")))
            }
            "volume" | "network" => kind == key && id == v,
            // nook keeps no labels: a label filter matches nothing.
            _ => false,
        }
    }

    fn wants(&self, ev: &Value) -> bool {
        self.0.iter().all(|(k, _)| {
            self.0
                .iter()
                .filter(|(fk, _)| fk == k)
                .any(|(_, v)| Filters::one(ev, k, v))
        })
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn nanos(ev: &Value) -> u128 {
    u128::from(ev["timeNano"].as_u64().unwrap_or(0))
}

pub fn events(e: &Engine, q: &Query) -> Result<Response, ApiError> {
    let since = time_param(q, "since")?;
    let until = time_param(q, "until")?;
    let filters = Filters::parse(q)?;
    // Without since or until only new events are sent, as docker does.
    let mut journal = if since.is_some() || until.is_some() {
        Follower::at_start(&e.root)
    } else {
        Follower::at_end(&e.root)
    };
    let since = since.unwrap_or(0);
    Ok(Response::stream("application/json", move |ch| {
        loop {
            let past = until.is_some_and(|u| now_nanos() > u);
            for ev in journal.appended() {
                let t = nanos(&ev);
                if t >= since && until.is_none_or(|u| t <= u) && filters.wants(&ev) {
                    ch.send(format!("{ev}\n").as_bytes())?;
                }
            }
            if past || ch.client_gone() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_seconds_fractions_and_rfc3339() {
        let q = Query::parse("since=1700000000.5&until=2023-11-14T22:13:20Z&x=1.abc");
        assert_eq!(
            time_param(&q, "since").unwrap(),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            time_param(&q, "until").unwrap(),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(time_param(&q, "x").unwrap_err().status(), 400);
        assert_eq!(time_param(&q, "none").unwrap(), None);
    }

    #[test]
    fn filters_by_type_container_image_and_event() {
        let c = crate::events::event(
            "container",
            "start",
            "abc123",
            &[("image", "bb"), ("name", "web")],
        );
        let i = crate::events::event("image", "untag", "sha256:1", &[("name", "bb:latest")]);
        let f = |pairs: &[(&str, &str)]| {
            Filters(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            )
        };
        assert!(f(&[("type", "container")]).wants(&c));
        assert!(!f(&[("type", "container")]).wants(&i));
        assert!(f(&[("container", "web")]).wants(&c));
        assert!(f(&[("container", "abc")]).wants(&c));
        assert!(f(&[("image", "bb")]).wants(&c) && f(&[("image", "bb")]).wants(&i));
        assert!(f(&[("event", "start"), ("event", "die")]).wants(&c));
        assert!(!f(&[("event", "start"), ("type", "image")]).wants(&c));
        let x = crate::events::event("container", "exec_start: sh -c x", "abc123", &[]);
        assert!(f(&[("event", "exec_start")]).wants(&x));
        assert!(!f(&[("event", "exec")]).wants(&x));
        assert!(!f(&[("label", "a=b")]).wants(&json!({})));
        let bad = Query::parse("filters=%7B%22color%22%3A%5B%22red%22%5D%7D");
        assert_eq!(Filters::parse(&bad).unwrap_err().status(), 400);
    }
}
