//! The mechanism of a live migration between two QEMUs, driven by QMP
//! events: disk mirrors onto another QEMU's NBD exports ([`MirrorSet`]), the
//! memory stream with a widening downtime limit ([`migrate_out`],
//! [`DowntimeLadder`]) on a socket opened here and handed to QEMU, capped
//! in what it holds unsent ([`MigrationStream`]), and the target's
//! preparation ([`serve_disks`], [`listen_incoming`];
//! [`crate::VmInstance::wait_incoming_loaded`]).
//!
//! Every wait here ends on the QMP event that says so (`BLOCK_JOB_READY`,
//! `BLOCK_JOB_COMPLETED`, `MIGRATION`, `MIGRATION_PASS`); a slow poll only
//! reports progress and covers events a lagging subscriber lost. Nothing
//! here knows about hosts or clusters: callers give addresses, export
//! names and TLS objects.

mod incoming;
mod ladder;
mod mirror;
mod outgoing;
mod stream;

pub use incoming::{listen_incoming, serve_disks, tls_server};
pub use ladder::{DowntimeLadder, FIRST_DOWNTIME_MS, PASSES_PER_STEP};
pub use mirror::{
    leftover_mirror_nodes, MirrorProgress, MirrorSet, MirrorTarget, MIRROR_PREFIX, REPLICA_PREFIX,
};
pub use outgoing::{
    migrate_out, tls_client, MigrationDone, MigrationProgress, OutgoingSettings, STREAM_FD_NAME,
};
pub use stream::{MigrationStream, UNSENT_CAP};

use std::time::Duration;

use tokio::sync::broadcast;

use crate::qmp::{EventKind, QmpError, QmpEvent};

/// How often progress is read while waiting for an event (and lost events
/// are made up for).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Errors of the migration mechanism. Each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A QMP command of the step failed.
    #[error("{what}: {source}")]
    Qmp {
        what: String,
        #[source]
        source: QmpError,
    },
    /// The stream's address is not one this library connects to.
    #[error("migration address {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    /// The stream's socket could not be opened.
    #[error("cannot open the migration stream to {uri}: {source}")]
    Connect {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    /// A disk mirror ended before it was meant to.
    #[error("the mirror {job} ended before it was in sync: {reason}")]
    MirrorEnded { job: String, reason: String },
    /// The memory stream ended without completing.
    #[error("the memory migration {status}: {reason}")]
    MigrationFailed { status: String, reason: String },
    /// A step did not finish in time.
    #[error("{what} did not happen within {waited:?}")]
    Timeout { what: String, waited: Duration },
    /// The caller cancelled.
    #[error("cancelled")]
    Cancelled,
    /// QEMU's QMP connection closed (QEMU exited).
    #[error("QEMU's QMP connection closed while waiting for {what}")]
    Closed { what: String },
}

impl MigrateError {
    pub(crate) fn qmp(what: impl Into<String>) -> impl FnOnce(QmpError) -> MigrateError {
        let what = what.into();
        move |source| MigrateError::Qmp { what, source }
    }
}

/// The next event of `rx`: `Some` an event, `None` when events were lost
/// (the caller then reads the state it waits for).
pub(crate) async fn next_event(
    rx: &mut broadcast::Receiver<QmpEvent>,
    what: &str,
) -> Result<Option<EventKind>, MigrateError> {
    Ok(next_raw_event(rx, what).await?.map(|ev| ev.kind()))
}

/// Like [`next_event`], the event as QEMU sent it (with its timestamp).
pub(crate) async fn next_raw_event(
    rx: &mut broadcast::Receiver<QmpEvent>,
    what: &str,
) -> Result<Option<QmpEvent>, MigrateError> {
    match rx.recv().await {
        Ok(ev) => Ok(Some(ev)),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            tracing::debug!(
                lost = n,
                "QMP events lost while waiting for {what}; polling"
            );
            Ok(None)
        }
        Err(broadcast::error::RecvError::Closed) => Err(MigrateError::Closed {
            what: what.to_string(),
        }),
    }
}
