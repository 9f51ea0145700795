//! [`ClusterStore`]: the host's handle on the replicated desired state.
//!
//! A single host is a cluster of one: `open` initializes a one-voter raft
//! cluster on first start, and every write goes through the raft log even
//! then. Adding a host later is a membership change on the same [`Raft`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::db::DbError;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::state_machine::StateMachineStore;
use crate::types::{Command, Node, NodeId, Raft, RaftMetrics, Response, Revision};

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

/// The host's handle on the replicated desired state.
pub struct ClusterStore {
    node_id: NodeId,
    path: PathBuf,
    raft: Raft,
    log: LogStore,
    sm: StateMachineStore,
    db: Arc<Database>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("node_id", &self.node_id)
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

        let raft = Raft::new(
            node_id,
            Arc::new(config),
            NetworkFactory,
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        let store = Self {
            node_id,
            path,
            raft,
            log,
            sm,
            db,
        };

        if !store.raft.is_initialized().await.map_err(raft_err)? {
            tracing::info!(node_id, %addr, "initializing a single-node cluster");
            let members = BTreeMap::from([(node_id, Node::new(addr))]);
            store.raft.initialize(members).await.map_err(raft_err)?;
        }

        let sole_voter = store
            .raft
            .with_raft_state(move |st| {
                let voters: Vec<NodeId> = st.membership_state.effective().voter_ids().collect();
                voters == [node_id]
            })
            .await
            .map_err(raft_err)?;
        if sole_voter {
            // No need to sit out an election timeout: a sole voter wins at once.
            store.raft.trigger().elect().await.map_err(raft_err)?;
            store
                .raft
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

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raft node, for membership changes and the future network server.
    pub fn raft(&self) -> &Raft {
        &self.raft
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
        let resp = match self.raft.client_write(cmd).await {
            Ok(r) => r.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return Err(StoreError::NotLeader {
                    leader: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => return Err(raft_err(e)),
        };
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
            Response::Noop => Err(StoreError::Raft("a command was applied as a no-op".into())),
        }
    }

    /// `kind`/`key` and its revision, from this node's applied state (may
    /// lag the leader on a follower; see [`Self::get_linearizable`]).
    pub fn get(&self, kind: &str, key: &str) -> Option<(serde_json::Value, Revision)> {
        let a = self.sm.read();
        a.state
            .get(kind, key)
            .map(|o| (o.value.clone(), o.revision))
    }

    /// Like [`Self::get`], after making sure this node is the leader and has
    /// applied everything committed before the call.
    pub async fn get_linearizable(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        self.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                StoreError::NotLeader {
                    leader: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                }
            }
            e => raft_err(e),
        })?;
        Ok(self.get(kind, key))
    }

    /// All objects of `kind` as `(key, value, revision)`, in key order, from
    /// this node's applied state.
    pub fn list(&self, kind: &str) -> Vec<(String, serde_json::Value, Revision)> {
        let a = self.sm.read();
        a.state
            .list(kind)
            .map(|(k, o)| (k.clone(), o.value.clone(), o.revision))
            .collect()
    }

    /// The kinds that have at least one object.
    pub fn kinds(&self) -> Vec<String> {
        self.sm.read().state.objects.keys().cloned().collect()
    }

    /// The cluster-wide revision of this node's applied state.
    pub fn revision(&self) -> Revision {
        self.sm.read().state.revision
    }

    /// Whether this node currently is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// A copy of the current raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
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

    /// Stop the raft node and close the database. When this returns the
    /// data directory can be opened again.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        let Self {
            raft, log, sm, db, ..
        } = self;
        let res = raft.shutdown().await.map_err(raft_err);
        drop((raft, log, sm));
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
