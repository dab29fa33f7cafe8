//! Differential conformance: one script of filesystem operations (tests/support/fsops.c) runs
//! under the kernel overlay and under nook's FUSE overlay, on the same image as the same user,
//! and the two normalised outputs must be identical — return codes, errno names, stat fields,
//! listings, contents and user.* xattrs — for every operation on every kind of target: a
//! lower-only entry, an upper-only entry, a copied-up entry, a name deleted and re-created in
//! the container, and a name deleted by a whiteout in the image and re-created.
//!
//! The kernel overlay mounts only with an id range (Mode::Range); the FUSE overlay runs in
//! both modes, and under a single mapping it records owners itself, so its output is held to
//! the same kernel output (less the "as_user" operation, which needs a second id).
//!
//! A difference is either a bug to fix in src/fuse or an entry in `EXPECTED` /
//! `EXPECTED_SINGLE` that says why the kernel's behaviour is not nook's to copy. On failure the
//! differing blocks are printed side by side; NOOK_FSDIFF_OUT=DIR keeps both whole outputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use support::env::{Mode, Out};
use support::image::{Comp, LayerTar, busybox_base};
use support::sandbox::{Sandbox, probe_dir};

/// Differences the kernel overlay's own workings explain: (block, kernel line, fuse line).
/// Every entry says why; keep them few.
const EXPECTED: &[Allowed] = &[
    // rename(d, n) onto a non-empty directory fails with ENOTEMPTY on both, but the kernel
    // overlay first does its bookkeeping on the upper layer (it marks a pure-upper `d` opaque
    // before moving it into a merged directory, and for opaque directories it prepares the
    // move in the parent), so times move although nothing changed. A failed call that leaves
    // everything as it was is what POSIX asks; nook does not copy the side effect.
    (
        "rename_dir_over_full_dir.upper",
        "./d dir 0755 nlink=2 ids=0:0 mtime=old ctime=new",
        "./d dir 0755 nlink=2 ids=0:0 mtime=old ctime=old",
    ),
    (
        "rename_dir_over_full_dir.layerwh",
        "./d dir 0755 nlink=2 ids=0:0 mtime=old ctime=new",
        "./d dir 0755 nlink=2 ids=0:0 mtime=old ctime=old",
    ),
    (
        "rename_dir_over_full_dir.recreated",
        ". dir 0755 nlink=1 ids=0:0 mtime=new ctime=new",
        ". dir 0755 nlink=1 ids=0:0 mtime=old ctime=old",
    ),
    // The kernel overlay copies a file up when it is opened for writing; nook's FUSE server
    // answers OPEN with ENOSYS (the kernel then opens files itself and sends no OPEN at all), so
    // it learns of the file only at its first change and copies up then. An open that writes
    // nothing therefore leaves the lower copy in place: no new change time, and the parents
    // stay unmerged (their own link counts).
    (
        "open_for_writing_only.lower",
        ". dir 0755 nlink=1 ids=0:0 mtime=old ctime=new",
        ". dir 0755 nlink=7 ids=0:0 mtime=old ctime=old",
    ),
    (
        "open_for_writing_only.lower",
        "./d dir 0755 nlink=1 ids=0:0 mtime=old ctime=new",
        "./d dir 0755 nlink=2 ids=0:0 mtime=old ctime=old",
    ),
    (
        "open_for_writing_only.lower",
        r#"./d/x reg 0644 nlink=1 ids=0:0 mtime=old ctime=new size=2 data="x\x0a""#,
        r#"./d/x reg 0644 nlink=1 ids=0:0 mtime=old ctime=old size=2 data="x\x0a""#,
    ),
    (
        "open_for_writing_only.lower",
        r#"./f reg 0644 nlink=1 ids=0:0 mtime=old ctime=new size=6 data="hello\x0a""#,
        r#"./f reg 0644 nlink=1 ids=0:0 mtime=old ctime=old size=6 data="hello\x0a""#,
    ),
];

/// Under a single mapping the FUSE overlay keeps owners the namespace cannot map in the
/// user.containers.override_stat xattr, and the kernel refuses user.* xattrs on anything but
/// regular files and directories, so `chown` of a symlink or a fifo succeeds without a record
/// and it keeps showing root. With an id range the kernel stores the real owner. `OP.*` means
/// every kind.
const EXPECTED_SINGLE: &[Allowed] = &[
    (
        "chown.*",
        "./s lnk 0777 nlink=1 ids=1234:1234 mtime=old ctime=new size=1 -> f",
        "./s lnk 0777 nlink=1 ids=0:0 mtime=old ctime=old size=1 -> f",
    ),
    (
        "chown.*",
        "./p fifo 0644 nlink=1 ids=1234:1234 mtime=old ctime=new size=0",
        "./p fifo 0644 nlink=1 ids=0:0 mtime=old ctime=old size=0",
    ),
];

