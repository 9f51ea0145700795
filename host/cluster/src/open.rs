//! Opening the host's database file: integrity check, the node id it
//! belongs to, then the raft log and the state machine on it.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::db::{DbError, WriteWatch};
use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::NodeId;

const IDENTITY: TableDefinition<&str, u64> = TableDefinition::new("identity");
const KEY_NODE_ID: &str = "node_id";

/// Open the database file, verify it (checksums of every page, see
/// `redb::Database::check_integrity`) and load the log and the state
/// machine. redb may panic on some damaged files instead of returning an
/// error; such a panic is caught here and reported as [`StoreError::Damaged`].
pub(crate) fn open_db(
    path: &Path,
    node_id: NodeId,
) -> Result<(Arc<Database>, LogStore, StateMachineStore, WriteWatch), StoreError> {
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
        let writes = WriteWatch::default();
        let log = LogStore::new(db.clone(), writes.clone()).map_err(corrupt)?;
        let sm = StateMachineStore::new(db.clone(), writes.clone()).map_err(corrupt)?;
        Ok((db, log, sm, writes))
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
