//! [`ClusterStore`]: the host's handle on the replicated desired state.
//!
//! A single host is a cluster of one: `open` initializes a one-voter raft
//! cluster on first start, and every write goes through the raft log even
//! then. Adding a host later is a membership change on the same [`Raft`]:
//! - [`ClusterStore::create_cluster`] (or [`ClusterStore::create`]) gives
//!   the host a cluster id and its own CA; from then on it can serve the
//!   cluster endpoint ([`ClusterStore::serve`]) and admit hosts;
//! - [`ClusterStore::issue_join_token`] and [`ClusterStore::join`] (see
//!   [`crate::join`]) add hosts, [`ClusterStore::remove_member`] removes one;
//! - writes on a follower are forwarded to the leader over the mutual-TLS
//!   transport; reads are local ([`ClusterStore::get_linearizable`] asks
//!   the leader).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::ca::{Pki, PkiError};
use crate::db::DbError;
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, TransportSlot};
use crate::state::{
    ClusterInfo, NodeRecord, NodeStatus, DEFAULT_MAX_MEMBERS, KEY_CLUSTER_INFO, KIND_CLUSTER,
    KIND_NODE,
};
use crate::state_machine::StateMachineStore;
use crate::tls::TlsError;
use crate::transport::{
    spawn_server, CallError, Forward, ForwardError, ForwardReply, PeerTransport, ServerHandle,
    PATH_FORWARD,
};
use crate::types::{Command, JoinRefused, Node, NodeId, Raft, RaftMetrics, Response, Revision};
use nasvisor_limits::{ConnectionGate, Exempt, ServerLimits};

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
/// How long a write or read forwarded to the leader may take, including
/// waiting for a leader to be elected.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader may take to bring a joining host up to date and
/// promote it.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

const IDENTITY: TableDefinition<&str, u64> = TableDefinition::new("identity");
const KEY_NODE_ID: &str = "node_id";

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

fn raft_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Raft(e.to_string())
}

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

/// What the store shares with the cluster endpoint's tasks.
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) dir: PathBuf,
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachineStore,
    pub(crate) pki: RwLock<Option<Arc<Pki>>>,
    pub(crate) transport: TransportSlot,
    /// Members of the cluster this host is joining and their key pins (from
    /// the join answer), admitted until this host has received the
    /// membership.
    pub(crate) bootstrap: RwLock<BTreeMap<NodeId, Option<String>>>,
    /// The hosts whose key the leader is recording.
    pub(crate) recording: crate::trust::Recording,
    /// The limits of the cluster endpoint.
    pub(crate) limits: RwLock<ServerLimits>,
    /// Serializes membership changes made by this host as leader.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// The host service's handler of [`crate::peer`] requests.
    pub(crate) peer_handler: RwLock<Option<crate::peer::PeerHandler>>,
}

