//! The messages of the cluster endpoint and their routes: what a member
//! forwards to the leader ([`Forward`]), what a joining host sends
//! ([`JoinRequest`]) and receives ([`JoinResponse`]). Raft's own RPCs are
//! openraft's request and response types; the host service's requests are
//! [`crate::peer::PeerRequest`]. All travel as JSON bodies of `POST`s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Command, NodeId, Response as RaftResponse, Revision};

/// Raft append-entries (and heartbeats).
pub const PATH_APPEND: &str = "/v1/raft/append";
/// Raft vote.
pub const PATH_VOTE: &str = "/v1/raft/vote";
/// Raft install-snapshot (one chunk per request).
pub const PATH_SNAPSHOT: &str = "/v1/raft/snapshot";
/// Requests a member forwards to the leader.
pub const PATH_FORWARD: &str = "/v1/cluster/forward";
/// Requests of the host service of another member ([`crate::peer`]).
pub const PATH_PEER: &str = "/v1/peer";
/// A joining host redeems its token (join SNI only).
pub const PATH_JOIN: &str = "/v1/cluster/join";

/// A request a member sends to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forward {
    /// Commit this command.
    Write(Command),
    /// A linearizable read of one object.
    Read {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
    },
    /// The sender (identified by its certificate) was admitted and now
    /// serves: add it as a learner and promote it to voter.
    JoinComplete,
    /// Remove a host from the cluster.
    Remove {
        /// The host to remove.
        node_id: NodeId,
    },
    /// Connectivity check; answered by any member, leader or not.
    Ping,
}

/// The leader's answer to a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardReply {
    /// The command was committed and applied with this response.
    Written(RaftResponse),
    /// The object and its revision, if it exists.
    Read(Option<(serde_json::Value, Revision)>),
    /// Done.
    Done,
}

/// Why a [`Forward`] failed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ForwardError {
    /// The receiver is not the leader (any more).
    #[error("node is not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader, if known.
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// The leader failed to carry it out.
    #[error("{0}")]
    Failed(String),
}

/// What a joining host sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The cluster id from the token.
    pub cluster_id: String,
    /// The token's secret (the server stores only its hash).
    pub secret: String,
    /// A certificate signing request for the host's own key (PEM).
    pub csr_pem: String,
    /// The host's cluster address (`host:port`).
    pub addr: String,
    /// The node id asked for; `None`: assigned by the cluster.
    pub node_id: Option<NodeId>,
}

/// What a joining host receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster id.
    pub cluster_id: String,
    /// The node id assigned.
    pub node_id: NodeId,
    /// The host's certificate (PEM).
    pub node_cert_pem: String,
    /// The CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The CA key (PEM): every voter keeps it, to sign later joins.
    pub ca_key_pem: Option<String>,
    /// The current members and their addresses.
    pub members: BTreeMap<NodeId, String>,
    /// The key pins recorded for the members (absent for members that
    /// joined before keys were recorded, and from older leaders).
    #[serde(default)]
    pub member_keys: BTreeMap<NodeId, String>,
    /// The leader that admitted the host.
    pub leader_id: NodeId,
}
