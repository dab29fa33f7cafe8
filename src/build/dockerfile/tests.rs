//! Parser tests: directives, lines, instruction forms, stages, ENV/LABEL/ARG, ONBUILD.

use super::*;

pub(super) fn df(text: &str) -> Dockerfile {
    match parse(text, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

pub(super) fn err(text: &str) -> ParseError {
    match parse(text, "Dockerfile") {
        Ok(d) => panic!("{text:?} should fail, parsed {d:?}"),
        Err(e) => e,
    }
}

/// The kind of the one instruction `line` after a FROM.
pub(super) fn one(line: &str) -> Kind {
    let d = df(&format!("FROM scratch\n{line}\n"));
    assert_eq!(d.stages[0].instructions.len(), 1, "{line:?}");
    d.stages[0].instructions[0].kind.clone()
}

/// The problem with `line` after a FROM, and that it is blamed on line 2.
pub(super) fn bad(line: &str) -> InstructionError {
    let e = err(&format!("FROM scratch\n{line}\n"));
    assert_eq!(e.line(), Some(2), "{line:?}: {e}");
    e.problem().cloned().unwrap_or_else(|| panic!("{e}"))
}

pub(super) fn shell(s: &str) -> Command {
    Command::Shell(s.to_owned())
}

pub(super) fn exec(words: &[&str]) -> Command {
    Command::Exec(words.iter().map(|w| w.to_string()).collect())
}

pub(super) fn run_spec(line: &str) -> RunSpec {
    match one(line) {
        Kind::Run(r) => r,
        other => panic!("{line:?} is {other:?}"),
    }
}

pub(super) fn copy_spec(line: &str) -> CopySpec {
    match one(line) {
        Kind::Copy(c) | Kind::Add(c) => c,
        other => panic!("{line:?} is {other:?}"),
    }
}

pub(super) fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn directives_only_at_the_top() {
    // (text, escape, syntax)
    let cases = [
        ("# escape=`\nFROM a\n", '`', None),
        ("# ESCAPE = `\nFROM a\n", '`', None),
        ("#escape=\\\nFROM a\n", '\\', None),
        (
            "# syntax=docker/dockerfile:1\n# escape=`\nFROM a\n",
            '`',
            Some("docker/dockerfile:1"),
        ),
        ("# Syntax=x\nFROM a\n", '\\', Some("x")),
        // After a comment, a blank line, an unknown directive or an instruction: comments.
        ("# a comment\n# escape=`\nFROM a\n", '\\', None),
        ("\n# escape=`\nFROM a\n", '\\', None),
        ("# unknown=1\n# escape=`\nFROM a\n", '\\', None),
        ("FROM a\n# escape=`\n", '\\', None),
        ("# escape=\nFROM a\n", '\\', None),
    ];
    for (text, escape, syntax) in cases {
        let d = df(text);
        assert_eq!(d.escape, escape, "{text:?}");
        assert_eq!(d.syntax.as_deref(), syntax, "{text:?}");
    }
}

#[test]
fn directive_errors() {
    let e = err("# escape=`\n# Escape=\\\nFROM a\n");
    assert_eq!(e.line(), Some(2));
    assert_eq!(
        e.problem(),
        Some(&InstructionError::DirectiveTwice("escape".to_owned()))
    );
    let e = err("# escape=x\nFROM a\n");
    assert_eq!(e.problem(), Some(&InstructionError::Escape("x".to_owned())));
    assert!(e.to_string().starts_with("Dockerfile:1: "), "{e}");
}

#[test]
fn comments_blank_lines_and_continuations() {
    let text = [
        "# comment",
        "FROM a",
        "",
        "RUN apt-get update && \\",
        "# a comment between continuation lines",
        "    apt-get install -y x \\   ",
        "",
        "    && echo done",
        "  # indented comment",
        "cmd [\"sh\"]",
    ]
    .join("\n");
    let text = text.as_str();
    let d = df(text);
    let ins = &d.stages[0].instructions;
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[0].line, 4);
    assert_eq!(
        ins[0].original,
        "RUN apt-get update &&     apt-get install -y x     && echo done"
    );
    assert_eq!(
        ins[0].kind,
        Kind::Run(RunSpec {
            mounts: vec![],
            network: None,
            security: None,
            command: shell("apt-get update &&     apt-get install -y x     && echo done"),
            heredocs: vec![],
        })
    );
    assert_eq!(ins[1].line, 10);
    assert_eq!(ins[1].kind, Kind::Cmd(exec(&["sh"])));
    // CRLF line ends and a byte order mark are not part of the text.
    let d = df("\u{feff}FROM a\r\nRUN echo \\\r\n  hi\r\n");
    assert_eq!(
        d.stages[0].instructions[0].kind,
        Kind::Run(RunSpec {
            mounts: vec![],
            network: None,
            security: None,
            command: shell("echo   hi"),
            heredocs: vec![],
        })
    );
}

#[test]
fn windows_dockerfile_with_backtick_escape() {
    let text = "\
# escape=`
FROM mcr.microsoft.com/windows/servercore
COPY testfile.txt c:\\
RUN dir c:\\
WORKDIR c:\\windows
RUN echo a `
    b
";
    let d = df(text);
    assert_eq!(d.escape, '`');
    let kinds: Vec<Kind> = d.stages[0]
        .instructions
        .iter()
        .map(|i| i.kind.clone())
        .collect();
    assert!(
        matches!(&kinds[0], Kind::Copy(c) if c.dest == "c:\\" && c.sources == ["testfile.txt"])
    );
    assert!(matches!(&kinds[1], Kind::Run(r) if r.command == shell("dir c:\\")));
    assert_eq!(kinds[2], Kind::Workdir("c:\\windows".to_owned()));
    assert!(matches!(&kinds[3], Kind::Run(r) if r.command == shell("echo a     b")));
}

#[test]
fn keywords_and_structure_errors() {
    let d = df("from a AS Build\nrun echo\nCoPy x y\n");
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert_eq!(d.stages[0].instructions.len(), 2);

    let e = err("FROM a\n\n# x\nFORM b\n");
    assert_eq!(e.to_string(), "Dockerfile:4: unknown instruction: FORM");
    let e = err("ARG A\nENV B=1\nFROM a\n");
    assert_eq!(e.line(), Some(2));
    assert_eq!(
        e.problem(),
        Some(&InstructionError::BeforeFrom("ENV".to_owned()))
    );
    for empty in ["", "\n\n", "# only a comment\n", "# syntax=x\n"] {
        assert!(matches!(err(empty), ParseError::Empty { .. }), "{empty:?}");
    }
    assert!(matches!(err("ARG A=1\n"), ParseError::NoFrom { .. }));
}

#[test]
fn meta_args_and_stages() {
    let d = df(
        "ARG BASE=alpine\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE}:$V AS b1\nRUN x\nFROM b1\nFROM c as Last\n",
    );
    assert_eq!(d.meta_args.len(), 2);
    assert_eq!(
        d.meta_args[0].kind,
        Kind::Arg(vec![("BASE".to_owned(), Some("alpine".to_owned()))])
    );
    let s = &d.stages;
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].index, s[0].line), (0, 3));
    assert_eq!(s[0].base, "${BASE}:$V");
    assert_eq!(s[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(
        s[0].original,
        "FROM --platform=$BUILDPLATFORM ${BASE}:$V AS b1"
    );
    assert_eq!(s[0].instructions.len(), 1);
    assert_eq!(
        (s[1].index, s[1].name.as_deref(), s[1].base.as_str()),
        (1, None, "b1")
    );
    assert_eq!(s[2].name.as_deref(), Some("last"));
}

#[test]
fn from_errors() {
    let cases: [(&str, InstructionError); 5] = [
        ("FROM a AS 1x", InstructionError::StageName("1x".to_owned())),
        (
            "FROM a AS b/c",
            InstructionError::StageName("b/c".to_owned()),
        ),
        ("FROM a b c", InstructionError::FromArgs("a b c".to_owned())),
        ("FROM", InstructionError::FromArgs(String::new())),
        (
            "FROM a --platform=x",
            InstructionError::FromArgs("a --platform=x".to_owned()),
        ),
    ];
    for (line, want) in cases {
        let e = err(&format!("{line}\n"));
        assert_eq!(e.problem(), Some(&want), "{line:?}");
    }
    let e = err("FROM a AS x\nFROM b AS X\n");
    assert_eq!(e.line(), Some(2));
    assert_eq!(
        e.problem(),
        Some(&InstructionError::DuplicateStage("x".to_owned()))
    );
}

#[test]
fn exec_and_shell_forms() {
    let cases = [
        ("CMD [\"echo\", \"a\"]", Kind::Cmd(exec(&["echo", "a"]))),
        ("CMD []", Kind::Cmd(exec(&[]))),
        ("CMD echo a", Kind::Cmd(shell("echo a"))),
        (
            "ENTRYPOINT [\"/bin/tini\",\"--\"]",
            Kind::Entrypoint(exec(&["/bin/tini", "--"])),
        ),
        (
            "ENTRYPOINT exec top -b",
            Kind::Entrypoint(shell("exec top -b")),
        ),
        // Invalid JSON is the shell form with the text as written.
        ("CMD [\"echo\", \"a\"", Kind::Cmd(shell("[\"echo\", \"a\""))),
        ("CMD ['echo']", Kind::Cmd(shell("['echo']"))),
        (
            "SHELL [\"powershell\", \"-command\"]",
            Kind::Shell(strings(&["powershell", "-command"])),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(one(line), want, "{line:?}");
    }
    assert_eq!(
        run_spec("RUN [\"echo\", \"a\"").command,
        shell("[\"echo\", \"a\"")
    );
    assert_eq!(
        run_spec("RUN [\"echo\", \"a\"]").command,
        exec(&["echo", "a"])
    );
    assert_eq!(
        run_spec("RUN echo \"$HOME\"").command,
        shell("echo \"$HOME\"")
    );
    assert_eq!(bad("SHELL /bin/sh -c"), InstructionError::ShellNotJson);
    for line in [
        "CMD [\"a\", 1]",
        "RUN [true]",
        "COPY [\"a\", null]",
        "VOLUME [[\"/a\"]]",
    ] {
        assert_eq!(bad(line), InstructionError::JsonNotStrings, "{line:?}");
    }
    assert!(matches!(
        bad("SHELL []"),
        InstructionError::Arguments { .. }
    ));
    assert!(matches!(bad("RUN"), InstructionError::Arguments { .. }));
}

#[test]
fn env_label_arg() {
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let cases = [
        // Expansion happens later: raw values, quotes in.
        (
            "ENV A=1 B=${A}",
            Kind::Env(pairs(&[("A", "1"), ("B", "${A}")])),
        ),
        (
            "ENV k=v k2=\"a b\" k3=a\\ b",
            Kind::Env(pairs(&[("k", "v"), ("k2", "\"a b\""), ("k3", "a\\ b")])),
        ),
        ("ENV EMPTY=", Kind::Env(pairs(&[("EMPTY", "")]))),
        ("ENV k v w  \"x\"", Kind::Env(pairs(&[("k", "v w  \"x\"")]))),
        (
            "LABEL a=b \"c d\"=\"e f\" x.y='1 2'",
            Kind::Label(pairs(&[
                ("a", "b"),
                ("\"c d\"", "\"e f\""),
                ("x.y", "'1 2'"),
            ])),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(one(line), want, "{line:?}");
    }
    let arg = one("ARG A B=2 C=\"x y\"");
    assert_eq!(
        arg,
        Kind::Arg(vec![
            ("A".to_owned(), None),
            ("B".to_owned(), Some("2".to_owned())),
            ("C".to_owned(), Some("\"x y\"".to_owned())),
        ])
    );
    assert!(matches!(bad("ENV A"), InstructionError::Arguments { .. }));
    assert!(matches!(bad("ENV"), InstructionError::Arguments { .. }));
    assert!(matches!(
        bad("ENV A=1 B"),
        InstructionError::NoEquals { .. }
    ));
    assert!(matches!(bad("ENV =1"), InstructionError::BlankName(_)));
    assert!(matches!(
        bad("LABEL a b"),
        InstructionError::NoEquals { .. }
    ));
    assert!(matches!(bad("ARG"), InstructionError::Arguments { .. }));
    assert!(matches!(bad("ARG =x"), InstructionError::BlankName(_)));
}

#[test]
fn simple_instructions() {
    let cases = [
        ("WORKDIR /a b", Kind::Workdir("/a b".to_owned())),
        ("USER app:app", Kind::User("app:app".to_owned())),
        ("STOPSIGNAL SIGTERM", Kind::StopSignal("SIGTERM".to_owned())),
        (
            "MAINTAINER Jo <jo@x>",
            Kind::Maintainer("Jo <jo@x>".to_owned()),
        ),
        (
            "EXPOSE 80/tcp  $PORT",
            Kind::Expose(strings(&["80/tcp", "$PORT"])),
        ),
        (
            "VOLUME [\"/data\", \"/a b\"]",
            Kind::Volume(strings(&["/data", "/a b"])),
        ),
        (
            "VOLUME /data /logs",
            Kind::Volume(strings(&["/data", "/logs"])),
        ),
        (
            "ONBUILD RUN --mount=type=cache,target=/c make",
            Kind::Onbuild("RUN --mount=type=cache,target=/c make".to_owned()),
        ),
        (
            "onbuild copy . /app",
            Kind::Onbuild("copy . /app".to_owned()),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(one(line), want, "{line:?}");
    }
    for line in [
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "VOLUME []",
        "STOPSIGNAL",
        "ONBUILD",
    ] {
        assert!(
            matches!(bad(line), InstructionError::Arguments { .. }),
            "{line:?}"
        );
    }
}

#[test]
fn onbuild_errors() {
    let cases = [
        (
            "ONBUILD ONBUILD RUN x",
            InstructionError::OnbuildTrigger("ONBUILD".to_owned()),
        ),
        (
            "ONBUILD from a",
            InstructionError::OnbuildTrigger("FROM".to_owned()),
        ),
        (
            "ONBUILD MAINTAINER me",
            InstructionError::OnbuildTrigger("MAINTAINER".to_owned()),
        ),
        (
            "ONBUILD FORM a",
            InstructionError::Unknown("FORM".to_owned()),
        ),
        ("ONBUILD SHELL sh", InstructionError::ShellNotJson),
    ];
    for (line, want) in cases {
        assert_eq!(bad(line), want, "{line:?}");
    }
}
