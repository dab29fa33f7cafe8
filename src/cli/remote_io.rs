//! Images and files over the API: `pull` and `push` (their JSON progress lines), `build`
//! (the context as a tar, the build's stream printed) and `cp` both ways (tar over
//! `/containers/ID/archive`).

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::build::BuildArgs;
use super::cp::CpArgs;
use super::image::PullArgs;
use super::push::PushArgs;
use crate::client::http::Body;
use crate::client::stream::json_lines;
use crate::client::{Client, ClientError, enc, enc_path};
use crate::reference::Reference;

/// Prints a progress line (`ID: status`) to `out`; an `error` line ends the stream with it.
fn progress_line(v: &Value, out: &mut dyn Write) -> io::Result<()> {
    if let Some(e) = v["error"]
        .as_str()
        .or_else(|| v["errorDetail"]["message"].as_str())
    {
        return Err(io::Error::other(e.to_owned()));
    }
    // Byte counts of a layer in flight: a terminal's bar, not a line.
    if v["progressDetail"]["current"].is_number() {
        return Ok(());
    }
    if let Some(s) = v["status"].as_str() {
        match v["id"].as_str() {
            Some(id) => writeln!(out, "{id}: {s}")?,
            None => writeln!(out, "{s}")?,
        }
    }
    Ok(())
}

/// Pulls `image` on the daemon, its progress on standard error.
pub fn pull_image(c: &Client, image: &str) -> Result<Reference> {
    let r = Reference::parse(image)?;
    let tag = r
        .digest()
        .map(|d| d.to_string())
        .unwrap_or_else(|| r.tag_or_latest().to_owned());
    let path = format!(
        "/images/create?fromImage={}&tag={}",
        enc(&r.repository()),
        enc(&tag)
    );
    let resp = c.call(
        "POST",
        &path,
        &[("X-Registry-Auth", registry_auth())],
        Body::Empty,
    )?;
    let mut err = io::stderr();
    json_lines(resp.body, |v| progress_line(&v, &mut err))
        .with_context(|| format!("pulling {}", r.familiar_repository()))?;
    Ok(r)
}

/// An empty X-Registry-Auth: the daemon uses the credentials it has.
fn registry_auth() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(b"{}")
}

/// `nook pull` over the API: progress on standard error, the reference on standard output.
pub fn pull(c: &Client, a: PullArgs) -> Result<i32> {
    if a.all_tags || a.platform.is_some() || !a.tls_verify {
        bail!("pull --all-tags, --platform and --tls-verify do not go over the API yet");
    }
    let r = pull_image(c, &a.image)?;
    if a.quiet {
        let v = c.json("GET", &format!("/images/{}/json", enc_path(&a.image)), None)?;
        println!("{}", v["Id"].as_str().unwrap_or_default());
        return Ok(0);
    }
    match r.digest() {
        Some(d) => println!("{}@{d}", r.repository()),
        None => println!("{}:{}", r.repository(), r.tag_or_latest()),
    }
    Ok(0)
}

/// `nook push` over the API: the daemon pushes what it has, with the credentials it has.
pub fn push(c: &Client, a: PushArgs) -> Result<i32> {
    if a.format.is_some()
        || a.compression_format.is_some()
        || a.digestfile.is_some()
        || !a.tls_verify
    {
        bail!(
            "push --format, --compression-format, --digestfile and --tls-verify do not go over the API yet"
        );
    }
    let r = Reference::parse(&a.image)?;
    let tag = if a.all_tags {
        String::new()
    } else {
        r.tag_or_latest().to_owned()
    };
    let path = format!(
        "/images/{}/push?tag={}",
        enc_path(&r.familiar_repository()),
        enc(&tag)
    );
    let resp = c.call(
        "POST",
        &path,
        &[("X-Registry-Auth", registry_auth())],
        Body::Empty,
    )?;
    let mut out: Box<dyn Write> = if a.quiet {
        Box::new(io::sink())
    } else {
        Box::new(io::stdout())
    };
    json_lines(resp.body, |v| {
        if let Some(d) = v["aux"]["Digest"].as_str() {
            writeln!(
                out,
                "{}: digest: {d} size: {}",
                v["aux"]["Tag"].as_str().unwrap_or(""),
                v["aux"]["Size"]
            )?;
            return Ok(());
        }
        progress_line(&v, &mut out)
    })
    .with_context(|| format!("pushing {}", r.familiar_repository()))?;
    Ok(0)
}

