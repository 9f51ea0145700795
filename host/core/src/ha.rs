//! HA protection: which VMs are protected, their passive hosts and the
//! reservations there (see docs/ha.md).
//!
//! - An HA VM needs at least 3 online hosts (`vm create --ha`, `vm edit
//!   --ha on`).
//! - Its passive host is chosen when it gets its host (first start) or when
//!   HA is turned on: the scheduler plugin is asked with the active host as
//!   the only eligible host and the hosts that could hold the reservation as
//!   `eligible-passive-hosts`; an answer outside them, or the active host,
//!   falls back to the native choice (most free memory).
//! - While the VM is active, its vCPUs and memory are counted as used on
//!   the passive host (`Inner::used_memory_mib`), in every view plugins see
//!   and in every placement, start and migration.

use crate::errors;
use crate::model::{kind, HostRecord, VmRecord};
use crate::Inner;
use nasvisor_api_types::{CoreError, HaState, HostHealth, VmHaView};
use nasvisor_plugin_host::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::{PlacementRequest, VmInfo};

/// The fewest online hosts HA needs.
pub(crate) const HA_MIN_HOSTS: usize = 3;

impl Inner {
    /// Refuses HA with fewer than [`HA_MIN_HOSTS`] online hosts, saying
    /// which are offline.
    pub(crate) fn check_ha_possible(&self) -> Result<(), CoreError> {
        let hosts: Vec<HostRecord> = self
            .db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .filter(|h| !h.removed)
            .collect();
        let online = hosts
            .iter()
            .filter(|h| self.lost_host(&h.id).is_none())
            .count();
        if online >= HA_MIN_HOSTS {
            return Ok(());
        }
        let offline: Vec<&str> = hosts
            .iter()
            .filter(|h| self.lost_host(&h.id).is_some())
            .map(|h| h.id.as_str())
            .collect();
        Err(errors::invalid(
            "ha",
            format!(
                "HA needs at least {HA_MIN_HOSTS} online hosts (an active one, a passive one \
                 and a third for the majority); the cluster has {} host(s), {online} online{}",
                hosts.len(),
                if offline.is_empty() {
                    String::new()
                } else {
                    format!(" (offline: {})", offline.join(", "))
                }
            ),
        ))
    }

    /// The hosts that could hold `vm`'s reservation beside `active`:
    /// online, healthy, not cordoned, with room for it.
    fn passive_candidates(&self, vm: &VmRecord, active: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for h in self.db.list::<HostRecord>(kind::HOST) {
            if h.id == active || h.removed || h.cordoned {
                continue;
            }
            let (health, _) = self.health_of(&h, false);
            if health != HostHealth::Healthy {
                continue;
            }
            let (used, cpus) = self.used_memory_mib(&h.id, Some(&vm.id));
            let free = self.vm_memory_capacity(&h).saturating_sub(used);
            if free >= vm.memory_mib && h.cpus.saturating_sub(cpus) >= vm.vcpus.min(h.cpus) {
                out.push((h.id, free));
            }
        }
        out
    }

