//! Variable expansion as BuildKit's shell lexer does it: quotes removed (`'…'` literal,
//! `"…"` expanding), the escape character, `$V`, `${V}` and the `${V…}` modifiers. Not a
//! shell: no command substitution, no globbing, no arithmetic.
//!
//! One pass builds both results: the whole text (for [`expand`]) and the words split on
//! unquoted whitespace (for [`expand_words`]). A value substituted outside quotes splits
//! into words like the text around it; quoted text never does.

/// Why a text could not be expanded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpandError {
    /// `${V?msg}` / `${V:?msg}` with V unset (or empty).
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("missing '}}' in {text:?}; close the ${{...}}")]
    MissingBrace { text: String },
    #[error("bad substitution in {text:?}; a ${{...}} needs a variable name")]
    BadSubstitution { text: String },
    #[error("unsupported modifier {modifier:?} in {text:?}; use :- - :+ + :? ? # ## % %% or /")]
    Modifier { modifier: String, text: String },
    #[error("${{...}} nested more than 64 deep in {text:?}")]
    TooDeep { text: String },
    #[error("no closing {quote} quote in {text:?}")]
    Quote { quote: &'static str, text: String },
}

/// Expands `raw` with `vars`; unset variables expand to "".
pub fn expand(
    raw: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    Expander::new(raw, escape, vars).run().map(|(text, _)| text)
}

/// Expands the body of a COPY/ADD heredoc whose delimiter was not quoted, as a shell
/// expands a here-document: quotes are ordinary characters and the escape character escapes
/// only `$` and itself; variables expand as in [`expand`].
pub fn expand_heredoc(
    content: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut expander = Expander::new(content, escape, vars);
    expander.script = true;
    expander.run().map(|(text, _)| text)
}

/// Expands `raw` and splits it into words on whitespace outside quotes.
pub fn expand_words(
    raw: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    Expander::new(raw, escape, vars)
        .run()
        .map(|(_, words)| words)
}

/// Words being collected.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
}

impl Words {
    /// A character that splits words when it is whitespace.
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
            }
        } else {
            self.word.push(c);
        }
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    /// Quoted or escaped text: part of the current word whatever it holds.
    fn push_raw(&mut self, s: &str) {
        self.word.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Expander<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Fn(&str) -> Option<String>,
    /// How many `${` are open.
    depth: usize,
    /// Heredoc body: quotes are not special, escapes only before `$` and the escape.
    script: bool,
}

/// How deep `${…}` may nest.
const MAX_NESTING: usize = 64;

/// How a nested run of the lexer ended early.
enum Stop {
    Error(ExpandError),
    /// The text ended before the stop character.
    End,
}

impl From<ExpandError> for Stop {
    fn from(e: ExpandError) -> Self {
        Stop::Error(e)
    }
}

