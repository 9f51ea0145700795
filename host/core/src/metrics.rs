//! What `/metrics` reads at scrape time: the cluster's VMs by state, each
//! member's resources and reservations, jobs, this host's plugin slots and
//! its view of raft ([`nasvisor_metrics::State`]). The figures recorded as
//! they happen (requests, decisions, jobs, migrations, raft commits) are
//! recorded where they happen, into `nasvisor_metrics`.

use crate::model::{kind, HostRecord, JobRecord, VmRecord};
use crate::Inner;
use nasvisor_api_types::{ClusterRole, HostHealth};
use nasvisor_metrics::{HostState, PluginState, RaftState, State};
use std::collections::BTreeMap;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The name `v` has in the API's JSON (its serde name).
pub(crate) fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn counts(names: impl IntoIterator<Item = String>) -> Vec<(String, u64)> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

impl Inner {
    /// The cluster as this scrape sees it.
    pub(crate) fn metrics_state(&self) -> State {
        let vms = self.db.list_shared::<VmRecord>(kind::VM);
        let views: Vec<_> = vms.iter().map(|v| self.vm_view(v)).collect();
        let records: BTreeMap<String, HostRecord> = self
            .db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .map(|h| (h.id.clone(), h))
            .collect();
        let (local_storage, local_free) = self.local_storage_gib();
        let hosts = self
            .list_hosts()
            .into_iter()
            .filter_map(|h| {
                let rec = records.get(&h.id)?;
                let (mut used_mib, mut used_cpus, mut res_mib, mut res_cpus) = (0, 0, 0, 0);
                for v in vms.iter().filter(|v| v.is_active()) {
                    if v.host.as_deref() == Some(h.id.as_str()) {
                        used_mib += v.memory_mib;
                        used_cpus += u64::from(v.vcpus);
                    } else if v.reserves_on(&h.id) {
                        res_mib += v.memory_mib;
                        res_cpus += u64::from(v.vcpus);
                    }
                }
                let (storage, free) = if h.id == self.host.id {
                    (local_storage, local_free)
                } else {
                    (rec.storage_gib, rec.free_storage_gib)
                };
                Some(HostState {
                    name: h.name.clone(),
                    online: h.online,
                    healthy: h.health == HostHealth::Healthy,
                    cordoned: h.cordoned,
                    leader: matches!(h.cluster_role, ClusterRole::Leader | ClusterRole::Single),
                    vcpus: u64::from(h.cpus),
                    vcpus_used: used_cpus,
                    vcpus_reserved: res_cpus,
                    memory_bytes: self.vm_memory_capacity(rec).saturating_mul(MIB),
                    memory_used_bytes: used_mib.saturating_mul(MIB),
                    memory_reserved_bytes: res_mib.saturating_mul(MIB),
                    storage_bytes: storage.saturating_mul(GIB),
                    storage_free_bytes: free.saturating_mul(GIB),
                    vms: h.vms,
                })
            })
            .collect();
        let store = self.db.store();
        let m = store.metrics();
        State {
            host: self.host.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            vms_by_state: counts(views.iter().map(|v| name_of(&v.state))),
            ha_by_state: counts(
                views
                    .iter()
                    .filter_map(|v| v.ha_status.as_ref())
                    .map(|h| name_of(&h.state)),
            ),
            hosts,
            jobs_by_state: counts(
                self.db
                    .list::<JobRecord>(kind::JOB)
                    .iter()
                    .map(|j| name_of(&j.state)),
            ),
            plugins: self
                .policy
                .status()
                .into_iter()
                .map(|s| PluginState {
                    world: s.world.as_str().to_string(),
                    plugin: s.plugin.unwrap_or_default(),
                    quarantined: s.quarantined,
                    faults: s.failures,
                })
                .collect(),
            raft: RaftState {
                term: m.current_term,
                leader: m.current_leader == Some(store.node_id()),
                has_quorum: self.has_quorum(),
                last_applied: m.last_applied.map_or(0, |l| l.index),
                // A host in no cluster is a cluster of one.
                members: (store.members().iter().filter(|m| m.voter).count() as u64).max(1),
            },
        }
    }
}
