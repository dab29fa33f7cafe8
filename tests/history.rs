//! `nook history` on a pulled image: rows from the config's history, sizes from the layers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base, sha256};
use support::registry::TestRegistry;

const LONG_RUN: &str =
    "/bin/sh -c echo a rather long command that docker cuts at forty-five characters";

/// `built` with its config's history replaced (config digest and manifest recomputed).
fn with_history(mut built: image::Built, history: Value) -> image::Built {
    let mut config: Value = serde_json::from_slice(&built.config).unwrap();
    config["history"] = history;
    let config = serde_json::to_vec(&config).unwrap();
    let digest = sha256(&config);
    let mut manifest: Value = serde_json::from_slice(&built.manifest).unwrap();
    manifest["config"]["digest"] = json!(digest);
    manifest["config"]["size"] = json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    built.blobs.retain(|(d, _)| *d != built.config_digest);
    built.blobs.push((digest.clone(), config.clone()));
    built.digest = sha256(&manifest);
    built.manifest = manifest;
    built.config = config;
    built.config_digest = digest;
    built
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn history_shows_steps_newest_first_with_layer_sizes() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let marker = LayerTar::new().file("marker", &[7u8; 5000], 0o644).finish();
    let built = image::build(
        &[(busybox_base().finish(), Comp::Gzip), (marker, Comp::Gzip)],
        &ImageOpts::default(),
    );
    let at = "2024-01-02T03:04:05Z";
    let built = with_history(
        built,
        json!([
            {"created": at, "created_by": "/bin/sh -c #(nop) ADD file:busybox in /"},
            {"created": at, "created_by": "/bin/sh -c #(nop) ENV A=1", "empty_layer": true},
            {"created": at, "created_by": LONG_RUN, "comment": "made by hand"},
            {"created": at, "created_by": "/bin/sh -c #(nop) CMD [\"sh\"]", "empty_layer": true},
        ]),
    );
    image::push(&reg.url, "hist", "v1", &built);
    let r = format!("{}/hist:v1", reg.host);
    user.run(&["pull", "-q", &r]).ok();
    let short_id = &built.config_digest["sha256:".len()..][..12];

    let out = user.run(&["history", &r]);
    out.ok();
    let table = lines(&out.stdout);
    assert_eq!(table.len(), 5, "{}", out.stdout);
    let header: Vec<&str> = table[0]
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    );
    assert!(table[1].starts_with(short_id), "{}", out.stdout);
    assert!(
        table[1].contains("CMD [\"sh\"]") && table[1].contains(" 0B"),
        "{}",
        table[1]
    );
    assert!(table[2].starts_with("<missing>"), "{}", out.stdout);
    assert!(
        table[2].contains("5kB") && table[2].ends_with("made by hand"),
        "{}",
        table[2]
    );
    assert!(
        table[2].contains('…') && !table[2].contains("characters"),
        "{}",
        table[2]
    );
    assert!(
        table[3].contains("ENV A=1") && table[3].contains(" 0B"),
        "{}",
        table[3]
    );
    assert!(table[4].starts_with("<missing>") && table[4].contains("ADD file:busybox"));

    let out = user.run(&["history", "--no-trunc", &r]);
    out.ok();
    assert!(out.stdout.contains(LONG_RUN), "{}", out.stdout);
    assert!(out.stdout.contains(&built.config_digest), "{}", out.stdout);

    let out = user.run(&["history", "-q", &r]);
    out.ok();
    assert_eq!(
        lines(&out.stdout),
        [short_id, "<missing>", "<missing>", "<missing>"]
    );

    let out = user.run(&[
        "history",
        "-H=false",
        "--format",
        r"{{.Size}}\t{{.CreatedAt}}",
        &r,
    ]);
    out.ok();
    let rows = lines(&out.stdout);
    assert_eq!(
        rows[..3],
        [
            format!("0\t{at}"),
            format!("5000\t{at}"),
            format!("0\t{at}")
        ]
    );
    let base: u64 = rows[3].split('\t').next().unwrap().parse().unwrap();
    assert!(base > 0, "the base layer has content: {}", out.stdout);

    let out = user.run(&["history", "--format", "json", &r]);
    out.ok();
    let first: Value = serde_json::from_str(lines(&out.stdout)[1]).unwrap();
    assert_eq!(first["Size"], "5kB");
    assert_eq!(first["Comment"], "made by hand");

    user.run(&["history", "--format", "{{.Nope}}", &r])
        .fails_with(125, "{{.Nope}}");
    user.run(&["history", "nothere:1"])
        .fails_with(125, "no such image");
}
