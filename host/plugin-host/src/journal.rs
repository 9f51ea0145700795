//! The decision journal: every decision's input, answer, plugin, duration and
//! outcome, as JSON lines on disk, bounded in size (one rotated file is kept),
//! and replay of a journal against another plugin build.

use crate::decision::{answer_json, invoke_judging_the_plugin, DecisionInput};
use crate::runtime::{LoadedPlugin, Runtime};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the journal's files: they hold install requests (password
/// hashes, SSH keys).
const FILE_MODE: u32 = 0o600;
/// Mode of the directory the journal creates.
const DIR_MODE: u32 = 0o700;

/// Opens a journal file for appending, creating it 0600.
fn open_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Sets an existing file's mode to 0600 (a journal of an older release).
fn make_private(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o777 != FILE_MODE => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One journaled decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JournalRecord {
    pub seq: u64,
    /// Wall clock of the decision (the plugin saw this value), ms since the epoch.
    pub at_ms: u64,
    pub world: nasvisor_plugin_sdk::World,
    pub function: String,
    /// "name@version" of the plugin asked, if any.
    pub plugin: Option<String>,
    /// "plugin", "fallback", "refused" (the validator refused the plugin's
    /// answer), "quarantined" or "native".
    pub source: String,
    /// Why the plugin's answer was not used, for a fallback or a refusal.
    pub cause: Option<String>,
    pub duration_us: u64,
    pub input: DecisionInput,
    /// `{"ok": ...}` or `{"error": ...}`: the answer acted on.
    pub answer: serde_json::Value,
}

/// An append-only, size-bounded journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
    seq: u64,
}

fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl Journal {
    /// Opens (appending to) the journal at `path`. When the file would grow
    /// past `max_bytes` it is rotated to `<path>.1`, replacing the previous
    /// rotation, so the journal never holds more than about twice `max_bytes`.
    /// Its files are 0600 (also those an older release left) and the
    /// directories it creates 0700.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
        }
        let file = open_private(path)?;
        make_private(path)?;
        make_private(&rotated(path))?;
        let size = file.metadata()?.len();
        let seq = read_journal(path)
            .ok()
            .and_then(|r| r.last().map(|r| r.seq + 1))
            .unwrap_or(0);
        Ok(Journal {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(4096),
            file,
            size,
            seq,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record (its `seq` is assigned here).
    pub fn append(&mut self, mut rec: JournalRecord) -> std::io::Result<()> {
        rec.seq = self.seq;
        let mut line = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
            self.file.flush()?;
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = open_private(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        self.seq += 1;
        Ok(())
    }
}

/// Reads a journal, oldest first (the rotated file, then the current one).
/// A torn last line (crash while writing) is skipped; any other bad line is
/// an error naming its line number.
pub fn read_journal(path: &Path) -> Result<Vec<JournalRecord>, String> {
    let mut out = Vec::new();
    let mut found = false;
    for p in [rotated(path), path.to_path_buf()] {
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        found = true;
        let lines: Vec<String> = BufReader::new(f)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<JournalRecord>(&line) {
                Ok(r) => out.push(r),
                Err(_) if i + 1 == n => {
                    tracing::warn!(path = %p.display(), line = i + 1, "skipping torn last journal line")
                }
                Err(e) => return Err(format!("{} line {}: {e}", p.display(), i + 1)),
            }
        }
    }
    if !found {
        return Err(format!("{}: no such journal", path.display()));
    }
    Ok(out)
}

/// A decision that a replayed plugin answers differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplayDiff {
    pub seq: u64,
    pub function: String,
    pub recorded: serde_json::Value,
    /// The new answer, or `{"failure": "..."}` when the plugin failed.
    pub replayed: serde_json::Value,
}

/// Summary of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplayReport {
    pub replayed: usize,
    pub skipped_other_worlds: usize,
    pub same: usize,
    pub differing: Vec<ReplayDiff>,
}

/// Runs each journaled decision of `plugin`'s world through `plugin` (with
/// the recorded wall clock), validates the answer as the host would, and
/// reports the decisions whose answer differs from the recorded one.
pub fn replay(rt: &Runtime, plugin: &LoadedPlugin, records: &[JournalRecord]) -> ReplayReport {
    let mut report = ReplayReport {
        replayed: 0,
        skipped_other_worlds: 0,
        same: 0,
        differing: Vec::new(),
    };
    for rec in records {
        if rec.world != plugin.world() {
            report.skipped_other_worlds += 1;
            continue;
        }
        report.replayed += 1;
        let replayed = match invoke_judging_the_plugin(rt, plugin, &rec.input, rec.at_ms) {
            Ok(answer) => {
                let invalid = answer
                    .as_ref()
                    .ok()
                    .and_then(|o| crate::validate::validate(&rec.input, o).err());
                match invalid {
                    Some(reason) => {
                        serde_json::json!({ "failure": format!("invalid output: {reason}") })
                    }
                    None => answer_json(&answer),
                }
            }
            Err(e) => serde_json::json!({ "failure": e.to_string() }),
        };
        if replayed == rec.answer {
            report.same += 1;
        } else {
            report.differing.push(ReplayDiff {
                seq: rec.seq,
                function: rec.function.clone(),
                recorded: rec.answer.clone(),
                replayed,
            });
        }
    }
    report
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn record() -> JournalRecord {
        JournalRecord {
            seq: 0,
            at_ms: 0,
            world: nasvisor_plugin_sdk::World::Sha,
            function: "check-setup".into(),
            plugin: None,
            source: "native".into(),
            cause: None,
            duration_us: 1,
            input: DecisionInput::CheckSetup {
                host: Default::default(),
                raw_status: "x".repeat(3000),
            },
            answer: serde_json::json!({"ok": null}),
        }
    }

    #[test]
    fn the_journal_is_private_from_its_creation_and_after_rotation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("data/journal/decisions.jsonl");
        let mut j = Journal::open(&path, 4096).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        for _ in 0..3 {
            j.append(record()).unwrap();
        }
        assert!(rotated(&path).exists(), "rotated once at least");
        assert_eq!(mode(&rotated(&path)), 0o600);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_journal_an_older_release_left_readable_is_made_private() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("decisions.jsonl");
        for p in [path.clone(), rotated(&path)] {
            std::fs::write(&p, b"").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&rotated(&path)), 0o600);
    }
}
