//! `POST /build`: docker's classic builder protocol (`version=1`). The context tar (spooled to
//! a file by [`super::http`], gunzipped here when it is gzip) goes to a re-executed
//! `nook build -` on its standard input; nook's output (both streams, in order, through one
//! pipe) comes back as `{"stream":...}` lines, then `{"aux":{"ID":...}}` and docker's
//! `Successfully built`/`Successfully tagged` lines, or an `errorDetail` for a failed build
//! (the status stays 200: the stream has begun).

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use super::Engine;
use super::error::ApiError;
use super::http::{Chunked, Request, Response};
use super::reexec;
use super::route::Query;

/// A `{"K":"V"}` query parameter (`buildargs`, `labels`) as `K=V` strings; a null value
/// (a build argument named without one) is left out.
fn pairs(q: &Query, key: &str) -> Result<Vec<String>, ApiError> {
    let Some(raw) = q.get(key).filter(|s| !s.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = |why: &str| ApiError::BadRequest(format!("invalid {key}: {why}"));
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(&e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let mut out = Vec::new();
    for (k, val) in obj {
        match val {
            Value::Null => {}
            Value::String(s) => out.push(format!("{k}={s}")),
            _ => return Err(bad(&format!("{k}: not a string"))),
        }
    }
    Ok(out)
}

/// The `nook build` arguments a request's query asks for (the context is `-`, last).
pub fn args(q: &Query, iidfile: &Path) -> Result<Vec<String>, ApiError> {
    if q.get("version").is_some_and(|v| v == "2") {
        return Err(ApiError::BadRequest(
            "BuildKit (version=2) is not served by nook: build with the classic builder (DOCKER_BUILDKIT=0)".into(),
        ));
    }
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::NotImplemented("a remote build context (remote)"));
    }
    let mut a = vec!["build".to_owned()];
    if let Some(f) = q.get("dockerfile").filter(|f| !f.is_empty()) {
        a.push(format!("--file={f}"));
    }
    a.extend(
        q.all("t")
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| format!("--tag={t}")),
    );
    a.extend(
        pairs(q, "buildargs")?
            .into_iter()
            .map(|p| format!("--build-arg={p}")),
    );
    a.extend(
        pairs(q, "labels")?
            .into_iter()
            .map(|p| format!("--label={p}")),
    );
    let valued = [
        ("target", "--target"),
        ("platform", "--platform"),
        ("networkmode", "--network"),
    ];
    for (key, flag) in valued {
        if let Some(v) = q.get(key).filter(|v| !v.is_empty()) {
            a.push(format!("{flag}={v}"));
        }
    }
    if q.flag("nocache") {
        a.push("--no-cache".into());
    }
    if q.flag("pull") {
        a.push("--pull".into());
    }
    a.push(format!("--iidfile={}", iidfile.display()));
    a.push("-".into());
    Ok(a)
}

/// The body as a plain tar: gunzipped when it starts with gzip's magic.
fn context_reader(mut f: std::fs::File) -> std::io::Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.rewind()?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

static IID_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The file `nook build --iidfile` writes, removed when the build's answer ends.
struct IidFile(std::path::PathBuf);

impl Drop for IidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn line(v: &Value) -> Vec<u8> {
    format!("{v}\r\n").into_bytes()
}

/// docker's error message for a failed build; a RUN step's exit code goes in `code`, which
/// the CLI exits with.
fn failure(m: &str) -> Value {
    let code = m
        .rsplit_once("returned a non-zero code: ")
        .and_then(|(_, c)| c.trim().parse::<i64>().ok());
    match code {
        Some(code) => json!({"errorDetail": {"code": code, "message": m}, "error": m}),
        None => json!({"errorDetail": {"message": m}, "error": m}),
    }
}