impl<'a> Expander<'a> {
    fn new(text: &'a str, escape: char, vars: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Expander {
            text,
            chars: text.chars().collect(),
            pos: 0,
            escape,
            vars,
            depth: 0,
            script: false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn run(mut self) -> Result<(String, Vec<String>), ExpandError> {
        match self.until(None, false) {
            Ok(done) => Ok(done),
            Err(Stop::Error(e)) => Err(e),
            Err(Stop::End) => Err(self.missing_brace()),
        }
    }

    fn missing_brace(&self) -> ExpandError {
        ExpandError::MissingBrace {
            text: self.text.to_owned(),
        }
    }

    /// Processes up to `stop` (consumed) or the end of the text. With `raw_escapes` the
    /// escape characters stay in the result (for patterns).
    fn until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Stop> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((text, words.finish()));
            }
            if self.script && c != '$' {
                self.pos += 1;
                let escaped = self
                    .peek()
                    .filter(|&n| c == self.escape && (n == '$' || n == c));
                self.pos += usize::from(escaped.is_some());
                text.push(escaped.unwrap_or(c));
                continue;
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    words.push_str(&value);
                    text.push_str(&value);
                }
                '\'' => {
                    let quoted = self.single_quoted()?;
                    words.push_raw(&quoted);
                    text.push_str(&quoted);
                }
                '"' => {
                    let quoted = self.double_quoted(raw_escapes)?;
                    words.push_raw(&quoted);
                    text.push_str(&quoted);
                }
                _ => {
                    self.pos += 1;
                    if c != self.escape {
                        words.push(c);
                        text.push(c);
                        continue;
                    }
                    if raw_escapes {
                        words.push_raw(&c.to_string());
                        text.push(c);
                    }
                    // An escape at the very end escapes nothing and is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.push_raw(&escaped.to_string());
                    text.push(escaped);
                }
            }
        }
        match stop {
            Some(_) => Err(Stop::End),
            None => Ok((text, words.finish())),
        }
    }

    /// `'…'`: everything literal up to the next `'`.
    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
                None => {
                    return Err(ExpandError::Quote {
                        quote: "single",
                        text: self.text.to_owned(),
                    });
                }
            }
        }
    }

    /// `"…"`: `$` expands; the escape character escapes only `"`, `$` and itself.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, Stop> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(Stop::Error(ExpandError::Quote {
                        quote: "double",
                        text: self.text.to_owned(),
                    }));
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    let escapable = |n: char| n == '"' || n == '$' || n == self.escape;
                    match self.peek() {
                        Some(n) if c == self.escape && escapable(n) => {
                            if raw_escapes {
                                out.push(c);
                            }
                            out.push(n);
                            self.pos += 1;
                        }
                        None if c == self.escape => {}
                        _ => out.push(c),
                    }
                }
            }
        }
    }

    /// `$NAME`, `${NAME}` or `${NAME<modifier>word}`; a `$` before anything else is itself.
    fn dollar(&mut self) -> Result<String, Stop> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        // Each level of `${A:-${B:-…}}` recurses; a text from an image is not trusted.
        if self.depth == MAX_NESTING {
            return Err(Stop::Error(ExpandError::TooDeep {
                text: self.text.to_owned(),
            }));
        }
        self.depth += 1;
        let value = self.braced();
        self.depth -= 1;
        value
    }

    /// The rest of `${…}` after the brace.
    fn braced(&mut self) -> Result<String, Stop> {
        match self.peek() {
            None => return Err(self.missing_brace().into()),
            Some('{' | '}' | ':') => {
                return Err(Stop::Error(ExpandError::BadSubstitution {
                    text: self.text.to_owned(),
                }));
            }
            Some(_) => {}
        }
        let name = self.name();
        let mut modifier = match self.next() {
            None => return Err(self.missing_brace().into()),
            Some('}') => return Ok(self.lookup(&name).unwrap_or_default()),
            Some(c) => c.to_string(),
        };
        let null_is_unset = modifier == ":";
        if null_is_unset {
            let Some(op) = self.next() else {
                return Err(self.missing_brace().into());
            };
            modifier.push(op);
        }
        let op = modifier.chars().last().unwrap_or(':');
        if op == '/' && !null_is_unset {
            return self.replace(&name);
        }
        if !"+-?#%".contains(op) {
            return Err(Stop::Error(ExpandError::Modifier {
                modifier,
                text: self.text.to_owned(),
            }));
        }
        let (word, _) = self.until_brace(Some('}'), op == '#' || op == '%')?;
        let value = self.lookup(&name);
        let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match op {
            '-' if unset => Ok(word),
            '+' if unset => Ok(String::new()),
            '+' => Ok(word),
            '?' if unset => {
                let message = match (&word, &value) {
                    (w, _) if !w.is_empty() => w.clone(),
                    (_, None) => "is not allowed to be unset".to_owned(),
                    (_, Some(_)) => "is not allowed to be empty".to_owned(),
                };
                Err(Stop::Error(ExpandError::Required { name, message }))
            }
            '#' | '%' => Ok(trim_match(
                &value.unwrap_or_default(),
                &word,
                op,
                self.escape,
            )),
            _ => Ok(value.unwrap_or_default()),
        }
    }

    /// [`Expander::until`] where running off the end means a missing `}`.
    fn until_brace(
        &mut self,
        stop: Option<char>,
        raw: bool,
    ) -> Result<(String, Vec<String>), Stop> {
        match self.until(stop, raw) {
            Err(Stop::End) => Err(self.missing_brace().into()),
            other => other,
        }
    }

    /// `${NAME/pattern/replacement}` (first match) or `${NAME//pattern/replacement}` (all).
    fn replace(&mut self, name: &str) -> Result<String, Stop> {
        let all = self.peek() == Some('/');
        self.pos += usize::from(all);
        let (pattern, _) = self.until_brace(Some('/'), true)?;
        let (replacement, _) = self.until_brace(Some('}'), true)?;
        let value = self.lookup(name).unwrap_or_default();
        let pattern = glob::compile(&pattern, self.escape);
        Ok(glob::replace(&value, &pattern, &replacement, all))
    }

    /// A variable name: digits, one special parameter character, or letters, digits and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
            }
            Some(c) if "@*#?-$!".contains(c) => {
                name.push(c);
                self.pos += 1;
            }
            _ => {
                while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.vars)(name)
    }
}

