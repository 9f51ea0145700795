//! The event answer (`Event` schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Severity of an event (also what the core records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information.
    Info,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
}

/// Something that happened (`GET /api/v1/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Event", deny_unknown_fields)]
pub struct EventView {
    /// Sequence number, increasing.
    #[schemars(range(min = 1))]
    pub seq: u64,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// e.g. vm-crashed, install-failed, plugin-failed, plugin-fell-back,
    /// plugin-quarantined, plugin-reset.
    pub kind: String,
    /// Severity.
    pub severity: Severity,
    /// What it is about, e.g. vm/web1.
    pub target: Option<String>,
    /// What happened.
    pub message: String,
    /// The host that recorded the event (absent in events of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}
