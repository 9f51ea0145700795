//! Lost hosts and their VMs. A host is lost when the leader recorded it
//! offline, or when it was removed from the cluster. Whether its VMs still
//! run is then not known, so:
//!
//! - their views show the state `unknown`, naming the host and the last
//!   state recorded (an event `vm-unknown` says so when the host is lost);
//! - `vm recover` gives such a VM to another host from its disks on shared
//!   storage, once the lost host has had the time to fence itself
//!   ([`Inner::fence_wait`]), or at once when the administrator confirms
//!   it is down;
//! - `vm delete --force` drops the record, asking nothing of the lost host
//!   and leaving its disks there;
//! - a lost host that comes back stops the QEMU of every VM that is no
//!   longer its own (`processes.rs`, `stop_stale_copies`).

use crate::errors;
use crate::model::{
    kind, now_rfc3339, pool_key, Desired, HostRecord, PoolRecord, Severity, VmRecord, VmStatus,
};
use crate::Inner;
use nasvisor_api_types::{CoreError, VmRecover, VmView};
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A host that is offline or removed.
#[derive(Debug, Clone)]
pub(crate) struct LostHost {
    pub id: String,
    /// Removed from the cluster (else offline).
    pub removed: bool,
    /// Since when (the leader's clock); `None` when not recorded.
    pub since: Option<String>,
}

impl LostHost {
    /// "host nas2 is offline since T" / "host nas2 was removed from the
    /// cluster".
    pub(crate) fn describe(&self) -> String {
        match (self.removed, &self.since) {
            (true, _) => format!("host {} was removed from the cluster", self.id),
            (false, Some(t)) => format!("host {} is offline since {t}", self.id),
            (false, None) => format!("host {} is offline", self.id),
        }
    }

    /// How long it has been lost, by the leader's record.
    fn lost_for(&self) -> Option<Duration> {
        let since = OffsetDateTime::parse(self.since.as_deref()?, &Rfc3339).ok()?;
        let d = OffsetDateTime::now_utc() - since;
        Some(Duration::from_secs_f64(d.as_seconds_f64().max(0.0)))
    }
}

/// What an administrator can do about a VM of a lost host.
pub(crate) fn recovery_hint(vm: &str) -> String {
    format!(
        "`vm recover {vm}` starts it on another host from shared storage once the lost host \
         has fenced itself, and `vm delete {vm} --force` drops its record"
    )
}

impl Inner {
    /// Host `id` when it is lost: recorded offline, removed, or unknown to
    /// the store. This host is never lost to itself.
    pub(crate) fn lost_host(&self, id: &str) -> Option<LostHost> {
        if id == self.host.id {
            return None;
        }
        match self.db.get::<HostRecord>(kind::HOST, id) {
            None => Some(LostHost {
                id: id.to_string(),
                removed: true,
                since: None,
            }),
            Some((h, _)) if h.removed || !h.online => Some(LostHost {
                id: h.id,
                removed: h.removed,
                since: h.offline_since,
            }),
            Some(_) => None,
        }
    }

    /// The lost host of a VM that may be running there.
    pub(crate) fn lost_host_of(&self, vm: &VmRecord) -> Option<LostHost> {
        let may_run = vm.is_active() || vm.state == VmStatus::GuestPanicked;
        if !may_run {
            return None;
        }
        self.lost_host(vm.host.as_deref()?)
    }

