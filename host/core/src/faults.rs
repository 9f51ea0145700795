//! VM faults on this host: a QEMU that exits unasked (`vm-crashed`) or a
//! guest that panics (`vm-guest-panicked`). For an HA VM the host counts
//! its recent faults (`[cluster] ha-restart-period-s`), asks the ha-policy
//! plugin's `react` (validated; a failing plugin falls back to the native
//! policy, and the decision is journaled by the plugin host) and carries
//! out the actions in order:
//!
//! - `restart` of this VM: after the delay, unless the VM faulted more than
//!   `[cluster] ha-max-restarts` times in the period (then `vm-restart-limit`
//!   and it stays down, so a VM that crashes at boot does not loop);
//! - `notify`: an event with the plugin's message;
//! - `hold`: an event; the VM stays as it is;
//! - `failover` of this VM: to the target the policy names (`failover.rs`);
//! - `switchover`, `fence`, or an action about another VM: not carried out
//!   after a VM fault, recorded as `ha-action-deferred`.

use crate::model::{kind, Desired, Severity, VmRecord, VmStatus};
use crate::{lock, Inner};
use nasvisor_plugin_sdk::prelude::{Event, HaAction, VmFault};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest restart delay the host honours.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

/// A fault of a VM, as its monitor saw it.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Crashed(String),
    Panicked(String),
}

/// Recent faults per VM on this host.
#[derive(Default)]
pub(crate) struct FaultLog {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FaultLog {
    /// Records a fault of VM `id` now; how many it had within `period`,
    /// this one included.
    fn record(&self, id: &str, period: Duration) -> u32 {
        let now = Instant::now();
        let mut all = lock(&self.recent);
        let q = all.entry(id.to_string()).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now.duration_since(*t) > period) {
            q.pop_front();
        }
        q.len() as u32
    }
}

impl Inner {
    /// Reacts to a fault of VM `id` (see the module's documentation).
    pub(crate) async fn on_vm_fault(self: Arc<Self>, id: String, fault: Fault) {
        let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, &id) else {
            return;
        };
        let faulted = matches!(vm.state, VmStatus::Crashed | VmStatus::GuestPanicked);
        if !vm.ha
            || !faulted
            || vm.desired != Desired::Running
            || vm.host.as_deref() != Some(self.host.id.as_str())
        {
            return;
        }
        let recent = self.faults.record(&id, self.cfg.ha_restart_period);
        let (detail, event) = match &fault {
            Fault::Crashed(d) => (d.clone(), "crashed"),
            Fault::Panicked(d) => (d.clone(), "guest panicked"),
        };
        let f = VmFault {
            vm: id.clone(),
            host: self.host.id.clone(),
            recent_faults: recent,
            detail,
        };
        let events = vec![match fault {
            Fault::Crashed(_) => Event::VmCrashed(f),
            Fault::Panicked(_) => Event::GuestPanicked(f),
        }];
        let actions = self.react(events).await;
        for action in actions {
            self.carry_out(&vm, event, recent, action).await;
        }
    }

    async fn carry_out(self: &Arc<Self>, vm: &VmRecord, what: &str, recent: u32, a: HaAction) {
        let target = Some(format!("vm/{}", vm.name));
        match a {
            HaAction::Restart(r) if r.vm == vm.id => {
                let max = self.cfg.ha_max_restarts;
                let period = self.cfg.ha_restart_period.as_secs();
                if recent > max {
                    self.event(
                        "vm-restart-limit",
                        Severity::Error,
                        target,
                        format!(
                            "HA VM {} {what} {recent} times within {period} s, more than \
                             ha-max-restarts {max}: it is not restarted and stays down",
                            vm.name
                        ),
                    )
                    .await;
                    return;
                }
                let delay = Duration::from_millis(r.delay_ms).min(MAX_RESTART_DELAY);
                tokio::time::sleep(delay).await;
                let Ok(now) = self.find_vm(&vm.id) else {
                    return;
                };
                if !matches!(now.state, VmStatus::Crashed | VmStatus::GuestPanicked)
                    || now.desired != Desired::Running
                {
                    return;
                }
                // A panicked guest's QEMU is still there, paused.
                self.stop_instance(&vm.id).await;
                match self.start_vm(&now, None).await {
                    Ok(_) => {
                        self.event(
                            "vm-restarted",
                            Severity::Warning,
                            target,
                            format!(
                                "HA VM {} restarted in place after it {what} (fault {recent} \
                                 within {period} s, at most {max} restarts): {}",
                                vm.name, r.reason
                            ),
                        )
                        .await
                    }
                    Err(e) => {
                        self.event(
                            "vm-restart-failed",
                            Severity::Error,
                            target,
                            format!("HA VM {} could not be restarted: {e}", vm.name),
                        )
                        .await
                    }
                }
            }
            HaAction::Failover(m) if m.vm == vm.id => {
                // Its QEMU is gone (or paused after a panic: stopped
                // first), so it cannot run twice.
                self.stop_instance(&vm.id).await;
                let why = format!("it {what} {recent} time(s): {}", m.reason);
                self.fail_over(&vm.id, &m.target, &why, None).await;
            }
            HaAction::Notify(n) => self.ha_notice(target, n).await,
            HaAction::Hold(h) => {
                self.event(
                    "ha-hold",
                    Severity::Info,
                    target,
                    format!(
                        "the ha policy holds VM {} for {} ms: {}",
                        vm.name, h.delay_ms, h.reason
                    ),
                )
                .await;
            }
            other => {
                self.event(
                    "ha-action-deferred",
                    Severity::Warning,
                    target,
                    format!(
                        "the ha policy asked for {other:?} after VM {} {what}; only a \
                         restart or a failover of the VM itself is carried out after a fault, \
                         so the VM stays down",
                        vm.name
                    ),
                )
                .await;
            }
        }
    }
}
