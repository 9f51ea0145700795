//! The core in a cluster of hosts:
//!
//! - this host's record (identity, node id, endpoint, resources) and its
//!   default pool, written at every start and again after a join;
//! - `cluster join`: a host without VMs swaps its single-host store for the
//!   cluster's, then registers its pools, images and vswitches there;
//! - routing: an action about a VM (or a job, or a host) is carried out by
//!   the host it lives on, reached over the cluster's mutual-TLS channel
//!   ([`nasvisor_cluster::peer`]); any host's API serves the whole cluster;
//! - heartbeats and quorum (`heartbeat.rs`): the leader asks every host for
//!   its health, resources and peer protocol version; a host silent for
//!   `offline_after` is recorded offline, with an event, and online again
//!   when it answers; a host that loses the majority refuses changes at once and,
//!   after `quorum_stop_delay`, stops its VMs; when the majority is back it
//!   starts again those that should run.
//!
//! Somewhat over 700 lines: membership (join, remove, cordon) and routing
//! (route, forward, reads at the VM's host) share the host-record helpers
//! here; heartbeats, the lease and lost hosts are already files of their
//! own.

use crate::errors;
use crate::model::{
    kind, now_rfc3339, pool_key, HostRecord, JobRecord, PoolRecord, Severity, VmRecord,
    VswitchRecord,
};
use crate::Inner;
use nasvisor_api_types::peer::{ForwardAction, Read};
use nasvisor_api_types::{
    AccelKind, Action, Answer, ClusterRole, ClusterView, CoreError, HostHealth, HostView,
};
use nasvisor_api_types::{ClusterJoin, PowerOp, VmCreate};
use nasvisor_best_effort::BestEffort;
use nasvisor_cluster::ClusterStore;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod heartbeat;
pub(crate) mod lease;
mod lost;

/// How long a forwarded action may take (a VM start waits for QEMU).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a read waits for the host that knows best.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Heartbeats, quorum and fencing state of this host.
#[derive(Default)]
pub(crate) struct ClusterRuntime {
    /// The leader's view: when each host last answered.
    pub(crate) last_seen: Mutex<HashMap<String, Instant>>,
    /// The leader's view: the `seq` of each host's last heartbeat answer
    /// (acknowledged in the next heartbeat, see `lease.rs`).
    answers_seen: Mutex<HashMap<String, u64>>,
    /// When the quorum was lost (`None`: we have it).
    quorum_lost_since: Mutex<Option<Instant>>,
    /// VMs this host stopped because it lost the quorum.
    fenced: Mutex<HashSet<String>>,
    /// Whether VMs were stopped for the quorum loss or a lapsed HA lease.
    stopped_for_quorum: Mutex<bool>,
    /// This host's HA lease (`lease.rs`).
    pub(crate) lease: lease::HaLease,
    /// The leader's latest heartbeat round, not recorded yet
    /// (`heartbeat.rs`: the heartbeat loop leaves it, the record loop
    /// takes it).
    round: Mutex<Option<heartbeat::Round>>,
    /// Wakes the record loop when a round is left.
    round_ready: Arc<tokio::sync::Notify>,
}

impl Inner {
    /// Whether this host belongs to a cluster of more than one voter.
    pub(crate) fn multi_host(&self) -> bool {
        self.db.store().cluster_info().is_some()
            && self.db.store().members().iter().filter(|m| m.voter).count() > 1
    }

    /// Whether this host may change the desired state now.
    pub(crate) fn has_quorum(&self) -> bool {
        !self.multi_host() || self.db.store().has_quorum(self.cfg.offline_after)
    }

    pub(super) fn no_quorum() -> CoreError {
        CoreError::Unavailable {
            reason: "this host has lost the cluster's quorum (it cannot reach a majority of \
                     the hosts); changes are refused until it is back"
                .into(),
        }
    }

