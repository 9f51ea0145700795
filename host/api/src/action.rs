//! The one action type of the core, and the typed request bodies the API
//! layer parses into it.
//!
//! Validation that needs no core state (name syntax, ranges, MAC syntax, ...)
//! happens here, in [`Validate`]; a request that fails it never reaches the
//! core.

use crate::error::{ApiError, CoreError};
use serde::{Deserialize, Serialize};

/// Smallest VM memory, MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Largest VM memory, MiB (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// Largest vCPU count.
pub const MAX_VCPUS: u32 = 256;
/// Largest volume size, MiB (1 PiB).
pub const MAX_VOLUME_MIB: u64 = 1 << 30;
/// Longest graceful-shutdown timeout, seconds (1 hour).
pub const MAX_SHUTDOWN_TIMEOUT_S: u32 = 3600;

/// The core: the one place that acts. The API layer only parses requests into
/// an [`Action`] and forwards it here; it never touches QEMU, storage or the
/// network itself.
#[async_trait::async_trait]
pub trait Core: Send + Sync {
    /// Carries out one action and returns its JSON result (the response schema
    /// of the action's route in `openapi.json`).
    async fn handle(&self, action: Action) -> Result<serde_json::Value, CoreError>;
}

/// Everything an administrator can ask of the core through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// This host's identity, version and resources.
    GetHost,
    /// All VMs.
    ListVms,
    /// One VM.
    GetVm {
        /// VM id.
        id: String,
    },
    /// Define a new VM (does not start it).
    CreateVm(VmCreate),
    /// Change a VM's settings.
    UpdateVm {
        /// VM id.
        id: String,
        /// The fields to change.
        update: VmUpdate,
    },
    /// Remove a VM; its disks too when `delete_disks`.
    DeleteVm {
        /// VM id.
        id: String,
        /// Also delete the VM's volumes.
        delete_disks: bool,
    },
    /// A power operation on a VM.
    VmPower {
        /// VM id.
        id: String,
        /// What to do.
        op: PowerOp,
    },
    /// All storage pools.
    ListPools,
    /// Define a storage pool.
    CreatePool(PoolCreate),
    /// The volumes of a pool.
    ListVolumes {
        /// Pool name.
        pool: String,
    },
    /// Create a volume in a pool.
    CreateVolume {
        /// Pool name.
        pool: String,
        /// The new volume.
        volume: VolumeCreate,
    },
    /// Delete a volume.
    DeleteVolume {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
    },
    /// Grow a volume.
    ResizeVolume {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
        /// New size, MiB.
        size_mib: u64,
    },
    /// Take a named snapshot of a volume.
    SnapshotVolume {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
    },
    /// All system images.
    ListImages,
    /// Import a system image (a job).
    AddImage(ImageAdd),
    /// Delete a system image.
    DeleteImage {
        /// Image name.
        name: String,
    },
    /// All virtual switches.
    ListVswitches,
    /// Create a virtual switch.
    CreateVswitch(VswitchCreate),
    /// Delete a virtual switch.
    DeleteVswitch {
        /// Switch name.
        name: String,
    },
    /// All jobs.
    ListJobs,
    /// One job.
    GetJob {
        /// Job id.
        id: String,
    },
    /// Ask a job to stop.
    CancelJob {
        /// Job id.
        id: String,
    },
    /// Installed plugins and their state.
    ListPlugins,
}

/// A power operation (body of `POST /api/v1/vms/{id}/power`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    120
}

/// Body of `POST /api/v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    /// VM name.
    pub name: String,
    /// Number of vCPUs, 1..=256.
    pub vcpus: u32,
    /// Memory in MiB, 64..=4 TiB.
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
    /// System image to install from.
    #[serde(default)]
    pub image: Option<String>,
    /// Start with the host.
    #[serde(default)]
    pub autostart: bool,
    /// Protect with HA (needs 3 hosts; checked by the core).
    #[serde(default)]
    pub ha: bool,
}

/// A VM disk: a new volume in `pool`, or an existing `volume` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Pool name.
    pub pool: String,
    /// Size of a new volume, MiB.
    #[serde(default)]
    pub size_mib: Option<u64>,
    /// Existing volume to attach.
    #[serde(default)]
    pub volume: Option<String>,
}

