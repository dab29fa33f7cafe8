//! Wildcard patterns: Go's `filepath.Match` for COPY sources (one path segment at a time) and
//! moby's patternmatcher flavour for `.dockerignore` and `--exclude` (whole slash paths, with
//! `**` crossing directories).
//!
//! A pattern is compiled once into tokens and matched by backtracking over characters; `*`
//! and `?` never match `/`. Character classes take Go's syntax: `[abc]`, `[a-z]`, `[^a-z]`,
//! with `\` escaping the next character.

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {0:?}: a character class is not closed or a range is reversed")]
pub struct BadPattern(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` inside a pattern: nothing, or any path ending in `/`.
    AnyDirs,
    /// `**` at the end: anything, `/` included.
    AnyTail,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
    /// patternmatcher's shortcut for a pattern that is `**` then plain text: a plain
    /// suffix test (so `**foo` matches `barfoo`), or the text itself after `**/`.
    suffix: Option<String>,
}

/// Whether `s` holds a character that makes it a pattern rather than a plain name.
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

impl Glob {
    /// A `filepath.Match` pattern: `**` is just two stars.
    pub fn segment(pattern: &str) -> Result<Glob, BadPattern> {
        Self::compile(pattern, false)
    }

    /// A patternmatcher pattern: `**` crosses directories.
    pub fn path(pattern: &str) -> Result<Glob, BadPattern> {
        Self::compile(pattern, true)
    }

    fn compile(pattern: &str, double_star: bool) -> Result<Glob, BadPattern> {
        let bad = || BadPattern(pattern.to_owned());
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if double_star && chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    tokens.push(if i == chars.len() {
                        Token::AnyTail
                    } else {
                        Token::AnyDirs
                    });
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        i += 1;
                        tokens.push(Token::Lit(n));
                    }
                    None if double_star => tokens.push(Token::Lit('\\')),
                    None => return Err(bad()),
                },
                '[' => {
                    let (tok, next) = class(&chars, i).ok_or_else(bad)?;
                    tokens.push(tok);
                    i = next;
                }
                c => tokens.push(Token::Lit(c)),
            }
        }
        let suffix = if double_star && pattern.starts_with("**") {
            let rest = &pattern[2..];
            (!has_meta(rest)).then(|| rest.to_owned())
        } else {
            None
        };
        Ok(Glob { tokens, suffix })
    }

    /// Whether the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        if let Some(suffix) = &self.suffix {
            return s.ends_with(suffix.as_str())
                || suffix.strip_prefix('/').is_some_and(|rest| s == rest);
        }
        let chars: Vec<char> = s.chars().collect();
        match_from(&self.tokens, &chars)
    }
}

/// Parses a class whose `[` was just read; returns it and the index after its `]`.
fn class(chars: &[char], mut i: usize) -> Option<(Token, usize)> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            break;
        }
        first = false;
        let lo = if c == '\\' {
            let e = *chars.get(i)?;
            i += 1;
            e
        } else {
            c
        };
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|n| *n != ']') {
            i += 1;
            let mut h = *chars.get(i)?;
            i += 1;
            if h == '\\' {
                h = *chars.get(i)?;
                i += 1;
            }
            if h < lo {
                return None;
            }
            hi = h;
        }
        ranges.push((lo, hi));
    }
    Some((Token::Class { negated, ranges }, i))
}

fn match_from(tokens: &[Token], s: &[char]) -> bool {
    let Some((tok, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match tok {
        Token::Lit(c) => s.first() == Some(c) && match_from(rest, &s[1..]),
        Token::One => s.first().is_some_and(|c| *c != '/') && match_from(rest, &s[1..]),
        Token::Class { negated, ranges } => s.first().is_some_and(|c| {
            let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
            inside != *negated && match_from(rest, &s[1..])
        }),
        Token::Star => {
            for n in 0..=s.len() {
                if match_from(rest, &s[n..]) {
                    return true;
                }
                if s.get(n) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Token::AnyTail => true,
        Token::AnyDirs => {
            if match_from(rest, s) {
                return true;
            }
            (0..s.len()).any(|n| s[n] == '/' && match_from(rest, &s[n + 1..]))
        }
    }
}

/// Go's `filepath.Clean` for a slash path: `.` and empty components dropped, `..` taken
/// back lexically (kept at the front of a relative path, dropped at the root), `.` for
/// nothing.
pub fn clean(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => match out.last() {
                Some(&"..") | None if !absolute => out.push(".."),
                None => {}
                Some(_) => {
                    out.pop();
                }
            },
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(p: &str, s: &str) -> bool {
        Glob::segment(p).unwrap().matches(s)
    }

    fn path(p: &str, s: &str) -> bool {
        Glob::path(p).unwrap().matches(s)
    }

    #[test]
    fn segment_patterns_follow_filepath_match() {
        assert!(seg("*.txt", "a.txt"));
        assert!(!seg("*.txt", "a.txt.bak"));
        assert!(seg("?.rs", "a.rs"));
        assert!(!seg("?.rs", "ab.rs"));
        assert!(seg("[a-c]x", "bx"));
        assert!(!seg("[a-c]x", "dx"));
        assert!(seg("[^a-c]x", "dx"));
        assert!(!seg("[^a-c]x", "ax"));
        assert!(seg(r"\*", "*"));
        assert!(!seg(r"\*", "a"));
        assert!(seg("**", "abc"), "two stars are just stars in a segment");
        assert!(!seg("*", "a/b"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::segment("[a-").is_err());
        assert!(Glob::segment("[z-a]").is_err());
        assert!(Glob::segment("x\\").is_err());
        assert!(Glob::path("[abc").is_err());
    }

    #[test]
    fn double_star_crosses_directories() {
        assert!(path("**/foo", "foo"));
        assert!(path("**/foo", "a/b/foo"));
        assert!(!path("**/foo", "a/xfoo"));
        assert!(
            path("**foo", "a/xfoo"),
            "patternmatcher's plain suffix test"
        );
        assert!(path("a/**/b", "a/b"));
        assert!(path("a/**/b", "a/x/y/b"));
        assert!(!path("a/**/b", "a/x/y/c"));
        assert!(path("a/**", "a/x/y"));
        assert!(!path("a/**", "a"));
        assert!(path("**", "anything/at/all"));
        assert!(path("**/*.go", "x/y/z.go"));
        assert!(!path("*.go", "x/z.go"));
    }

    #[test]
    fn clean_matches_go() {
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("a/../../x"), "../x");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("a/.."), ".");
    }
}
