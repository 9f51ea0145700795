//! The judgement of a pending update after its first boot
//! (docs/firmware.md, "After the reboot"). nasvisord judges it at start,
//! but on the new slot's first boot its entry is still counting then:
//! systemd-bless-boot blesses it only once the health check saw this very
//! daemon answer `/healthz`. So while the update is still pending after
//! the start, the judgement is made again every [`JUDGE_EVERY`] for
//! [`JUDGE_FOR`]: the update is recorded as succeeded (and the rollback
//! floor raised) seconds after the blessing, not at the next restart.
//!
//! A round is skipped while a bundle is being received or installed (its
//! file is in the upload directory): the install writes the state file,
//! and two writers would lose one's change.

use crate::Inner;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a pending update is judged again after the start.
const JUDGE_EVERY: Duration = Duration::from_secs(2);

/// How long after the start it is judged again: longer than the health
/// check's own timeout (150 s on the appliance). After that it is judged
/// at the next start (e.g. an administrator who chose the old slot at the
/// boot menu leaves the update pending).
const JUDGE_FOR: Duration = Duration::from_secs(600);

impl Inner {
    /// Judges the pending update again until it is decided, or for
    /// [`JUDGE_FOR`]; stops at shutdown.
    pub(crate) fn spawn_firmware_judge(self: &Arc<Self>) {
        let Some(settings) = self.cfg.firmware.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let until = Instant::now() + JUDGE_FOR;
            while Instant::now() < until {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(JUDGE_EVERY) => {}
                }
                let Some(me) = weak.upgrade() else { return };
                let installing =
                    std::fs::read_dir(settings.upload_dir()).is_ok_and(|mut d| d.next().is_some());
                if installing {
                    continue;
                }
                if !me.judge_firmware(&settings).await {
                    tracing::info!("the pending firmware update is judged");
                    return;
                }
            }
            tracing::info!(
                "the firmware update is still pending {JUDGE_FOR:?} after the start; \
                 it is judged again at the next start"
            );
        });
    }
}
