//! Typed storage errors. Each names the field or object and the reason.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A name breaks the naming rules.
    #[error("{field}: {value:?} is not a valid name: {reason}")]
    BadName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A size is out of range.
    #[error("{field}: {reason}")]
    BadSize { field: &'static str, reason: String },
    /// The object already exists.
    #[error("{what} {name:?} already exists")]
    Exists { what: &'static str, name: String },
    /// The object does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound { what: &'static str, name: String },
    /// An image file is not acceptable.
    #[error("{path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
    /// A directory cannot become a pool (a system directory, or one that
    /// holds other files).
    #[error("{path}: {reason}")]
    BadPoolDir { path: PathBuf, reason: String },
    /// The pool lacks space.
    #[error("pool {pool:?} has {free} bytes free, {needed} needed")]
    NoSpace {
        pool: String,
        free: u64,
        needed: u64,
    },
    /// qemu-img failed.
    #[error("qemu-img {op} failed: {stderr}")]
    QemuImg { op: &'static str, stderr: String },
    /// qemu-img could not take the image's lock: another process (a running
    /// QEMU, another qemu-img) has it open.
    #[error("the image is in use by another operation or process; try again when it is done (qemu-img {op}: {stderr})")]
    Busy { op: &'static str, stderr: String },
    /// qemu-img ran past a resource limit on an image (a hostile or broken
    /// image); the image is refused.
    #[error("{path}: qemu-img {op} exceeded its {limit} limit ({value}); the image is refused")]
    Limit {
        path: PathBuf,
        op: &'static str,
        limit: &'static str,
        value: String,
    },
    /// A download stalled, failed or did not match its checksum.
    #[error("{field}: {reason}")]
    Download { field: &'static str, reason: String },
    /// The operation was cancelled; nothing of it is left.
    #[error("{op} cancelled")]
    Cancelled { op: &'static str },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// A failed qemu-img run: [`StorageError::Busy`] when it could not
    /// take the image's lock (`Failed to get "write" lock`, `Failed to get
    /// shared "write" lock`, ...), else [`StorageError::QemuImg`].
    pub(crate) fn qemu_img(op: &'static str, stderr: String) -> StorageError {
        if stderr.contains("Failed to get ") && stderr.contains(" lock") {
            StorageError::Busy { op, stderr }
        } else {
            StorageError::QemuImg { op, stderr }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}
