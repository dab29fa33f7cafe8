//! The build cache and RUN's mounts: a second build all from the cache with the same id, a
//! touched file still a hit, content and mode misses from their step on, the args that reach
//! a RUN in its key, `--no-cache`, cache mounts that outlive it, `nook builder prune`;
//! secrets readable during a RUN and nowhere in the store after, bind mounts from the context
//! and from a stage, tmpfs, and a RUN without a network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::build::{
    Builder, Ctx, built_id, cached, config_blob, full_id, printed, sh_out, stored_files_holding,
};
use support::env::Mode;
use support::image::{self, Comp, ImageOpts, LayerTar, busybox_base};
use support::sandbox::Sandbox;

const CACHED: &str = "FROM {base}
ENV X=1
COPY a.txt /a.txt
RUN cat /a.txt > /copy && echo run-a-executed
COPY b.txt /b.txt
RUN cat /b.txt && echo run-b-executed
";

fn cache_hits_and_misses(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "cache");
    ctx.file("a.txt", b"a\n")
        .file("b.txt", b"b\n")
        .dockerfile(CACHED, &s.image);
    let b = Builder::new(&s);
    let first = b.build(&[], &ctx);
    first.ok();
    assert_eq!(cached(&first), Vec::<usize>::new(), "an empty cache hit");
    let id = full_id(&s, &built_id(&first));

    let again = b.build(&[], &ctx);
    again.ok();
    assert_eq!(cached(&again), [2, 3, 4, 5, 6], "{}", again.stdout);
    assert!(!printed(&again, "run-a-executed"), "{}", again.stdout);
    assert_eq!(full_id(&s, &built_id(&again)), id);

    // mtime is not in the key.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .unwrap();
    let touched = b.build(&[], &ctx);
    touched.ok();
    assert_eq!(
        cached(&touched),
        [2, 3, 4, 5, 6],
        "touch: {}",
        touched.stdout
    );
    assert_eq!(full_id(&s, &built_id(&touched)), id);

    ctx.file("b.txt", b"B\n");
    let content = b.build(&[], &ctx);
    content.ok();
    assert_eq!(cached(&content), [2, 3, 4], "content: {}", content.stdout);
    assert!(printed(&content, "run-b-executed"), "{}", content.stdout);
    assert!(!printed(&content, "run-a-executed"), "{}", content.stdout);
    assert_ne!(full_id(&s, &built_id(&content)), id);

    std::fs::set_permissions(ctx.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mode_change = b.build(&[], &ctx);
    mode_change.ok();
    assert_eq!(cached(&mode_change), [2], "mode: {}", mode_change.stdout);
    assert!(
        printed(&mode_change, "run-a-executed"),
        "{}",
        mode_change.stdout
    );

    let none = b.build(&["--no-cache"], &ctx);
    none.ok();
    assert_eq!(
        cached(&none),
        Vec::<usize>::new(),
        "--no-cache: {}",
        none.stdout
    );
    assert!(printed(&none, "run-a-executed"), "{}", none.stdout);
}

#[test]
fn cache_hits_and_misses_range() {
    cache_hits_and_misses(Mode::Range);
}

#[test]
fn cache_hits_and_misses_single() {
    cache_hits_and_misses(Mode::Single);
}

#[test]
fn run_cache_key_holds_the_args_that_reach_it() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "argkey");
    ctx.dockerfile(
        "FROM {base}\nARG A=1\nENV E=$A\nRUN echo \"e=$E\" > /e\nARG UNUSED\nRUN cat /e\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let one = b.id(&["--build-arg", "A=1"], &ctx);
    let out = b.build(&["--build-arg", "A=2"], &ctx);
    out.ok();
    assert!(
        out.stdout.lines().any(|l| l == "e=2"),
        "an arg reaching the RUN through ENV was cached: {}",
        out.stdout
    );
    let two = full_id(&s, &built_id(&out));
    assert_ne!(one, two);
    assert_eq!(sh_out(&s, &two, "cat /e"), "e=2\n");
    let back = b.build(&["--build-arg", "A=1"], &ctx);
    back.ok();
    assert_eq!(full_id(&s, &built_id(&back)), one, "{}", back.stdout);
    // ARG steps change nothing nook could cache (no history entry, as with BuildKit): the
    // ENV and both RUNs must come from the cache.
    let hits = cached(&back);
    assert!(
        [3, 4, 6].iter().all(|n| hits.contains(n)),
        "{}",
        back.stdout
    );
}

