//! `nook build` as an ordinary user: every instruction lands in the image config, the parser
//! (directives, continuations, heredocs, exec and shell form), variables and ARG scoping, the
//! classic builder's output, a built image run at once, `nook commit`, `nook history`, and a
//! few fields compared with `podman build` of the same Dockerfile. Layers, cache and RUN
//! mounts are in tests/build_layers.rs; COPY, ADD, contexts and stages in tests/build_copy.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::build::{Builder, Ctx, Podman, built_id, config, full_id, inspect, run_out, sh_out};
use support::env::Mode;
use support::sandbox::Sandbox;

const INSTRUCTIONS: &str = r#"FROM {base}
ENV A=one
ENV A=two B=${A}x
ENV C="two words" D=${UNSET:-dflt} E=${A:+set} LIT=\$A
ARG BUILDARG=argval
ENV FROMARG=$BUILDARG
WORKDIR /work/dir
USER 1234:1234
WORKDIR /home/user/made
WORKDIR sub
USER root
EXPOSE 8080 53/udp
VOLUME ["/data"]
VOLUME /logs /cache
LABEL a=1 "b c"="d e"
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD cat /etc/passwd
ONBUILD RUN echo triggered > /onbuild
SHELL ["/bin/sh", "-ec"]
CMD echo hello $A
ENTRYPOINT ["/bin/echo", "ep"]
"#;