/// `src` as a tar stream whose top entry is `top`, packed by a thread as it is read.
fn tar_stream(
    src: PathBuf,
    top: String,
) -> Result<(io::PipeReader, std::thread::JoinHandle<io::Result<()>>)> {
    let (reader, writer) = io::pipe().context("cannot make a pipe for the archive")?;
    let packer = std::thread::spawn(move || -> io::Result<()> {
        let mut b = tar::Builder::new(writer);
        b.follow_symlinks(false);
        if std::fs::symlink_metadata(&src)?.is_dir() {
            b.append_dir_all(&top, &src)?;
        } else {
            b.append_path_with_name(&src, &top)?;
        }
        b.into_inner()?.flush()
    });
    Ok((reader, packer))
}

/// `{"K":"V"}` of `K=V` flags (a bare `K` takes nook's own value, as docker does).
fn pairs(list: &[String]) -> String {
    let mut m = serde_json::Map::new();
    for p in list {
        match p.split_once('=') {
            Some((k, v)) => m.insert(k.to_owned(), json!(v)),
            None => m.insert(
                p.clone(),
                std::env::var(p).map(Value::from).unwrap_or(Value::Null),
            ),
        };
    }
    Value::Object(m).to_string()
}

/// The Dockerfile's path inside the context, as the `dockerfile` parameter wants it.
fn dockerfile_in(context: &Path, file: &str) -> Result<String> {
    let p = Path::new(file);
    let rel = if p.is_absolute() {
        p.strip_prefix(context).ok()
    } else {
        Some(p)
    };
    match rel.filter(|r| {
        r.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    }) {
        Some(r) => Ok(r.to_string_lossy().into_owned()),
        None => bail!("-f {file}: over the API the Dockerfile must be inside the build context"),
    }
}

