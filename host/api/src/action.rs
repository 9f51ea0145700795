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

    /// The serial console of VM `id` (`GET /api/v1/vms/{id}/console`): first
    /// up to `tail` bytes of history, then, when `follow`, new output as it
    /// comes. The answer is streamed to the client until the stream ends or
    /// the client goes away (the stream is then dropped).
    async fn console(&self, id: String, follow: bool, tail: u64) -> Result<ByteStream, CoreError>;

    /// Imports an uploaded image (`POST /api/v1/images/{name}/upload`) and
    /// returns the import Job. `body` yields the request body as it arrives,
    /// never buffered whole by the API layer; it yields an `Err` when the
    /// client breaks off or the upload exceeds the server's limit, and the
    /// core must then discard what it wrote.
    async fn upload_image(
        &self,
        upload: ImageUpload,
        body: ByteStream,
    ) -> Result<serde_json::Value, CoreError>;
}

/// A stream of bytes: a console's output, or an upload's body.
pub type ByteStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>,
>;

/// Default of `tail` on the console route: 64 KiB of history.
pub const DEFAULT_CONSOLE_TAIL: u64 = 64 * 1024;
/// Largest `tail` on the console route (1 MiB).
pub const MAX_CONSOLE_TAIL: u64 = 1024 * 1024;
/// Largest console input, bytes.
pub const MAX_CONSOLE_INPUT: usize = 4096;
/// Default `limit` of the event list.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// Largest `limit` of the event list.
pub const MAX_EVENT_LIMIT: u32 = 1000;
/// Largest root disk of an install, GiB (64 TiB).
pub const MAX_INSTALL_DISK_GIB: u64 = 65536;

/// Everything an administrator can ask of the core through the API. It
/// travels between hosts as JSON when the core forwards it to the host that
/// carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Type into a VM's serial console.
    ConsoleInput {
        /// VM id.
        id: String,
        /// The bytes to send (1 to 4096 bytes of UTF-8).
        data: String,
    },
    /// The snapshots of a volume.
    ListSnapshots {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
    },
    /// Return a volume to a snapshot (the VM using it must be stopped).
    RevertSnapshot {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
    },
    /// Delete a snapshot.
    DeleteSnapshot {
        /// Pool name.
        pool: String,
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
    },
    /// Copy a volume into a new one in the same pool.
    CloneVolume {
        /// Pool name.
        pool: String,
        /// Source volume name.
        volume: String,
        /// New volume name.
        name: String,
        /// A linked clone (qcow2 backing file) instead of a full copy.
        linked: bool,
    },
    /// Import a disk image file of this host as a new volume (a job).
    ImportVolume {
        /// Pool name.
        pool: String,
        /// New volume name.
        name: String,
        /// Absolute path of the file (raw, qcow2, vmdk, vdi).
        path: String,
    },
    /// Remove a storage pool definition (the pool must hold no volume in use).
    DeletePool {
        /// Pool name.
        name: String,
    },
    /// Events after sequence number `since` (exclusive), oldest first, at
    /// most `limit`.
    ListEvents {
        /// Last sequence number already seen; none for the oldest kept.
        since: Option<u64>,
        /// Most events to return, 1..=1000.
        limit: u32,
    },
    /// The cluster this host belongs to, and its members.
    GetCluster,
    /// Turn this single host into a cluster with its own CA.
    CreateCluster(ClusterCreate),
    /// A one-time, expiring token for a new host to join.
    IssueJoinToken(JoinTokenCreate),
    /// Remove a host from the cluster; it can no longer talk to the others.
    RemoveMember {
        /// Raft node id of the host.
        node_id: u64,
    },
    /// Join this (empty) host to a cluster with a join token.
    JoinCluster(ClusterJoin),
    /// Every host of the cluster, with its health and resources.
    ListHosts,
    /// Cordon (no new VMs placed there) or uncordon a host.
    SetCordon {
        /// Host id.
        host: String,
        /// Cordoned or not.
        cordoned: bool,
    },
    /// Cordon a host and live-migrate its running VMs away (a job).
    EvacuateHost {
        /// Host id.
        host: String,
    },
    /// Install a signed plugin package on every host of the cluster
    /// (replacing the plugin of its world).
    InstallPlugin(PluginInstall),
    /// Remove the cluster's plugin of a world: the built-in default decides.
    UninstallPlugin {
        /// `scheduler`, `ha-policy`, `sha` or `os-installer`.
        world: String,
    },
    /// Lift the quarantine of a world's plugin on every host of the
    /// cluster (a world with nothing quarantined is answered as such).
    ResetPlugin {
        /// `scheduler`, `ha-policy`, `sha` or `os-installer`.
        world: String,
    },
    /// Move a VM to another host (a job): live when it runs, its disks
    /// copied unless they are on shared storage.
    MigrateVm {
        /// VM id or name.
        id: String,
        /// Where to.
        migrate: VmMigrate,
    },
    /// A pool or volume request carried out on another host's pools
    /// (`?host=` on the storage routes); without it, the host serving the
    /// request is meant.
    OnHost {
        /// The host's id.
        host: String,
        /// The storage request.
        request: Box<Action>,
    },
}

