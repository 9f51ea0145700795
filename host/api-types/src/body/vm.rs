//! Bodies of the VM routes (`/api/v1/vms...`) and their validation.

use crate::body::InstallSpec;
use crate::error::ApiError;
use crate::validate::*;
use crate::MAX_CONSOLE_INPUT;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Smallest VM memory, MiB.
pub const MIN_MEMORY_MIB: u64 = 64;

/// Largest VM memory, MiB (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;

/// Largest vCPU count.
pub const MAX_VCPUS: u32 = 256;

/// Largest volume size, MiB (1 PiB).
pub const MAX_VOLUME_MIB: u64 = 1 << 30;

/// Graceful-shutdown timeout when none is given, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u32 = 120;

/// Longest graceful-shutdown timeout, seconds (1 hour).
pub const MAX_SHUTDOWN_TIMEOUT_S: u32 = 3600;

/// Longest downtime a live migration may allow, ms.
pub const MAX_MIGRATION_DOWNTIME_MS: u32 = 10_000;

/// Body of `POST /api/v1/vms/{id}/recover`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRecover {
    /// The host to recover it on; the scheduler picks one when absent.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub host: Option<String>,
    /// The administrator confirms that the lost host is down (powered off
    /// or fenced), so the VM may start elsewhere before the lost host's
    /// self-fencing deadline has passed.
    #[serde(default)]
    pub confirm_host_down: bool,
}

impl Validate for VmRecover {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(h) = &self.host {
            check_name("host", h)?;
        }
        Ok(())
    }
}

/// Body of `POST /api/v1/vms/{id}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmMigrate {
    /// The target host's id.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub host: String,
    /// Longest pause of the guest at the switch, ms, 1..=10000 (300 when
    /// absent). The move aims at 25 ms first and widens towards this only
    /// when the guest dirties memory too fast to converge.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_MIGRATION_DOWNTIME_MS))]
    pub max_downtime_ms: Option<u32>,
}

impl Validate for VmMigrate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("host", &self.host)?;
        match self.max_downtime_ms {
            Some(d) if !(1..=MAX_MIGRATION_DOWNTIME_MS).contains(&d) => Err(ApiError::field(
                "max_downtime_ms",
                format!("must be 1 to {MAX_MIGRATION_DOWNTIME_MS}, got {d}"),
            )),
            _ => Ok(()),
        }
    }
}

/// A power operation (body of `POST /api/v1/vms/{id}/power`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PowerOp {
    /// Power on; `host` picks the host on first power-on (else the scheduler does).
    Start {
        /// Host to start on.
        #[serde(default)]
        host: Option<String>,
    },
    /// ACPI shutdown, forced off after `timeout_s`.
    Shutdown {
        /// Seconds to wait before forcing off.
        #[serde(default = "default_shutdown_timeout")]
        timeout_s: u32,
    },
    /// Pull the plug.
    ForceOff {},
    /// ACPI reboot.
    Reboot {},
    /// Pause the vCPUs.
    Pause {},
    /// Resume paused vCPUs.
    Resume {},
}

fn default_shutdown_timeout() -> u32 {
    DEFAULT_SHUTDOWN_TIMEOUT_S
}

/// Body of `POST /api/v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    /// VM name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Number of vCPUs, 1..=256.
    #[schemars(range(min = 1, max = MAX_VCPUS))]
    pub vcpus: u32,
    /// Memory in MiB, 64..=4 TiB.
    #[schemars(range(min = MIN_MEMORY_MIB, max = MAX_MEMORY_MIB))]
    pub memory_mib: u64,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Disks, in boot order.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// System image to install from. Without `install`, the install uses
    /// the defaults (`InstallSpec::default()`).
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub image: Option<String>,
    /// Start with the host.
    #[serde(default)]
    pub autostart: bool,
    /// Protect with HA (needs 3 hosts; checked by the core).
    #[serde(default)]
    pub ha: bool,
    /// Firmware; BIOS when absent.
    #[serde(default)]
    pub firmware: FirmwareKind,
    /// How to install the guest from `image`; only allowed with `image`.
    #[serde(default)]
    pub install: Option<InstallSpec>,
    /// The host it lives on; the scheduler chooses when absent.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub host: Option<String>,
}

/// A VM's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareKind {
    /// SeaBIOS (default).
    #[default]
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

impl FirmwareKind {
    /// `bios` or `uefi`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareKind::Bios => "bios",
            FirmwareKind::Uefi => "uefi",
        }
    }
}

impl std::str::FromStr for FirmwareKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(FirmwareKind::Bios),
            "uefi" => Ok(FirmwareKind::Uefi),
            _ => Err("must be bios or uefi".into()),
        }
    }
}

