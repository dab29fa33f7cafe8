//! `nook serve` driven by docker's Python SDK (Debian's python3-docker, run by /usr/bin/python3
//! as the unprivileged test users): containers.run / exec_run / logs(stream) / images.build /
//! volumes, and twenty clients running containers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::in_both_modes;

use std::path::Path;

use support::env::{Mode, Out};
use support::sandbox::Sandbox;
use support::serve::{Server, json, read};

const PYTHON: &str = "/usr/bin/python3";

/// The SDK's calls; prints one JSON object of what it saw (argv: socket, image).
const SDK_SCRIPT: &str = r#"
import io, json, sys, docker
sock, image = sys.argv[1], sys.argv[2]
c = docker.DockerClient(base_url="unix://" + sock, version="auto", timeout=120)
r = {"version": c.version()["ApiVersion"], "ping": c.ping()}
r["echo"] = c.containers.run(image, ["echo", "hi"], remove=True).decode()
try:
    c.containers.run(image, ["sh", "-c", "echo bad >&2; exit 7"], remove=True, stderr=True)
    r["exit7"] = None
except docker.errors.ContainerError as e:
    r["exit7"] = e.exit_status
    r["exit7_stderr"] = (e.stderr or b"").decode()
d = c.containers.run(image, ["sh", "-c", "echo one; echo two; sleep 60"], detach=True,
                     name="pyd", environment={"A": "x y"}, working_dir="/tmp")
lines = []
for chunk in d.logs(stream=True, follow=True):
    lines.append(chunk.decode())
    if "two" in "".join(lines):
        break
r["logs"] = "".join(lines)
ex = d.exec_run(["sh", "-c", "echo $A; pwd"])
r["exec"] = [ex.exit_code, ex.output.decode()]
ex = d.exec_run(["sh", "-c", "exit 3"])
r["exec3"] = ex.exit_code
ex = d.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
r["demux"] = [x.decode() if x else None for x in ex.output]
d.reload()
r["status_running"] = d.status
r["listed"] = [x.name for x in c.containers.list()]
d.stop(timeout=1)
d.reload()
r["status_stopped"] = d.status
r["wait"] = d.wait()["StatusCode"]
d.remove()
r["listed_after"] = [x.name for x in c.containers.list(all=True)]
df = b"FROM " + image.encode() + b"\nRUN echo built > /b\nCMD [\"cat\", \"/b\"]\n"
img, logs = c.images.build(fileobj=io.BytesIO(df), tag="pybuilt:1", rm=True)
r["build_id"] = img.id
r["build_tags"] = img.tags
r["build_logs"] = "".join(x.get("stream", "") for x in logs)
r["built_run"] = c.containers.run("pybuilt:1", remove=True).decode()
v = c.volumes.create("pyvol", labels={})
r["volume"] = v.name
c.containers.run(image, ["sh", "-c", "echo kept > /v/f"], volumes={"pyvol": {"bind": "/v", "mode": "rw"}}, remove=True)
r["volume_read"] = c.containers.run(image, ["cat", "/v/f"], volumes=["pyvol:/v:ro"], remove=True).decode()
r["volumes"] = [x.name for x in c.volumes.list()]
v.remove()
r["volumes_after"] = [x.name for x in c.volumes.list()]
r["images"] = sorted(t for i in c.images.list() for t in i.tags)
c.images.remove("pybuilt:1")
r["images_after"] = sorted(t for i in c.images.list() for t in i.tags)
try:
    c.containers.get("nosuch")
    r["missing"] = None
except docker.errors.NotFound as e:
    r["missing"] = e.status_code
print(json.dumps(r))
"#;

/// Twenty clients, each running a container at once (argv: socket, image).
const STORM_SCRIPT: &str = r#"
import json, sys, docker
from concurrent.futures import ThreadPoolExecutor
sock, image = sys.argv[1], sys.argv[2]
def one(i):
    c = docker.DockerClient(base_url="unix://" + sock, version="1.50", timeout=300)
    try:
        return c.containers.run(image, ["sh", "-c", "echo n%d" % i], remove=True).decode()
    except Exception as e:
        return "error: %r" % (e,)
with ThreadPoolExecutor(max_workers=20) as pool:
    out = list(pool.map(one, range(20)))
left = docker.DockerClient(base_url="unix://" + sock, version="1.50").containers.list(all=True)
print(json.dumps({"out": out, "left": [x.name for x in left]}))
"#;