/// The storage routes (pools, volumes, snapshots) that take `?host=`.
pub const HOST_SCOPED_OPERATIONS: &[&str] = &[
    "listPools",
    "createPool",
    "deletePool",
    "importVolume",
    "listVolumes",
    "createVolume",
    "deleteVolume",
    "resizeVolume",
    "snapshotVolume",
    "listSnapshots",
    "revertSnapshot",
    "deleteSnapshot",
    "cloneVolume",
];

/// Body of `POST /api/v1/cluster/join`. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterJoin {
    /// A member's cluster endpoint, `ip:port`.
    pub address: String,
    /// The token `nasvisor cluster join-token` printed there.
    pub token: String,
}

impl std::fmt::Debug for ClusterJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJoin")
            .field("address", &self.address)
            .field("token", &REDACTED)
            .finish()
    }
}

impl Validate for ClusterJoin {
    fn validate(&self) -> Result<(), ApiError> {
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::field(
                "address",
                format!("{:?} is not an ip:port address", self.address),
            ));
        }
        if self.token.is_empty() || self.token.len() > 4096 || !self.token.is_ascii() {
            return Err(ApiError::field(
                "token",
                "must be the token printed by `nasvisor cluster join-token`",
            ));
        }
        Ok(())
    }
}

/// Largest plugin package, bytes.
pub const MAX_PLUGIN_PACKAGE: usize = 768 * 1024;

/// Body of `POST /api/v1/plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInstall {
    /// The signed `.nvplugin` package, base64 (standard alphabet).
    pub package: String,
}

impl PluginInstall {
    /// The package's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, ApiError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.package.trim())
            .map_err(|e| ApiError::field("package", format!("not base64: {e}")))
    }
}

