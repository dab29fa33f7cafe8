//! Heredoc tests: RUN scripts, COPY/ADD files, `<<-`, quoted delimiters, several per line.

use super::*;

fn stage(text: &str) -> Vec<Instruction> {
    match parse(&format!("FROM scratch\n{text}"), "Dockerfile") {
        Ok(mut d) => d.stages.remove(0).instructions,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

fn doc(name: &str, content: &str, expand: bool) -> Heredoc {
    Heredoc {
        name: name.to_owned(),
        content: content.to_owned(),
        expand,
    }
}

fn run_of(ins: &Instruction) -> &RunSpec {
    match &ins.kind {
        Kind::Run(r) => r,
        other => panic!("not RUN: {other:?}"),
    }
}

fn copy_of(ins: &Instruction) -> &CopySpec {
    match &ins.kind {
        Kind::Copy(c) | Kind::Add(c) => c,
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

#[test]
fn run_with_only_a_heredoc_runs_the_body() {
    let ins = stage("RUN <<EOF\necho $HOME\n# not a comment\n\nEOF\nRUN after\n");
    assert_eq!(ins.len(), 2);
    let r = run_of(&ins[0]);
    let body = "echo $HOME\n# not a comment\n\n";
    assert_eq!(r.command, Command::Shell(body.to_owned()));
    assert_eq!(r.heredocs, vec![doc("EOF", body, true)]);
    assert_eq!(ins[0].original, "RUN <<EOF");
    assert_eq!((ins[0].line, ins[1].line), (2, 7));
    let r = run_of(&ins[1]);
    assert_eq!(r.command, Command::Shell("after".to_owned()));
}

#[test]
fn run_with_a_heredoc_in_a_command_gives_the_shell_the_script() {
    let ins = stage("RUN --network=none cat <<EOF > /f\nhello\nEOF\n");
    let r = run_of(&ins[0]);
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(
        r.command,
        Command::Shell("cat <<EOF > /f\nhello\nEOF\n".to_owned())
    );
    assert_eq!(r.heredocs, vec![doc("EOF", "hello\n", true)]);
}

#[test]
fn several_heredocs_and_tab_stripping() {
    let text = "RUN cat <<-A >/a && cat <<'B' >/b\n\tone\n\t\ttwo\n\tA\n$NOT\nB\n";
    let ins = stage(text);
    let r = run_of(&ins[0]);
    assert_eq!(
        r.heredocs,
        vec![doc("A", "one\ntwo\n", true), doc("B", "$NOT\n", false)]
    );
    assert_eq!(
        r.command,
        Command::Shell("cat <<-A >/a && cat <<'B' >/b\none\ntwo\nA\n$NOT\nB\n".to_owned())
    );
}

#[test]
fn quoted_delimiters_turn_expansion_off() {
    for (word, expand) in [
        ("<<EOF", true),
        ("<<\"EOF\"", false),
        ("<<'EOF'", false),
        ("<<-\"EOF\"", false),
    ] {
        let ins = stage(&format!("RUN {word}\n$X\nEOF\n"));
        let r = run_of(&ins[0]);
        assert_eq!(r.heredocs, vec![doc("EOF", "$X\n", expand)], "{word}");
        assert_eq!(r.command, Command::Shell("$X\n".to_owned()), "{word}");
    }
}

#[test]
fn copy_heredocs_become_files() {
    let ins = stage(
        "COPY --chmod=0755 <<run.sh <<\"conf\" /app/\n#!/bin/sh\necho $A\nrun.sh\nk=$v\nconf\nADD <<EOF /x\nhi\nEOF\n",
    );
    let c = copy_of(&ins[0]);
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert_eq!(c.sources, ["run.sh", "conf"]);
    assert_eq!(c.dest, "/app/");
    assert_eq!(
        c.heredocs,
        vec![
            doc("run.sh", "#!/bin/sh\necho $A\n", true),
            doc("conf", "k=$v\n", false)
        ]
    );
    // Bodies are read in order, each up to its own terminator only.
    let ins2 = stage("COPY <<X <<Y /dest\nY\nX\nX\nY\n");
    assert_eq!(
        copy_of(&ins2[0]).heredocs,
        vec![doc("X", "Y\n", true), doc("Y", "X\n", true)]
    );
    let a = copy_of(&ins[1]);
    assert_eq!(
        (a.sources.as_slice(), a.dest.as_str()),
        (["EOF".to_owned()].as_slice(), "/x")
    );
    assert_eq!(a.heredocs, vec![doc("EOF", "hi\n", true)]);
}

#[test]
fn blanks_after_the_heredoc_operator() {
    let ins = stage("RUN <<  EOF\nbody\nEOF\nCOPY <<- \"f\" /f\n\tx\n\tf\nRUN cat << A\n1\nA\n");
    assert_eq!(run_of(&ins[0]).command, Command::Shell("body\n".to_owned()));
    let c = copy_of(&ins[1]);
    assert_eq!(c.sources, ["f"]);
    assert_eq!(c.heredocs, vec![doc("f", "x\n", false)]);
    assert_eq!(
        run_of(&ins[2]).command,
        Command::Shell("cat << A\n1\nA\n".to_owned())
    );
}

#[test]
fn not_heredocs() {
    // JSON form, a quoted `<<`, `<<` inside a word and other instructions leave lines alone.
    let ins = stage("RUN [\"cat\", \"<<EOF\"]\nRUN echo \"<<EOF\" a<<b\n");
    assert_eq!(ins.len(), 2, "{ins:?}");
    assert!(run_of(&ins[0]).heredocs.is_empty());
    assert_eq!(
        run_of(&ins[1]).command,
        Command::Shell("echo \"<<EOF\" a<<b".to_owned())
    );
    let e = parse("FROM a\nCMD cat <<EOF\nEOF\n", "Dockerfile").err();
    assert_eq!(e.and_then(|e| e.line()), Some(3));
}

#[test]
fn heredoc_errors() {
    let e = parse("FROM a\nRUN <<EOF\nno end\n", "Dockerfile").err();
    let e = e.unwrap_or_else(|| panic!("an unterminated heredoc parsed"));
    assert_eq!(e.line(), Some(2));
    assert_eq!(
        e.problem(),
        Some(&InstructionError::UnterminatedHeredoc("EOF".to_owned()))
    );
    let e = parse("FROM a\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile").err();
    assert_eq!(
        e.and_then(|e| e.problem().cloned()),
        Some(InstructionError::HeredocDest("COPY".to_owned()))
    );
}
