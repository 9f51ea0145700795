//! The peer protocol: what one host asks another over the cluster's
//! mutual-TLS channel, typed and versioned.
//!
//! - Every request is a [`PeerEnvelope`]: the protocol `version` the caller
//!   writes in, and one [`PeerCall`].
//! - The receiver reads the version **first** ([`decode_request`]) and
//!   refuses a version outside its window ([`PEER_PROTOCOL_OLDEST`]..=
//!   [`PEER_PROTOCOL`]) with [`PeerRefusal::UnsupportedVersion`] before it
//!   looks at the call, so a field is never read in a layout it does not
//!   know. A request without a version is protocol 1, the untyped method
//!   strings of releases before this module; it is refused the same way.
//! - Each call is a struct implementing [`Call`], whose [`Call::Reply`] is
//!   the type of its answer; the caller decodes the answer with
//!   [`decode_reply`], and an answer of the wrong shape is a
//!   [`PeerDecodeError`] naming the call and serde's reason (the field).
//! - The transport (`nasvisor-cluster`'s `PeerRequest{method, body}`) stays
//!   a generic carrier: `method` is the call's [`Call::NAME`] (for logs),
//!   `body` the envelope.
//!
//! The VM record a move carries is the core's stored record; the protocol is
//! generic over it (`Vm`) so this crate does not depend on the core's
//! storage model. Its compatibility is the store's: every later field has a
//! serde default (see `docs/cluster.md`).
//!
//! The compatibility rule (documented in `docs/cluster.md`): members may
//! differ by one version during a rolling update; a build of version N
//! serves N-1 and N (version 2, the first typed one, serves only itself),
//! and writes the highest version its peer serves ([`stamp_for`]), so a
//! newer host writes nothing an older member cannot read until every member
//! runs the new version.

use crate::action::Action;
use crate::view::Answer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// The peer protocol version this build writes.
///
/// - 1: untyped method strings and JSON bodies (no version on the wire);
/// - 2: [`PeerEnvelope`] with a version and a typed [`PeerCall`].
pub const PEER_PROTOCOL: u32 = 2;

/// The oldest peer protocol version this build serves. Version 2 is the
/// first versioned one, so it serves only itself; version 3 must serve 2.
pub const PEER_PROTOCOL_OLDEST: u32 = 2;

/// The version of a request that carries none: the protocol before this
/// module.
pub const UNVERSIONED: u32 = 1;

/// The versions a build serves: `oldest..=current`. The core holds one,
/// [`PeerWindow::BUILD`] outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerWindow {
    /// The oldest version served.
    pub oldest: u32,
    /// The version written (and served).
    pub current: u32,
}

impl PeerWindow {
    /// This build's window.
    pub const BUILD: PeerWindow = PeerWindow {
        oldest: PEER_PROTOCOL_OLDEST,
        current: PEER_PROTOCOL,
    };

    /// Whether a request of `version` can be served.
    pub fn serves(&self, version: u32) -> bool {
        (self.oldest..=self.current).contains(&version)
    }

    /// The version to write to a member last heard speaking `member`
    /// (`None`: not heard yet): the highest version both sides serve, i.e.
    /// the member's when it is older but still served here, ours otherwise.
    pub fn stamp_for(&self, member: Option<u32>) -> u32 {
        match member {
            Some(m) if self.serves(m) => m,
            _ => self.current,
        }
    }
}

/// [`PeerWindow::stamp_for`] of this build's window.
pub fn stamp_for(member: Option<u32>) -> u32 {
    PeerWindow::BUILD.stamp_for(member)
}

/// One request on the wire: the version it is written in, and the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEnvelope<Vm> {
    /// The peer protocol version of `call`.
    pub version: u32,
    /// The request.
    pub call: PeerCall<Vm>,
}

