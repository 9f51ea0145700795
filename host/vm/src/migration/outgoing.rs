//! The memory stream of the source: capabilities and parameters, the
//! stream's socket handed to QEMU, `migrate`, then the `MIGRATION` events
//! until it completed; `MIGRATION_PASS` events widen the downtime limit
//! ([`DowntimeLadder`]).

use std::future::Future;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::SystemTime;

use super::{next_raw_event, DowntimeLadder, MigrateError, MigrationStream, PROGRESS_EVERY};
use crate::qmp::{
    EventKind, MigrationCapability, MigrationInfo, MigrationParameters, MigrationStatus, ObjectAdd,
    QmpClient, TlsClient, TlsEndpoint,
};

/// How an outgoing migration runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSettings {
    /// The longest pause of the guest allowed, ms (the ladder's top).
    pub max_downtime_ms: u32,
    /// Bandwidth cap of the stream, bytes/s.
    pub max_bandwidth: u64,
    /// TLS of the stream; plain when `None`.
    pub tls: Option<TlsClient>,
}

/// Where the memory copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MigrationProgress {
    /// 0..1 of the guest's memory sent at least once.
    pub fraction: f64,
    pub transferred: u64,
    pub total: u64,
    /// Estimated seconds left at the measured rate.
    pub seconds_left: f64,
}

impl MigrationProgress {
    fn of(info: &MigrationInfo) -> Option<Self> {
        let ram = info.ram.as_ref()?;
        let fraction = if ram.total == 0 {
            0.0
        } else {
            (ram.total - ram.remaining.min(ram.total)) as f64 / ram.total as f64
        };
        let seconds_left = if ram.mbps > 0.0 {
            ram.remaining as f64 * 8.0 / (ram.mbps * 1e6)
        } else {
            0.0
        };
        Some(MigrationProgress {
            fraction,
            transferred: ram.transferred,
            total: ram.total,
            seconds_left,
        })
    }
}

/// A completed memory stream.
#[derive(Debug, Clone)]
pub struct MigrationDone {
    /// QEMU's account of it (`downtime`: the pause it measured, ms).
    pub info: MigrationInfo,
    /// When QEMU paused the guest for the last pass (its `STOP` event);
    /// `None` when that event was lost.
    pub paused_at: Option<SystemTime>,
}

/// The name under which the stream's socket is handed to QEMU (`getfd`).
pub const STREAM_FD_NAME: &str = "nv-migration";

/// Adds TLS client credentials read from `dir` as object `id` (once per
/// QEMU) and returns the stream's TLS for a server whose certificate names
/// `hostname`.
pub async fn tls_client(
    qmp: &QmpClient,
    id: &str,
    dir: &Path,
    hostname: &str,
) -> Result<TlsClient, MigrateError> {
    qmp.object_add(
        &ObjectAdd::TlsCredsX509 {
            id: id.to_string(),
            dir: dir.to_string_lossy().into_owned(),
            endpoint: TlsEndpoint::Client,
            verify_peer: true,
        },
        true,
    )
    .await
    .map_err(MigrateError::qmp("TLS credentials"))?;
    Ok(TlsClient {
        creds: id.to_string(),
        hostname: hostname.to_string(),
    })
}