/// Every instruction of [`INSTRUCTIONS`] in the config; WORKDIRs made with the owner of
/// their moment; an ONBUILD trigger run by a child's build and not inherited.
fn instructions_land_in_the_config(mode: Mode) {
    let Some(s) = Sandbox::on_tmpfs(mode) else {
        return;
    };
    let b = Builder::new(&s);
    let ctx = Ctx::new(&s.user, "instr");
    ctx.dockerfile(INSTRUCTIONS, &s.image);
    let out = b.build(&["-t", "parent:1", "--label", "cli=yes"], &ctx);
    out.ok();
    let c = config(&s, "parent:1");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "A=two",
        "B=onex",
        "C=two words",
        "D=dflt",
        "E=set",
        "LIT=$A",
        "FROMARG=argval",
    ] {
        assert!(env.contains(&want), "Env lacks {want:?}: {env:?}");
    }
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "the base's PATH: {env:?}"
    );
    assert!(
        !env.iter().any(|e| e.starts_with("BUILDARG=")),
        "an ARG in Env: {env:?}"
    );
    assert_eq!(c["WorkingDir"], "/home/user/made/sub");
    assert_eq!(c["User"], "root");
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(
        c["Volumes"],
        json!({"/data": {}, "/logs": {}, "/cache": {}})
    );
    assert_eq!(c["Labels"], json!({"a": "1", "b c": "d e", "cli": "yes"}));
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(
        c["Healthcheck"]["Test"],
        json!(["CMD-SHELL", "cat /etc/passwd"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Timeout"], 3_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(c["OnBuild"], json!(["RUN echo triggered > /onbuild"]));
    assert_eq!(c["Shell"], json!(["/bin/sh", "-ec"]));
    // Shell form is wrapped with the SHELL of its moment; a CMD set in this stage survives
    // the ENTRYPOINT after it.
    assert_eq!(c["Cmd"], json!(["/bin/sh", "-ec", "echo hello $A"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/echo", "ep"]));
    let owners = sh_out(
        &s,
        "parent:1",
        "stat -c '%u:%g %n' /work/dir /home/user/made /home/user/made/sub",
    );
    assert_eq!(
        owners,
        "0:0 /work/dir\n1234:1234 /home/user/made\n1234:1234 /home/user/made/sub\n"
    );

    let child = Ctx::new(&s.user, "child");
    child.dockerfile("FROM parent:1\nRUN cat /onbuild\n", "");
    let out = b.build(&["-t", "child:1"], &child);
    out.ok();
    assert!(
        out.stdout.lines().any(|l| l == "triggered"),
        "the trigger did not run: {}",
        out.stdout
    );
    let c = config(&s, "child:1");
    assert!(
        c["OnBuild"].is_null() || c["OnBuild"] == json!([]),
        "triggers are not inherited: {}",
        c["OnBuild"]
    );
}

#[test]
fn instructions_land_in_the_config_range() {
    instructions_land_in_the_config(Mode::Range);
}

#[test]
fn instructions_land_in_the_config_single() {
    instructions_land_in_the_config(Mode::Single);
}

#[test]
fn arg_scoping_build_args_and_env_precedence() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "args");
    ctx.dockerfile(
        r#"ARG BASE={base}
ARG TOP=topval
ARG BOTH=outer
FROM $BASE
ARG BOTH
RUN echo "top=[$TOP] both=[$BOTH] base=[$BASE]" > /args
ARG FROMENV
ARG WITHDEF=def
ARG OVR=def
RUN echo "fromenv=[$FROMENV] withdef=[$WITHDEF] ovr=[$OVR]" >> /args
ENV WITHDEF=envwins
ARG WITHDEF=ignored
RUN echo "after=[$WITHDEF]" >> /args
"#,
        &s.image,
    );
    let b = Builder::new(&s);
    let out = b.build_env(
        &[
            "-t",
            "args:1",
            "--build-arg",
            "FROMENV",
            "--build-arg",
            "OVR=cli",
        ],
        &ctx,
        &[("FROMENV", "hostval")],
    );
    out.ok();
    assert_eq!(
        run_out(&s, "args:1", &["cat", "/args"]),
        "top=[] both=[outer] base=[]\nfromenv=[hostval] withdef=[def] ovr=[cli]\nafter=[envwins]\n"
    );
    let env = config(&s, "args:1")["Env"].to_string();
    for arg in ["TOP=", "BOTH=", "FROMENV=", "OVR=", "BASE="] {
        assert!(!env.contains(arg), "ARG {arg} landed in Env: {env}");
    }
    assert!(env.contains("WITHDEF=envwins"), "{env}");
}

#[test]
fn predefined_args_platform_and_proxies() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "predef");
    ctx.dockerfile(
        "FROM {base}\nARG TARGETPLATFORM\nARG TARGETARCH\nARG TARGETOS\n\
RUN echo \"tp=$TARGETPLATFORM ta=$TARGETARCH to=$TARGETOS\" > /plat\n\
RUN echo \"proxy=$HTTP_PROXY\"\n",
        &s.image,
    );
    let proxy = "http://proxy.invalid:3128";
    let out = Builder::new(&s).build(
        &[
            "-t",
            "predef:1",
            "--build-arg",
            &format!("HTTP_PROXY={proxy}"),
        ],
        &ctx,
    );
    out.ok();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert_eq!(
        run_out(&s, "predef:1", &["cat", "/plat"]),
        format!("tp=linux/{arch} ta={arch} to=linux\n")
    );
    // A proxy reaches RUN without an ARG, and stays out of the image and its history.
    assert!(
        support::build::printed(&out, &format!("proxy={proxy}")),
        "{}",
        out.stdout
    );
    let blob = support::build::config_blob(&s, "predef:1").to_string();
    assert!(!blob.contains("proxy.invalid"), "{blob}");
}

#[test]
fn parser_continuations_heredocs_and_forms() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "parser");
    ctx.dockerfile(
        "# syntax=docker/dockerfile:1\n\
FROM {base}\n\
RUN echo one \\\n\
# a comment inside the continuation\n  two \\\n    three > /cont\n\
run echo lower > /lower\n\
ENV WHO=world\n\
COPY <<EOF /heredoc.txt\nline one\n  hello $WHO\nEOF\n\
COPY <<\"EOF\" /noexp.txt\nhello $WHO\nEOF\n\
COPY <<-EOF /tabs.txt\n\tindented\n\tEOF\n\
COPY <<one.txt <<two.txt /multi/\nfirst\none.txt\nsecond\ntwo.txt\n\
RUN <<EOF\necho from-heredoc > /h1\necho second line >> /h1\nEOF\n\
RUN [\"/bin/sh\", \"-c\", \"echo exec-form > /exec\"]\n\
RUN [ -d /bin ] && echo fallback > /fb\n\
CMD [echo, hi]\n",
        &s.image,
    );
    let b = Builder::new(&s);
    b.build(&["-t", "parsed:1"], &ctx).ok();
    let got = sh_out(
        &s,
        "parsed:1",
        "for f in /cont /lower /heredoc.txt /noexp.txt /tabs.txt /multi/one.txt /multi/two.txt /h1 /exec /fb; do echo \"[$f]\"; cat $f; done",
    );
    assert_eq!(
        got,
        "[/cont]\none two three\n[/lower]\nlower\n[/heredoc.txt]\nline one\n  hello world\n\
[/noexp.txt]\nhello $WHO\n[/tabs.txt]\nindented\n[/multi/one.txt]\nfirst\n\
[/multi/two.txt]\nsecond\n[/h1]\nfrom-heredoc\nsecond line\n[/exec]\nexec-form\n\
[/fb]\nfallback\n"
    );
    // Invalid JSON is shell form.
    assert_eq!(
        config(&s, "parsed:1")["Cmd"],
        json!(["/bin/sh", "-c", "[echo, hi]"])
    );
}