/// Virtual NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicModel {
    /// virtio-net.
    Virtio,
    /// Intel e1000.
    E1000,
}

/// A VM network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Virtual switch name.
    pub vswitch: String,
    /// MAC address `xx:xx:xx:xx:xx:xx`, unicast; generated when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// Device model.
    #[serde(default)]
    pub model: Option<NicModel>,
}

/// Body of `PATCH /api/v1/vms/{id}`; at least one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VmUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New vCPU count.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// New memory, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// Start with the host.
    #[serde(default)]
    pub autostart: Option<bool>,
}

/// Body of `POST /api/v1/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    /// Pool name.
    pub name: String,
    /// Absolute directory holding the pool's volumes.
    pub path: String,
}

/// Volume format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    /// qcow2 (default).
    Qcow2,
    /// Raw.
    Raw,
}

/// Body of `POST /api/v1/pools/{pool}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    /// Volume name.
    pub name: String,
    /// Size, MiB.
    pub size_mib: u64,
    /// Format, qcow2 when absent.
    #[serde(default)]
    pub format: Option<VolumeFormat>,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeResize {
    /// New size, MiB.
    pub size_mib: u64,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Snapshot name.
    pub name: String,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// A file on this host.
    Path(String),
    /// An http(s) URL.
    Url(String),
}

/// Body of `POST /api/v1/images`: `name` and exactly one of `path`, `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAddBody {
    /// Image name.
    pub name: String,
    /// Absolute path of a file on this host.
    #[serde(default)]
    pub path: Option<String>,
    /// http(s) URL.
    #[serde(default)]
    pub url: Option<String>,
}

/// A validated image import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageAdd {
    /// Image name.
    pub name: String,
    /// Source.
    pub source: ImageSource,
}

/// Body of `POST /api/v1/vswitches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VswitchCreate {
    /// Switch name.
    pub name: String,
    /// Host interface to bridge to, none for an internal switch.
    #[serde(default)]
    pub uplink: Option<String>,
    /// VLAN id, 1..=4094.
    #[serde(default)]
    pub vlan: Option<u16>,
}

/// Checks of a request body that need no core state.
pub trait Validate {
    /// `Err` names the first bad field.
    fn validate(&self) -> Result<(), ApiError>;
}

/// Checks an object name (also used for ids in paths): 1-64 of
/// `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::field(field, "must be 1 to 64 characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(ApiError::field(
            field,
            "must start with a letter or a digit",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

fn check_vcpus(field: &str, v: u32) -> Result<(), ApiError> {
    if !(1..=MAX_VCPUS).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_VCPUS}, got {v}"),
        ));
    }
    Ok(())
}

fn check_memory(field: &str, v: u64) -> Result<(), ApiError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB, got {v}"),
        ));
    }
    Ok(())
}

fn check_size(field: &str, v: u64) -> Result<(), ApiError> {
    if !(1..=MAX_VOLUME_MIB).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_VOLUME_MIB} MiB, got {v}"),
        ));
    }
    Ok(())
}

