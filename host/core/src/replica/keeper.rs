//! The keeper: one task per HA VM on its host that keeps the replica of
//! its disks in step, holds the guest on a lost replica until that is
//! recorded, and drops a replica its passive host no longer holds.

use crate::errors;
use crate::migrate::qemu_tls_dir;
use crate::model::{kind, now_rfc3339, DiskRecord, ReplicaRecord, Severity, VmRecord, VmStatus};
use crate::Inner;
use nasvisor_api_types::peer::{ReplicaDiskSpec, ReplicaServe, ReplicaServing};
use nasvisor_api_types::{CoreError, ReplicaState, ReplicaSyncKind, ReplicaSyncView};
use nasvisor_best_effort::BestEffort;
use nasvisor_vm::migration::{MirrorProgress, MirrorTarget};
use nasvisor_vm::qmp::{InetAddr, RunState};
use nasvisor_vm::replica::link::Sockets;
use nasvisor_vm::replica::probe::{self, ProbeError, ProbeTls};
use nasvisor_vm::replica::{link, resync};
use nasvisor_vm::{EventKind, VmInstance};
use std::sync::Arc;
use std::time::Duration;

use super::{Link, SERVE_TIMEOUT};

/// How long a keeper waits after a failed sync before it tries again.
const RETRY: Duration = Duration::from_secs(15);
/// How often a keeper looks at the record while the replica is in step.
const WATCH: Duration = Duration::from_secs(1);
/// How often the sync's progress is recorded (observed state: sparingly).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often an attached replica's server is probed.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long it may take to answer a probe before it counts as hung and its
/// link is cut (a false alarm costs a resume of the writes it missed).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a cut the writes in flight have to fail.
const CUT_SETTLE: Duration = Duration::from_secs(2);
/// How long a replica may take to let go when it is detached (QEMU first
/// waits for the requests in flight on it) before its link is cut.
const DETACH_WAIT: Duration = Duration::from_secs(10);
/// The QEMU object id of the replica's TLS client credentials.
const TLS_ID: &str = "nv-tls-replica";