    /// Writes this host's record: identity and resources, keeping what
    /// others decided about it (cordoned).
    pub(crate) async fn register_host(&self) -> Result<(), CoreError> {
        let store = self.db.store();
        let (storage, free) = self.local_storage_gib();
        let mut rec = self.host.clone();
        rec.node_id = store.node_id();
        rec.address = self.cfg.cluster_address.clone();
        rec.online = true;
        rec.storage_gib = storage;
        rec.free_storage_gib = free;
        rec.last_seen = Some(now_rfc3339());
        // In a cluster, the record as the leader has it: this host's own
        // copy may be stale (it was cut off when the leader recorded it
        // offline), and writing it back would undo what the leader recorded.
        let local = || {
            self.db
                .get::<HostRecord>(kind::HOST, &rec.id)
                .map(|(h, _)| h)
        };
        let old = if store.cluster_info().is_some() {
            match store.get_linearizable(kind::HOST, &rec.id).await {
                Ok(v) => v.and_then(|(v, _)| serde_json::from_value::<HostRecord>(v).ok()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read this host's record from the leader; using the local copy");
                    local()
                }
            }
        } else {
            local()
        };
        if let Some(old) = old {
            if old.node_id != rec.node_id
                && old.node_id != 0
                && store.members().iter().any(|m| m.node_id == old.node_id)
            {
                return Err(errors::conflict(format!(
                    "host name {} is already taken by node {} of the cluster; give this host \
                     another [host] name",
                    rec.id, old.node_id
                )));
            }
            rec.cordoned = old.cordoned;
            if self.multi_host() && old.node_id == rec.node_id {
                // Whether it is online is the leader's to say: a host that
                // restarts does not mark itself back, so the leader sees it
                // come back and says so (`host-online`).
                rec.online = old.online;
                rec.offline_since = old.offline_since;
            }
        }
        self.db.put(kind::HOST, &rec.id, &rec, None).await?;
        Ok(())
    }

    /// This host's `default` pool, created on first start (and after a
    /// join). A pool record of a single host from before pools were per
    /// host is made this host's.
    pub(crate) async fn ensure_default_pool(&self) -> Result<(), CoreError> {
        let me = self.host.id.clone();
        for p in self.db.list::<PoolRecord>(kind::POOL) {
            if p.host.is_none()
                && std::path::Path::new(&p.path).starts_with(&self.cfg.data_dir)
                && !self.multi_host()
            {
                let local = PoolRecord {
                    host: Some(me.clone()),
                    ..p.clone()
                };
                self.db.delete(kind::POOL, &p.key()).await?;
                self.db.put(kind::POOL, &local.key(), &local, None).await?;
            }
        }
        let key = pool_key(Some(&me), "default");
        if self.db.get::<PoolRecord>(kind::POOL, &key).is_none() {
            let dir = self.cfg.data_dir.join("pools/default");
            std::fs::create_dir_all(&dir)
                .map_err(|e| errors::internal(format!("{}: {e}", dir.display())))?;
            let rec = PoolRecord {
                name: "default".into(),
                path: dir.to_string_lossy().into_owned(),
                host: Some(me),
            };
            self.db
                .create(kind::POOL, &key, &rec, "pool default")
                .await?;
        }
        Ok(())
    }

    /// The record of pool `name` as this host sees it: its own, else a
    /// shared one.
    pub(crate) fn pool_record(&self, name: &str) -> Option<PoolRecord> {
        self.db
            .get::<PoolRecord>(kind::POOL, &pool_key(Some(&self.host.id), name))
            .or_else(|| {
                self.db
                    .get::<PoolRecord>(kind::POOL, name)
                    .filter(|(p, _)| p.shared())
            })
            .map(|(p, _)| p)
    }

    /// The pools this host reaches: its own and the shared ones.
    pub(crate) fn local_pools(&self) -> Vec<PoolRecord> {
        self.db
            .list::<PoolRecord>(kind::POOL)
            .into_iter()
            .filter(|p| p.host.as_deref().is_none_or(|h| h == self.host.id))
            .collect()
    }

    /// Capacity and free space of this host's pools, GiB (each filesystem
    /// counted once), as the health checks last measured them.
    pub(crate) fn local_storage_gib(&self) -> (u64, u64) {
        let mut seen = HashSet::new();
        let (mut cap, mut free) = (0u64, 0u64);
        for p in self.local_pools() {
            if let Some(u) = self.pool_usage(&p.name) {
                if seen.insert((u.capacity_bytes, u.free_bytes >> 30)) {
                    cap += u.capacity_bytes >> 30;
                    free += u.free_bytes >> 30;
                }
            }
        }
        (cap, free)
    }

    pub(crate) fn host_record(&self, id: &str) -> Result<HostRecord, CoreError> {
        self.db
            .get::<HostRecord>(kind::HOST, id)
            .map(|(h, _)| h)
            .ok_or_else(|| errors::not_found(format!("host {id}")))
    }