/// The `/build` query of the flags.
fn build_query(a: &BuildArgs, dir: &Path) -> Result<String> {
    let mut q = vec![
        format!("buildargs={}", enc(&pairs(&a.build_args))),
        format!("labels={}", enc(&pairs(&a.labels))),
    ];
    q.extend(a.tags.iter().map(|t| format!("t={}", enc(t))));
    if let Some(f) = &a.file {
        q.push(format!("dockerfile={}", enc(&dockerfile_in(dir, f)?)));
    }
    for (k, v) in [("target", &a.target), ("platform", &a.platform)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if a.network != "default" {
        q.push(format!("networkmode={}", enc(&a.network)));
    }
    q.extend([
        format!("nocache={}", a.no_cache as u8),
        format!("pull={}", a.pull.unwrap_or(false) as u8),
    ]);
    Ok(q.join("&"))
}

/// Prints a build's stream (unless quiet); the image id it ends with.
fn print_build(body: impl Read, quiet: bool) -> Result<Option<String>> {
    let mut id = None;
    let mut out = io::stdout();
    json_lines(body, |v| {
        if let Some(e) = v["error"]
            .as_str()
            .or_else(|| v["errorDetail"]["message"].as_str())
        {
            return Err(io::Error::other(e.to_owned()));
        }
        if let Some(i) = v["aux"]["ID"].as_str() {
            id = Some(i.to_owned());
        }
        if let (Some(s), false) = (v["stream"].as_str(), quiet) {
            out.write_all(s.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })
    .context("build")?;
    Ok(id)
}

/// `nook build` over the API: the context directory as a tar, the build's output as it comes.
pub fn build(c: &Client, a: BuildArgs) -> Result<i32> {
    if !a.secrets.is_empty() || a.timestamp.is_some() {
        bail!("build --secret and --timestamp do not go over the API yet");
    }
    let dir = PathBuf::from(&a.context);
    if !dir.is_dir() {
        bail!(
            "build context {}: not a directory (over the API the context is a local directory)",
            a.context
        );
    }
    let q = build_query(&a, &dir)?;
    let (reader, packer) = tar_stream(dir.clone(), ".".into())?;
    let headers = [("Content-Type", "application/x-tar".to_owned())];
    let sent = c.call(
        "POST",
        &format!("/build?{q}"),
        &headers,
        Body::Stream(Box::new(reader)),
    );
    match packer.join() {
        Ok(Err(e)) => {
            return Err(e)
                .with_context(|| format!("cannot read the build context {}", dir.display()));
        }
        Err(_) => bail!("the build context could not be packed"),
        Ok(Ok(())) => {}
    }
    let id = print_build(sent?.body, a.quiet)?;
    if let Some(i) = &id {
        if a.quiet {
            println!("{i}");
        }
        if let Some(f) = &a.iidfile {
            std::fs::write(f, i).with_context(|| format!("cannot write {}", f.display()))?;
        }
    }
    Ok(0)
}

/// `CONTAINER:PATH` → (container, path), as the local path reads it.
fn container_path(s: &str) -> Option<(&str, &str)> {
    let (c, p) = s.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn last_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

/// `nook cp` over the API, both ways, as tar streams through `/containers/ID/archive`.
pub fn cp(c: &Client, a: CpArgs) -> Result<i32> {
    match (container_path(&a.src), container_path(&a.dest)) {
        (Some((name, path)), None) => copy_out(c, name, path, &a.dest),
        (None, Some((name, path))) => copy_in(c, &a.src, name, path),
        _ => bail!("nook cp copies between a container and the host: one side is CONTAINER:PATH"),
    }?;
    Ok(0)
}

fn archive_path(name: &str, path: &str) -> String {
    let abs = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("/containers/{}/archive?path={}", enc(name), enc(&abs))
}

fn copy_out(c: &Client, name: &str, src: &str, dest: &str) -> Result<()> {
    let resp = c.call("GET", &archive_path(name, src), &[], Body::Empty)?;
    if dest == "-" {
        let mut out = io::stdout().lock();
        io::copy(&mut { resp.body }, &mut out)?;
        return Ok(out.flush()?);
    }
    let dest = Path::new(dest);
    let top = last_name(src);
    if dest.is_dir() {
        return unpack(resp.body, dest);
    }
    // The archive's top entry is named for the source: unpacked aside, then renamed.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".nook-cp-{}", std::process::id()));
    std::fs::create_dir(&staging).with_context(|| format!("cannot write {}", parent.display()))?;
    let done = unpack(resp.body, &staging).and_then(|()| {
        std::fs::rename(staging.join(&top), dest)
            .with_context(|| format!("cannot write {}", dest.display()))
    });
    let _ = std::fs::remove_dir_all(&staging);
    done
}

/// Unpacks a tar from the daemon into `dir`; an entry that would land outside is refused.
fn unpack(r: impl Read, dir: &Path) -> Result<()> {
    crate::container::cp::unpack(r, dir).context("the daemon's archive")
}

/// Whether `path` is a directory in the container (None: it does not exist).
fn is_dir_in(c: &Client, name: &str, path: &str) -> Result<Option<bool>> {
    let r = match c.call("HEAD", &archive_path(name, path), &[], Body::Empty) {
        Err(ClientError::Api { status: 404, .. }) => return Ok(None),
        other => other?,
    };
    let stat = r
        .head
        .header("X-Docker-Container-Path-Stat")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    // Go's os.ModeDir.
    Ok(Some(
        stat["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0),
    ))
}

fn copy_in(c: &Client, src: &str, name: &str, dest: &str) -> Result<()> {
    let put = |dir: &str, body: Body<'_>| -> Result<()> {
        let headers = [("Content-Type", "application/x-tar".to_owned())];
        c.call("PUT", &archive_path(name, dir), &headers, body)?;
        Ok(())
    };
    if src == "-" {
        return put(dest, Body::Stream(Box::new(io::stdin())));
    }
    std::fs::symlink_metadata(src).with_context(|| format!("cannot read {src}"))?;
    let (dir, top) = match is_dir_in(c, name, dest)? {
        Some(true) => (dest.to_owned(), last_name(src)),
        _ => {
            let d = Path::new(dest);
            let parent = d
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty());
            (parent.unwrap_or_else(|| "/".into()), last_name(dest))
        }
    };
    let (reader, packer) = tar_stream(PathBuf::from(src), top)?;
    let sent = put(&dir, Body::Stream(Box::new(reader)));
    match packer.join() {
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot read {src}")),
        Err(_) => bail!("{src} could not be packed"),
        Ok(Ok(())) => sent,
    }
}
