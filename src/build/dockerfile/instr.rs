//! One logical line → one typed instruction: the keyword, the `--flags` each instruction
//! accepts, and the argument forms (JSON or shell, key=value pairs, words). Heredoc bodies
//! are read from the lines that follow, through [`Lines`].

use super::forms::{self, FlagKind, FlagSet};
use super::lex::{self, Lines};
use super::{Command, Kind};

/// What is wrong with one instruction (or directive); [`super::ParseError`] adds file and line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InstructionError {
    #[error("unknown instruction: {0}")]
    Unknown(String),
    #[error("{0} comes before the first FROM; only ARG may come before FROM")]
    BeforeFrom(String),
    #[error("unknown flag for {instruction}: --{flag}")]
    UnknownFlag { instruction: String, flag: String },
    #[error("flag --{0} needs a value (--{0}=VALUE)")]
    FlagValue(String),
    #[error("flag --{flag} takes true or false, not {value:?}")]
    FlagBool { flag: String, value: String },
    #[error("flag --{0} is given twice; give it once")]
    FlagTwice(String),
    #[error("{instruction} requires {what}")]
    Arguments {
        instruction: String,
        what: &'static str,
    },
    #[error("the parser directive {0} is given twice; give it once at the top")]
    DirectiveTwice(String),
    #[error("invalid escape directive {0:?}; use \\ or `")]
    Escape(String),
    #[error("a JSON array here must hold strings only, like [\"echo\", \"1\"]")]
    JsonNotStrings,
    #[error("SHELL requires its arguments as a JSON array, like SHELL [\"/bin/sh\", \"-c\"]")]
    ShellNotJson,
    #[error("invalid stage name {0:?}; use a letter, then letters, digits, '-', '_' or '.'")]
    StageName(String),
    #[error("the stage name {0:?} is used twice; give each stage its own name")]
    DuplicateStage(String),
    #[error("FROM takes `IMAGE` or `IMAGE AS NAME`, not {0:?}")]
    FromArgs(String),
    #[error("{instruction}: can't find = in {word:?}; write name=value")]
    NoEquals { instruction: String, word: String },
    #[error("{0}: a name can not be blank")]
    BlankName(String),
    #[error("ONBUILD can not trigger {0}")]
    OnbuildTrigger(String),
    #[error("unknown HEALTHCHECK type {0:?}; use HEALTHCHECK CMD ... or HEALTHCHECK NONE")]
    HealthcheckType(String),
    #[error("HEALTHCHECK NONE takes no other arguments or flags")]
    HealthcheckNone,
    #[error("flag --{flag}: invalid duration {value:?}: {reason}")]
    Duration {
        flag: String,
        value: String,
        reason: &'static str,
    },
    #[error("flag --retries: {0:?} is not a whole number of 0 or more")]
    Retries(String),
    #[error("unterminated heredoc {0}; end it with a line holding only {0}")]
    UnterminatedHeredoc(String),
    #[error("{0} can not take a heredoc as its destination")]
    HeredocDest(String),
}

/// A FROM line.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FromSpec {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// What one logical line is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Parsed {
    From(FromSpec),
    Instruction(Kind),
}

/// The pieces of a line every instruction parser gets.
pub(super) struct Line<'a> {
    /// The keyword as written (for messages).
    pub keyword: &'a str,
    pub flags: Vec<String>,
    /// The arguments after the flags, trimmed.
    pub args: &'a str,
    pub escape: char,
}

impl Line<'_> {
    pub(super) fn flags(&self, allowed: &[(&str, FlagKind)]) -> Result<FlagSet, InstructionError> {
        FlagSet::new(self.keyword, &self.flags, allowed)
    }

    pub(super) fn no_flags(&self) -> Result<(), InstructionError> {
        self.flags(&[]).map(|_| ())
    }

    pub(super) fn need(&self, what: &'static str) -> InstructionError {
        InstructionError::Arguments {
            instruction: self.keyword.to_ascii_uppercase(),
            what,
        }
    }

    pub(super) fn words(&self) -> Vec<String> {
        lex::raw_words(self.args, self.escape)
            .into_iter()
            .map(|(w, _)| w)
            .collect()
    }
}

/// Parses one logical line; heredoc bodies are read from `lines` (None where heredocs can't
/// be, as in an ONBUILD trigger).
pub(super) fn parse_line(
    text: &str,
    escape: char,
    lines: Option<&mut Lines>,
) -> Result<Parsed, InstructionError> {
    let text = text.trim();
    let keyword = lex::keyword(text);
    let (flags, args) = lex::take_flags(text[keyword.len()..].trim_start(), escape);
    let line = Line {
        keyword,
        flags,
        args: args.trim_end(),
        escape,
    };
    let kind = match keyword.to_ascii_lowercase().as_str() {
        "from" => return parse_from(&line).map(Parsed::From),
        "run" => Kind::Run(forms::run(&line, lines)?),
        "copy" => Kind::Copy(forms::copy(&line, lines, false)?),
        "add" => Kind::Add(forms::copy(&line, lines, true)?),
        "env" => Kind::Env(key_values(&line, true)?),
        "label" => Kind::Label(key_values(&line, false)?),
        "arg" => Kind::Arg(args_list(&line)?),
        "workdir" => Kind::Workdir(rest(&line, "a directory")?),
        "user" => Kind::User(rest(&line, "a user")?),
        "stopsignal" => Kind::StopSignal(rest(&line, "a signal")?),
        "maintainer" => Kind::Maintainer(rest(&line, "a name")?),
        "expose" => Kind::Expose(word_list(&line, "at least one port")?),
        "volume" => Kind::Volume(word_list(&line, "at least one path")?),
        "entrypoint" => {
            line.no_flags()?;
            Kind::Entrypoint(maybe_json(line.args)?)
        }
        "cmd" => {
            line.no_flags()?;
            Kind::Cmd(maybe_json(line.args)?)
        }
        "shell" => Kind::Shell(shell(&line)?),
        "healthcheck" => Kind::Healthcheck(forms::healthcheck(&line)?),
        "onbuild" => {
            line.no_flags()?;
            Kind::Onbuild(onbuild(line.args, escape)?)
        }
        _ => return Err(InstructionError::Unknown(keyword.to_owned())),
    };
    Ok(Parsed::Instruction(kind))
}