    /// `vm`'s passive host beside `active`; `None` when no host can hold
    /// its reservation.
    pub(crate) async fn choose_passive(&self, vm: &VmRecord, active: &str) -> Option<String> {
        let candidates = self.passive_candidates(vm, active);
        if candidates.is_empty() {
            tracing::warn!(vm = %vm.name, active, "no host can hold the HA reservation");
            return None;
        }
        let names: Vec<String> = candidates.iter().map(|(h, _)| h.clone()).collect();
        let decision = self
            .decide(DecisionInput::Place {
                request: PlacementRequest {
                    vm: VmInfo {
                        host: Some(active.to_string()),
                        ..crate::placement::vm_info(vm)
                    },
                    eligible_hosts: vec![active.to_string()],
                    eligible_passive_hosts: names.clone(),
                },
                view: self.cluster_view(),
            })
            .await;
        if let Ok(d) = &decision {
            if let Ok(DecisionOutput::Placement(p)) = &d.answer {
                match &p.passive_host {
                    Some(pp) if names.contains(pp) && pp != active => {
                        tracing::info!(vm = %vm.name, active, passive = %pp, source = ?d.source, "passive host chosen");
                        return Some(pp.clone());
                    }
                    other => {
                        tracing::warn!(vm = %vm.name, answer = ?other, eligible = ?names, "the scheduler's passive host is not eligible; the native choice decides");
                    }
                }
            }
        }
        // Native: the most free memory, then the name.
        candidates
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(h, _)| h)
    }

    /// The leader, after each heartbeat round: an active HA VM whose
    /// passive host is lost, degraded or in maintenance (or none, or its own
    /// host) gets a new one when a host can hold its reservation. Otherwise
    /// a lost or degraded passive host stays (its replica resumes when it
    /// is back, or healthy), and a removed one goes; each change is an
    /// event.
    pub(crate) async fn reprotect_ha_vms(&self) {
        let vms: Vec<VmRecord> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.ha && v.is_active())
            .collect();
        for vm in vms {
            let Some(active) = vm.host.clone() else {
                continue;
            };
            if self.lost_host(&active).is_some() {
                continue;
            }
            let old = vm.passive.clone();
            // A passive host whose own checks fail (a hung or read-only
            // pool: where the replica is) or that is in maintenance.
            let unfit = old
                .as_deref()
                .filter(|p| *p != active && self.lost_host(p).is_none())
                .and_then(|p| self.host_record(p).ok())
                .map(|h| self.health_of(&h, false))
                .filter(|(h, _)| *h != HostHealth::Healthy)
                .map(|(_, reasons)| reasons.join("; "));
            let needs = match &old {
                None => true,
                Some(p) => *p == active || self.lost_host(p).is_some() || unfit.is_some(),
            };
            if !needs {
                self.ha
                    .kept_passive
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&vm.id);
                continue;
            }
            let new = self.choose_passive(&vm, &active).await;
            if new == old || (new.is_none() && old.is_none()) {
                continue;
            }
            // No healthy host instead: the degraded one stays (its replica
            // is in step again once its disk answers).
            if new.is_none() && unfit.is_some() {
                continue;
            }
            // No other host can hold the reservation: a lost (not removed)
            // passive host stays the passive host, so that its replica
            // resumes from the writes it missed when it is back.
            if let (None, Some(p)) = (&new, &old) {
                let kept = *p != active && self.lost_host(p).is_some_and(|l| !l.removed);
                if kept {
                    let first = self
                        .ha
                        .kept_passive
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(vm.id.clone(), p.clone())
                        .as_ref()
                        != Some(p);
                    if first {
                        self.event(
                            "vm-ha-unprotected",
                            crate::model::Severity::Warning,
                            Some(format!("vm/{}", vm.name)),
                            format!(
                                "HA VM {}: its passive host {p} is lost and no other host can \
                                 hold its reservation; {p} stays its passive host, and its \
                                 replica resumes from the writes it missed once {p} is back \
                                 with its replica server running",
                                vm.name
                            ),
                        )
                        .await;
                    }
                    continue;
                }
            }
            let r = self
                .db
                .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                    if v.passive == old {
                        v.passive = new.clone();
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(vm = %vm.name, error = %e, "cannot record a new passive host");
                continue;
            }
            let was = match old {
                Some(p) if p == active => format!("it moved onto its passive host {p}"),
                Some(p) if unfit.is_some() => format!(
                    "its passive host {p} is not healthy ({})",
                    unfit.unwrap_or_default()
                ),
                Some(p) => format!("its passive host {p} is lost"),
                None => "it had no passive host".into(),
            };
            let (kind_, severity, message) = match &new {
                Some(p) => (
                    "vm-ha-protected",
                    crate::model::Severity::Info,
                    format!("HA VM {}: {was}; its new passive host is {p}", vm.name),
                ),
                None => (
                    "vm-ha-unprotected",
                    crate::model::Severity::Warning,
                    format!(
                        "HA VM {}: {was}, and no other host can hold its reservation",
                        vm.name
                    ),
                ),
            };
            self.event(kind_, severity, Some(format!("vm/{}", vm.name)), message)
                .await;
        }
    }

    /// The HA status of an HA VM, for its view.
    pub(crate) fn ha_status(&self, vm: &VmRecord) -> Option<VmHaView> {
        if !vm.ha {
            return None;
        }
        let unprotected = |reason: String| Some(reason);
        let reason = match (&vm.host, &vm.passive) {
            (None, _) => {
                unprotected("not placed yet: its passive host is chosen when it starts".into())
            }
            (Some(_), None) if !vm.is_active() => {
                unprotected("not running: its passive host is chosen when it starts".into())
            }
            (Some(_), None) => unprotected(
                "no host can hold its reservation (online, healthy, not cordoned, with room)"
                    .into(),
            ),
            (Some(a), Some(p)) if a == p => unprotected(format!(
                "it runs on its passive host {p} (it moved there); the leader chooses a new \
                 passive host after its next heartbeat round"
            )),
            (Some(_), Some(p)) => match self.db.get::<HostRecord>(kind::HOST, p) {
                None => unprotected(format!("its passive host {p} is gone")),
                Some((h, _)) => match self.health_of(&h, false) {
                    (HostHealth::Healthy, _) => {
                        let local: Vec<String> = vm
                            .disks
                            .iter()
                            .filter(|d| {
                                !self
                                    .db
                                    .get::<crate::model::PoolRecord>(kind::POOL, &d.pool)
                                    .is_some_and(|(p, _)| p.shared())
                            })
                            .map(|d| format!("{}/{}", d.pool, d.volume))
                            .collect();
                        if local.is_empty() || self.in_sync_replica_host(vm).as_deref() == Some(p) {
                            None
                        } else {
                            unprotected(replica_reason(vm, p, &local))
                        }
                    }
                    (health, reasons) => unprotected(format!(
                        "its passive host {p} is {}: {}",
                        serde_json::to_value(health)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        reasons.join("; ")
                    )),
                },
            },
        };
        Some(VmHaView {
            active: vm.host.clone(),
            passive: vm.passive.clone(),
            state: if reason.is_none() {
                HaState::Protected
            } else {
                HaState::Unprotected
            },
            reason,
            last_move: vm.last_ha_move.clone(),
            replica: vm.replica.as_ref().map(|r| r.view()),
        })
    }
}

/// Why `vm`'s disks on its host's own pool (`local`) cannot be taken over
/// by its passive host `passive` now: where their replica stands.
fn replica_reason(vm: &VmRecord, passive: &str, local: &[String]) -> String {
    let disks = local.join(", ");
    match &vm.replica {
        None => format!(
            "disks {disks} are on its host's own pool and their replica on {passive} is not \
             made yet (it is while the VM runs)"
        ),
        Some(r) if r.host != passive => format!(
            "the replica of disks {disks} is on {}, not on its passive host {passive}; a new one \
             is being made",
            r.host
        ),
        Some(r) => match r.state {
            nasvisor_api_types::ReplicaState::Syncing => format!(
                "the replica of disks {disks} on {passive} is being brought in step ({}%)",
                r.progress.unwrap_or(0)
            ),
            nasvisor_api_types::ReplicaState::Outdated => format!(
                "the replica of disks {disks} on {passive} is outdated: {}",
                r.reason.as_deref().unwrap_or("no reason recorded")
            ),
            nasvisor_api_types::ReplicaState::InSync => {
                format!("the replica on {passive} does not hold every one of disks {disks}")
            }
        },
    }
}
