//! The plugin answers (`Plugin`, `PluginHostState`, `PluginReset` schemas).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A plugin world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginWorld {
    /// Where VMs run.
    Scheduler,
    /// Reactions to host and VM failures.
    HaPolicy,
    /// Storage-HA pair integration.
    Sha,
    /// How images are installed.
    OsInstaller,
}

impl PluginWorld {
    /// The API name, e.g. `ha-policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginWorld::Scheduler => "scheduler",
            PluginWorld::HaPolicy => "ha-policy",
            PluginWorld::Sha => "sha",
            PluginWorld::OsInstaller => "os-installer",
        }
    }
}

/// A world's plugin slot on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginSlotState {
    /// The plugin decides.
    Active,
    /// No plugin loaded: the built-in default decides.
    Fallback,
    /// The plugin faulted too often: the built-in default decides.
    Quarantined,
}

/// A host's state of one world's plugin, as that host recorded it (the host
/// answering: live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "PluginHostState", deny_unknown_fields)]
pub struct PluginHostStateView {
    /// Host id.
    pub host: String,
    /// The world.
    pub world: PluginWorld,
    /// name@version of the plugin loaded there; null: the built-in default
    /// decides.
    pub plugin: Option<String>,
    /// State there.
    pub state: PluginSlotState,
    /// Faults of the plugin in a row (quarantined at
    /// plugins.runtime.max-consecutive-failures).
    pub consecutive_failures: u32,
    /// Decisions the plugin answered validly since it was loaded.
    pub decisions: u64,
    /// Faults of the plugin since it was loaded (trap, deadline, memory,
    /// invalid or refused answer).
    pub failures: u64,
    /// Decisions the built-in default made instead of the plugin (faults of
    /// the plugin or of the host, quarantine).
    pub fallbacks: u64,
    /// The cause of the last fault of the plugin.
    pub last_failure: Option<String>,
    /// When the host recorded this (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
}

/// One world's plugin (`GET /api/v1/plugins`). The top-level state and
/// counts are those of the host answering; `hosts` lists every host's
/// (quarantine is per host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Plugin", deny_unknown_fields)]
pub struct PluginView {
    /// Plugin name (`builtin-<world>` for the built-in default).
    pub name: String,
    /// The world.
    pub world: PluginWorld,
    /// Version.
    pub version: String,
    /// Signer.
    pub vendor: String,
    /// On the host answering.
    pub state: PluginSlotState,
    /// Faults of the plugin in a row.
    pub consecutive_failures: u32,
    /// Decisions the plugin answered validly since it was loaded.
    pub decisions: u64,
    /// Faults of the plugin since it was loaded.
    pub failures: u64,
    /// Decisions the built-in default made instead of the plugin.
    pub fallbacks: u64,
    /// The cause of the last fault of the plugin.
    pub last_failure: Option<String>,
    /// Every host's state of this world, by host id.
    pub hosts: Vec<PluginHostStateView>,
}

/// The answer of `POST /api/v1/plugins/{world}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "PluginReset", deny_unknown_fields)]
pub struct PluginResetView {
    /// The world.
    pub world: PluginWorld,
    /// Hosts whose plugin of the world was quarantined (each lifts its
    /// quarantine and records a `plugin-reset` event); empty: nothing to
    /// reset.
    pub quarantined_on: Vec<String>,
    /// What was done, in words.
    pub message: String,
}

/// One policy decision of a host (`GET /api/v1/decisions`): who decided
/// and how it went. The inputs and answers stay in the host's journal
/// (`nasvisor plugin replay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Decision", deny_unknown_fields)]
pub struct DecisionView {
    /// When it was made (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The host that made it.
    pub host: String,
    /// The plugin world (`scheduler`, `ha-policy`, `sha`, `os-installer`).
    pub world: String,
    /// The world's function, e.g. `place`.
    pub function: String,
    /// `name@version` of the plugin asked; null when none is installed.
    pub plugin: Option<String>,
    /// `plugin` (its answer was used), `native` (no plugin), `fallback`
    /// (the plugin failed, or a fault of the host), `refused` (the
    /// validator refused its answer) or `quarantined`.
    pub outcome: String,
    /// Why the plugin's answer was not used.
    pub cause: Option<String>,
    /// How long the whole decision took, microseconds.
    pub duration_us: u64,
}