/// The host's handle on the replicated desired state.
pub struct ClusterStore {
    pub(crate) shared: Arc<Shared>,
    path: PathBuf,
    log: LogStore,
    db: Arc<Database>,
    server: std::sync::Mutex<Option<ServerHandle>>,
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
    pub async fn open(
        data_dir: impl AsRef<Path>,
        node_id: NodeId,
        addr: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let addr = addr.into();
        if addr.trim().is_empty() {
            return Err(StoreError::Invalid {
                field: "addr",
                reason: "must not be empty".into(),
            });
        }
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let pki = Pki::load(dir)?;
        if let Some(p) = &pki {
            if p.node_id != node_id {
                return Err(StoreError::NodeIdMismatch {
                    path: Pki::dir(dir),
                    stored: p.node_id,
                    given: node_id,
                });
            }
        }
        let (db, log, sm) = open_db(&path, node_id)?;

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

        let transport = TransportSlot::default();
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            NetworkFactory::new(transport.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        let clustered = pki.is_some();
        let shared = Arc::new(Shared {
            node_id,
            dir: dir.to_owned(),
            raft,
            sm,
            pki: RwLock::new(None),
            transport,
            bootstrap: RwLock::new(BTreeMap::new()),
            recording: Default::default(),
            limits: RwLock::new(ServerLimits::default()),
            admin: tokio::sync::Mutex::new(()),
            peer_handler: RwLock::new(None),
        });
        if let Some(pki) = pki {
            shared.install_pki(pki)?;
        }
        let store = Self {
            shared,
            path,
            log,
            db,
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
        Ok(Pki::load(data_dir.as_ref())?.map(|p| p.node_id))
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
        self.write(Command::Put {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value,
            expected_revision,
        })
        .await
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
        let resp = self.shared.write(cmd).await?;
        match resp {
            Response::Applied { revision } => Ok(revision),
            Response::Conflict {
                kind,
                key,
                expected,
                actual,
            } => Err(StoreError::Conflict {
                kind,
                key,
                expected,
                actual,
            }),
            Response::NotFound { kind, key } => Err(StoreError::NotFound { kind, key }),
            Response::Noop | Response::Admitted { .. } | Response::Refused { .. } => Err(
                StoreError::Raft(format!("unexpected response to a write: {resp:?}")),
            ),
        }
    }

    /// `kind`/`key` and its revision, from this node's applied state (may
    /// lag the leader on a follower; see [`Self::get_linearizable`]).
    pub fn get(&self, kind: &str, key: &str) -> Option<(serde_json::Value, Revision)> {
        self.shared.get(kind, key)
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
            Err(StoreError::NotLeader { .. }) if self.shared.has_transport() => {
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
        let a = self.shared.sm.read();
        a.state
            .list(kind)
            .map(|(k, o)| (k.clone(), o.value.clone(), o.revision))
            .collect()
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
            h.task.abort();
            let _ = h.task.await;
        }
        let res = shared.raft.shutdown().await.map_err(raft_err);
        shared
            .transport
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
}

/// The cluster: creation, the endpoint, members.
impl ClusterStore {
    /// `nasvisor cluster create`: open (or create) the store in `data_dir`
    /// like [`Self::open`], then make it a new cluster with its own CA
    /// ([`Self::create_cluster`]). The desired state already there is kept.
    pub async fn create(
        data_dir: impl AsRef<Path>,
        node_id: NodeId,
        addr: impl Into<String>,
        settings: ClusterSettings,
    ) -> Result<Self, StoreError> {
        let store = Self::open(data_dir, node_id, addr).await?;
        match store.create_cluster(settings).await {
            Ok(_) => Ok(store),
            Err(e) => {
                let _ = store.shutdown().await;
                Err(e)
            }
        }
    }

    /// Make this single-host store a new cluster: a cluster id, the
    /// cluster's CA (ECDSA P-256) and this host's certificate under
    /// `<data_dir>/pki/`, and the replicated cluster record. The host's
    /// address is its address in the membership (the `addr` it was opened
    /// with).
    ///
    /// Preconditions: this host is not part of a cluster yet, and is the
    /// sole voter and leader.
    pub async fn create_cluster(
        &self,
        settings: ClusterSettings,
    ) -> Result<ClusterInfo, StoreError> {
        let s = &self.shared;
        if let Some(p) = s.pki() {
            return Err(StoreError::AlreadyClustered {
                cluster_id: p.cluster_id.clone(),
            });
        }
        check_max_members(settings.max_members)?;
        let (voters, addr) = {
            let m = s.raft.metrics().borrow().membership_config.clone();
            let voters: Vec<NodeId> = m.membership().voter_ids().collect();
            let addr = m.membership().get_node(&s.node_id).map(|n| n.addr.clone());
            (voters, addr)
        };
        let Some(addr) = addr.filter(|_| voters == [s.node_id] && s.is_leader()) else {
            return Err(StoreError::Invalid {
                field: "cluster",
                reason: "only a single host that leads itself can create a cluster".into(),
            });
        };
        let pki = Pki::create(s.node_id, &addr)?;
        let info = ClusterInfo {
            cluster_id: pki.cluster_id.clone(),
            ca_fingerprint: pki.ca.fingerprint(),
            max_members: settings.max_members,
        };
        // The records first, the files last: a crash in between leaves a
        // host without a cluster identity, which can run create again.
        s.write_record(KIND_CLUSTER, KEY_CLUSTER_INFO, &info, None)
            .await?;
        let me = NodeRecord {
            addr,
            status: NodeStatus::Member,
            key: Some(pki.node_key_pin().map_err(|reason| PkiError::Bad {
                path: Pki::dir(&s.dir),
                reason,
            })?),
        };
        s.write_record(KIND_NODE, &s.node_id.to_string(), &me, None)
            .await?;
        pki.save(&s.dir)?;
        s.install_pki(pki)?;
        tracing::info!(cluster_id = %info.cluster_id, ca = %info.ca_fingerprint, "created cluster");
        Ok(info)
    }

    /// The cluster record (id, CA fingerprint, member limit), once this
    /// host has created or joined a cluster.
    pub fn cluster_info(&self) -> Option<ClusterInfo> {
        self.shared.sm.read().state.cluster_info()
    }

    /// The CA certificate (PEM), once this host has created or joined a
    /// cluster.
    pub fn ca_cert_pem(&self) -> Option<String> {
        self.shared.pki().map(|p| p.ca.cert_pem().to_owned())
    }

    /// This host's TLS identity in the cluster, PEM: the CA certificate, its
    /// node certificate (name [`crate::ca::node_name`]) and its key — for
    /// other channels between hosts (QEMU's migration and NBD streams).
    pub fn node_tls_pem(&self) -> Option<(String, String, String)> {
        self.shared.pki().map(|p| {
            (
                p.ca.cert_pem().to_owned(),
                p.node_cert_pem.clone(),
                p.node_key_pem.clone(),
            )
        })
    }

    /// Every host ever admitted (removed ones included, their ids are never
    /// reused), with its raft role.
    pub fn members(&self) -> Vec<Member> {
        let voters: BTreeSet<NodeId> = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        self.shared
            .sm
            .read()
            .state
            .nodes()
            .into_iter()
            .map(|(node_id, r)| Member {
                node_id,
                addr: r.addr,
                status: r.status,
                voter: voters.contains(&node_id),
                key: r.key,
            })
            .collect()
    }

    /// Change the member limit (1 to 7, not below the current number of
    /// hosts). Any member may call it (the write goes to the leader).
    pub async fn set_max_members(&self, max_members: u32) -> Result<(), StoreError> {
        check_max_members(max_members)?;
        let (mut info, rev, members) = {
            let a = self.shared.sm.read();
            let rev = a
                .state
                .get(KIND_CLUSTER, KEY_CLUSTER_INFO)
                .map(|o| o.revision);
            let members = a
                .state
                .nodes()
                .values()
                .filter(|n| n.status != NodeStatus::Removed)
                .count() as u32;
            (a.state.cluster_info(), rev, members)
        };
        let Some(info) = info.as_mut() else {
            return Err(StoreError::NotClustered);
        };
        if max_members < members {
            return Err(StoreError::Invalid {
                field: "max_members",
                reason: format!("{max_members} is below the current {members} hosts"),
            });
        }
        info.max_members = max_members;
        self.shared
            .write_record(KIND_CLUSTER, KEY_CLUSTER_INFO, info, rev)
            .await
    }

    /// Serve the cluster endpoint (raft RPCs, forwarded writes, joins) on
    /// `listen` over mutual TLS, until [`Self::shutdown`]. Returns the bound
    /// address (`listen` may have port 0).
    ///
    /// Preconditions: this host has created or joined a cluster; the
    /// endpoint is not served yet.
    pub async fn serve(&self, listen: SocketAddr) -> Result<SocketAddr, StoreError> {
        let pki = self.shared.pki().ok_or(StoreError::NotClustered)?;
        if let Some(addr) = self.listen_addr() {
            return Err(StoreError::Invalid {
                field: "listen",
                reason: format!("the cluster endpoint is already served on {addr}"),
            });
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StoreError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let weak = Arc::downgrade(&self.shared);
        let peer = crate::tls::peer_server_config(&pki, self.shared.key_check())?;
        let join = crate::tls::join_server_config(&pki)?;
        let limits = self.server_limits();
        let members = weak.clone();
        let exempt: Exempt =
            Arc::new(move |ip| members.upgrade().is_some_and(|s| s.is_member_ip(ip)));
        let gate = ConnectionGate::with_exemption(
            "cluster",
            limits.max_connections,
            limits.max_connections_per_address,
            Some(exempt),
        );
        let handle = spawn_server(listener, weak, peer, join, limits, gate).map_err(|source| {
            StoreError::Bind {
                addr: listen.to_string(),
                source,
            }
        })?;
        let addr = handle.addr;
        tracing::info!(node_id = self.node_id(), %addr, "serving the cluster endpoint");
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        // A cluster created before keys were recorded: the leader records
        // its own key (the others' when it dials them).
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.record_key(shared.node_id, None).await });
        Ok(addr)
    }

    /// Set the limits of the cluster endpoint (connection caps, handshake,
    /// header, idle and body timeouts; [`ServerLimits::default`] until
    /// then; members' addresses are not counted against the connection
    /// caps). They apply when it is next served.
    pub fn set_server_limits(&self, limits: ServerLimits) -> Result<(), StoreError> {
        limits.check().map_err(|e| StoreError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        *self
            .shared
            .limits
            .write()
            .unwrap_or_else(|e| e.into_inner()) = limits;
        Ok(())
    }

    /// The limits of the cluster endpoint.
    pub fn server_limits(&self) -> ServerLimits {
        self.shared
            .limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The address the cluster endpoint is served on, if it is.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.addr)
    }

    /// `nasvisor cluster remove`: remove host `node_id` from the cluster.
    /// It stops being a voter, its record is marked removed, and every
    /// member refuses its connections from then on (its node id is never
    /// reused). Any member may call it (it is carried out by the leader).
    ///
    /// Preconditions: `node_id` is another host, currently a member or
    /// joining.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), StoreError> {
        if node_id == self.node_id() {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!("node {node_id} is this host; remove it from another host"),
            });
        }
        self.shared
            .leader_call(Forward::Remove { node_id }, PROMOTE_TIMEOUT)
            .await
            .map(drop)
    }

    /// Check that node `node_id` at `addr` accepts this host over mutual
    /// TLS (a removed host is refused).
    pub async fn ping(&self, node_id: NodeId, addr: &str) -> Result<(), StoreError> {
        let t = self.shared.transport().ok_or(StoreError::NotClustered)?;
        let r: Result<ForwardReply, ForwardError> = t
            .call(node_id, addr, PATH_FORWARD, &Forward::Ping, FORWARD_TIMEOUT)
            .await?;
        r.map(drop).map_err(|e| StoreError::Remote {
            node_id,
            message: e.to_string(),
        })
    }
}

