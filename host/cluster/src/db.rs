//! The host's one redb database: the error type shared by the log store and
//! the state machine, and the record encoding.

use serde::de::DeserializeOwned;
use serde::Serialize;

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
