//! Diagnostics through `tracing`: warnings as `WARNING: ...` lines by default, everything
//! with targets at `--log-level debug`.
//!
//! Libraries that log through the `log` crate (fuser) come through the same filter, so that
//! their lines reach the terminal only at the level asked for. fuser's failure to answer a
//! request the kernel has already dropped (the caller was interrupted: the reply finds no
//! request, ENOENT) is normal under load and is demoted to debug.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_log::AsLog;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

struct Plain {
    verbose: bool,
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        match *meta.level() {
            Level::ERROR => write!(w, "ERROR: ")?,
            Level::WARN => write!(w, "WARNING: ")?,
            l => write!(w, "{l} ")?,
        }
        if self.verbose {
            write!(w, "{}: ", meta.target())?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

pub fn init(level: &str) {
    let verbose = matches!(level, "debug" | "trace");
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Plain { verbose })
        .finish();
    if tracing::subscriber::set_global_default(subscriber).is_ok()
        && log::set_logger(&LogBridge).is_ok()
    {
        log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
    }
}

/// `log` records into `tracing` events, some demoted on the way.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let level = if r.level() <= log::Level::Warn {
            demoted(r.target(), &r.args().to_string()).unwrap_or(r.level())
        } else {
            r.level()
        };
        let record = log::Record::builder()
            .args(*r.args())
            .level(level)
            .target(r.target())
            .module_path(r.module_path())
            .file(r.file())
            .line(r.line())
            .build();
        let _ = tracing_log::format_trace(&record);
    }

    fn flush(&self) {}
}

/// The level a library's warning or error is really worth, where it is not its own.
fn demoted(target: &str, message: &str) -> Option<log::Level> {
    let interrupted = target.starts_with("fuser")
        && message.starts_with("Failed to send FUSE reply")
        && message.ends_with(&format!("(os error {})", libc::ENOENT));
    interrupted.then_some(log::Level::Debug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_to_interrupted_requests_are_demoted_other_errors_not() {
        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        let msg = format!("Failed to send FUSE reply: {enoent}");
        assert_eq!(demoted("fuser::reply", &msg), Some(log::Level::Debug));
        let ebadf = std::io::Error::from_raw_os_error(libc::EBADF);
        let other = format!("Failed to send FUSE reply: {ebadf}");
        assert_eq!(demoted("fuser::reply", &other), None);
        assert_eq!(demoted("nook::fuse", &msg), None, "only fuser's own line");
    }
}