#[test]
fn stages_share_the_cache() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "shared");
    ctx.dockerfile(
        "FROM {base} AS one\nRUN echo same-step; echo s > /s\n\
FROM {base} AS two\nRUN echo same-step; echo s > /s\nCOPY --from=one /s /s1\n",
        &s.image,
    );
    let out = Builder::new(&s).build(&[], &ctx);
    out.ok();
    let ran = out.stdout.lines().filter(|l| *l == "same-step").count();
    assert_eq!(
        ran, 1,
        "the same RUN on the same parent ran twice: {}",
        out.stdout
    );
    let hits = cached(&out);
    assert!(
        hits == [2] || hits == [4],
        "one of the two RUNs comes from the cache: {}",
        out.stdout
    );
}

#[test]
fn cache_mounts_persist_and_prune_empties_the_cache() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "cm");
    ctx.dockerfile(
        "FROM {base}\nARG N\nRUN --mount=type=cache,target=/c echo \"n$N\" >> /c/log && echo \"log:$(cat /c/log | tr '\\n' ,)\"\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let log = |args: &[&str]| {
        let out = b.build(args, &ctx);
        out.ok();
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("log:").map(str::to_owned))
            .unwrap_or_else(|| panic!("the RUN did not run: {}", out.stdout))
    };
    assert_eq!(log(&["--build-arg", "N=1"]), "n1,");
    let id = b.id(&["--build-arg", "N=2"], &ctx);
    assert_eq!(
        sh_out(&s, &id, "test ! -e /c/log && echo not-in-image"),
        "not-in-image\n"
    );
    assert_eq!(log(&["--no-cache", "--build-arg", "N=3"]), "n1,n2,n3,");
    let hit = b.build(&["--build-arg", "N=1"], &ctx);
    hit.ok();
    assert!(
        !hit.stdout.lines().any(|l| l.starts_with("log:")),
        "not from the cache: {}",
        hit.stdout
    );
    s.nook(&["builder", "prune", "-f"]).ok();
    assert_eq!(
        log(&["--build-arg", "N=1"]),
        "n1,",
        "prune left the step cache or the cache mount"
    );
}

#[test]
fn secrets_are_readable_in_the_run_and_stored_nowhere() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let secret = format!("s3cr3t-{}-VALUE", support::sandbox::rand_suffix());
    let src = s.user.write_home("secret.txt", secret.as_bytes());
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ctx = Ctx::new(&s.user, "sec");
    ctx.dockerfile(
        "FROM {base}\n\
RUN --mount=type=secret,id=s grep -q '^s3cr3t-' /run/secrets/s && echo secret-seen && cat /run/secrets/s > /copied && rm /copied\n\
RUN --mount=type=secret,id=s,target=/etc/custom-secret grep -q VALUE /etc/custom-secret && echo custom-seen\n",
        &s.image,
    );
    let spec = format!("id=s,src={}", src.display());
    let out = Builder::new(&s).build(&["--secret", &spec, "-t", "sec:1"], &ctx);
    out.ok();
    assert!(printed(&out, "secret-seen"), "{}", out.stdout);
    assert!(printed(&out, "custom-seen"), "{}", out.stdout);
    assert!(!out.stdout.contains(&secret), "the secret was printed");
    assert_eq!(
        sh_out(
            &s,
            "sec:1",
            "test ! -e /run/secrets/s && test ! -e /etc/custom-secret && echo absent"
        ),
        "absent\n"
    );
    let history = config_blob(&s, "sec:1")["history"].to_string();
    assert!(!history.contains(&secret));
    let found = stored_files_holding(&s, secret.as_bytes());
    assert!(found.is_empty(), "the secret is stored in {found:?}");
    // Not in the cache key either: another secret, the same steps from the cache.
    std::fs::write(
        &src,
        format!("s3cr3t-{}-VALUE", support::sandbox::rand_suffix()),
    )
    .unwrap();
    let again = Builder::new(&s).build(&["--secret", &spec], &ctx);
    again.ok();
    assert_eq!(cached(&again), [2, 3], "{}", again.stdout);
}

