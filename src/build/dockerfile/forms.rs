//! The instructions with flags and structure: RUN, COPY/ADD (with heredocs) and
//! HEALTHCHECK, and the flag checking all instructions share.

use std::time::Duration;

use super::instr::{InstructionError, Line, json_array, maybe_json};
use super::lex::{self, Lines};
use super::{Command, CopySpec, HealthSpec, Heredoc, RunSpec};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FlagKind {
    /// `--name=value`, at most once.
    Text,
    /// `--name=value`, any number of times.
    Repeated,
    /// `--name`, `--name=true` or `--name=false`.
    Bool,
}

/// The flags of one instruction, checked against what it accepts.
#[derive(Debug, Default)]
pub(super) struct FlagSet {
    values: Vec<(String, String)>,
}

impl FlagSet {
    /// Checks raw `--name[=value]` words: every name known, values where needed, bools
    /// true or false, single flags once.
    pub fn new(
        keyword: &str,
        raw: &[String],
        allowed: &[(&str, FlagKind)],
    ) -> Result<FlagSet, InstructionError> {
        let mut set = FlagSet::default();
        for word in raw {
            let body = word.strip_prefix("--").unwrap_or(word);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(InstructionError::UnknownFlag {
                    instruction: keyword.to_ascii_uppercase(),
                    flag: name.to_owned(),
                });
            };
            if kind != FlagKind::Repeated && set.values.iter().any(|(n, _)| n == name) {
                return Err(InstructionError::FlagTwice(name.to_owned()));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_owned(),
                (FlagKind::Bool, Some(v)) if v.eq_ignore_ascii_case("true") => "true".to_owned(),
                (FlagKind::Bool, Some(v)) if v.eq_ignore_ascii_case("false") => String::new(),
                (FlagKind::Bool, Some(v)) => {
                    return Err(InstructionError::FlagBool {
                        flag: name.to_owned(),
                        value: v.to_owned(),
                    });
                }
                (_, None) => return Err(InstructionError::FlagValue(name.to_owned())),
                (_, Some(v)) => v.to_owned(),
            };
            set.values.push((name.to_owned(), value));
        }
        Ok(set)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        let named = self.values.iter().filter(|(n, _)| n == name);
        named.map(|(_, v)| v.clone()).collect()
    }

    pub fn bool(&self, name: &str) -> bool {
        self.values.iter().any(|(n, v)| n == name && !v.is_empty())
    }
}

/// A `<<NAME` word found in an instruction's arguments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HeredocMark {
    /// The word as written (`<<-"EOF"`).
    pub word: String,
    pub name: String,
    pub strip_tabs: bool,
    pub quoted: bool,
}

/// The words of `args`, with `<<` (or `<<-`) and the name after it joined into one word
/// when blanks part them (`<< EOF`), as BuildKit's lexer reads heredocs.
pub(super) fn heredoc_words(args: &str, escape: char) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for (word, _) in lex::raw_words(args, escape) {
        match words.last_mut() {
            Some(last) if open => last.push_str(&word),
            _ => words.push(word),
        }
        open = words.last().is_some_and(|w| {
            let after_fd = w.trim_start_matches(|c: char| c.is_ascii_digit());
            after_fd == "<<" || after_fd == "<<-"
        });
    }
    words
}

/// The heredoc words among `args` (`<<EOF`, `<<-EOF`, `<<"EOF"`, with an optional file
/// descriptor number before, each a word of its own).
pub(super) fn heredoc_marks(args: &str, escape: char) -> Vec<HeredocMark> {
    let mut marks = Vec::new();
    for word in heredoc_words(args, escape) {
        let after_fd = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(spec) = after_fd.strip_prefix("<<") else {
            continue;
        };
        let (strip_tabs, spec) = match spec.strip_prefix('-') {
            Some(s) => (true, s),
            None => (false, spec),
        };
        let name = lex::unquote(spec, escape);
        if name.is_empty() || spec.contains('<') {
            continue;
        }
        marks.push(HeredocMark {
            quoted: spec.contains(['"', '\'']),
            word,
            name,
            strip_tabs,
        });
    }
    marks
}

