//! Changes go through nook's own CLI, re-executed: the server is multi-threaded and must not
//! clone containers or enter user namespaces, and this way a container made through the API
//! is made exactly as `nook run -d` makes it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::Engine;
use super::error::ApiError;

/// `nook --root ROOT [--storage-opt additionalimagestore=DIR...] ARGS...` with piped output.
pub fn command(e: &Engine, args: &[String]) -> Command {
    let mut c = Command::new(&e.exe);
    c.arg("--root").arg(&e.root);
    for dir in &e.shared {
        let mut opt = std::ffi::OsString::from("additionalimagestore=");
        opt.push(dir);
        c.arg("--storage-opt").arg(opt);
    }
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The server blocks SIGTERM and SIGINT for its signal thread; its children must not.
    crate::sys::process::unblock_signals_in_child(&mut c);
    c
}

/// Runs nook to the end; its standard output, or its error line as docker's error.
pub fn run(e: &Engine, args: &[String]) -> Result<String, ApiError> {
    tracing::debug!("re-exec nook {}", args.join(" "));
    let out = command(e, args)
        .output()
        .map_err(|err| ApiError::Internal(format!("cannot run {}: {err}", e.exe.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(ApiError::from_message(&error_line(
        &String::from_utf8_lossy(&out.stderr),
    )))
}

/// The child's error message: its last `Error: ...` line, else its last line.
pub fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("Error: "))
        .or(lines.last().copied())
        .unwrap_or("nook failed without a message")
        .to_owned()
}

/// Spawns nook; the caller reads its output as it comes.
pub fn spawn(e: &Engine, args: &[String]) -> Result<Child, ApiError> {
    command(e, args)
        .spawn()
        .map_err(|err| ApiError::Internal(format!("cannot run {}: {err}", e.exe.display())))
}

/// Each line of `r`, to `f`.
pub fn each_line(
    r: impl std::io::Read,
    mut f: impl FnMut(&str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for l in BufReader::new(r).lines() {
        f(&l?)?;
    }
    Ok(())
}

pub fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_line_is_the_message() {
        assert_eq!(
            error_line("WARNING: x\nError: no such container: a\n"),
            "no such container: a"
        );
        assert_eq!(error_line("boom\n"), "boom");
        assert_eq!(error_line(""), "nook failed without a message");
    }
}
