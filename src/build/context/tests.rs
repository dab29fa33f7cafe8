use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::tree::{DirTree, OwnerView};
use super::*;
use crate::build::entry::{Entry, EntryKind, Source};

pub(super) fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, content).unwrap();
}

/// A context directory with a Dockerfile and the given files.
pub(super) fn context_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM scratch\n");
    for (rel, content) in files {
        write(dir.path(), rel, content);
    }
    dir
}

pub(super) fn open(dir: &Path) -> Context {
    Context::from_dir(dir, None, None).unwrap().0
}

pub(super) fn req(sources: &[&str], dest: &str) -> CopyRequest {
    CopyRequest {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_owned(),
        workdir: "/".to_owned(),
        from_context: true,
        ..CopyRequest::default()
    }
}

/// An image root (a directory tree seen with 0:0 owners).
pub(super) fn image_with(dirs: &[&str]) -> (tempfile::TempDir, DirTree) {
    let dir = tempfile::tempdir().unwrap();
    for d in dirs {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let tree = DirTree::open(dir.path(), OwnerView::Root).unwrap();
    (dir, tree)
}

pub(super) fn plan(ctx: &Context, r: &CopyRequest) -> Result<Vec<Entry>, CopyError> {
    let scratch = tempfile::tempdir().unwrap();
    plan_in(ctx, r, scratch.path())
}

/// Plans into an empty image, keeping ADD's files in `scratch`.
pub(super) fn plan_in(
    ctx: &Context,
    r: &CopyRequest,
    scratch: &Path,
) -> Result<Vec<Entry>, CopyError> {
    let (_img, image) = image_with(&[]);
    plan_copy(ctx, &image, r, scratch)
}

pub(super) fn paths(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.path.display().to_string())
        .collect()
}

pub(super) fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == Path::new(path))
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", paths(entries)))
}

fn source_rel(e: &Entry) -> PathBuf {
    match &e.kind {
        EntryKind::File {
            source: Source::Beneath { rel, .. },
            ..
        } => rel.clone(),
        other => panic!("not a file: {other:?}"),
    }
}

#[test]
fn the_dockerfile_is_found_as_docker_and_podman_do() {
    let dir = tempfile::tempdir().unwrap();
    let err = Context::from_dir(dir.path(), None, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Dockerfile") && msg.contains("Containerfile"),
        "{msg}"
    );
    write(dir.path(), "Containerfile", "FROM c\n");
    let (_, df) = Context::from_dir(dir.path(), None, None).unwrap();
    assert_eq!(
        (df.name.as_str(), df.text.as_str()),
        ("Containerfile", "FROM c\n")
    );
    write(dir.path(), "Dockerfile", "FROM d\n");
    let (_, df) = Context::from_dir(dir.path(), None, None).unwrap();
    assert_eq!(df.text, "FROM d\n");
    let via = tempfile::tempdir().unwrap();
    symlink(dir.path(), via.path().join("ctx")).unwrap();
    let (ctx, _) = Context::from_dir(&via.path().join("ctx"), None, None).unwrap();
    assert_eq!(
        ctx.root(),
        fs::canonicalize(dir.path()).unwrap(),
        "named through a link"
    );
    let (_, df) =
        Context::from_dir(dir.path(), Some(Path::new("-")), Some("FROM s".into())).unwrap();
    assert_eq!((df.name.as_str(), df.text.as_str()), ("-", "FROM s"));
    assert!(matches!(
        Context::from_dir(dir.path(), Some(Path::new("-")), None),
        Err(ContextError::NoStdinDockerfile)
    ));
}

#[test]
fn the_ignore_file_beside_the_dockerfile_wins() {
    let dir = context_with(&[(".dockerignore", "a.txt\n"), ("a.txt", "a"), ("b.txt", "b")]);
    let ctx = open(dir.path());
    assert!(ctx.ignored(Path::new("a.txt")) && !ctx.ignored(Path::new("b.txt")));
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "build.df", "FROM x\n");
    write(other.path(), "build.df.dockerignore", "b.txt\n");
    let df = other.path().join("build.df");
    let (ctx, text) = Context::from_dir(dir.path(), Some(&df), None).unwrap();
    assert_eq!(text.text, "FROM x\n");
    assert!(!ctx.ignored(Path::new("a.txt")) && ctx.ignored(Path::new("b.txt")));
    let missing = other.path().join("nope");
    assert!(Context::from_dir(dir.path(), Some(&missing), None).is_err());
    write(dir.path(), ".dockerignore", "!\n");
    let err = Context::from_dir(dir.path(), None, None).unwrap_err();
    assert!(matches!(err, ContextError::Pattern { .. }), "{err}");
}

