//! The one action type of the core: everything an administrator can ask
//! of it through the API.

use crate::body::*;
use serde::{Deserialize, Serialize};

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

/// Default `shutdown_timeout_s` of a forced host reboot: each guest has
/// 180 s to power off (Proxmox VE's default on a node shutdown).
pub const DEFAULT_REBOOT_SHUTDOWN_TIMEOUT_S: u32 = 180;

/// Everything an administrator can ask of the core through the API. It
/// travels between hosts as JSON when the core forwards it to the host that
/// carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// This host's identity, version and resources.
    GetHost,
    /// This host's firmware: its slots, floors, pending update and last
    /// outcome.
    GetFirmware,
    /// Reboot this host with `[firmware] reboot-command` (after a firmware
    /// install): refused while VMs run here, unless `force`, which shuts
    /// them down first (a job) and starts them again when the daemon is
    /// back.
    RebootHost {
        /// Shut down the VMs running here first (ACPI, forced off after
        /// `shutdown_timeout_s`) instead of refusing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// Seconds each guest has to power off before it is forced off
        /// (with `force`; [`DEFAULT_REBOOT_SHUTDOWN_TIMEOUT_S`] when
        /// absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shutdown_timeout_s: Option<u32>,
    },
    /// This host's site settings: the file, the keys it sets, what the
    /// running daemon applied.
    GetHostSettings,
    /// Replace this host's site settings file with `text`, once checked as
    /// the daemon's next start would; with `restart`, the daemon then
    /// restarts in place to apply it (its VMs keep running).
    ReplaceHostSettings {
        /// The whole file (TOML).
        text: String,
        /// Restart the daemon to apply it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// Remove this host's site settings file (the image's settings alone
    /// from the next start); with `restart`, at once.
    ClearHostSettings {
        /// Restart the daemon to apply it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
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
        /// Drop the record of a VM whose host is lost (offline or removed
        /// from the cluster): nothing is asked of that host, and its disks
        /// there are left behind (the answer lists them).
        force: bool,
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
    /// The last policy decisions of the host answering (`?host=` for
    /// another's), oldest first, at most `limit`, of one world or all.
    ListDecisions {
        /// A plugin world, or every world.
        world: Option<String>,
        /// Most decisions to return.
        limit: u32,
    },
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
    /// Put a host into maintenance (`degraded` by the administrator, with
    /// a reason) or take it out (`None`).
    SetMaintenance {
        /// Host id.
        host: String,
        /// The reason, when put into maintenance.
        maintenance: Option<HostDegrade>,
    },
    /// The cluster's rolling update: the last one started, and where it
    /// stands (404 when none was ever started).
    GetClusterUpdate,
    /// Go on with a failed rolling update from the host it stopped at.
    ResumeClusterUpdate,
    /// End a running or failed rolling update where it stands: hosts
    /// already updated keep the new version, the others the old one.
    AbortClusterUpdate,
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
    /// Give a VM whose host is lost to another host, from its disks on
    /// shared storage, and start it there if it should run.
    RecoverVm {
        /// VM id or name.
        id: String,
        /// Where to, and the administrator's word that the lost host is down.
        recover: VmRecover,
    },
    /// Move a VM to another host (a job): live when it runs, its disks
    /// copied unless they are on shared storage.
    MigrateVm {
        /// VM id or name.
        id: String,
        /// Where to.
        migrate: VmMigrate,
    },
    /// The caller, as the server sees it.
    Whoami,
    /// End the caller's session (a token is revoked instead).
    Logout,
    /// The caller changes its own password.
    ChangePassword(PasswordChange),
    /// Every user.
    ListUsers,
    /// Create a user.
    CreateUser(UserCreate),
    /// Change a user's role, password or state.
    UpdateUser {
        /// User name.
        name: String,
        /// The fields to change.
        update: UserUpdate,
    },
    /// Delete a user, its tokens and its sessions.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// API tokens: the caller's own; an admin's list shows every user's.
    ListTokens,
    /// Create an API token.
    CreateToken(TokenCreate),
    /// Revoke an API token (the caller's own; any for an admin).
    RevokeToken {
        /// The token's id (16 hex digits).
        id: String,
    },
    /// The audit log after `since` (all kept ones when absent: the last
    /// `limit`).
    ListAudit {
        /// Sequence number to start after.
        since: Option<u64>,
        /// Most entries to return.
        limit: u32,
    },
    /// A request carried out on another host: a pool or volume request on
    /// its pools (`?host=` on the storage routes), or the list of its
    /// decisions; without it, the host serving the request is meant.
    OnHost {
        /// The host's id.
        host: String,
        /// The request (a storage one, or the list of decisions).
        request: Box<Action>,
    },
}

/// The routes that take `?host=`: the storage routes (pools, volumes,
/// snapshots), which act on that host's pools, the host's recent policy
/// decisions, and its site settings.
pub const HOST_SCOPED_OPERATIONS: &[&str] = &[
    "listDecisions",
    "getHostSettings",
    "replaceHostSettings",
    "clearHostSettings",
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
