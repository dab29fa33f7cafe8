//! Pull progress as `nook pull` draws it: a bar per layer on a terminal, a line per finished
//! layer otherwise, nothing with `-q`. The pull itself ([`crate::pull`]) only reports.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;
use crate::pull::{self, LayerState};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bars,
    Lines,
    Quiet,
}

impl ProgressMode {
    pub fn choose(quiet: bool) -> Self {
        if quiet {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// Progress of one pull.
pub struct Progress {
    mode: ProgressMode,
    multi: MultiProgress,
    lines: Mutex<()>,
}

/// Progress of one layer.
pub struct LayerProgress<'a> {
    parent: &'a Progress,
    short: String,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        let multi = MultiProgress::with_draw_target(if mode == ProgressMode::Bars {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        });
        Progress {
            mode,
            multi,
            lines: Mutex::new(()),
        }
    }

    /// A status line outside the bars (`latest: Pulling from library/busybox`).
    pub fn say(&self, text: &str) {
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Bars => {
                let _ = self.multi.println(text);
            }
            ProgressMode::Lines => {
                let _guard = self.lines.lock();
                eprintln!("{text}");
            }
        }
    }

    fn layer_bar(&self, digest: &Digest, total: u64) -> LayerProgress<'_> {
        let short = digest.short().to_owned();
        let bar = (self.mode == ProgressMode::Bars).then(|| {
            let b = self.multi.add(ProgressBar::new(total));
            let style = ProgressStyle::with_template(
                "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(short.clone());
            b.set_message("Waiting");
            b
        });
        LayerProgress {
            parent: self,
            short,
            bar,
        }
    }
}

impl pull::Progress for Progress {
    fn say(&self, text: &str) {
        Progress::say(self, text);
    }

    fn layer(&self, digest: &Digest, size: u64) -> Box<dyn pull::LayerProgress + '_> {
        Box::new(self.layer_bar(digest, size))
    }
}

impl pull::LayerProgress for LayerProgress<'_> {
    fn status(&self, state: LayerState) {
        if let Some(b) = &self.bar {
            b.set_message(state.label());
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn done(&self, state: LayerState) {
        let msg = state.label();
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.finish();
            }
            None => self.parent.say(&format!("{}: {msg}", self.short)),
        }
    }
}
