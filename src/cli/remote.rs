//! The verbs that go over docker's Engine API when a daemon is named (`-H`, a context,
//! `NOOK_HOST`, `DOCKER_HOST`), printed with the local path's formatting. A verb not yet
//! carried over the API says so: it never falls back to the local store silently.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::format::{human_age, human_size, print_table};
use super::image::split_tag;
use super::lifecycle::{ContainerCommand, PsArgs, shell_words};
use super::system::SystemCommand;
use super::volume::VolumeCommand;
use super::{Cli, Command};
use crate::client::{Client, ClientError, enc, enc_path};

/// What [`divert`] did with the command.
pub enum Diverted {
    /// It ran against the daemon: the exit status.
    Done(i32),
    /// No daemon named, or a command that is always local.
    Local(Box<Cli>),
}

/// Runs the command against the daemon the flags and environment name, if any.
pub fn divert(cli: Cli) -> Result<Diverted> {
    if matches!(
        cli.command,
        Command::Context(_)
            | Command::Serve(_)
            | Command::Internal(_)
            | Command::System(SystemCommand::DialStdio(_))
    ) {
        return Ok(Diverted::Local(Box::new(cli)));
    }
    if root_given(std::env::args()) {
        if cli.target.host.is_some() || cli.target.context.is_some() {
            bail!("--root names a local store: give it or -H/--context, not both");
        }
        // A local store asked for by name outranks a daemon named by the environment or
        // the current context: that is also how `nook serve`'s own re-executed commands
        // (`nook --root DIR create ...`) stay local when DOCKER_HOST names the server.
        return Ok(Diverted::Local(Box::new(cli)));
    }
    let Some(ep) = super::context::resolve(&cli.target)? else {
        return Ok(Diverted::Local(Box::new(cli)));
    };
    let client = Client::connect(ep)?;
    let code = match cli.command {
        Command::Images(a) => images(&client, a)?,
        Command::Rmi(a) => rmi(&client, a)?,
        Command::Tag(a) => tag(&client, a)?,
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => ps(&client, a)?,
        Command::Volume(c) => volume(&client, c)?,
        Command::Stop(a) => stop(&client, a),
        Command::Kill(a) => each(&a.containers, |n| {
            let path = format!("/containers/{}/kill?signal={}", enc(n), enc(&a.signal));
            client.json("POST", &path, None)
        }),
        Command::Rm(a) => rm(&client, a),
        Command::Wait(a) => wait(&client, &a.containers),
        Command::Logs(a) => super::remote_run::logs(&client, a)?,
        Command::Run(a) => super::remote_run::run(&client, *a)?,
        Command::Create(a) => super::remote_run::create(&client, *a)?,
        Command::Start(a) => super::remote_run::start(&client, a)?,
        Command::Exec(a) => super::remote_run::exec(&client, a)?,
        Command::Pull(a) => super::remote_io::pull(&client, a)?,
        Command::Push(a) => super::remote_io::push(&client, a)?,
        Command::Build(a) => super::remote_io::build(&client, *a)?,
        Command::Cp(a) => super::remote_io::cp(&client, a)?,
        other => bail!(
            "nook {} does not go over the API yet: unset -H/--context (and NOOK_HOST, DOCKER_HOST) to run it locally",
            verb(&other)
        ),
    };
    Ok(Diverted::Done(code))
}

/// Whether `--root` is among the global flags before the command's name.
fn root_given(args: impl Iterator<Item = String>) -> bool {
    const VALUED: [&str; 10] = [
        "--root",
        "--storage-opt",
        "--log-level",
        "-H",
        "--host",
        "-c",
        "--context",
        "--tlscacert",
        "--tlscert",
        "--tlskey",
    ];
    let mut args = args.skip(1);
    while let Some(a) = args.next() {
        if a == "--root" || a.starts_with("--root=") {
            return true;
        }
        if !a.starts_with('-') || a == "--" {
            return false;
        }
        if VALUED.contains(&a.as_str()) {
            args.next();
        }
    }
    false
}

/// The command's name, as typed.
fn verb(c: &Command) -> String {
    let debug = format!("{c:?}");
    let name = debug.split(['(', ' ']).next().unwrap_or("this command");
    name.to_ascii_lowercase()
}

