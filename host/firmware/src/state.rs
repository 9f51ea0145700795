//! The firmware state file, on the data partition (it survives updates):
//! the rollback floor, the clock floor, the update waiting for its first
//! healthy boot, and the last update's outcome. Written atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves the old state or the new one.

use crate::manifest::Manifest;
use crate::slots::Slot;
use semver::Version;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The state file's format.
pub const STATE_FORMAT: u32 = 1;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the firmware state {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the firmware state {} is not valid: {field}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("cannot write the firmware state {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The firmware state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// The highest `min-version` of every bundle that booted healthily
    /// (`next_floor`): nothing below it is installed, ever.
    pub rollback_floor: Option<Version>,
    /// The newest `created` of an installed bundle: a clock earlier than
    /// this is not trusted for the expiry check (the later of the two is).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub clock_floor: Option<OffsetDateTime>,
    /// The update installed and not yet judged.
    pub pending: Option<PendingUpdate>,
    /// How the last update ended.
    pub last_outcome: Option<Outcome>,
    /// The service release (`service` bundles), when there is one.
    #[serde(
        default,
        skip_serializing_if = "crate::service::ServiceState::is_empty"
    )]
    pub service: crate::service::ServiceState,
}

impl Default for State {
    fn default() -> State {
        State {
            format: STATE_FORMAT,
            rollback_floor: None,
            clock_floor: None,
            pending: None,
            last_outcome: None,
            service: Default::default(),
        }
    }
}

/// An update installed into a slot, waiting for its first healthy boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PendingUpdate {
    pub slot: Slot,
    pub version: String,
    /// Its entry's generation.
    pub generation: u64,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
    /// The verified manifest: its `min-version` becomes the floor once
    /// the slot booted healthily.
    pub manifest: Manifest,
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// Written and checked; the slot boots next (pending).
    Installed,
    /// The slot booted and was blessed.
    Succeeded,
    /// Refused, failed to install, or did not boot healthily.
    Failed,
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutcomeKind::Installed => "installed",
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::Failed => "failed",
        })
    }
}

/// The last update's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Outcome {
    pub result: OutcomeKind,
    /// When (RFC 3339).
    pub at: String,
    /// The bundle's version, when it was read.
    pub version: Option<String>,
    /// The slot it went to, when one was chosen.
    pub slot: Option<Slot>,
    /// A short stable name of the failure (`BundleError::code`, or
    /// `unhealthy`, `install`...).
    pub code: Option<String>,
    /// What happened, in words.
    pub reason: Option<String>,
}

impl State {
    /// Reads the state at `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let state: State = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            StateError::Invalid {
                path: path.to_path_buf(),
                field,
                reason: e.into_inner().to_string(),
            }
        })?;
        if state.format != STATE_FORMAT {
            return Err(StateError::Invalid {
                path: path.to_path_buf(),
                field: "format".into(),
                reason: format!("{} is not {STATE_FORMAT}", state.format),
            });
        }
        Ok(state)
    }

    /// Writes the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(path, &bytes).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The time expiry is judged at: the later of `now` and the clock
    /// floor.
    pub fn trusted_now(&self, now: OffsetDateTime) -> OffsetDateTime {
        match self.clock_floor {
            Some(floor) if floor > now => floor,
            _ => now,
        }
    }
}

/// A new temporary file in `dest`'s directory, named `.<dest's name>.XXXX<suffix>`
/// (hidden, and never taken for `dest` itself), to be renamed onto `dest`.
pub(crate) fn temp_beside(dest: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(suffix)
        .tempfile_in(dir)
}

/// Writes `bytes` to `path` through a temporary file beside it: write,
/// fsync, rename, fsync the directory. Creates the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = temp_beside(path, ".tmp")?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// fsync a directory, so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_missing_state_is_empty_and_a_saved_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw").join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let state = State {
            rollback_floor: Some(Version::new(2, 0, 0)),
            clock_floor: Some(datetime!(2026-01-10 09:00 UTC)),
            last_outcome: Some(Outcome {
                result: OutcomeKind::Failed,
                at: "2026-02-01T00:00:00Z".into(),
                version: Some("2.1.0".into()),
                slot: Some(Slot::B),
                code: Some("expired".into()),
                reason: Some("expired bundle".into()),
            }),
            ..State::default()
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"rollback-floor\": \"2.0.0\""), "{text}");
        assert!(
            text.contains("\"clock-floor\": \"2026-01-10T09:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn a_bad_state_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, br#"{"format":1,"rollback-floor":"two"}"#).unwrap();
        let e = State::load(&path).unwrap_err();
        assert!(
            matches!(&e, StateError::Invalid { field, .. } if field == "rollback-floor"),
            "{e}"
        );
    }

    #[test]
    fn the_trusted_clock_is_never_before_the_clock_floor() {
        let state = State {
            clock_floor: Some(datetime!(2026-01-10 09:00 UTC)),
            ..State::default()
        };
        assert_eq!(
            state.trusted_now(datetime!(1970-01-01 00:00 UTC)),
            datetime!(2026-01-10 09:00 UTC)
        );
        assert_eq!(
            state.trusted_now(datetime!(2026-03-01 00:00 UTC)),
            datetime!(2026-03-01 00:00 UTC)
        );
    }
}