#[test]
fn bind_mounts_from_context_and_stage_and_tmpfs() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "bind");
    ctx.file("data/in.txt", b"from-context\n").dockerfile(
        "FROM {base} AS tools\nRUN mkdir /out && echo from-stage > /out/tool\n\
FROM {base}\n\
RUN --mount=type=bind,target=/ctx cat /ctx/data/in.txt && if touch /ctx/new 2>/dev/null; then echo writable; else echo read-only; fi\n\
RUN --mount=type=bind,from=tools,source=/out,target=/t cat /t/tool\n\
RUN --mount=type=tmpfs,target=/scratch grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs-seen && echo x > /scratch/f\n",
        &s.image,
    );
    let out = Builder::new(&s).build(&["-t", "bind:1"], &ctx);
    out.ok();
    for want in ["from-context", "read-only", "from-stage", "tmpfs-seen"] {
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{want}: {}",
            out.stdout
        );
    }
    assert!(
        !ctx.join("new").exists(),
        "a bind mount wrote into the context"
    );
    assert_eq!(
        sh_out(
            &s,
            "bind:1",
            "test ! -e /ctx && test ! -e /t && test ! -e /scratch && echo no-mount-points"
        ),
        "no-mount-points\n"
    );
    // `rw`: the RUN may write, and what it writes is discarded (docker's documentation).
    let rw = Ctx::new(&s.user, "bindrw");
    rw.file("in.txt", b"x\n").dockerfile(
        "FROM {base}\nRUN --mount=type=bind,target=/ctx,rw touch /ctx/rw-new && echo rw-ok\n",
        &s.image,
    );
    let out = Builder::new(&s).build(&["-t", "bindrw:1"], &rw);
    out.ok();
    assert!(printed(&out, "rw-ok"), "{}", out.stdout);
    assert!(
        !rw.join("rw-new").exists(),
        "a rw bind mount wrote into the context"
    );
}

#[test]
fn run_without_a_network() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "net");
    let ifaces = "echo \"ifaces:$(ip -o link show | cut -d: -f2 | tr -d ' ' | tr '\\n' ,)\"";
    ctx.dockerfile(
        &format!("FROM {{base}}\nRUN --network=none {ifaces}\nRUN {ifaces} && echo step2\n"),
        &s.image,
    );
    let b = Builder::new(&s);
    let out = b.build(&["--network", "none"], &ctx);
    out.ok();
    let seen: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ifaces:"))
        .collect();
    assert_eq!(seen, ["ifaces:lo,", "ifaces:lo,"], "{}", out.stdout);
    let out = b.build(&["--network", "default", "--no-cache"], &ctx);
    out.ok();
    let seen: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ifaces:"))
        .collect();
    assert_eq!(
        seen.first(),
        Some(&"ifaces:lo,"),
        "--network=none: {}",
        out.stdout
    );
    assert_ne!(
        seen.get(1),
        Some(&"ifaces:lo,"),
        "the default network: {}",
        out.stdout
    );
}

/// COPY --from is keyed by what it copies, mode included: a source that changed only its mode
/// must not be served the earlier copy.
#[test]
fn copy_from_cache_key_holds_the_mode() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "fromkey");
    ctx.dockerfile(
        "FROM {base} AS src\nARG M\nRUN echo same > /f && chmod $M /f\n\
FROM {base}\nCOPY --from=src /f /f\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let one = b.id(&["--build-arg", "M=644"], &ctx);
    let two = b.id(&["--build-arg", "M=755"], &ctx);
    assert_eq!(sh_out(&s, &one, "stat -c %a /f"), "644\n");
    assert_eq!(
        sh_out(&s, &two, "stat -c %a /f"),
        "755\n",
        "the copy of the 0644 file was reused"
    );
}

/// `--pull` fetches the base again; without it the stored base is used.
#[test]
fn pull_refreshes_the_base() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let v = |n: &str| LayerTar::new().file("v", n.as_bytes(), 0o644).finish();
    let base = s.image_over_busybox("moving", v("1\n"), json!({"Cmd": ["sh"]}));
    let ctx = Ctx::new(&s.user, "pull");
    ctx.dockerfile("FROM {base}\nRUN cat /v\n", &base);
    let b = Builder::new(&s);
    let out = b.build(&[], &ctx);
    out.ok();
    assert!(printed(&out, "1"), "{}", out.stdout);
    // A new image under the same name, pushed behind nook's back.
    let newer = image::build(
        &[
            (busybox_base().finish(), Comp::Gzip),
            (v("2\n"), Comp::Gzip),
        ],
        &ImageOpts::default(),
    );
    image::push(&s.reg.url, "moving", "latest", &newer);
    let stale = b.build(&[], &ctx);
    stale.ok();
    assert!(
        !printed(&stale, "2"),
        "without --pull the stored base is used: {}",
        stale.stdout
    );
    let fresh = b.build(&["--pull=true"], &ctx);
    fresh.ok();
    assert!(
        printed(&fresh, "2"),
        "--pull kept the old base: {}",
        fresh.stdout
    );
    // docker's `--pull` is a flag: `build --pull DIR` names the context, not --pull's value.
    b.build(&["--pull"], &ctx).ok();
}
