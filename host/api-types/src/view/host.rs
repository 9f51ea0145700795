//! The host answer (`Host` schema).

use crate::view::AccelKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A host's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// The raft leader.
    Leader,
    /// Another member.
    Follower,
    /// A single host, never clustered.
    Single,
}

/// A host's health, as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostHealth {
    /// Answers, and its own checks find nothing wrong.
    #[default]
    Healthy,
    /// Answers, but its checks find faults (`health_reasons`).
    Degraded,
    /// Put into maintenance by an administrator (`host degrade`).
    Maintenance,
    /// Silent beyond the threshold (or removed): whether it runs is not
    /// known.
    Offline,
    /// The host answering cannot reach the cluster's majority: what it
    /// shows of the others may be stale.
    Unknown,
    /// Lost, and known to run no VM any more (it fenced itself past its
    /// deadline, or the fence command confirmed it): its HA VMs fail over.
    Fenced,
}

/// A host of the cluster (`GET /api/v1/host`, `GET /api/v1/hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Host", deny_unknown_fields)]
pub struct HostView {
    /// Host id.
    pub id: String,
    /// Host name.
    pub name: String,
    /// nasvisord version.
    pub version: String,
    /// CPUs.
    #[schemars(range(min = 1))]
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Its part in the cluster.
    pub cluster_role: ClusterRole,
    /// The accelerator VMs of this host run under (decided by booting a
    /// probe guest).
    pub accel: AccelKind,
    /// Why that accelerator, e.g. why KVM is not used.
    pub accel_reason: String,
    /// Memory left for VMs, MiB.
    pub free_memory_mib: u64,
    /// QEMU version.
    pub qemu_version: String,
    /// Raft node id.
    #[schemars(range(min = 1))]
    pub node_id: u64,
    /// Cluster endpoint, ip:port.
    pub address: String,
    /// Answers the leader's heartbeats.
    pub online: bool,
    /// No new VMs are placed here.
    pub cordoned: bool,
    /// VMs living on the host.
    pub vms: u64,
    /// When the leader last heard from it.
    pub last_seen: Option<String>,
    /// The peer protocol version it speaks, as the leader last heard it
    /// (null before its first heartbeat answer).
    #[serde(default)]
    pub protocol: Option<u32>,
    /// False when it refused the leader's protocol version: the members are
    /// more than one version apart and it is not served (see
    /// `docs/cluster.md`).
    #[serde(default = "compatible")]
    pub protocol_compatible: bool,
    /// Its health.
    #[serde(default)]
    pub health: HostHealth,
    /// Why it is not healthy (empty when it is).
    #[serde(default)]
    pub health_reasons: Vec<String>,
}

fn compatible() -> bool {
    true
}