/// A probe of a replica server under way.
type PendingProbe =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ProbeError>> + Send>>;

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
                    self.record_replica(id, &passive, ReplicaState::InSync, None, None, None)
                        .await
                        .best_effort("record the replica in step");
                }
                if !self.replicas.has_link(id) {
                    if let Some(r) = ours {
                        self.find_link_again(&vm, &inst, r);
                    }
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
                Ok(done) => {
                    failed_before = None;
                    let how = match done.kind {
                        ReplicaSyncKind::Full => format!(
                            "a full copy, {:.1} MiB",
                            done.copied_bytes as f64 / f64::from(1u32 << 20)
                        ),
                        ReplicaSyncKind::Resumed => format!(
                            "resumed: only the {:.1} MiB it missed were copied",
                            done.copied_bytes as f64 / f64::from(1u32 << 20)
                        ),
                    };
                    self.event(
                        "vm-replica-in-sync",
                        Severity::Info,
                        Some(format!("vm/{}", vm.name)),
                        format!(
                            "HA VM {}: its replica on host {passive} is in step ({how}); a \
                             failover starts it from there",
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
                        None,
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

    /// Asks `passive` to serve `vm`'s replicas, records `syncing`, brings
    /// them in step and records `in-sync`. A replica lost while its server
    /// ran on (this QEMU recorded the writes it missed) is resumed from
    /// those writes; any other is copied in full. Returns how.
    async fn sync_replica(
        self: &Arc<Self>,
        vm: &VmRecord,
        inst: &VmInstance,
        passive: &str,
        disks: &[(String, DiskRecord)],
    ) -> Result<ReplicaSyncView, CoreError> {
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
            let vol = d.volume.clone();
            let info = self
                .on_pool(&d.pool, "disks", move |p| {
                    p.volume(&vol).map_err(|e| errors::storage("disks", e))
                })
                .await?;
            specs.push(ReplicaDiskSpec {
                node: node.clone(),
                pool: d.pool.clone(),
                volume: d.volume.clone(),
                size_bytes: info.virtual_size,
            });
        }
        let nodes: Vec<String> = disks.iter().map(|(n, _)| n.clone()).collect();
        let qmp = inst.qmp();
        let tracked = resync::missed(qmp, &nodes).await.ok().flatten().is_some();
        let resume = vm
            .replica
            .as_ref()
            .filter(|r| r.host == passive && tracked)
            .and_then(|r| r.server.clone());
        let rec = self.host_record(passive)?;
        let serving: ReplicaServing = self
            .call_peer(
                &rec,
                ReplicaServe {
                    id: vm.id.clone(),
                    disks: specs.clone(),
                    resume: resume.clone(),
                },
                SERVE_TIMEOUT,
            )
            .await?;
        let resuming = resume.is_some() && serving.kept;
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
            server: serving.server.clone(),
            serving: Some((serving.host.clone(), serving.port)),
            last_sync: vm.replica.as_ref().and_then(|r| r.last_sync.clone()),
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
        let probe_tls = match &tls {
            Some(t) => Some(ProbeTls {
                dir: qemu_tls_dir(self, "client")?,
                hostname: t.hostname.clone(),
            }),
            None => None,
        };
        // A server that does not answer is not connected to: QEMU would
        // wait on it (up to the open's bound) with the guest.
        match probe::probe(
            &self.cfg.qemu_io,
            &targets,
            probe_tls.as_ref(),
            PROBE_TIMEOUT,
        )
        .await
        {
            Err(e @ ProbeError::Timeout { .. }) => {
                return Err(CoreError::Unavailable {
                    reason: format!("{e}: not connected to now"),
                })
            }
            Err(e) => tracing::debug!(vm = %vm.name, error = %e, "replica probe before the sync"),
            Ok(()) => {}
        }
        let percent = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let copied = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let progress = {
            let (percent, copied) = (percent.clone(), copied.clone());
            move |p: MirrorProgress| {
                let pct = p
                    .done
                    .saturating_mul(100)
                    .checked_div(p.len)
                    .map_or(100, |v| v.min(100) as u8);
                percent.store(pct, std::sync::atomic::Ordering::Relaxed);
                copied.store(p.done, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let gone = {
            let me = self.clone();
            let id = vm.id.clone();
            async move {
                while me.processes.instance(&id).is_some() && !me.shutdown.is_cancelled() {
                    tokio::time::sleep(WATCH).await;
                }
            }
        };
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> = if resuming
        {
            tracing::info!(vm = %vm.name, passive, "resuming the replica from the writes it missed");
            Box::pin(async {
                resync::resume(qmp, &targets, tls.as_ref(), gone, progress)
                    .await
                    .map(|r| (ReplicaSyncKind::Resumed, r.copied, r.sockets))
            })
        } else {
            Box::pin(async {
                link::attach(qmp, &targets, tls.as_ref(), gone, progress)
                    .await
                    .map(|sockets| {
                        let n = copied.load(std::sync::atomic::Ordering::Relaxed);
                        (ReplicaSyncKind::Full, n, sockets)
                    })
            })
        };
        tokio::pin!(work);
        let mut recorded = 0u8;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        let r = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    let now = percent.load(std::sync::atomic::Ordering::Relaxed);
                    if now != recorded {
                        recorded = now;
                        self.record_replica(&vm.id, passive, ReplicaState::Syncing, Some(now), None, None)
                            .await
                            .best_effort("record the replica's progress");
                    }
                }
            }
        };
        let (kind, copied_bytes, sockets) = r.map_err(|e| errors::internal(e.to_string()))?;
        self.replicas.set_link(
            &vm.id,
            Link {
                targets: targets.clone(),
                tls: probe_tls,
                sockets,
            },
        );
        let done = ReplicaSyncView {
            kind,
            copied_bytes,
            at: now_rfc3339(),
        };
        self.record_replica(
            &vm.id,
            passive,
            ReplicaState::InSync,
            None,
            None,
            Some(done.clone()),
        )
        .await?;
        Ok(done)
    }

    /// After a restart of nasvisord with `vm`'s replica `r` attached: where
    /// its server is (to probe it) and QEMU's sockets to it (to cut them),
    /// found again.
    fn find_link_again(&self, vm: &VmRecord, inst: &VmInstance, r: &ReplicaRecord) {
        let Some((host, port)) = r.serving.clone() else {
            tracing::warn!(vm = %vm.name, "the replica's address is not recorded: it is not probed until its next attach");
            return;
        };
        let addr = InetAddr::new(host, port);
        let targets: Vec<MirrorTarget> = r
            .disks
            .iter()
            .map(|(node, _, _)| MirrorTarget {
                node: node.clone(),
                addr: addr.clone(),
                export: node.clone(),
            })
            .collect();
        let tls = if self.cfg.migration_tls {
            let dir = qemu_tls_dir(self, "client");
            let peer = self.host_record(&r.host);
            match (dir, peer) {
                (Ok(dir), Ok(peer)) => Some(ProbeTls {
                    dir,
                    hostname: crate::migrate::tls_name(peer.node_id),
                }),
                _ => {
                    tracing::warn!(vm = %vm.name, "no TLS settings for the replica's probe");
                    return;
                }
            }
        } else {
            None
        };
        let sockets = match Sockets::recover(inst.pid(), &addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "cannot find QEMU's replica sockets again");
                Sockets::default()
            }
        };
        tracing::info!(vm = %vm.name, %addr, sockets = sockets.disks().len(), "the replica's link found again");
        self.replicas.set_link(
            &vm.id,
            Link {
                targets,
                tls,
                sockets,
            },
        );
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
        let mut next_probe = tokio::time::Instant::now() + PROBE_EVERY;
        let mut probing: Option<PendingProbe> = None;
        let mut told_uncut = false;
        loop {
            tokio::select! {
                r = async { probing.as_mut().expect("guarded").await }, if probing.is_some() => {
                    probing = None;
                    next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                    match r {
                        Ok(()) => {}
                        Err(e @ ProbeError::Timeout { .. }) => {
                            if self.replicas.cut(id) {
                                tracing::warn!(vm = id, passive, error = %e, "the replica server hangs; its link is cut");
                                // The writes in flight fail at once: the
                                // guest is held before the replica goes.
                                held_within(qmp, &mut events, CUT_SETTLE).await;
                                return Watch::Lost(format!("{e}; its link was cut"));
                            }
                            if !told_uncut {
                                told_uncut = true;
                                tracing::error!(vm = id, passive, error = %e, "the replica server hangs, and this daemon (restarted since the attach) cannot cut its link: the guest's writes may be held until it answers");
                            }
                        }
                        Err(e) => tracing::debug!(vm = id, error = %e, "replica probe"),
                    }
                }
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
                    if probing.is_none() && tokio::time::Instant::now() >= next_probe {
                        if let Some((targets, tls)) = self.replicas.probe_of(id) {
                            let bin = self.cfg.qemu_io.clone();
                            probing = Some(Box::pin(async move {
                                probe::probe(&bin, &targets, tls.as_ref(), PROBE_TIMEOUT).await
                            }));
                        }
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
                    None,
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
        // The writes the replica misses from now on are recorded: if its
        // server runs on, it resumes from them.
        if let Err(e) = resync::detach_tracking(qmp, nodes).await {
            tracing::error!(vm = id, error = %e, "cannot detach the lost replica; the guest stays held");
            return false;
        }
        self.replicas.forget_link(id);
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
        match self.bounded_detach(&vm.id, qmp, nodes).await {
            Ok(()) | Err(link::LinkError::NotReplicated { .. }) => {
                self.replicas.forget_link(&vm.id)
            }
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
                None,
            )
            .await?;
        }
        self.bounded_detach(&vm.id, inst.qmp(), &nodes)
            .await
            .map_err(|e| errors::internal(e.to_string()))?;
        self.replicas.forget_link(&vm.id);
        resume_if_held(inst.qmp()).await;
        Ok(())
    }

    /// Detaches VM `id`'s replica from `nodes`. QEMU first waits for the
    /// requests in flight on it: a replica that does not answer them (a
    /// hung server or disk the probe has not found yet) would hold the
    /// detach, and the guest, for ever. After [`DETACH_WAIT`] its link is
    /// cut, the requests fail (a write holds the guest: the caller resumes
    /// it) and the detach goes on.
    async fn bounded_detach(
        &self,
        id: &str,
        qmp: &nasvisor_vm::QmpClient,
        nodes: &[String],
    ) -> Result<(), link::LinkError> {
        let detach = link::detach(qmp, nodes);
        tokio::pin!(detach);
        tokio::select! {
            r = &mut detach => r,
            _ = tokio::time::sleep(DETACH_WAIT) => {
                if self.replicas.cut(id) {
                    tracing::warn!(vm = id, "the replica did not let go within {DETACH_WAIT:?} (a hung server or disk?); its link is cut");
                } else {
                    tracing::error!(vm = id, "the replica does not let go, and this daemon (restarted since the attach) cannot cut its link");
                }
                detach.await
            }
        }
    }
}

/// Waits up to `within` until the guest is held on a write error (after
/// its replica's link was cut: a write in flight fails then); a guest that
/// had none in flight stays running.
async fn held_within(
    qmp: &nasvisor_vm::QmpClient,
    events: &mut tokio::sync::broadcast::Receiver<nasvisor_vm::QmpEvent>,
    within: Duration,
) {
    let until = tokio::time::Instant::now() + within;
    loop {
        if qmp
            .query_status()
            .await
            .is_ok_and(|s| s.status == RunState::IoError)
        {
            return;
        }
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
            Ok(_) => {}
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