/// Every request a host makes of another (`call` names it, `body` holds
/// its fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", content = "body", rename_all = "kebab-case")]
pub enum PeerCall<Vm> {
    /// The leader asks a member for its health and resources.
    Heartbeat(Heartbeat),
    /// An action carried out by the host it concerns.
    Action(ForwardAction),
    /// A read answered by the host that knows best, once it applied `after`.
    Read(Read),
    /// The last bytes of a VM's console.
    Console(Console),
    /// A move's source asks the target to get ready.
    MigratePrepare(MigratePrepare<Vm>),
    /// The log says the target owns the VM: it resumes it.
    MigrateFinish(MigrateFinish),
    /// The move did not happen: the target drops what it prepared.
    MigrateAbort(MigrateAbort),
    /// Serve an image of the library read-only to the caller.
    ImageExport(ImageExport),
    /// Stop serving an image.
    ImageExportEnd(ImageExportEnd),
    /// The live progress of jobs running on the receiver (added within
    /// version 2: a member that does not know it refuses it as malformed,
    /// and the caller shows the committed record).
    JobProgress(JobProgress),
    /// The active host of an HA VM asks its passive host to serve the
    /// replicas of its disks (added within version 2, like `job-progress`).
    ReplicaServe(ReplicaServe),
    /// The passive host (or a former one) drops a VM's replicas (added
    /// within version 2).
    ReplicaDrop(ReplicaDrop),
    /// The active host of an HA UEFI VM sends its UEFI variable store to
    /// its passive host (added within version 2, like `job-progress`).
    ReplicaVars(ReplicaVars),
    /// The host that received a cluster update's bundle serves it to the
    /// caller (added within version 2, like `job-progress`).
    BundleExport(BundleExport),
    /// The leader asks a member to copy a cluster update's bundle and
    /// check it as an install would (added within version 2).
    RolloutFetch(RolloutFetch),
    /// The leader asks a member to install the cluster update's bundle it
    /// holds (added within version 2).
    RolloutInstall(RolloutInstall),
}

impl<Vm> PeerCall<Vm> {
    /// The call's name on the wire (`heartbeat`, `migrate-prepare`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            PeerCall::Heartbeat(_) => <Heartbeat as Call<Vm>>::NAME,
            PeerCall::Action(_) => <ForwardAction as Call<Vm>>::NAME,
            PeerCall::Read(_) => <Read as Call<Vm>>::NAME,
            PeerCall::Console(_) => <Console as Call<Vm>>::NAME,
            PeerCall::MigratePrepare(_) => MIGRATE_PREPARE,
            PeerCall::MigrateFinish(_) => <MigrateFinish as Call<Vm>>::NAME,
            PeerCall::MigrateAbort(_) => <MigrateAbort as Call<Vm>>::NAME,
            PeerCall::ImageExport(_) => <ImageExport as Call<Vm>>::NAME,
            PeerCall::ImageExportEnd(_) => <ImageExportEnd as Call<Vm>>::NAME,
            PeerCall::JobProgress(_) => <JobProgress as Call<Vm>>::NAME,
            PeerCall::ReplicaServe(_) => <ReplicaServe as Call<Vm>>::NAME,
            PeerCall::ReplicaDrop(_) => <ReplicaDrop as Call<Vm>>::NAME,
            PeerCall::ReplicaVars(_) => <ReplicaVars as Call<Vm>>::NAME,
            PeerCall::BundleExport(_) => <BundleExport as Call<Vm>>::NAME,
            PeerCall::RolloutFetch(_) => <RolloutFetch as Call<Vm>>::NAME,
            PeerCall::RolloutInstall(_) => <RolloutInstall as Call<Vm>>::NAME,
        }
    }
}

/// A request type of the protocol and the type of its answer.
pub trait Call<Vm>: Sized {
    /// The name on the wire (the `call` tag of [`PeerCall`]).
    const NAME: &'static str;
    /// What the receiver answers.
    type Reply: Serialize + DeserializeOwned;
    /// As the enum that goes on the wire.
    fn into_call(self) -> PeerCall<Vm>;
}

macro_rules! calls {
    ($($ty:ident => $variant:ident, $name:literal, $reply:ty;)*) => {
        $(
            impl<Vm> Call<Vm> for $ty {
                const NAME: &'static str = $name;
                type Reply = $reply;
                fn into_call(self) -> PeerCall<Vm> {
                    PeerCall::$variant(self)
                }
            }
        )*
    };
}

