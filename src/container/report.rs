//! The one report a forked helper sends its parent: `run -d`'s monitor (the container
//! started, with its id), `exec`'s helper (the command's pid) and `cp`'s helper (the copy is
//! done), or why it failed. One JSON line through a pipe, written by [`write`] and read by
//! [`read`], which turns silence or garbage into a [`Report::Failed`] that says so.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What a helper tells its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report {
    /// `run -d`: the container's command runs.
    Started { id: String },
    /// `exec`: the command runs as this pid (nook's child).
    Spawned { pid: i32 },
    /// `cp`: the copy is done.
    Done,
    /// The helper gave up; `exit` is the status nook ends with.
    Failed { exit: i32, message: String },
}

/// Sends `report` as one line (best effort: a parent that is gone reads nothing).
pub fn write(mut to: impl Write, report: &Report) {
    if let Ok(mut line) = serde_json::to_vec(report) {
        line.push(b'\n');
        let _ = to.write_all(&line);
    }
}

/// Reads the report's line; end-of-file before it becomes a failure saying `silent`.
pub fn read(from: impl std::io::Read, silent: &str) -> Report {
    let mut line = String::new();
    let _ = std::io::BufReader::new(from).read_line(&mut line);
    decode(&line, silent)
}

fn decode(line: &str, silent: &str) -> Report {
    let line = line.trim();
    if line.is_empty() {
        return Report::Failed {
            exit: 125,
            message: silent.to_owned(),
        };
    }
    serde_json::from_str(line).unwrap_or_else(|e| Report::Failed {
        exit: 125,
        message: format!("nook's helper sent a report nook cannot read ({e}): this is a bug"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: &Report) -> Report {
        let mut buf = Vec::new();
        write(&mut buf, r);
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        read(buf.as_slice(), "unused")
    }

    #[test]
    fn reports_survive_the_pipe() {
        for r in [
            Report::Started { id: "abc".into() },
            Report::Spawned { pid: 42 },
            Report::Done,
            Report::Failed {
                exit: 127,
                message: "no such file:\n\"x\"".into(),
            },
        ] {
            assert_eq!(roundtrip(&r), r);
        }
    }

    #[test]
    fn silence_and_garbage_are_failures_that_say_so() {
        let gone = "the helper ended before it reported";
        assert_eq!(
            read(&b""[..], gone),
            Report::Failed {
                exit: 125,
                message: gone.into()
            }
        );
        let Report::Failed { exit, message } = read(&b"ok abc\n"[..], gone) else {
            panic!("garbage read as a report");
        };
        assert_eq!(exit, 125);
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn only_the_first_line_counts() {
        let text = b"{\"spawned\":{\"pid\":7}}\n\"done\"\n";
        assert_eq!(read(&text[..], ""), Report::Spawned { pid: 7 });
    }
}
