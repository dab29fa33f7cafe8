//! The Dockerfile parser: text → [`Dockerfile`] (stages of instructions), and the shell-like
//! variable expansion the builder applies to instruction arguments later.
//!
//! Parsing is pure and reads a Dockerfile as BuildKit does: `lex` reads the parser
//! directives at the top, joins continuation lines into logical lines (dropping comments and
//! blank lines, also between continued pieces), splits words and hands out heredoc bodies;
//! `instr` turns one logical line (keyword, `--flags`, arguments) into a typed [`Kind`],
//! with `forms` for the instructions that have structure (RUN, COPY/ADD, HEALTHCHECK); this
//! file groups instructions into stages and puts file and line on errors. Arguments stay raw
//! (quotes and `$VARS` in): what a word means depends on ARG and ENV values known only while
//! building, so the builder calls [`expand`] / [`expand_words`] with its scope. Flag values
//! are the exception BuildKit makes: their quotes are removed here, their variables are not.

mod expand;
#[cfg(test)]
mod expand_tests;
mod forms;
#[cfg(test)]
mod forms_tests;
#[cfg(test)]
mod heredoc_tests;
mod instr;
mod lex;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use expand::{ExpandError, expand, expand_heredoc, expand_words};
pub use instr::InstructionError;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says `` ` ``).
    pub escape: char,
    /// The `# syntax=` directive, if any (kept for information; nook has one frontend).
    pub syntax: Option<String>,
    /// ARG instructions before the first FROM (global scope).
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The FROM image word, raw (expanded later with meta ARGs).
    pub base: String,
    /// The raw `--platform` value.
    pub platform: Option<String>,
    pub line: usize,
    /// The FROM line as written (continuation pieces joined).
    pub original: String,
    pub instructions: Vec<Instruction>,
}

/// One instruction after FROM (or a meta ARG).
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The line the instruction starts on (1-based).
    pub line: usize,
    /// The instruction as written, continuation pieces joined, heredoc bodies not included.
    pub original: String,
    pub kind: Kind,
}

/// A command in exec form (a JSON array) or shell form (text for `SHELL` + `-c`).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// A heredoc body (`<<EOF … EOF`).
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    pub name: String,
    /// The body, every line ending in `\n`; leading tabs removed for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion. For
    /// COPY/ADD the builder expands with [`expand_heredoc`]; in RUN the shell does it.
    pub expand: bool,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySpec {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: bool,
    pub exclude: Vec<String>,
    /// COPY only.
    pub parents: bool,
    /// Sources as raw words (expanded later); a heredoc source is its name.
    pub sources: Vec<String>,
    /// The destination as a raw word.
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
    /// The JSON array form was used.
    pub json: bool,
}

/// RUN.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Raw `--mount` values, in order.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
    /// What the shell runs: with heredocs, their bodies are part of the text (see the parser).
    pub command: Command,
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK CMD and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub command: Command,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// What an instruction says. Values are raw unless noted: quotes and variables still in.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Run(RunSpec),
    Copy(CopySpec),
    Add(CopySpec),
    /// (name, raw value with its quotes).
    Env(Vec<(String, String)>),
    /// (name, raw default).
    Arg(Vec<(String, Option<String>)>),
    /// Raw key and value.
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    StopSignal(String),
    Maintainer(String),
    /// Raw words (JSON array or whitespace separated).
    Expose(Vec<String>),
    /// Raw words (JSON array or whitespace separated).
    Volume(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Shell(Vec<String>),
    /// None for `HEALTHCHECK NONE`.
    Healthcheck(Option<HealthSpec>),
    /// The instruction text after ONBUILD, as written.
    Onbuild(String),
}

/// Why a Dockerfile could not be parsed; the message starts with `FILE:LINE:` where a line is
/// to blame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("{file}: the Dockerfile has no instructions; it needs at least `FROM IMAGE`")]
    Empty { file: String },
    #[error("{file}: the Dockerfile has no FROM instruction; start a stage with `FROM IMAGE`")]
    NoFrom { file: String },
    #[error("{file}:{line}: {problem}")]
    Line {
        file: String,
        line: usize,
        problem: InstructionError,
    },
}

impl ParseError {
    /// The line to blame, where there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// What is wrong with the line, where a line is to blame.
    pub fn problem(&self) -> Option<&InstructionError> {
        match self {
            ParseError::Line { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// Parses a Dockerfile; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, ParseError> {
    let at = |line: usize| {
        move |problem: InstructionError| ParseError::Line {
            file: file.to_owned(),
            line,
            problem,
        }
    };
    let mut lines = lex::Lines::new(text);
    let directives = lines.directives().map_err(|(line, p)| at(line)(p))?;
    let escape = directives.escape;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut any = false;
    while let Some(logical) = lines.next_logical() {
        any = true;
        let parsed =
            instr::parse_line(&logical.text, escape, Some(&mut lines)).map_err(at(logical.line))?;
        match parsed {
            instr::Parsed::From(from) => {
                let stage = new_stage(from, &logical, &stages).map_err(at(logical.line))?;
                stages.push(stage);
            }
            instr::Parsed::Instruction(kind) => {
                let instruction = Instruction {
                    line: logical.line,
                    original: logical.text.clone(),
                    kind,
                };
                match (stages.last_mut(), &instruction.kind) {
                    (Some(stage), _) => stage.instructions.push(instruction),
                    (None, Kind::Arg(_)) => meta_args.push(instruction),
                    (None, _) => {
                        let word = lex::keyword(&logical.text).to_owned();
                        return Err(at(logical.line)(InstructionError::BeforeFrom(word)));
                    }
                }
            }
        }
    }
    if !any {
        return Err(ParseError::Empty {
            file: file.to_owned(),
        });
    }
    if stages.is_empty() {
        return Err(ParseError::NoFrom {
            file: file.to_owned(),
        });
    }
    Ok(Dockerfile {
        escape,
        syntax: directives.syntax,
        meta_args,
        stages,
    })
}

/// A stage from its FROM line, checking the name against the stages before it.
fn new_stage(
    from: instr::FromSpec,
    logical: &lex::Logical,
    before: &[Stage],
) -> Result<Stage, InstructionError> {
    if let Some(name) = &from.name {
        if !valid_stage_name(name) {
            return Err(InstructionError::StageName(name.clone()));
        }
        if before.iter().any(|s| s.name.as_deref() == Some(name)) {
            return Err(InstructionError::DuplicateStage(name.clone()));
        }
    }
    Ok(Stage {
        index: before.len(),
        name: from.name,
        base: from.base,
        platform: from.platform,
        line: logical.line,
        original: logical.text.clone(),
        instructions: Vec::new(),
    })
}

/// BuildKit's rule for stage names: a lowercase letter, then lowercase letters, digits, `-`,
/// `_` and `.`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}