#[test]
fn parser_escape_directive() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "escape");
    ctx.dockerfile(
        "# escape=`\nFROM {base}\nENV WIN=C:\\dir\\\nRUN echo one `\n# a comment inside\n    two > /cont\nLABEL q=\"a`\"b\"\n\
SHELL [\"/bin/sh\", \"-xc\"]\nENTRYPOINT exec echo ep\n",
        &s.image,
    );
    Builder::new(&s).build(&["-t", "esc:1"], &ctx).ok();
    let c = config(&s, "esc:1");
    let env = c["Env"].to_string();
    // A backslash at the end of a line is no continuation when the escape is a backtick.
    assert!(env.contains(r#""WIN=C:\\dir\\""#), "{env}");
    assert_eq!(c["Labels"]["q"], "a\"b");
    // Shell-form ENTRYPOINT, wrapped with the SHELL of its moment.
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-xc", "exec echo ep"]));
    assert_eq!(sh_out(&s, "esc:1", "cat /cont"), "one two\n");
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let b = Builder::new(&s);
    let cases = [
        ("FROM {base}\nBOGUS x\n", vec!["line 2", "bogus"]),
        (
            "FROM {base}\nARG X\nENV Y=\"${X:?X is required}\"\n",
            vec!["X is required"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let ctx = Ctx::new(&s.user, &format!("bad{i}"));
        ctx.dockerfile(text, &s.image);
        let out = b.build(&["-t", "bad:1"], &ctx);
        assert_ne!(out.code, 0, "{text:?} built: {}", out.stdout);
        let all = format!("{}{}", out.stdout, out.stderr).to_lowercase();
        assert!(all.contains("dockerfile"), "names the file: {all}");
        let line2 = all.contains("line 2") || all.contains("dockerfile:2");
        for n in needles {
            let n = n.to_lowercase();
            let found = if n == "line 2" {
                line2
            } else {
                all.contains(&n)
            };
            assert!(found, "{text:?}: output lacks {n:?}: {all}");
        }
    }
    let ctx = Ctx::new(&s.user, "nofrom");
    ctx.dockerfile("RUN true\n", "");
    assert_ne!(b.build(&[], &ctx).code, 0, "a Dockerfile without FROM");
    assert_ne!(s.nook(&["inspect", "bad:1"]).code, 0, "a failed parse tags");
}

#[test]
fn output_tags_iidfile_and_a_built_image_runs() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "app");
    ctx.dockerfile(
        "FROM {base}\nRUN echo building-output\nCMD [\"echo\", \"hello from cmd\"]\n",
        &s.image,
    );
    let iid = s.user.work.path().join("iid");
    let b = Builder::new(&s);
    let out = b.build(
        &[
            "-t",
            "app:v1",
            "-t",
            "app:v2",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
        &ctx,
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let first_step = lines.iter().find(|l| l.starts_with("Step ")).unwrap();
    assert!(first_step.starts_with("Step 1/3 : FROM "), "{}", out.stdout);
    assert!(
        lines.contains(&"Step 2/3 : RUN echo building-output"),
        "{}",
        out.stdout
    );
    assert!(
        lines.contains(&"building-output"),
        "the step's output: {}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Successfully tagged") && l.ends_with("app:v1")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Successfully tagged") && l.ends_with("app:v2")),
        "{}",
        out.stdout
    );
    let id = full_id(&s, "app:v1");
    let short = built_id(&out);
    assert!(
        id.trim_start_matches("sha256:")
            .starts_with(short.trim_start_matches("sha256:")),
        "Successfully built {short} is not {id}"
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap().trim(), id);
    assert_eq!(full_id(&s, "app:v2"), id);
    assert_eq!(run_out(&s, "app:v1", &[]), "hello from cmd\n");
    let q = b.build(&["-q", "-t", "app:v1"], &ctx);
    q.ok();
    assert_eq!(q.stdout, format!("{id}\n"), "-q prints only the id");
}

#[test]
fn commit_a_container_with_changes() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    s.nook(&[
        "run",
        "--name",
        "c1",
        &s.image,
        "sh",
        "-c",
        "echo committed > /cfile",
    ])
    .ok();
    s.nook(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/cfile\"]",
        "-c",
        "ENV FROMCOMMIT=1",
        "-m",
        "a message",
        "c1",
        "committed:1",
    ])
    .ok();
    assert_eq!(run_out(&s, "committed:1", &[]), "committed\n");
    let c = config(&s, "committed:1");
    assert_eq!(c["Cmd"], json!(["cat", "/cfile"]));
    assert!(
        c["Env"].to_string().contains("FROMCOMMIT=1"),
        "{}",
        c["Env"]
    );
    let base_layers = inspect(&s, &s.image)["RootFS"]["Layers"].clone();
    let layers = inspect(&s, "committed:1")["RootFS"]["Layers"].clone();
    assert_eq!(
        layers.as_array().unwrap().len(),
        base_layers.as_array().unwrap().len() + 1
    );
    s.nook(&["rm", "c1"]).ok();
}

