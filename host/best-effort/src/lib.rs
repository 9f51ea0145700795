//! Best-effort steps: the cleanup on a failure path, the removal of a file
//! that may already be gone, the kill of a child that may already have
//! exited. Their failure must not change the outcome of what they clean up
//! after, but it must be seen: an administrator reading the log learns that
//! a file was left behind or a process kept running, and where.
//!
//! Use [`BestEffort::best_effort`] instead of `let _ =` on such a result.
//! `let _ =` stays only where the result means nothing (a channel whose
//! receiver has gone, a wait whose timeout is the point), with a comment
//! saying so.
//!
//! [`write_private`] writes a secret atomically with mode 0600; its
//! housekeeping steps are best effort.

mod private_file;

pub use private_file::write_private;

use std::fmt::Display;
use std::io::ErrorKind;
use std::panic::Location;
use std::path::Path;

/// A result whose failure is logged at warn and then dropped.
pub trait BestEffort {
    /// Logs `what` (say what was tried: "remove the seed of vm-1") and the
    /// error at warn, with the caller's source location, when this failed.
    #[track_caller]
    fn best_effort(self, what: &str);
}

impl<T, E: Display> BestEffort for Result<T, E> {
    #[track_caller]
    fn best_effort(self, what: &str) {
        if let Err(e) = self {
            let at = Location::caller();
            tracing::warn!(error = %e, at = %at, "best effort: could not {what}");
        }
    }
}

/// Removes a file; one that is already gone is no failure. Any other error
/// is logged at warn.
#[track_caller]
pub fn remove_file(path: &Path) {
    not_found_is_done(std::fs::remove_file(path))
        .best_effort(&format!("remove {}", path.display()));
}

/// Removes an empty directory; one that is already gone is no failure.
#[track_caller]
pub fn remove_dir(path: &Path) {
    not_found_is_done(std::fs::remove_dir(path))
        .best_effort(&format!("remove the directory {}", path.display()));
}

/// Removes a directory and everything in it; one that is already gone is no
/// failure.
#[track_caller]
pub fn remove_dir_all(path: &Path) {
    not_found_is_done(std::fs::remove_dir_all(path)).best_effort(&format!(
        "remove the directory {} and its contents",
        path.display()
    ));
}

fn not_found_is_done(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Collects what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_failed_step_is_logged_at_warn_with_what_the_error_and_where() {
        let log = logged(|| {
            Err::<(), _>("disk full").best_effort("write the boot id");
        });
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("could not write the boot id"), "{log}");
        assert!(log.contains("disk full"), "{log}");
        assert!(log.contains(file!()), "the caller's file is named: {log}");
    }

    #[test]
    fn a_step_that_worked_logs_nothing() {
        let log = logged(|| Ok::<u32, String>(1).best_effort("anything"));
        assert_eq!(log, "");
    }

    #[test]
    fn removing_a_file_that_is_gone_is_no_failure_but_a_refused_removal_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert_eq!(logged(|| remove_file(&gone)), "");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(logged(|| remove_file(&file)), "");
        assert!(!file.exists());
        // A directory is not a file: remove_file fails, and says so.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let log = logged(|| remove_file(&sub));
        assert!(
            log.contains("WARN") && log.contains("could not remove"),
            "{log}"
        );
        assert!(log.contains(&sub.display().to_string()), "{log}");
        // A non-empty directory is refused by remove_dir, removed by remove_dir_all.
        std::fs::write(sub.join("f"), b"x").unwrap();
        assert!(logged(|| remove_dir(&sub)).contains("WARN"));
        assert_eq!(logged(|| remove_dir_all(&sub)), "");
        assert!(!sub.exists());
    }
}
