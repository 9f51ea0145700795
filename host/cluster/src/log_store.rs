//! The raft log on redb: [`RaftLogStorage`] for [`TypeConfig`].
//!
//! Tables (in the host's one database file, shared with the state machine):
//! - `raft_log`: log index -> JSON-encoded entry;
//! - `raft_log_meta`: `vote`, `committed`, `last_purged` -> JSON.
//!
//! Every mutation is one redb write transaction committed with
//! `Durability::Immediate` (fsync) before it returns, and in `append` before
//! the flush callback is called, so an acknowledged entry survives a crash.
//! redb's copy-on-write commit makes a torn write roll back to the previous
//! commit.
//!
//! The redb calls are synchronous and short; they run on the calling task.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{decode, encode, DbError, WriteWatch};

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// The raft log store. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writes: WriteWatch,
}

impl LogStore {
    /// Use `db` for the log, creating the tables if they do not exist; its
    /// writes are recorded in `writes`.
    pub fn new(db: Arc<Database>, writes: WriteWatch) -> Result<Self, DbError> {
        let w = writes.begin();
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(LOG_META)?;
        txn.commit()?;
        drop(w);
        Ok(Self { db, writes })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG_META)?;
        match table.get(key)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(v.value())?)),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), DbError> {
        let bytes = encode(value)?;
        let _w = self.writes.begin();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.open_table(LOG_META)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end))? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let last = match table.last()? {
            None => None,
            Some((_, v)) => {
                let e: Entry = decode(v.value())?;
                Some(e.log_id)
            }
        };
        Ok(last)
    }

    /// The number of entries currently stored (for tests and metrics).
    pub fn stored_entries(&self) -> Result<u64, DbError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self
            .read_meta(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self
            .last_entry_log_id()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(KEY_COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<Option<LogId>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(c.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let res = (|| -> Result<(), DbError> {
            let _w = self.writes.begin();
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(LOG)?;
                for entry in entries {
                    let bytes = encode(&entry)?;
                    table.insert(entry.log_id.index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate raft log since");
        (|| -> Result<(), DbError> {
            let _w = self.writes.begin();
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge raft log up to");
        (|| -> Result<(), DbError> {
            let bytes = encode(&log_id)?;
            let _w = self.writes.begin();
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(LOG_META)?
                .insert(KEY_LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