pub fn build(e: &Engine, req: &Request) -> Result<Response, ApiError> {
    // X-Registry-Config (credentials for base images) is not used: pulls go through nook's own
    // login store.
    let tmp = e.root.join("tmp");
    std::fs::create_dir_all(&tmp)
        .map_err(|err| ApiError::Internal(format!("cannot make {}: {err}", tmp.display())))?;
    let iid = IidFile(tmp.join(format!(
        "build-iid-{}-{}",
        std::process::id(),
        IID_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let args = args(&req.query, &iid.0)?;
    let quiet = req.query.flag("q");
    let tags: Vec<String> = req.query.all("t").iter().map(|t| (*t).to_owned()).collect();
    let body = match &req.body_file {
        Some(f) => f.try_clone(),
        None => super::http::unnamed_file(&tmp).and_then(|mut f| {
            f.write_all(&req.body)?;
            f.rewind()?;
            Ok(f)
        }),
    }
    .and_then(context_reader)
    .map_err(|err| ApiError::Internal(format!("cannot read the build context: {err}")))?;
    let (out, child) = spawn(e, &args, body)?;
    Ok(Response::stream("application/json", move |c| {
        let run = Run { quiet, tags };
        let done = run.relay(c, out, child, &iid.0);
        drop(iid);
        done
    }))
}

/// `nook build` with stdout and stderr on one pipe, and a thread feeding it the context.
fn spawn(
    e: &Engine,
    args: &[String],
    mut context: Box<dyn Read + Send>,
) -> Result<(std::io::PipeReader, std::process::Child), ApiError> {
    let internal =
        |err: std::io::Error| ApiError::Internal(format!("cannot run nook build: {err}"));
    let (r, w) = std::io::pipe().map_err(internal)?;
    let mut cmd = reexec::command(e, args);
    cmd.stdin(Stdio::piped())
        .stdout(w.try_clone().map_err(internal)?)
        .stderr(w);
    tracing::debug!("re-exec nook {}", args.join(" "));
    let mut child = cmd.spawn().map_err(internal)?;
    // The command holds the pipe's write ends: dropped, so the reader sees nook's end.
    drop(cmd);
    if let Some(mut stdin) = child.stdin.take() {
        // A build that fails early closes its stdin: the copy's error is expected then.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut context, &mut stdin);
        });
    }
    Ok((r, child))
}

struct Run {
    quiet: bool,
    tags: Vec<String>,
}

impl Run {
    /// Sends nook's output as it comes, then the result.
    fn relay(
        &self,
        c: &mut Chunked<'_>,
        out: std::io::PipeReader,
        mut child: std::process::Child,
        iidfile: &Path,
    ) -> std::io::Result<()> {
        let mut error = None;
        let sent = reexec::each_line(out, |l| {
            if let Some(m) = l.strip_prefix("Error: ") {
                error = Some(m.to_owned());
                return Ok(());
            }
            // docker's own result lines follow the aux message, below.
            if self.quiet
                || l.starts_with("Successfully built ")
                || l.starts_with("Successfully tagged ")
            {
                return Ok(());
            }
            c.send(&line(&json!({ "stream": format!("{l}\n") })))
        });
        if let Err(err) = sent {
            // The client went away: the build is not left running for nobody.
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        let status = child.wait()?;
        let id = std::fs::read_to_string(iidfile).unwrap_or_default();
        let id = id.trim();
        if !status.success() || id.is_empty() {
            let m = error.unwrap_or_else(|| format!("nook build failed ({status})"));
            return c.send(&line(&failure(&m)));
        }
        c.send(&line(&json!({"aux": {"ID": id}})))?;
        if self.quiet {
            return c.send(&line(&json!({ "stream": format!("{id}\n") })));
        }
        let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
        c.send(&line(
            &json!({ "stream": format!("Successfully built {short}\n") }),
        ))?;
        for t in &self.tags {
            let shown = super::images::familiar(t);
            c.send(&line(
                &json!({ "stream": format!("Successfully tagged {shown}\n") }),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_becomes_build_flags() {
        let q = Query::parse(
            "version=1&dockerfile=sub%2FDf&t=a&t=b%3A2&buildargs=%7B%22X%22%3A%221%22%2C%22Y%22%3Anull%7D&target=t1&nocache=1&pull=1&q=1&labels=%7B%22l%22%3A%22v%22%7D&networkmode=none&platform=linux%2Famd64",
        );
        let a = args(&q, Path::new("/r/iid")).unwrap();
        assert_eq!(
            a,
            vec![
                "build",
                "--file=sub/Df",
                "--tag=a",
                "--tag=b:2",
                "--build-arg=X=1",
                "--label=l=v",
                "--target=t1",
                "--platform=linux/amd64",
                "--network=none",
                "--no-cache",
                "--pull",
                "--iidfile=/r/iid",
                "-",
            ]
        );
        let plain = args(&Query::parse("t=-x"), Path::new("/i")).unwrap();
        assert_eq!(plain, vec!["build", "--tag=-x", "--iidfile=/i", "-"]);
    }

    #[test]
    fn bad_queries_are_refused() {
        let p = Path::new("/i");
        for (q, status) in [
            ("version=2", 400),
            ("buildargs=nope", 400),
            ("labels=%5B%5D", 400),
            ("remote=https%3A%2F%2Fx", 501),
        ] {
            assert_eq!(
                args(&Query::parse(q), p).unwrap_err().status(),
                status,
                "{q}"
            );
        }
    }

    #[test]
    fn a_failed_run_step_gives_its_code() {
        let m = "The command '/bin/sh -c false' returned a non-zero code: 3";
        assert_eq!(failure(m)["errorDetail"]["code"], 3);
        assert_eq!(failure(m)["error"], m);
        assert!(
            failure("no such image")
                .get("errorDetail")
                .unwrap()
                .get("code")
                .is_none()
        );
    }

    #[test]
    fn gzip_contexts_are_unpacked() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"tar bytes").unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&gz.finish().unwrap()).unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        context_reader(f).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "tar bytes");
    }
}
