//! The raft state machine on redb: [`RaftStateMachine`] for [`TypeConfig`].
//!
//! The applied state is persisted, not just snapshotted: each `apply` batch
//! is one redb write transaction (fsync on commit) that writes the changed
//! objects, the cluster revision, the last applied log id and the last
//! membership. A restart therefore loads the state as of the last applied
//! entry and openraft replays only the committed entries after it.
//!
//! Tables (in the host's one database file, shared with the log):
//! - `sm_objects`: (kind, key) -> JSON [`Object`];
//! - `sm_meta`: `last_applied`, `membership`, `revision` -> JSON;
//! - `sm_snapshot`: `meta` -> JSON [`SnapshotMeta`], `data` -> snapshot bytes.
//!
//! The snapshot format is the JSON serialization of [`DesiredState`]. The
//! last snapshot is kept in `sm_snapshot`; if the applied state is ever
//! found older than it at open, the snapshot is restored first and the log
//! after it is replayed by openraft.
//!
//! A storage error while applying is fatal for the raft node (openraft stops
//! it), so the in-memory copy is never served after a failed commit.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::db::{decode, encode, DbError, WriteWatch};
use crate::state::{Change, DesiredState, Object};
use crate::types::{
    Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sm_objects");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_snapshot");

const KEY_LAST_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_REVISION: &str = "revision";
const KEY_SNAP_META: &str = "meta";
const KEY_SNAP_DATA: &str = "data";

/// The applied state held in memory (a copy of what is persisted).
#[derive(Debug, Default)]
pub struct Applied {
    /// The last log id applied to `state`.
    pub last_applied: Option<LogId>,
    /// The last membership config applied.
    pub membership: StoredMembership,
    /// The desired state.
    pub state: DesiredState,
}

/// The state machine store. Cheap to clone: clones share the database and
/// the in-memory applied state.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    writes: WriteWatch,
    applied: Arc<RwLock<Applied>>,
}

impl StateMachineStore {
    /// Use `db` for the state machine, creating the tables if they do not
    /// exist and loading the persisted applied state; its writes are
    /// recorded in `writes`.
    pub fn new(db: Arc<Database>, writes: WriteWatch) -> Result<Self, DbError> {
        let w = writes.begin();
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(SM_META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        drop(w);

        let txn = db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, DbError> {
            Ok(meta.get(key)?.map(|v| v.value().to_vec()))
        };
        let mut applied = Applied::default();
        if let Some(b) = get(KEY_LAST_APPLIED)? {
            applied.last_applied = decode(&b)?;
        }
        if let Some(b) = get(KEY_MEMBERSHIP)? {
            applied.membership = decode(&b)?;
        }
        if let Some(b) = get(KEY_REVISION)? {
            applied.state.revision = decode(&b)?;
        }
        for item in txn.open_table(OBJECTS)?.iter()? {
            let (k, v) = item?;
            let (kind, key) = k.value();
            let object: Object = decode(v.value())?;
            applied
                .state
                .objects
                .entry(kind.to_owned())
                .or_default()
                .insert(key.to_owned(), object);
        }
        drop(txn);
        let sm = Self {
            db,
            writes,
            applied: Arc::new(RwLock::new(applied)),
        };
        // The persisted state should never be older than the stored snapshot;
        // if it is (state tables lost or rolled back), restore the snapshot
        // first: openraft then replays the committed log after it.
        if let Some(snap) = sm.current_snapshot()? {
            let last_applied = sm.read().last_applied;
            if snap.meta.last_log_id > last_applied {
                tracing::warn!(
                    snapshot = %snap.meta,
                    "applied state is older than the snapshot; restoring the snapshot"
                );
                sm.install(&snap.meta, snap.snapshot.into_inner())?;
            }
        }
        Ok(sm)
    }

    /// Read access to the applied state.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means a panic while applying; the data is a copy of
        // what was committed or the node is stopping, so reading it is fine.
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A shared handle on the applied state (for readers outside raft).
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<Response>, DbError> {
        let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
        let mut responses = Vec::with_capacity(entries.len());
        let _w = self.writes.begin();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut meta = txn.open_table(SM_META)?;
            let mut membership_changed = false;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Response::Noop),
                    EntryPayload::Normal(cmd) => {
                        let (resp, change) =
                            applied.state.apply_entry(&cmd, entry.log_id.leader_id.term);
                        persist(&mut objects, change)?;
                        responses.push(resp);
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        membership_changed = true;
                        responses.push(Response::Noop);
                    }
                }
            }
            meta.insert(KEY_LAST_APPLIED, encode(&applied.last_applied)?.as_slice())?;
            meta.insert(KEY_REVISION, encode(&applied.state.revision)?.as_slice())?;
            if membership_changed {
                meta.insert(KEY_MEMBERSHIP, encode(&applied.membership)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(responses)
    }

    fn build(&self) -> Result<Snapshot, DbError> {
        let (meta, data) = {
            let applied = self.read();
            let data = encode(&applied.state)?;
            let snapshot_id = match &applied.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, applied.state.revision),
                None => format!("none-{}", applied.state.revision),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), DbError> {
        let _w = self.writes.begin();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut t = txn.open_table(SNAPSHOT)?;
            t.insert(KEY_SNAP_META, encode(meta)?.as_slice())?;
            t.insert(KEY_SNAP_DATA, data)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), DbError> {
        let state: DesiredState = decode(&data)?;
        let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
        let _w = self.writes.begin();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut objects = txn.open_table(OBJECTS)?;
            objects.retain(|_, _| false)?;
            for (kind, by_key) in &state.objects {
                for (key, object) in by_key {
                    objects.insert((kind.as_str(), key.as_str()), encode(object)?.as_slice())?;
                }
            }
            let mut m = txn.open_table(SM_META)?;
            m.insert(KEY_LAST_APPLIED, encode(&meta.last_log_id)?.as_slice())?;
            m.insert(KEY_MEMBERSHIP, encode(&meta.last_membership)?.as_slice())?;
            m.insert(KEY_REVISION, encode(&state.revision)?.as_slice())?;
            let mut s = txn.open_table(SNAPSHOT)?;
            s.insert(KEY_SNAP_META, encode(meta)?.as_slice())?;
            s.insert(KEY_SNAP_DATA, data.as_slice())?;
        }
        txn.commit()?;
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot>, DbError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOT)?;
        let (Some(meta), Some(data)) = (t.get(KEY_SNAP_META)?, t.get(KEY_SNAP_DATA)?) else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: decode(meta.value())?,
            snapshot: Box::new(Cursor::new(data.value().to_vec())),
        }))
    }
}

/// Write one applied change to the objects table.
fn persist(
    objects: &mut redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
    change: Change,
) -> Result<(), DbError> {
    match change {
        Change::None => {}
        Change::Put { kind, key, object } => {
            let bytes = encode(&object)?;
            objects.insert((kind.as_str(), key.as_str()), bytes.as_slice())?;
        }
        Change::Delete { kind, key } => {
            objects.remove((kind.as_str(), key.as_str()))?;
        }
        Change::Batch(changes) => {
            for c in changes {
                persist(objects, c)?;
            }
        }
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.apply_batch(entries)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        tracing::info!(%meta, "installing snapshot");
        self.install(meta, snapshot.into_inner())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