#[test]
fn ignored_files_are_invisible_and_named_ones_are_not_found() {
    let dir = context_with(&[
        (".dockerignore", "secret\nbuild\n!build/keep\n*.log\n"),
        ("secret", "s"),
        ("build/keep", "k"),
        ("build/drop", "d"),
        ("top.log", "t"),
        ("app/x.log", "l"),
        ("app/main.rs", "m"),
    ]);
    let ctx = open(dir.path());
    assert_eq!(ctx.stat(Path::new("secret")).unwrap(), None);
    assert!(
        ctx.stat(Path::new("build")).unwrap().is_some(),
        "holds a re-included file"
    );
    assert_eq!(ctx.read_dir(Path::new("build")).unwrap(), vec!["keep"]);
    assert_eq!(ctx.stat(Path::new("top.log")).unwrap(), None);
    assert_eq!(
        ctx.read_dir(Path::new("app")).unwrap(),
        vec!["main.rs", "x.log"],
        "as in docker, *.log does not reach into directories"
    );
    let err = plan(&ctx, &req(&["secret"], "/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "COPY failed: file not found in build context or excluded by .dockerignore: stat secret"
    );
    let all = plan(&ctx, &req(&["."], "/app/")).unwrap();
    let mut got = paths(&all);
    got.sort();
    let want = [
        "app",
        "app/.dockerignore",
        "app/Dockerfile",
        "app/app",
        "app/app/main.rs",
        "app/app/x.log",
        "app/build",
        "app/build/keep",
    ];
    assert_eq!(got, want);
}

#[test]
fn an_ignored_directory_with_nothing_reincluded_stays_hidden() {
    let dir = context_with(&[
        (".dockerignore", "build\n!build/keep\n"),
        ("build/drop", "d"),
    ]);
    let ctx = open(dir.path());
    assert_eq!(ctx.stat(Path::new("build")).unwrap(), None);
}

#[test]
fn sources_above_the_context_are_refused() {
    let dir = context_with(&[("a/x", "x")]);
    let ctx = open(dir.path());
    for s in ["../x", "a/../../x", ".."] {
        let err = plan(&ctx, &req(&[s], "/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("forbidden path outside the build context: {s}")
        );
    }
    let ok = plan(&ctx, &req(&["a/../a/x"], "/y")).unwrap();
    assert_eq!(paths(&ok), ["y"]);
}

#[test]
fn a_file_lands_by_name_in_a_directory_dest_else_as_dest() {
    let dir = context_with(&[("f.txt", "hello")]);
    let ctx = open(dir.path());
    let (_img, image) = image_with(&["srv/existing"]);
    let scratch = tempfile::tempdir().unwrap();
    let go = |r: &CopyRequest| plan_copy(&ctx, &image, r, scratch.path()).unwrap();
    assert_eq!(paths(&go(&req(&["f.txt"], "/opt/"))), ["opt", "opt/f.txt"]);
    assert_eq!(
        paths(&go(&req(&["f.txt"], "/srv/existing"))),
        ["srv/existing/f.txt"]
    );
    assert_eq!(paths(&go(&req(&["f.txt"], "/srv/new"))), ["srv/new"]);
    let mut rel = req(&["f.txt"], "sub/");
    rel.workdir = "/srv".to_owned();
    assert_eq!(paths(&go(&rel)), ["srv/sub", "srv/sub/f.txt"]);
    rel.dest = ".".to_owned();
    assert_eq!(paths(&go(&rel)), ["srv/f.txt"]);
    let e = find(&go(&req(&["f.txt"], "/a/b/c")), "a/b/c").clone();
    assert_eq!((e.mode, e.uid, e.gid), (0o644 & e.mode, 0, 0));
    assert_eq!(source_rel(&e), Path::new("f.txt"));
    assert!(matches!(e.kind, EntryKind::File { size: 5, .. }));
}

#[test]
fn created_parents_are_0755_and_take_the_chown_ids() {
    let dir = context_with(&[("f", "x")]);
    let ctx = open(dir.path());
    let mut r = req(&["f"], "/a/b/");
    r.chown = Some((1000, 1001));
    let got = plan(&ctx, &r).unwrap();
    assert_eq!(paths(&got), ["a", "a/b", "a/b/f"]);
    for e in &got {
        assert_eq!((e.uid, e.gid), (1000, 1001), "{}", e.path.display());
    }
    assert_eq!(
        (find(&got, "a").mode, find(&got, "a/b").mode),
        (0o755, 0o755)
    );
}

#[test]
fn a_directory_source_copies_its_contents() {
    let dir = context_with(&[("src/a", "a"), ("src/sub/b", "b")]);
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["src"], "/app")).unwrap();
    assert_eq!(paths(&got), ["app", "app/a", "app/sub", "app/sub/b"]);
    assert_eq!(source_rel(find(&got, "app/sub/b")), Path::new("src/sub/b"));
}