    /// A host as the API shows it.
    pub(crate) fn host_view(&self, h: &HostRecord) -> HostView {
        self.host_view_among(h, &self.db.list_shared::<VmRecord>(kind::VM))
    }

    /// [`Self::host_view`] with the VM records read already (one read of
    /// them for a whole list of hosts).
    fn host_view_among(&self, h: &HostRecord, all_vms: &[VmRecord]) -> HostView {
        let (used, _) = crate::placement::used_on(all_vms, &h.id, None);
        let vms = all_vms
            .iter()
            .filter(|v| v.host.as_deref() == Some(h.id.as_str()))
            .count();
        let store = self.db.store();
        let cut_off = self.multi_host() && !self.has_quorum();
        let cluster_role = if !self.multi_host() {
            ClusterRole::Single
        } else if store.metrics().current_leader == Some(h.node_id) && !cut_off {
            // A leader cut off from the majority leads no one.
            ClusterRole::Leader
        } else {
            ClusterRole::Follower
        };
        let (health, health_reasons) = self.health_of(h, cut_off);
        let accel = match h.accel.as_str() {
            "kvm" => AccelKind::Kvm,
            "tcg" => AccelKind::Tcg,
            other => {
                tracing::warn!(host = %h.id, accel = other, "host record with an unknown accelerator shown as tcg");
                AccelKind::Tcg
            }
        };
        HostView {
            id: h.id.clone(),
            name: h.name.clone(),
            version: h.version.clone(),
            cpus: h.cpus.max(1),
            memory_mib: h.memory_mib,
            cluster_role,
            accel,
            accel_reason: h.accel_reason.clone(),
            free_memory_mib: self.vm_memory_capacity(h).saturating_sub(used),
            qemu_version: h.qemu_version.clone(),
            node_id: h.node_id.max(1),
            address: h.address.clone(),
            online: h.online,
            cordoned: h.cordoned,
            vms: vms as u64,
            last_seen: h.last_seen.clone(),
            protocol: h.protocol,
            protocol_compatible: h.protocol_compatible,
            health,
            health_reasons,
        }
    }

    /// Host `h`'s health and why, as this host can tell (`cut_off`: this
    /// host cannot reach the majority).
    pub(crate) fn health_of(&self, h: &HostRecord, cut_off: bool) -> (HostHealth, Vec<String>) {
        let problems = self.problems_of(h);
        if cut_off {
            let why = if h.id == self.host.id {
                "this host cannot reach the cluster's majority: it refuses changes and stops \
                 its VMs after the quorum-stop delay"
            } else {
                "the host answering cannot reach the cluster's majority: this record may be stale"
            };
            let mut reasons = vec![why.to_string()];
            reasons.extend(problems);
            return (HostHealth::Unknown, reasons);
        }
        if let Some(lost) = self.lost_host(&h.id) {
            if let Some(how) = &h.fenced {
                return (
                    HostHealth::Fenced,
                    vec![lost.describe(), format!("fenced: {how}")],
                );
            }
            return (HostHealth::Offline, vec![lost.describe()]);
        }
        if let Some(r) = &h.maintenance {
            let mut reasons = vec![if r.is_empty() {
                "in maintenance".to_string()
            } else {
                format!("in maintenance: {r}")
            }];
            reasons.extend(problems);
            return (HostHealth::Maintenance, reasons);
        }
        if problems.is_empty() {
            (HostHealth::Healthy, problems)
        } else {
            (HostHealth::Degraded, problems)
        }
    }

    /// `host degrade` / `host undegrade`.
    pub(crate) async fn set_maintenance(
        &self,
        host: &str,
        maintenance: Option<nasvisor_api_types::HostDegrade>,
    ) -> Result<HostView, CoreError> {
        let rec = self.host_record(host)?;
        if rec.removed {
            return Err(errors::not_found(format!("host {host}")));
        }
        let reason = maintenance.map(|m| m.reason.unwrap_or_default());
        if rec.maintenance == reason {
            return Ok(self.host_view(&rec));
        }
        let rec = self
            .db
            .update::<HostRecord, _>(kind::HOST, host, |r| {
                r.maintenance = reason.clone();
                Ok(())
            })
            .await?;
        let (kind_, message) = match &reason {
            Some(r) if r.is_empty() => (
                "host-maintenance",
                format!("host {host} put into maintenance"),
            ),
            Some(r) => (
                "host-maintenance",
                format!("host {host} put into maintenance: {r}"),
            ),
            None => (
                "host-maintenance-ended",
                format!("host {host} is out of maintenance"),
            ),
        };
        self.event(
            kind_,
            Severity::Warning,
            Some(format!("host/{host}")),
            message,
        )
        .await;
        Ok(self.host_view(&rec))
    }