/// Prints the probe's list (`ops` or `kinds`), running it on the host.
fn probe_list(dir: &Path, what: &str) -> Vec<String> {
    let out = std::process::Command::new(dir.join("fsops"))
        .arg(what)
        .output()
        .unwrap();
    assert!(out.status.success(), "fsops {what}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The fixture set fsops.c documents, below `dir`.
fn fixture_set(t: LayerTar, dir: &str) -> LayerTar {
    t.file(&format!("{dir}/f"), b"hello\n", 0o644)
        .file(&format!("{dir}/g"), b"other data\n", 0o644)
        .symlink(&format!("{dir}/s"), "f")
        .dir(&format!("{dir}/d"), 0o755)
        .file(&format!("{dir}/d/x"), b"x\n", 0o644)
        .dir(&format!("{dir}/e"), 0o755)
        .dir(&format!("{dir}/n"), 0o755)
        .file(&format!("{dir}/n/y"), b"y\n", 0o644)
        .dir(&format!("{dir}/sub"), 0o755)
        .file_owned(&format!("{dir}/u"), b"mine\n", 0o644, 1234, 1234)
        .dir_owned(&format!("{dir}/w"), 0o755, 1234, 1234)
        .raw(
            format!("{dir}/p").as_bytes(),
            tar::EntryType::Fifo,
            b"",
            b"",
            0o644,
            0,
            0,
        )
}

/// Busybox, a layer with /t/OP.KIND for every operation and kind (empty for "upper"), and a
/// layer whiting out the whole set in the "layerwh" directories.
fn fixture_image(s: &Sandbox, ops: &[String], kinds: &[String]) -> String {
    let mut lower = LayerTar::new().dir("t", 0o755);
    let mut top = LayerTar::new().dir("t", 0o755);
    for op in ops {
        for kind in kinds {
            let dir = format!("t/{op}.{kind}");
            lower = lower.dir(&dir, 0o755);
            if kind != "upper" {
                lower = fixture_set(lower, &dir);
            }
            if kind == "layerwh" {
                top = top.dir(&dir, 0o755);
                for name in ["f", "g", "s", "p", "u", "d", "e", "n", "sub", "w"] {
                    top = top.whiteout(&dir, name);
                }
            }
        }
    }
    s.image_with(
        "fsdiff",
        &[
            (busybox_base().finish(), Comp::Gzip),
            (lower.finish(), Comp::Gzip),
            (top.finish(), Comp::Gzip),
        ],
        json!({"Cmd": ["sh"]}),
    )
}

/// Runs the script in a fresh container on `driver`.
fn run_script(s: &Sandbox, driver: &str, image: &str) -> Out {
    let dir = probe_dir().expect("fsops");
    let vol = format!("{}:/probe:ro", dir.display());
    s.nook(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--rootfs-driver",
        driver,
        "-v",
        &vol,
        image,
        "/probe/fsops",
        "run",
        "/t",
    ])
}

/// The output split into blocks, one per unindented header line.
fn blocks(out: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut key = String::from("<start>");
    for line in out.lines() {
        if line.starts_with(' ') {
            map.entry(key.clone()).or_default().push(line.to_owned());
        } else {
            key = line.to_owned();
            map.entry(key.clone()).or_default();
        }
    }
    map
}

/// The output less the blocks of operation `op` (on every kind).
fn without_op(out: &str, op: &str) -> String {
    let head = format!("{op}.");
    let mut keep = true;
    let mut kept = String::new();
    for line in out.lines() {
        if !line.starts_with(' ') {
            keep = !line.starts_with(&head);
        }
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// An allowed difference: (block, kernel line, fuse line), lines without their indent.
type Allowed = (&'static str, &'static str, &'static str);

fn allows(a: &Allowed, block: &str, kernel: &str, fuse: &str) -> bool {
    let in_block = match a.0.strip_suffix('*') {
        Some(op) => block.starts_with(op),
        None => a.0 == block,
    };
    in_block && a.1 == kernel.trim() && a.2 == fuse.trim()
}

/// The blocks that differ, side by side, less the allowed differences (empty when they
/// agree); and for each allowed difference whether it showed up.
fn differences(kernel: &str, fuse: &str, allowed: &[Allowed]) -> (String, Vec<bool>) {
    let (k, f) = (blocks(kernel), blocks(fuse));
    let mut used = vec![false; allowed.len()];
    let mut report = String::new();
    let names: std::collections::BTreeSet<&String> = k.keys().chain(f.keys()).collect();
    for name in names {
        let kl = k.get(name).map(Vec::as_slice).unwrap_or_default();
        let fl = f.get(name).map(Vec::as_slice).unwrap_or_default();
        let mut lines = String::new();
        for i in 0..kl.len().max(fl.len()) {
            let a = kl.get(i).map(String::as_str).unwrap_or("<none>");
            let b = fl.get(i).map(String::as_str).unwrap_or("<none>");
            if a == b {
                continue;
            }
            match allowed.iter().position(|x| allows(x, name, a, b)) {
                Some(j) => used[j] = true,
                None => lines.push_str(&format!("  kernel: {a}\n  fuse:   {b}\n")),
            }
        }
        if !lines.is_empty() {
            report.push_str(&format!("{name}\n{lines}"));
        }
    }
    (report, used)
}

fn kernel_output(s: &Sandbox, image: &str) -> String {
    let out = run_script(s, "overlay", image);
    assert_eq!(out.code, 0, "kernel overlay run failed:\n{}", out.stderr);
    assert!(
        !out.stdout.contains("setup"),
        "fixture setup failed:\n{}",
        out.stdout
    );
    out.stdout
}

/// Asserts the outputs agree but for `allowed`; returns which allowed differences showed up.
/// With NOOK_FSDIFF_OUT=DIR both outputs are kept there.
fn assert_agree(kernel: &str, fuse: &Out, what: &str, allowed: &[Allowed]) -> Vec<bool> {
    assert_eq!(fuse.code, 0, "{what} run failed:\n{}", fuse.stderr);
    if let Some(dir) = std::env::var_os("NOOK_FSDIFF_OUT") {
        let dir = Path::new(&dir);
        std::fs::write(dir.join(format!("{what}.kernel")), kernel).unwrap();
        std::fs::write(dir.join(format!("{what}.fuse")), &fuse.stdout).unwrap();
    }
    let (diff, used) = differences(kernel, &fuse.stdout, allowed);
    assert!(
        diff.is_empty(),
        "{what} differs from the kernel overlay:\n{diff}"
    );
    for (a, u) in allowed.iter().zip(&used) {
        if !*u {
            eprintln!("note: allowed difference not seen on this kernel: {a:?}");
        }
    }
    used
}

fn setup() -> Option<(Sandbox, Vec<String>, Vec<String>)> {
    let s = Sandbox::new(Mode::Range)?;
    let dir = probe_dir()?;
    let (ops, kinds) = (probe_list(&dir, "ops"), probe_list(&dir, "kinds"));
    Some((s, ops, kinds))
}

#[test]
fn fuse_agrees_with_kernel_overlay_with_an_id_range() {
    let Some((s, ops, kinds)) = setup() else {
        return;
    };
    let image = fixture_image(&s, &ops, &kinds);
    let kernel = kernel_output(&s, &image);
    // The script really ran every operation on every kind.
    assert_eq!(
        kernel.lines().filter(|l| !l.starts_with(' ')).count(),
        2 * ops.len() * kinds.len(),
        "{kernel}"
    );
    let fuse = run_script(&s, "fuse", &image);
    assert_agree(&kernel, &fuse, "fuse-range", EXPECTED);
}

#[test]
fn fuse_agrees_with_kernel_overlay_with_a_single_mapping() {
    let Some((s, ops, kinds)) = setup() else {
        return;
    };
    let Some(single) = Sandbox::new(Mode::Single) else {
        return;
    };
    // A single mapping has no uid 1234 to switch to: "as_user" is compared with an id range only.
    let kernel = without_op(
        &kernel_output(&s, &fixture_image(&s, &ops, &kinds)),
        "as_user",
    );
    let mut fuse = run_script(&single, "fuse", &fixture_image(&single, &ops, &kinds));
    fuse.stdout = without_op(&fuse.stdout, "as_user");
    let allowed = [EXPECTED, EXPECTED_SINGLE].concat();
    let used = assert_agree(&kernel, &fuse, "fuse-single", &allowed);
    // The exceptions are nook's own behaviour, so they must show: those owners went unrecorded.
    assert!(used[EXPECTED.len()..].iter().all(|u| *u), "{used:?}");
}

#[test]
fn differences_name_the_block_and_honour_the_allowed_list() {
    let kernel = "op.lower\n  a -> 0\n    . dir\n";
    assert_eq!(differences(kernel, kernel, &[]), (String::new(), vec![]));
    let fuse = "op.lower\n  a -> EPERM\n    . dir\n";
    assert_eq!(
        differences(kernel, fuse, &[]).0,
        "op.lower\n  kernel:   a -> 0\n  fuse:     a -> EPERM\n"
    );
    assert_eq!(
        differences(kernel, "op.lower\n  a -> 0\n", &[]).0,
        "op.lower\n  kernel:     . dir\n  fuse:   <none>\n"
    );
    // An allowed difference is left out and reported as seen, by block or by operation.
    let exact: Allowed = ("op.lower", "a -> 0", "a -> EPERM");
    let any_kind: Allowed = ("op.*", "a -> 0", "a -> EPERM");
    let other: Allowed = ("op.upper", "a -> 0", "a -> EPERM");
    for a in [exact, any_kind] {
        assert_eq!(differences(kernel, fuse, &[a]), (String::new(), vec![true]));
    }
    let two = "op.lower\n  a -> 0\nas_user.lower\n  b -> 0\nprepare as_user.lower\n";
    assert_eq!(
        without_op(two, "as_user"),
        "op.lower\n  a -> 0\nprepare as_user.lower\n"
    );
    let (diff, used) = differences(kernel, fuse, &[other]);
    assert!(diff.contains("EPERM"), "{diff}");
    assert_eq!(used, vec![false]);
}