fn check_description(field: &str, d: &str) -> Result<(), ApiError> {
    if d.len() > 1024 {
        return Err(ApiError::field(field, "must be at most 1024 bytes"));
    }
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a MAC address: six colon-separated hex octets, unicast, not all zero.
pub fn check_mac(field: &str, mac: &str) -> Result<(), ApiError> {
    let octets: Vec<&str> = mac.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::field(
            field,
            "must be six hex octets like 52:54:00:12:34:56",
        ));
    }
    let bytes: Vec<u8> = octets
        .iter()
        .map(|o| u8::from_str_radix(o, 16).unwrap_or(0))
        .collect();
    if bytes[0] & 1 == 1 {
        return Err(ApiError::field(
            field,
            "must be a unicast address (first octet even)",
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(ApiError::field(field, "must not be all zero"));
    }
    Ok(())
}

/// Checks an absolute, normalized path (no `..`, no NUL).
fn check_abs_path(field: &str, p: &str) -> Result<(), ApiError> {
    if !p.starts_with('/') {
        return Err(ApiError::field(field, "must be an absolute path"));
    }
    if p.len() > 4096 || p.contains('\0') {
        return Err(ApiError::field(
            field,
            "must be at most 4096 bytes without NUL",
        ));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(ApiError::field(field, "must not contain '..'"));
    }
    Ok(())
}

impl Validate for VmCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
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

impl Validate for VswitchCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if let Some(u) = &self.uplink {
            // Linux interface names: at most 15 bytes.
            check_name("uplink", u)?;
            if u.len() > 15 {
                return Err(ApiError::field(
                    "uplink",
                    "interface names are at most 15 bytes",
                ));
            }
        }
        if let Some(v) = self.vlan {
            if !(1..=4094).contains(&v) {
                return Err(ApiError::field(
                    "vlan",
                    format!("must be 1 to 4094, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

impl ImageAddBody {
    /// Validates and turns the body into an [`ImageAdd`].
    pub fn into_add(self) -> Result<ImageAdd, ApiError> {
        check_name("name", &self.name)?;
        let source = match (self.path, self.url) {
            (Some(p), None) => {
                check_abs_path("path", &p)?;
                ImageSource::Path(p)
            }
            (None, Some(u)) => {
                let lower = u.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err(ApiError::field("url", "must be an http:// or https:// URL"));
                }
                if u.len() > 4096 || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ApiError::field(
                        "url",
                        "must be at most 4096 bytes without spaces",
                    ));
                }
                ImageSource::Url(u)
            }
            _ => return Err(ApiError::field("path", "give exactly one of path and url")),
        };
        Ok(ImageAdd {
            name: self.name,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "vm-1", "A.b_c", "0", &"x".repeat(64)] {
            assert!(check_name("n", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".a",
            "-a",
            "a b",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            let e = check_name("n", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("n"), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert!(check_mac("m", "52:54:00:12:34:56").is_ok());
        for bad in [
            "",
            "52:54:00:12:34",
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "zz:54:00:12:34:56",
        ] {
            assert!(check_mac("m", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn power_ops_parse() {
        let p: PowerOp = serde_json::from_str(r#"{"op":"start","host":"h1"}"#).unwrap();
        assert_eq!(
            p,
            PowerOp::Start {
                host: Some("h1".into())
            }
        );
        let p: PowerOp = serde_json::from_str(r#"{"op":"shutdown"}"#).unwrap();
        assert_eq!(p, PowerOp::Shutdown { timeout_s: 120 });
        let p: PowerOp = serde_json::from_str(r#"{"op":"force_off"}"#).unwrap();
        assert_eq!(p, PowerOp::ForceOff {});
        assert!(serde_json::from_str::<PowerOp>(r#"{"op":"force_off","x":1}"#).is_err());
        assert!(serde_json::from_str::<PowerOp>(r#"{"op":"start","hots":"h"}"#).is_err());
        assert!(serde_json::from_str::<PowerOp>(r#"{"op":"explode"}"#).is_err());
    }

    #[test]
    fn vm_create_ranges() {
        let mut v = VmCreate {
            name: "vm".into(),
            vcpus: 1,
            memory_mib: 64,
            description: None,
            disks: vec![],
            nics: vec![],
            image: None,
            autostart: false,
            ha: false,
        };
        assert!(v.validate().is_ok());
        v.vcpus = 0;
        assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("vcpus"));
        v.vcpus = 257;
        assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("vcpus"));
        v.vcpus = 256;
        v.memory_mib = 63;
        assert_eq!(
            v.validate().unwrap_err().field.as_deref(),
            Some("memory_mib")
        );
        v.memory_mib = MAX_MEMORY_MIB + 1;
        assert_eq!(
            v.validate().unwrap_err().field.as_deref(),
            Some("memory_mib")
        );
        v.memory_mib = MAX_MEMORY_MIB;
        v.nics.push(NicSpec {
            vswitch: "sw".into(),
            mac: Some("bad".into()),
            model: None,
        });
        assert_eq!(
            v.validate().unwrap_err().field.as_deref(),
            Some("nics[0].mac")
        );
        v.nics.clear();
        v.disks.push(DiskSpec {
            pool: "p".into(),
            size_mib: None,
            volume: None,
        });
        assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("disks[0]"));
    }
}
