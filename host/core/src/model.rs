//! The records of desired and observed state, as committed to the cluster
//! store (one kind per object type, keyed by id or name), and their API
//! views (`nasvisor_api_types::view`).

use nasvisor_api_types::{
    AccelKind, EventView, FirmwareKind, ImageFormat, ImageView, JobView, QemuState, VmDiskView,
    VmNicView, VmView,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// A user, key its name.
    pub const USER: &str = "user";
    /// An API token, key the SHA-256 of its secret (hex).
    pub const TOKEN: &str = "token";
    /// The audit log, key the sequence number.
    pub const AUDIT: &str = "audit";
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
            passive: None,
            last_ha_move: None,
            image: None,
            disks: Vec::new(),
            nics: Vec::new(),
            host: None,
            desired: Desired::Stopped,
            state: VmStatus::Stopped,
            state_reason: None,
            install_job: None,
            created_at: String::new(),
            replica: None,
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
        self.kind().as_str()
    }

    /// The API form.
    pub fn kind(self) -> FirmwareKind {
        match self {
            Firmware::Bios => FirmwareKind::Bios,
            Firmware::Uefi => FirmwareKind::Uefi,
        }
    }
}

/// What a VM's disk is for.
pub use nasvisor_api_types::DiskRole;

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
pub use nasvisor_api_types::VmState as VmStatus;

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
    /// The passive host of an HA VM: its vCPUs and memory are reserved for
    /// the VM while the VM is active.
    #[serde(default)]
    pub passive: Option<String>,
    /// The last switchover or failover of an HA VM: what, from where to
    /// where, and when.
    #[serde(default)]
    pub last_ha_move: Option<String>,
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
    /// The synchronous replica of an HA VM's disks on its host's own pools
    /// (`core/src/replica.rs`).
    #[serde(default)]
    pub replica: Option<ReplicaRecord>,
}

/// An HA VM's disk replica, held by its passive host: each replicated
/// disk's volume of the same name in that host's pool of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The host that holds it.
    pub host: String,
    pub state: nasvisor_api_types::ReplicaState,
    /// Percent copied while syncing.
    #[serde(default)]
    pub progress: Option<u8>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it is outdated.
    #[serde(default)]
    pub reason: Option<String>,
    /// The replicated disks: (node, pool, volume).
    pub disks: Vec<(String, String, String)>,
    /// The replica server it is held by ([`ReplicaServing::server`]): a
    /// replica lost while that server ran on is resumed from the writes it
    /// missed.
    ///
    /// [`ReplicaServing::server`]: nasvisor_api_types::peer::ReplicaServing::server
    #[serde(default)]
    pub server: Option<String>,
    /// Where that server serves (address, port): a restarted nasvisord
    /// finds QEMU's sockets to it again, and probes it.
    #[serde(default)]
    pub serving: Option<(String, u16)>,
    /// How it was last brought in step.
    #[serde(default)]
    pub last_sync: Option<nasvisor_api_types::ReplicaSyncView>,
}

impl VmRecord {
    /// The VM now runs on `host`: a replica there has become its disks, and
    /// is no longer a replica.
    pub fn take_replica_on(&mut self, host: &str) {
        if self.replica.as_ref().is_some_and(|r| r.host == host) {
            self.replica = None;
        }
    }
}

impl ReplicaRecord {
    /// The API form.
    pub fn view(&self) -> nasvisor_api_types::ReplicaView {
        nasvisor_api_types::ReplicaView {
            host: self.host.clone(),
            state: self.state,
            progress: self.progress,
            since: self.since.clone(),
            reason: self.reason.clone(),
            last_sync: self.last_sync.clone(),
        }
    }
}

/// Runtime facts that are not committed (they change with every start).
#[derive(Debug, Clone, Default)]
pub struct VmRuntime {
    pub pid: Option<i32>,
    /// What its QEMU reports (`running`, `paused`, ...), on its host.
    pub qemu_state: Option<QemuState>,
    pub accel: Option<AccelKind>,
    pub taps: Vec<Option<String>>,
}

impl VmRecord {
    /// The API form (`Vm` schema).
    pub fn view(&self, rt: &VmRuntime) -> VmView {
        VmView {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            state_reason: self.state_reason.clone(),
            host: self.host.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            description: self.description.clone(),
            autostart: self.autostart,
            ha: self.ha,
            ha_status: None,
            firmware: self.firmware.kind(),
            image: self.image.clone(),
            pid: rt.pid,
            qemu_state: rt.qemu_state,
            accel: rt.accel,
            install_job: self.install_job.clone(),
            created_at: self.created_at.clone(),
            disks: self
                .disks
                .iter()
                .map(|d| VmDiskView {
                    pool: d.pool.clone(),
                    volume: d.volume.clone(),
                    size_mib: d.size_mib.max(1),
                    role: d.role,
                })
                .collect(),
            nics: self
                .nics
                .iter()
                .enumerate()
                .map(|(i, n)| VmNicView {
                    vswitch: n.vswitch.clone(),
                    mac: n.mac.clone(),
                    model: n.model.clone(),
                    tap: rt.taps.get(i).cloned().flatten(),
                })
                .collect(),
        }
    }

