//! The appliance's A/B root slots, as the boot loader sees them.
//!
//! The layout (docs/appliance.md, docs/firmware.md "Installing"):
//!
//! - two root slots, the partitions `nasvisor-a` and `nasvisor-b`, each a
//!   read-only erofs image of a fixed size;
//! - the ESP, with each slot's kernel and initrd at
//!   `/nasvisor/<slot>/vmlinuz` and `/nasvisor/<slot>/initrd.img`, and a
//!   systemd-boot entry per slot at
//!   `/loader/entries/nasvisor-<generation>-<slot>[+<left>[-<done>]].conf`.
//!   The counter suffix is systemd-boot's boot assessment: present while
//!   the entry is being tried, dropped by systemd-bless-boot once the boot
//!   reached `boot-complete.target`; `+0-N` means N tries failed;
//! - the booted slot on the kernel command line: `nasvisor.slot=a|b`.
//!
//! [`SlotSet`] reads that layout; [`SlotSet::status`] reports it with the
//! firmware state file (crate::state).

use crate::state::{Outcome, PendingUpdate, State, StateError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// Both slots, in order.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The slot's letter, as the command line and the entries write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the slots, the ESP, the command line and the state are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConfig {
    /// Where the ESP is mounted (`/efi`).
    pub esp: PathBuf,
    /// The devices of slot a and slot b
    /// (`/dev/disk/by-partlabel/nasvisor-a|b`); plain files in tests.
    pub devices: [PathBuf; 2],
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline: PathBuf,
    /// The firmware state directory, on the data partition
    /// (`/var/lib/nasvisor/firmware`).
    pub state_dir: PathBuf,
    /// The tries a newly installed slot gets before systemd-boot gives up
    /// on it (3).
    pub tries: u32,
    /// The firmware's EFI variables (`/sys/firmware/efi/efivars`): Secure
    /// Boot's state and keys.
    pub efivars: PathBuf,
}

/// Where Linux shows the firmware's EFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

impl SlotConfig {
    /// The appliance's layout, with the state under `data_dir`.
    pub fn appliance(data_dir: &Path) -> SlotConfig {
        SlotConfig {
            esp: PathBuf::from("/efi"),
            devices: [
                PathBuf::from("/dev/disk/by-partlabel/nasvisor-a"),
                PathBuf::from("/dev/disk/by-partlabel/nasvisor-b"),
            ],
            cmdline: PathBuf::from("/proc/cmdline"),
            state_dir: data_dir.join("firmware"),
            tries: 3,
            efivars: PathBuf::from(EFIVARS),
        }
    }
}

/// Why the slots could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// A file of the layout could not be read or written.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The command line names no slot: this system was not booted from a
    /// nasvisor slot.
    #[error("{cmdline}: no nasvisor.slot=a|b on the kernel command line (not booted from a nasvisor slot)")]
    NotBootedFromSlot { cmdline: String },
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlotError {
    let context = context.into();
    move |source| SlotError::Io { context, source }
}

/// The boot assessment counter of an entry, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// No counter: blessed (or never counted).
    Blessed,
    /// Being tried: `left` tries left, `done` made.
    Trying { left: u32, done: u32 },
}

/// A systemd-boot entry of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name, e.g. `nasvisor-4-b+3.conf`.
    pub file: String,
    pub generation: u64,
    pub slot: Slot,
    pub counter: Counter,
}

impl Entry {
    /// Reads an entry file name: `nasvisor-<gen>-<slot>[+<left>[-<done>]].conf`.
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_prefix("nasvisor-")?.strip_suffix(".conf")?;
        let (id, counter) = match stem.split_once('+') {
            None => (stem, Counter::Blessed),
            Some((id, c)) => {
                let (left, done) = match c.split_once('-') {
                    None => (c, "0"),
                    Some((l, d)) => (l, d),
                };
                let left = parse_digits(left)?;
                let done = parse_digits(done)?;
                (id, Counter::Trying { left, done })
            }
        };
        let (generation, slot) = id.split_once('-')?;
        Some(Entry {
            file: file.to_string(),
            generation: parse_digits(generation)?,
            slot: Slot::parse(slot)?,
            counter,
        })
    }

    /// The file name of a new entry with `tries` tries.
    pub fn file_name(generation: u64, slot: Slot, tries: Option<u32>) -> String {
        match tries {
            Some(t) => format!("nasvisor-{generation}-{slot}+{t}.conf"),
            None => format!("nasvisor-{generation}-{slot}.conf"),
        }
    }

    /// Whether every try failed (`+0-N`): systemd-boot boots it no more.
    pub fn is_bad(&self) -> bool {
        matches!(self.counter, Counter::Trying { left: 0, .. })
    }
}

fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What the boot loader makes of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum SlotState {
    /// The running system booted from it.
    Booted,
    /// It has a blessed entry: it booted healthily before.
    Good,
    /// It is being tried: systemd-boot boots it while tries are left.
    Pending { tries_left: u32 },
    /// Every try failed; systemd-boot boots it no more.
    Bad { tries: u32 },
    /// No entry: not bootable (never installed, or invalidated).
    Empty,
}

/// One slot in [`FirmwareStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotStatus {
    pub slot: Slot,
    #[serde(flatten)]
    pub state: SlotState,
    /// The version its entry names.
    pub version: Option<String>,
    /// Its entry's generation.
    pub generation: Option<u64>,
    /// Its entry's file name.
    pub entry: Option<String>,
    /// Whether the booted slot's entry is blessed yet (`None` for the
    /// other slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blessed: Option<bool>,
}

/// `firmware status`: the slots, the floors, the pending update and the
/// last outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FirmwareStatus {
    pub booted: Slot,
    pub slots: Vec<SlotStatus>,
    /// No bundle below this version is installed.
    pub rollback_floor: Option<String>,
    /// The clock is never taken to be earlier than this (RFC 3339).
    pub clock_floor: Option<String>,
    pub pending: Option<PendingUpdate>,
    pub last_outcome: Option<Outcome>,
    /// The service release, if any.
    pub service: crate::service::ServiceState,
}

/// The two slots, the ESP, and the firmware state.
#[derive(Debug, Clone)]
pub struct SlotSet {
    config: SlotConfig,
}

impl SlotSet {
    pub fn new(config: SlotConfig) -> SlotSet {
        SlotSet { config }
    }

    pub fn config(&self) -> &SlotConfig {
        &self.config
    }

    /// The device of `slot`.
    pub fn device(&self, slot: Slot) -> &Path {
        &self.config.devices[slot.index()]
    }

