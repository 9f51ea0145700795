//! Rust forms of the types in `wit/types.wit` and of the world-specific
//! records in `wit/worlds.wit`.
//!
//! These are the canonical types of nasvisor's policy layer: the native default
//! policies take them, the host lifts component results into them (with the
//! `wasmtime` feature), the decision journal stores them as JSON, and the
//! guest glue converts the wit-bindgen types into them. Their JSON form uses
//! the WIT names (kebab-case); variants are externally tagged
//! (`{"switchover": {...}}`) and enums are plain strings (`"healthy"`).
//! Unknown JSON fields are refused so a typo in a scenario file is an error.

#[cfg(feature = "wasmtime")]
use wasmtime::component::{ComponentType, Lift, Lower};

use serde::{Deserialize, Serialize};

/// Opaque identifier of a host.
pub type HostId = String;
/// Opaque identifier of a VM.
pub type VmId = String;

/// `types.resources`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Resources {
    pub vcpus: u32,
    #[cfg_attr(feature = "wasmtime", component(name = "memory-mib"))]
    pub memory_mib: u64,
    #[cfg_attr(feature = "wasmtime", component(name = "storage-gib"))]
    pub storage_gib: u64,
}

impl Resources {
    /// True when every component of `self` is at least that of `need`.
    pub fn covers(&self, need: &Resources) -> bool {
        self.vcpus >= need.vcpus
            && self.memory_mib >= need.memory_mib
            && self.storage_gib >= need.storage_gib
    }
}

/// `types.host-health`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum HostHealth {
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "healthy"))]
    Healthy,
    #[cfg_attr(feature = "wasmtime", component(name = "degraded"))]
    Degraded,
    #[cfg_attr(feature = "wasmtime", component(name = "unreachable"))]
    Unreachable,
    #[cfg_attr(feature = "wasmtime", component(name = "fenced"))]
    Fenced,
    #[cfg_attr(feature = "wasmtime", component(name = "maintenance"))]
    Maintenance,
}

impl HostHealth {
    /// The WIT name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            HostHealth::Healthy => "healthy",
            HostHealth::Degraded => "degraded",
            HostHealth::Unreachable => "unreachable",
            HostHealth::Fenced => "fenced",
            HostHealth::Maintenance => "maintenance",
        }
    }
}

/// `types.sha-role`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum ShaRole {
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "none"))]
    None,
    #[cfg_attr(feature = "wasmtime", component(name = "primary"))]
    Primary,
    #[cfg_attr(feature = "wasmtime", component(name = "secondary"))]
    Secondary,
}

/// `types.label`
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// `types.host-info`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct HostInfo {
    pub id: HostId,
    pub name: String,
    pub capacity: Resources,
    pub free: Resources,
    pub health: HostHealth,
    #[cfg_attr(feature = "wasmtime", component(name = "health-reasons"))]
    pub health_reasons: Vec<String>,
    pub labels: Vec<Label>,
    #[cfg_attr(feature = "wasmtime", component(name = "sha-role"))]
    pub sha_role: ShaRole,
    pub cordoned: bool,
}

/// `types.vm-state`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum VmState {
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "stopped"))]
    Stopped,
    #[cfg_attr(feature = "wasmtime", component(name = "starting"))]
    Starting,
    #[cfg_attr(feature = "wasmtime", component(name = "running"))]
    Running,
    #[cfg_attr(feature = "wasmtime", component(name = "paused"))]
    Paused,
    #[cfg_attr(feature = "wasmtime", component(name = "migrating"))]
    Migrating,
    #[cfg_attr(feature = "wasmtime", component(name = "shutting-down"))]
    ShuttingDown,
    #[cfg_attr(feature = "wasmtime", component(name = "crashed"))]
    Crashed,
    #[cfg_attr(feature = "wasmtime", component(name = "panicked"))]
    Panicked,
    #[cfg_attr(feature = "wasmtime", component(name = "failed"))]
    Failed,
}

impl VmState {
    /// The VM holds resources on its host in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Paused
                | VmState::Migrating
                | VmState::ShuttingDown
        )
    }
}

/// `types.ha-assignment`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct HaAssignment {
    pub active: HostId,
    pub passive: HostId,
}

