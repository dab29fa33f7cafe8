//! Waking a poll loop when a container's directory changes (its record rewritten, its log
//! appended, the directory removed), so `wait`, `attach` and `logs -f` answer as soon as the
//! container ends instead of at their next look. Polling stays the fallback: a watch that
//! cannot be made, or a change inotify does not report, costs at most one `max` interval.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// An inotify watch on one directory and its entries.
pub struct DirWatch {
    inotify: Option<Inotify>,
}

impl DirWatch {
    /// Watches `dir`; a watch that cannot be made leaves plain sleeping.
    pub fn new(dir: &Path) -> DirWatch {
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .filter(|i| i.add_watch(dir, flags).is_ok());
        DirWatch { inotify }
    }

    /// Returns after a change (true), or after `max` (false).
    pub fn wait(&self, max: Duration) -> bool {
        let Some(i) = &self.inotify else {
            std::thread::sleep(max);
            return false;
        };
        let ms = u16::try_from(max.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(i.as_fd(), PollFlags::POLLIN)];
        if !poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0) {
            return false;
        }
        // Drained, so that the next wait sleeps until the next change.
        while i.read_events().is_ok_and(|e| !e.is_empty()) {}
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_wakes_the_wait_early() {
        let dir = tempfile::tempdir().unwrap();
        let w = DirWatch::new(dir.path());
        let p = dir.path().join("record");
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(p, "x").unwrap();
        });
        assert!(
            w.wait(Duration::from_secs(60)),
            "woken by the write, not the bound"
        );
        t.join().unwrap();
        // The write's later events (modify, close) may come after the first wake drained the
        // queue: once the writer is done, one more wait takes them, and then nothing is left.
        w.wait(Duration::from_millis(1));
        assert!(!w.wait(Duration::from_millis(1)), "the change was drained");
    }

    #[test]
    fn a_missing_directory_falls_back_to_sleeping() {
        let w = DirWatch::new(Path::new("/nonexistent/nook-watch"));
        assert!(w.inotify.is_none());
        assert!(!w.wait(Duration::from_millis(1)));
    }
}
