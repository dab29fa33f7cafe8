//! `nook save` and `nook load`: round trips keep ids and tags, podman and skopeo read nook's
//! archives and nook reads theirs, Docker ≥ 25's and compressed archives load, and hostile
//! archives are refused with the store unchanged. Loads that unpack run in both id modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::archive::{
    Item, docker_items, edit_manifest, gzip, hex, oci_items, replace, store_files, tar,
};
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
            // -q hides progress only: the names still go to stdout, as docker load -q prints them.
            let again = nook_at(&s, &root, &["load", "-q", "-i", file.to_str().unwrap()]);
            again.ok();
            assert_eq!(again.stdout, out.stdout);
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

/// `skopeo ARGS...` (as the suite's user), or `None` after a printed skip.
fn skopeo(args: &[&str]) -> Option<Out> {
    let out = std::process::Command::new("skopeo").args(args).output();
    match out {
        Ok(o) => Some(Out::from(o)),
        Err(e) => {
            support::skip(&format!("skopeo cannot run: {e} (apt-get install skopeo)"));
            None
        }
    }
}

#[test]
fn skopeo_copies_nook_archives_to_a_registry_and_back() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let app = hello_image(&s, "sko");
    let id = support::build::inspect(&s, &app)["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = &s.reg.host;
    for (n, format) in ["docker-archive", "oci-archive"].into_iter().enumerate() {
        let file = home_path(&s, &format!("out-{format}.tar"));
        s.nook(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &app,
        ])
        .ok();
        let dest = format!("{host}/copied:{n}");
        let Some(out) = skopeo(&[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("{format}:{}", file.display()),
            &format!("docker://{dest}"),
        ]) else {
            return;
        };
        out.ok();
        // Pulled into a store of its own: the config went through unchanged, the same id.
        let pulled = home_path(&s, &format!("pulled-{n}"));
        nook_at(&s, &pulled, &["pull", "-q", &dest]).ok();
        assert_eq!(
            inspect_at(&s, &pulled, &dest)["Id"],
            id.as_str(),
            "{format}"
        );
    }
    let file = home_path(&s, "from-registry.tar");
    let Some(out) = skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{app}"),
        &format!("oci-archive:{}:{app}", file.display()),
    ]) else {
        return;
    };
    out.ok();
    s.user.give(&file);
    let root = home_path(&s, "store-skopeo");
    let loaded = nook_at(&s, &root, &["load", "-i", file.to_str().unwrap()]);
    loaded.ok();
    assert_eq!(loaded.stdout, format!("Loaded image: {app}:latest\n"));
    let got = inspect_at(&s, &root, &app);
    let index = entry_json(&file, "index.json");
    assert_eq!(got["ManifestDigest"], index["manifests"][0]["digest"]);
    let ran = nook_at(&s, &root, &["run", "--rm", &app]);
    ran.ok();
    assert_eq!(ran.stdout, "from an archive\n");
}

/// A two-layer image whose command prints a file, as blobs (not pushed anywhere).
fn built(oci: bool, layer_comp: Comp, label: &str) -> image::Built {
    let top = LayerTar::new()
        .file("hello.txt", b"hand-built\n", 0o644)
        .finish();
    image::build(
        &[(busybox_base().finish(), layer_comp), (top, layer_comp)],
        &image::ImageOpts {
            oci,
            config: json!({"Cmd": ["cat", "/hello.txt"], "Labels": {"which": label}}),
            ..image::ImageOpts::default()
        },
    )
}

/// Loads `bytes` into the store at `root` and runs `what` there, which must print the file.
fn load_and_run(s: &Sandbox, root: &Path, bytes: &[u8], what: &str) -> Out {
    let file = put(s, "in.tar", bytes);
    let out = nook_at(s, root, &["load", "-i", &file]);
    out.ok();
    let ran = nook_at(s, root, &["run", "--rm", what]);
    ran.ok();
    assert_eq!(ran.stdout, "hand-built\n", "{what}");
    out
}