in_both_modes!(sdk_containers_exec_logs_build_volumes);

/// Runs `script` with the SDK as the sandbox's user; the JSON it printed.
fn python(s: &Sandbox, srv: &Server, script: &str) -> serde_json::Value {
    let has_sdk = Path::new(PYTHON).exists()
        && s.user
            .command(Path::new(PYTHON))
            .args(["-c", "import docker"])
            .status()
            .unwrap()
            .success();
    if !has_sdk {
        support::skip("docker's Python SDK is missing (apt-get install python3-docker)");
        return serde_json::Value::Null;
    }
    let file = s.user.home().join("sdk.py");
    std::fs::write(&file, script).unwrap();
    s.user.give(&file);
    let out = Out::from(
        s.user
            .command(Path::new(PYTHON))
            .arg(&file)
            .arg(&srv.sock)
            .arg(&s.image)
            .output()
            .unwrap(),
    );
    assert_eq!(
        out.code,
        0,
        "python: {}\n{}\nserver log:\n{}",
        out.stdout,
        out.stderr,
        read(&srv.log)
    );
    json(out.stdout.trim())
}

fn sdk_containers_exec_logs_build_volumes(mode: Mode) {
    let Some(s) = Sandbox::new(mode) else {
        return;
    };
    let srv = Server::start(&s);
    let r = python(&s, &srv, SDK_SCRIPT);
    if r.is_null() {
        return;
    }
    assert_eq!(r["version"], "1.50", "{r}");
    assert_eq!(r["ping"], true, "{r}");
    assert_eq!(r["echo"], "hi\n", "{r}");
    assert_eq!(r["exit7"], 7, "{r}");
    assert_eq!(r["exit7_stderr"], "bad\n", "{r}");
    assert_eq!(r["logs"], "one\ntwo\n", "{r}");
    assert_eq!(r["exec"], serde_json::json!([0, "x y\n/tmp\n"]), "{r}");
    assert_eq!(r["exec3"], 3, "{r}");
    assert_eq!(r["demux"], serde_json::json!(["out\n", "err\n"]), "{r}");
    assert_eq!(r["status_running"], "running", "{r}");
    assert_eq!(r["listed"], serde_json::json!(["pyd"]), "{r}");
    assert_eq!(r["status_stopped"], "exited", "{r}");
    assert_eq!(r["listed_after"], serde_json::json!([]), "{r}");
    assert!(
        r["build_id"].as_str().unwrap().starts_with("sha256:"),
        "{r}"
    );
    assert_eq!(r["build_tags"], serde_json::json!(["pybuilt:1"]), "{r}");
    assert!(r["build_logs"].as_str().unwrap().contains("RUN"), "{r}");
    assert_eq!(r["built_run"], "built\n", "{r}");
    assert_eq!(r["volume"], "pyvol", "{r}");
    assert_eq!(r["volume_read"], "kept\n", "{r}");
    assert!(
        r["volumes"].as_array().unwrap().contains(&"pyvol".into()),
        "{r}"
    );
    assert!(
        !r["volumes_after"]
            .as_array()
            .unwrap()
            .contains(&"pyvol".into()),
        "{r}"
    );
    assert!(
        r["images"]
            .as_array()
            .unwrap()
            .contains(&"pybuilt:1".into()),
        "{r}"
    );
    assert!(
        !r["images_after"]
            .as_array()
            .unwrap()
            .contains(&"pybuilt:1".into()),
        "{r}"
    );
    assert_eq!(r["missing"], 404, "{r}");
    // What the SDK did is what nook's own door sees.
    let ps = s.nook(&["ps", "-a", "-q"]);
    assert!(ps.ok().stdout.trim().is_empty(), "{}", ps.stdout);
}

#[test]
fn twenty_clients_run_containers_at_once() {
    let Some(s) = Sandbox::new(Mode::Range) else {
        return;
    };
    let srv = Server::start(&s);
    let r = python(&s, &srv, STORM_SCRIPT);
    if r.is_null() {
        return;
    }
    let out: Vec<&str> = r["out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (i, o) in out.iter().enumerate() {
        assert_eq!(*o, format!("n{i}\n"), "client {i}: {r}\n{}", read(&srv.log));
    }
    assert_eq!(r["left"], serde_json::json!([]), "{r}");
}
