//! Bodies of the storage routes (pools, volumes, snapshots).

use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    /// Pool name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Absolute directory holding the pool's volumes.
    #[schemars(regex(pattern = crate::openapi::ABS_PATH_PATTERN))]
    pub path: String,
    /// Every host reaches `path` (e.g. an NFS mount): VMs on it migrate
    /// without copying their disks. Otherwise the pool belongs to the host
    /// that serves the request.
    #[serde(default)]
    pub shared: bool,
}

/// Volume format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    /// qcow2 (default).
    Qcow2,
    /// Raw.
    Raw,
}

/// Body of `POST /api/v1/pools/{pool}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    /// Volume name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Size, MiB.
    #[schemars(range(min = 1, max = crate::MAX_VOLUME_MIB))]
    pub size_mib: u64,
    /// Format, qcow2 when absent.
    #[serde(default)]
    pub format: Option<VolumeFormat>,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeResize {
    /// New size, MiB.
    #[schemars(range(min = 1, max = crate::MAX_VOLUME_MIB))]
    pub size_mib: u64,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Snapshot name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeClone {
    /// New volume name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Linked clone (backed by the source) instead of a full copy.
    #[serde(default)]
    pub linked: bool,
}

/// Body of `POST /api/v1/pools/{pool}/imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeImport {
    /// New volume name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Absolute path of the file on this host.
    #[schemars(regex(pattern = crate::openapi::ABS_PATH_PATTERN))]
    pub path: String,
}

impl Validate for PoolCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        check_abs_path("path", &self.path)
    }
}

impl Validate for VolumeCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        check_size("size_mib", self.size_mib)
    }
}

impl Validate for VolumeResize {
    fn validate(&self) -> Result<(), ApiError> {
        check_size("size_mib", self.size_mib)
    }
}

impl Validate for SnapshotCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)
    }
}

impl Validate for VolumeClone {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)
    }
}

impl Validate for VolumeImport {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        check_abs_path("path", &self.path)
    }
}