/// `types.placement-constraints`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct PlacementConstraints {
    #[cfg_attr(feature = "wasmtime", component(name = "pinned-hosts"))]
    pub pinned_hosts: Vec<HostId>,
    pub affinity: Vec<VmId>,
    #[cfg_attr(feature = "wasmtime", component(name = "anti-affinity"))]
    pub anti_affinity: Vec<VmId>,
    #[cfg_attr(feature = "wasmtime", component(name = "required-labels"))]
    pub required_labels: Vec<Label>,
}

/// `types.vm-info`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct VmInfo {
    pub id: VmId,
    pub name: String,
    pub resources: Resources,
    pub state: VmState,
    pub host: Option<HostId>,
    #[cfg_attr(feature = "wasmtime", component(name = "ha-enabled"))]
    pub ha_enabled: bool,
    pub ha: Option<HaAssignment>,
    pub constraints: PlacementConstraints,
}

/// `types.cluster-view`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct ClusterView {
    pub hosts: Vec<HostInfo>,
    pub vms: Vec<VmInfo>,
    #[cfg_attr(feature = "wasmtime", component(name = "has-quorum"))]
    pub has_quorum: bool,
    #[cfg_attr(feature = "wasmtime", component(name = "now-ms"))]
    pub now_ms: u64,
}

impl ClusterView {
    /// The host with this id.
    pub fn host(&self, id: &str) -> Option<&HostInfo> {
        self.hosts.iter().find(|h| h.id == id)
    }
    /// The VM with this id.
    pub fn vm(&self, id: &str) -> Option<&VmInfo> {
        self.vms.iter().find(|v| v.id == id)
    }
}

/// `types.host-degraded`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct HostDegraded {
    pub host: HostId,
    pub reasons: Vec<String>,
}

/// `types.heartbeat-missed`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct HeartbeatMissed {
    pub host: HostId,
    #[cfg_attr(feature = "wasmtime", component(name = "missed-ms"))]
    pub missed_ms: u64,
}

/// `types.vm-fault`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct VmFault {
    pub vm: VmId,
    pub host: HostId,
    #[cfg_attr(feature = "wasmtime", component(name = "recent-faults"))]
    pub recent_faults: u32,
    pub detail: String,
}

/// `types.quorum-change`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct QuorumChange {
    #[cfg_attr(feature = "wasmtime", component(name = "has-quorum"))]
    pub has_quorum: bool,
    #[cfg_attr(feature = "wasmtime", component(name = "online-hosts"))]
    pub online_hosts: u32,
    #[cfg_attr(feature = "wasmtime", component(name = "total-hosts"))]
    pub total_hosts: u32,
}

/// `types.replication-state`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum ReplicationState {
    #[cfg_attr(feature = "wasmtime", component(name = "in-sync"))]
    InSync,
    #[cfg_attr(feature = "wasmtime", component(name = "syncing"))]
    Syncing,
    #[cfg_attr(feature = "wasmtime", component(name = "out-of-sync"))]
    OutOfSync,
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "unknown"))]
    Unknown,
}

/// `types.sha-pair-state`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct ShaPairState {
    #[cfg_attr(feature = "wasmtime", component(name = "resource-name"))]
    pub resource_name: String,
    #[cfg_attr(feature = "wasmtime", component(name = "local-role"))]
    pub local_role: ShaRole,
    #[cfg_attr(feature = "wasmtime", component(name = "peer-role"))]
    pub peer_role: ShaRole,
    #[cfg_attr(feature = "wasmtime", component(name = "peer-connected"))]
    pub peer_connected: bool,
    pub replication: ReplicationState,
    #[cfg_attr(feature = "wasmtime", component(name = "sync-percent"))]
    pub sync_percent: u8,
    #[cfg_attr(feature = "wasmtime", component(name = "split-brain"))]
    pub split_brain: bool,
    pub switching: bool,
}

/// `types.sha-change`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct ShaChange {
    pub host: HostId,
    pub state: ShaPairState,
}

