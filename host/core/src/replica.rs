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

use crate::errors;
use crate::migrate::{free_port, qemu_tls_dir, tls_identity};
use crate::model::{
    kind, now_rfc3339, DiskRecord, DiskRole, ReplicaRecord, Severity, VmRecord, VmStatus,
};
use crate::Inner;
use nasvisor_api_types::peer::{ReplicaDiskSpec, ReplicaDrop, ReplicaServe, ReplicaServing};
use nasvisor_api_types::{CoreError, ReplicaState};
use nasvisor_best_effort::BestEffort;
use nasvisor_vm::migration::MirrorTarget;
use nasvisor_vm::qmp::{InetAddr, RunState};
use nasvisor_vm::replica::link::{self, LinkState};
use nasvisor_vm::replica::{ReplicaDisk, ReplicaServer, ReplicaTls};
use nasvisor_vm::{EventKind, VmInstance};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a keeper waits after a failed sync before it tries again.
const RETRY: Duration = Duration::from_secs(15);
/// How often a keeper looks at the record while the replica is in step.
const WATCH: Duration = Duration::from_secs(1);
/// How often the sync's progress is recorded (observed state: sparingly).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the passive host may take to answer `replica-serve`.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The QEMU object id of the replica's TLS client credentials.
const TLS_ID: &str = "nv-tls-replica";

/// The VMs whose replica a keeper task looks after on this host.
#[derive(Default)]
pub(crate) struct ReplicaKeepers {
    running: Mutex<HashSet<String>>,
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
    }
}

/// What ended a keeper's watch over an in-step replica.
enum Watch {
    /// The VM no longer runs here (stopped, moved, failed over).
    Gone,
    /// A write failed on the replica: the guest is held.
    Lost(String),
    /// The VM has another passive host now, or is no longer HA.
    Changed,
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