calls! {
    Heartbeat => Heartbeat, "heartbeat", HeartbeatReply;
    ForwardAction => Action, "action", ActionReply;
    Read => Read, "read", Answer;
    Console => Console, "console", ConsoleReply;
    MigrateFinish => MigrateFinish, "migrate-finish", ();
    MigrateAbort => MigrateAbort, "migrate-abort", ();
    ImageExport => ImageExport, "image-export", ImageExportReply;
    ImageExportEnd => ImageExportEnd, "image-export-end", ();
    JobProgress => JobProgress, "job-progress", Vec<JobLive>;
    ReplicaServe => ReplicaServe, "replica-serve", ReplicaServing;
    ReplicaDrop => ReplicaDrop, "replica-drop", ();
    ReplicaVars => ReplicaVars, "replica-vars", ();
    BundleExport => BundleExport, "bundle-export", BundleExportReply;
    RolloutFetch => RolloutFetch, "rollout-fetch", RolloutFetched;
    RolloutInstall => RolloutInstall, "rollout-install", RolloutInstalling;
}

const MIGRATE_PREPARE: &str = "migrate-prepare";

impl<Vm> Call<Vm> for MigratePrepare<Vm> {
    const NAME: &'static str = MIGRATE_PREPARE;
    type Reply = Prepared;
    fn into_call(self) -> PeerCall<Vm> {
        PeerCall::MigratePrepare(self)
    }
}

/// `heartbeat`: the leader asks a member how it is, and confirms that it
/// is in touch with the cluster (the member's HA lease, docs/ha.md).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// How long ago, in ms, a majority last acknowledged the leader. The
    /// member counts its contact with the cluster from then, not from the
    /// call's arrival: a leader cut off from the majority, still calling
    /// the hosts on its side, renews no lease past the moment it lost the
    /// majority. Added within version 2 (no release carried it without).
    #[serde(default)]
    pub quorum_age_ms: u64,
    /// The `seq` of the member's last answer this leader received. The
    /// member renews its lease from the moment it sent that answer, which
    /// the leader has seen: a member whose answers are lost (a one-way
    /// partition) renews nothing while the leader counts its silence.
    /// `None` before the leader received an answer. Added within version 2.
    #[serde(default)]
    pub ack_seq: Option<u64>,
}

/// A member's answer to the leader's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Its host id.
    pub host: String,
    /// Its nasvisord version.
    pub version: String,
    /// The newest peer protocol version it speaks.
    pub protocol: u32,
    /// Whether it considers itself healthy (no `problems`).
    pub healthy: bool,
    /// What its own checks found wrong (a pool read-only, a vswitch
    /// uplink without carrier, the QEMU binary missing, a disk nearly
    /// full); empty when healthy. Added within version 2 with a default,
    /// so an older member's answer reads as none.
    #[serde(default)]
    pub problems: Vec<String>,
    /// VMs running there.
    pub running_vms: u32,
    /// Its pools' capacity, GiB.
    pub storage_gib: u64,
    /// Its pools' free space, GiB.
    pub free_storage_gib: u64,
    /// This answer's number, which the leader's next heartbeat acknowledges
    /// (`Heartbeat.ack_seq`). Added within version 2 with a default.
    #[serde(default)]
    pub seq: u64,
}

/// `action`: an action carried out by the host it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAction {
    /// The action.
    pub action: Action,
    /// The store revision the caller had applied when it asked: the host
    /// catches up to it first, so that it acts on what the caller decided
    /// (a failover's start, say, on the record that gives it the VM).
    #[serde(default)]
    pub after: u64,
}

/// The answer to [`ForwardAction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReply {
    /// The action's answer.
    pub result: Answer,
    /// The store revision the host had applied when it answered (the caller
    /// catches up to it: read your writes).
    pub revision: u64,
}

/// `read`: a read answered by the host that knows best (a VM's own host),
/// once it has applied revision `after`. The answer is the read's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// The read (only reads are served).
    pub action: Action,
    /// The caller's store revision.
    pub after: u64,
}

/// `console`: the last `tail` bytes of VM `id`'s console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// VM id.
    pub id: String,
    /// How many bytes at most.
    pub tail: u64,
}

/// The answer to [`Console`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleReply {
    /// The bytes, base64.
    pub data: String,
}

