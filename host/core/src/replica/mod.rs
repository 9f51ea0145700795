//! Synchronous disk replicas of HA VMs whose disks are on their host's own
//! pools (docs/ha.md, "Synchronous replicas").
//!
//! - **Which disks.** Every disk of an HA VM on a pool of its host (not a
//!   shared pool, not a CD-ROM) is launched replicated: a quorum of the
//!   image and a placeholder (`nasvisor_vm::replica::link`).
//! - **The passive host** serves, on `replica-serve`, the volume of the same
//!   name in its pool of the same name (created empty, replacing an older
//!   copy) from a replica server of its own (`qemu-storage-daemon`, TLS
//!   admitting only the active host).
//! - **The active host** keeps the replica in step while the VM runs there
//!   (one keeper task per VM): it asks the passive host to serve, records
//!   `syncing` with its progress, attaches the replica (a write-blocking
//!   mirror, then the swap into the quorum), and records `in-sync`.
//! - **A lost replica holds the guest** on the write it did not take. The
//!   keeper records `outdated` first (refused once the record gives the VM
//!   to another host), and only then detaches the replica and resumes the
//!   guest. If it cannot record (this host lost the majority), the guest
//!   stays held until its lease ends; the leader fails the VM over onto the
//!   replica, which has every write the guest saw complete.
//! - **Failover** onto an `in-sync` replica on the target moves the record
//!   as for a shared pool (`cluster/lost.rs`, `check_disks_follow`): the
//!   disks keep their pool and volume names, which now mean the target's.
//!   The target stops the replica server before it launches the VM.
//! - **A new passive host** (the old one lost, or the VM moved): the
//!   keeper detaches the old replica, asks the old host to drop it (best
//!   effort) and brings a new one in step.

mod keeper;
mod serve;
mod vars;

use crate::errors;
use crate::model::{kind, now_rfc3339, DiskRecord, DiskRole, ReplicaRecord, VmRecord};
use crate::Inner;
use nasvisor_api_types::peer::ReplicaDrop;
use nasvisor_api_types::{CoreError, ReplicaState};
use nasvisor_best_effort::BestEffort;
use nasvisor_vm::migration::MirrorTarget;
use nasvisor_vm::replica::link::Sockets;
use nasvisor_vm::replica::link::{self, LinkState};
use nasvisor_vm::replica::probe::ProbeTls;
use nasvisor_vm::VmInstance;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// How long the passive host may take to answer `replica-serve`.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The VMs whose replica a keeper task looks after on this host, and the
/// links of their attached replicas.
#[derive(Default)]
pub(crate) struct ReplicaKeepers {
    running: Mutex<HashSet<String>>,
    links: Mutex<HashMap<String, Link>>,
}

/// An attached replica as this daemon made it: where its server is (for
/// the probe) and the kill switch of its sockets. A daemon restarted since
/// the attach has none: it cannot cut a hung replica off (docs/ha.md).
pub(crate) struct Link {
    pub targets: Vec<MirrorTarget>,
    pub tls: Option<ProbeTls>,
    pub sockets: Sockets,
}

impl ReplicaKeepers {
    /// Claims VM `id`; false when a keeper already runs for it.
    fn claim(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
    }

    fn release(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.forget_link(id);
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_link(&self, id: &str, link: Link) {
        self.links().insert(id.to_string(), link);
    }

    /// Forgets VM `id`'s link (its replica was detached).
    fn forget_link(&self, id: &str) {
        self.links().remove(id);
    }

    /// Where VM `id`'s attached replica is served, to probe it.
    fn probe_of(&self, id: &str) -> Option<(Vec<MirrorTarget>, Option<ProbeTls>)> {
        self.links()
            .get(id)
            .map(|l| (l.targets.clone(), l.tls.clone()))
    }

    /// Whether this daemon knows VM `id`'s attached replica.
    fn has_link(&self, id: &str) -> bool {
        self.links().contains_key(id)
    }

    /// Cuts VM `id`'s replica sockets; false when this daemon has none.
    fn cut(&self, id: &str) -> bool {
        match self.links().get(id) {
            Some(l) if !l.sockets.is_empty() => {
                l.sockets.cut();
                true
            }
            _ => false,
        }
    }
}

impl Inner {
    /// Whether disk `d` of `vm` gets a synchronous replica: `vm` is HA and
    /// `d` is a writable disk on a pool of the VM's host.
    pub(crate) fn is_replicated(&self, vm: &VmRecord, d: &DiskRecord) -> bool {
        vm.ha
            && d.role != DiskRole::Cdrom
            && !self
                .db
                .get::<crate::model::PoolRecord>(kind::POOL, &d.pool)
                .is_some_and(|(p, _)| p.shared())
    }

