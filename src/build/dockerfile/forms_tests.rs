//! Tests of the instructions with flags: RUN, COPY/ADD, HEALTHCHECK and durations.

use std::time::Duration;

use super::forms::parse_duration;
use super::tests::{bad, copy_spec, err, exec, one, run_spec, shell, strings};
use super::*;

#[test]
fn run_flags() {
    let r = run_spec(
        "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=a --network=none --security=insecure pip install x",
    );
    assert_eq!(
        r.mounts,
        strings(&["type=cache,target=/root/.cache", "type=secret,id=a"])
    );
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(r.command, shell("pip install x"));
    // Flags end at the first word that is not one, or after a lone `--`.
    let r = run_spec("RUN --network=host -- --weird-command --x");
    assert_eq!(r.command, shell("--weird-command --x"));
    assert_eq!(
        run_spec("RUN echo --mount=x").command,
        shell("echo --mount=x")
    );
    assert_eq!(
        run_spec("RUN --mount=\"type=bind,target=/a b\" ls").mounts,
        strings(&["type=bind,target=/a b"])
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let unknown = |instruction: &str, flag: &str| InstructionError::UnknownFlag {
        instruction: instruction.to_owned(),
        flag: flag.to_owned(),
    };
    let cases = [
        ("RUN --mnt=x ls", unknown("RUN", "mnt")),
        ("COPY --checksum=sha256:0 a b", unknown("COPY", "checksum")),
        ("ADD --from=x a b", unknown("ADD", "from")),
        ("ADD --parents a b", unknown("ADD", "parents")),
        ("WORKDIR --x=1 /a", unknown("WORKDIR", "x")),
        (
            "copy --chmod a b",
            InstructionError::FlagValue("chmod".to_owned()),
        ),
        (
            "COPY --from=a --from=b a b",
            InstructionError::FlagTwice("from".to_owned()),
        ),
        (
            "COPY --link=yes a b",
            InstructionError::FlagBool {
                flag: "link".to_owned(),
                value: "yes".to_owned(),
            },
        ),
        (
            "HEALTHCHECK --intervall=1s CMD true",
            unknown("HEALTHCHECK", "intervall"),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(bad(line), want, "{line:?}");
    }
    let e = err("FROM a\nRUN --mnt=x ls\n");
    assert_eq!(e.to_string(), "Dockerfile:2: unknown flag for RUN: --mnt");
    let e = err("FROM --plat=x a\n");
    assert_eq!(e.problem(), Some(&unknown("FROM", "plat")));
}

#[test]
fn copy_and_add_flags_and_words() {
    let c = copy_spec(
        "COPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=.git a \"b c\" /dst/",
    );
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link && c.parents && !c.keep_git_dir && !c.json);
    assert_eq!(c.exclude, strings(&["*.md", ".git"]));
    assert_eq!(c.sources, strings(&["a", "\"b c\""]));
    assert_eq!(c.dest, "/dst/");

    let c =
        copy_spec("ADD --checksum=sha256:abc --keep-git-dir=true --link=false https://x/y.tar /y");
    assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));
    assert!(c.keep_git_dir && !c.link);
    assert_eq!(
        (c.sources, c.dest),
        (strings(&["https://x/y.tar"]), "/y".to_owned())
    );

    let c = copy_spec("COPY [\"a b\", \"$DIR/c\", \"/d e/\"]");
    assert!(c.json);
    assert_eq!(
        (c.sources, c.dest),
        (strings(&["a b", "$DIR/c"]), "/d e/".to_owned())
    );
    assert!(matches!(
        bad("COPY onlyone"),
        InstructionError::Arguments { .. }
    ));
    assert!(matches!(
        bad("ADD [\"x\"]"),
        InstructionError::Arguments { .. }
    ));
}

#[test]
fn healthcheck() {
    assert_eq!(one("HEALTHCHECK NONE"), Kind::Healthcheck(None));
    assert_eq!(one("healthcheck none"), Kind::Healthcheck(None));
    let h = match one(
        "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0 --start-interval=2s --retries=3 CMD [\"curl\", \"-f\", \"x\"]",
    ) {
        Kind::Healthcheck(Some(h)) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.command, exec(&["curl", "-f", "x"]));
    assert_eq!(h.interval, Some(Duration::from_secs(90)));
    assert_eq!(h.timeout, Some(Duration::from_millis(500)));
    assert_eq!(h.start_period, Some(Duration::ZERO));
    assert_eq!(h.start_interval, Some(Duration::from_secs(2)));
    assert_eq!(h.retries, Some(3));
    let h = one("HEALTHCHECK cmd curl -f http://localhost/ || exit 1");
    assert_eq!(
        h,
        Kind::Healthcheck(Some(HealthSpec {
            command: shell("curl -f http://localhost/ || exit 1"),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        }))
    );
    assert_eq!(bad("HEALTHCHECK NONE x"), InstructionError::HealthcheckNone);
    assert_eq!(
        bad("HEALTHCHECK --retries=1 NONE"),
        InstructionError::HealthcheckNone
    );
    assert_eq!(
        bad("HEALTHCHECK RUN x"),
        InstructionError::HealthcheckType("RUN".to_owned())
    );
    assert!(matches!(
        bad("HEALTHCHECK"),
        InstructionError::HealthcheckType(_)
    ));
    assert!(matches!(
        bad("HEALTHCHECK CMD"),
        InstructionError::Arguments { .. }
    ));
    assert!(matches!(
        bad("HEALTHCHECK --interval=10 CMD x"),
        InstructionError::Duration { .. }
    ));
    assert!(matches!(
        bad("HEALTHCHECK --timeout=1us CMD x"),
        InstructionError::Duration { .. }
    ));
    assert_eq!(
        bad("HEALTHCHECK --retries=-1 CMD x"),
        InstructionError::Retries("-1".to_owned())
    );
}

#[test]
fn durations() {
    let ok = [
        ("0", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        ("1m30s", Duration::from_secs(90)),
        ("500ms", Duration::from_millis(500)),
        ("1.5h", Duration::from_secs(5400)),
        ("2h45m", Duration::from_secs(9900)),
        (".5s", Duration::from_millis(500)),
        ("10us", Duration::from_micros(10)),
        ("10µs", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        ("0s", Duration::ZERO),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(want), "{text:?}");
    }
    for text in ["", "10", "s", "1x", "-1s", "1..5s", "1s2", "."] {
        assert!(parse_duration(text).is_err(), "{text:?}");
    }
}