    /// The members, without the hosts removed from the cluster.
    pub(crate) fn list_hosts(&self) -> Vec<HostView> {
        let vms = self.db.list_shared::<VmRecord>(kind::VM);
        self.db
            .list::<HostRecord>(kind::HOST)
            .iter()
            .filter(|h| !h.removed)
            .map(|h| self.host_view_among(h, &vms))
            .collect()
    }

    pub(crate) async fn set_cordon(
        &self,
        host: &str,
        cordoned: bool,
    ) -> Result<HostView, CoreError> {
        self.host_record(host)?;
        let rec = self
            .db
            .update::<HostRecord, _>(kind::HOST, host, |h| {
                h.cordoned = cordoned;
                Ok(())
            })
            .await?;
        self.event(
            if cordoned {
                "host-cordoned"
            } else {
                "host-uncordoned"
            },
            Severity::Info,
            Some(format!("host/{host}")),
            if cordoned {
                format!("host {host} cordoned: no new VMs are placed on it")
            } else {
                format!("host {host} uncordoned")
            },
        )
        .await;
        Ok(self.host_view(&rec))
    }

    // ---- routing ----

    /// Which host carries `action` out (`None`: this one). May fill in the
    /// host a placement chose, so the target does not place again.
    pub(crate) async fn route(&self, action: &mut Action) -> Result<Option<String>, CoreError> {
        let target = match action {
            Action::VmPower { id, op } => {
                let vm = self.find_vm(id)?;
                match (&vm.host, op) {
                    (Some(h), _) => Some(h.clone()),
                    (None, PowerOp::Start { host }) => {
                        let h = self.place(&vm, host.as_deref()).await?;
                        *host = Some(h.clone());
                        Some(h)
                    }
                    (None, _) => None,
                }
            }
            Action::ConsoleInput { id, .. }
            | Action::DeleteVm {
                id, force: false, ..
            }
            | Action::UpdateVm { id, .. }
            | Action::MigrateVm { id, .. } => self.find_vm(id)?.host,
            Action::CreateVm(req) => {
                let image_known = req.image.as_ref().is_none_or(|i| {
                    self.db
                        .get::<crate::model::ImageRecord>(kind::IMAGE, i)
                        .is_some()
                });
                // (An unknown image is refused by the create itself.)
                if req.host.is_none()
                    && image_known
                    && needs_host_at_create(req, |p| self.pool_is_shared(p))
                {
                    let probe = VmRecord::probe(req.vcpus, req.memory_mib, &req.name);
                    let without_image: Vec<String> = match &req.image {
                        Some(img) => {
                            let copies = self
                                .db
                                .get::<crate::model::ImageRecord>(kind::IMAGE, img)
                                .map(|(i, _)| i.hosts)
                                .unwrap_or_default();
                            self.db
                                .list::<HostRecord>(kind::HOST)
                                .into_iter()
                                .map(|h| h.id)
                                .filter(|h| !copies.contains(h))
                                .collect()
                        }
                        None => Vec::new(),
                    };
                    // Hosts with a copy first; else any (the install copies
                    // the image there).
                    let exclude: Vec<&str> = without_image.iter().map(String::as_str).collect();
                    let host = match self.place_excluding(&probe, None, &exclude).await {
                        Ok(h) => h,
                        Err(_) if !exclude.is_empty() => self.place(&probe, None).await?,
                        Err(e) => return Err(e),
                    };
                    req.host = Some(host);
                }
                if let Some(h) = &req.host {
                    // Explicitly chosen: it must be eligible (online, not
                    // cordoned, room for the VM).
                    let probe = VmRecord::probe(req.vcpus, req.memory_mib, &req.name);
                    self.place(&probe, Some(h)).await?;
                }
                req.host.clone()
            }
            Action::CancelJob { id } => self
                .db
                .get::<JobRecord>(kind::JOB, id)
                .and_then(|(j, _)| j.host),
            Action::EvacuateHost { host } => {
                self.host_record(host)?;
                Some(host.clone())
            }
            Action::OnHost { host, .. } => {
                self.host_record(host).map_err(|_| {
                    errors::invalid("host", format!("no host {host:?} in the cluster"))
                })?;
                Some(host.clone())
            }
            _ => None,
        };
        Ok(target.filter(|h| *h != self.host.id))
    }

