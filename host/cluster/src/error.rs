//! [`StoreError`]: the errors of the cluster store.

use std::path::PathBuf;
use std::time::Duration;

use crate::db::DbError;
use crate::identity::PkiError;
use crate::types::{JoinRefused, NodeId, Revision};

/// Errors of the cluster store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create cluster data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened: corrupt, torn, locked by
    /// another open store, or of an unknown format.
    #[error("cannot open cluster store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DbError,
    },
    /// The database file opened but its contents could not be read.
    #[error("cluster store {path} is unreadable (corrupt?): {source}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DbError,
    },
    /// The database engine failed on the file's contents (it panicked).
    #[error("cluster store {path} is damaged and cannot be read: {reason}")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What the engine reported.
        reason: String,
    },
    /// The data directory belongs to another node id.
    #[error("cluster store {path} belongs to node {stored}, not to node {given}")]
    NodeIdMismatch {
        /// The database file.
        path: PathBuf,
        /// The node id recorded in it.
        stored: NodeId,
        /// The node id given to `open`.
        given: NodeId,
    },
    /// Bad input; nothing changed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The compare-and-swap precondition failed; nothing changed.
    #[error(
        "conflict on {kind}/{key}: expected revision {}, actual {}",
        fmt_rev(*.expected), fmt_rev(*.actual)
    )]
    Conflict {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
        /// The revision the write expected (`Some(0)`: absent).
        expected: Option<Revision>,
        /// The actual revision (`None`: absent).
        actual: Option<Revision>,
    },
    /// The object to delete does not exist; nothing changed.
    #[error("{kind}/{key} does not exist")]
    NotFound {
        /// The object kind.
        kind: String,
        /// The object key.
        key: String,
    },
    /// This node is not the leader; writes must go to the leader.
    #[error("this node is not the cluster leader (leader: {leader:?} at {leader_addr:?})")]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// The raft node failed or is shutting down.
    #[error("raft: {0}")]
    Raft(String),
    /// Waiting for the cluster timed out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A change was proposed but no majority confirmed it in time. It
    /// stays in the leader's log and may still be applied later (when the
    /// majority is back): its outcome is unknown.
    #[error(
        "the cluster did not confirm the change within {0:?}; it may still be applied later, \
         so its outcome is unknown: check the object before trying again"
    )]
    Unconfirmed(std::time::Duration),
    /// A change decided by the leader of `term` was not made: this host
    /// no longer leads in that term (see [`crate::Command::InTerm`]).
    #[error(
        "this host no longer leads the cluster in term {term}{}; the change it decided then \
         was not made",
        .entry_term.map(|t| format!(" (the change reached the log in term {t})")).unwrap_or_default()
    )]
    Deposed {
        /// The term the change was decided in.
        term: u64,
        /// The term of the log entry that carried it, if it reached the log.
        entry_term: Option<u64>,
    },
    /// The operation needs a cluster (created or joined) and this host has
    /// none.
    #[error("this host is not part of a cluster: run `nasvisor cluster create` or `nasvisor cluster join` first")]
    NotClustered,
    /// The host already belongs to a cluster.
    #[error("this host already belongs to cluster {cluster_id}")]
    AlreadyClustered {
        /// Its cluster.
        cluster_id: String,
    },
    /// A joining host must not hold desired state of its own.
    #[error("cannot join: {path} already holds {objects} objects of desired state (a joining host must be empty)")]
    NotEmpty {
        /// The database file.
        path: PathBuf,
        /// How many objects it holds.
        objects: usize,
    },
    /// The cluster refused the join; nothing changed.
    #[error("join refused: {0}")]
    JoinRefused(#[from] JoinRefused),
    /// The cluster PKI (CA, certificates, key files).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The cluster TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The operation needs the cluster network and the store was opened
    /// without one ([`crate::ClusterStore::open`]).
    #[error("this cluster store was opened without a cluster network; it cannot {0}")]
    NoNetwork(&'static str),
    /// The cluster endpoint could not listen.
    #[error("cannot listen for the cluster endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A call to another host failed.
    #[error("cluster transport: {0}")]
    Transport(#[from] CallError),
    /// The leader (or the host asked) failed to carry out the request.
    #[error("node {node_id}: {message}")]
    Remote {
        /// The host that answered.
        node_id: NodeId,
        /// Its error.
        message: String,
    },
}

fn fmt_rev(r: Option<Revision>) -> String {
    match r {
        None => "none (absent)".into(),
        Some(0) => "0 (absent)".into(),
        Some(r) => r.to_string(),
    }
}

pub(crate) fn raft_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Raft(e.to_string())
}

/// A TLS configuration could not be built from the host's identity.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The cluster endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configurations could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Errors of one call to a peer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made; nothing was sent.
    #[error("cannot connect to node {target} at {addr}: {reason}")]
    Connect {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The call did not complete in time (it may have been carried out).
    #[error("call to node {target} at {addr} timed out after {timeout:?}")]
    Timeout {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection failed during the call (it may have been carried
    /// out). A TLS refusal of this host's certificate shows up here too
    /// (TLS 1.3 reports it after the handshake).
    #[error("call to node {target} at {addr} failed: {reason}")]
    Io {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer refused this host (`403`: not a member).
    #[error("node {target} at {addr} refused this host: {reason}")]
    Refused {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What it said.
        reason: String,
    },
    /// The peer answered with an HTTP error or an unreadable body.
    #[error("bad answer from node {target} at {addr}: {reason}")]
    BadAnswer {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

impl CallError {
    /// Whether the request certainly was not carried out.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Refused { .. })
    }

    /// Whether trying again (maybe elsewhere) may help: nothing was sent
    /// because no connection could be made. A refusal is final.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}
