//! The raft type configuration: node ids, node addresses, the command that
//! goes through the replicated log and its response.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A host's id inside the cluster. Stable for the life of the host's data
/// directory (checked at open).
pub type NodeId = u64;

/// A cluster member as stored in the membership config: the address other
/// hosts reach its cluster endpoint at (`host:port`).
pub type Node = openraft::BasicNode;

/// A revision number. Every successful mutation of the desired state bumps
/// the cluster-wide revision by one; an object's revision is the cluster
/// revision of its last write. Revision 0 means "never written".
pub type Revision = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of nasvisor's replicated desired state.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft instance of this type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id of this type configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry of this type configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error of this type configuration.
pub type StorageError = openraft::StorageError<NodeId>;
/// Stored membership of this type configuration.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Snapshot metadata of this type configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot of this type configuration.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Raft metrics of this type configuration.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

/// A change to the desired state. This is what goes through the replicated
/// log; applying it is deterministic (see [`crate::state::DesiredState::apply`]).
///
/// `expected_revision` is a compare-and-swap precondition:
/// - `None`: unconditional;
/// - `Some(0)`: the object must not exist (create only);
/// - `Some(r)`: the object must exist with revision `r`.
///
/// A failed precondition is not an error of the log: the entry is committed
/// and applied as a no-op whose response is [`Response::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace the object `kind`/`key` with `value`.
    Put {
        /// The object kind, e.g. `vm`, `volume`, `vswitch`.
        kind: String,
        /// The object key, unique within its kind.
        key: String,
        /// The object itself.
        value: serde_json::Value,
        /// Compare-and-swap precondition (see [`Command`]).
        expected_revision: Option<Revision>,
    },
    /// Delete the object `kind`/`key`.
    Delete {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
        /// Compare-and-swap precondition (see [`Command`]).
        expected_revision: Option<Revision>,
    },
    /// Redeem a join token and admit a new host (see
    /// [`crate::state::DesiredState::apply`]): the token must exist, be
    /// unused and not expired at `now_ms` (the leader's clock, carried in
    /// the command so that applying it is deterministic), the member limit
    /// must not be reached, the node id must never have been used, and the
    /// key must not be another host's. On success the token is marked used
    /// and the host is recorded as joining, with its key pin.
    Admit {
        /// SHA-256 (hex) of the token's secret.
        token_hash: String,
        /// The leader's wall clock, milliseconds since the Unix epoch.
        now_ms: u64,
        /// The node id the host asks for; `None`: the next free one.
        node_id: Option<NodeId>,
        /// The host's cluster address.
        addr: String,
        /// The pin of the host's TLS key ([`crate::ca::key_pin`]), from its
        /// certificate signing request. `None` only in entries written
        /// before keys were recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// `command` (a put or a delete), applied only if this entry was
    /// proposed by the leader of term `term`. A leader's decision taken on
    /// what it saw while leading (that a host has been silent long enough
    /// to be fenced, say) must not be committed once it was deposed: a new
    /// leader may have heard that host meanwhile. Such a command is never
    /// forwarded, and should a deposed leader's entry reach the log under
    /// a later term, applying it changes nothing
    /// ([`Response::WrongTerm`]).
    InTerm {
        /// The term of the leadership the decision was taken in.
        term: u64,
        /// The change.
        command: Box<Command>,
    },
}

/// Why a join was refused. Nothing changed in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum JoinRefused {
    /// The token is malformed, unknown or for another cluster.
    #[error("invalid join token: {reason}")]
    InvalidToken {
        /// Why.
        reason: String,
    },
    /// The token was already redeemed.
    #[error("join token already used (by node {node_id}); issue a new one")]
    TokenUsed {
        /// The node that redeemed it.
        node_id: NodeId,
    },
    /// The token expired.
    #[error("join token expired {expired_s_ago} s ago; issue a new one")]
    TokenExpired {
        /// How long ago, in seconds.
        expired_s_ago: u64,
    },
    /// The cluster has as many hosts as its limit.
    #[error(
        "the cluster already has {members} hosts, its limit (setting max_members = {limit}); \
         remove a host or raise the limit first"
    )]
    MemberLimit {
        /// The limit (setting `max_members`).
        limit: u32,
        /// The current number of hosts.
        members: u32,
    },
    /// The requested node id is or was in use.
    #[error("node id {node_id} is already used in this cluster; choose another or let the cluster assign one")]
    NodeIdTaken {
        /// The node id.
        node_id: NodeId,
    },
    /// The joining host's key is already recorded for another host.
    #[error("the key of this host's certificate request is already node {node_id}'s; a joining host must create a key of its own")]
    KeyTaken {
        /// The host that has the key.
        node_id: NodeId,
    },
    /// The request itself is unusable (bad address, bad CSR).
    #[error("invalid join request: {field}: {reason}")]
    BadRequest {
        /// The offending field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The host asked is not the leader; ask the leader.
    #[error("the host asked is not the cluster leader (leader: {leader_addr:?})")]
    NotLeader {
        /// The leader's cluster address, if known.
        leader_addr: Option<String>,
    },
    /// The cluster failed while admitting the host.
    #[error("the cluster failed to admit the host: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The command was applied; `revision` is the new cluster revision, and
    /// (for a put) the object's new revision.
    Applied {
        /// The new cluster-wide revision.
        revision: Revision,
    },
    /// The compare-and-swap precondition failed; nothing changed.
    Conflict {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
        /// The revision the command expected.
        expected: Option<Revision>,
        /// The object's actual revision (`None` if it does not exist).
        actual: Option<Revision>,
    },
    /// A delete of an object that does not exist; nothing changed.
    NotFound {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
    },
    /// A blank or membership entry: no desired-state change.
    Noop,
    /// [`Command::Admit`] succeeded: the host is recorded as joining.
    Admitted {
        /// The node id assigned to the host.
        node_id: NodeId,
    },
    /// [`Command::Admit`] was refused; nothing changed.
    Refused {
        /// Why.
        reason: JoinRefused,
    },
    /// [`Command::InTerm`] reached the log under another term than its
    /// own (or wrapped a command it may not); nothing changed.
    WrongTerm {
        /// The term the command was decided in.
        term: u64,
        /// The term of the log entry that carried it.
        entry_term: u64,
    },
}