    fn pool_is_shared(&self, name: &str) -> bool {
        self.pool_record(name).is_some_and(|p| p.shared())
    }

    /// Carries `action` out on `host`.
    pub(crate) async fn forward(&self, host: &str, action: Action) -> Result<Answer, CoreError> {
        if let Some(lost) = self.lost_host(host) {
            let about = match &action {
                Action::VmPower { id, .. }
                | Action::ConsoleInput { id, .. }
                | Action::DeleteVm { id, .. }
                | Action::UpdateVm { id, .. }
                | Action::MigrateVm { id, .. } => Some(
                    self.find_vm(id)
                        .map(|v| v.name)
                        .unwrap_or_else(|_| id.clone()),
                ),
                _ => None,
            };
            let hint = match &about {
                Some(vm) => format!("; if it is gone for good, {}", lost::recovery_hint(vm)),
                None => String::new(),
            };
            return Err(if lost.removed {
                errors::conflict(format!("{}{hint}", lost.describe()))
            } else {
                CoreError::Unavailable {
                    reason: format!(
                        "{} (last heartbeat {}); try again when it is back{hint}",
                        lost.describe(),
                        self.host_record(host)
                            .ok()
                            .and_then(|r| r.last_seen)
                            .as_deref()
                            .unwrap_or("never")
                    ),
                }
            });
        }
        let rec = self.host_record(host)?;
        let r = self
            .call_peer(
                &rec,
                ForwardAction {
                    action,
                    after: self.db.store().revision(),
                },
                FORWARD_TIMEOUT,
            )
            .await?;
        // Read your writes here too: this host catches up with what the
        // other host had applied when it answered.
        self.db.applied(r.revision).await;
        Ok(r.result)
    }

