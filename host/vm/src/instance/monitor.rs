//! The monitor task of a VM: follows QMP events and QEMU's exit through its
//! pidfd, publishes each state change, and decides how QEMU ended.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::{apply_event, VmState};
use crate::launch::{log_tail, RunPaths};
use crate::proc::QemuProcess;
use crate::qmp::{EventKind, QmpClient, QmpEvent};

/// What we asked QEMU to do, to tell an expected exit from a crash.
#[derive(Debug, Default)]
pub(super) struct Tracking {
    /// A quit or kill we requested (its description).
    pub(super) exit_requested: Option<String>,
    /// The reason of the last `SHUTDOWN` event.
    pub(super) shutdown_reason: Option<String>,
}

pub(super) fn lock(t: &Mutex<Tracking>) -> std::sync::MutexGuard<'_, Tracking> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct MonitorCtx {
    pub(super) id: String,
    pub(super) paths: RunPaths,
    pub(super) process: Arc<QemuProcess>,
    pub(super) qmp: QmpClient,
    pub(super) state: Arc<watch::Sender<VmState>>,
    pub(super) tracking: Arc<Mutex<Tracking>>,
    pub(super) quit_on_guest_shutdown: bool,
    pub(super) events: broadcast::Receiver<QmpEvent>,
}

impl MonitorCtx {
    fn set(&self, next: VmState) {
        self.state.send_if_modified(|s| {
            if *s != next {
                tracing::info!(id = %self.id, from = s.name(), to = next.name(), "VM state");
                *s = next;
                true
            } else {
                false
            }
        });
    }

    fn handle(&self, event: &QmpEvent) {
        let kind = event.kind();
        if let EventKind::Shutdown { guest, reason } = &kind {
            lock(&self.tracking).shutdown_reason = Some(reason.clone());
            if *guest && self.quit_on_guest_shutdown {
                lock(&self.tracking)
                    .exit_requested
                    .get_or_insert_with(|| "guest powered off".into());
                let qmp = self.qmp.clone();
                let id = self.id.clone();
                tokio::spawn(async move {
                    tracing::info!(%id, "guest powered off; stopping its QEMU");
                    if let Err(e) = qmp.quit().await {
                        tracing::warn!(%id, error = %e, "quit after guest poweroff failed");
                    }
                });
            }
        }
        let current = self.state.borrow().clone();
        if let Some(next) = apply_event(&current, &kind) {
            self.set(next);
        }
    }

    async fn resync(&self) {
        if let Ok(status) = self.qmp.query_status().await {
            self.set(VmState::from_run_state(&status.status));
        }
    }
}

pub(super) async fn monitor(mut ctx: MonitorCtx) {
    // Phase 1: follow events until QEMU exits or QMP closes.
    loop {
        tokio::select! {
            ev = ctx.events.recv() => match ev {
                Ok(event) => ctx.handle(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(id = %ctx.id, missed = n, "lost QMP events; resyncing");
                    ctx.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ctx.process.wait_exit() => break,
        }
    }
    // Phase 2: the process is gone or going. Let QMP deliver what it still has
    // (a SHUTDOWN event may be in flight), then decide how it ended.
    // Bounded on purpose: what QMP has not delivered in 5 s is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(5), ctx.qmp.closed()).await;
    while let Ok(event) = ctx.events.try_recv() {
        ctx.handle(&event);
    }
    ctx.process.wait_exit().await;

    let final_state = {
        let t = lock(&ctx.tracking);
        match (&t.exit_requested, &t.shutdown_reason) {
            (Some(why), _) => VmState::Stopped {
                reason: why.clone(),
            },
            (None, Some(reason)) => VmState::Stopped {
                reason: reason.clone(),
            },
            (None, None) => {
                let before = ctx.state.borrow().clone();
                let mut detail = format!(
                    "QEMU (pid {}) exited without a SHUTDOWN event (killed by a signal or crashed)",
                    ctx.process.pid()
                );
                if let VmState::Panicked { detail: d } = &before {
                    detail.push_str(&format!(" after: {d}"));
                }
                let tail = log_tail(&ctx.paths.qemu_log(), 512);
                if let Some(last) = tail.lines().last() {
                    detail.push_str(&format!("; last QEMU message: {last}"));
                }
                VmState::Crashed { detail }
            }
        }
    };
    if matches!(final_state, VmState::Crashed { .. }) {
        tracing::warn!(id = %ctx.id, state = ?final_state, "QEMU exited unexpectedly");
    }
    // Clean up before publishing the final state, so a relaunch triggered by
    // it never has its fresh files removed.
    ctx.paths.remove_stale_of(ctx.process.pid());
    ctx.set(final_state);
}