impl Validate for PluginInstall {
    fn validate(&self) -> Result<(), ApiError> {
        let b = self.bytes()?;
        if b.is_empty() || b.len() > MAX_PLUGIN_PACKAGE {
            return Err(ApiError::field(
                "package",
                format!(
                    "{} bytes; a package is 1 to {MAX_PLUGIN_PACKAGE} bytes",
                    b.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The plugin worlds, as the API names them.
pub const PLUGIN_WORLDS: [&str; 4] = ["scheduler", "ha-policy", "sha", "os-installer"];

/// Longest downtime a live migration may allow, ms.
pub const MAX_MIGRATION_DOWNTIME_MS: u32 = 10_000;

/// Body of `POST /api/v1/vms/{id}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmMigrate {
    /// The target host's id.
    pub host: String,
    /// Longest pause of the guest at the switch, ms, 1..=10000 (300 when
    /// absent). The move aims at 25 ms first and widens towards this only
    /// when the guest dirties memory too fast to converge.
    #[serde(default)]
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

/// Largest cluster, hosts.
pub const MAX_CLUSTER_MEMBERS: u32 = 7;
/// Longest join-token lifetime, seconds (7 days).
pub const MAX_JOIN_TOKEN_TTL_S: u32 = 7 * 24 * 3600;

/// Body of `POST /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreate {
    /// Most hosts in the cluster, 1..=7 (7 when absent).
    #[serde(default)]
    pub max_members: Option<u32>,
}

/// Body of `POST /api/v1/cluster/join-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenCreate {
    /// Lifetime, seconds, 1..=604800 (1 hour when absent).
    #[serde(default)]
    pub ttl_s: Option<u32>,
}

impl Validate for ClusterCreate {
    fn validate(&self) -> Result<(), ApiError> {
        match self.max_members {
            Some(n) if !(1..=MAX_CLUSTER_MEMBERS).contains(&n) => Err(ApiError::field(
                "max_members",
                format!("must be 1 to {MAX_CLUSTER_MEMBERS}, got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

impl Validate for JoinTokenCreate {
    fn validate(&self) -> Result<(), ApiError> {
        match self.ttl_s {
            Some(t) if !(1..=MAX_JOIN_TOKEN_TTL_S).contains(&t) => Err(ApiError::field(
                "ttl_s",
                format!("must be 1 to {MAX_JOIN_TOKEN_TTL_S} seconds, got {t}"),
            )),
            _ => Ok(()),
        }
    }
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
    /// System image to install from. Without `install`, the install uses
    /// the defaults (`InstallSpec::default()`).
    #[serde(default)]
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
    pub host: Option<String>,
}

/// A VM's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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

/// Largest number of users of an install.
pub const MAX_INSTALL_USERS: usize = 32;
/// Largest number of packages of an install.
pub const MAX_INSTALL_PACKAGES: usize = 256;
/// Largest number of network entries of an install (one per NIC).
pub const MAX_INSTALL_NETWORKS: usize = 8;
/// Largest SSH public key line, bytes.
pub const MAX_SSH_KEY_BYTES: usize = 8 * 1024;

/// How a VM's guest is installed from its image (`VmCreate::install`).
/// Every field is optional; the core (and the os-installer plugin) fill in
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InstallSpec {
    /// Guest host name (RFC 1123); the VM name when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Users to create, at most 32.
    #[serde(default)]
    pub users: Vec<InstallUser>,
    /// Debian-style package names to install, at most 256.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Network settings; entry `i` applies to `nics[i]`.
    #[serde(default)]
    pub network: Vec<InstallNetwork>,
    /// Size of the root disk, GiB (1..=65536); the image's size when absent.
    #[serde(default)]
    pub disk_size_gib: Option<u64>,
    /// Time zone, e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Pool of the root disk (core default `default`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Keep the VM's disks when the install fails (for inspection).
    #[serde(default)]
    pub keep_disks_on_failure: bool,
}

/// A user of an install. Its `Debug` shows neither the password hash nor
/// the SSH keys (only how many): requests are logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InstallUser {
    /// POSIX user name `^[a-z_][a-z0-9_-]{0,31}$`.
    pub name: String,
    /// OpenSSH public key lines.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// crypt(3) hash (`$6$...`); no password login when absent.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Password-less sudo.
    #[serde(default)]
    pub sudo: bool,
    /// Extra groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell, an absolute path.
    #[serde(default)]
    pub shell: Option<String>,
}

/// What a log shows of a secret: that it is there, not what it is.
pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for InstallUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallUser")
            .field("name", &self.name)
            .field(
                "ssh_authorized_keys",
                &format_args!("<{} key(s) redacted>", self.ssh_authorized_keys.len()),
            )
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| REDACTED),
            )
            .field("sudo", &self.sudo)
            .field("groups", &self.groups)
            .field("shell", &self.shell)
            .finish()
    }
}

/// Network settings of one NIC of an install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InstallNetwork {
    /// Configure IPv4 by DHCP.
    #[serde(default)]
    pub dhcp4: bool,
    /// Static addresses with prefix length, e.g. `192.0.2.10/24`, `2001:db8::5/64`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// IPv4 default gateway.
    #[serde(default)]
    pub gateway4: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
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
    /// Every host reaches `path` (e.g. an NFS mount): VMs on it migrate
    /// without copying their disks. Otherwise the pool belongs to the host
    /// that serves the request.
    #[serde(default)]
    pub shared: bool,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// A file on this host.
    Path(String),
    /// An http(s) URL.
    Url(String),
}

/// Body of `POST /api/v1/images`: `name`, exactly one of `path`, `url`,
/// and optional metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAddBody {
    /// Image name.
    pub name: String,
    /// Absolute path of a file on this host.
    #[serde(default)]
    pub path: Option<String>,
    /// http(s) URL (plain http only with `sha256`).
    #[serde(default)]
    pub url: Option<String>,
    /// SHA-256 of the file (64 hex digits), checked before the image is
    /// added; required with a plain `http://` URL.
    #[serde(default)]
    pub sha256: Option<String>,
    /// OS family (name syntax), `linux` when absent.
    #[serde(default)]
    pub os_family: Option<String>,
    /// OS variant (name syntax or empty), empty when absent.
    #[serde(default)]
    pub os_variant: Option<String>,
    /// Whether the image runs cloud-init (reads a NoCloud seed); true when absent.
    #[serde(default)]
    pub cloud_init: Option<bool>,
    /// Firmware the image boots with; BIOS when absent.
    #[serde(default)]
    pub firmware: Option<FirmwareKind>,
    /// Line the guest prints on its serial console when installed and up.
    #[serde(default)]
    pub ready_marker: Option<String>,
}

/// Metadata of a system image, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetaSpec {
    /// OS family, e.g. `linux` (default), `windows`.
    pub os_family: String,
    /// OS variant, e.g. `debian12`; may be empty.
    pub os_variant: String,
    /// The image runs cloud-init.
    pub cloud_init: bool,
    /// Firmware to boot it with.
    pub firmware: FirmwareKind,
    /// Serial console line that means "installed and up".
    pub ready_marker: Option<String>,
}

impl Default for ImageMetaSpec {
    fn default() -> Self {
        Self {
            os_family: "linux".into(),
            os_variant: String::new(),
            cloud_init: true,
            firmware: FirmwareKind::Bios,
            ready_marker: None,
        }
    }
}

impl ImageMetaSpec {
    /// Validates the optional metadata fields and applies the defaults.
    pub fn from_parts(
        os_family: Option<String>,
        os_variant: Option<String>,
        cloud_init: Option<bool>,
        firmware: Option<FirmwareKind>,
        ready_marker: Option<String>,
    ) -> Result<Self, ApiError> {
        let d = Self::default();
        if let Some(f) = &os_family {
            check_name("os_family", f)?;
        }
        if let Some(v) = &os_variant {
            if !v.is_empty() {
                check_name("os_variant", v)?;
            }
        }
        if let Some(m) = &ready_marker {
            check_ready_marker("ready_marker", m)?;
        }
        Ok(Self {
            os_family: os_family.unwrap_or(d.os_family),
            os_variant: os_variant.unwrap_or(d.os_variant),
            cloud_init: cloud_init.unwrap_or(d.cloud_init),
            firmware: firmware.unwrap_or(d.firmware),
            ready_marker,
        })
    }
}

/// A validated image import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAdd {
    /// Image name.
    pub name: String,
    /// Source.
    pub source: ImageSource,
    /// The SHA-256 the file must have (64 lower-case hex digits).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Metadata.
    pub meta: ImageMetaSpec,
}

/// A validated image upload (`POST /api/v1/images/{name}/upload`); the
/// bytes come separately, as a [`ByteStream`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUpload {
    /// Image name.
    pub name: String,
    /// Metadata (from the query string).
    pub meta: ImageMetaSpec,
}

