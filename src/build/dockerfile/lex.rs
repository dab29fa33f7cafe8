//! Lines of a Dockerfile: parser directives, logical lines (continuations joined, comments
//! and blank lines dropped), heredoc bodies, and raw word splitting that keeps quotes.

use super::instr::InstructionError;

/// What the parser directives at the top of the file said.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
}

/// One logical line: an instruction with its continuation pieces joined.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Logical {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The first piece with leading whitespace removed, each piece without its trailing
    /// escape character, pieces concatenated as BuildKit does.
    pub text: String,
}

/// The physical lines of a Dockerfile and a cursor over them.
pub(super) struct Lines<'a> {
    lines: Vec<&'a str>,
    /// Index of the next line to read (its number is `next + 1`).
    next: usize,
    escape: char,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        Lines {
            lines,
            next: 0,
            escape: '\\',
        }
    }

    /// Reads the parser directives at the top. They end at the first line that is not a
    /// known directive (an unknown one, a comment, a blank line or an instruction); that
    /// line is left for [`Lines::next_logical`], where directive-looking lines are comments.
    pub fn directives(&mut self) -> Result<Directives, (usize, InstructionError)> {
        let mut found = Directives {
            escape: '\\',
            syntax: None,
        };
        let mut seen: Vec<String> = Vec::new();
        while let Some(raw) = self.lines.get(self.next) {
            let Some((name, value)) = directive(raw) else {
                break;
            };
            let name = name.to_ascii_lowercase();
            if !["syntax", "escape", "check"].contains(&name.as_str()) {
                break;
            }
            let line = self.next + 1;
            if seen.contains(&name) {
                return Err((line, InstructionError::DirectiveTwice(name)));
            }
            match (name.as_str(), value) {
                ("escape", "\\") => found.escape = '\\',
                ("escape", "`") => found.escape = '`',
                ("escape", other) => {
                    return Err((line, InstructionError::Escape(other.to_owned())));
                }
                ("syntax", v) => found.syntax = Some(v.to_owned()),
                _ => {}
            }
            seen.push(name);
            self.next += 1;
        }
        self.escape = found.escape;
        Ok(found)
    }

    /// The next instruction's logical line, or None at the end of the file.
    pub fn next_logical(&mut self) -> Option<Logical> {
        loop {
            let raw = *self.lines.get(self.next)?;
            self.next += 1;
            let piece = raw.trim_start();
            if piece.is_empty() || piece.starts_with('#') {
                continue;
            }
            let line = self.next;
            let (mut text, mut more) = self.strip_continuation(piece);
            while more {
                let Some(raw) = self.lines.get(self.next) else {
                    break;
                };
                self.next += 1;
                let trimmed = raw.trim_start();
                // Comments and blank lines inside a continuation are dropped (BuildKit warns
                // about the blank ones); the continuation goes on after them.
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let (piece, again) = self.strip_continuation(raw);
                text.push_str(&piece);
                more = again;
            }
            if text.trim().is_empty() {
                continue;
            }
            return Some(Logical { line, text });
        }
    }

    /// The piece without a trailing escape character (and the blanks after it), and
    /// whether the instruction continues on the next line.
    fn strip_continuation(&self, piece: &str) -> (String, bool) {
        let end = piece.trim_end_matches([' ', '\t']);
        match end.strip_suffix(self.escape) {
            Some(kept) => (kept.to_owned(), true),
            None => (piece.to_owned(), false),
        }
    }

    /// The body of a heredoc that starts on the next line, up to the line holding only
    /// `name` (after leading tabs when `strip_tabs`); None when the file ends first.
    pub fn heredoc_body(&mut self, name: &str, strip_tabs: bool) -> Option<String> {
        let mut body = String::new();
        loop {
            let raw = *self.lines.get(self.next)?;
            self.next += 1;
            let candidate = if strip_tabs {
                raw.trim_start_matches('\t')
            } else {
                raw
            };
            if candidate == name {
                return Some(body);
            }
            body.push_str(raw);
            body.push('\n');
        }
    }
}

/// `# name = value` as BuildKit's directive pattern reads it (name starts with a letter,
/// value not empty), or None.
fn directive(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.trim_start().strip_prefix('#')?.trim_start();
    let name_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    let (name, rest) = rest.split_at(name_end);
    let value = rest.trim_start().strip_prefix('=')?.trim();
    (!name.is_empty() && !value.is_empty()).then_some((name, value))
}

/// The first word of a logical line (the instruction keyword as written).
pub(super) fn keyword(text: &str) -> &str {
    let text = text.trim_start();
    text.split(char::is_whitespace).next().unwrap_or(text)
}

/// Splits `text` on whitespace outside quotes, keeping quotes and escapes in the words
/// (BuildKit's `parseWords`). Returns each word with the byte offset just past it.
pub(super) fn raw_words(text: &str, escape: char) -> Vec<(String, usize)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if !word.is_empty() {
                words.push((std::mem::take(&mut word), i));
            }
            continue;
        }
        word.push(c);
        if c == escape && quote != Some('\'') {
            if let Some((_, next)) = chars.next() {
                word.push(next);
            }
            continue;
        }
        match quote {
            Some(q) if q == c => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            _ => {}
        }
    }
    if !word.is_empty() {
        words.push((word, text.len()));
    }
    words
}

/// The leading `--name[=value]` words of an instruction's arguments and the arguments
/// after them. As in BuildKit, quotes in a flag word are removed and `\` escapes the next
/// character whatever the escape directive says; variables stay for the builder to
/// expand. A lone `--` ends the flags and is dropped.
pub(super) fn take_flags(args: &str, escape: char) -> (Vec<String>, &str) {
    let args = args.trim_start();
    let mut flags = Vec::new();
    let mut flags_end = 0;
    for (word, end) in raw_words(args, escape) {
        if !word.starts_with("--") {
            break;
        }
        flags_end = end;
        if word == "--" {
            break;
        }
        flags.push(unquote(&word, '\\'));
    }
    (flags, args[flags_end..].trim_start())
}

/// Removes quotes and escapes from a word without expanding anything (for heredoc names).
pub(super) fn unquote(word: &str, escape: char) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            Some('\'') => out.push(c),
            _ if c == escape => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}