    /// `vm show` of a VM on another host, answered by that host (its QEMU's
    /// pid and state are known only there) once it has applied everything
    /// this host has; `None` when it cannot answer soon (offline, cut off,
    /// an older version), and the local replica answers.
    pub(crate) async fn read_on_vm_host(&self, action: &Action) -> Option<Answer> {
        let Action::GetVm { id } = action else {
            return None;
        };
        let host = self.find_vm(id).ok()?.host?;
        if host == self.host.id {
            return None;
        }
        let rec = self.host_record(&host).ok().filter(|r| r.online)?;
        let read = Read {
            action: action.clone(),
            after: self.db.store().revision(),
        };
        match self.call_peer(&rec, read, READ_TIMEOUT).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(vm = %id, host = %host, error = %e, "answering from the local replica");
                None
            }
        }
    }

    // ---- join ----

    /// Joins this host to a cluster: it must have no VMs and no running
    /// jobs. The single-host store is replaced by the cluster's; this
    /// host's pools, images and vswitches are then recorded there.
    pub(crate) async fn join_cluster(
        self: &Arc<Self>,
        req: ClusterJoin,
    ) -> Result<ClusterView, CoreError> {
        let _g = self.ops.lock().await;
        let store = self.db.store();
        if let Some(info) = store.cluster_info() {
            return Err(errors::conflict(format!(
                "this host already belongs to cluster {}",
                info.cluster_id
            )));
        }
        let vms: Vec<VmRecord> = self.db.list(kind::VM);
        if !vms.is_empty() {
            return Err(errors::conflict(format!(
                "this host has {} VM(s) ({}); a host joins a cluster without VMs: delete them \
                 first",
                vms.len(),
                vms.iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !self.local_jobs.is_empty() {
            return Err(errors::conflict(
                "jobs are running on this host; wait for them to end",
            ));
        }
        // What this host brings along.
        let pools: Vec<PoolRecord> = self.db.list(kind::POOL);
        let vswitches: Vec<VswitchRecord> = self.db.list(kind::VSWITCH);

        let dir = self.cfg.member_store_dir();
        if dir.exists() {
            // Leftovers of a join that failed.
            nasvisor_best_effort::remove_dir_all(&dir);
        }
        let joined = ClusterStore::join_with_limits(
            &dir,
            None,
            self.cfg.cluster_address.clone(),
            &req.address,
            &req.token,
            self.cfg.cluster_limits.clone(),
            self.cluster_net.clone(),
        )
        .await;
        let joined = match joined {
            Ok(s) => s,
            Err(e) => {
                nasvisor_best_effort::remove_dir_all(&dir);
                return Err(errors::store(e));
            }
        };
        joined.set_peer_handler(self.peer_handler());
        let old = self.db.swap(joined);
        self.events.init(&self.db);
        self.audit.init(&self.db);
        retire_store(old, self.cfg.data_dir.join("cluster"));

        // Record this host in the cluster.
        self.register_host().await?;
        for p in pools {
            let local = PoolRecord {
                host: Some(p.host.clone().unwrap_or_else(|| self.host.id.clone())),
                ..p
            };
            if self
                .db
                .get::<PoolRecord>(kind::POOL, &local.key())
                .is_none()
            {
                self.db
                    .put(kind::POOL, &local.key(), &local, Some(0))
                    .await
                    .best_effort("record this host's pool in the cluster");
            }
        }
        self.ensure_default_pool().await?;
        for s in vswitches {
            if self
                .db
                .get::<VswitchRecord>(kind::VSWITCH, &s.name)
                .is_none()
            {
                self.db
                    .put(kind::VSWITCH, &s.name, &s, Some(0))
                    .await
                    .best_effort("record this host's vswitch in the cluster");
            }
        }
        for s in self.db.list::<VswitchRecord>(kind::VSWITCH) {
            if let Err(e) = self.ensure_vswitch(&s) {
                tracing::error!(vswitch = %s.name, error = %e, "cannot set up a vswitch of the cluster");
            }
        }
        self.register_library_images().await;
        self.add_bundled_images().await;
        let info = self.db.store().cluster_info();
        self.event(
            "host-joined",
            Severity::Info,
            Some(format!("host/{}", self.host.id)),
            format!(
                "host {} (node {}) joined cluster {}",
                self.host.id,
                self.db.store().node_id(),
                info.map(|i| i.cluster_id).unwrap_or_default()
            ),
        )
        .await;
        Ok(self.cluster_answer())
    }
}

/// Whether `action` changes only this host's own files (its site
/// settings), nothing of the cluster's: it needs no quorum (a host cut off
/// may need its settings mended most).
pub(crate) fn is_host_local(a: &Action) -> bool {
    match a {
        Action::OnHost { request, .. } => is_host_local(request),
        Action::ReplaceHostSettings { .. } | Action::ClearHostSettings { .. } => true,
        _ => false,
    }
}

/// Whether `action` only reads.
pub(crate) fn is_read_only(a: &Action) -> bool {
    if let Action::OnHost { request, .. } = a {
        return is_read_only(request);
    }
    matches!(
        a,
        Action::GetHost
            | Action::GetFirmware
            | Action::GetHostSettings
            | Action::GetClusterUpdate
            | Action::ListVms
            | Action::GetVm { .. }
            | Action::ListPools
            | Action::ListVolumes { .. }
            | Action::ListSnapshots { .. }
            | Action::ListImages
            | Action::ListVswitches
            | Action::ListJobs
            | Action::GetJob { .. }
            | Action::ListPlugins
            | Action::ListDecisions { .. }
            | Action::ListEvents { .. }
            | Action::GetCluster
            | Action::ListHosts
            | Action::ConsoleInput { .. }
            | Action::Whoami
            | Action::Logout
            | Action::ListUsers
            | Action::ListTokens
            | Action::ListAudit { .. }
    )
}

/// A VM gets its host when it is created if it has disks on a host's own
/// pool or is installed at once; otherwise at first power-on.
fn needs_host_at_create(req: &VmCreate, shared: impl Fn(&str) -> bool) -> bool {
    req.image.is_some() || req.disks.iter().any(|d| !shared(&d.pool))
}

/// Closes the single-host store once nothing uses it any more, then removes
/// its directory (the host is a member now).
fn retire_store(old: Arc<ClusterStore>, dir: std::path::PathBuf) {
    tokio::spawn(async move {
        let mut old = Some(old);
        for _ in 0..600 {
            match Arc::try_unwrap(old.take().expect("kept until unwrapped")) {
                Ok(store) => {
                    if let Err(e) = store.shutdown().await {
                        tracing::warn!(error = %e, "closing the single-host store");
                    }
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the single-host store");
                    }
                    return;
                }
                Err(still) => {
                    old = Some(still);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::warn!("the single-host store is still in use; it closes with the process");
    });
}
