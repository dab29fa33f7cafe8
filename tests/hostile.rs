//! Hostile layers pulled through the whole pipeline (registry → stream → unpack), as an
//! ordinary user: nothing outside the layer directory may change, and a refused layer leaves
//! nothing in the store. src/unpack/tests.rs covers each escape class in detail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use support::registry::TestRegistry;

fn snapshot(dir: &Path) -> Vec<(String, u32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let data = if m.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            vec![]
        };
        out.push((e.display().to_string(), m.mode(), m.nlink(), data));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.is_dir()
        && !std::fs::symlink_metadata(dir)
            .unwrap()
            .file_type()
            .is_symlink()
    {
        for e in std::fs::read_dir(dir).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

#[test]
fn hostile_layers_change_nothing_outside() {
    for mode in [Mode::Range, Mode::Single] {
        // A mode this host lacks skips that mode only (User::new says why), not the others.
        let Some(user) = User::new(mode) else {
            continue;
        };
        let Some(reg) = TestRegistry::start() else {
            continue;
        };
        let outside = user.work.path().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("file"), b"precious").unwrap();
        for p in [outside.clone(), outside.join("dir"), outside.join("file")] {
            user.give(&p);
        }
        let abs = outside.display().to_string();
        // From store/tmp/unpack-X/root, four levels up is the user's work directory.
        let up = "../../../../outside";
        let cases: Vec<(&str, LayerTar, bool)> = vec![
            (
                "dotdot",
                LayerTar::new().file(&format!("{up}/file"), b"pwned", 0o644),
                false,
            ),
            (
                "symlinked-parent",
                LayerTar::new()
                    .symlink("s", &abs)
                    .file("s/pwned", b"x", 0o644)
                    .dir("s/newdir", 0o777),
                false,
            ),
            (
                "hardlink-out",
                LayerTar::new().hardlink("h", &format!("{up}/file")),
                false,
            ),
            (
                "hardlink-abs",
                LayerTar::new().hardlink("h", &format!("{abs}/file")),
                false,
            ),
            (
                "dot-symlink",
                LayerTar::new()
                    .symlink(".", &abs)
                    .file("pwned", b"x", 0o644),
                false,
            ),
            (
                "chmod-through-symlink",
                LayerTar::new()
                    .dir("d", 0o777)
                    .symlink("d", &format!("{abs}/dir")),
                true,
            ),
            (
                "write-through-symlink",
                LayerTar::new()
                    .symlink("f", &format!("{abs}/file"))
                    .file("f", b"pwned", 0o777),
                true,
            ),
            (
                "bare-whiteout",
                LayerTar::new().file("etc/.wh.", b"", 0o644),
                false,
            ),
            (
                "whiteout-out",
                LayerTar::new().file(&format!("{up}/.wh.file"), b"", 0o644),
                false,
            ),
        ];
        for (name, layer, harmless) in cases {
            let before = snapshot(&outside);
            let bad = layer.finish();
            let b = image::build(
                &[(busybox_base().finish(), Comp::Gzip), (bad, Comp::Gzip)],
                &ImageOpts::default(),
            );
            image::push(&reg.url, &format!("hostile/{name}"), "latest", &b);
            let out = user.run(&["pull", &format!("{}/hostile/{name}", reg.host)]);
            assert_eq!(
                before,
                snapshot(&outside),
                "{name} ({mode:?}) changed the outside; stderr: {}",
                out.stderr
            );
            let layer_dir = user.store().join("layers").join(&b.diff_ids[1][7..]);
            if harmless {
                out.ok();
            } else {
                assert_eq!(
                    out.code, 125,
                    "{name} ({mode:?}) was accepted: {}",
                    out.stderr
                );
                assert!(
                    out.stderr.contains("refusing layer entry")
                        || out.stderr.contains("cannot write layer entry"),
                    "{name}: {}",
                    out.stderr
                );
                assert!(!layer_dir.exists(), "{name}: a refused layer was committed");
            }
            let stale: Vec<_> = std::fs::read_dir(user.store().join("tmp"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("unpack-"))
                .collect();
            assert!(stale.is_empty(), "{name}: staging left behind: {stale:?}");
        }
    }
}
