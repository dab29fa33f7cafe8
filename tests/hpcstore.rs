//! Shared image stores and site defaults (issue 15): a store filled once with `nook --root DIR
//! pull`, made world-readable and mounted read-only, serves both test users (a subordinate
//! range and a single id) without copying and without a write to it; a store filled with a
//! range is refused for others; a site config (`NOOK_SYSTEM_CONFIG`) under the user's gives
//! `[storage] additional_image_stores`, `[run] userns` and `[run] binds`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base, sha256};
use support::sandbox::Sandbox;

/// A read-only bind mount of a directory, unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn of(dir: &Path, at: &Path) -> Option<ReadOnly> {
        std::fs::create_dir_all(at).unwrap();
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        if !ok(Command::new("mount").arg("--bind").arg(dir).arg(at)) {
            support::skip("cannot bind-mount (the suite must run as root)");
            return None;
        }
        let guard = ReadOnly(at.to_owned());
        assert!(ok(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at)));
        Some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A checksum of everything about the tree below `dir` a write could change.
fn listing(dir: &Path) -> String {
    let out = Command::new("find")
        .arg(dir)
        .args(["-printf", "%P %y %s %m %U %G %T@\\n"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    lines.sort_unstable();
    sha256(lines.join("\n").as_bytes())
}

fn chmod_readable(dir: &Path) {
    let s = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(dir)
        .status()
        .unwrap();
    assert!(s.success());
}

/// Pushes busybox with a layer of files on top (not pulled anywhere); returns its reference.
fn push_image(s: &Sandbox) -> String {
    push_hello(s, b"from the shared store\n")
}

fn push_hello(s: &Sandbox, hello: &[u8]) -> String {
    let top = LayerTar::new()
        .dir("work", 0o755)
        .file("work/hello", hello, 0o644)
        .file_owned("work/app", b"app's\n", 0o644, 1000, 1000)
        .finish();
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip), (top, Comp::Gzip)],
        &ImageOpts {
            config: json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/work"}),
            ..ImageOpts::default()
        },
    );
    image::push(&s.reg.url, "shared", "latest", &b);
    format!("{}/shared", s.reg.host)
}

fn layers_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("layers")).map_or(0, |d| d.count())
}

#[test]
fn a_read_only_shared_store_serves_both_users() {
    // The filler has no subordinate range: its store keeps owners in records.
    let Some(filler) = Sandbox::new(Mode::Single) else {
        return;
    };
    let Some(other) = User::new(Mode::Range) else {
        return;
    };
    let image = push_image(&filler);
    let shared = filler.user.work.path().join("shared");
    let shared_s = shared.to_str().unwrap();
    filler
        .user
        .run(&["--root", shared_s, "pull", "-q", &image])
        .ok();
    chmod_readable(&shared);
    let Some(ro) = ReadOnly::of(&shared, &filler.user.work.path().join("ro")) else {
        return;
    };
    let ro_s = ro.0.to_str().unwrap().to_owned();
    let before = listing(&ro.0);
    let opt = format!("additionalimagestore={ro_s}");
    let site = filler.user.work.path().join("site.toml");
    std::fs::write(
        &site,
        format!("[storage]\nadditional_image_stores = [\"{ro_s}\"]\n"),
    )
    .unwrap();
    for user in [&other, &filler.user] {
        let own_layers = layers_in(&user.store());
        let images = user.run(&["--storage-opt", &opt, "images"]);
        images.ok();
        assert!(images.stdout.contains("R/O"), "{}", images.stdout);
        let row = images
            .stdout
            .lines()
            .find(|l| l.contains("/shared"))
            .unwrap();
        assert!(row.trim_end().ends_with("true"), "{row}");
        let plain = user.run(&["images"]);
        assert!(!plain.stdout.contains("/shared"), "{}", plain.stdout);
        user.run(&["--storage-opt", &opt, "inspect", &image]).ok();
        user.run(&["--storage-opt", &opt, "history", &image]).ok();
        let script = "cat hello app; echo mine > new; cat new; echo more >> hello; \
                      tail -n1 hello; stat -c '%u %a' app; id -u";
        // The site's config names the store this time.
        let out = user.run_env(
            &["run", "--rm", &image, "sh", "-c", script],
            &[("NOOK_SYSTEM_CONFIG", site.to_str().unwrap())],
        );
        out.ok();
        assert!(
            out.stdout
                .starts_with("from the shared store\napp's\nmine\nmore\n"),
            "{}",
            out.stdout
        );
        if Path::new("/dev/fuse").exists() {
            // nook's FUSE overlay shows the owners the store recorded.
            assert!(out.stdout.contains("1000 644\n"), "{}", out.stdout);
        }
        assert_eq!(layers_in(&user.store()), own_layers, "no layer copied");
        assert!(
            user.run(&["--storage-opt", &opt, "rmi", &image])
                .stderr
                .contains("read-only")
        );
    }
    // Through `nook serve`, docker lists and runs the shared store's image too.
    let srv = support::serve::Server::start_env(
        &filler,
        &[("NOOK_SYSTEM_CONFIG", site.to_str().unwrap())],
    );
    let listed = srv.ok(&filler, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains("/shared:"), "{listed}");
    let ran = srv.ok(&filler, &["run", "--rm", &image, "cat", "app"]);
    assert_eq!(ran, "app's\n");
    drop(srv);
    let info = other.run(&["--storage-opt", &opt, "info"]);
    assert!(
        info.ok().stdout.contains(&format!("shared:   {ro_s}")),
        "{}",
        info.stdout
    );
    // The own store wins: another image of that name, pulled by the user, is the one run.
    push_hello(&filler, b"from my own store\n");
    other.run(&["pull", "-q", &image]).ok();
    let out = other.run(&["--storage-opt", &opt, "run", "--rm", &image, "cat", "hello"]);
    assert_eq!(out.ok().stdout, "from my own store\n");
    assert_eq!(listing(&ro.0), before, "the shared store changed");
    drop(ro);
}