    /// Starts the keeper of VM `id`'s replica on this host, unless one runs
    /// (after a start here, and after a restart of nasvisord).
    pub(crate) fn spawn_replica_keeper(self: &Arc<Self>, id: &str) {
        let Ok(vm) = self.find_vm(id) else {
            return;
        };
        if !vm.ha || self.replicated_disks(&vm).is_empty() || !self.replicas.claim(id) {
            return;
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            me.keep_replica(&id).await;
            me.replicas.release(&id);
        });
    }

    /// Keeps VM `id`'s replica in step while the VM runs here.
    async fn keep_replica(self: &Arc<Self>, id: &str) {
        let mut failed_before: Option<String> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let Some(inst) = self.processes.instance(id) else {
                return;
            };
            let Ok(vm) = self.find_vm(id) else {
                return;
            };
            if vm.host.as_deref() != Some(self.host.id.as_str()) {
                return;
            }
            if vm.state == VmStatus::Migrating {
                // The move detached the replica; it is made again where the
                // VM runs afterwards.
                self.pause(WATCH).await;
                continue;
            }
            let disks = self.replicated_disks(&vm);
            let nodes = self.local_nodes(&vm);
            let passive = vm.passive.clone().filter(|p| *p != self.host.id);
            let attached = self.attached(&inst, &nodes).await;
            let Some(passive) = passive.filter(|_| !disks.is_empty()) else {
                // No passive host (or no longer HA): no replica.
                if attached || vm.replica.is_some() {
                    self.drop_replica(&vm, &inst, &nodes).await;
                }
                if !vm.ha {
                    return;
                }
                self.pause(WATCH).await;
                continue;
            };
            let ours = vm.replica.as_ref().filter(|r| r.host == passive);
            if attached && ours.is_some() {
                if ours.is_some_and(|r| r.state != ReplicaState::InSync) {
                    // In step (the swap happened) but not recorded so, as
                    // after a restart of nasvisord in the middle of it.
                    self.record_replica(id, &passive, ReplicaState::InSync, None, None)
                        .await
                        .best_effort("record the replica in step");
                }
                match self.watch_replica(id, &inst, &passive, &nodes).await {
                    Watch::Gone => return,
                    Watch::Lost(reason) => {
                        if !self
                            .replica_lost(id, &inst, &passive, &nodes, &reason)
                            .await
                        {
                            return;
                        }
                    }
                    Watch::Changed => {}
                }
                continue;
            }
            if attached || vm.replica.as_ref().is_some_and(|r| r.host != passive) {
                // A replica on a host that is not the passive one any more.
                self.drop_replica(&vm, &inst, &nodes).await;
                continue;
            }
            match self.sync_replica(&vm, &inst, &passive, &disks).await {
                Ok(()) => {
                    failed_before = None;
                    self.event(
                        "vm-replica-in-sync",
                        Severity::Info,
                        Some(format!("vm/{}", vm.name)),
                        format!(
                            "HA VM {}: its replica on host {passive} is in step; a failover \
                             starts it from there",
                            vm.name
                        ),
                    )
                    .await;
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(vm = %vm.name, passive, error = %reason, "replica sync failed");
                    if self.processes.instance(id).is_none() {
                        return;
                    }
                    self.record_replica(
                        id,
                        &passive,
                        ReplicaState::Outdated,
                        None,
                        Some(format!("sync failed: {reason}")),
                    )
                    .await
                    .best_effort("record a failed replica sync");
                    if failed_before.as_deref() != Some(reason.as_str()) {
                        self.event(
                            "vm-replica-failed",
                            Severity::Warning,
                            Some(format!("vm/{}", vm.name)),
                            format!(
                                "HA VM {}: its replica on host {passive} could not be brought \
                                 in step (tried again every {} s): {reason}",
                                vm.name,
                                RETRY.as_secs()
                            ),
                        )
                        .await;
                        failed_before = Some(reason);
                    }
                    self.pause(RETRY).await;
                }
            }
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
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

    /// Asks `passive` to serve `vm`'s replicas, records `syncing`, brings
    /// them in step and records `in-sync`.
    async fn sync_replica(
        self: &Arc<Self>,
        vm: &VmRecord,
        inst: &VmInstance,
        passive: &str,
        disks: &[(String, DiskRecord)],
    ) -> Result<(), CoreError> {
        for (node, _) in disks {
            if let Err(link::LinkError::NotReplicated { .. }) = link::state(inst.qmp(), node).await
            {
                return Err(errors::conflict(format!(
                    "VM {} was started before it was an HA VM: its disks get a replica from \
                     its next start",
                    vm.name
                )));
            }
        }
        let mut specs = Vec::new();
        for (node, d) in disks {
            let pool = self.pool(&d.pool, "disks")?;
            let info = pool
                .volume(&d.volume)
                .map_err(|e| errors::storage("disks", e))?;
            specs.push(ReplicaDiskSpec {
                node: node.clone(),
                pool: d.pool.clone(),
                volume: d.volume.clone(),
                size_bytes: info.virtual_size,
            });
        }
        let rec = self.host_record(passive)?;
        let serving: ReplicaServing = self
            .call_peer(
                &rec,
                ReplicaServe {
                    id: vm.id.clone(),
                    disks: specs.clone(),
                },
                SERVE_TIMEOUT,
            )
            .await?;
        let replica = ReplicaRecord {
            host: passive.to_string(),
            state: ReplicaState::Syncing,
            progress: Some(0),
            since: now_rfc3339(),
            reason: None,
            disks: specs
                .iter()
                .map(|s| (s.node.clone(), s.pool.clone(), s.volume.clone()))
                .collect(),
        };
        self.db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                self.still_here(v)?;
                if v.passive.as_deref() != Some(passive) {
                    return Err(errors::conflict(format!(
                        "VM {}'s passive host changed from {passive} meanwhile",
                        v.name
                    )));
                }
                v.replica = Some(replica.clone());
                Ok(())
            })
            .await?;
        let qmp = inst.qmp();
        let tls = if self.cfg.migration_tls {
            let dir = qemu_tls_dir(self, "client")?;
            let name = crate::migrate::tls_name(rec.node_id);
            Some(
                nasvisor_vm::migration::tls_client(qmp, TLS_ID, &dir, &name)
                    .await
                    .map_err(|e| errors::internal(e.to_string()))?,
            )
        } else {
            None
        };
        let targets: Vec<MirrorTarget> = specs
            .iter()
            .map(|s| MirrorTarget {
                node: s.node.clone(),
                addr: InetAddr::new(serving.host.clone(), serving.port),
                export: s.node.clone(),
            })
            .collect();
        let percent = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let seen = percent.clone();
        let gone = {
            let me = self.clone();
            let id = vm.id.clone();
            async move {
                while me.processes.instance(&id).is_some() && !me.shutdown.is_cancelled() {
                    tokio::time::sleep(WATCH).await;
                }
            }
        };
        let attach = link::attach(qmp, &targets, tls.as_ref(), gone, move |p| {
            let pct = p
                .done
                .saturating_mul(100)
                .checked_div(p.len)
                .map_or(100, |v| v.min(100) as u8);
            seen.store(pct, std::sync::atomic::Ordering::Relaxed);
        });
        tokio::pin!(attach);
        let mut recorded = 0u8;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        let r = loop {
            tokio::select! {
                r = &mut attach => break r,
                _ = tick.tick() => {
                    let now = percent.load(std::sync::atomic::Ordering::Relaxed);
                    if now != recorded {
                        recorded = now;
                        self.record_replica(&vm.id, passive, ReplicaState::Syncing, Some(now), None)
                            .await
                            .best_effort("record the replica's progress");
                    }
                }
            }
        };
        r.map_err(|e| errors::internal(e.to_string()))?;
        self.record_replica(&vm.id, passive, ReplicaState::InSync, None, None)
            .await
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

    /// Watches VM `id`'s in-step replica on `passive` until a write fails
    /// on it, the VM goes, or its passive host changes.
    async fn watch_replica(
        &self,
        id: &str,
        inst: &VmInstance,
        passive: &str,
        nodes: &[String],
    ) -> Watch {
        let qmp = inst.qmp();
        let mut events = qmp.events();
        let mut tick = tokio::time::interval(WATCH);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(e) => {
                        if let EventKind::BlockIoError { node_name, reason, operation, .. } = e.kind() {
                            if node_name.as_ref().is_none_or(|n| nodes.contains(n)) {
                                return Watch::Lost(format!(
                                    "a guest {operation} failed on it: {}",
                                    reason.unwrap_or_else(|| "I/O error".into())
                                ));
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Watch::Gone,
                },
                _ = tick.tick() => {
                    if self.shutdown.is_cancelled()
                        || self.processes.instance(id).is_none_or(|i| i.pid() != inst.pid())
                    {
                        return Watch::Gone;
                    }
                    let Ok(vm) = self.find_vm(id) else { return Watch::Gone };
                    if vm.host.as_deref() != Some(self.host.id.as_str()) {
                        return Watch::Gone;
                    }
                    if !vm.ha
                        || vm.passive.as_deref() != Some(passive)
                        || vm.state == VmStatus::Migrating
                    {
                        return Watch::Changed;
                    }
                    // An error whose event was missed.
                    if qmp.query_status().await.is_ok_and(|s| s.status == RunState::IoError) {
                        return Watch::Lost("the guest is held on a write error".into());
                    }
                }
            }
        }
    }

    /// A write failed on VM `id`'s replica on `passive`: the guest is held.
    /// Records the replica outdated, then detaches it and resumes the
    /// guest. Returns false when the VM is not this host's any more (the
    /// guest is then left held: the copy that runs is elsewhere).
    async fn replica_lost(
        &self,
        id: &str,
        inst: &VmInstance,
        passive: &str,
        nodes: &[String],
        reason: &str,
    ) -> bool {
        tracing::warn!(
            vm = id,
            passive,
            reason,
            "replica lost; the guest is held until that is recorded"
        );
        loop {
            match self
                .record_replica(
                    id,
                    passive,
                    ReplicaState::Outdated,
                    None,
                    Some(format!("lost: {reason}")),
                )
                .await
            {
                Ok(()) => break,
                Err(CoreError::Conflict { reason }) => {
                    tracing::warn!(vm = id, %reason, "the VM's replica is not this host's to record; the guest stays held");
                    return false;
                }
                Err(e) => {
                    // No majority: the guest stays held; the lease decides.
                    tracing::warn!(vm = id, error = %e, "cannot record the replica outdated; the guest stays held");
                    if self.shutdown.is_cancelled()
                        || self
                            .processes
                            .instance(id)
                            .is_none_or(|i| i.pid() != inst.pid())
                    {
                        return false;
                    }
                    tokio::time::sleep(WATCH).await;
                }
            }
        }
        let qmp = inst.qmp();
        if let Err(e) = link::detach(qmp, nodes).await {
            tracing::error!(vm = id, error = %e, "cannot detach the lost replica; the guest stays held");
            return false;
        }
        resume_if_held(qmp).await;
        let name = self
            .find_vm(id)
            .map(|v| v.name)
            .unwrap_or_else(|_| id.into());
        self.event(
            "vm-replica-lost",
            Severity::Warning,
            Some(format!("vm/{name}")),
            format!(
                "HA VM {name}: its replica on host {passive} was lost ({reason}); the VM runs on \
                 alone, unprotected, until a replica is in step again"
            ),
        )
        .await;
        true
    }

    /// Drops `vm`'s replica (on a host that is not its passive host any
    /// more, or HA was turned off): the record forgets it first, then it is
    /// detached, and a guest held on a write the replica did not take goes
    /// on (the record no longer names a replica that lacks it). Its host is
    /// asked to delete it (a lost host is asked nothing; it ends its stale
    /// servers when it comes back).
    async fn drop_replica(&self, vm: &VmRecord, inst: &VmInstance, nodes: &[String]) {
        let cleared = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                self.still_here(v)?;
                if v.replica.as_ref().map(|r| &r.host) == vm.replica.as_ref().map(|r| &r.host) {
                    v.replica = None;
                }
                Ok(())
            })
            .await;
        if let Err(e) = cleared {
            tracing::warn!(vm = %vm.name, error = %e, "cannot record the replica dropped; it stays");
            return;
        }
        let qmp = inst.qmp();
        match link::detach(qmp, nodes).await {
            Ok(()) | Err(link::LinkError::NotReplicated { .. }) => {}
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "cannot detach the replica");
                return;
            }
        }
        resume_if_held(qmp).await;
        if let Some(r) = &vm.replica {
            self.event(
                "vm-replica-dropped",
                Severity::Info,
                Some(format!("vm/{}", vm.name)),
                format!(
                    "HA VM {}: its replica on host {} is dropped ({})",
                    vm.name,
                    r.host,
                    match &vm.passive {
                        _ if !vm.ha => "HA is off".to_string(),
                        Some(p) => format!("its passive host is now {p}"),
                        None => "it has no passive host now".to_string(),
                    }
                ),
            )
            .await;
            self.ask_drop(&vm.id, r).await;
        }
    }

    /// Ends the replica servers on this host whose VM's record does not
    /// give its replica to this host (any more): after this host was lost
    /// and came back, or a drop it was not asked for.
    pub(crate) async fn end_stale_replica_servers(&self) {
        let run_dir = self.cfg.run_dir();
        let Ok(rd) = std::fs::read_dir(&run_dir) else {
            return;
        };
        let ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".replica.pid")
                    .map(str::to_string)
            })
            .collect();
        for id in ids {
            let ours = self
                .db
                .get::<VmRecord>(kind::VM, &id)
                .is_some_and(|(v, _)| v.replica.is_some_and(|r| r.host == self.host.id));
            if !ours {
                tracing::info!(vm = %id, "ending a stale replica server");
                self.stop_replica_server(&id).await;
            }
        }
    }

    /// Before VM `vm` moves to `target`: its replica, if attached, is
    /// recorded outdated and detached, so that no write waits on it while
    /// the target (perhaps the host that holds it) prepares.
    pub(crate) async fn replica_before_move(
        &self,
        vm: &VmRecord,
        inst: &VmInstance,
        target: &str,
    ) -> Result<(), CoreError> {
        let nodes: Vec<String> = self
            .replicated_disks(vm)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if !self.attached(inst, &nodes).await {
            return Ok(());
        }
        if let Some(r) = &vm.replica {
            self.record_replica(
                &vm.id,
                &r.host,
                ReplicaState::Outdated,
                None,
                Some(format!("the VM is moving to host {target}")),
            )
            .await?;
        }
        link::detach(inst.qmp(), &nodes)
            .await
            .map_err(|e| errors::internal(e.to_string()))
    }

    /// Deletes the replica volumes of `vm` that this host holds, unless a
    /// VM here uses one.
    pub(crate) fn delete_replica_volumes(&self, vm: &VmRecord) {
        let Some(r) = vm.replica.as_ref().filter(|r| r.host == self.host.id) else {
            return;
        };
        for (_, pool_name, vol) in &r.disks {
            let Some(rec) = self.pool_record(pool_name).filter(|p| !p.shared()) else {
                continue;
            };
            let in_use = self
                .volume_user(pool_name, vol)
                .is_some_and(|u| u.id != vm.id && u.host.as_deref() == Some(self.host.id.as_str()));
            if in_use {
                continue;
            }
            if let Ok(pool) = self.pool(&rec.name, "pool") {
                if pool.volume(vol).is_ok() {
                    pool.delete(vol).best_effort("delete a replica volume");
                }
            }
        }
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

    /// `replica-serve` on the passive host: fresh replica volumes and a
    /// replica server of VM `req.id`, admitting only host `from`.
    pub(crate) async fn replica_serve(
        &self,
        from: u64,
        req: ReplicaServe,
    ) -> Result<ReplicaServing, CoreError> {
        let vm = self.find_vm(&req.id)?;
        if vm.passive.as_deref() != Some(self.host.id.as_str()) {
            return Err(errors::conflict(format!(
                "host {} is not VM {}'s passive host",
                self.host.id, vm.name
            )));
        }
        if self.processes.contains(&vm.id) {
            return Err(errors::conflict(format!(
                "VM {} runs on host {}: it cannot hold its replica",
                vm.name, self.host.id
            )));
        }
        self.stop_replica_server(&vm.id).await;
        let mut disks = Vec::new();
        for d in &req.disks {
            let field = format!("disks[{}]", d.node);
            let rec = self
                .pool_record(&d.pool)
                .filter(|p| !p.shared())
                .ok_or_else(|| {
                    errors::conflict(format!(
                        "host {} has no pool {} of its own for the replica of {}",
                        self.host.id, d.pool, d.volume
                    ))
                })?;
            let pool = self.pool(&rec.name, &field)?;
            if let Some(user) = self.volume_user(&d.pool, &d.volume) {
                if user.id != vm.id && user.host.as_deref() == Some(self.host.id.as_str()) {
                    return Err(errors::conflict(format!(
                        "volume {}/{} on host {} belongs to VM {}",
                        d.pool, d.volume, self.host.id, user.name
                    )));
                }
            }
            // An older copy (a former replica, or what a failover left
            // here) is replaced: the sync writes every block anyway.
            if pool.volume(&d.volume).is_ok() {
                pool.delete(&d.volume)
                    .map_err(|e| errors::storage(&field, e))?;
            }
            let info = pool
                .create(&d.volume, d.size_bytes)
                .map_err(|e| errors::storage(&field, e))?;
            disks.push(ReplicaDisk {
                node: d.node.clone(),
                path: info.path,
            });
        }
        let ip = self.cluster_ip()?;
        let port = free_port(&ip)?;
        let tls = if self.cfg.migration_tls {
            Some(ReplicaTls {
                dir: qemu_tls_dir(self, "server")?,
                client_identity: tls_identity(from),
            })
        } else {
            None
        };
        let addr = InetAddr::new(ip.clone(), port);
        let server = ReplicaServer::start(
            Path::new(&self.cfg.qemu_storage_daemon),
            &self.cfg.run_dir(),
            &vm.id,
            &disks,
            &addr,
            tls.as_ref(),
        )
        .await
        .map_err(|e| errors::internal(e.to_string()))?;
        tracing::info!(vm = %vm.name, pid = server.pid(), %addr, "serving the replica");
        Ok(ReplicaServing { host: ip, port })
    }

    /// `replica-drop`: stops VM `req.id`'s replica server here and deletes
    /// its volumes (unless a VM here uses one).
    pub(crate) async fn replica_drop(&self, req: ReplicaDrop) -> Result<(), CoreError> {
        self.stop_replica_server(&req.id).await;
        if !req.delete_volumes {
            return Ok(());
        }
        for (pool_name, vol) in &req.volumes {
            let Some(rec) = self.pool_record(pool_name).filter(|p| !p.shared()) else {
                continue;
            };
            let in_use = self
                .volume_user(pool_name, vol)
                .is_some_and(|u| u.host.as_deref() == Some(self.host.id.as_str()));
            if in_use {
                continue;
            }
            let pool = self.pool(&rec.name, "pool")?;
            if pool.volume(vol).is_ok() {
                pool.delete(vol).map_err(|e| errors::storage("volume", e))?;
            }
        }
        Ok(())
    }

    /// Stops VM `id`'s replica server on this host, if one runs (before
    /// the VM is launched here from its replica, and when it is dropped).
    pub(crate) async fn stop_replica_server(&self, id: &str) {
        if ReplicaServer::end(&self.cfg.run_dir(), id).await {
            tracing::info!(vm = id, "replica server stopped");
        }
    }
}

/// Resumes a guest held on a write error (`io-error`); a guest paused for
/// another reason stays paused.
async fn resume_if_held(qmp: &nasvisor_vm::QmpClient) {
    if qmp
        .query_status()
        .await
        .is_ok_and(|s| s.status == RunState::IoError)
    {
        qmp.cont()
            .await
            .best_effort("resume the guest held on its replica");
    }
}
