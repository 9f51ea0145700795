//! The firmware answer (`Firmware` schema): this host's A/B root slots,
//! its rollback and clock floors, the update waiting for its first healthy
//! boot and how the last update ended (docs/firmware.md, "Status").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the boot loader makes of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareSlotState {
    /// The running system booted from it.
    Booted,
    /// Its entry is blessed: it booted healthily before.
    Good,
    /// Being tried: booted next while tries are left (`tries_left`).
    Pending,
    /// Every try failed (`tries_done`); not booted any more.
    Bad,
    /// No boot entry: never installed, or being rewritten.
    Empty,
}

impl FirmwareSlotState {
    /// The API name, e.g. `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareSlotState::Booted => "booted",
            FirmwareSlotState::Good => "good",
            FirmwareSlotState::Pending => "pending",
            FirmwareSlotState::Bad => "bad",
            FirmwareSlotState::Empty => "empty",
        }
    }
}

/// One root slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FirmwareSlot", deny_unknown_fields)]
pub struct FirmwareSlotView {
    /// `a` or `b`.
    pub slot: String,
    /// Its state.
    pub state: FirmwareSlotState,
    /// Tries left (a pending slot).
    pub tries_left: Option<u32>,
    /// Tries that failed (a bad slot).
    pub tries_done: Option<u32>,
    /// The version its boot entry names.
    pub version: Option<String>,
    /// Its boot entry's generation.
    pub generation: Option<u64>,
    /// Its boot entry's file name on the ESP.
    pub entry: Option<String>,
    /// The booted slot: whether its entry is blessed yet (the boot reached
    /// boot-complete.target); `null` for the other slot.
    pub blessed: Option<bool>,
}

/// An update installed and not yet judged by a boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FirmwarePending", deny_unknown_fields)]
pub struct FirmwarePendingView {
    /// The slot it was written to.
    pub slot: String,
    /// Its version.
    pub version: String,
    /// Its boot entry's generation.
    pub generation: u64,
    /// When it was installed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub installed_at: String,
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareOutcomeKind {
    /// Written and checked; the slot boots at the next reboot.
    Installed,
    /// The slot booted and was blessed.
    Succeeded,
    /// Refused, failed to install, or did not boot healthily.
    Failed,
}

impl FirmwareOutcomeKind {
    /// The API name, e.g. `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareOutcomeKind::Installed => "installed",
            FirmwareOutcomeKind::Succeeded => "succeeded",
            FirmwareOutcomeKind::Failed => "failed",
        }
    }
}

/// The last update's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FirmwareOutcome", deny_unknown_fields)]
pub struct FirmwareOutcomeView {
    /// How it ended.
    pub result: FirmwareOutcomeKind,
    /// When (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// The bundle's version, when it was read.
    pub version: Option<String>,
    /// The slot, when one was chosen.
    pub slot: Option<String>,
    /// A short stable name of the failure (`expired`, `tampered-payload`,
    /// `unhealthy`...).
    pub code: Option<String>,
    /// What happened, in words.
    pub reason: Option<String>,
}

/// This host's firmware (`GET /api/v1/host/firmware`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Firmware", deny_unknown_fields)]
pub struct FirmwareView {
    /// The slot the running system booted from.
    pub booted: String,
    /// Slot a, then slot b.
    pub slots: Vec<FirmwareSlotView>,
    /// No bundle below this version is installed, ever.
    pub rollback_floor: Option<String>,
    /// The expiry of a bundle is never judged at a time before this (RFC
    /// 3339): the newest creation time of an installed bundle.
    pub clock_floor: Option<String>,
    /// The update waiting for its first healthy boot.
    pub pending: Option<FirmwarePendingView>,
    /// How the last update ended.
    pub last_outcome: Option<FirmwareOutcomeView>,
    /// The service release (`service` bundles): what runs, what is
    /// current, on trial, and what to go back to.
    #[serde(default)]
    pub service: Option<FirmwareServiceView>,
    /// What resets or restarts this host when it hangs.
    #[serde(default)]
    pub watchdog: Option<FirmwareWatchdogView>,
    /// UEFI Secure Boot as the board's firmware reports it: `enforcing`
    /// (only boot images its db lets through boot; an install checks the
    /// new slot's image against it), `off`, `setup-mode` (no platform key:
    /// nothing checked) or `unsupported` (not a UEFI boot).
    #[serde(default)]
    pub secure_boot: Option<String>,
}

/// What resets or restarts a hung host: the board's hardware watchdog
/// timers, which systemd keeps fed (a hung kernel or init resets the
/// board), and systemd's watchdog of nasvisord (a hung daemon is
/// restarted; its VMs keep running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FirmwareWatchdog", deny_unknown_fields)]
pub struct FirmwareWatchdogView {
    /// The board's timers; empty when it has none (or no driver).
    pub hardware: Vec<HardwareWatchdogView>,
    /// The time nasvisord has to tell systemd it is alive before systemd
    /// restarts it, s; `null`: no service manager watches it.
    pub service_timeout_s: Option<u64>,
}

/// One hardware watchdog timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "HardwareWatchdog", deny_unknown_fields)]
pub struct HardwareWatchdogView {
    /// Its device (`/dev/watchdog0`).
    pub device: String,
    /// Its driver's name for it (`i6300ESB timer`).
    pub identity: Option<String>,
    /// `active` while armed (kept fed), `inactive` otherwise.
    pub state: Option<String>,
    /// How long it waits for a keep-alive before it resets the board, s.
    pub timeout_s: Option<u64>,
}

/// The service release of a host (`service` bundles: a nasvisord and
/// plugins kept on the data partition, run instead of the slot's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FirmwareService", deny_unknown_fields)]
pub struct FirmwareServiceView {
    /// The service release this nasvisord is; `null`: the slot's own.
    pub running: Option<String>,
    /// The release nasvisord runs at its next start; `null`: the slot's
    /// own.
    pub current: Option<String>,
    /// The release `current` replaced, to go back to; `null`: the slot's
    /// own.
    pub previous: Option<String>,
    /// The release on trial (not healthy yet), if any.
    pub on_trial: Option<String>,
    /// How long a new release has to become healthy before it is rolled
    /// back, s.
    pub deadline_s: u64,
}