/// `types.event`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(variant)
)]
pub enum Event {
    #[cfg_attr(feature = "wasmtime", component(name = "heartbeat-missed"))]
    HeartbeatMissed(HeartbeatMissed),
    #[cfg_attr(feature = "wasmtime", component(name = "host-degraded"))]
    HostDegraded(HostDegraded),
    #[cfg_attr(feature = "wasmtime", component(name = "host-recovered"))]
    HostRecovered(HostId),
    #[cfg_attr(feature = "wasmtime", component(name = "host-fenced"))]
    HostFenced(HostId),
    #[cfg_attr(feature = "wasmtime", component(name = "vm-crashed"))]
    VmCrashed(VmFault),
    #[cfg_attr(feature = "wasmtime", component(name = "guest-panicked"))]
    GuestPanicked(VmFault),
    #[cfg_attr(feature = "wasmtime", component(name = "quorum-changed"))]
    QuorumChanged(QuorumChange),
    #[cfg_attr(feature = "wasmtime", component(name = "sha-state-changed"))]
    ShaStateChanged(ShaChange),
}

/// `types.severity`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum Severity {
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "info"))]
    Info,
    #[cfg_attr(feature = "wasmtime", component(name = "warning"))]
    Warning,
    #[cfg_attr(feature = "wasmtime", component(name = "critical"))]
    Critical,
}

/// `types.vm-move`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct VmMove {
    pub vm: VmId,
    pub target: HostId,
    pub reason: String,
}

/// `types.vm-restart`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct VmRestart {
    pub vm: VmId,
    #[cfg_attr(feature = "wasmtime", component(name = "delay-ms"))]
    pub delay_ms: u64,
    pub reason: String,
}

/// `types.fence-host`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct FenceHost {
    pub host: HostId,
    pub reason: String,
}

/// `types.hold`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Hold {
    #[cfg_attr(feature = "wasmtime", component(name = "delay-ms"))]
    pub delay_ms: u64,
    pub reason: String,
}

/// `types.notice`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Notice {
    pub severity: Severity,
    pub message: String,
}

/// `types.ha-action`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(variant)
)]
pub enum HaAction {
    #[cfg_attr(feature = "wasmtime", component(name = "switchover"))]
    Switchover(VmMove),
    #[cfg_attr(feature = "wasmtime", component(name = "failover"))]
    Failover(VmMove),
    #[cfg_attr(feature = "wasmtime", component(name = "restart"))]
    Restart(VmRestart),
    #[cfg_attr(feature = "wasmtime", component(name = "fence"))]
    Fence(FenceHost),
    #[cfg_attr(feature = "wasmtime", component(name = "hold"))]
    Hold(Hold),
    #[cfg_attr(feature = "wasmtime", component(name = "notify"))]
    Notify(Notice),
}

/// `types.error-code`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum ErrorCode {
    #[cfg_attr(feature = "wasmtime", component(name = "invalid-input"))]
    InvalidInput,
    #[cfg_attr(feature = "wasmtime", component(name = "no-solution"))]
    NoSolution,
    #[cfg_attr(feature = "wasmtime", component(name = "bad-settings"))]
    BadSettings,
    #[default]
    #[cfg_attr(feature = "wasmtime", component(name = "internal"))]
    Internal,
}

/// `types.plugin-error`: a plugin's own, deliberate refusal to decide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct PluginError {
    pub code: ErrorCode,
    pub message: String,
}

impl PluginError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = match self.code {
            ErrorCode::InvalidInput => "invalid input",
            ErrorCode::NoSolution => "no solution",
            ErrorCode::BadSettings => "bad settings",
            ErrorCode::Internal => "internal error",
        };
        write!(f, "{code}: {}", self.message)
    }
}

impl std::error::Error for PluginError {}

/// `host.log-level`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(
    feature = "wasmtime",
    derive(ComponentType, Lift, Lower),
    component(enum)
)]
#[repr(u8)]
pub enum LogLevel {
    #[cfg_attr(feature = "wasmtime", component(name = "trace"))]
    Trace,
    #[cfg_attr(feature = "wasmtime", component(name = "debug"))]
    Debug,
    #[cfg_attr(feature = "wasmtime", component(name = "info"))]
    Info,
    #[cfg_attr(feature = "wasmtime", component(name = "warn"))]
    Warn,
    #[cfg_attr(feature = "wasmtime", component(name = "error"))]
    Error,
}

