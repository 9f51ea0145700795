//! The storage answers (`Pool`, `Volume`, `Snapshot` schemas).

use crate::body::VolumeFormat;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A storage pool (`GET /api/v1/pools`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Pool", deny_unknown_fields)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Its directory.
    pub path: String,
    /// Capacity of its filesystem, MiB (0 when not reachable from the host
    /// answering).
    pub capacity_mib: u64,
    /// Free space, MiB.
    pub free_mib: u64,
    /// The host whose directory it is; null: shared by every host.
    pub host: Option<String>,
    /// Every host reaches it at the same path.
    pub shared: bool,
}

/// A volume of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Volume", deny_unknown_fields)]
pub struct VolumeView {
    /// Volume name.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// Virtual size, MiB.
    #[schemars(range(min = 1))]
    pub size_mib: u64,
    /// Format.
    pub format: VolumeFormat,
    /// The VM using it, by name.
    pub used_by: Option<String>,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Snapshot", deny_unknown_fields)]
pub struct SnapshotView {
    /// Snapshot name.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// Volume name.
    pub volume: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
}
