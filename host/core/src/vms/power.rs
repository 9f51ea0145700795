//! Power operations: start (placing a VM on its first start), shutdown,
//! force off, reboot, pause and resume.

use crate::errors;
use crate::model::{kind, Desired, Severity, VmRecord, VmStatus};
use crate::Inner;
use nasvisor_api_types::{CoreError, PowerOp, VmView};
use nasvisor_best_effort::BestEffort;
use nasvisor_vm::{ShutdownOutcome, VmInstance};
use std::sync::Arc;
use std::time::Duration;

impl Inner {
    pub(crate) async fn set_state(
        &self,
        id: &str,
        state: VmStatus,
        reason: Option<String>,
        desired: Option<Desired>,
    ) -> Result<VmRecord, CoreError> {
        self.db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                self.still_here(v)?;
                v.state = state;
                v.state_reason = reason.clone();
                if let Some(d) = desired {
                    v.desired = d;
                }
                Ok(())
            })
            .await
    }

    /// Refuses a change of this host's view of VM `v` (the state of its
    /// QEMU here) once the record gives the VM to another host: after a
    /// failover, or a `vm recover`, the copy this host ran (or thinks it
    /// runs) is not the VM any more, and what it observes of that copy must
    /// not overwrite the record of the one that runs elsewhere.
    pub(crate) fn still_here(&self, v: &VmRecord) -> Result<(), CoreError> {
        match v.host.as_deref() {
            Some(h) if h != self.host.id => Err(errors::conflict(format!(
                "VM {} now belongs to host {h}; what host {} sees of its copy is not recorded",
                v.name, self.host.id
            ))),
            _ => Ok(()),
        }
    }

    /// Powers a VM on: first power-on places it.
    pub(crate) async fn start_vm(
        self: &Arc<Self>,
        vm: &VmRecord,
        wanted: Option<&str>,
    ) -> Result<VmRecord, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(&vm.id)?;
        if self.processes.contains(&vm.id) {
            return Err(errors::conflict(format!(
                "VM {} is already {}{}",
                vm.name,
                vm.state.as_str(),
                if vm.state == VmStatus::GuestPanicked {
                    "; force it off first"
                } else {
                    ""
                }
            )));
        }
        match vm.state {
            VmStatus::Installing => {
                return Err(errors::conflict(format!(
                    "VM {} is being installed",
                    vm.name
                )))
            }
            VmStatus::InstallFailed => {
                return Err(errors::conflict(format!(
                    "VM {}'s install failed ({}); delete it and create it again",
                    vm.name,
                    vm.state_reason.as_deref().unwrap_or("no reason recorded")
                )))
            }
            _ => {}
        }
        if let Some(w) = wanted {
            if self
                .db
                .get::<crate::model::HostRecord>(kind::HOST, w)
                .is_none()
            {
                return Err(errors::invalid(
                    "host",
                    format!("no host {w:?} in the cluster"),
                ));
            }
        }
        let host = match (&vm.host, wanted) {
            (Some(h), None) => h.clone(),
            (Some(h), Some(w)) if h == w => h.clone(),
            (Some(h), Some(w)) => {
                return Err(errors::conflict(format!(
                    "VM {} lives on host {h}; migrate it to start it on {w}",
                    vm.name
                )))
            }
            (None, w) => self.place(&vm, w).await?,
        };
        if host != self.host.id {
            return Err(CoreError::Unavailable {
                reason: format!(
                    "VM {} is on host {host}; start it through that host",
                    vm.name
                ),
            });
        }
        self.check_host_fit(vm.vcpus, vm.memory_mib)?;
        let (used, _) = self.used_memory_mib(&host, Some(&vm.id));
        let cap = self.vm_memory_capacity(&self.host);
        if used + vm.memory_mib > cap {
            let reserved: Vec<String> = self
                .db
                .list::<VmRecord>(kind::VM)
                .into_iter()
                .filter(|v| v.is_active() && v.reserves_on(&host) && v.id != vm.id)
                .map(|v| format!("{} ({} MiB)", v.name, v.memory_mib))
                .collect();
            return Err(errors::conflict(format!(
                "host {host} has {} MiB free for VMs, VM {} needs {}{}",
                cap.saturating_sub(used),
                vm.name,
                vm.memory_mib,
                if reserved.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; starting it would break the HA reservation of VM {}",
                        reserved.join(", ")
                    )
                }
            )));
        }
        // An HA VM gets its passive host with its host.
        let passive = match (&vm.passive, vm.ha) {
            (Some(p), true) if *p != host => Some(p.clone()),
            (_, true) => self.choose_passive(&vm, &host).await,
            (_, false) => None,
        };
        let vm = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                // Placed on what this host saw: if the VM was given to
                // another host since (a failover this host's copy of the
                // store did not show yet), that decision stands.
                if v.host != vm.host {
                    return Err(errors::conflict(format!(
                        "VM {} was given to host {} meanwhile; not started here",
                        v.name,
                        v.host.as_deref().unwrap_or("(none)")
                    )));
                }
                v.host = Some(host.clone());
                v.passive = passive.clone();
                v.state = VmStatus::Starting;
                v.state_reason = None;
                v.desired = Desired::Running;
                Ok(())
            })
            .await?;
        match self.launch(&vm).await {
            Ok(_) => {
                let rec = self
                    .set_state(&vm.id, VmStatus::Running, None, None)
                    .await?;
                self.event(
                    "vm-started",
                    Severity::Info,
                    Some(format!("vm/{}", vm.name)),
                    format!("VM {} started on {host}", vm.name),
                )
                .await;
                Ok(rec)
            }
            Err(e) => {
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some(e.to_string()),
                    Some(Desired::Stopped),
                )
                .await
                .best_effort("record that the VM did not start");
                Err(e)
            }
        }
    }

    /// Shuts VM `id` down (ACPI, forced off after `timeout`), waits until
    /// its QEMU is gone and records it stopped, desired stopped: `why` says
    /// who asked ("shut down by the administrator"). Returns how the guest
    /// went off, in words.
    pub(crate) async fn shut_down(
        self: &Arc<Self>,
        id: &str,
        inst: VmInstance,
        timeout: Duration,
        why: &str,
    ) -> Result<String, CoreError> {
        let outcome = inst
            .shutdown(timeout)
            .await
            .map_err(|e| errors::internal(format!("shutdown: {e}")))?;
        let reason = match outcome {
            ShutdownOutcome::Graceful { after } => {
                format!("the guest powered off after {:.1} s", after.as_secs_f64())
            }
            ShutdownOutcome::Forced { after } => format!(
                "forced off after {:.0} s: the guest did not power off",
                after.as_secs_f64()
            ),
            ShutdownOutcome::AlreadyStopped => "it had already stopped".into(),
        };
        self.forget_instance(id, inst.pid());
        self.set_state(
            id,
            VmStatus::Stopped,
            Some(format!("{why}: {reason}")),
            Some(Desired::Stopped),
        )
        .await
        .best_effort("record the VM's shutdown");
        Ok(reason)
    }

    pub(crate) async fn power(
        self: &Arc<Self>,
        id: &str,
        op: PowerOp,
    ) -> Result<VmView, CoreError> {
        let vm = self.find_vm(id)?;
        let rec = match op {
            PowerOp::Start { host } => self.start_vm(&vm, host.as_deref()).await?,
            PowerOp::Shutdown { timeout_s } => {
                let inst = self.instance(&vm)?;
                let rec = self
                    .set_state(
                        &vm.id,
                        VmStatus::Stopping,
                        Some(format!("shutting down (forced off after {timeout_s} s)")),
                        Some(Desired::Stopped),
                    )
                    .await?;
                let me = self.clone();
                let id = vm.id.clone();
                let timeout = Duration::from_secs(timeout_s.into());
                tokio::spawn(async move {
                    if let Err(e) = me
                        .shut_down(&id, inst, timeout, "shut down by the administrator")
                        .await
                    {
                        tracing::warn!(vm = %id, error = %e, "shutdown failed");
                    }
                });
                rec
            }
            PowerOp::ForceOff {} => {
                let inst = self.instance(&vm)?;
                // Record the intent first so the monitor keeps this reason.
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some("forced off by the administrator".into()),
                    Some(Desired::Stopped),
                )
                .await?;
                inst.force_off()
                    .await
                    .map_err(|e| errors::internal(format!("force off: {e}")))?;
                // QEMU is gone: drop the handle and the taps now, so the
                // answer shows no process.
                self.forget_instance(&vm.id, inst.pid());
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some("forced off by the administrator".into()),
                    Some(Desired::Stopped),
                )
                .await?
            }
            PowerOp::Reboot {} => {
                let inst = self.instance(&vm)?;
                inst.reboot()
                    .await
                    .map_err(|e| errors::internal(format!("reboot: {e}")))?;
                self.find_vm(&vm.id)?
            }
            PowerOp::Pause {} => {
                let inst = self.instance(&vm)?;
                inst.pause()
                    .await
                    .map_err(|e| errors::internal(format!("pause: {e}")))?;
                self.set_state(
                    &vm.id,
                    VmStatus::Paused,
                    Some("paused by the administrator".into()),
                    None,
                )
                .await?
            }
            PowerOp::Resume {} => {
                let inst = self.instance(&vm)?;
                inst.resume()
                    .await
                    .map_err(|e| errors::internal(format!("resume: {e}")))?;
                self.set_state(&vm.id, VmStatus::Running, None, None)
                    .await?
            }
        };
        Ok(self.vm_view(&rec))
    }
}
