//! `.dockerignore` and `COPY --exclude`: moby's patternmatcher rules.
//!
//! Patterns are read in order and the last one that matches a path decides: a plain pattern
//! excludes, a `!` pattern re-includes. A pattern also matches a path when it matches one of
//! the path's parent directories, so `build` excludes everything below `build/`. A walk may
//! skip an excluded directory unless some `!` pattern names something below it (moby's
//! prefix test), which is how `build` + `!build/keep` still finds `build/keep`.

use super::glob::{BadPattern, Glob, clean};

/// Why an ignore file or an exclude list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\" (a lone ! re-includes nothing)")]
    LoneBang,
    #[error(transparent)]
    Bad(#[from] BadPattern),
}

#[derive(Debug, Clone)]
struct Rule {
    /// The cleaned pattern without its `!`.
    text: String,
    glob: Glob,
    exclusion: bool,
}

/// An ordered list of exclude and re-include patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<Rule>,
}

/// The lines of an ignore file as patterns: a UTF-8 byte order mark dropped, lines starting
/// with `#` skipped, whitespace trimmed, blank lines skipped, each pattern cleaned and made
/// relative (a leading `/` dropped), a `!` kept in front.
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

impl Matcher {
    /// Compiles `patterns` (as written by `read_ignore_file` or given to `--exclude`).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, PatternError> {
        let mut rules = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, text) = match p.strip_prefix('!') {
                Some("") => return Err(PatternError::LoneBang),
                Some(rest) => (true, rest.to_owned()),
                None => (false, p),
            };
            let glob = Glob::path(&text)?;
            rules.push(Rule {
                text,
                glob,
                exclusion,
            });
        }
        Ok(Matcher { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the slash path `path` (relative, cleaned) is excluded: by a pattern matching
    /// it or one of its parents, unless a later `!` pattern matches likewise.
    pub fn matches(&self, path: &str) -> bool {
        if path.is_empty() || path == "." {
            return false;
        }
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut matched = false;
        for rule in &self.rules {
            // Only a rule that could change the verdict is evaluated.
            if rule.exclusion != matched {
                continue;
            }
            let hit = rule.glob.matches(path) || parents.iter().any(|p| rule.glob.matches(p));
            if hit {
                matched = !rule.exclusion;
            }
        }
        matched
    }

    /// Whether a walk must still look inside the excluded directory `dir`: some `!` pattern
    /// names a path below it.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.rules
            .iter()
            .any(|r| r.exclusion && format!("{}/", r.text).starts_with(&dir_slash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(lines: &str) -> Matcher {
        Matcher::new(&read_ignore_file(lines)).unwrap()
    }

    #[test]
    fn ignore_file_lines_are_cleaned() {
        let text = "\u{feff}# comment\n\n  /build/  \n! /keep/./x \n #not a comment\n*.o\r\n";
        assert_eq!(
            read_ignore_file(text),
            vec!["build", "!keep/x", "#not a comment", "*.o"]
        );
    }

    #[test]
    fn the_last_matching_pattern_wins() {
        let matcher = m("*.md\n!README.md\nREADME*");
        assert!(matcher.matches("CHANGES.md"));
        assert!(matcher.matches("README.md"), "README* comes last");
        let matcher = m("*.md\n!README.md");
        assert!(!matcher.matches("README.md"));
        assert!(!matcher.matches("main.rs"));
    }

    #[test]
    fn a_directory_pattern_excludes_what_is_below() {
        let matcher = m("build\n!build/keep");
        assert!(matcher.matches("build"));
        assert!(matcher.matches("build/x/y.o"));
        assert!(!matcher.matches("build/keep"));
        assert!(!matcher.matches("build/keep/inner"));
        assert!(!matcher.matches("builder"));
        assert!(matcher.may_reinclude_below("build"));
        assert!(!matcher.may_reinclude_below("other"));
    }

    #[test]
    fn double_star_and_leading_slash() {
        let matcher = m("**/*.pyc\n/tmp\nnode_modules/**");
        assert!(matcher.matches("a/b/c.pyc"));
        assert!(matcher.matches("c.pyc"));
        assert!(matcher.matches("tmp/x"));
        assert!(
            !matcher.matches("a/tmp"),
            "a leading / anchors at the root anyway"
        );
        assert!(matcher.matches("node_modules/x/y"));
        assert!(
            !matcher.matches("node_modules"),
            "node_modules/** leaves the directory itself"
        );
    }

    #[test]
    fn a_lone_bang_and_bad_classes_are_errors() {
        assert_eq!(Matcher::new(&["!"]).unwrap_err(), PatternError::LoneBang);
        assert!(Matcher::new(&["[a-"]).is_err());
    }

    #[test]
    fn the_root_is_never_excluded() {
        assert!(!m("*\n.").matches("."));
        assert!(m("*").matches("anything"));
    }
}