    /// Whether this HA VM holds a reservation on `host` (its passive host).
    pub fn reserves_on(&self, host: &str) -> bool {
        self.ha && self.passive.as_deref() == Some(host) && self.host.as_deref() != Some(host)
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
pub use nasvisor_api_types::ImageState;

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
    pub fn view(&self) -> ImageView {
        let format = match self.format.as_deref() {
            None | Some("qcow2") => ImageFormat::Qcow2,
            Some("raw") => ImageFormat::Raw,
            Some("vmdk") => ImageFormat::Vmdk,
            Some("vdi") => ImageFormat::Vdi,
            Some("iso") => ImageFormat::Iso,
            Some(other) => {
                tracing::warn!(image = %self.name, format = other, "image of an unknown format shown as qcow2");
                ImageFormat::Qcow2
            }
        };
        ImageView {
            name: self.name.clone(),
            size_mib: self.size_bytes.div_ceil(MIB),
            state: self.state,
            format,
            virtual_size_mib: self.virtual_size_bytes.div_ceil(MIB),
            os_family: self.os_family.clone(),
            os_variant: self.os_variant.clone(),
            cloud_init: self.cloud_init,
            firmware: self.firmware.kind(),
            ready_marker: self.ready_marker.clone(),
            iso: format == ImageFormat::Iso,
            job: self.job.clone(),
            error: self.error.clone(),
            hosts: self.hosts.clone(),
        }
    }
}

/// State of a job.
pub use nasvisor_api_types::JobState;

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
    pub fn view(&self) -> JobView {
        JobView {
            id: self.id.clone(),
            kind: self.kind.clone(),
            state: self.state,
            progress: self.progress.clamp(0.0, 1.0),
            error: self.error.clone(),
            created_at: self.created_at.clone(),
            target: self.target.clone(),
            message: self.message.clone(),
            finished_at: self.finished_at.clone(),
        }
    }
}

/// Severity of an event.
pub use nasvisor_api_types::Severity;

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

impl EventRecord {
    /// The API form (`Event` schema).
    pub fn view(&self) -> EventView {
        EventView {
            seq: self.seq,
            time: self.time.clone(),
            kind: self.kind.clone(),
            severity: self.severity,
            target: self.target.clone(),
            message: self.message.clone(),
            host: self.host.clone(),
        }
    }
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
    /// The peer protocol version it speaks, as it last said (its own
    /// record, then the leader's heartbeats); `None` from a release before
    /// versions.
    #[serde(default)]
    pub protocol: Option<u32>,
    /// False when it refused the leader's protocol version.
    #[serde(default = "yes")]
    pub protocol_compatible: bool,
    /// When the leader recorded it offline (RFC 3339); `None` while online.
    #[serde(default)]
    pub offline_since: Option<String>,
    /// Removed from the cluster (`cluster remove`): kept so that its VMs
    /// and pools still name it, shown in no host list, never a target.
    #[serde(default)]
    pub removed: bool,
    /// What its own health checks found wrong, as its last heartbeat
    /// answer said (set by the leader).
    #[serde(default)]
    pub problems: Vec<String>,
    /// In maintenance by an administrator (`host degrade`), with the
    /// reason given (empty when none).
    #[serde(default)]
    pub maintenance: Option<String>,
    /// Fenced by the leader while lost: known to run no VM any more, and
    /// how that is known (its self-fence deadline passed, or the fence
    /// command confirmed it), with the time. Cleared when it answers again.
    #[serde(default)]
    pub fenced: Option<String>,
}

fn yes() -> bool {
    true
}

/// Now, RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// `t`, RFC 3339.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Milliseconds since the epoch, RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
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
            passive: None,
            last_ha_move: None,
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
            replica: None,
        };
        let v = serde_json::to_value(&vm).unwrap();
        assert_eq!(serde_json::from_value::<VmRecord>(v).unwrap(), vm);
        let j = serde_json::to_value(vm.view(&VmRuntime {
            pid: Some(4),
            qemu_state: Some(QemuState::Running),
            accel: Some(AccelKind::Tcg),
            taps: vec![Some("nvt0".into())],
        }))
        .unwrap();
        assert_eq!(j["state"], "guest_panicked");
        assert_eq!(j["firmware"], "uefi");
        assert_eq!(j["nics"][0]["tap"], "nvt0");
        assert_eq!(j["disks"][0]["role"], "disk");
        assert!(now_rfc3339().ends_with('Z'), "{}", now_rfc3339());
    }
}