/// A VM disk: a new volume in `pool`, or an existing `volume` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Pool name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub pool: String,
    /// Size of a new volume, MiB.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_VOLUME_MIB))]
    pub size_mib: Option<u64>,
    /// Existing volume to attach.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub volume: Option<String>,
}

/// Virtual NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NicModel {
    /// virtio-net.
    Virtio,
    /// Intel e1000.
    E1000,
}

/// A VM network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Virtual switch name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub vswitch: String,
    /// MAC address `xx:xx:xx:xx:xx:xx`, unicast; generated when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// Device model.
    #[serde(default)]
    pub model: Option<NicModel>,
}

/// Body of `PATCH /api/v1/vms/{id}`; at least one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmUpdate {
    /// New name.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: Option<String>,
    /// New vCPU count.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_VCPUS))]
    pub vcpus: Option<u32>,
    /// New memory, MiB.
    #[serde(default)]
    #[schemars(range(min = MIN_MEMORY_MIB, max = MAX_MEMORY_MIB))]
    pub memory_mib: Option<u64>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// Start with the host.
    #[serde(default)]
    pub autostart: Option<bool>,
    /// Protect by HA (needs at least 3 online hosts), or stop protecting.
    #[serde(default)]
    pub ha: Option<bool>,
}

/// Body of `POST /api/v1/vms/{id}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInputBody {
    /// Text to type, 1 to 4096 bytes.
    #[schemars(length(min = 1, max = MAX_CONSOLE_INPUT))]
    pub data: String,
}

impl Validate for VmCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if let Some(h) = &self.host {
            check_name("host", h)?;
        }
        check_vcpus("vcpus", self.vcpus)?;
        check_memory("memory_mib", self.memory_mib)?;
        if let Some(d) = &self.description {
            check_description("description", d)?;
        }
        if self.disks.len() > 16 {
            return Err(ApiError::field("disks", "at most 16 disks"));
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_name(&format!("disks[{i}].pool"), &d.pool)?;
            match (&d.size_mib, &d.volume) {
                (Some(s), None) => check_size(&format!("disks[{i}].size_mib"), *s)?,
                (None, Some(v)) => check_name(&format!("disks[{i}].volume"), v)?,
                _ => {
                    return Err(ApiError::field(
                        format!("disks[{i}]"),
                        "give exactly one of size_mib (new volume) and volume (existing)",
                    ))
                }
            }
        }
        if self.nics.len() > 8 {
            return Err(ApiError::field("nics", "at most 8 nics"));
        }
        for (i, n) in self.nics.iter().enumerate() {
            check_name(&format!("nics[{i}].vswitch"), &n.vswitch)?;
            if let Some(m) = &n.mac {
                check_mac(&format!("nics[{i}].mac"), m)?;
            }
        }
        if let Some(img) = &self.image {
            check_name("image", img)?;
        }
        if let Some(install) = &self.install {
            if self.image.is_none() {
                return Err(ApiError::field(
                    "install",
                    "only allowed together with image (the system image to install from)",
                ));
            }
            install.validate_for(self.nics.len())?;
        }
        Ok(())
    }
}

impl Validate for ConsoleInputBody {
    fn validate(&self) -> Result<(), ApiError> {
        if self.data.is_empty() || self.data.len() > MAX_CONSOLE_INPUT {
            return Err(ApiError::field(
                "data",
                format!(
                    "must be 1 to {MAX_CONSOLE_INPUT} bytes, got {}",
                    self.data.len()
                ),
            ));
        }
        Ok(())
    }
}

impl Validate for VmUpdate {
    fn validate(&self) -> Result<(), ApiError> {
        if *self == VmUpdate::default() {
            return Err(ApiError::field("", "give at least one field to change"));
        }
        if let Some(n) = &self.name {
            check_name("name", n)?;
        }
        if let Some(v) = self.vcpus {
            check_vcpus("vcpus", v)?;
        }
        if let Some(m) = self.memory_mib {
            check_memory("memory_mib", m)?;
        }
        if let Some(d) = &self.description {
            check_description("description", d)?;
        }
        Ok(())
    }
}

impl Validate for PowerOp {
    fn validate(&self) -> Result<(), ApiError> {
        match self {
            PowerOp::Start { host: Some(h) } => check_name("host", h),
            PowerOp::Shutdown { timeout_s } if *timeout_s > MAX_SHUTDOWN_TIMEOUT_S => {
                Err(ApiError::field(
                    "timeout_s",
                    format!("must be at most {MAX_SHUTDOWN_TIMEOUT_S}"),
                ))
            }
            _ => Ok(()),
        }
    }
}