    /// `vm`'s replicated disks with their block nodes (`disk<i>`).
    fn replicated_disks(&self, vm: &VmRecord) -> Vec<(String, DiskRecord)> {
        vm.disks
            .iter()
            .enumerate()
            .filter(|(_, d)| self.is_replicated(vm, d))
            .map(|(i, d)| (format!("disk{i}"), d.clone()))
            .collect()
    }

    /// The block nodes of `vm`'s disks that were replicated if it was
    /// launched as an HA VM (HA may have been turned off since).
    fn local_nodes(&self, vm: &VmRecord) -> Vec<String> {
        let as_ha = VmRecord {
            ha: true,
            ..vm.clone()
        };
        self.replicated_disks(&as_ha)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// The host whose in-step replica holds every disk of `vm` that is on
    /// its host's own pool, if there is one.
    pub(crate) fn in_sync_replica_host(&self, vm: &VmRecord) -> Option<String> {
        let r = vm.replica.as_ref()?;
        if r.state != ReplicaState::InSync {
            return None;
        }
        let covered = vm
            .disks
            .iter()
            .filter(|d| self.is_replicated(vm, d))
            .all(|d| {
                r.disks
                    .iter()
                    .any(|(_, pool, vol)| *pool == d.pool && *vol == d.volume)
            });
        covered.then(|| r.host.clone())
    }

    /// Whether every one of `nodes` has its replica attached in `inst`.
    async fn attached(&self, inst: &VmInstance, nodes: &[String]) -> bool {
        if nodes.is_empty() {
            return false;
        }
        for n in nodes {
            match link::state(inst.qmp(), n).await {
                Ok(LinkState::Replicated) => {}
                _ => return false,
            }
        }
        true
    }

    /// Records VM `id`'s replica on `host` as `state`, if the record still
    /// gives the VM to this host and its replica to `host`.
    async fn record_replica(
        &self,
        id: &str,
        host: &str,
        state: ReplicaState,
        progress: Option<u8>,
        reason: Option<String>,
        last_sync: Option<nasvisor_api_types::ReplicaSyncView>,
    ) -> Result<(), CoreError> {
        self.db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                self.still_here(v)?;
                match v.replica.as_mut() {
                    Some(r) if r.host == host => {
                        if r.state != state {
                            r.since = now_rfc3339();
                        }
                        r.state = state;
                        r.progress = progress;
                        r.reason = reason.clone();
                        if last_sync.is_some() {
                            r.last_sync = last_sync.clone();
                        }
                        Ok(())
                    }
                    _ => Err(errors::conflict(format!(
                        "VM {}'s replica is no longer on host {host}",
                        v.name
                    ))),
                }
            })
            .await
            .map(drop)
    }

    /// Asks replica `r`'s host to stop serving it and delete it (best
    /// effort: a lost host is asked nothing).
    pub(crate) async fn ask_drop(&self, id: &str, r: &ReplicaRecord) {
        let call = ReplicaDrop {
            id: id.to_string(),
            volumes: r
                .disks
                .iter()
                .map(|(_, p, v)| (p.clone(), v.clone()))
                .collect(),
            delete_volumes: true,
        };
        if r.host == self.host.id {
            self.replica_drop(call).await.best_effort("drop a replica");
            return;
        }
        if self.lost_host(&r.host).is_some() {
            return;
        }
        match self.host_record(&r.host) {
            Ok(rec) => self
                .call_peer(&rec, call, SERVE_TIMEOUT)
                .await
                .best_effort("ask a host to drop a replica"),
            Err(e) => tracing::warn!(error = %e, "cannot ask a host to drop a replica"),
        }
    }
}
