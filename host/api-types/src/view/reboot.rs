//! The answer of a host reboot (`HostReboot` schema, `POST
//! /api/v1/host/firmware/reboot`; docs/firmware.md, "Reboot").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reboot of this host, accepted: the reboot command runs once the
/// answer has been sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "HostReboot", deny_unknown_fields)]
pub struct HostRebootView {
    /// The host that reboots.
    pub host: String,
    /// The command that reboots it (`[firmware] reboot-command`).
    pub command: Vec<String>,
    /// How long after the answer the command runs, ms.
    pub delay_ms: u64,
    /// What happens next, in words.
    pub message: String,
    /// The VMs shut down before the reboot (a forced reboot), sorted; they
    /// start again when the daemon is back.
    #[serde(default)]
    pub stopping: Vec<String>,
    /// The job that shuts them down and then runs the command (a forced
    /// reboot with VMs running); `None` when the command runs at once.
    #[serde(default)]
    pub job: Option<String>,
}