/// An image may list one layer twice (docker's classic builder repeated its empty layer; the
/// image spec allows it). Docker ≥ 25 names the same blob twice; docker before 25 wrote the
/// second listing as a relative symbolic link to the first layer's file. Both load, once.
#[test]
fn a_layer_repeated_in_an_image_loads_once_also_through_a_link() {
    let top = LayerTar::new()
        .file("hello.txt", b"hand-built\n", 0o644)
        .finish();
    let b = image::build(
        &[
            (busybox_base().finish(), Comp::None),
            (top.clone(), Comp::None),
            (top, Comp::None),
        ],
        &image::ImageOpts {
            config: json!({"Cmd": ["cat", "/hello.txt"]}),
            ..image::ImageOpts::default()
        },
    );
    let same_name = docker_items(&b, &["twice:1"]);
    let layer = format!("{}.tar", hex(&b.layer_digests[2]));
    let mut linked = edit_manifest(docker_items(&b, &["twice:1"]), |m| {
        m[0]["Layers"][2] = json!("dup/layer.tar")
    });
    linked.push(Item::Dir("dup".into()));
    linked.push(Item::Symlink("dup/layer.tar".into(), format!("../{layer}")));
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        for (what, items) in [("same name", &same_name), ("link", &linked)] {
            let root = home_path(&s, &format!("store-{}", what.replace(' ', "-")));
            load_and_run(&s, &root, &tar(items), "twice:1");
            let ins = nook_at(&s, &root, &["inspect", "twice:1"]);
            ins.ok();
            let v: Value = serde_json::from_str(&ins.stdout).unwrap();
            assert_eq!(
                v[0]["RootFS"]["Layers"].as_array().map(Vec::len),
                Some(3),
                "{mode:?} {what}: {}",
                ins.stdout
            );
        }
    }
}

#[test]
fn docker25_nested_unnamed_and_compressed_archives_load() {
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        let root = home_path(&s, "hand");
        // Docker ≥ 25: an OCI layout plus manifest.json and legacy links, gzipped whole.
        let b = built(true, Comp::Gzip, "d25");
        let ann = json!({"io.containerd.image.name": "docker.io/library/d25:v1", "org.opencontainers.image.ref.name": "v1"});
        let out = load_and_run(&s, &root, &gzip(&tar(&oci_items(&b, ann, true))), "d25:v1");
        assert_eq!(out.stdout, "Loaded image: d25:v1\n");
        let got = inspect_at(&s, &root, "d25:v1");
        assert_eq!(got["Id"], b.config_digest.as_str());
        assert_eq!(got["ManifestDigest"], b.digest.as_str());
        // docker-archive with gzip layers inside, zstd-compressed whole.
        let b = built(false, Comp::Gzip, "gz");
        let items = docker_items(&b, &["gz/app:1", "gz/app:2"]);
        let out = load_and_run(
            &s,
            &root,
            &zstd::encode_all(&tar(&items)[..], 3).unwrap(),
            "gz/app:2",
        );
        assert_eq!(
            out.stdout,
            "Loaded image: gz/app:1\nLoaded image: gz/app:2\n"
        );
        assert_eq!(
            inspect_at(&s, &root, "gz/app:1")["Id"],
            b.config_digest.as_str()
        );
        // An OCI layout without a name: untagged, by id.
        let b = built(true, Comp::None, "none");
        let out = load_and_run(
            &s,
            &root,
            &tar(&oci_items(&b, Value::Null, false)),
            &b.config_digest,
        );
        assert_eq!(
            out.stdout,
            format!("Loaded image ID: {}\n", b.config_digest)
        );
        assert!(images(&s, Some(&root))[&b.config_digest].is_empty());
        // An index inside index.json: the host's manifest is chosen.
        let amd = built(true, Comp::Zstd, "multi");
        let mut arm_opts = image::ImageOpts {
            oci: true,
            arch: "arm64".into(),
            ..image::ImageOpts::default()
        };
        arm_opts.config = json!({"Cmd": ["false"]});
        let arm = image::build(
            &[(
                LayerTar::new().file("x", b"arm", 0o644).finish(),
                Comp::Gzip,
            )],
            &arm_opts,
        );
        let (ibytes, imt, idigest) = image::index(&[&amd, &arm], true);
        let mut items: Vec<Item> = oci_items(&amd, Value::Null, false)
            .into_iter()
            .filter(|i| !matches!(i, Item::File(n, _) if n == "index.json"))
            .collect();
        items.push(Item::File(
            format!("blobs/sha256/{}", hex(&idigest)),
            ibytes.clone(),
        ));
        let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": imt, "digest": idigest, "size": ibytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
        items.push(Item::File(
            "index.json".into(),
            serde_json::to_vec(&top).unwrap(),
        ));
        let out = load_and_run(&s, &root, &tar(&items), "localhost/multi");
        assert_eq!(out.stdout, "Loaded image: localhost/multi:latest\n");
        let got = inspect_at(&s, &root, "localhost/multi");
        assert_eq!(got["Id"], amd.config_digest.as_str());
        assert_eq!(got["IndexDigest"], idigest.as_str());
    }
}