/// Whether `cmd` admits a host or changes a host record: only the leader
/// itself does that (joins, promotions, removals, key records), never at a
/// member's request.
fn writes_membership(cmd: &Command) -> bool {
    match cmd {
        Command::Admit { .. } => true,
        Command::Put { kind, .. } | Command::Delete { kind, .. } => kind == KIND_NODE,
    }
}

fn check_max_members(n: u32) -> Result<(), StoreError> {
    if !(1..=DEFAULT_MAX_MEMBERS).contains(&n) {
        return Err(StoreError::Invalid {
            field: "max_members",
            reason: format!("must be 1 to {DEFAULT_MAX_MEMBERS}, got {n}"),
        });
    }
    Ok(())
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn not_leader<E>(f: &openraft::error::ForwardToLeader<NodeId, Node>) -> Result<E, StoreError> {
    Err(StoreError::NotLeader {
        leader: f.leader_id,
        leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
    })
}

impl Shared {
    pub(crate) fn pki(&self) -> Option<Arc<Pki>> {
        self.pki.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn transport(&self) -> Option<Arc<PeerTransport>> {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn has_transport(&self) -> bool {
        self.transport().is_some()
    }

    /// Use `pki` as this host's cluster identity: the raft network gets a
    /// mutual-TLS transport, which talks only to servers with the key
    /// recorded for them.
    pub(crate) fn install_pki(self: &Arc<Self>, pki: Pki) -> Result<(), StoreError> {
        let config = crate::tls::peer_client_config(&pki, self.key_check(), self.key_seen())?;
        *self.transport.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(PeerTransport::new(self.node_id, config)));
        *self.pki.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pki));
        Ok(())
    }

    pub(crate) fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The current leader and its address, as this host knows them.
    pub(crate) fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        Some((id, addr))
    }

    pub(crate) fn get(&self, kind: &str, key: &str) -> Option<(serde_json::Value, Revision)> {
        let a = self.sm.read();
        a.state
            .get(kind, key)
            .map(|o| (o.value.clone(), o.revision))
    }

    /// Commit `cmd`: on the leader directly, otherwise forwarded to it.
    /// Without a cluster (no transport) a follower answers
    /// [`StoreError::NotLeader`].
    ///
    /// Boxed: a write may be forwarded, handling a forward may write.
    pub(crate) fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, StoreError>> {
        Box::pin(self.write_inner(cmd))
    }

    async fn write_inner(&self, cmd: Command) -> Result<Response, StoreError> {
        // A leader cut off from its quorum would wait for ever: bounded.
        let written = tokio::time::timeout(FORWARD_TIMEOUT, self.raft.client_write(cmd.clone()))
            .await
            .map_err(|_| StoreError::Timeout("a quorum of the cluster to commit the change"))?;
        match written {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                if !self.has_transport() {
                    return not_leader(&f);
                }
                match self
                    .leader_call(Forward::Write(cmd), FORWARD_TIMEOUT)
                    .await?
                {
                    ForwardReply::Written(r) => Ok(r),
                    other => Err(StoreError::Raft(format!("unexpected answer {other:?}"))),
                }
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Write one of the cluster's own records (`@` kinds).
    pub(crate) async fn write_record<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        expected_revision: Option<Revision>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(value).map_err(|e| StoreError::Invalid {
            field: "value",
            reason: e.to_string(),
        })?;
        let cmd = Command::Put {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value,
            expected_revision,
        };
        match self.write(cmd).await? {
            Response::Applied { .. } => Ok(()),
            Response::Conflict {
                kind,
                key,
                expected,
                actual,
            } => Err(StoreError::Conflict {
                kind,
                key,
                expected,
                actual,
            }),
            other => Err(StoreError::Raft(format!("unexpected response {other:?}"))),
        }
    }

    pub(crate) async fn read_linearizable(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.get(kind, key)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => not_leader(&f),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Have the leader carry out `fwd`: this host if it leads, otherwise
    /// the leader over the transport. Retries while no leader is known or
    /// the one asked no longer leads, until `timeout`; never retries a
    /// request that may have been carried out.
    pub(crate) async fn leader_call(
        &self,
        fwd: Forward,
        timeout: Duration,
    ) -> Result<ForwardReply, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut last = StoreError::NotLeader {
            leader: None,
            leader_addr: None,
        };
        loop {
            match self.leader() {
                Some((id, _)) if id == self.node_id => {
                    match self.handle_forward(self.node_id, fwd.clone()).await {
                        Ok(r) => return Ok(r),
                        Err(ForwardError::NotLeader {
                            leader_id,
                            leader_addr,
                        }) => {
                            last = StoreError::NotLeader {
                                leader: leader_id,
                                leader_addr,
                            }
                        }
                        Err(ForwardError::Failed(message)) => {
                            return Err(StoreError::Remote {
                                node_id: id,
                                message,
                            })
                        }
                    }
                }
                Some((id, Some(addr))) => {
                    let t = self.transport().ok_or(StoreError::NotLeader {
                        leader: Some(id),
                        leader_addr: Some(addr.clone()),
                    })?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let r: Result<Result<ForwardReply, ForwardError>, CallError> = t
                        .call(
                            id,
                            &addr,
                            PATH_FORWARD,
                            &fwd,
                            left.max(Duration::from_millis(100)),
                        )
                        .await;
                    match r {
                        Ok(Ok(r)) => return Ok(r),
                        Ok(Err(ForwardError::NotLeader {
                            leader_id,
                            leader_addr,
                        })) => {
                            last = StoreError::NotLeader {
                                leader: leader_id,
                                leader_addr,
                            }
                        }
                        Ok(Err(ForwardError::Failed(message))) => {
                            return Err(StoreError::Remote {
                                node_id: id,
                                message,
                            })
                        }
                        Err(e) if e.retryable() => last = StoreError::Transport(e),
                        Err(e) => return Err(StoreError::Transport(e)),
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Carry out a request forwarded by member `peer` (or by this host).
    pub(crate) async fn handle_forward(
        &self,
        peer: NodeId,
        fwd: Forward,
    ) -> Result<ForwardReply, ForwardError> {
        let failed = |e: StoreError| match e {
            StoreError::NotLeader {
                leader,
                leader_addr,
            } => ForwardError::NotLeader {
                leader_id: leader,
                leader_addr,
            },
            e => ForwardError::Failed(e.to_string()),
        };
        match fwd {
            Forward::Ping => Ok(ForwardReply::Done),
            Forward::Write(cmd) if peer != self.node_id && writes_membership(&cmd) => {
                tracing::warn!(peer, "refused a forwarded write of the membership records");
                Err(ForwardError::Failed(format!(
                    "node {peer} may not write the membership records: hosts are admitted \
                     with a join token and removed with `cluster remove`"
                )))
            }
            Forward::Write(cmd) => match self.raft.client_write(cmd).await {
                Ok(r) => Ok(ForwardReply::Written(r.data)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ForwardError::NotLeader {
                        leader_id: f.leader_id,
                        leader_addr: f.leader_node.map(|n| n.addr),
                    })
                }
                Err(e) => Err(ForwardError::Failed(e.to_string())),
            },
            Forward::Read { kind, key } => self
                .read_linearizable(&kind, &key)
                .await
                .map(ForwardReply::Read)
                .map_err(failed),
            Forward::JoinComplete => self
                .promote(peer)
                .await
                .map(|()| ForwardReply::Done)
                .map_err(failed),
            Forward::Remove { node_id } => self
                .remove(node_id)
                .await
                .map(|()| ForwardReply::Done)
                .map_err(failed),
        }
    }

    fn ensure_leader(&self) -> Result<(), StoreError> {
        if self.is_leader() {
            return Ok(());
        }
        let (leader, leader_addr) = match self.leader() {
            Some((id, addr)) => (Some(id), addr),
            None => (None, None),
        };
        Err(StoreError::NotLeader {
            leader,
            leader_addr,
        })
    }

    /// Membership change with retries while another one is in progress.
    async fn change_membership(
        &self,
        changes: ChangeMembers<NodeId, Node>,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        loop {
            match self.raft.change_membership(changes.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return not_leader(&f)
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(raft_err(e)),
            }
        }
    }

    /// On the leader: bring the admitted host `peer` up to date as a
    /// learner, then make it a voter, then record it as a member.
    async fn promote(&self, peer: NodeId) -> Result<(), StoreError> {
        let _g = self.admin.lock().await;
        self.ensure_leader()?;
        let rec = self.sm.read().state.node(peer);
        let rec = match rec {
            Some(r) if r.status != NodeStatus::Removed => r,
            Some(_) => {
                return Err(StoreError::Invalid {
                    field: "node_id",
                    reason: format!("node {peer} was removed from the cluster"),
                })
            }
            None => {
                return Err(StoreError::Invalid {
                    field: "node_id",
                    reason: format!("node {peer} was not admitted with a join token"),
                })
            }
        };
        tracing::info!(node_id = peer, addr = %rec.addr, "adding a learner");
        let add = self
            .raft
            .add_learner(peer, Node::new(rec.addr.clone()), true);
        match tokio::time::timeout(PROMOTE_TIMEOUT, add).await {
            Err(_) => return Err(StoreError::Timeout("the new host to catch up")),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return not_leader(&f)
            }
            Ok(Err(e)) => return Err(raft_err(e)),
            Ok(Ok(_)) => {}
        }
        tracing::info!(node_id = peer, "promoting to voter");
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([peer])))
            .await?;
        let member = NodeRecord {
            status: NodeStatus::Member,
            ..rec
        };
        self.write_record(KIND_NODE, &peer.to_string(), &member, None)
            .await
    }

    /// On the leader: remove host `id`.
    async fn remove(&self, id: NodeId) -> Result<(), StoreError> {
        let _g = self.admin.lock().await;
        self.ensure_leader()?;
        if id == self.node_id {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!(
                    "node {id} is the leader; remove it from another host after it steps down"
                ),
            });
        }
        let rec = self.sm.read().state.node(id);
        let Some(rec) = rec.filter(|r| r.status != NodeStatus::Removed) else {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!("node {id} is not a member of this cluster"),
            });
        };
        let (voter, known) = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let voter = m.membership().voter_ids().any(|v| v == id);
            (voter, m.membership().get_node(&id).is_some())
        };
        if voter {
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                .await?;
        }
        if known {
            let m = self.raft.metrics().borrow().membership_config.clone();
            if m.membership().get_node(&id).is_some() {
                self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                    .await?;
            }
        }
        let removed = NodeRecord {
            status: NodeStatus::Removed,
            ..rec
        };
        self.write_record(KIND_NODE, &id.to_string(), &removed, None)
            .await?;
        tracing::info!(node_id = id, "removed from the cluster");
        Ok(())
    }
}