/// `job-progress`: the live progress of jobs `ids`, running on the
/// receiver. Progress between milestones lives only in the memory of the
/// job's host; the store has the last milestone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProgress {
    /// Job ids.
    pub ids: Vec<String>,
}

/// A running job's live progress (one per id asked that still runs there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLive {
    /// Job id.
    pub id: String,
    /// 0 to 1.
    pub progress: f64,
    /// The current step.
    pub message: Option<String>,
}

/// One disk of an HA VM to replicate: its node on the active host, the
/// pool and volume it is (the replica is the volume of the same name in
/// the passive host's pool of that name), and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDiskSpec {
    /// The block node (`disk<i>`), also the export's name.
    pub node: String,
    /// The pool's name.
    pub pool: String,
    /// The volume's name.
    pub volume: String,
    /// The guest's size of the disk.
    pub size_bytes: u64,
}

/// `replica-serve`: the passive host makes empty replica volumes of
/// `disks` (replacing any older copy) and serves them over NBD to the
/// caller only, from a replica server of VM `id` (replacing any running
/// one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaServe {
    /// VM id.
    pub id: String,
    /// The disks.
    pub disks: Vec<ReplicaDiskSpec>,
    /// The server the caller lost its replica on ([`ReplicaServing::server`]):
    /// if that very server still runs, it is kept with its volumes, and the
    /// caller copies only the writes the replica missed. Added within
    /// version 2 (an older receiver would refuse it; it is only sent to
    /// resume, after an answer that carried a server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// The answer to [`ReplicaServe`]: where the exports are (one export per
/// disk, named by its node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaServing {
    /// The server's address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Which server this is (its process, on this boot of its host), to ask
    /// for it again with [`ReplicaServe::resume`]. Added within version 2.
    #[serde(default)]
    pub server: Option<String>,
    /// Whether the server asked for in `resume` runs on with its volumes.
    #[serde(default)]
    pub kept: bool,
}

/// `replica-drop`: stop VM `id`'s replica server on the receiver and, when
/// `delete_volumes`, delete its replica volumes `volumes` (pool, volume)
/// unless a VM there uses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaDrop {
    /// VM id.
    pub id: String,
    /// The replica volumes: (pool, volume).
    pub volumes: Vec<(String, String)>,
    /// Whether the volumes go too.
    pub delete_volumes: bool,
}

/// `replica-vars`: VM `id`'s UEFI variable store as its active host holds
/// it now; the passive host keeps it as the store a failover starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaVars {
    /// VM id.
    pub id: String,
    /// The store's bytes, base64.
    pub data: String,
    /// Their SHA-256, hex.
    pub sha256: String,
}

/// One disk whose contents go over the network in a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyDisk {
    /// The block node (`disk<i>`, `pflash1` for UEFI variables).
    pub node: String,
    /// The pool; `None` for the UEFI variables file.
    pub pool: Option<String>,
    /// The volume; `None` for the UEFI variables file.
    pub volume: Option<String>,
    /// Its size.
    pub size_bytes: u64,
}

/// `migrate-prepare`: the target creates the VM's volumes and waits for
/// the memory stream (live) or serves them over NBD (offline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePrepare<Vm> {
    /// The VM as the store has it.
    pub vm: Vm,
    /// The disks copied over the network.
    pub copy: Vec<CopyDisk>,
    /// Whether the guest keeps running (live) or is stopped (offline).
    pub live: bool,
}

/// The answer to [`MigratePrepare`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The address of the NBD servers.
    pub host: String,
    /// The port of each export (one port for QEMU's server, one per volume
    /// for `qemu-nbd`).
    pub ports: HashMap<String, u16>,
    /// `tcp:ip:port` of the memory stream (live only).
    pub migrate_uri: Option<String>,
}

/// `migrate-finish` of VM `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateFinish {
    /// VM id.
    pub id: String,
}

/// `migrate-abort` of VM `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateAbort {
    /// VM id.
    pub id: String,
}

/// `image-export`: serve image `name` read-only to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageExport {
    /// Image name.
    pub name: String,
}

/// The answer to [`ImageExport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageExportReply {
    /// The export's id (for [`ImageExportEnd`]).
    pub id: String,
    /// The NBD server's address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The image's format (`qcow2`, `iso`).
    pub format: String,
}

