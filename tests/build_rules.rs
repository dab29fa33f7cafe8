//! What a review of `nook build` found the first suite did not pin down: secrets given as
//! environment variables next to a context on standard input, bind mounts of the context and
//! the ignore file, every input of a step in its cache key (bind-mounted content,
//! `--timestamp`, HEALTHCHECK options), paths that go through an image's symlinks, cache
//! mount owners, `env=` secrets and heredoc scripts with a shebang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::build::{
    Builder, Ctx, cached, config, config_blob, printed, sh_out, stored_files_holding, tar_of,
};
use support::env::Mode;
use support::sandbox::{Sandbox, rand_suffix};

#[test]
fn env_secrets_stay_out_of_a_context_on_stdin() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let secret = format!("env-secret-{}", rand_suffix());
    let dockerfile = format!(
        "FROM {}\nCOPY . /src\nRUN --mount=type=secret,id=tok,env=TOK test ${{#TOK}} = {} && echo secret-seen\n",
        s.image,
        secret.len()
    );
    let tar = tar_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("app.txt", b"app", 0o644),
    ]);
    let b = Builder::new(&s);
    let out = b.nook(
        &[
            "build",
            "--secret",
            "id=tok,env=TOK",
            "-t",
            "envsecret:1",
            "-",
        ],
        &[("TOK", &secret)],
        Some(&tar),
    );
    out.ok();
    assert!(printed(&out, "secret-seen"), "{}", out.stdout);
    assert_eq!(
        sh_out(&s, "envsecret:1", "ls /src"),
        "Dockerfile\napp.txt\n"
    );
    let found = stored_files_holding(&s, secret.as_bytes());
    assert!(found.is_empty(), "the secret reached the store: {found:?}");
}

#[test]
fn context_binds_hide_ignored_files_and_rerun_when_content_changes() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "bindkey");
    ctx.file(".dockerignore", b"credentials.env\n")
        .file("credentials.env", b"TOKEN=hunter2\n")
        .file("req.txt", b"v1\n")
        .dockerfile(
            "FROM {base}\nRUN --mount=type=bind,target=/src ls /src > /listing && cat /src/req.txt > /req\n",
            &s.image,
        );
    let b = Builder::new(&s);
    b.build(&["-t", "bindkey:1"], &ctx).ok();
    let listing = sh_out(&s, "bindkey:1", "cat /listing");
    assert!(!listing.contains("credentials.env"), "{listing}");
    assert!(listing.contains("req.txt"), "{listing}");
    assert_eq!(sh_out(&s, "bindkey:1", "cat /req"), "v1\n");
    let again = b.build(&["-t", "bindkey:1"], &ctx);
    again.ok();
    assert_eq!(cached(&again), vec![2], "the unchanged step is cached");
    ctx.file("req.txt", b"v2\n");
    let changed = b.build(&["-t", "bindkey:1"], &ctx);
    changed.ok();
    assert!(
        cached(&changed).is_empty(),
        "a changed bound file reruns the step"
    );
    assert_eq!(sh_out(&s, "bindkey:1", "cat /req"), "v2\n");
}

#[test]
fn timestamp_and_healthcheck_options_are_part_of_the_key() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "tskey");
    ctx.dockerfile(
        "FROM {base}\nRUN echo hi > /f\nHEALTHCHECK --interval=5s CMD true\n",
        &s.image,
    );
    let b = Builder::new(&s);
    b.build(&["-t", "tskey:1"], &ctx).ok();
    let fixed = b.build(&["--timestamp", "0", "-t", "tskey:2"], &ctx);
    fixed.ok();
    assert!(
        cached(&fixed).is_empty(),
        "--timestamp reused steps built without it"
    );
    let created = config_blob(&s, "tskey:2")["created"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(created.starts_with("1970-01-01T00:00:00"), "{created}");
    ctx.dockerfile(
        "FROM {base}\nRUN echo hi > /f\nHEALTHCHECK --interval=30s CMD true\n",
        &s.image,
    );
    let out = b.build(&["-t", "tskey:3"], &ctx);
    out.ok();
    assert_eq!(cached(&out), vec![2], "only the RUN is cached");
    let hc = &config(&s, "tskey:3")["Healthcheck"];
    assert_eq!(hc["Interval"], 30_000_000_000u64, "{hc}");
}

fn symlinked_paths_cache_mounts_secrets_and_scripts(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let secret_file = s.user.write_home("secret.txt", b"s3cr3t-value");
    let ctx = Ctx::new(&s.user, "rules");
    ctx.dockerfile(
        "FROM {base}\n\
         RUN mkdir /real && ln -s /real /lnk\n\
         COPY <<EOT /lnk/f\nhello\nEOT\n\
         WORKDIR /lnk/w\n\
         RUN --mount=type=cache,target=/c,uid=1234,gid=99,mode=0700 stat -c '%u:%g %a' /c > /cstat\n\
         RUN --mount=type=secret,id=tok,env=TOK echo \"secret length ${#TOK}\"\n\
         RUN <<EOT\n#!/bin/sh\necho \"script as $0\"\nEOT\n",
        &s.image,
    );
    let b = Builder::new(&s);
    let secret = format!("id=tok,src={}", secret_file.display());
    let out = b.build(&["--secret", &secret, "-t", "rules:1"], &ctx);
    out.ok();
    assert!(printed(&out, "secret length 12"), "{}", out.stdout);
    assert!(printed(&out, "script as /dev/pipes/EOT"), "{}", out.stdout);
    let got = sh_out(
        &s,
        "rules:1",
        "readlink /lnk; cat /real/f; test -d /real/w && echo workdir-in-real; cat /cstat",
    );
    let owner = if mode == Mode::Range {
        "1234:99 700"
    } else {
        "0:0 700"
    };
    assert_eq!(got, format!("/real\nhello\nworkdir-in-real\n{owner}\n"));
    let found = stored_files_holding(&s, b"s3cr3t-value");
    assert!(found.is_empty(), "the secret reached the store: {found:?}");
}

#[test]
fn symlinked_paths_cache_mounts_secrets_and_scripts_range() {
    symlinked_paths_cache_mounts_secrets_and_scripts(Mode::Range);
}

#[test]
fn symlinked_paths_cache_mounts_secrets_and_scripts_single() {
    symlinked_paths_cache_mounts_secrets_and_scripts(Mode::Single);
}