/// Body of `POST /api/v1/vms/{id}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInputBody {
    /// Text to type, 1 to 4096 bytes.
    pub data: String,
}

/// Body of `POST /api/v1/pools/{pool}/volumes/{volume}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeClone {
    /// New volume name.
    pub name: String,
    /// Linked clone (backed by the source) instead of a full copy.
    #[serde(default)]
    pub linked: bool,
}

/// Body of `POST /api/v1/pools/{pool}/imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeImport {
    /// New volume name.
    pub name: String,
    /// Absolute path of the file on this host.
    pub path: String,
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
pub fn check_abs_path(field: &str, p: &str) -> Result<(), ApiError> {
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

/// Checks an RFC 1123 host name: dot-separated labels of 1-63 letters,
/// digits and `-` (not first or last), at most 253 bytes in all.
pub fn check_hostname(field: &str, h: &str) -> Result<(), ApiError> {
    if h.is_empty() || h.len() > 253 {
        return Err(ApiError::field(field, "must be 1 to 253 characters"));
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ApiError::field(
                field,
                "each dot-separated label must be 1 to 63 characters",
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(ApiError::field(
                field,
                format!("character {c:?} not allowed; use a-z 0-9 - and dots between labels"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ApiError::field(
                field,
                "a label must not start or end with '-'",
            ));
        }
    }
    Ok(())
}

/// Checks a POSIX user or group name: `^[a-z_][a-z0-9_-]{0,31}$`.
pub fn check_user_name(field: &str, n: &str) -> Result<(), ApiError> {
    if n.is_empty() || n.len() > 32 {
        return Err(ApiError::field(field, "must be 1 to 32 characters"));
    }
    let b = n.as_bytes();
    if !(b[0].is_ascii_lowercase() || b[0] == b'_') {
        return Err(ApiError::field(
            field,
            "must start with a lower-case letter or '_'",
        ));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a-z 0-9 _ -"),
        ));
    }
    Ok(())
}

fn check_ssh_key(field: &str, k: &str) -> Result<(), ApiError> {
    if k.is_empty() || k.len() > MAX_SSH_KEY_BYTES {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_SSH_KEY_BYTES} bytes"),
        ));
    }
    if k.contains(['\n', '\r', '\0']) {
        return Err(ApiError::field(field, "must be a single line"));
    }
    if !(k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-")) {
        return Err(ApiError::field(
            field,
            "must be an OpenSSH public key line starting with ssh-, ecdsa- or sk-",
        ));
    }
    Ok(())
}

