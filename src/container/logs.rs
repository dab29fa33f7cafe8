//! A detached container's output in docker's json-file format: one JSON object per line,
//! `{"log":"...\n","stream":"stdout","time":"2026-11-28T08:00:00.123456789Z"}`, in
//! `container.log`, rotated to `container.log.1`, `.2`, ... when it passes its size cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The log's size cap and how many files are kept (docker's `max-size`, `max-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: 10 << 20,
            max_files: 3,
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Writes a container's output as json-file entries, a line at a time.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// Unfinished lines, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

/// docker's limit for one entry: longer lines are split.
const MAX_LINE: usize = 16 << 10;

impl LogWriter {
    pub fn create(path: &Path, rotation: Rotation) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            file,
            size,
            rotation,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Takes what a stream (0 stdout, 1 stderr) produced; complete lines are written.
    pub fn write(&mut self, stream: usize, data: &[u8]) {
        let stream = stream.min(1);
        self.partial[stream].extend_from_slice(data);
        loop {
            let buf = &self.partial[stream];
            let cut = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => return,
            };
            let line: Vec<u8> = self.partial[stream].drain(..cut).collect();
            self.entry(stream, &line);
        }
    }

    /// Writes what is left of unfinished lines (at the container's end).
    pub fn flush(&mut self) {
        for stream in 0..2 {
            if !self.partial[stream].is_empty() {
                let line = std::mem::take(&mut self.partial[stream]);
                self.entry(stream, &line);
            }
        }
    }

    fn entry(&mut self, stream: usize, line: &[u8]) {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: rfc3339_nanos(SystemTime::now()),
        };
        let Ok(mut bytes) = serde_json::to_vec(&e) else {
            return;
        };
        bytes.push(b'\n');
        if self.size > 0 && self.size + bytes.len() as u64 > self.rotation.max_size {
            self.rotate();
        }
        if self.file.write_all(&bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
    }

    /// container.log → .1 → .2 ...; the oldest beyond `max_files` goes.
    fn rotate(&mut self) {
        let keep = self.rotation.max_files.max(1);
        if keep > 1 {
            for i in (1..keep - 1).rev() {
                let _ = fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1));
            }
            let _ = fs::rename(&self.path, numbered(&self.path, 1));
        }
        if let Ok(f) = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            self.file = f;
            self.size = 0;
        }
    }
}

fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Every entry still kept, oldest first (whatever `max-file` the container ran with: the
/// rotated files are numbered from 1 without gaps).
pub fn read_all(path: &Path) -> Vec<Entry> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|i| numbered(path, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_owned());
    let mut out = Vec::new();
    for f in files {
        if let Ok(file) = File::open(&f) {
            out.extend(parse(BufReader::new(file)));
        }
    }
    out
}

/// The entries in `r`; lines that are not entries are skipped.
pub fn parse(r: impl BufRead) -> Vec<Entry> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// `t` as RFC 3339 in UTC with nanoseconds, as docker writes it.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Howard Hinnant's days → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_704_164_645, 123_456_789);
        assert_eq!(rfc3339_nanos(t), "2024-01-02T03:04:05.123456789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_nanos(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn lines_streams_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::create(
            &p,
            Rotation {
                max_size: 400,
                max_files: 3,
            },
        )
        .unwrap();
        w.write(0, b"hel");
        w.write(1, b"oops\n");
        w.write(0, b"lo\nworld");
        w.flush();
        let all = read_all(&p);
        let seen: Vec<(&str, &str)> = all
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("stderr", "oops\n"),
                ("stdout", "hello\n"),
                ("stdout", "world")
            ]
        );
        for i in 0..40 {
            w.write(0, format!("line {i}\n").as_bytes());
        }
        assert!(numbered(&p, 1).exists() && numbered(&p, 2).exists());
        assert!(!numbered(&p, 3).exists());
        let kept = read_all(&p);
        assert_eq!(kept.last().unwrap().log, "line 39\n");
        assert!(kept.len() < 43, "the oldest entries were dropped");
        let logs: Vec<&str> = kept.iter().map(|e| e.log.as_str()).collect();
        let mut sorted = logs.clone();
        sorted.sort_by_key(|l| {
            l.trim_start_matches("line ")
                .trim()
                .parse::<u32>()
                .unwrap_or(0)
        });
        assert!(
            logs.ends_with(&sorted[sorted.len() - 5..]),
            "oldest first: {logs:?}"
        );
    }
}