#[test]
fn globs_match_per_segment_and_must_match_something() {
    let dir = context_with(&[
        ("a1.txt", "1"),
        ("a2.txt", "2"),
        ("b.md", "b"),
        ("d/x.txt", "x"),
    ]);
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["a?.txt", "*/*.txt"], "/t/")).unwrap();
    assert_eq!(paths(&got), ["t", "t/a1.txt", "t/a2.txt", "t/x.txt"]);
    let got = plan(&ctx, &req(&["[b-c]*"], "/one")).unwrap();
    assert_eq!(paths(&got), ["one"], "a single match may be named dest");
    let err = plan(&ctx, &req(&["*.none"], "/t/")).unwrap_err();
    assert!(matches!(err, CopyError::NoMatch(_)), "{err}");
    let err = plan(&ctx, &req(&["a*.txt"], "/file")).unwrap_err();
    assert!(matches!(err, CopyError::DestNotDir(_)), "{err}");
    let err = plan(&ctx, &req(&["b.md", "d"], "/file")).unwrap_err();
    assert!(matches!(err, CopyError::DestNotDir(_)), "{err}");
}

#[test]
fn a_named_symlink_out_of_the_context_is_copied_as_a_link() {
    let dir = context_with(&[("real/f", "inside")]);
    symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
    symlink("../../../../etc/passwd", dir.path().join("climb")).unwrap();
    symlink("real/f", dir.path().join("inner")).unwrap();
    symlink("real", dir.path().join("dirlink")).unwrap();
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["passwd"], "/x")).unwrap();
    assert_eq!(got[0].kind, EntryKind::Symlink("/etc/passwd".into()));
    let got = plan(&ctx, &req(&["climb"], "/x")).unwrap();
    assert_eq!(
        got[0].kind,
        EntryKind::Symlink("../../../../etc/passwd".into())
    );
    let got = plan(&ctx, &req(&["inner"], "/x")).unwrap();
    assert_eq!(
        source_rel(&got[0]),
        Path::new("real/f"),
        "the target's content"
    );
    let got = plan(&ctx, &req(&["dirlink"], "/d")).unwrap();
    assert_eq!(paths(&got), ["d", "d/f"]);
    let got = plan(&ctx, &req(&["dirlink/f"], "/y")).unwrap();
    assert_eq!(source_rel(&got[0]), Path::new("real/f"));
}

#[test]
fn symlinks_inside_copied_trees_are_kept_and_never_followed() {
    let dir = context_with(&[("t/f", "x")]);
    symlink("/etc/passwd", dir.path().join("t/p")).unwrap();
    symlink("/etc", dir.path().join("t/etc")).unwrap();
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["t"], "/t")).unwrap();
    assert_eq!(paths(&got), ["t", "t/etc", "t/f", "t/p"]);
    assert_eq!(find(&got, "t/etc").kind, EntryKind::Symlink("/etc".into()));
    assert_eq!(
        find(&got, "t/p").kind,
        EntryKind::Symlink("/etc/passwd".into())
    );
    let err = plan(&ctx, &req(&["t/etc/passwd"], "/x")).unwrap_err();
    assert!(matches!(err, CopyError::NotFound(_)), "{err}");
}

#[test]
fn hard_links_in_the_copied_set_become_links_to_the_first() {
    let dir = context_with(&[("h/a", "same")]);
    fs::hard_link(dir.path().join("h/a"), dir.path().join("h/b")).unwrap();
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["h"], "/h")).unwrap();
    assert!(matches!(find(&got, "h/a").kind, EntryKind::File { .. }));
    assert_eq!(find(&got, "h/b").kind, EntryKind::Hardlink("h/a".into()));
}

