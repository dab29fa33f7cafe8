//! Expansion tests: quotes, escapes, variables and their modifiers, word splitting.

use super::*;

fn vars(name: &str) -> Option<String> {
    let value = match name {
        "A" => "1",
        "EMPTY" => "",
        "SP" => "a  b",
        "P" => "/usr/local/lib.tar.gz",
        "under_score9" => "u",
        _ => return None,
    };
    Some(value.to_owned())
}

fn ex(raw: &str) -> Result<String, ExpandError> {
    expand(raw, '\\', &vars)
}

#[test]
fn expands_like_the_dockerfile_lexer() {
    let cases = [
        ("plain", "plain"),
        ("$A", "1"),
        ("${A}x$A", "1x1"),
        ("$under_score9.", "u."),
        ("$UNSET-", "-"),
        ("${UNSET}", ""),
        ("a$", "a$"),
        ("$/x", "$/x"),
        ("'$A'", "$A"),
        ("\"$A\"", "1"),
        ("\"'$A'\"", "'1'"),
        ("'\"$A\"'", "\"$A\""),
        ("\\$A", "$A"),
        ("\\\\", "\\"),
        ("a\\ b", "a b"),
        ("end\\", "end"),
        ("\"\\$A \\\" \\\\ \\n\"", "$A \" \\ \\n"),
        ("'a\\b'", "a\\b"),
        ("${A:-d}${UNSET:-d}${EMPTY:-d}", "1dd"),
        ("${A-d}${UNSET-d}${EMPTY-d}", "1d"),
        ("${A:+x}${UNSET:+x}${EMPTY:+x}", "x"),
        ("${A+x}${UNSET+x}${EMPTY+x}", "xx"),
        ("${UNSET:-$A}", "1"),
        ("${UNSET:-\"a b\"}", "a b"),
        ("${UNSET:-${A:+nested}}", "nested"),
        ("${A:?no}${EMPTY?ok}", "1"),
        ("${P#*/}", "usr/local/lib.tar.gz"),
        ("${P##*/}", "lib.tar.gz"),
        ("${P%.*}", "/usr/local/lib.tar"),
        ("${P%%.*}", "/usr/local/lib"),
        ("${P%/*}", "/usr/local"),
        ("${P%%/*}", ""),
        ("${P##}", "/usr/local/lib.tar.gz"),
        ("${P#nomatch}", "/usr/local/lib.tar.gz"),
        ("${P#/usr/?ocal}", "/lib.tar.gz"),
        ("${P/l/L}", "/usr/Local/lib.tar.gz"),
        ("${P//l/L}", "/usr/LocaL/Lib.tar.gz"),
        ("${P/*./x}", "xgz"),
    ];
    for (raw, want) in cases {
        assert_eq!(ex(raw).as_deref(), Ok(want), "{raw:?}");
    }
}

#[test]
fn hostile_patterns_take_polynomial_time() {
    let long = "a".repeat(400);
    let value = |name: &str| (name == "L").then(|| long.clone());
    let pattern = "*a".repeat(30) + "b";
    let raw = format!("${{L##{pattern}}}${{L%%{pattern}}}${{L//{pattern}/x}}");
    assert_eq!(expand(&raw, '\\', &value), Ok(long.repeat(3)));
}

#[test]
fn backtick_escape() {
    let e = |raw: &str| expand(raw, '`', &vars);
    assert_eq!(e("c:\\path\\$A").as_deref(), Ok("c:\\path\\1"));
    assert_eq!(e("`$A ``").as_deref(), Ok("$A `"));
    assert_eq!(e("\"`\"`$A\"").as_deref(), Ok("\"$A"));
}

#[test]
fn expansion_errors() {
    let required = |name: &str, message: &str| ExpandError::Required {
        name: name.to_owned(),
        message: message.to_owned(),
    };
    assert_eq!(
        ex("${UNSET:?set UNSET with --build-arg}"),
        Err(required("UNSET", "set UNSET with --build-arg"))
    );
    assert_eq!(
        ex("${UNSET?}"),
        Err(required("UNSET", "is not allowed to be unset"))
    );
    assert_eq!(
        ex("${EMPTY:?}"),
        Err(required("EMPTY", "is not allowed to be empty"))
    );
    let message = ex("${UNSET:?msg}").map_err(|e| e.to_string());
    assert_eq!(message, Err("UNSET: msg".to_owned()));
    for raw in ["${A", "${A:-x", "${", "${A/x", "${A:"] {
        assert!(
            matches!(ex(raw), Err(ExpandError::MissingBrace { .. })),
            "{raw:?}"
        );
    }
    for raw in ["${}", "${:-x}", "${{A}}"] {
        assert!(
            matches!(ex(raw), Err(ExpandError::BadSubstitution { .. })),
            "{raw:?}"
        );
    }
    for raw in ["${A:x}", "${A!}"] {
        assert!(
            matches!(ex(raw), Err(ExpandError::Modifier { .. })),
            "{raw:?}"
        );
    }
    assert!(matches!(
        ex("'open"),
        Err(ExpandError::Quote {
            quote: "single",
            ..
        })
    ));
    assert!(matches!(
        ex("\"open"),
        Err(ExpandError::Quote {
            quote: "double",
            ..
        })
    ));
}

#[test]
fn words_split_on_unquoted_whitespace() {
    let w = |raw: &str| expand_words(raw, '\\', &vars);
    let cases: [(&str, &[&str]); 8] = [
        ("80 443/udp", &["80", "443/udp"]),
        ("  a   b  ", &["a", "b"]),
        ("\"a b\" c", &["a b", "c"]),
        ("a\\ b", &["a b"]),
        ("$SP x", &["a", "b", "x"]),
        ("\"$SP\"", &["a  b"]),
        ("x$EMPTY \"\" ''", &["x"]),
        ("'$A' $A", &["$A", "1"]),
    ];
    for (raw, want) in cases {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(w(raw), Ok(want), "{raw:?}");
    }
}

#[test]
fn heredoc_bodies_keep_quotes() {
    let body = "echo \"$A\" '$A' \\$A \\\\ \\n ${UNSET:-d}\n";
    assert_eq!(
        expand_heredoc(body, '\\', &vars).as_deref(),
        Ok("echo \"1\" '1' $A \\ \\n d\n")
    );
    assert!(matches!(
        expand_heredoc("${A", '\\', &vars),
        Err(ExpandError::MissingBrace { .. })
    ));
}