/// Hostile archives, each with the words its refusal must contain.
fn hostile_archives() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let b = built(false, Comp::Gzip, "hostile");
    let docker = || docker_items(&b, &["hostile:1"]);
    let layer0 = format!("{}.tar", hex(&b.layer_digests[0]));
    let layer1 = format!("{}.tar", hex(&b.layer_digests[1]));
    let mut v = Vec::new();
    let mut items = docker();
    items.insert(0, Item::File("../escape".into(), b"x".to_vec()));
    v.push((
        "dotdot entry",
        tar(&items),
        "\"../escape\": a path with '..'",
    ));
    let mut items = docker();
    items.insert(0, Item::File("/tmp/nook-archive-abs".into(), b"x".to_vec()));
    v.push((
        "absolute entry",
        tar(&items),
        "\"/tmp/nook-archive-abs\": an absolute path",
    ));
    let items = edit_manifest(docker(), |m| {
        m[0]["Layers"][1] = json!(format!("../{layer1}"))
    });
    v.push(("manifest names ..", tar(&items), "a path with '..'"));
    let items = edit_manifest(docker(), |m| m[0]["Config"] = json!("/etc/passwd"));
    v.push((
        "manifest names an absolute path",
        tar(&items),
        "names \"/etc/passwd\": an absolute path",
    ));
    // A symbolic link may stand for a layer only inside the archive (see
    // a_layer_repeated_through_a_link_loads): one leading out, absolute or through `..`,
    // is refused as a link.
    for (case, target) in [
        ("layer is an absolute symlink", "/etc/passwd"),
        ("layer is a symlink climbing out", "../../../../etc/passwd"),
    ] {
        let mut items = replace(docker(), &layer1, None);
        items.insert(0, Item::Symlink(layer1.clone(), target.into()));
        v.push((case, tar(&items), "a symbolic link, not a file"));
    }
    let mut items = docker();
    items.insert(
        0,
        Item::File(
            layer1.clone(),
            image::compress(&LayerTar::new().finish(), Comp::None),
        ),
    );
    v.push((
        "a layer entry written twice",
        tar(&items),
        "the name appears twice",
    ));
    let mut items = docker();
    let Some(Item::File(_, m)) = items.pop() else {
        panic!()
    };
    items.push(Item::File("m.json".into(), m));
    items.push(Item::Hardlink("manifest.json".into(), "m.json".into()));
    v.push((
        "manifest.json is a hard link",
        tar(&items),
        "a hard link, not a file",
    ));
    let items = replace(docker(), &layer0, None);
    v.push(("missing layer", tar(&items), "which the archive lacks"));
    let other = "ab".repeat(32);
    let items = edit_manifest(docker(), |m| {
        m[0]["Config"] = json!(format!("{other}.json"))
    });
    let mut items = replace(items, &format!("{}.json", hex(&b.config_digest)), None);
    items.push(Item::File(format!("{other}.json"), b.config.clone()));
    v.push((
        "config named by another digest",
        tar(&items),
        "content is sha256:",
    ));
    // A layer whose content is not the one the config names: found while unpacking, after the
    // first (new) layer went in, which must be taken out again.
    let fresh = LayerTar::new()
        .file("fresh.txt", b"new layer\n", 0o644)
        .finish();
    let wrong = LayerTar::new()
        .file("wrong.txt", b"not the layer\n", 0o644)
        .finish();
    let right = LayerTar::new()
        .file("right.txt", b"the layer\n", 0o644)
        .finish();
    let b2 = image::build(
        &[(fresh, Comp::Gzip), (right.clone(), Comp::Gzip)],
        &image::ImageOpts::default(),
    );
    let name = format!("{}.tar", hex(&b2.layer_digests[1]));
    let items = replace(
        docker_items(&b2, &["bad:1"]),
        &name,
        Some(Item::File(
            name.clone(),
            image::compress(&wrong, Comp::Gzip),
        )),
    );
    v.push((
        "layer unlike its diff_id",
        tar(&items),
        "uncompressed content is",
    ));
    // Unpacking skips a diff_id the store has (busybox's, from the sandbox) and a diff_id an
    // earlier listing unpacks: a blob standing for one must still be that layer.
    let known = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &image::ImageOpts {
            config: json!({"Cmd": ["true"]}),
            ..image::ImageOpts::default()
        },
    );
    let name = format!("{}.tar", hex(&known.layer_digests[0]));
    let items = replace(
        docker_items(&known, &["known:1"]),
        &name,
        Some(Item::File(
            name.clone(),
            image::compress(&wrong, Comp::Gzip),
        )),
    );
    v.push((
        "layer unlike a diff_id the store has",
        tar(&items),
        "uncompressed content is",
    ));
    let twice = image::build(
        &[(right.clone(), Comp::Gzip), (right, Comp::Gzip)],
        &image::ImageOpts::default(),
    );
    let mut items = edit_manifest(docker_items(&twice, &["twice:1"]), |m| {
        m[0]["Layers"][1] = json!("other.tar")
    });
    items.push(Item::File(
        "other.tar".into(),
        image::compress(&wrong, Comp::Gzip),
    ));
    v.push((
        "a diff_id listed again over another blob",
        tar(&items),
        "uncompressed content is",
    ));
    // OCI: a blob that is not its digest, and an oversized index.json.
    let o = built(true, Comp::Gzip, "hostile-oci");
    let blob = format!("blobs/sha256/{}", hex(&o.layer_digests[1]));
    let mut bad = support::archive::blob(&o, &o.layer_digests[1]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let items = replace(
        oci_items(&o, Value::Null, false),
        &blob,
        Some(Item::File(blob.clone(), bad)),
    );
    v.push(("blob unlike its digest", tar(&items), "content is sha256:"));
    let mut huge = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
    huge.resize(9 << 20, b' ');
    huge.push(b'}');
    let items = replace(
        oci_items(&o, Value::Null, false),
        "index.json",
        Some(Item::File("index.json".into(), huge)),
    );
    v.push((
        "oversized index.json",
        tar(&items),
        "over the 8388608-byte limit",
    ));
    v
}