/// Records of the `scheduler` world.
pub mod scheduler {
    use super::*;

    /// `scheduler.placement-request`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct PlacementRequest {
        pub vm: VmInfo,
        #[cfg_attr(feature = "wasmtime", component(name = "eligible-hosts"))]
        pub eligible_hosts: Vec<HostId>,
        #[cfg_attr(feature = "wasmtime", component(name = "eligible-passive-hosts"))]
        pub eligible_passive_hosts: Vec<HostId>,
    }

    /// `scheduler.placement`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct Placement {
        pub host: HostId,
        #[cfg_attr(feature = "wasmtime", component(name = "passive-host"))]
        pub passive_host: Option<HostId>,
        pub reason: String,
    }

    /// `scheduler.rebalance-move`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct RebalanceMove {
        pub vm: VmId,
        pub source: HostId,
        pub target: HostId,
        pub reason: String,
    }
}

/// Records of the `sha` world.
pub mod sha {
    use super::*;

    /// `sha.setup-problem`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct SetupProblem {
        pub code: String,
        pub message: String,
    }

    /// `sha.setup-check`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct SetupCheck {
        pub ok: bool,
        pub state: Option<ShaPairState>,
        pub problems: Vec<SetupProblem>,
    }
}

/// Records of the `os-installer` world.
pub mod os_installer {
    use super::*;