    /// `view` of `vm`, shown `unknown` when its host is lost.
    pub(crate) fn mark_unknown(&self, vm: &VmRecord, view: &mut VmView) {
        if let Some(lost) = self.lost_host_of(vm) {
            view.state = VmStatus::Unknown;
            view.state_reason = Some(format!(
                "{}; last known state: {}{}",
                lost.describe(),
                vm.state.as_str(),
                vm.state_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
    }

    /// How long a lost host must have been recorded offline before its VMs
    /// may start elsewhere. It notices that it lost the majority within
    /// `offline_after` of going silent and stops its VMs
    /// `quorum_stop_delay` later; the leader records it offline only after
    /// `offline_after` of silence, which is the margin.
    pub(crate) fn fence_wait(&self) -> Duration {
        self.cfg.quorum_stop_delay + self.cfg.offline_after
    }

    /// Events `vm-unknown` for the VMs that may be running on `lost`.
    pub(crate) async fn report_unknown_vms(&self, lost: &LostHost) {
        let vms: Vec<VmRecord> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.host.as_deref() == Some(lost.id.as_str()))
            .filter(|v| v.is_active() || v.state == VmStatus::GuestPanicked)
            .collect();
        for vm in vms {
            self.event(
                "vm-unknown",
                Severity::Warning,
                Some(format!("vm/{}", vm.name)),
                format!(
                    "VM {} is unknown: {} (last known state: {}); {}",
                    vm.name,
                    lost.describe(),
                    vm.state.as_str(),
                    recovery_hint(&vm.name)
                ),
            )
            .await;
        }
    }

    /// `vm delete --force`: drops the record of a VM whose host is lost.
    pub(crate) async fn force_delete_vm(
        &self,
        id: &str,
        delete_disks: bool,
    ) -> Result<VmView, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(id)?;
        let lost = vm.host.as_deref().and_then(|h| self.lost_host(h));
        let Some(lost) = lost else {
            return Err(errors::invalid(
                "force",
                match &vm.host {
                    Some(h) => format!(
                        "host {h} of VM {} is online: delete the VM without force",
                        vm.name
                    ),
                    None => format!(
                        "VM {} has never run on a host: delete it without force",
                        vm.name
                    ),
                },
            ));
        };
        if delete_disks {
            return Err(errors::invalid(
                "delete_disks",
                format!(
                    "cannot be combined with force: {}, and the disks of VM {} are not deleted \
                     from here (delete them with `volume delete` when that host is back, or on \
                     a shared pool)",
                    lost.describe(),
                    vm.name
                ),
            ));
        }
        let mut view = self.vm_view(&vm);
        self.db.delete(kind::VM, &vm.id).await?;
        let left: Vec<String> = vm
            .disks
            .iter()
            .map(|d| format!("{}/{}", d.pool, d.volume))
            .collect();
        self.event(
            "vm-deleted-forced",
            Severity::Warning,
            Some(format!("vm/{}", vm.name)),
            format!(
                "VM {}'s record deleted while {}; disks left behind: {}; if the host comes \
                 back it stops the VM's QEMU",
                vm.name,
                lost.describe(),
                if left.is_empty() {
                    "none".to_string()
                } else {
                    left.join(", ")
                }
            ),
        )
        .await;
        view.state_reason = Some(format!(
            "record deleted while {}; its disks were left there",
            lost.describe()
        ));
        Ok(view)
    }

    /// `vm recover`: gives a VM of a lost host to another host (its disks
    /// must all be on shared pools) and starts it there when it should run.
    pub(crate) async fn recover_vm(
        self: &Arc<Self>,
        id: &str,
        req: VmRecover,
    ) -> Result<VmView, CoreError> {
        let (vm, target, lost) = {
            let _g = self.ops.lock().await;
            let vm = self.find_vm(id)?;
            let Some(from) = vm.host.clone() else {
                return Err(errors::conflict(format!(
                    "VM {} has never run on a host: start it instead",
                    vm.name
                )));
            };
            let Some(lost) = self.lost_host(&from) else {
                return Err(errors::conflict(format!(
                    "host {from} of VM {} is not lost (it is this host, or online): \
                     migrate the VM instead",
                    vm.name
                )));
            };
            if !req.confirm_host_down {
                let wait = self.fence_wait();
                match lost.lost_for() {
                    Some(d) if d >= wait => {}
                    Some(d) => {
                        return Err(errors::conflict(format!(
                            "{}: it stops its VMs by itself within {:.0} s of losing the \
                             cluster, and has been lost for {:.1} s; try again in {:.1} s, or \
                             pass confirm_host_down once it is known to be down",
                            lost.describe(),
                            wait.as_secs_f64(),
                            d.as_secs_f64(),
                            (wait - d).as_secs_f64()
                        )))
                    }
                    None => {
                        return Err(errors::conflict(format!(
                            "{}, and since when is not recorded; pass confirm_host_down once \
                             it is known to be down",
                            lost.describe()
                        )))
                    }
                }
            }
            // With an in-step replica, the VM goes where it is (unless
            // another host is asked for, which check_disks_follow judges).
            let replica = self.in_sync_replica_host(&vm);
            if replica.is_none() {
                for d in &vm.disks {
                    self.check_disk_shared(&vm, d, &from)?;
                }
            }
            let wanted = req.host.as_deref().or(replica.as_deref());
            let target = self.place_excluding(&vm, wanted, &[from.as_str()]).await?;
            self.check_disks_follow(&vm, &from, &target)?;
            let reason = format!("recovered from lost host {from}");
            let vm = self
                .db
                .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                    self.check_disks_follow(v, &from, &target)?;
                    v.host = Some(target.clone());
                    v.state = VmStatus::Stopped;
                    v.state_reason = Some(reason.clone());
                    v.take_replica_on(&target);
                    Ok(())
                })
                .await?;
            (vm, target, lost)
        };
        self.event(
            "vm-recovered",
            Severity::Warning,
            Some(format!("vm/{}", vm.name)),
            format!(
                "VM {} recovered on host {target}: {}{}",
                vm.name,
                lost.describe(),
                if req.confirm_host_down {
                    " (the administrator confirmed it is down)"
                } else {
                    ""
                }
            ),
        )
        .await;
        if vm.desired == Desired::Running {
            if let Err(e) = self.start_on(&vm, &target).await {
                tracing::warn!(vm = %vm.name, host = %target, error = %e, "a recovered VM did not start");
                self.note_start_failure(&vm, &format!("recovered from lost host {}", lost.id), &e)
                    .await;
            }
        }
        Ok(self.vm_view(&self.find_vm(&vm.id)?))
    }

    /// Checks that disk `d` of `vm` is on a shared pool, which host `from`
    /// does not hide with a pool of its own of the same name.
    fn check_disk_shared(
        &self,
        vm: &VmRecord,
        d: &crate::model::DiskRecord,
        from: &str,
    ) -> Result<(), CoreError> {
        let shared = self
            .db
            .get::<PoolRecord>(kind::POOL, &d.pool)
            .is_some_and(|(p, _)| p.shared());
        if !shared || self.has_own_pool(from, &d.pool) {
            let replica = match &vm.replica {
                Some(r) => format!(
                    "; its replica on {} is {}{}",
                    r.host,
                    serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    r.reason
                        .as_deref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                ),
                None => String::new(),
            };
            return Err(errors::conflict(format!(
                "disk {}/{} of VM {} is on host {from}'s own pool, which only that host \
                 reaches{replica}: the VM cannot be started elsewhere; delete its record with \
                 `vm delete {} --force`",
                d.pool, d.volume, vm.name, vm.name
            )));
        }
        Ok(())
    }

    fn has_own_pool(&self, host: &str, pool: &str) -> bool {
        self.db
            .get::<PoolRecord>(kind::POOL, &pool_key(Some(host), pool))
            .is_some()
    }

    /// Checks that `vm`'s disks can follow it from lost host `from` to
    /// `target`: each on a shared pool that neither host hides with a pool
    /// of its own of the same name.
    pub(crate) fn check_disks_follow(
        &self,
        vm: &VmRecord,
        from: &str,
        target: &str,
    ) -> Result<(), CoreError> {
        // The disks on the lost host's own pools may follow through an
        // in-step replica on the target: its volumes of the same names.
        let replica_here = self.in_sync_replica_host(vm).as_deref() == Some(target);
        for d in &vm.disks {
            if replica_here && self.is_replicated(vm, d) {
                continue;
            }
            self.check_disk_shared(vm, d, from)?;
            if self.has_own_pool(target, &d.pool) {
                return Err(errors::conflict(format!(
                    "host {target} has a pool of its own named {}, which hides the shared pool \
                     of VM {}'s disk {}/{}: start the VM on another host",
                    d.pool, vm.name, d.pool, d.volume
                )));
            }
        }
        Ok(())
    }

    /// Records on a VM's record why it did not start after it was moved
    /// (`what`), when it is still stopped.
    pub(crate) async fn note_start_failure(&self, vm: &VmRecord, what: &str, e: &CoreError) {
        let reason = format!("{what}; start failed: {e}");
        let r = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                if v.state == VmStatus::Stopped {
                    v.state_reason = Some(reason.clone());
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(vm = %vm.name, error = %e, "cannot record why a moved VM did not start");
        }
    }

    /// Records host `id` lost (offline from now, or removed), with the
    /// event `announce` (kind, message) once it is recorded, then reports
    /// its VMs `unknown`; with `term`, as the leader of that term (see
    /// [`crate::db::Db::update_as`]): a deposed leader records and
    /// announces nothing.
    pub(crate) async fn record_lost(
        &self,
        id: &str,
        removed: bool,
        term: Option<u64>,
        announce: Option<(&str, String)>,
    ) {
        let r = self
            .db
            .update_as::<HostRecord, _>(term, kind::HOST, id, |r| {
                r.online = false;
                if r.offline_since.is_none() {
                    r.offline_since = Some(now_rfc3339());
                }
                r.removed |= removed;
                Ok(())
            })
            .await;
        match r {
            Ok(r) => {
                if let Some((kind_, message)) = announce {
                    self.event(
                        kind_,
                        Severity::Warning,
                        Some(format!("host/{id}")),
                        message,
                    )
                    .await;
                }
                let lost = LostHost {
                    id: r.id,
                    removed: r.removed,
                    since: r.offline_since,
                };
                self.report_unknown_vms(&lost).await;
            }
            Err(e) => {
                tracing::warn!(host = %id, removed, error = %e, "cannot record that the host is lost")
            }
        }
    }
}
