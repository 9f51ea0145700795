//! [`ClusterStore`]: the host's handle on the replicated desired state.
//!
//! A single host is a cluster of one: `open` initializes a one-voter raft
//! cluster on first start, and every write goes through the raft log even
//! then. Adding a host later is a membership change on the same [`Raft`]:
//! - [`ClusterStore::create_cluster`] (or [`ClusterStore::create`]) gives
//!   the host a cluster id and its own CA; from then on it can serve the
//!   cluster endpoint ([`ClusterStore::serve`]) and admit hosts;
//! - [`ClusterStore::issue_join_token`] and [`ClusterStore::join`] (see
//!   [`crate::join`]) add hosts, [`ClusterStore::remove_member`] removes one
//!   (these live in `membership.rs` and `join.rs`);
//! - writes on a follower are forwarded to the leader over the mutual-TLS
//!   transport (the node internals, `node.rs`, do that); reads are local
//!   ([`ClusterStore::get_linearizable`] asks the leader).
//!
//! The network (TLS, the transport, the CA) is not in this crate: a store
//! that may be part of a cluster is opened with one
//! ([`ClusterStore::open_with_network`]); [`ClusterStore::open`] opens a
//! host that is a cluster of one and stays one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::{Config, ServerState, SnapshotPolicy};
use redb::Database;
use serde::{Deserialize, Serialize};

use crate::db::WriteWatch;
use crate::error::{raft_err, StoreError};
use crate::identity::{Identity, PkiError};
use crate::log_store::LogStore;
use crate::net::{call, ClusterNet, ServerHandle};
use crate::node::{written, Shared};
use crate::open::open_db;
use crate::peer::{PeerHandler, PeerReply, PeerRequest};
use crate::raft_net::{ClientSlot, NetworkFactory};
use crate::state::{NodeStatus, DEFAULT_MAX_MEMBERS};
use crate::types::{Command, Node, NodeId, Raft, RaftMetrics, Revision};
use crate::wire::{Forward, ForwardReply, PATH_PEER};
use nasvisor_limits::ServerLimits;

pub use crate::node::{FORWARD_TIMEOUT, PROMOTE_TIMEOUT};

/// The file name of the host's cluster database inside its data directory.
pub const DB_FILE: &str = "cluster.redb";

/// The longest accepted object kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// The longest accepted object key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The largest accepted object value, in bytes of JSON.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// How long `open` waits for a cluster of one to elect itself.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for the raft tasks to release the database.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Settings of a new cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// The largest number of hosts, 1 to 7 (default 7). A join beyond it is
    /// refused with [`JoinRefused::MemberLimit`].
    pub max_members: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }
}

/// One host of the cluster, as [`ClusterStore::members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub node_id: NodeId,
    /// Its cluster address.
    pub addr: String,
    /// Its status.
    pub status: NodeStatus,
    /// Whether it is a raft voter in the current membership.
    pub voter: bool,
    /// The pin of its TLS key ([`crate::ca::key_pin`]); `None` for a host
    /// that joined before keys were recorded, until the leader records it.
    pub key: Option<String>,
}

