//! The records of desired and observed state, as committed to the cluster
//! store (one kind per object type, keyed by id or name), and their JSON form
//! in API answers (the schemas of `openapi.json`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Store kinds.
pub mod kind {
    pub const HOST: &str = "host";
    pub const VM: &str = "vm";
    pub const POOL: &str = "pool";
    pub const VSWITCH: &str = "vswitch";
    pub const IMAGE: &str = "image";
    pub const JOB: &str = "job";
    pub const EVENT: &str = "event";
    pub const PLUGIN: &str = "plugin";
    pub const PLUGIN_CHUNK: &str = "plugin-chunk";
    /// A host's state of one world's plugin, key `<world>/<host>`.
    pub const PLUGIN_STATE: &str = "plugin-state";
    /// A quarantine lift every host applies, key the world.
    pub const PLUGIN_RESET: &str = "plugin-reset";
}

impl VmRecord {
    /// A VM not created yet, as placement sees it.
    pub fn probe(vcpus: u32, memory_mib: u64, name: &str) -> VmRecord {
        VmRecord {
            id: String::new(),
            name: name.to_string(),
            description: None,
            vcpus,
            memory_mib,
            firmware: Firmware::Bios,
            autostart: false,
            ha: false,
            image: None,
            disks: Vec::new(),
            nics: Vec::new(),
            host: None,
            desired: Desired::Stopped,
            state: VmStatus::Stopped,
            state_reason: None,
            install_job: None,
            created_at: String::new(),
        }
    }
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// What a VM's disk is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskRole {
    #[default]
    Disk,
    /// The NoCloud seed volume of an install.
    Seed,
    /// An installation medium (an ISO of the image library).
    Cdrom,
}

/// One disk of a VM: a volume of a pool (for a cdrom: an image of the library,
/// `pool` = `images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub pool: String,
    pub volume: String,
    pub size_mib: u64,
    #[serde(default)]
    pub role: DiskRole,
    /// The VM created this volume (deleted with the VM when asked to).
    #[serde(default)]
    pub owned: bool,
}

/// One NIC of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRecord {
    pub vswitch: String,
    pub mac: String,
    /// `virtio` or `e1000`.
    pub model: String,
}

/// A VM's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    #[default]
    Stopped,
    Starting,
    Running,
    Paused,
    Stopping,
    Migrating,
    Crashed,
    GuestPanicked,
    Installing,
    InstallFailed,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Stopped => "stopped",
            VmStatus::Starting => "starting",
            VmStatus::Running => "running",
            VmStatus::Paused => "paused",
            VmStatus::Stopping => "stopping",
            VmStatus::Migrating => "migrating",
            VmStatus::Crashed => "crashed",
            VmStatus::GuestPanicked => "guest_panicked",
            VmStatus::Installing => "installing",
            VmStatus::InstallFailed => "install_failed",
        }
    }
}

/// What the administrator wants a VM to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    #[default]
    Stopped,
    Running,
}

/// A VM: its definition (desired state) and its last observed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// UUID; also names the VM's runtime files.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default)]
    pub ha: bool,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub disks: Vec<DiskRecord>,
    #[serde(default)]
    pub nics: Vec<NicRecord>,
    /// The host the VM runs on; chosen at first power-on.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub desired: Desired,
    #[serde(default)]
    pub state: VmStatus,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub install_job: Option<String>,
    pub created_at: String,
}

/// Runtime facts that are not committed (they change with every start).
#[derive(Debug, Clone, Default)]
pub struct VmRuntime {
    pub pid: Option<i32>,
    /// What its QEMU reports (`running`, `paused`, ...), on its host.
    pub qemu_state: Option<&'static str>,
    pub accel: Option<&'static str>,
    pub taps: Vec<Option<String>>,
}

impl VmRecord {
    /// The API form (`Vm` schema).
    pub fn to_json(&self, rt: &VmRuntime) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state.as_str(),
            "state_reason": self.state_reason,
            "host": self.host,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "description": self.description,
            "autostart": self.autostart,
            "ha": self.ha,
            "firmware": self.firmware.as_str(),
            "image": self.image,
            "pid": rt.pid,
            "qemu_state": rt.qemu_state,
            "accel": rt.accel,
            "install_job": self.install_job,
            "created_at": self.created_at,
            "disks": self.disks.iter().map(|d| json!({
                "pool": d.pool,
                "volume": d.volume,
                "size_mib": d.size_mib.max(1),
                "role": match d.role { DiskRole::Disk => "disk", DiskRole::Seed => "seed", DiskRole::Cdrom => "cdrom" },
            })).collect::<Vec<_>>(),
            "nics": self.nics.iter().enumerate().map(|(i, n)| json!({
                "vswitch": n.vswitch,
                "mac": n.mac,
                "model": n.model,
                "tap": rt.taps.get(i).cloned().flatten(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Whether the VM holds resources on its host.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            VmStatus::Starting
                | VmStatus::Running
                | VmStatus::Paused
                | VmStatus::Stopping
                | VmStatus::Migrating
                | VmStatus::Installing
        )
    }
}

/// A storage pool: a directory of one host (`host`), or one every host
/// reaches at the same path (`host` = `None`: shared, e.g. an NFS mount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub host: Option<String>,
}

impl PoolRecord {
    /// The store key: `<host>/<name>` for a host's pool, `<name>` for a
    /// shared one (pool names are object names, without `/`).
    pub fn key(&self) -> String {
        pool_key(self.host.as_deref(), &self.name)
    }

