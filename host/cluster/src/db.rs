//! The host's one redb database: the error type shared by the log store and
//! the state machine, the record encoding, and the watch on its writes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An error of the embedded database or of a record in it (boxed: redb's
/// error is large).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DbError(Box<redb::Error>);

impl DbError {
    /// The redb error.
    pub fn inner(&self) -> &redb::Error {
        &self.0
    }

    fn codec(what: &str, e: serde_json::Error) -> Self {
        Self(Box::new(redb::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot {what} record: {e}"),
        ))))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                Self(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Encode a record (JSON).
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(v).map_err(|e| DbError::codec("encode", e))
}

/// Decode a record (JSON).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::codec("decode", e))
}

/// The database's writes in progress (each from before it waits for
/// redb's write lock until its commit returned), so that a store whose
/// disk stopped answering is told from one that is merely idle: reads are
/// served from memory and go on answering while every write hangs. Cheap
/// to clone: clones share the record.
#[derive(Clone, Default)]
pub struct WriteWatch(Arc<Mutex<Running>>);

#[derive(Default)]
struct Running {
    next: u64,
    /// Start of each write in progress, by a number that grows: the first
    /// entry is the oldest.
    since: BTreeMap<u64, Instant>,
}

/// One write in progress; dropping it (commit, error or panic) ends it.
pub(crate) struct Write {
    watch: WriteWatch,
    id: u64,
}

impl WriteWatch {
    fn running(&self) -> MutexGuard<'_, Running> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write that starts now.
    pub(crate) fn begin(&self) -> Write {
        let mut r = self.running();
        let id = r.next;
        r.next += 1;
        r.since.insert(id, Instant::now());
        Write {
            watch: self.clone(),
            id,
        }
    }

    /// How long the oldest write in progress has been running; `None`
    /// when none is.
    pub fn oldest(&self) -> Option<Duration> {
        self.running()
            .since
            .first_key_value()
            .map(|(_, at)| at.elapsed())
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        self.watch.running().since.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_write_in_progress_is_timed_until_it_ends() {
        let w = WriteWatch::default();
        assert_eq!(w.oldest(), None);
        let first = w.begin();
        std::thread::sleep(Duration::from_millis(30));
        let second = w.begin();
        assert!(w.oldest().unwrap() >= Duration::from_millis(30));
        drop(first);
        assert!(w.oldest().unwrap() < Duration::from_millis(30));
        drop(second);
        assert_eq!(w.oldest(), None);
    }
}