fn check_password_hash(field: &str, h: &str) -> Result<(), ApiError> {
    if !h.starts_with('$') || h.len() < 2 || h.len() > 512 {
        return Err(ApiError::field(
            field,
            "must be a crypt(3) hash like $6$salt$hash (not a clear-text password)",
        ));
    }
    if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::field(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Checks a Debian package name: `^[a-z0-9][a-z0-9+.-]+$`.
fn check_package(field: &str, p: &str) -> Result<(), ApiError> {
    if p.len() < 2 || p.len() > 128 {
        return Err(ApiError::field(field, "must be 2 to 128 characters"));
    }
    if !(p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0].is_ascii_digit()) {
        return Err(ApiError::field(
            field,
            "must start with a lower-case letter or a digit",
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a-z 0-9 + . -"),
        ));
    }
    Ok(())
}

/// Checks an address with prefix length, `192.0.2.10/24` or `2001:db8::5/64`.
pub fn check_cidr(field: &str, a: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::field(
            field,
            format!(
                "{a:?} is not an address with prefix length like 192.0.2.10/24 or 2001:db8::5/64"
            ),
        )
    };
    let (ip, prefix) = a.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(bad());
    }
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(ApiError::field(
            field,
            format!("prefix length must be at most {max}, got {prefix}"),
        ));
    }
    Ok(())
}

fn check_timezone(field: &str, t: &str) -> Result<(), ApiError> {
    if t.is_empty() || t.len() > 64 {
        return Err(ApiError::field(field, "must be 1 to 64 characters"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '/' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a zone name like Europe/Berlin"),
        ));
    }
    if t.starts_with('/') || t.split('/').any(|p| p.is_empty()) {
        return Err(ApiError::field(
            field,
            "must be a zone name like Europe/Berlin",
        ));
    }
    Ok(())
}

/// Checks an image's ready marker: 1 to 128 printable ASCII characters.
pub fn check_ready_marker(field: &str, m: &str) -> Result<(), ApiError> {
    if m.is_empty() || m.len() > 128 {
        return Err(ApiError::field(field, "must be 1 to 128 characters"));
    }
    if !m.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::field(
            field,
            "must be printable ASCII (space to ~)",
        ));
    }
    Ok(())
}

