//! This host's site settings (`HostSettings` schema,
//! `/api/v1/host/settings`; docs/appliance.md, "Site settings").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the daemon made of a site settings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteSettingsState {
    /// The configuration names no site settings file.
    None,
    /// It names one that does not exist: the image's settings alone.
    Absent,
    /// The file's settings override the image's.
    Applied,
    /// The file could not be used and was ignored as a whole.
    Ignored,
}

/// This host's site settings: the file that overrides the settings of the
/// image (`site-config`), as it is now and as the running daemon read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "HostSettings", deny_unknown_fields)]
pub struct HostSettingsView {
    /// The host.
    pub host: String,
    /// The file; `null`: the configuration names none, and no settings
    /// can be written on this host.
    pub path: Option<String>,
    /// The file's text now; `null`: there is no file.
    pub text: Option<String>,
    /// The keys the file sets now, dotted and sorted (empty when it cannot
    /// be used).
    pub keys: Vec<String>,
    /// Why the file as it is now would be ignored at the next start
    /// (naming the file and the key); `null`: it can be used.
    pub error: Option<String>,
    /// What the running daemon made of the file when it started.
    pub running: SiteSettingsState,
    /// The keys the running daemon applied.
    pub running_keys: Vec<String>,
    /// Why the running daemon ignored the file.
    pub running_reason: Option<String>,
    /// The settings changed last kept nasvisord from serving, and were put
    /// back to the previous ones when it started (why, in words).
    #[serde(default)]
    pub rolled_back: Option<String>,
    /// The file is not what the running daemon read: it takes effect at
    /// the next start of the daemon (a restart or a reboot).
    pub restart_needed: bool,
    /// The daemon restarts in a moment to apply it (asked with
    /// `restart=true`); its VMs keep running.
    #[serde(default)]
    pub restarting: bool,
}