/// Open the database file, verify it (checksums of every page, see
/// `redb::Database::check_integrity`) and load the log and the state
/// machine. redb may panic on some damaged files instead of returning an
/// error; such a panic is caught here and reported as [`StoreError::Damaged`].
fn open_db(
    path: &Path,
    node_id: NodeId,
) -> Result<(Arc<Database>, LogStore, StateMachineStore), StoreError> {
    let open = || -> Result<_, StoreError> {
        let corrupt = |source: DbError| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        };
        let mut db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let clean = db.check_integrity().map_err(|e| corrupt(e.into()))?;
        if !clean {
            tracing::warn!(path = %path.display(), "cluster store was damaged and has been repaired");
        }
        let db = Arc::new(db);
        if let Some(stored) = check_node_id(&db, node_id).map_err(corrupt)? {
            return Err(StoreError::NodeIdMismatch {
                path: path.to_owned(),
                stored,
                given: node_id,
            });
        }
        let log = LogStore::new(db.clone()).map_err(corrupt)?;
        let sm = StateMachineStore::new(db.clone()).map_err(corrupt)?;
        Ok((db, log, sm))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(res) => res,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(StoreError::Damaged {
                path: path.to_owned(),
                reason,
            })
        }
    }
}

/// Record `node_id` on first open; on later opens return the recorded id if
/// it differs.
fn check_node_id(db: &Database, node_id: NodeId) -> Result<Option<NodeId>, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let stored = {
        let mut t = txn.open_table(IDENTITY)?;
        let stored = t.get(KEY_NODE_ID)?.map(|v| v.value());
        if stored.is_none() {
            t.insert(KEY_NODE_ID, node_id)?;
        }
        stored
    };
    txn.commit()?;
    Ok(stored.filter(|s| *s != node_id))
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