/// `${V#p}` / `${V##p}` (prefix) and `${V%p}` / `${V%%p}` (suffix): the shortest match is
/// removed, the longest when the pattern starts with the operator again.
fn trim_match(value: &str, word: &str, op: char, escape: char) -> String {
    let (greedy, pattern) = match word.strip_prefix(op) {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    let mut pattern = glob::compile(pattern, escape);
    let mut chars: Vec<char> = value.chars().collect();
    // A suffix is a prefix of the reversed value, matched by the reversed pattern.
    if op == '%' {
        pattern.reverse();
        chars.reverse();
    }
    let ends = glob::prefix_matches(&pattern, &chars);
    let mut lengths = (0..ends.len()).filter(|&n| ends[n]);
    let cut = if greedy {
        lengths.next_back()
    } else {
        lengths.next()
    };
    let Some(cut) = cut else {
        return value.to_owned();
    };
    let mut kept: Vec<char> = chars[cut..].to_vec();
    if op == '%' {
        kept.reverse();
    }
    kept.into_iter().collect()
}

mod glob {
    //! Shell patterns of `*`, `?` and literal characters (escaped ones too), matched by
    //! stepping the set of pattern positions through the text: time is length × pattern
    //! length, whatever the pattern (a Dockerfile from an image's ONBUILD is not trusted).

    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Token {
        Any,
        One,
        Char(char),
    }

    pub fn compile(pattern: &str, escape: char) -> Vec<Token> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Any,
                '?' => Token::One,
                c if c == escape => Token::Char(chars.next().unwrap_or(c)),
                c => Token::Char(c),
            });
        }
        tokens
    }

    /// `ends[n]` is whether `pattern` matches the first `n` characters of `text`.
    pub fn prefix_matches(pattern: &[Token], text: &[char]) -> Vec<bool> {
        let mut states = vec![false; pattern.len() + 1];
        states[0] = true;
        close(pattern, &mut states);
        let mut ends = Vec::with_capacity(text.len() + 1);
        ends.push(states[pattern.len()]);
        for &c in text {
            let mut next = vec![false; pattern.len() + 1];
            for (p, token) in pattern.iter().enumerate() {
                if !states[p] {
                    continue;
                }
                match token {
                    Token::Any => next[p] = true,
                    Token::One => next[p + 1] = true,
                    Token::Char(x) if *x == c => next[p + 1] = true,
                    Token::Char(_) => {}
                }
            }
            close(pattern, &mut next);
            ends.push(next[pattern.len()]);
            if !next.contains(&true) {
                ends.resize(text.len() + 1, false);
                break;
            }
            states = next;
        }
        ends
    }

    /// A `*` may match nothing: its position reaches the one after it.
    fn close(pattern: &[Token], states: &mut [bool]) {
        for (p, token) in pattern.iter().enumerate() {
            if states[p] && *token == Token::Any {
                states[p + 1] = true;
            }
        }
    }

    /// Replaces the first (or every) leftmost longest non-empty match of `pattern`.
    pub fn replace(value: &str, pattern: &[Token], replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut start = 0;
        let mut replaced = false;
        while start < chars.len() {
            let longest = if replaced && !all {
                None
            } else {
                let ends = prefix_matches(pattern, &chars[start..]);
                (1..ends.len()).rev().find(|&n| ends[n])
            };
            match longest {
                Some(n) => {
                    out.push_str(replacement);
                    start += n;
                    replaced = true;
                }
                None => {
                    out.push(chars[start]);
                    start += 1;
                }
            }
        }
        out
    }
}