impl InstallSpec {
    /// Checks the install settings of a VM with `nics` network interfaces.
    /// Field paths start with `install.`.
    pub fn validate_for(&self, nics: usize) -> Result<(), ApiError> {
        if let Some(h) = &self.hostname {
            check_hostname("install.hostname", h)?;
        }
        if self.users.len() > MAX_INSTALL_USERS {
            return Err(ApiError::field(
                "install.users",
                format!("at most {MAX_INSTALL_USERS} users"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let f = |n: &str| format!("install.users[{i}].{n}");
            check_user_name(&f("name"), &u.name)?;
            if !seen.insert(u.name.as_str()) {
                return Err(ApiError::field(
                    f("name"),
                    format!("duplicate user {}", u.name),
                ));
            }
            if u.ssh_authorized_keys.len() > 64 {
                return Err(ApiError::field(f("ssh_authorized_keys"), "at most 64 keys"));
            }
            for (k, key) in u.ssh_authorized_keys.iter().enumerate() {
                check_ssh_key(&format!("install.users[{i}].ssh_authorized_keys[{k}]"), key)?;
            }
            if let Some(h) = &u.password_hash {
                check_password_hash(&f("password_hash"), h)?;
            }
            if u.groups.len() > 32 {
                return Err(ApiError::field(f("groups"), "at most 32 groups"));
            }
            for (g, group) in u.groups.iter().enumerate() {
                check_user_name(&format!("install.users[{i}].groups[{g}]"), group)?;
            }
            if let Some(sh) = &u.shell {
                check_abs_path(&f("shell"), sh)?;
            }
        }
        if self.packages.len() > MAX_INSTALL_PACKAGES {
            return Err(ApiError::field(
                "install.packages",
                format!("at most {MAX_INSTALL_PACKAGES} packages"),
            ));
        }
        for (i, p) in self.packages.iter().enumerate() {
            check_package(&format!("install.packages[{i}]"), p)?;
        }
        if self.network.len() > MAX_INSTALL_NETWORKS {
            return Err(ApiError::field(
                "install.network",
                format!("at most {MAX_INSTALL_NETWORKS} entries"),
            ));
        }
        if self.network.len() > nics {
            return Err(ApiError::field(
                "install.network",
                format!(
                    "{} entries but the VM has {nics} nics; entry i configures nics[i]",
                    self.network.len()
                ),
            ));
        }
        for (i, n) in self.network.iter().enumerate() {
            if n.addresses.len() > 16 {
                return Err(ApiError::field(
                    format!("install.network[{i}].addresses"),
                    "at most 16 addresses",
                ));
            }
            for (a, addr) in n.addresses.iter().enumerate() {
                check_cidr(&format!("install.network[{i}].addresses[{a}]"), addr)?;
            }
            if let Some(g) = &n.gateway4 {
                if g.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(ApiError::field(
                        format!("install.network[{i}].gateway4"),
                        format!("{g:?} is not an IPv4 address"),
                    ));
                }
            }
            if n.nameservers.len() > 8 {
                return Err(ApiError::field(
                    format!("install.network[{i}].nameservers"),
                    "at most 8 name servers",
                ));
            }
            for (d, ns) in n.nameservers.iter().enumerate() {
                if ns.parse::<std::net::IpAddr>().is_err() {
                    return Err(ApiError::field(
                        format!("install.network[{i}].nameservers[{d}]"),
                        format!("{ns:?} is not an IP address"),
                    ));
                }
            }
        }
        if let Some(g) = self.disk_size_gib {
            if !(1..=MAX_INSTALL_DISK_GIB).contains(&g) {
                return Err(ApiError::field(
                    "install.disk_size_gib",
                    format!("must be 1 to {MAX_INSTALL_DISK_GIB} GiB, got {g}"),
                ));
            }
        }
        if let Some(t) = &self.timezone {
            check_timezone("install.timezone", t)?;
        }
        if let Some(p) = &self.pool {
            check_name("install.pool", p)?;
        }
        Ok(())
    }
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
                if !lower.starts_with("https://") && self.sha256.is_none() {
                    return Err(ApiError::field(
                        "sha256",
                        "required with a plain http:// URL (nothing else authenticates the \
                         download); give the image's SHA-256 or use https://",
                    ));
                }
                ImageSource::Url(u)
            }
            _ => return Err(ApiError::field("path", "give exactly one of path and url")),
        };
        let sha256 = match self.sha256 {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ApiError::field(
                    "sha256",
                    "must be a SHA-256: 64 hex digits",
                ))
            }
            None => None,
        };
        let meta = ImageMetaSpec::from_parts(
            self.os_family,
            self.os_variant,
            self.cloud_init,
            self.firmware,
            self.ready_marker,
        )?;
        Ok(ImageAdd {
            name: self.name,
            source,
            sha256,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_body(json: &str) -> Result<ImageAdd, ApiError> {
        serde_json::from_str::<ImageAddBody>(json)
            .expect("parses")
            .into_add()
    }

    #[test]
    fn the_debug_form_of_a_request_shows_no_password_hash_key_or_token() {
        let hash = "$6$saltsalt$c2VjcmV0LWhhc2g";
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";
        let create = Action::CreateVm(VmCreate {
            name: "vm1".into(),
            vcpus: 1,
            memory_mib: 256,
            description: None,
            disks: vec![],
            nics: vec![],
            image: Some("deb".into()),
            autostart: false,
            ha: false,
            firmware: FirmwareKind::Bios,
            install: Some(InstallSpec {
                users: vec![InstallUser {
                    name: "admin".into(),
                    ssh_authorized_keys: vec![key.into()],
                    password_hash: Some(hash.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            host: None,
        });
        let join = ClusterJoin {
            address: "192.0.2.1:8444".into(),
            token: "nvjt1.secret-token".into(),
        };
        for text in [
            format!("{create:?}"),
            format!("{create:#?}"),
            format!("{join:?}"),
        ] {
            assert!(!text.contains("c2VjcmV0LWhhc2g"), "{text}");
            assert!(!text.contains("AAAAC3NzaC1lZDI1NTE5"), "{text}");
            assert!(!text.contains("secret-token"), "{text}");
        }
        let text = format!("{create:?}");
        assert!(
            text.contains("admin") && text.contains("<1 key(s) redacted>"),
            "{text}"
        );
    }

    #[test]
    fn a_plain_http_image_url_needs_a_sha256_of_64_hex_digits() {
        let e = image_body(r#"{"name":"a","url":"http://192.0.2.1/a.qcow2"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sha256"));
        assert!(e.reason.contains("plain http://"), "{}", e.reason);
        let sha = "AB".repeat(32);
        let ok = image_body(&format!(
            r#"{{"name":"a","url":"HTTP://192.0.2.1/a.qcow2","sha256":"{sha}"}}"#
        ))
        .unwrap();
        assert_eq!(ok.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        let ok = image_body(r#"{"name":"a","url":"https://192.0.2.1/a.qcow2"}"#).unwrap();
        assert_eq!(ok.sha256, None);
        for bad in ["abc", &"g".repeat(64), &"a".repeat(65)] {
            let e = image_body(&format!(
                r#"{{"name":"a","path":"/srv/a.img","sha256":"{bad}"}}"#
            ))
            .unwrap_err();
            assert_eq!(e.field.as_deref(), Some("sha256"), "{bad}");
        }
    }

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
            firmware: FirmwareKind::Bios,
            install: None,
            host: None,
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

    #[test]
    fn install_syntax() {
        for ok in ["a", "web-1", "Web1.Example.org", "x.y.z", "0a"] {
            assert!(check_hostname("h", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_hostname("h", bad).is_err(), "{bad}");
        }
        for ok in ["root", "_svc", "a-b_c9", &"a".repeat(32)] {
            assert!(check_user_name("u", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Root", "9a", "-a", "a.b", &"a".repeat(33)] {
            assert!(check_user_name("u", bad).is_err(), "{bad}");
        }
        for ok in ["192.0.2.1/24", "10.0.0.1/0", "2001:db8::1/64", "::1/128"] {
            assert!(check_cidr("a", ok).is_ok(), "{ok}");
        }
        for bad in [
            "192.0.2.1",
            "192.0.2.1/",
            "192.0.2.1/33",
            "192.0.2/24",
            "::1/129",
            "192.0.2.1/+8",
            "x/8",
        ] {
            assert!(check_cidr("a", bad).is_err(), "{bad}");
        }
        for ok in ["nginx", "libstdc++6", "python3.11", "0ad"] {
            assert!(check_package("p", ok).is_ok(), "{ok}");
        }
        for bad in ["a", "Nginx", "-x", "a_b", "a b"] {
            assert!(check_package("p", bad).is_err(), "{bad}");
        }
        assert!(check_timezone("t", "America/Argentina/Buenos_Aires").is_ok());
        assert!(check_timezone("t", "Etc/GMT+5").is_ok());
        for bad in ["", "/etc", "a//b", "Europe/Berlin ", "a;b"] {
            assert!(check_timezone("t", bad).is_err(), "{bad}");
        }
        assert!(check_ready_marker("r", "NASVISOR-READY").is_ok());
        assert!(check_ready_marker("r", "").is_err());
        assert!(check_ready_marker("r", "a\tb").is_err());
        assert!(check_ready_marker("r", &"x".repeat(129)).is_err());
    }
}