/// Migrates the guest's memory over `stream` (handed to QEMU as
/// [`STREAM_FD_NAME`], `migrate` to `fd:NAME`) and waits until QEMU says
/// it completed (the guest is then paused here, `postmigrate`). Progress
/// is reported every [`PROGRESS_EVERY`]. When `cancel` resolves, the
/// migration is cancelled and [`MigrateError::Cancelled`] returned. The
/// caller drops `stream` after this returns (QEMU works on its own copy;
/// a cancel or failure shuts the socket down for both).
pub async fn migrate_out(
    qmp: &QmpClient,
    settings: &OutgoingSettings,
    stream: &MigrationStream,
    cancel: impl Future<Output = ()>,
    mut progress: impl FnMut(MigrationProgress),
) -> Result<MigrationDone, MigrateError> {
    tokio::pin!(cancel);
    let mut events = qmp.events();
    qmp.migrate_set_capabilities(&[(MigrationCapability::Events, true)])
        .await
        .map_err(MigrateError::qmp("migrate-set-capabilities"))?;
    let mut ladder = DowntimeLadder::new(settings.max_downtime_ms);
    let (creds, hostname) = match &settings.tls {
        Some(t) => (t.creds.clone(), t.hostname.clone()),
        None => (String::new(), String::new()),
    };
    qmp.migrate_set_parameters(&MigrationParameters {
        downtime_limit: Some(u64::from(ladder.limit())),
        max_bandwidth: Some(settings.max_bandwidth),
        tls_creds: Some(creds),
        tls_hostname: Some(hostname),
        tls_authz: None,
    })
    .await
    .map_err(MigrateError::qmp("migrate-set-parameters"))?;
    qmp.getfd(STREAM_FD_NAME, stream.as_fd())
        .await
        .map_err(MigrateError::qmp(format!(
            "handing the stream to {} to QEMU",
            stream.uri()
        )))?;
    let started = qmp.migrate(&format!("fd:{STREAM_FD_NAME}")).await;
    // A started `migrate` took the descriptor over; otherwise it is ours to
    // close.
    match qmp.closefd(STREAM_FD_NAME).await {
        Ok(true) => tracing::debug!("the stream's descriptor was left to close"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot close the stream's descriptor in QEMU"),
    }
    started.map_err(MigrateError::qmp(format!("migrate to {}", stream.uri())))?;
    let mut paused_at = None;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `Some(passes)`: a new dirty-bitmap pass; a poll when unknown.
        let mut passes = None;
        let mut poll = false;
        tokio::select! {
            _ = &mut cancel => {
                if let Err(e) = qmp.migrate_cancel().await {
                    tracing::warn!(error = %e, "migrate_cancel after a cancel request failed");
                }
                return Err(MigrateError::Cancelled);
            }
            ev = next_raw_event(&mut events, "the memory migration to end") => match ev? {
                Some(ev) => match ev.kind() {
                    EventKind::Migration { status } if status.is_final() => poll = true,
                    EventKind::MigrationPass { pass } => passes = Some(pass),
                    EventKind::Stop => {
                        paused_at = Some(ev.timestamp.map_or_else(SystemTime::now, |t| t.to_system_time()));
                    }
                    _ => {}
                },
                None => poll = true,
            },
            _ = tick.tick() => poll = true,
        }
        if poll {
            let info = qmp
                .query_migrate()
                .await
                .map_err(MigrateError::qmp("query-migrate"))?;
            match info.status {
                Some(MigrationStatus::Completed) => {
                    // QMP sends events and replies in order, and QEMU stops
                    // the guest before it completes: a `STOP` the select
                    // above did not pick up yet is already queued.
                    if paused_at.is_none() {
                        paused_at = queued_stop(&mut events);
                    }
                    return Ok(MigrationDone { info, paused_at });
                }
                Some(s @ (MigrationStatus::Failed | MigrationStatus::Cancelled)) => {
                    return Err(MigrateError::MigrationFailed {
                        status: s.to_string(),
                        reason: info
                            .error_desc
                            .unwrap_or_else(|| "no reason given".to_string()),
                    })
                }
                _ => {}
            }
            if let Some(p) = MigrationProgress::of(&info) {
                progress(p);
            }
            passes = passes.or(info.ram.as_ref().map(|r| r.dirty_sync_count));
        }
        if let Some(limit) = passes.and_then(|p| ladder.widen(p)) {
            tracing::info!(limit, "memory not converging: downtime limit raised");
            qmp.migrate_set_parameters(&MigrationParameters {
                downtime_limit: Some(u64::from(limit)),
                ..Default::default()
            })
            .await
            .map_err(MigrateError::qmp("migrate-set-parameters"))?;
        }
    }
}

/// The time of a `STOP` event already queued on `events`, if any.
fn queued_stop(
    events: &mut tokio::sync::broadcast::Receiver<crate::qmp::QmpEvent>,
) -> Option<SystemTime> {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match events.try_recv() {
            Ok(ev) if matches!(ev.kind(), EventKind::Stop) => {
                return Some(
                    ev.timestamp
                        .map_or_else(SystemTime::now, |t| t.to_system_time()),
                )
            }
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
        }
    }
}