    /// The booted slot, from the command line's `nasvisor.slot=`.
    pub fn booted(&self) -> Result<Slot, SlotError> {
        let path = &self.config.cmdline;
        let cmdline = std::fs::read_to_string(path)
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        cmdline
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("nasvisor.slot="))
            .next_back()
            .and_then(Slot::parse)
            .ok_or_else(|| SlotError::NotBootedFromSlot {
                cmdline: path.display().to_string(),
            })
    }

    /// `<esp>/loader/entries`.
    pub fn entries_dir(&self) -> PathBuf {
        self.config.esp.join("loader").join("entries")
    }

    /// `<esp>/nasvisor/<slot>`: the slot's kernel and initrd.
    pub fn kernel_dir(&self, slot: Slot) -> PathBuf {
        self.config.esp.join("nasvisor").join(slot.as_str())
    }

    /// Every nasvisor entry on the ESP, newest generation first.
    pub fn entries(&self) -> Result<Vec<Entry>, SlotError> {
        let dir = self.entries_dir();
        let read = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot read {}", dir.display()))(e)),
        };
        let mut out = Vec::new();
        for e in read {
            let e = e.map_err(io_err(format!("cannot read {}", dir.display())))?;
            if let Some(entry) = e.file_name().to_str().and_then(Entry::parse) {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| b.generation.cmp(&a.generation).then(a.file.cmp(&b.file)));
        Ok(out)
    }

    /// The newest entry of `slot`.
    pub fn entry(&self, slot: Slot) -> Result<Option<Entry>, SlotError> {
        Ok(self.entries()?.into_iter().find(|e| e.slot == slot))
    }

    /// The value of a `key value` line of an entry.
    pub fn entry_field(&self, entry: &Entry, key: &str) -> Result<Option<String>, SlotError> {
        let path = self.entries_dir().join(&entry.file);
        let text = std::fs::read_to_string(&path)
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        Ok(entry_field(&text, key))
    }

    /// The version the booted slot's boot entry names: what this
    /// appliance runs, unless a service release runs on it. `None` when not
    /// booted from a slot, or its entry names none.
    pub fn booted_version(&self) -> Option<String> {
        let booted = self.booted().ok()?;
        let entry = self.entry(booted).ok()??;
        self.entry_field(&entry, "version").ok()?
    }

    /// The state file's path.
    pub fn state_path(&self) -> PathBuf {
        self.config.state_dir.join("state.json")
    }

    /// The firmware state (an empty one when there is no file yet).
    pub fn state(&self) -> Result<State, SlotError> {
        Ok(State::load(&self.state_path())?)
    }

    /// The slots, the floors, the pending update and the last outcome.
    pub fn status(&self) -> Result<FirmwareStatus, SlotError> {
        let booted = self.booted()?;
        let state = self.state()?;
        let entries = self.entries()?;
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            let entry = entries.iter().find(|e| e.slot == slot);
            let version = match entry {
                Some(e) => self.entry_field(e, "version")?,
                None => None,
            };
            let state = if slot == booted {
                SlotState::Booted
            } else {
                match entry.map(|e| e.counter) {
                    None => SlotState::Empty,
                    Some(Counter::Blessed) => SlotState::Good,
                    Some(Counter::Trying { left: 0, done }) => SlotState::Bad { tries: done },
                    Some(Counter::Trying { left, .. }) => SlotState::Pending { tries_left: left },
                }
            };
            slots.push(SlotStatus {
                slot,
                state,
                version,
                generation: entry.map(|e| e.generation),
                entry: entry.map(|e| e.file.clone()),
                blessed: (slot == booted)
                    .then(|| matches!(entry.map(|e| e.counter), Some(Counter::Blessed))),
            });
        }
        Ok(FirmwareStatus {
            booted,
            slots,
            rollback_floor: state.rollback_floor.as_ref().map(|v| v.to_string()),
            clock_floor: state.clock_floor.map(crate::rfc3339),
            pending: state.pending,
            last_outcome: state.last_outcome,
            service: state.service,
        })
    }
}

/// The value of the first `key value` line of an entry's text.
pub(crate) fn entry_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix(key)?;
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        Some(rest.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_read_with_and_without_a_counter() {
        let e = Entry::parse("nasvisor-4-b+3.conf").unwrap();
        assert_eq!((e.generation, e.slot), (4, Slot::B));
        assert_eq!(e.counter, Counter::Trying { left: 3, done: 0 });
        let e = Entry::parse("nasvisor-12-a+0-3.conf").unwrap();
        assert_eq!(e.counter, Counter::Trying { left: 0, done: 3 });
        assert!(e.is_bad());
        let e = Entry::parse("nasvisor-1-a.conf").unwrap();
        assert_eq!(e.counter, Counter::Blessed);
        for bad in [
            "nasvisor-1-c.conf",
            "nasvisor-x-a.conf",
            "nasvisor-1-a+.conf",
            "nasvisor-1-a+1-.conf",
            "other-1-a.conf",
            "nasvisor-1-a.conf.tmp",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
        assert_eq!(Entry::file_name(5, Slot::A, Some(3)), "nasvisor-5-a+3.conf");
    }

    #[test]
    fn entry_fields_are_read_by_key() {
        let text = "title nasvisor 2.1.0 (slot a)\nversion 2.1.0\noptions root=PARTLABEL=nasvisor-a ro\nversionx no\n";
        assert_eq!(entry_field(text, "version").as_deref(), Some("2.1.0"));
        assert_eq!(
            entry_field(text, "options").as_deref(),
            Some("root=PARTLABEL=nasvisor-a ro")
        );
        assert_eq!(entry_field(text, "linux"), None);
    }
}