#[test]
fn history_lists_the_steps() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "hist");
    ctx.dockerfile(
        "FROM {base}\nENV HV=1\nRUN echo hist-step > /h\nLABEL hl=2\n",
        &s.image,
    );
    Builder::new(&s).build(&["-t", "hist:1"], &ctx).ok();
    let out = s.nook(&["history", "--no-trunc", "hist:1"]);
    out.ok();
    let text = out.stdout;
    let pos = |n: &str| {
        text.find(n)
            .unwrap_or_else(|| panic!("{n:?} not in {text}"))
    };
    // Newest first, as docker prints it.
    assert!(pos("hl=2") < pos("hist-step"), "{text}");
    assert!(pos("hist-step") < pos("HV=1"), "{text}");
    assert!(
        text.contains("nook test fixture"),
        "the base's step: {text}"
    );
}

#[test]
fn config_agrees_with_podman() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "cmp");
    ctx.file("f.txt", b"f\n").dockerfile(
        "FROM {base}\nENV A=1 B=\"x y\"\nWORKDIR /srv/app\nCOPY f.txt .\nRUN echo r > r.txt\n\
USER 1234\nEXPOSE 80 53/udp\nVOLUME /data\nLABEL k=v\nSTOPSIGNAL SIGTERM\n\
ENTRYPOINT [\"/bin/echo\"]\nCMD [\"a\", \"b\"]\n",
        &s.image,
    );
    let Some(pm) = Podman::new(&s.user) else {
        return;
    };
    let Some(p) = pm.build(&[], &ctx, "cmp") else {
        return;
    };
    Builder::new(&s).build(&["-t", "cmp:1"], &ctx).ok();
    let n = inspect(&s, "cmp:1");
    for field in [
        "Env",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Entrypoint",
        "Cmd",
    ] {
        assert_eq!(
            n["Config"][field], p["Config"][field],
            "Config.{field}: nook vs podman"
        );
    }
    assert_eq!(n["Config"]["Labels"]["k"], p["Config"]["Labels"]["k"]);
    // Layer counts differ by design: podman writes no layer for a WORKDIR (it makes the
    // directory in the next step's layer), docker does.
}

#[test]
fn from_scratch_and_manifest_formats() {
    let Some(s) = Sandbox::on_tmpfs(Mode::Range) else {
        return;
    };
    let ctx = Ctx::new(&s.user, "scratch");
    ctx.file("only.txt", b"only\n").dockerfile(
        "FROM scratch\nCOPY only.txt /only.txt\nCMD [\"/only.txt\"]\n",
        "",
    );
    let b = Builder::new(&s);
    for (format, media_type) in [
        ("oci", "application/vnd.oci.image.manifest.v1+json"),
        (
            "docker",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let tag = format!("scratch:{format}");
        b.build(&["--format", format, "-t", &tag], &ctx).ok();
        let v = inspect(&s, &tag);
        assert_eq!(v["ManifestMediaType"], media_type, "--format {format}");
        assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
        let manifest = support::build::blob(&s, v["ManifestDigest"].as_str().unwrap());
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], media_type, "the stored manifest");
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    }
}