/// `bundle-export`: serve the bundle of rolling update `rollout`, which
/// the receiver holds, read-only to the caller (end it with
/// [`ImageExportEnd`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleExport {
    /// The rollout's id.
    pub rollout: String,
    /// The bundle's SHA-256, hex (the holder serves only that file).
    pub sha256: String,
}

/// The answer to [`BundleExport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleExportReply {
    /// The export's id (for [`ImageExportEnd`]).
    pub id: String,
    /// The NBD server's address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The export's name.
    pub export: String,
}

/// `rollout-fetch`: copy the bundle of rolling update `rollout` from host
/// `holder` (unless it is already here) and check it as an install would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutFetch {
    /// The rollout's id.
    pub rollout: String,
    /// The host that holds the bundle.
    pub holder: String,
    /// The bundle's SHA-256, hex: the copy must match it.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
}

/// The answer to [`RolloutFetch`]: the bundle is here and an install
/// would take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutFetched {
    /// The version the bundle installs.
    pub version: String,
    /// The version installed on the member now.
    pub installed: Option<String>,
}

/// `rollout-install`: install the bundle of rolling update `rollout` the
/// receiver holds (its firmware-install job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutInstall {
    /// The rollout's id.
    pub rollout: String,
    /// The bundle's SHA-256, hex.
    pub sha256: String,
}

/// The answer to [`RolloutInstall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutInstalling {
    /// The install job's id, on the receiver.
    pub job: String,
}

/// `image-export-end` of export `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageExportEnd {
    /// The export's id.
    pub id: String,
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// Written in a version outside this build's window (checked before the
    /// call is read).
    #[error("peer protocol version {theirs} is not served here ({oldest}..={ours})")]
    UnsupportedVersion {
        /// This build's current version.
        ours: u32,
        /// The oldest version it serves.
        oldest: u32,
        /// The request's version.
        theirs: u32,
    },
    /// A served version, but the call does not decode.
    #[error("peer call {call}: {reason}")]
    Malformed {
        /// The call's name (`?` when even that is unreadable).
        call: String,
        /// serde's message (it names the field).
        reason: String,
    },
}

/// An answer that does not decode as the call's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer to peer call {call} does not decode: {reason}")]
pub struct PeerDecodeError {
    /// The call.
    pub call: &'static str,
    /// serde's message (it names the field).
    pub reason: String,
}

/// The envelope of `call`, written in `version`.
pub fn envelope<Vm: Serialize, C: Call<Vm>>(
    version: u32,
    call: C,
) -> Result<Value, serde_json::Error> {
    serde_json::to_value(PeerEnvelope {
        version,
        call: call.into_call(),
    })
}

/// Reads a request: the version first (refused outside `window` before
/// anything else is read), then the call.
pub fn decode_request<Vm: DeserializeOwned>(
    window: PeerWindow,
    body: Value,
) -> Result<PeerCall<Vm>, PeerRefusal> {
    let theirs = match body.get("version") {
        None => UNVERSIONED,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| PeerRefusal::Malformed {
                call: "?".into(),
                reason: format!("version: not a protocol version: {v}"),
            })?,
    };
    if !window.serves(theirs) {
        return Err(PeerRefusal::UnsupportedVersion {
            ours: window.current,
            oldest: window.oldest,
            theirs,
        });
    }
    let call = body
        .pointer("/call/call")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    serde_json::from_value::<PeerEnvelope<Vm>>(body)
        .map(|e| e.call)
        .map_err(|e| PeerRefusal::Malformed {
            call,
            reason: e.to_string(),
        })
}

/// Reads the answer to call `C`.
pub fn decode_reply<Vm, C: Call<Vm>>(v: Value) -> Result<C::Reply, PeerDecodeError> {
    serde_json::from_value(v).map_err(|e| PeerDecodeError {
        call: C::NAME,
        reason: e.to_string(),
    })
}

/// The answer to call `C`, for the wire.
pub fn encode_reply<Vm, C: Call<Vm>>(reply: &C::Reply) -> Result<Value, serde_json::Error> {
    serde_json::to_value(reply)
}

#[cfg(test)]
mod tests;
