//! The cluster answers (`Cluster`, `Member`, `JoinToken` schemas).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A member's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Being added.
    Joining,
    /// A member.
    Member,
    /// Removed: it can no longer talk to the others.
    Removed,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Member", deny_unknown_fields)]
pub struct MemberView {
    /// Raft node id.
    pub node_id: u64,
    /// Cluster endpoint.
    pub addr: String,
    /// Standing.
    pub status: MemberStatus,
    /// Votes.
    pub voter: bool,
    /// SHA-256 of the member's TLS public key (its certificate's
    /// SubjectPublicKeyInfo), recorded when it joined: a peer claiming this
    /// node id is admitted only with this key. null for a member that joined
    /// before keys were recorded, until the leader records it.
    pub key: Option<String>,
}

/// The cluster this host belongs to (`GET /api/v1/cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Cluster", deny_unknown_fields)]
pub struct ClusterView {
    /// false for a single host that was never made a cluster.
    pub clustered: bool,
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// SHA-256 of the cluster CA certificate.
    pub ca_fingerprint: Option<String>,
    /// Most hosts.
    #[schemars(range(min = 1, max = 7))]
    pub max_members: u32,
    /// This host's raft node id.
    pub this_node: u64,
    /// This host's cluster endpoint (host:port).
    pub address: String,
    /// The leader's node id.
    pub leader: Option<u64>,
    /// Members.
    pub members: Vec<MemberView>,
}

/// A join token (`POST /api/v1/cluster/join-tokens`). Its `Debug` hides
/// the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "JoinToken", deny_unknown_fields)]
pub struct JoinTokenView {
    /// Give it to `nasvisor cluster join` on the new host; shown once.
    pub token: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
}

impl std::fmt::Debug for JoinTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenView")
            .field("token", &crate::REDACTED)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
