//! Devices given to a container (`--device`, `--gpus`, CDI): what they add to the plan, and
//! the OCI hooks a device's spec asks for, run by the container's init.
//!
//! The `cdi` room turns specs into a [`DeviceEdits`]; the run folds its environment and
//! groups into the process, its mount operations into the plan (after the volumes, before
//! the masks), and its hooks into [`Hooks`]. `createContainer` hooks run in the container's
//! namespaces before pivot_root (their path is a host path, as the OCI runtime spec says);
//! `startContainer` hooks run after it, just before the command (a path in the container).
//! Each gets the OCI state on its standard input, with the bundle nook wrote for it, so that
//! tools such as `nvidia-ctk hook update-ldcache` find the container's root.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::mount::MountOp;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStage {
    /// In the container's namespaces, before pivot_root; the path resolves on the host.
    CreateContainer,
    /// In the container, before the command; the path resolves in the container.
    StartContainer,
}

/// One OCI hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub stage: HookStage,
    pub path: PathBuf,
    /// argv, argv\[0\] included (execv's semantics); empty: the path alone.
    pub args: Vec<String>,
    /// The hook's whole environment.
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
}

/// What devices add to a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceEdits {
    /// `K=V`, over the image's environment and under `-e`.
    pub env: Vec<String>,
    /// Device nodes and bind mounts, in order.
    pub mounts: Vec<MountOp>,
    pub hooks: Vec<Hook>,
    /// Supplementary group ids (CDI's additionalGids).
    pub group_add: Vec<String>,
}

impl DeviceEdits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.group_add.is_empty()
    }
}

/// The hooks of a run and the state they are told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub list: Vec<Hook>,
    pub id: String,
    /// The directory holding the `config.json` whose root.path is the container's root.
    pub bundle: PathBuf,
}

/// A hook that failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot run hook {path}")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hook {path} failed ({status}): {output}")]
    Failed {
        path: String,
        status: String,
        output: String,
    },
    #[error("hook {path} ran past its timeout of {secs}s and was killed")]
    Timeout { path: String, secs: u64 },
}

/// The most of a hook's output kept for its error message.
const OUTPUT_KEPT: usize = 4096;

impl Hooks {
    /// Runs the hooks of `stage` in order; the first failure stops the start. The caller
    /// marks its own descriptors close-on-exec first (the init: its socket to nook).
    pub fn run(&self, stage: HookStage) -> Result<(), HookError> {
        for h in self.list.iter().filter(|h| h.stage == stage) {
            self.run_one(h, stage)?;
        }
        Ok(())
    }

    fn state(&self, stage: HookStage) -> String {
        let status = match stage {
            HookStage::CreateContainer => "creating",
            HookStage::StartContainer => "created",
        };
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": status,
            "pid": std::process::id(),
            "bundle": self.bundle,
            "annotations": {},
        })
        .to_string()
    }

    fn run_one(&self, h: &Hook, stage: HookStage) -> Result<(), HookError> {
        let path = h.path.display().to_string();
        let spawn = |source| HookError::Spawn {
            path: path.clone(),
            source,
        };
        let (out_r, out_w) = nix::unistd::pipe().map_err(|e| spawn(e.into()))?;
        nix::fcntl::fcntl(
            out_r.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| spawn(e.into()))?;
        let mut cmd = Command::new(&h.path);
        if let Some((first, rest)) = h.args.split_first() {
            cmd.arg0(first).args(rest);
        }
        cmd.env_clear()
            .envs(h.env.iter().filter_map(|kv| kv.split_once('=')))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out_w.try_clone().map_err(spawn)?))
            .stderr(Stdio::from(out_w));
        let mut child = cmd.spawn().map_err(spawn)?;
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its state is no failure.
            let _ = stdin.write_all(self.state(stage).as_bytes());
        }
        let deadline = h.timeout.map(|t| Instant::now() + t);
        let mut output = Vec::new();
        let status = loop {
            drain(&out_r, &mut output);
            match child.try_wait().map_err(spawn)? {
                Some(s) => break s,
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HookError::Timeout {
                        path,
                        secs: h.timeout.map_or(0, |t| t.as_secs()),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        drain(&out_r, &mut output);
        if status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&output).trim().to_owned();
        Err(HookError::Failed {
            path,
            status: status.to_string(),
            output: if text.is_empty() {
                "no output".into()
            } else {
                text
            },
        })
    }
}

/// Reads what the pipe holds now, keeping the last [`OUTPUT_KEPT`] bytes.
fn drain(pipe: &OwnedFd, into: &mut Vec<u8>) {
    let mut f = std::fs::File::from(match pipe.try_clone() {
        Ok(fd) => fd,
        Err(_) => return,
    });
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = f.read(&mut buf) {
        into.extend_from_slice(&buf[..n]);
        if into.len() > OUTPUT_KEPT {
            into.drain(..into.len() - OUTPUT_KEPT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<Duration>) -> Hook {
        Hook {
            stage: HookStage::CreateContainer,
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["MARK=set".into()],
            timeout,
        }
    }

    fn hooks(list: Vec<Hook>, bundle: &std::path::Path) -> Hooks {
        Hooks {
            list,
            id: "abc".into(),
            bundle: bundle.to_owned(),
        }
    }

    #[test]
    fn a_hook_gets_its_env_argv_and_the_state() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let script = format!("echo \"$0 $MARK $HOME\" > {0}; cat >> {0}", out.display());
        hooks(vec![hook(&script, None)], d.path())
            .run(HookStage::CreateContainer)
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("sh set \n"), "{text}");
        let state: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(state["id"], "abc");
        assert_eq!(state["status"], "creating");
        assert_eq!(state["bundle"], d.path().display().to_string());
    }

    #[test]
    fn stages_are_kept_apart() {
        let d = tempfile::tempdir().unwrap();
        let mut h = hook("exit 1", None);
        h.stage = HookStage::StartContainer;
        hooks(vec![h], d.path())
            .run(HookStage::CreateContainer)
            .unwrap();
    }

    #[test]
    fn failures_carry_the_output_and_timeouts_kill() {
        let d = tempfile::tempdir().unwrap();
        let e = hooks(
            vec![hook("echo broken ldcache >&2; exit 3", None)],
            d.path(),
        )
        .run(HookStage::CreateContainer)
        .unwrap_err()
        .to_string();
        assert!(e.contains("broken ldcache") && e.contains('3'), "{e}");
        let e = hooks(
            vec![hook("sleep 5", Some(Duration::from_millis(100)))],
            d.path(),
        )
        .run(HookStage::CreateContainer)
        .unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        let mut missing = hook("", None);
        missing.path = "/nonexistent/hook".into();
        let e = hooks(vec![missing], d.path())
            .run(HookStage::CreateContainer)
            .unwrap_err();
        assert!(matches!(e, HookError::Spawn { .. }), "{e}");
    }
}