/// Each container name through `f`: the name printed on success, an error line otherwise.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<Value, ClientError>) -> i32 {
    let mut code = 0;
    for n in names {
        match f(n) {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    code
}

fn stop(client: &Client, a: super::lifecycle::StopArgs) -> i32 {
    let sig = a.signal.as_deref().map(|s| format!("&signal={}", enc(s)));
    each(&a.containers, |n| {
        let path = format!(
            "/containers/{}/stop?t={}{}",
            enc(n),
            a.time,
            sig.as_deref().unwrap_or("")
        );
        client.json("POST", &path, None)
    })
}

/// `rm`: with -f a container that is not there is no error (the local path's way).
fn rm(client: &Client, a: super::lifecycle::RmArgs) -> i32 {
    each(&a.containers, |n| {
        let path = format!(
            "/containers/{}?force={}&v={}",
            enc(n),
            a.force as u8,
            a.volumes as u8
        );
        match client.json("DELETE", &path, None) {
            Err(ClientError::Api { status: 404, .. }) if a.force => Ok(Value::Null),
            other => other,
        }
    })
}

fn wait(client: &Client, names: &[String]) -> i32 {
    let mut code = 0;
    for n in names {
        match client.json("POST", &format!("/containers/{}/wait", enc(n)), None) {
            Ok(v) => println!("{}", v["StatusCode"].as_i64().unwrap_or(-1)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    code
}

fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn images(client: &Client, a: super::image::ImagesArgs) -> Result<i32> {
    let list = client.json("GET", "/images/json", None)?;
    let mut rows: Vec<(&Value, String, String)> = Vec::new();
    for img in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "<none>:<none>")
                    .collect()
            })
            .unwrap_or_default();
        if tags.is_empty() {
            rows.push((img, "<none>".into(), "<none>".into()));
        }
        for t in tags {
            let (repo, tag) = split_tag(t);
            rows.push((img, repo, tag));
        }
    }
    let id = |v: &Value| {
        let id = v["Id"].as_str().unwrap_or_default();
        if a.no_trunc {
            id.to_owned()
        } else {
            short_id(id)
        }
    };
    let created = |v: &Value| {
        v["Created"]
            .as_i64()
            .filter(|t| *t > 0)
            .map(human_age)
            .unwrap_or_else(|| "N/A".into())
    };
    let size = |v: &Value| human_size(v["Size"].as_u64().unwrap_or(0));
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for (img, _, _) in &rows {
            if seen.insert(id(img)) {
                println!("{}", id(img));
            }
        }
        return Ok(0);
    }
    match a.format.as_str() {
        "json" => {
            for (img, repo, tag) in &rows {
                let digest = img["RepoDigests"][0]
                    .as_str()
                    .and_then(|d| d.split('@').nth(1))
                    .unwrap_or("<none>");
                let line = json!({"Repository": repo, "Tag": tag, "ID": id(img), "Digest": digest,
                    "CreatedSince": created(img), "Size": size(img), "VirtualSize": img["Size"]});
                println!("{line}");
            }
        }
        "table" | "" => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(img, repo, tag)| {
                    vec![repo.clone(), tag.clone(), id(img), created(img), size(img)]
                })
                .collect();
            print_table(
                &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                &table,
            );
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(0)
}