/// `[--platform=P] IMAGE [AS NAME]`.
fn parse_from(line: &Line) -> Result<FromSpec, InstructionError> {
    let flags = line.flags(&[("platform", FlagKind::Text)])?;
    let words: Vec<&str> = line.args.split_whitespace().collect();
    let (base, name) = match words.as_slice() {
        [base] => (*base, None),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => (*base, Some(name.to_lowercase())),
        _ => return Err(InstructionError::FromArgs(line.args.to_owned())),
    };
    Ok(FromSpec {
        base: base.to_owned(),
        name,
        platform: flags.text("platform"),
    })
}

/// A JSON array of strings → exec form; anything else → shell form with the text.
pub(super) fn maybe_json(args: &str) -> Result<Command, InstructionError> {
    Ok(match json_array(args)? {
        Some(words) => Command::Exec(words),
        None => Command::Shell(args.to_owned()),
    })
}

/// The strings of a JSON array, or None when `args` is not a JSON array. An array with
/// anything but strings in it is an error, as in BuildKit (not the shell form).
pub(super) fn json_array(args: &str) -> Result<Option<Vec<String>>, InstructionError> {
    let args = args.trim();
    if !args.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(args) else {
        return Ok(None);
    };
    let strings = values.into_iter().map(|v| match v {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(InstructionError::JsonNotStrings),
    });
    strings.collect::<Result<Vec<String>, _>>().map(Some)
}

/// ENV (with the legacy `ENV name value…` form) and LABEL (pairs only).
fn key_values(line: &Line, legacy: bool) -> Result<Vec<(String, String)>, InstructionError> {
    line.no_flags()?;
    let instruction = line.keyword.to_ascii_uppercase();
    let words = line.words();
    let Some(first) = words.first() else {
        return Err(line.need("at least one name=value"));
    };
    if legacy && !first.contains('=') {
        let mut parts = line.args.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap_or_default().to_owned();
        let value = parts.next().map(str::trim_start).unwrap_or_default();
        if value.is_empty() {
            return Err(line.need("a value: ENV NAME=VALUE or ENV NAME VALUE"));
        }
        return Ok(vec![(name, value.to_owned())]);
    }
    let mut pairs = Vec::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(InstructionError::NoEquals { instruction, word });
        };
        if name.is_empty() {
            return Err(InstructionError::BlankName(instruction));
        }
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// ARG `name` or `name=default`, several per line.
fn args_list(line: &Line) -> Result<Vec<(String, Option<String>)>, InstructionError> {
    line.no_flags()?;
    let words = line.words();
    if words.is_empty() {
        return Err(line.need("at least one name or name=default"));
    }
    let mut list = Vec::new();
    for word in words {
        let (name, default) = match word.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (word, None),
        };
        if name.is_empty() {
            return Err(InstructionError::BlankName("ARG".to_owned()));
        }
        list.push((name, default));
    }
    Ok(list)
}

/// The whole rest of the line, which must not be empty.
fn rest(line: &Line, what: &'static str) -> Result<String, InstructionError> {
    line.no_flags()?;
    if line.args.is_empty() {
        return Err(line.need(what));
    }
    Ok(line.args.to_owned())
}

/// A JSON array or whitespace-separated words, at least one.
fn word_list(line: &Line, what: &'static str) -> Result<Vec<String>, InstructionError> {
    line.no_flags()?;
    let words = json_array(line.args)?
        .unwrap_or_else(|| line.args.split_whitespace().map(str::to_owned).collect());
    if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
        return Err(line.need(what));
    }
    Ok(words)
}

/// SHELL: a JSON array of at least one string.
fn shell(line: &Line) -> Result<Vec<String>, InstructionError> {
    line.no_flags()?;
    match json_array(line.args)? {
        Some(words) if !words.is_empty() => Ok(words),
        Some(_) => Err(line.need("at least the shell's path")),
        None => Err(InstructionError::ShellNotJson),
    }
}

/// ONBUILD: the trigger text as written, checked by parsing it now so that a mistake shows
/// at its line rather than in a later build.
fn onbuild(trigger: &str, escape: char) -> Result<String, InstructionError> {
    if trigger.is_empty() {
        return Err(InstructionError::Arguments {
            instruction: "ONBUILD".to_owned(),
            what: "an instruction to trigger",
        });
    }
    let word = lex::keyword(trigger).to_ascii_uppercase();
    if ["ONBUILD", "FROM", "MAINTAINER"].contains(&word.as_str()) {
        return Err(InstructionError::OnbuildTrigger(word));
    }
    parse_line(trigger, escape, None)?;
    Ok(trigger.to_owned())
}
