//! Where a VM runs at first power-on: a deterministic filter picks the
//! eligible hosts (online, enough free resources, constraints), then the
//! scheduler plugin chooses among them — the same path with one host as with
//! seven.

use crate::errors;
use crate::model::{kind, HostRecord, VmRecord, VmStatus};
use crate::Inner;
use nasvisor_api_types::CoreError;
use nasvisor_plugin_host::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::*;

impl Inner {
    /// Memory and vCPUs taken on `host`: its active VMs, and the
    /// reservations of the active HA VMs whose passive host it is (the VM
    /// `except` excluded, both ways).
    pub(crate) fn used_memory_mib(&self, host: &str, except: Option<&str>) -> (u64, u32) {
        used_on(&self.db.list_shared::<VmRecord>(kind::VM), host, except)
    }

    /// Memory VMs may use on `host`, MiB.
    pub(crate) fn vm_memory_capacity(&self, h: &HostRecord) -> u64 {
        h.memory_mib.saturating_sub(self.cfg.reserved_memory_mib)
    }

    /// The cluster as the scheduler sees it.
    pub(crate) fn cluster_view(&self) -> ClusterView {
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        let vms: Vec<VmRecord> = self.db.list(kind::VM);
        let (local_cap, local_free) = self.local_storage_gib();
        ClusterView {
            hosts: hosts
                .iter()
                .filter(|h| !h.removed)
                .map(|h| {
                    let (health, health_reasons) = plugin_health(self.health_of(h, false));
                    let (mem, cpus) = used_on(&vms, &h.id, None);
                    let cap = self.vm_memory_capacity(h);
                    let (storage_cap, storage_free) = if h.id == self.host.id {
                        (local_cap, local_free)
                    } else {
                        (h.storage_gib, h.free_storage_gib)
                    };
                    HostInfo {
                        id: h.id.clone(),
                        name: h.name.clone(),
                        capacity: Resources {
                            vcpus: h.cpus,
                            memory_mib: cap,
                            storage_gib: storage_cap,
                        },
                        free: Resources {
                            vcpus: h.cpus.saturating_sub(cpus),
                            memory_mib: cap.saturating_sub(mem),
                            storage_gib: storage_free,
                        },
                        health,
                        health_reasons,
                        cordoned: h.cordoned,
                        ..Default::default()
                    }
                })
                .collect(),
            vms: vms.iter().map(vm_info).collect(),
            has_quorum: self.has_quorum(),
            now_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Chooses the host for `vm`'s first power-on: `wanted` when given (it
    /// must be eligible), else the scheduler's choice among eligible hosts.
    pub(crate) async fn place(
        &self,
        vm: &VmRecord,
        wanted: Option<&str>,
    ) -> Result<String, CoreError> {
        self.place_excluding(vm, wanted, &[]).await
    }

    /// [`Self::place`] with some hosts left out (a migration's source).
    pub(crate) async fn place_excluding(
        &self,
        vm: &VmRecord,
        wanted: Option<&str>,
        exclude: &[&str],
    ) -> Result<String, CoreError> {
        let view = self.cluster_view();
        let records: Vec<HostRecord> = self.db.list(kind::HOST);
        let hosts_by_id: std::collections::HashMap<&str, &HostRecord> =
            records.iter().map(|h| (h.id.as_str(), h)).collect();
        let mut reasons = Vec::new();
        let eligible: Vec<String> = view
            .hosts
            .iter()
            .filter(|h| {
                let rec = hosts_by_id.get(h.id.as_str());
                if rec.is_some_and(|r| !r.online) {
                    reasons.push(format!("host {} is offline", h.id));
                    return false;
                }
                if rec.is_some_and(|r| r.cordoned) {
                    reasons.push(format!("host {} is cordoned", h.id));
                    return false;
                }
                if matches!(h.health, HostHealth::Degraded | HostHealth::Maintenance) {
                    reasons.push(format!(
                        "host {} is {}: {}",
                        h.id,
                        if h.health == HostHealth::Maintenance {
                            "in maintenance"
                        } else {
                            "degraded"
                        },
                        h.health_reasons.join("; ")
                    ));
                    return false;
                }
                if h.free.memory_mib < vm.memory_mib {
                    reasons.push(format!(
                        "host {} has {} MiB of memory free for VMs, the VM needs {}",
                        h.id, h.free.memory_mib, vm.memory_mib
                    ));
                    return false;
                }
                if h.capacity.vcpus < vm.vcpus {
                    reasons.push(format!(
                        "host {} has {} CPUs, the VM wants {} vCPUs",
                        h.id, h.capacity.vcpus, vm.vcpus
                    ));
                    return false;
                }
                true
            })
            .map(|h| h.id.clone())
            .filter(|h| !exclude.contains(&h.as_str()))
            .collect();
        if let Some(w) = wanted {
            if !view.hosts.iter().any(|h| h.id == w) {
                return Err(errors::invalid(
                    "host",
                    format!("no host {w:?} in the cluster"),
                ));
            }
            if !eligible.iter().any(|h| h == w) {
                return Err(errors::conflict(format!(
                    "cannot start on host {w}: {}",
                    reasons.join("; ")
                )));
            }
            return Ok(w.to_string());
        }
        if eligible.is_empty() {
            return Err(errors::conflict(format!(
                "no host can run VM {}: {}",
                vm.name,
                reasons.join("; ")
            )));
        }
        let decision = self
            .decide(DecisionInput::Place {
                request: PlacementRequest {
                    vm: vm_info(vm),
                    eligible_hosts: eligible.clone(),
                    eligible_passive_hosts: Vec::new(),
                },
                view,
            })
            .await?;
        match decision.answer {
            Ok(DecisionOutput::Placement(p)) if eligible.contains(&p.host) => {
                tracing::info!(vm = %vm.name, host = %p.host, reason = %p.reason, source = ?decision.source, "placed");
                Ok(p.host)
            }
            Ok(other) => Err(errors::internal(format!(
                "the scheduler answered {other:?} instead of an eligible host"
            ))),
            Err(e) => Err(errors::conflict(format!(
                "the scheduler could not place VM {}: {}",
                vm.name, e.message
            ))),
        }
    }
}

/// A host's health as plugins see it.
fn plugin_health(
    (health, reasons): (nasvisor_api_types::HostHealth, Vec<String>),
) -> (HostHealth, Vec<String>) {
    use nasvisor_api_types::HostHealth as H;
    let h = match health {
        H::Healthy => HostHealth::Healthy,
        H::Degraded => HostHealth::Degraded,
        H::Maintenance => HostHealth::Maintenance,
        H::Offline | H::Unknown => HostHealth::Unreachable,
        H::Fenced => HostHealth::Fenced,
    };
    (h, reasons)
}

/// A VM's recorded state as the plugins see it: each state its own, so a
/// policy tells a crash or a panic from a stop.
fn plugin_state(s: VmStatus) -> VmState {
    match s {
        VmStatus::Stopped => VmState::Stopped,
        VmStatus::Starting | VmStatus::Installing => VmState::Starting,
        VmStatus::Running => VmState::Running,
        VmStatus::Paused => VmState::Paused,
        VmStatus::Stopping => VmState::ShuttingDown,
        VmStatus::Migrating => VmState::Migrating,
        VmStatus::Crashed => VmState::Crashed,
        VmStatus::GuestPanicked => VmState::Panicked,
        VmStatus::InstallFailed => VmState::Failed,
        // Never recorded (a view's overlay); a plugin sees the host's
        // health instead.
        VmStatus::Unknown => VmState::Running,
    }
}

pub(crate) fn vm_info(v: &VmRecord) -> VmInfo {
    VmInfo {
        id: v.id.clone(),
        name: v.name.clone(),
        resources: Resources {
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            storage_gib: v.disks.iter().map(|d| d.size_mib.div_ceil(1024)).sum(),
        },
        state: plugin_state(v.state),
        host: v.host.clone(),
        ha_enabled: v.ha,
        ha: match (v.ha, &v.host, &v.passive) {
            (true, Some(active), Some(passive)) => Some(HaAssignment {
                active: active.clone(),
                passive: passive.clone(),
            }),
            _ => None,
        },
        constraints: PlacementConstraints::default(),
    }
}

/// The memory (MiB) and vCPUs that the VMs `vms` (but `except`) use or
/// reserve on `host`: those active there, and the passive reservations.
pub(crate) fn used_on(vms: &[VmRecord], host: &str, except: Option<&str>) -> (u64, u32) {
    vms.iter()
        .filter(|v| v.is_active() && Some(v.id.as_str()) != except)
        .filter(|v| v.host.as_deref() == Some(host) || v.reserves_on(host))
        .fold((0, 0), |(m, c), v| (m + v.memory_mib, c + v.vcpus))
}