#[test]
fn a_store_filled_with_a_range_is_refused_to_others() {
    let Some(filler) = Sandbox::new(Mode::Range) else {
        return;
    };
    let Some(other) = User::new(Mode::Single) else {
        return;
    };
    let image = push_image(&filler);
    let shared = filler.user.work.path().join("shared");
    let shared_s = shared.to_str().unwrap();
    filler
        .user
        .run(&["--root", shared_s, "pull", "-q", &image])
        .ok();
    let opt = format!("additionalimagestore={shared_s}");
    // Not yet readable by others: said so.
    other
        .run(&["--storage-opt", &opt, "images"])
        .fails_with(125, "chmod -R a+rX");
    chmod_readable(&shared);
    other
        .run(&["--storage-opt", &opt, "run", "--rm", &image, "true"])
        .fails_with(125, "without a subordinate range");
    // Its filler may still use it as a shared store of its own.
    filler
        .user
        .run(&["--storage-opt", &opt, "run", "--rm", &image, "cat", "hello"])
        .ok();
    other
        .run(&["--storage-opt", "size=10G", "images"])
        .fails_with(125, "additionalimagestore=DIR");
}

#[test]
fn site_defaults_give_keep_id_and_binds_and_the_user_wins() {
    for mode in [Mode::Range, Mode::Single] {
        let Some(s) = Sandbox::new(mode) else {
            return;
        };
        let scratch = s.user.work.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        std::fs::write(scratch.join("data"), b"scratch data\n").unwrap();
        let missing = s.user.work.path().join("not-here");
        let site = s.user.work.path().join("site.toml");
        std::fs::write(
            &site,
            format!(
                "[run]\nuserns = \"keep-id\"\nbinds = [\"{}\", \"{}:/data:ro\"]\n",
                missing.display(),
                scratch.display()
            ),
        )
        .unwrap();
        let env = [("NOOK_SYSTEM_CONFIG", site.to_str().unwrap())];
        let out = s.user.run_env(
            &[
                "run",
                "--rm",
                &s.image,
                "sh",
                "-c",
                "id -u; cat /data/data; touch /data/x",
            ],
            &env,
        );
        assert_eq!(
            out.stdout,
            format!("{}\nscratch data\n", s.user.uid),
            "{mode:?}: {}",
            out.stderr
        );
        assert_ne!(out.code, 0, "the bind is read-only");
        assert!(out.stderr.contains("not-here"), "{}", out.stderr);
        // The command line, then the user's own file, win over the site's.
        let out = s.user.run_env(
            &["run", "--rm", "--userns", "auto", &s.image, "id", "-u"],
            &env,
        );
        assert_eq!(out.ok().stdout, "0\n", "{mode:?}");
        s.user
            .write_home(".config/nook/config.toml", b"[run]\nuserns = \"auto\"\n");
        let out = s.user.run_env(&["run", "--rm", &s.image, "id", "-u"], &env);
        assert_eq!(out.ok().stdout, "0\n", "{mode:?}");
        std::fs::write(&site, "[run]\nuserns = \"nobody\"\n").unwrap();
        s.user
            .write_home(".config/nook/config.toml", b"")
            .metadata()
            .unwrap();
        s.user
            .run_env(&["run", "--rm", &s.image, "true"], &env)
            .fails_with(125, "invalid [run] userns");
    }
}