/// Reads the bodies of `marks`, in order, from the lines after the instruction.
fn read_heredocs(
    marks: &[HeredocMark],
    lines: &mut Lines,
) -> Result<Vec<Heredoc>, InstructionError> {
    let mut heredocs = Vec::new();
    for mark in marks {
        let Some(body) = lines.heredoc_body(&mark.name, mark.strip_tabs) else {
            return Err(InstructionError::UnterminatedHeredoc(mark.name.clone()));
        };
        let content = if mark.strip_tabs {
            let stripped = body
                .split_inclusive('\n')
                .map(|l| l.trim_start_matches('\t'));
            stripped.collect()
        } else {
            body
        };
        heredocs.push(Heredoc {
            name: mark.name.clone(),
            content,
            expand: !mark.quoted,
        });
    }
    Ok(heredocs)
}

/// The heredoc marks of a shell-form line and their bodies (none for JSON form or where
/// no lines are at hand).
fn heredocs_of(
    line: &Line,
    lines: Option<&mut Lines>,
) -> Result<(Vec<HeredocMark>, Vec<Heredoc>), InstructionError> {
    let Some(lines) = lines else {
        return Ok((Vec::new(), Vec::new()));
    };
    if json_array(line.args)?.is_some() || !line.args.contains("<<") {
        return Ok((Vec::new(), Vec::new()));
    }
    let marks = heredoc_marks(line.args, line.escape);
    let heredocs = read_heredocs(&marks, lines)?;
    Ok((marks, heredocs))
}

/// RUN: flags, then a command; heredoc bodies become part of the shell text.
pub(super) fn run(line: &Line, lines: Option<&mut Lines>) -> Result<RunSpec, InstructionError> {
    let flags = line.flags(&[
        ("mount", FlagKind::Repeated),
        ("network", FlagKind::Text),
        ("security", FlagKind::Text),
    ])?;
    if line.args.is_empty() {
        return Err(line.need("a command"));
    }
    let (marks, heredocs) = heredocs_of(line, lines)?;
    let command = match (marks.as_slice(), heredocs.as_slice()) {
        ([], _) => maybe_json(line.args)?,
        // `RUN <<EOF`: the body is the script.
        ([_], [doc]) if heredoc_words(line.args, line.escape).len() == 1 => {
            Command::Shell(doc.content.clone())
        }
        // Otherwise the shell gets the line and each body with its terminator, as it would
        // read them from a script.
        _ => {
            let mut text = format!("{}\n", line.args);
            for doc in &heredocs {
                text.push_str(&doc.content);
                text.push_str(&doc.name);
                text.push('\n');
            }
            Command::Shell(text)
        }
    };
    Ok(RunSpec {
        mounts: flags.all("mount"),
        network: flags.text("network"),
        security: flags.text("security"),
        command,
        heredocs,
    })
}