#[test]
fn modes_are_kept_unless_chmod_and_owners_are_root_unless_chown() {
    let dir = context_with(&[("d/run", "#!/bin/sh"), ("d/suid", "x")]);
    fs::set_permissions(dir.path().join("d/run"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(
        dir.path().join("d/suid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(dir.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("run", dir.path().join("d/link")).unwrap();
    let ctx = open(dir.path());
    let got = plan(&ctx, &req(&["d"], "/d")).unwrap();
    assert_eq!(find(&got, "d/run").mode, 0o750);
    assert_eq!(find(&got, "d/suid").mode, 0o4755);
    assert!(got.iter().all(|e| (e.uid, e.gid) == (0, 0)));
    let mut r = req(&["."], "/c/");
    r.chmod = Some(0o640);
    r.chown = Some((7, 8));
    let got = plan(&ctx, &r).unwrap();
    assert_eq!(find(&got, "c/d/run").mode, 0o640);
    assert_eq!(find(&got, "c/d").mode, 0o640, "chmod covers directories");
    assert_eq!(find(&got, "c").mode, 0o755, "a created dest keeps 0755");
    assert!(got.iter().all(|e| (e.uid, e.gid) == (7, 8)));
    let meta = fs::symlink_metadata(dir.path().join("d/run")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(find(&got, "c/d/run").mtime, meta.mtime(), "mtimes are kept");
}

#[test]
fn exclude_patterns_drop_entries_like_dockerignore() {
    let dir = context_with(&[
        ("s/a.txt", "a"),
        ("s/b.md", "b"),
        ("s/n/c.txt", "c"),
        ("s/n/keep.txt", "k"),
    ]);
    let ctx = open(dir.path());
    let mut r = req(&["s"], "/o");
    r.exclude = vec!["**/*.txt".into(), "!n/keep.txt".into()];
    let got = plan(&ctx, &r).unwrap();
    assert_eq!(paths(&got), ["o", "o/b.md", "o/n", "o/n/keep.txt"]);
    r.exclude = vec!["n".into()];
    assert_eq!(paths(&plan(&ctx, &r).unwrap()), ["o", "o/a.txt", "o/b.md"]);
    let mut files = req(&["s/*"], "/o/");
    files.exclude = vec!["*.txt".into()];
    // s/n is a directory: its contents go into /o/, matched relative to s/n.
    assert_eq!(paths(&plan(&ctx, &files).unwrap()), ["o", "o/b.md"]);
}

#[test]
fn an_image_tree_clamps_at_its_root() {
    let (_dir, image_src) = image_with(&["usr/bin", "etc"]);
    write(_dir.path(), "etc/conf", "c");
    symlink("/etc/conf", _dir.path().join("usr/bin/conf")).unwrap();
    let mut r = req(&["../../etc/conf", "usr/bin/conf"], "/x/");
    r.from_context = false;
    let (_img, image) = image_with(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let got = plan_copy(&image_src, &image, &r, scratch.path()).unwrap();
    assert_eq!(paths(&got), ["x", "x/conf"]);
    assert_eq!(
        source_rel(&got[1]),
        Path::new("etc/conf"),
        "absolute links resolve at /"
    );
}

#[test]
fn the_checksum_covers_content_mode_and_owner_but_not_mtime() {
    let dir = context_with(&[("d/a", "one")]);
    let ctx = open(dir.path());
    let r = req(&["d"], "/d");
    let first = checksum(&ctx, &r).unwrap();
    assert_eq!(first, checksum(&ctx, &r).unwrap());
    let f = fs::File::options()
        .write(true)
        .open(dir.path().join("d/a"))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(
        first,
        checksum(&ctx, &r).unwrap(),
        "mtime is not part of it"
    );
    let mut chmod = r.clone();
    chmod.chmod = Some(0o600);
    assert_ne!(first, checksum(&ctx, &chmod).unwrap());
    let mut chown = r.clone();
    chown.chown = Some((1, 1));
    assert_ne!(first, checksum(&ctx, &chown).unwrap());
    write(dir.path(), "d/a", "two");
    let second = checksum(&ctx, &r).unwrap();
    assert_ne!(first, second);
    symlink("a", dir.path().join("d/l")).unwrap();
    assert_ne!(second, checksum(&ctx, &r).unwrap(), "a new link changes it");
    assert!(checksum(&ctx, &req(&["../x"], "/")).is_err());
}

#[test]
fn a_symlinked_directory_cannot_reach_an_ignored_one() {
    let dir = context_with(&[(".dockerignore", "secret\n"), ("secret/key", "k")]);
    symlink("secret", dir.path().join("pub")).unwrap();
    let ctx = open(dir.path());
    assert_eq!(ctx.stat(Path::new("pub/key")).unwrap(), None);
    let err = plan(&ctx, &req(&["pub/key"], "/k")).unwrap_err();
    assert!(matches!(err, CopyError::NotFound(_)), "{err}");
    let got = plan(&ctx, &req(&["pub"], "/p")).unwrap();
    assert_eq!(
        got[0].kind,
        EntryKind::Symlink("secret".into()),
        "a dangling link stays a link"
    );
}
