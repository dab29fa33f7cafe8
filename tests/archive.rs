//! `nook save` and `nook load`: round trips keep ids and tags, podman and skopeo read nook's
//! archives and nook reads theirs, Docker ≥ 25's and compressed archives load, and hostile
//! archives are refused with the store unchanged. Loads that unpack run in both id modes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::archive::{Item, docker_items, gzip, hex, oci_items, store_files, tar};
use support::build::Podman;
use support::env::{Mode, Out};
use support::image::{self, Comp, LayerTar, busybox_base};
use support::sandbox::Sandbox;

const MODES: [Mode; 2] = [Mode::Range, Mode::Single];

/// A path in the test user's home, owned by them.
fn home_path(s: &Sandbox, name: &str) -> PathBuf {
    s.user.home().join(name)
}

/// Writes `bytes` to `name` in the user's home; its path.
fn put(s: &Sandbox, name: &str, bytes: &[u8]) -> String {
    s.user.write_home(name, bytes).display().to_string()
}

/// `nook --root ROOT ARGS...`: a second store of the same user.
fn nook_at(s: &Sandbox, root: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    s.nook(&all)
}

/// Every image of a store: id → its tags.
fn images(s: &Sandbox, root: Option<&Path>) -> BTreeMap<String, BTreeSet<String>> {
    let args = ["images", "--format", "json", "--no-trunc"];
    let out = match root {
        Some(r) => nook_at(s, r, &args),
        None => s.nook(&args),
    };
    out.ok();
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in out.stdout.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let tags = m.entry(v["ID"].as_str().unwrap().to_owned()).or_default();
        if v["Tag"] != "<none>" {
            tags.insert(format!(
                "{}:{}",
                v["Repository"].as_str().unwrap(),
                v["Tag"].as_str().unwrap()
            ));
        }
    }
    m
}

/// `nook inspect` of an image in the store at `root`.
fn inspect_at(s: &Sandbox, root: &Path, what: &str) -> Value {
    let out = nook_at(s, root, &["inspect", what]);
    out.ok();
    serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
}

/// Two images with three tags in all, sharing the busybox layer.
fn two_images(s: &Sandbox) -> String {
    let top = LayerTar::new()
        .file("hello.txt", b"saved and loaded\n", 0o644)
        .finish();
    let app = s.image_over_busybox("app", top, json!({"Cmd": ["cat", "/hello.txt"]}));
    s.nook(&["tag", &app, "localhost/app:v2"]).ok();
    app
}

#[test]
fn save_then_load_into_an_empty_store_keeps_ids_and_tags() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let app = two_images(&s);
        let before = images(&s, None);
        assert_eq!(before.len(), 2, "{before:?}");
        for format in ["docker-archive", "oci-archive"] {
            let file = home_path(&s, &format!("all-{format}.tar"));
            s.nook(&[
                "save",
                "--format",
                format,
                "-o",
                file.to_str().unwrap(),
                &s.image,
                &app,
                "localhost/app:v2",
            ])
            .ok();
            let root = home_path(&s, &format!("store-{format}"));
            let out = nook_at(&s, &root, &["load", "-i", file.to_str().unwrap()]);
            out.ok();
            assert!(
                out.stdout.contains("Loaded image: localhost/app:v2"),
                "{}",
                out.stdout
            );
            assert_eq!(images(&s, Some(&root)), before, "{mode:?} {format}");
            let a = inspect_at(&s, &root, &app);
            assert_eq!(a["Id"], support::build::inspect(&s, &app)["Id"]);
            let ran = nook_at(&s, &root, &["run", "--rm", "localhost/app:v2"]);
            ran.ok();
            assert_eq!(ran.stdout, "saved and loaded\n", "{mode:?} {format}");
            // Loading again changes nothing and says the same.
            let again = nook_at(&s, &root, &["load", "-q", "-i", file.to_str().unwrap()]);
            again.ok();
            assert_eq!(again.stdout, "");
            assert_eq!(images(&s, Some(&root)), before);
        }
    }
}

/// An image over busybox whose command prints a file, pulled; its reference.
fn hello_image(s: &Sandbox, name: &str) -> String {
    let top = LayerTar::new()
        .file("hello.txt", b"from an archive\n", 0o644)
        .finish();
    s.image_over_busybox(name, top, json!({"Cmd": ["cat", "/hello.txt"]}))
}

#[test]
fn podman_saves_and_nook_loads_and_runs() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let Some(p) = Podman::new(&s.user) else {
            return;
        };
        let app = hello_image(&s, "fromp");
        let id = support::build::inspect(&s, &app)["Id"]
            .as_str()
            .unwrap()
            .to_owned();
        p.run(&["pull", "-q", "--tls-verify=false", &app]).ok();
        for format in ["docker-archive", "oci-archive"] {
            let file = home_path(&s, &format!("podman-{format}.tar"));
            p.run(&[
                "save",
                "--format",
                format,
                "-o",
                file.to_str().unwrap(),
                &app,
            ])
            .ok();
            let root = home_path(&s, &format!("store-{format}"));
            let out = nook_at(&s, &root, &["load", "-i", file.to_str().unwrap()]);
            out.ok();
            assert!(out.stdout.starts_with("Loaded image"), "{}", out.stdout);
            let loaded = images(&s, Some(&root));
            let name = format!("{app}:latest");
            // podman's OCI writer converts a docker image's config too (a new id); its
            // docker-archive keeps the config, so the id is the one nook pulled.
            let want: BTreeMap<String, BTreeSet<String>> = match format {
                "docker-archive" => BTreeMap::from([(id.clone(), BTreeSet::from([name.clone()]))]),
                _ => loaded.clone(),
            };
            assert_eq!(loaded, want, "{mode:?} {format}");
            assert_eq!(loaded.len(), 1, "{mode:?} {format}");
            assert!(loaded.values().all(|t| t.contains(&name)), "{loaded:?}");
            let ran = nook_at(&s, &root, &["run", "--rm", &name]);
            ran.ok();
            assert_eq!(ran.stdout, "from an archive\n", "{mode:?} {format}");
            if format == "oci-archive" {
                // Stored as the archive holds it: the manifest digest is podman's.
                let index = entry_json(&file, "index.json");
                let got = inspect_at(&s, &root, &name);
                assert_eq!(got["ManifestDigest"], index["manifests"][0]["digest"]);
            }
        }
    }
}

/// The JSON file `name` of the archive at `path`.
fn entry_json(path: &Path, name: &str) -> Value {
    let entries = support::build::tar_entries(&std::fs::read(path).unwrap());
    let e = entries.iter().find(|e| e.path == name).unwrap();
    serde_json::from_slice(&e.data).unwrap()
}

#[test]
fn nook_saves_and_podman_loads_and_runs() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let Some(p) = Podman::new(&s.user) else {
        return;
    };
    let app = hello_image(&s, "top");
    let id = support::build::inspect(&s, &app)["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    for format in ["docker-archive", "oci-archive"] {
        let file = home_path(&s, &format!("nook-{format}.tar"));
        s.nook(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &app,
        ])
        .ok();
        let out = p.run(&["load", "-i", file.to_str().unwrap()]);
        out.ok();
        let ran = p.run(&["run", "--rm", "--network", "none", hex(&id)]);
        ran.ok();
        assert_eq!(ran.stdout, "from an archive\n", "{format}");
        let listed = p.run(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
        let want = format!("{app}:latest {}", &hex(&id)[..12]);
        assert!(listed.stdout.contains(&want), "{format}: {}", listed.stdout);
        p.run(&["rmi", "-a", "-f"]).ok();
    }
}