/// COPY and ADD: flags, then sources and a destination (JSON array or words); `<<NAME`
/// sources name heredoc bodies.
pub(super) fn copy(
    line: &Line,
    lines: Option<&mut Lines>,
    add: bool,
) -> Result<CopySpec, InstructionError> {
    let common = [
        ("chown", FlagKind::Text),
        ("chmod", FlagKind::Text),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Repeated),
    ];
    let extra: &[(&str, FlagKind)] = if add {
        &[
            ("checksum", FlagKind::Text),
            ("keep-git-dir", FlagKind::Bool),
        ]
    } else {
        &[("from", FlagKind::Text), ("parents", FlagKind::Bool)]
    };
    let allowed: Vec<(&str, FlagKind)> = common.iter().chain(extra).copied().collect();
    let flags = line.flags(&allowed)?;
    let json = json_array(line.args)?;
    let (marks, heredocs) = heredocs_of(line, lines)?;
    let mut words = match &json {
        Some(words) => words.clone(),
        None if marks.is_empty() => line.words(),
        None => heredoc_words(line.args, line.escape),
    };
    if marks.iter().any(|m| words.last() == Some(&m.word)) {
        return Err(InstructionError::HeredocDest(
            line.keyword.to_ascii_uppercase(),
        ));
    }
    for word in &mut words {
        if let Some(mark) = marks.iter().find(|m| m.word == *word) {
            *word = mark.name.clone();
        }
    }
    let dest = match words.pop() {
        Some(dest) if !words.is_empty() => dest,
        _ => return Err(line.need("at least one source and a destination")),
    };
    Ok(CopySpec {
        from: flags.text("from"),
        chown: flags.text("chown"),
        chmod: flags.text("chmod"),
        link: flags.bool("link"),
        checksum: flags.text("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        exclude: flags.all("exclude"),
        parents: flags.bool("parents"),
        sources: words,
        dest,
        heredocs,
        json: json.is_some(),
    })
}

/// HEALTHCHECK NONE, or HEALTHCHECK [flags] CMD command.
pub(super) fn healthcheck(line: &Line) -> Result<Option<HealthSpec>, InstructionError> {
    let kind = lex::keyword(line.args);
    if kind.eq_ignore_ascii_case("none") {
        if line.args.len() != kind.len() || !line.flags.is_empty() {
            return Err(InstructionError::HealthcheckNone);
        }
        return Ok(None);
    }
    if !kind.eq_ignore_ascii_case("cmd") {
        return Err(InstructionError::HealthcheckType(kind.to_owned()));
    }
    let flags = line.flags(&[
        ("interval", FlagKind::Text),
        ("timeout", FlagKind::Text),
        ("start-period", FlagKind::Text),
        ("start-interval", FlagKind::Text),
        ("retries", FlagKind::Text),
    ])?;
    let command = line.args[kind.len()..].trim();
    if command.is_empty() {
        return Err(line.need("a command after CMD"));
    }
    let duration = |name: &str| -> Result<Option<Duration>, InstructionError> {
        let Some(value) = flags.text(name) else {
            return Ok(None);
        };
        let parsed = parse_duration(&value).map_err(|reason| InstructionError::Duration {
            flag: name.to_owned(),
            value: value.clone(),
            reason,
        })?;
        if !parsed.is_zero() && parsed < Duration::from_millis(1) {
            return Err(InstructionError::Duration {
                flag: name.to_owned(),
                value,
                reason: "it must be 0 or at least 1ms",
            });
        }
        Ok(Some(parsed))
    };
    let retries = match flags.text("retries") {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| InstructionError::Retries(v))?),
    };
    Ok(Some(HealthSpec {
        command: maybe_json(command)?,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}

/// A duration as Go's `time.ParseDuration` writes them, without a sign: `0`, or numbers
/// (with an optional fraction) each followed by a unit of ns, us, µs, ms, s, m or h.
pub(super) fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("it is empty");
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err("expected a number like 30s, 1m30s or 500ms");
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("a unit is missing (ns, us, ms, s, m, h)"),
            _ => return Err("unknown unit (use ns, us, ms, s, m or h)"),
        };
        total = total.saturating_add(decimal(whole)?.saturating_mul(scale));
        // Digits after the point beyond nanoseconds are dropped, as Go does.
        let mut place = scale;
        for digit in fraction.chars() {
            place /= 10;
            total = total.saturating_add(u128::from(digit.to_digit(10).unwrap_or(0)) * place);
        }
        rest = after;
    }
    let nanos = u64::try_from(total).map_err(|_| "it is too long")?;
    Ok(Duration::from_nanos(nanos))
}

/// Digits as a number (empty is 0).
fn decimal(digits: &str) -> Result<u128, &'static str> {
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse().map_err(|_| "the number is too long")
}