/// The host's handle on the replicated desired state.
pub struct ClusterStore {
    pub(crate) shared: Arc<Shared>,
    path: PathBuf,
    log: LogStore,
    db: Arc<Database>,
    writes: WriteWatch,
    pub(crate) server: std::sync::Mutex<Option<Box<dyn ServerHandle>>>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("node_id", &self.shared.node_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ClusterStore {
    /// Open (or create) the cluster store in `data_dir` for node `node_id`,
    /// reachable by its peers at `addr`.
    ///
    /// On first start this initializes a single-node cluster (membership
    /// `{node_id: addr}`); on later starts it loads the log and the applied
    /// state. When this node is the only voter, it returns once the node has
    /// elected itself leader, so writes work at once.
    ///
    /// A host that has created or joined a cluster (`<data_dir>/pki/`
    /// exists) is reopened as a member: its raft talks to its peers over
    /// mutual TLS, and it is never re-initialized as a cluster of one. Call
    /// [`Self::serve`] to answer its peers.
    ///
    /// Preconditions: `data_dir` is not in use by another open store (the
    /// database file is locked); `node_id` is the id this directory was
    /// created with.
    pub async fn open_with_network(
        data_dir: impl AsRef<Path>,
        node_id: NodeId,
        addr: impl Into<String>,
        net: Arc<dyn ClusterNet>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(data_dir.as_ref(), node_id, addr.into(), Some(net)).await
    }

    /// [`Self::open_with_network`] without a network: a host that is a
    /// cluster of one and cannot create or join a cluster
    /// ([`StoreError::NoNetwork`]). A data directory that belongs to a
    /// cluster is refused.
    pub async fn open(
        data_dir: impl AsRef<Path>,
        node_id: NodeId,
        addr: impl Into<String>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(data_dir.as_ref(), node_id, addr.into(), None).await
    }

    async fn open_inner(
        dir: &Path,
        node_id: NodeId,
        addr: String,
        net: Option<Arc<dyn ClusterNet>>,
    ) -> Result<Self, StoreError> {
        if addr.trim().is_empty() {
            return Err(StoreError::Invalid {
                field: "addr",
                reason: "must not be empty".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let pki = match (Identity::load(dir)?, &net) {
            (None, _) => None,
            (Some(_), None) => return Err(StoreError::NoNetwork("open a member of a cluster")),
            (Some(p), Some(net)) => {
                if p.node_id != node_id {
                    return Err(StoreError::NodeIdMismatch {
                        path: Identity::dir(dir),
                        stored: p.node_id,
                        given: node_id,
                    });
                }
                // Fail here, with the file named, rather than at the first
                // handshake.
                let checked = net.check_identity(p).map_err(|e| match e {
                    PkiError::Bad { path, reason } => PkiError::Bad {
                        path: dir.join(path),
                        reason,
                    },
                    e => e,
                })?;
                Some(checked)
            }
        };
        let (db, log, sm, writes) = open_db(&path, node_id)?;

        let config = Config {
            cluster_name: "nasvisor".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(raft_err)?;

        let client = ClientSlot::default();
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            NetworkFactory::new(client.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        count_leader_changes(raft.metrics());
        let clustered = pki.is_some();
        let shared = Arc::new(Shared {
            node_id,
            dir: dir.to_owned(),
            raft,
            sm,
            net,
            identity: RwLock::new(None),
            client,
            bootstrap: RwLock::new(BTreeMap::new()),
            recording: Default::default(),
            limits: RwLock::new(ServerLimits::default()),
            admin: tokio::sync::Mutex::new(()),
            peer_handler: RwLock::new(None),
        });
        if let Some(pki) = pki {
            shared.install_identity(pki)?;
        }
        let store = Self {
            shared,
            path,
            log,
            db,
            writes,
            server: std::sync::Mutex::new(None),
        };

        // A member of a cluster gets its membership from the leader; only a
        // host that never created or joined a cluster is a cluster of one.
        if !clustered && !store.raft().is_initialized().await.map_err(raft_err)? {
            tracing::info!(node_id, %addr, "initializing a single-node cluster");
            let members = BTreeMap::from([(node_id, Node::new(addr))]);
            store.raft().initialize(members).await.map_err(raft_err)?;
        }

        let sole_voter = store
            .raft()
            .with_raft_state(move |st| {
                let voters: Vec<NodeId> = st.membership_state.effective().voter_ids().collect();
                voters == [node_id]
            })
            .await
            .map_err(raft_err)?;
        if sole_voter {
            // No need to sit out an election timeout: a sole voter wins at once.
            store.raft().trigger().elect().await.map_err(raft_err)?;
            store
                .raft()
                .wait(Some(LEADER_TIMEOUT))
                .metrics(
                    |m| m.state == ServerState::Leader && m.current_leader == Some(node_id),
                    "single-node cluster elects itself",
                )
                .await
                .map_err(|_| StoreError::Timeout("this node to become leader"))?;
        }
        Ok(store)
    }

    /// The node id of the host whose store is in `data_dir`, when it has
    /// created or joined a cluster (`None`: never clustered, or no store).
    pub fn member_node_id(data_dir: impl AsRef<Path>) -> Result<Option<NodeId>, StoreError> {
        Ok(Identity::load(data_dir.as_ref())?.map(|p| p.node_id))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raft node.
    pub fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    /// Create or replace `kind`/`key`; see [`Command`] for
    /// `expected_revision`. Returns the object's new revision.
    pub async fn put(
        &self,
        kind: &str,
        key: &str,
        value: serde_json::Value,
        expected_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let cmd = put_command(kind, key, value, expected_revision)?;
        self.write(cmd).await
    }

    /// Like [`Self::put`], as the leader of `term`: made only if this host
    /// leads in that term until the change is committed, never forwarded
    /// (see [`Command::InTerm`]); otherwise [`StoreError::Deposed`].
    pub async fn put_in_term(
        &self,
        term: u64,
        kind: &str,
        key: &str,
        value: serde_json::Value,
        expected_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let cmd = put_command(kind, key, value, expected_revision)?;
        let resp = self.shared.write_in_term(term, cmd).await?;
        written(resp)
    }

    /// The term this host leads the cluster in; `None` when it does not.
    pub fn leader_term(&self) -> Option<u64> {
        self.shared.leader_term()
    }

    /// Delete `kind`/`key`; see [`Command`] for `expected_revision`.
    /// Returns the new cluster revision.
    pub async fn delete(
        &self,
        kind: &str,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        validate(kind, key)?;
        self.write(Command::Delete {
            kind: kind.to_owned(),
            key: key.to_owned(),
            expected_revision,
        })
        .await
    }

    async fn write(&self, cmd: Command) -> Result<Revision, StoreError> {
        written(self.shared.write(cmd).await?)
    }

    /// `kind`/`key` and its revision, from this node's applied state (may
    /// lag the leader on a follower; see [`Self::get_linearizable`]).
    pub fn get(&self, kind: &str, key: &str) -> Option<(serde_json::Value, Revision)> {
        self.shared.get(kind, key)
    }

    /// Like [`Self::get`], without a copy of the value: `f` reads it in
    /// place (keep `f` short: the applied state is locked meanwhile).
    pub fn get_with<T>(
        &self,
        kind: &str,
        key: &str,
        f: impl FnOnce(&serde_json::Value, Revision) -> T,
    ) -> Option<T> {
        self.shared.get_with(kind, key, f)
    }

    /// Like [`Self::get`], linearizable: on the leader, after making sure
    /// it still leads and has applied everything committed before the
    /// call; on a follower of a cluster, the leader answers.
    pub async fn get_linearizable(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        match self.shared.read_linearizable(kind, key).await {
            Err(StoreError::NotLeader { .. }) if self.shared.has_client() => {
                let fwd = Forward::Read {
                    kind: kind.to_owned(),
                    key: key.to_owned(),
                };
                match self.shared.leader_call(fwd, FORWARD_TIMEOUT).await? {
                    ForwardReply::Read(v) => Ok(v),
                    other => Err(StoreError::Raft(format!("unexpected answer {other:?}"))),
                }
            }
            r => r,
        }
    }

    /// All objects of `kind` as `(key, value, revision)`, in key order, from
    /// this node's applied state.
    pub fn list(&self, kind: &str) -> Vec<(String, serde_json::Value, Revision)> {
        self.list_with(kind, |k, v, rev| Some((k.to_string(), v.clone(), rev)))
    }

    /// Like [`Self::list`], without copies of the values: `f` reads each
    /// one in place (`None` leaves it out). Keep `f` short: the applied
    /// state is locked meanwhile.
    pub fn list_with<T>(
        &self,
        kind: &str,
        f: impl FnMut(&str, &serde_json::Value, Revision) -> Option<T>,
    ) -> Vec<T> {
        self.list_with_revision(kind, f).1
    }

    /// Like [`Self::list_with`], with the cluster-wide revision of the
    /// state it read (see [`Self::revision`]).
    pub fn list_with_revision<T>(
        &self,
        kind: &str,
        mut f: impl FnMut(&str, &serde_json::Value, Revision) -> Option<T>,
    ) -> (Revision, Vec<T>) {
        let a = self.shared.sm.read();
        let list = a
            .state
            .list(kind)
            .filter_map(|(k, o)| f(k, &o.value, o.revision))
            .collect();
        (a.state.revision, list)
    }

    /// The kinds that have at least one object (the cluster's own `@`
    /// kinds excluded).
    pub fn kinds(&self) -> Vec<String> {
        self.shared
            .sm
            .read()
            .state
            .objects
            .keys()
            .filter(|k| !k.starts_with('@'))
            .cloned()
            .collect()
    }

    /// How long the oldest write to this node's database that has not
    /// returned has been running (`None`: none is running). Reads are
    /// served from memory: a disk that stopped answering shows here, and
    /// only here, until a write's caller gives up.
    pub fn oldest_write(&self) -> Option<std::time::Duration> {
        self.writes.oldest()
    }

    /// The cluster-wide revision of this node's applied state.
    pub fn revision(&self) -> Revision {
        self.shared.sm.read().state.revision
    }

    /// Whether this node currently is the leader.
    pub fn is_leader(&self) -> bool {
        self.shared.is_leader()
    }

    /// Whether this host is in touch with a majority of the voters: as
    /// leader, a quorum acknowledged it within `within`; as follower, it
    /// follows a leader (a follower that lost its leader turns candidate
    /// after an election timeout and has none). A sole voter always has
    /// quorum.
    pub fn has_quorum(&self, within: Duration) -> bool {
        let m = self.metrics();
        let voters = m.membership_config.membership().voter_ids().count();
        match m.state {
            ServerState::Leader => {
                voters <= 1
                    || m.millis_since_quorum_ack
                        .is_some_and(|ms| ms <= within.as_millis() as u64)
            }
            ServerState::Follower | ServerState::Learner => m.current_leader.is_some(),
            _ => false,
        }
    }

    /// On the leader, how long ago a majority of the voters last
    /// acknowledged it (zero for a sole voter); `None` on any other node.
    pub fn quorum_ack_age(&self) -> Option<Duration> {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return None;
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return Some(Duration::ZERO);
        }
        m.millis_since_quorum_ack.map(Duration::from_millis)
    }

    /// A copy of the current raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft().metrics().borrow().clone()
    }

    /// The number of log entries currently stored (not yet purged).
    pub fn stored_log_entries(&self) -> Result<u64, StoreError> {
        self.log
            .stored_entries()
            .map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Stop the cluster endpoint and the raft node and close the database.
    /// When this returns the data directory can be opened again.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        let Self {
            shared,
            log,
            db,
            server,
            ..
        } = self;
        let server = server.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = server {
            h.stop().await;
        }
        let res = shared.raft.shutdown().await.map_err(raft_err);
        shared
            .client
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop((shared, log));
        // The raft tasks own clones of the stores; wait until they are gone
        // so that the database file is unlocked.
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        while Arc::strong_count(&db) > 1 {
            if Instant::now() > deadline {
                return Err(StoreError::Timeout("raft tasks to release the store"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(db);
        res
    }

    /// Serve requests of the other members with `handler` (replaces the
    /// previous one). Without a handler they get an error.
    pub fn set_peer_handler(&self, handler: PeerHandler) {
        *self
            .shared
            .peer_handler
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    /// Ask member `node_id` to carry out `method` with `body` within
    /// `timeout`. The outer error is the transport's (host unreachable,
    /// not a member, timeout); the inner one the handler's.
    pub async fn call_peer(
        &self,
        node_id: NodeId,
        method: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<PeerReply, StoreError> {
        let addr = self
            .members()
            .into_iter()
            .find(|m| m.node_id == node_id)
            .map(|m| m.addr)
            .ok_or_else(|| StoreError::Invalid {
                field: "node_id",
                reason: format!("node {node_id} is not a member of this cluster"),
            })?;
        let req = PeerRequest {
            method: method.to_owned(),
            body,
        };
        if node_id == self.node_id() {
            return Ok(self.shared.handle_peer(node_id, req).await);
        }
        let t = self.shared.client().ok_or(StoreError::NotClustered)?;
        Ok(call(&*t, node_id, &addr, PATH_PEER, &req, timeout).await?)
    }
}

fn validate(kind: &str, key: &str) -> Result<(), StoreError> {
    if kind.is_empty() || kind.len() > MAX_KIND_LEN {
        return Err(StoreError::Invalid {
            field: "kind",
            reason: format!("must be 1 to {MAX_KIND_LEN} bytes, got {}", kind.len()),
        });
    }
    if let Some(c) = kind
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(StoreError::Invalid {
            field: "kind",
            reason: format!("{c:?} in {kind:?}: only a-z, 0-9, '-', '_' and '.' are allowed"),
        });
    }
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid {
            field: "key",
            reason: format!("must be 1 to {MAX_KEY_LEN} bytes, got {}", key.len()),
        });
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "key",
            reason: format!("{key:?} contains a control character"),
        });
    }
    Ok(())
}

/// A validated [`Command::Put`].
fn put_command(
    kind: &str,
    key: &str,
    value: serde_json::Value,
    expected_revision: Option<Revision>,
) -> Result<Command, StoreError> {
    validate(kind, key)?;
    let len = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > MAX_VALUE_LEN {
        return Err(StoreError::Invalid {
            field: "value",
            reason: format!("{len} bytes of JSON, more than {MAX_VALUE_LEN}"),
        });
    }
    Ok(Command::Put {
        kind: kind.to_owned(),
        key: key.to_owned(),
        value,
        expected_revision,
    })
}

/// Counts the changes of the leader this node sees, for `/metrics`, until
/// the raft node shuts down (its metrics channel closes).
fn count_leader_changes(mut rx: tokio::sync::watch::Receiver<RaftMetrics>) {
    tokio::spawn(async move {
        let mut leader = rx.borrow().current_leader;
        while rx.changed().await.is_ok() {
            let now = rx.borrow().current_leader;
            if now != leader {
                leader = now;
                nasvisor_metrics::raft_leader_changed();
            }
        }
    });
}