    /// `os-installer.image-format`
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(enum)
    )]
    #[repr(u8)]
    pub enum ImageFormat {
        #[default]
        #[cfg_attr(feature = "wasmtime", component(name = "qcow2"))]
        Qcow2,
        #[cfg_attr(feature = "wasmtime", component(name = "raw"))]
        Raw,
        #[cfg_attr(feature = "wasmtime", component(name = "vmdk"))]
        Vmdk,
        #[cfg_attr(feature = "wasmtime", component(name = "vdi"))]
        Vdi,
        #[cfg_attr(feature = "wasmtime", component(name = "iso"))]
        Iso,
    }

    /// `os-installer.firmware`
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(enum)
    )]
    #[repr(u8)]
    pub enum Firmware {
        #[default]
        #[cfg_attr(feature = "wasmtime", component(name = "bios"))]
        Bios,
        #[cfg_attr(feature = "wasmtime", component(name = "uefi"))]
        Uefi,
    }

    /// `os-installer.image-meta`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct ImageMeta {
        pub id: String,
        pub name: String,
        pub format: ImageFormat,
        #[cfg_attr(feature = "wasmtime", component(name = "os-family"))]
        pub os_family: String,
        #[cfg_attr(feature = "wasmtime", component(name = "os-variant"))]
        pub os_variant: String,
        #[cfg_attr(feature = "wasmtime", component(name = "cloud-init"))]
        pub cloud_init: bool,
        pub firmware: Firmware,
        #[cfg_attr(feature = "wasmtime", component(name = "virtual-size-bytes"))]
        pub virtual_size_bytes: u64,
        #[cfg_attr(feature = "wasmtime", component(name = "ready-marker"))]
        pub ready_marker: Option<String>,
    }

    /// `os-installer.user-spec`. Its `Debug` shows neither the password
    /// hash nor the SSH keys.
    #[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct UserSpec {
        pub name: String,
        #[cfg_attr(feature = "wasmtime", component(name = "password-hash"))]
        pub password_hash: Option<String>,
        #[cfg_attr(feature = "wasmtime", component(name = "ssh-authorized-keys"))]
        pub ssh_authorized_keys: Vec<String>,
        pub sudo: bool,
        pub groups: Vec<String>,
        pub shell: Option<String>,
    }

    /// `os-installer.nic-settings`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct NicSettings {
        pub mac: String,
        pub dhcp4: bool,
        pub addresses: Vec<String>,
        pub gateway4: Option<String>,
        pub nameservers: Vec<String>,
    }

    /// `os-installer.install-request`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct InstallRequest {
        #[cfg_attr(feature = "wasmtime", component(name = "vm-name"))]
        pub vm_name: String,
        pub hostname: String,
        pub users: Vec<UserSpec>,
        pub packages: Vec<String>,
        pub nics: Vec<NicSettings>,
        #[cfg_attr(feature = "wasmtime", component(name = "disk-size-gib"))]
        pub disk_size_gib: u64,
        pub timezone: Option<String>,
    }

    /// `os-installer.disk-method`
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(enum)
    )]
    #[repr(u8)]
    pub enum DiskMethod {
        #[default]
        #[cfg_attr(feature = "wasmtime", component(name = "clone-backing"))]
        CloneBacking,
        #[cfg_attr(feature = "wasmtime", component(name = "full-convert"))]
        FullConvert,
    }

    /// `os-installer.disk-plan`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct DiskPlan {
        pub method: DiskMethod,
        #[cfg_attr(feature = "wasmtime", component(name = "resize-gib"))]
        pub resize_gib: Option<u64>,
    }

    /// `os-installer.seed-file`. Its `Debug` shows the name and size, not
    /// the contents (user-data holds password hashes and keys).
    #[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct SeedFile {
        pub name: String,
        pub contents: String,
    }

    impl std::fmt::Debug for UserSpec {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UserSpec")
                .field("name", &self.name)
                .field(
                    "password_hash",
                    &self.password_hash.as_ref().map(|_| "<redacted>"),
                )
                .field(
                    "ssh_authorized_keys",
                    &format_args!("<{} key(s) redacted>", self.ssh_authorized_keys.len()),
                )
                .field("sudo", &self.sudo)
                .field("groups", &self.groups)
                .field("shell", &self.shell)
                .finish()
        }
    }

    impl std::fmt::Debug for SeedFile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SeedFile")
                .field("name", &self.name)
                .field(
                    "contents",
                    &format_args!("<{} bytes redacted>", self.contents.len()),
                )
                .finish()
        }
    }

    /// `os-installer.boot-settings`
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct BootSettings {
        pub firmware: Firmware,
        #[cfg_attr(feature = "wasmtime", component(name = "kernel-args"))]
        pub kernel_args: Option<String>,
        #[cfg_attr(feature = "wasmtime", component(name = "attach-image-as-cdrom"))]
        pub attach_image_as_cdrom: bool,
    }

    /// `os-installer.completion`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(variant)
    )]
    pub enum Completion {
        #[cfg_attr(feature = "wasmtime", component(name = "serial-marker"))]
        SerialMarker(String),
        #[cfg_attr(feature = "wasmtime", component(name = "guest-agent"))]
        GuestAgent,
        #[cfg_attr(feature = "wasmtime", component(name = "power-off"))]
        PowerOff,
    }

    /// `os-installer.install-plan`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[cfg_attr(
        feature = "wasmtime",
        derive(ComponentType, Lift, Lower),
        component(record)
    )]
    pub struct InstallPlan {
        pub disk: DiskPlan,
        pub seed: Vec<SeedFile>,
        pub boot: BootSettings,
        pub completion: Completion,
        #[cfg_attr(feature = "wasmtime", component(name = "timeout-ms"))]
        pub timeout_ms: u64,
    }
}

#[cfg(test)]
mod debug_tests {
    use super::os_installer::*;

    #[test]
    fn the_debug_form_of_an_install_shows_no_password_hash_key_or_seed_contents() {
        let hash = "$6$saltsalt$c2VjcmV0LWhhc2g";
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq a@b";
        let req = InstallRequest {
            vm_name: "vm1".into(),
            users: vec![UserSpec {
                name: "admin".into(),
                password_hash: Some(hash.into()),
                ssh_authorized_keys: vec![key.into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = InstallPlan {
            disk: DiskPlan::default(),
            seed: vec![SeedFile {
                name: "user-data".into(),
                contents: format!("#cloud-config\nusers:\n- passwd: {hash}\n  keys: [{key}]\n"),
            }],
            boot: BootSettings::default(),
            completion: Completion::PowerOff,
            timeout_ms: 1,
        };
        for text in [format!("{req:?}"), format!("{plan:#?}")] {
            assert!(!text.contains("c2VjcmV0LWhhc2g"), "{text}");
            assert!(!text.contains("AAAAC3NzaC1lZDI1NTE5"), "{text}");
        }
        assert!(format!("{plan:?}").contains("user-data"));
        assert!(format!("{req:?}").contains("admin"));
    }
}
