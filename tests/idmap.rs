//! Id maps and the image's USER: with a single mapping (no /etc/subuid entry) the one id
//! mapped is the user the command runs as, so an image whose USER is not root runs as that
//! user, with the image's owners and modes deciding what it may write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::env::{Mode, Out};
use support::image::LayerTar;
use support::sandbox::Sandbox;

/// An image whose USER is `app` (1234), named only in the top layer's /etc/passwd (the base's
/// calls 1234 `user`), with a home of its own and a root-owned file in it.
fn app_image(s: &Sandbox) -> String {
    let top = LayerTar::new()
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\nbuddy:x:2000:2000::/:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\napp:x:1234:\nbuddy:x:2000:\n", 0o644)
        .dir("home", 0o755)
        .dir_owned("home/app", 0o755, 1234, 1234)
        .file_owned("home/app/notes", b"n\n", 0o644, 1234, 1234)
        .file("home/app/rootfile", b"r\n", 0o644)
        .finish();
    s.image_over_busybox("appuser", top, json!({"User": "app", "Cmd": ["sh"]}))
}

fn sh(s: &Sandbox, flags: &[&str], img: &str, script: &str) -> Out {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([img, "sh", "-c", script]);
    s.run(&args)
}

/// What the image's user sees and may do, the same under either mapping.
const AS_APP: &str = r#"
id -u; id -g; id -un
set -- $(ls -ln /etc/passwd); echo "passwd $3 $4"
echo hi > /home/app/new && cat /home/app/new
set -- $(ls -ln /home/app/new); echo "new $3 $4"
echo more >> /home/app/notes && echo appended
touch /tmp/t && echo tmp-ok
(echo x >> /etc/passwd) 2>&1
ls /root 2>&1
chown 0 /home/app/new 2>&1
chown 1234 /home/app/new && echo chown-self-ok
"#;

#[track_caller]
fn assert_runs_as_app(out: &Out) {
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..9],
        [
            "1234",
            "1234",
            "app",
            "passwd 0 0",
            "hi",
            "new 1234 1234",
            "appended",
            "tmp-ok",
            "sh: can't create /etc/passwd: Permission denied"
        ],
        "{}",
        out.stdout
    );
    assert!(
        lines[9].contains("/root") && lines[9].contains("Permission denied"),
        "{}",
        out.stdout
    );
    assert!(
        lines[10].contains("Operation not permitted"),
        "chown to root: {}",
        out.stdout
    );
    assert_eq!(lines[11..], ["chown-self-ok"], "{}", out.stdout);
}

#[test]
fn single_mapping_runs_image_with_non_root_user() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let img = app_image(&s);
    let maps = sh(&s, &[], &img, "cat /proc/self/uid_map /proc/self/gid_map");
    maps.ok();
    assert_eq!(
        maps.stdout.split_whitespace().collect::<Vec<_>>(),
        [
            "1234",
            &s.user.uid.to_string(),
            "1",
            "1234",
            &s.user.gid.to_string(),
            "1"
        ]
    );
    let out = sh(&s, &["--rootfs-driver", "fuse"], &img, AS_APP);
    assert_runs_as_app(&out);
    // Only the owner changes a mode: /tmp is writable, not the user's to chmod. Fifos (which
    // cannot carry an owner record) work for the user that makes them.
    let script = "chmod 700 /tmp 2>&1; chmod 600 /home/app/notes && stat -c %a /home/app/notes
        cd /home/app && mkfifo p && (echo through > p &) && cat p && mv p q && rm q && echo fifo-ok
        rm rootfile 2>&1; echo \"rm=$?\"";
    let out = sh(&s, &["--rootfs-driver", "fuse"], &img, script);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("Operation not permitted"),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1..4], ["600", "through", "fifo-ok"], "{}", out.stdout);
    // The kernel's limit (may_delete): an object whose owner is not mapped cannot be removed
    // or renamed, even from a directory the user owns (EOVERFLOW).
    assert!(
        lines[4].contains("Value too large for defined data type") && lines[5] == "rm=1",
        "{}",
        out.stdout
    );
}

#[test]
fn single_mapping_user_flag_picks_the_mapped_id() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let img = app_image(&s);
    for user in ["2000", "buddy", "buddy:app"] {
        let out = sh(
            &s,
            &["-u", user],
            &img,
            "id -u; id -un; cat /proc/self/uid_map",
        );
        out.ok();
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        assert_eq!(
            words[..4],
            ["2000", "buddy", "2000", &s.user.uid.to_string()],
            "-u {user}"
        );
    }
    let out = sh(&s, &["-u", "4242"], &img, "id -u; id -g");
    out.ok();
    assert_eq!(
        out.stdout, "4242\n0\n",
        "a numeric user missing from passwd gets group 0"
    );
    // Root keeps the old single mapping: root is you, and may write anywhere.
    let out = sh(
        &s,
        &["-u", "root"],
        &img,
        "id -u; cat /proc/self/uid_map; echo x >> /etc/passwd && echo root-writes",
    );
    out.ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "0", &s.user.uid.to_string(), "1", "root-writes"]
    );
    let keep = sh(&s, &["--userns", "keep-id"], &img, "id -u");
    keep.ok();
    assert_eq!(keep.stdout.trim(), s.user.uid.to_string());
    let bad = s.run(&["-u", "ghost", &img, "true"]);
    bad.fails_with(
        125,
        "unable to find user ghost: no matching entries in passwd file",
    );
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
    s.run(&["-u", "app:nogroup", &img, "true"])
        .fails_with(125, "unable to find group nogroup");
}

#[test]
fn range_mapping_runs_the_same_image_as_before() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let img = app_image(&s);
    let out = sh(&s, &[], &img, AS_APP);
    assert_runs_as_app(&out);
    let maps = sh(&s, &[], &img, "cat /proc/self/uid_map");
    maps.ok();
    assert_eq!(
        maps.stdout.split_whitespace().take(3).collect::<Vec<_>>(),
        ["0", &s.user.uid.to_string(), "1"]
    );
}

#[test]
fn single_mapping_never_reads_a_passwd_outside_the_image() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    // A host file that would resolve `app`, and an image whose /etc/passwd points at it.
    let host = s.user.write_home("passwd", b"app:x:1234:1234::/:/bin/sh\n");
    let top = LayerTar::new()
        .whiteout("etc", "passwd")
        .symlink("etc/passwd", host.to_str().unwrap())
        .finish();
    let img = s.image_over_busybox("linkedpasswd", top, json!({"User": "app", "Cmd": ["sh"]}));
    s.run(&[&img, "true"]).fails_with(
        125,
        "unable to find user app: no matching entries in passwd file",
    );
}

#[test]
fn info_says_how_a_single_mapping_maps_ids() {
    let Some(s) = Sandbox::new(Mode::Single) else {
        return;
    };
    let out = s.nook(&["info", "--format", "json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ids = v["rungs"]["ids"].as_str().unwrap();
    assert!(
        ids.starts_with("single mapping (no entry for ")
            && ids.contains("/etc/subuid")
            && ids.contains("the image's USER, or root) is you"),
        "{ids}"
    );
}
