//! Pull progress: a bar per layer on a terminal, a line per finished layer otherwise,
//! nothing with `-q`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;

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

    pub fn quiet(&self) -> bool {
        self.mode == ProgressMode::Quiet
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

    pub fn layer(&self, digest: &Digest, total: u64) -> LayerProgress<'_> {
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

impl LayerProgress<'_> {
    pub fn status(&self, msg: &'static str) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn done(&self, msg: &'static str) {
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.finish();
            }
            None => self.parent.say(&format!("{}: {msg}", self.short)),
        }
    }
}
