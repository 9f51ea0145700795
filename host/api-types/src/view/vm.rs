//! The VM answer (`Vm` schema).

use crate::body::FirmwareKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A VM's state as the API reports it (also the state the core records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Not running.
    #[default]
    Stopped,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// vCPUs paused.
    Paused,
    /// Shutting down.
    Stopping,
    /// Moving to another host.
    Migrating,
    /// Its QEMU exited unasked.
    Crashed,
    /// The guest panicked.
    GuestPanicked,
    /// Installing from an image.
    Installing,
    /// The install failed (see `state_reason`).
    InstallFailed,
    /// Its host is lost (offline or removed from the cluster): whether it
    /// still runs is not known. `state_reason` names the host and the last
    /// state recorded. Never recorded; shown in place of the record's state.
    Unknown,
}

impl VmState {
    /// The API name, e.g. `guest_panicked`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Migrating => "migrating",
            VmState::Crashed => "crashed",
            VmState::GuestPanicked => "guest_panicked",
            VmState::Installing => "installing",
            VmState::InstallFailed => "install_failed",
            VmState::Unknown => "unknown",
        }
    }
}

/// What a VM's QEMU reports on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QemuState {
    /// vCPUs running.
    Running,
    /// vCPUs stopped.
    Paused,
    /// ACPI power button pressed.
    ShuttingDown,
    /// The guest powered off.
    Shutdown,
    /// The guest panicked.
    Panicked,
    /// QEMU exited as asked.
    Stopped,
    /// QEMU exited unasked.
    Crashed,
}

/// An accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccelKind {
    /// KVM.
    Kvm,
    /// TCG (emulation).
    Tcg,
}

/// What a VM's disk is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskRole {
    /// A disk.
    #[default]
    Disk,
    /// The NoCloud seed volume of an install.
    Seed,
    /// An installation medium (an ISO of the image library).
    Cdrom,
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmDisk", deny_unknown_fields)]
pub struct VmDiskView {
    /// Pool name (`images` for an installation medium).
    pub pool: String,
    /// Volume name.
    pub volume: String,
    /// Size, MiB.
    #[schemars(range(min = 1))]
    pub size_mib: u64,
    /// What the disk is for.
    pub role: DiskRole,
}

/// One NIC of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmNic", deny_unknown_fields)]
pub struct VmNicView {
    /// Virtual switch name.
    pub vswitch: String,
    /// MAC address.
    pub mac: String,
    /// Device model, `virtio` or `e1000`.
    pub model: String,
    /// The tap device on its host while it runs.
    pub tap: Option<String>,
}

/// Whether an HA VM is protected now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HaState {
    /// A passive host holds its reservation and can take it over.
    Protected,
    /// It could not be taken over now (`reason`).
    Unprotected,
}

/// The HA side of an HA VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmHa", deny_unknown_fields)]
pub struct VmHaView {
    /// The host where it runs (its `host`).
    pub active: Option<String>,
    /// The host whose vCPUs and memory are reserved for it.
    pub passive: Option<String>,
    /// Protected or not.
    pub state: HaState,
    /// Why it is unprotected; null when protected.
    pub reason: Option<String>,
    /// The last switchover or failover: what, from where to where, and
    /// when; null when none happened.
    pub last_move: Option<String>,
    /// The synchronous replica of its disks on a host's own pool, on the
    /// passive host; null when it has none (no such disk, or not started
    /// yet).
    #[serde(default)]
    pub replica: Option<ReplicaView>,
}

/// Where a replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    /// Being brought in step (`progress`): a failover cannot use it yet.
    Syncing,
    /// Every write the guest saw complete is on it too: a failover starts
    /// the VM from it.
    InSync,
    /// It lacks writes (the passive host or the link was lost, or a sync
    /// failed): a failover cannot use it until it is in step again.
    Outdated,
}

/// An HA VM's synchronous disk replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmReplica", deny_unknown_fields)]
pub struct ReplicaView {
    /// The host that holds it (the VM's passive host).
    pub host: String,
    /// Where it stands.
    pub state: ReplicaState,
    /// Percent copied while `syncing`.
    pub progress: Option<u8>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it is `outdated`; null otherwise.
    pub reason: Option<String>,
    /// How it was last brought in step; null before the first time.
    pub last_sync: Option<ReplicaSyncView>,
}

/// How a replica was brought in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaSyncKind {
    /// The whole disk was copied (a new replica, or one whose server was
    /// restarted meanwhile).
    Full,
    /// Only the writes it missed while it was away were copied (from the
    /// active host's record of them).
    Resumed,
}

/// The last time a replica was brought in step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmReplicaSync", deny_unknown_fields)]
pub struct ReplicaSyncView {
    pub kind: ReplicaSyncKind,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// A VM (`GET /api/v1/vms/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Vm", deny_unknown_fields)]
pub struct VmView {
    /// UUID.
    pub id: String,
    /// Name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub name: String,
    /// State.
    pub state: VmState,
    /// Why the VM is in this state (crash, panic, install failure), null
    /// when nothing to say.
    pub state_reason: Option<String>,
    /// The host it lives on; null until its first placement.
    pub host: Option<String>,
    /// vCPUs.
    #[schemars(range(min = 1, max = 256))]
    pub vcpus: u32,
    /// Memory, MiB.
    #[schemars(range(min = 64, max = 4194304))]
    pub memory_mib: u64,
    /// Free text.
    pub description: Option<String>,
    /// Starts with its host.
    pub autostart: bool,
    /// Protected by HA.
    pub ha: bool,
    /// Its HA status (active, passive, state); null when `ha` is off.
    #[serde(default)]
    pub ha_status: Option<VmHaView>,
    /// Firmware.
    pub firmware: FirmwareKind,
    /// The system image it was installed from.
    pub image: Option<String>,
    /// QEMU process id on its host, null when not running.
    #[schemars(range(min = 1))]
    pub pid: Option<i32>,
    /// What the VM's QEMU reports, when the answering host is the VM's host
    /// and it runs; null otherwise.
    pub qemu_state: Option<QemuState>,
    /// Accelerator of the running QEMU, null when not running.
    pub accel: Option<AccelKind>,
    /// Id of the install job, null when not installed from an image.
    pub install_job: Option<String>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Disks, in boot order.
    pub disks: Vec<VmDiskView>,
    /// Network interfaces.
    pub nics: Vec<VmNicView>,
}
