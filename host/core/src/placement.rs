//! Where a VM runs at first power-on: a deterministic filter picks the
//! eligible hosts (online, enough free resources, constraints), then the
//! scheduler plugin chooses among them — the same path with one host as with
//! seven.

use crate::errors;
use crate::model::{kind, HostRecord, VmRecord};
use crate::Inner;
use nasvisor_api::CoreError;
use nasvisor_plugin_host::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::*;

impl Inner {
    /// Memory of the active VMs on `host`, MiB (the VM `except` excluded).
    pub(crate) fn used_memory_mib(&self, host: &str, except: Option<&str>) -> (u64, u32) {
        self.db
            .list::<VmRecord>(kind::VM)
            .iter()
            .filter(|v| v.host.as_deref() == Some(host) && v.is_active())
            .filter(|v| Some(v.id.as_str()) != except)
            .fold((0, 0), |(m, c), v| (m + v.memory_mib, c + v.vcpus))
    }

    /// Memory VMs may use on `host`, MiB.
    pub(crate) fn vm_memory_capacity(&self, h: &HostRecord) -> u64 {
        h.memory_mib.saturating_sub(self.cfg.reserved_memory_mib)
    }

    /// The cluster as the scheduler sees it.
    pub(crate) fn cluster_view(&self) -> ClusterView {
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        let vms: Vec<VmRecord> = self.db.list(kind::VM);
        let (storage_cap, storage_free) = self.storage_gib();
        ClusterView {
            hosts: hosts
                .iter()
                .map(|h| {
                    let (mem, cpus) = self.used_memory_mib(&h.id, None);
                    let cap = self.vm_memory_capacity(h);
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
                        health: HostHealth::Healthy,
                        ..Default::default()
                    }
                })
                .collect(),
            vms: vms.iter().map(vm_info).collect(),
            has_quorum: true,
            now_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Capacity and free space of this host's pools, GiB (each filesystem
    /// counted once).
    fn storage_gib(&self) -> (u64, u64) {
        let mut seen = std::collections::HashSet::new();
        let (mut cap, mut free) = (0u64, 0u64);
        for p in self.db.list::<crate::model::PoolRecord>(kind::POOL) {
            let Ok(pool) = nasvisor_storage::Pool::open(&p.name, std::path::Path::new(&p.path))
            else {
                continue;
            };
            if let Ok(u) = pool.usage() {
                if seen.insert((u.capacity_bytes, u.free_bytes >> 30)) {
                    cap += u.capacity_bytes >> 30;
                    free += u.free_bytes >> 30;
                }
            }
        }
        (cap, free)
    }

    /// Chooses the host for `vm`'s first power-on: `wanted` when given (it
    /// must be eligible), else the scheduler's choice among eligible hosts.
    pub(crate) fn place(&self, vm: &VmRecord, wanted: Option<&str>) -> Result<String, CoreError> {
        let view = self.cluster_view();
        let mut reasons = Vec::new();
        let eligible: Vec<String> = view
            .hosts
            .iter()
            .filter(|h| {
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
        let decision = self.policy.decide(DecisionInput::Place {
            request: PlacementRequest {
                vm: vm_info(vm),
                eligible_hosts: eligible.clone(),
                eligible_passive_hosts: Vec::new(),
            },
            view,
        });
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

fn vm_info(v: &VmRecord) -> VmInfo {
    VmInfo {
        id: v.id.clone(),
        name: v.name.clone(),
        resources: Resources {
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            storage_gib: v.disks.iter().map(|d| d.size_mib.div_ceil(1024)).sum(),
        },
        state: if v.is_active() {
            VmState::Running
        } else {
            VmState::Stopped
        },
        host: v.host.clone(),
        ha_enabled: v.ha,
        ha: None,
        constraints: PlacementConstraints::default(),
    }
}