    pub fn shared(&self) -> bool {
        self.host.is_none()
    }
}

/// The store key of pool `name` of `host` (`None`: shared).
pub fn pool_key(host: Option<&str>, name: &str) -> String {
    match host {
        Some(h) => format!("{h}/{name}"),
        None => name.to_string(),
    }
}

/// A virtual switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VswitchRecord {
    pub name: String,
    #[serde(default)]
    pub uplink: Option<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
}

/// State of an image of the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    Importing,
    Ready,
    Failed,
}

/// An image of the library (its file lives in the host's image library).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub state: ImageState,
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    pub os_family: String,
    #[serde(default)]
    pub os_variant: String,
    pub cloud_init: bool,
    pub firmware: Firmware,
    #[serde(default)]
    pub ready_marker: Option<String>,
    /// Format of the source (qcow2, raw, vmdk, vdi, iso); known once imported.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub virtual_size_bytes: u64,
    /// Hosts that hold a copy.
    #[serde(default)]
    pub hosts: Vec<String>,
}

const MIB: u64 = 1024 * 1024;

impl ImageRecord {
    /// The API form (`Image` schema).
    pub fn to_json(&self) -> Value {
        let format = self.format.clone().unwrap_or_else(|| "qcow2".into());
        json!({
            "name": self.name,
            "size_mib": self.size_bytes.div_ceil(MIB),
            "state": match self.state { ImageState::Importing => "importing", ImageState::Ready => "ready", ImageState::Failed => "failed" },
            "format": format,
            "virtual_size_mib": self.virtual_size_bytes.div_ceil(MIB),
            "os_family": self.os_family,
            "os_variant": self.os_variant,
            "cloud_init": self.cloud_init,
            "firmware": self.firmware.as_str(),
            "ready_marker": self.ready_marker,
            "iso": format == "iso",
            "job": self.job,
            "error": self.error,
            "hosts": self.hosts,
        })
    }
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A long operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `install`, `image-import`, `image-upload`, `volume-import`.
    pub kind: String,
    pub state: JobState,
    pub progress: f64,
    #[serde(default)]
    pub error: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The host running the job.
    #[serde(default)]
    pub host: Option<String>,
    /// What a restart needs to resume or clean up the job.
    #[serde(default)]
    pub params: Value,
}

impl JobRecord {
    /// The API form (`Job` schema).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "state": match self.state {
                JobState::Queued => "queued",
                JobState::Running => "running",
                JobState::Succeeded => "succeeded",
                JobState::Failed => "failed",
                JobState::Cancelled => "cancelled",
            },
            "progress": self.progress.clamp(0.0, 1.0),
            "error": self.error,
            "created_at": self.created_at,
            "target": self.target,
            "message": self.message,
            "finished_at": self.finished_at,
        })
    }
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Something that happened, kept for the administrator (and the HA layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time: String,
    /// e.g. `vm-crashed`, `vm-guest-panicked`, `install-failed`.
    pub kind: String,
    pub severity: Severity,
    #[serde(default)]
    pub target: Option<String>,
    pub message: String,
    /// The host that recorded it (absent in events of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub version: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub accel_reason: String,
    pub qemu_version: String,
    /// Its raft node id (1 for a host that never joined a cluster).
    #[serde(default)]
    pub node_id: u64,
    /// Its cluster endpoint (`ip:port`).
    #[serde(default)]
    pub address: String,
    /// Answering the leader's heartbeats (set by the leader).
    #[serde(default = "yes")]
    pub online: bool,
    /// No new VMs are placed on it (evacuate moves its VMs away).
    #[serde(default)]
    pub cordoned: bool,
    /// Its pools' capacity and free space, GiB (each filesystem once), as it
    /// last reported them.
    #[serde(default)]
    pub storage_gib: u64,
    #[serde(default)]
    pub free_storage_gib: u64,
    /// When the leader last heard from it (RFC 3339).
    #[serde(default)]
    pub last_seen: Option<String>,
}

fn yes() -> bool {
    true
}

/// Now, RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_render() {
        let vm = VmRecord {
            id: "7d1c".into(),
            name: "web".into(),
            description: None,
            vcpus: 2,
            memory_mib: 512,
            firmware: Firmware::Uefi,
            autostart: true,
            ha: false,
            image: Some("deb".into()),
            disks: vec![DiskRecord {
                pool: "default".into(),
                volume: "web-root".into(),
                size_mib: 1024,
                role: DiskRole::Disk,
                owned: true,
            }],
            nics: vec![NicRecord {
                vswitch: "lan".into(),
                mac: "52:54:00:00:00:01".into(),
                model: "virtio".into(),
            }],
            host: None,
            desired: Desired::Stopped,
            state: VmStatus::GuestPanicked,
            state_reason: Some("panic".into()),
            install_job: None,
            created_at: now_rfc3339(),
        };
        let v = serde_json::to_value(&vm).unwrap();
        assert_eq!(serde_json::from_value::<VmRecord>(v).unwrap(), vm);
        let j = vm.to_json(&VmRuntime {
            pid: Some(4),
            qemu_state: Some("running"),
            accel: Some("tcg"),
            taps: vec![Some("nvt0".into())],
        });
        assert_eq!(j["state"], "guest_panicked");
        assert_eq!(j["firmware"], "uefi");
        assert_eq!(j["nics"][0]["tap"], "nvt0");
        assert_eq!(j["disks"][0]["role"], "disk");
        assert!(now_rfc3339().ends_with('Z'), "{}", now_rfc3339());
    }
}