fn rmi(client: &Client, a: super::image::RmiArgs) -> Result<i32> {
    let mut code = 0;
    for q in &a.images {
        match client.json(
            "DELETE",
            &format!("/images/{}?force={}", enc_path(q), a.force as u8),
            None,
        ) {
            Ok(list) => {
                for r in list.as_array().map(Vec::as_slice).unwrap_or_default() {
                    if let Some(t) = r["Untagged"].as_str() {
                        let (repo, tag) = split_tag(t);
                        println!("Untagged: {repo}:{tag}");
                    }
                    if let Some(id) = r["Deleted"].as_str() {
                        println!("Deleted: {id}");
                    }
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn tag(client: &Client, a: super::image::TagArgs) -> Result<i32> {
    let target = crate::reference::Reference::parse(&a.target)?;
    let path = format!(
        "/images/{}/tag?repo={}&tag={}",
        enc_path(&a.source),
        enc(&target.familiar_repository()),
        enc(target.tag_or_latest())
    );
    client.json("POST", &path, None)?;
    Ok(0)
}

/// `ps` filters as the local path takes them, as the API's `filters` JSON.
fn ps_filters(filters: &[String]) -> Result<String> {
    let mut map = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("invalid --filter {f:?}: expected KEY=VALUE"))?;
        if !matches!(k, "status" | "name" | "ancestor" | "id") {
            bail!("unsupported --filter key {k:?}: use status, name, ancestor or id");
        }
        let e = map.entry(k.to_owned()).or_insert_with(|| json!([]));
        if let Some(list) = e.as_array_mut() {
            list.push(json!(v));
        }
    }
    Ok(Value::Object(map).to_string())
}

fn ports_column(c: &Value) -> String {
    c["Ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["PublicPort"].as_u64().is_some())
        .map(|p| {
            let ip = p["IP"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            let public = p["PublicPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(0);
            let addr = std::net::SocketAddr::new(ip, public);
            format!(
                "{addr}->{}/{}",
                p["PrivatePort"],
                p["Type"].as_str().unwrap_or("tcp")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The containers `ps` lists, newest first (the local path's order).
fn ps_list(client: &Client, a: &PsArgs) -> Result<Vec<Value>> {
    // As the local path: a filter looks at every container.
    let all = a.all || !a.filter.is_empty();
    let mut path = format!("/containers/json?all={}", all as u8);
    if !a.filter.is_empty() {
        path.push_str(&format!("&filters={}", enc(&ps_filters(&a.filter)?)));
    }
    let list = client.json("GET", &path, None)?;
    let mut list: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    list.sort_by(|x, y| {
        y["Created"]
            .as_i64()
            .cmp(&x["Created"].as_i64())
            .then(id_of(x).cmp(id_of(y)))
    });
    Ok(list)
}

fn id_of(c: &Value) -> &str {
    c["Id"].as_str().unwrap_or_default()
}

/// A container's argument vector: the list's Command is joined with spaces, the
/// container's own Path and Args tell them apart.
fn argv_of(detail: &Value) -> Vec<String> {
    let args = detail["Args"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    detail["Path"]
        .as_str()
        .into_iter()
        .chain(args.iter().filter_map(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn ps(client: &Client, a: PsArgs) -> Result<i32> {
    let list = ps_list(client, &a)?;
    let id = |c: &Value| {
        let id = id_of(c);
        if a.no_trunc {
            id.to_owned()
        } else {
            id.chars().take(12).collect()
        }
    };
    if a.quiet {
        list.iter().for_each(|c| println!("{}", id(c)));
        return Ok(0);
    }
    if a.format != "table" && a.format != "json" {
        bail!("unsupported --format {:?}: use table or json", a.format);
    }
    let mut rows = Vec::new();
    for c in &list {
        let detail = client.json("GET", &format!("/containers/{}/json", enc(id_of(c))), None)?;
        let argv = argv_of(&detail);
        let name = c["Names"][0]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        if a.format == "json" {
            let v = json!({
                "Id": id_of(c), "Names": [name], "Image": c["Image"], "ImageID": c["ImageID"],
                "Command": argv, "Created": c["Created"], "State": c["State"], "Status": c["Status"],
                "Ports": ports_column(c), "ExitCode": detail["State"]["ExitCode"],
                "Pid": detail["State"]["Pid"], "Note": detail["State"]["Note"],
            });
            println!("{v}");
            continue;
        }
        let mut cmd = shell_words(&argv);
        if !a.no_trunc && cmd.chars().count() > 20 {
            cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
        }
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        let created = human_age(c["Created"].as_i64().unwrap_or(0));
        rows.push(vec![
            id(c),
            text("Image"),
            format!("\"{cmd}\""),
            created,
            text("Status"),
            ports_column(c),
            name,
        ]);
    }
    if a.format == "table" {
        let headers = [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ];
        print_table(&headers, &rows);
    }
    Ok(0)
}

fn volume(client: &Client, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create { name } => {
            let v = client.json(
                "POST",
                "/volumes/create",
                Some(&json!({"Name": name.unwrap_or_default()})),
            )?;
            println!("{}", v["Name"].as_str().unwrap_or_default());
            Ok(0)
        }
        VolumeCommand::Ls { quiet } => {
            let v = client.json("GET", "/volumes", None)?;
            let names: Vec<String> = v["Volumes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v["Name"].as_str().map(str::to_owned))
                .collect();
            if quiet {
                names.iter().for_each(|n| println!("{n}"));
            } else {
                let rows: Vec<Vec<String>> = names
                    .into_iter()
                    .map(|n| vec!["local".to_owned(), n])
                    .collect();
                print_table(&["DRIVER", "VOLUME NAME"], &rows);
            }
            Ok(0)
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &names {
                match client.json("GET", &format!("/volumes/{}", enc(n)), None) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(code)
        }
        VolumeCommand::Rm { names, force } => Ok(each(&names, |n| {
            client.json(
                "DELETE",
                &format!("/volumes/{}?force={}", enc(n), force as u8),
                None,
            )
        })),
        VolumeCommand::Prune { .. } => bail!(
            "nook volume prune does not go over the API yet: unset -H/--context to run it locally"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(line: &str) -> bool {
        root_given(line.split(' ').map(str::to_owned))
    }

    #[test]
    fn root_among_the_global_flags() {
        assert!(given("nook --root /s create x"));
        assert!(given("nook --log-level debug --root=/s ps"));
        assert!(!given("nook ps"));
        assert!(!given("nook run img --root /x"));
        assert!(!given("nook -H --root ps"), "-H takes a value");
    }
}
