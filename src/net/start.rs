//! Starting a container's network once its init exists, with the one fallback nook takes by
//! itself: where no `--network` was given and pasta fails, slirp4netns takes over (and the
//! failure is remembered, so later runs go straight to slirp4netns).

use std::path::PathBuf;

use super::{Helper, Mode, NetError, Publish, SlirpOptions, etc};

/// The network to start for one container, once its init exists.
pub struct NetStart {
    pub mode: Mode,
    /// No `--network` was given: where pasta fails, slirp4netns takes over.
    pub fallback: bool,
    pub ports: Vec<Publish>,
    pub runtime: PathBuf,
    pub rt: PathBuf,
    /// For the /etc files of a driver that takes over from pasta.
    pub hostname: String,
}

impl NetStart {
    /// Whether a helper sets up the namespace (the init waits for it).
    pub fn helped(&self) -> bool {
        matches!(self.mode, Mode::Pasta(_) | Mode::Slirp(_))
    }

    /// The driver's name, as records and `nook inspect` show it.
    pub fn name(&self) -> &'static str {
        match self.mode {
            Mode::Host => "host",
            Mode::None | Mode::Default => "none",
            Mode::Pasta(_) => "pasta",
            Mode::Slirp(_) => "slirp4netns",
        }
    }

    /// Starts the network for the init `pid`.
    pub fn start(&mut self, pid: nix::unistd::Pid) -> Result<Option<Helper>, NetError> {
        let dirs = (self.runtime.as_path(), self.rt.as_path());
        match super::start(&self.mode, pid.as_raw(), dirs, &self.ports) {
            Err(e)
                if falls_back(self.fallback, &self.mode, &e, || {
                    crate::sys::process::alive(pid.as_raw())
                }) =>
            {
                // pasta does not work here: remember it, and take slirp4netns.
                super::record_pasta_refused(&self.runtime, &e.to_string());
                tracing::debug!(error = %e, "pasta failed; using slirp4netns");
                self.mode = Mode::Slirp(SlirpOptions::default());
                etc::write(&self.rt, &self.hostname, &self.mode).map_err(|source| {
                    NetError::Spawn {
                        tool: "slirp4netns",
                        source,
                    }
                })?;
                super::start(&self.mode, pid.as_raw(), dirs, &self.ports)
            }
            r => r,
        }
    }
}

/// Whether slirp4netns takes over after `err`: only for a default network on pasta that
/// failed or timed out, while the init still lives (else the init's own report says why).
fn falls_back(fallback: bool, mode: &Mode, err: &NetError, alive: impl FnOnce() -> bool) -> bool {
    fallback
        && matches!(mode, Mode::Pasta(_))
        && matches!(err, NetError::Failed { .. } | NetError::Timeout { .. })
        && alive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> NetError {
        NetError::Failed {
            tool: "pasta",
            message: "no".into(),
        }
    }

    #[test]
    fn only_a_failed_default_pasta_falls_back_to_slirp4netns() {
        let pasta = Mode::Pasta(Default::default());
        let timeout = NetError::Timeout {
            tool: "pasta",
            secs: 5,
            message: String::new(),
        };
        assert!(falls_back(true, &pasta, &failed(), || true));
        assert!(falls_back(true, &pasta, &timeout, || true));
        assert!(
            !falls_back(false, &pasta, &failed(), || true),
            "--network pasta"
        );
        assert!(!falls_back(true, &pasta, &failed(), || false), "init gone");
        let slirp = Mode::Slirp(SlirpOptions::default());
        assert!(!falls_back(true, &slirp, &failed(), || true));
        let missing = NetError::Missing("pasta");
        assert!(!falls_back(true, &pasta, &missing, || true));
    }
}