#[test]
fn hostile_archives_are_refused_and_leave_the_store_as_it_was() {
    let cases = hostile_archives();
    for mode in MODES {
        let Some(s) = Sandbox::new(mode) else { return };
        for (what, bytes, needle) in &cases {
            let file = put(&s, "hostile.tar", bytes);
            let before = store_files(&s.user.store());
            let out = s.nook(&["load", "-i", &file]);
            out.fails_with(125, needle);
            assert_eq!(
                store_files(&s.user.store()),
                before,
                "{mode:?} {what}: the store changed"
            );
            assert!(!Path::new("/tmp/nook-archive-abs").exists(), "{what}");
            assert!(!s.user.store().join("tmp/escape").exists(), "{what}");
        }
        // The same bytes, repaired, load: the refusals were about what each case broke.
        let b = built(false, Comp::Gzip, "hostile");
        let file = put(&s, "fine.tar", &tar(&docker_items(&b, &["hostile:1"])));
        s.nook(&["load", "-i", &file]).ok();
    }
}

#[test]
fn save_to_stdout_load_from_stdin_and_oci_dir() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let raw = s.user.nook(&["save", &s.image]).output().unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let root = home_path(&s, "piped");
    let out = s.user.run_input(
        &["--root", root.to_str().unwrap(), "load"],
        &[],
        &raw.stdout,
    );
    out.ok();
    assert_eq!(out.stdout, format!("Loaded image: {}:latest\n", s.image));
    s.nook(&["save", "--format", "oci-dir", &s.image])
        .fails_with(125, "--format oci-dir needs -o DIRECTORY");
    let dir = home_path(&s, "layout");
    s.nook(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &s.image,
    ])
    .ok();
    let Some(inspected) = skopeo(&["inspect", "--raw", &format!("oci:{}", dir.display())]) else {
        return;
    };
    inspected.ok();
    let m: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["digest"],
        support::build::inspect(&s, &s.image)["Id"]
    );
    s.nook(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        &s.image,
    ])
    .fails_with(125, "is not empty");
}
