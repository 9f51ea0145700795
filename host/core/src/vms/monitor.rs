//! How a VM's record follows what its QEMU reports over QMP.

use crate::model::{kind, Desired, Severity, VmRecord, VmStatus};
use crate::Inner;
use nasvisor_vm::{VmInstance, VmState};
use std::sync::Arc;

impl Inner {
    /// Follows a VM's QEMU state into its record until QEMU exits.
    pub(crate) fn spawn_monitor(self: &Arc<Self>, id: String, inst: VmInstance) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rx = inst.watch_state();
            loop {
                let st = rx.borrow_and_update().clone();
                if st.is_exited() {
                    // Forget the process first: once the record says it
                    // stopped or crashed, no answer shows a pid.
                    me.forget_instance(&id, inst.pid());
                    me.observe(&id, &st).await;
                    if let VmState::Crashed { detail } = &st {
                        let fault = crate::faults::Fault::Crashed(detail.clone());
                        tokio::spawn(me.clone().on_vm_fault(id.clone(), fault));
                    }
                    return;
                }
                me.observe(&id, &st).await;
                if let VmState::Panicked { detail } = &st {
                    let fault = crate::faults::Fault::Panicked(detail.clone());
                    tokio::spawn(me.clone().on_vm_fault(id.clone(), fault));
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = me.shutdown.cancelled() => return,
                }
            }
            me.forget_instance(&id, inst.pid());
        });
    }

    /// Drops the handle of VM `id`'s QEMU `pid` (if it still is the current
    /// one) and removes its taps.
    pub(super) fn forget_instance(&self, id: &str, pid: i32) {
        let ours = self.processes.remove_if_pid(id, pid);
        if ours {
            if let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) {
                self.remove_taps(&vm);
            }
        }
    }

    /// Records what QEMU reports. An install in progress owns the record.
    async fn observe(&self, id: &str, st: &VmState) {
        let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) else {
            return;
        };
        // An install or a migration owns the record; a VM that moved away
        // is the other host's to report.
        if matches!(vm.state, VmStatus::Installing | VmStatus::Migrating)
            || vm.host.as_deref().is_some_and(|h| h != self.host.id)
        {
            return;
        }
        // Stopped because this host lost the quorum: what should run is
        // decided when the quorum is back.
        if self.is_fenced(id) {
            return;
        }
        let (status, reason) = match st {
            VmState::Running => (VmStatus::Running, None),
            VmState::Paused => (VmStatus::Paused, None),
            VmState::ShuttingDown => (
                VmStatus::Stopping,
                Some("ACPI power button pressed".to_string()),
            ),
            VmState::Shutdown { reason } => (
                VmStatus::Stopping,
                Some(format!("guest shutdown ({reason})")),
            ),
            VmState::Panicked { detail } => (VmStatus::GuestPanicked, Some(detail.clone())),
            VmState::Stopped { reason } => (VmStatus::Stopped, Some(reason.clone())),
            VmState::Crashed { detail } => (VmStatus::Crashed, Some(detail.clone())),
        };
        if vm.state == status && vm.state_reason == reason {
            return;
        }
        // A stop we asked for keeps its reason.
        if vm.state == VmStatus::Stopped && matches!(status, VmStatus::Stopped | VmStatus::Stopping)
        {
            return;
        }
        let r = self
            .db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                self.still_here(v)?;
                // Again on the record as it is now: a stop asked for may
                // have been recorded since it was read above.
                let asked = v.state == VmStatus::Stopped
                    && matches!(status, VmStatus::Stopped | VmStatus::Stopping);
                if v.state != VmStatus::Installing && !asked {
                    v.state = status;
                    v.state_reason = reason.clone();
                    if matches!(status, VmStatus::Stopped) {
                        v.desired = Desired::Stopped;
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(vm = %vm.name, error = %e, "cannot record the VM's state");
        }
        let event = match st {
            VmState::Crashed { detail } => {
                Some(("vm-crashed", Severity::Error, format!("crashed: {detail}")))
            }
            VmState::Panicked { detail } => {
                Some(("vm-guest-panicked", Severity::Error, detail.clone()))
            }
            VmState::Stopped { reason } => {
                Some(("vm-stopped", Severity::Info, format!("stopped: {reason}")))
            }
            _ => None,
        };
        if let Some((kind_, severity, what)) = event {
            let message = format!("VM {} {what}", vm.name);
            self.event(kind_, severity, Some(format!("vm/{}", vm.name)), message)
                .await;
        }
    }
}
