//! Heartbeats and quorum: the leader asks every member for its health,
//! resources and peer protocol version; a host silent for `offline_after`
//! is recorded offline, one refusing the leader's protocol version is
//! recorded as such; a host that loses the majority refuses changes and,
//! after `quorum_stop_delay`, stops its VMs.

use super::is_read_only;
use crate::model::{kind, now_rfc3339, Desired, HostRecord, Severity, VmRecord, VmStatus};
use crate::{lock, Inner};
use nasvisor_api_types::peer::Heartbeat;
use nasvisor_api_types::{Action, CoreError};
use nasvisor_best_effort::BestEffort;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Inner {
    // ---- heartbeats and quorum ----

    /// The background loops of every host: heartbeats when leader, and the
    /// quorum watch always, on a clock of its own.
    ///
    /// The quorum watch never waits for the heartbeat round: a round writes
    /// through the log (host offline, events), and on a host cut off from
    /// the majority each such write waits for its timeout (10 s). Self-
    /// fencing must keep its deadline whether the host was leader or
    /// follower, so it runs in its own task and writes nothing before it
    /// stops the VMs.
    pub(crate) fn spawn_cluster_loop(self: &Arc<Self>) {
        self.spawn_quorum_watch();
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        let interval = self.cfg.heartbeat_interval;
        tokio::spawn(async move {
            let mut led: Option<u64> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                let Some(me) = weak.upgrade() else { break };
                me.apply_cluster_plugins().await;
                me.apply_plugin_resets();
                if !me.multi_host() {
                    led = None;
                    continue;
                }
                let term = me.db.store().leader_term().filter(|_| me.has_quorum());
                if let Some(term) = term {
                    if led != Some(term) {
                        // A new leadership (or one that lost the majority
                        // meanwhile) knows nothing of the hosts' silence
                        // before it: another leader may have heard them.
                        // Every host gets a full threshold.
                        let now = Instant::now();
                        lock(&me.cluster.answers_seen).clear();
                        let mut seen = lock(&me.cluster.last_seen);
                        seen.clear();
                        for h in me.db.list::<HostRecord>(kind::HOST) {
                            seen.insert(h.id, now);
                        }
                    }
                    // What the rounds decide from that silence is written
                    // in `term` only: a round that outlives this
                    // leadership changes nothing.
                    me.heartbeat_round(term).await;
                    me.ha_round(term).await;
                    me.reprotect_ha_vms().await;
                }
                led = term;
            }
        });
    }

    /// The quorum watch's own loop (see [`Inner::spawn_cluster_loop`]),
    /// ticking at the heartbeat interval, at most every second.
    fn spawn_quorum_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        let tick = self.cfg.heartbeat_interval.min(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
                let Some(me) = weak.upgrade() else { break };
                if me.multi_host() {
                    me.watch_quorum().await;
                }
            }
        });
    }

    async fn heartbeat_round(self: &Arc<Self>, term: u64) {
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        let members: HashSet<u64> = self
            .db
            .store()
            .members()
            .iter()
            .map(|m| m.node_id)
            .collect();
        let timeout = self.cfg.heartbeat_interval.max(Duration::from_millis(200)) * 2;
        let Some(age) = self.db.store().quorum_ack_age() else {
            return;
        };
        let ask = Heartbeat {
            quorum_age_ms: age.as_millis() as u64,
            ack_seq: None,
        };
        let calls = hosts
            .iter()
            .filter(|h| members.contains(&h.node_id))
            .map(|h| {
                let me = self.clone();
                let h = h.clone();
                let ask = Heartbeat {
                    ack_seq: lock(&me.cluster.answers_seen).get(&h.id).copied(),
                    ..ask.clone()
                };
                async move {
                    let r = if h.id == me.host.id {
                        me.renew_own_ha_lease();
                        Ok(me.heartbeat())
                    } else {
                        me.call_peer(&h, ask, timeout).await
                    };
                    (h, r)
                }
            });
        let results = futures_util::future::join_all(calls).await;
        let now = Instant::now();
        for (h, r) in results {
            match r {
                Ok(hb) => {
                    lock(&self.cluster.last_seen).insert(h.id.clone(), now);
                    lock(&self.cluster.answers_seen).insert(h.id.clone(), hb.seq);
                    let changed = !h.online
                        || h.version != hb.version
                        || h.free_storage_gib != hb.free_storage_gib
                        || h.protocol != Some(hb.protocol)
                        || !h.protocol_compatible
                        || h.problems != hb.problems
                        || h.fenced.is_some()
                        || h.last_seen.as_deref().is_none_or(stale_timestamp);
                    if changed {
                        let came_back = !h.online;
                        let written = self
                            .db
                            .update_as::<HostRecord, _>(Some(term), kind::HOST, &h.id, |r| {
                                r.online = true;
                                r.offline_since = None;
                                r.fenced = None;
                                r.version = hb.version.clone();
                                r.storage_gib = hb.storage_gib;
                                r.free_storage_gib = hb.free_storage_gib;
                                r.protocol = Some(hb.protocol);
                                r.protocol_compatible = true;
                                r.problems = hb.problems.clone();
                                r.last_seen = Some(now_rfc3339());
                                Ok(())
                            })
                            .await;
                        if let Err(e) = written {
                            // Not this leader's to say any more, or not now.
                            tracing::warn!(host = %h.id, error = %e, "cannot record that the host answers");
                            continue;
                        }
                        if h.problems != hb.problems {
                            self.report_health_change(&h.id, &h.problems, &hb.problems)
                                .await;
                        }
                        if came_back {
                            self.event(
                                "host-online",
                                Severity::Info,
                                Some(format!("host/{}", h.id)),
                                format!("host {} answers heartbeats again", h.id),
                            )
                            .await;
                        }
                    }
                }
                Err(e) => {
                    if let CoreError::UnsupportedVersion { ours, .. } = &e {
                        // It answers, but not in a version this leader
                        // writes: shown as such, and not counted as seen.
                        self.record_unsupported(&h, *ours, &e).await;
                    }
                    let last = lock(&self.cluster.last_seen).get(&h.id).copied();
                    let silent = last.map(|t| now.duration_since(t)).unwrap_or_default();
                    if h.online && silent >= self.cfg.offline_after {
                        let message = format!(
                            "host {} missed heartbeats for {:.1} s ({e})",
                            h.id,
                            silent.as_secs_f64()
                        );
                        self.record_lost(&h.id, false, Some(term), Some(("host-offline", message)))
                            .await;
                    }
                }
            }
        }
    }

    /// Events for a change of host `id`'s findings: `host-degraded` with
    /// what is wrong now, `host-healthy` when nothing is left.
    async fn report_health_change(&self, id: &str, before: &[String], now: &[String]) {
        let (kind_, severity, message) = if now.is_empty() {
            (
                "host-healthy",
                Severity::Info,
                format!("host {id} is healthy again (was: {})", before.join("; ")),
            )
        } else {
            (
                "host-degraded",
                Severity::Warning,
                format!("host {id} is degraded: {}", now.join("; ")),
            )
        };
        self.event(kind_, severity, Some(format!("host/{id}")), message)
            .await;
    }

    /// Records that host `h` refused this host's protocol version (it
    /// speaks `theirs`), with an event the first time.
    async fn record_unsupported(&self, h: &HostRecord, theirs: u32, e: &CoreError) {
        if h.protocol == Some(theirs) && !h.protocol_compatible {
            return;
        }
        let r = self
            .db
            .update::<HostRecord, _>(kind::HOST, &h.id, |r| {
                r.protocol = Some(theirs);
                r.protocol_compatible = false;
                Ok(())
            })
            .await;
        if let Err(err) = r {
            tracing::warn!(host = %h.id, error = %err, "cannot record a member's protocol version");
        }
        self.event(
            "host-protocol-unsupported",
            Severity::Warning,
            Some(format!("host/{}", h.id)),
            format!(
                "host {} speaks peer protocol {theirs}, this leader writes {}: {e}",
                h.id,
                self.peer_window().stamp_for(h.protocol)
            ),
        )
        .await;
    }

    /// Stops this host's VMs when it has been without quorum for the
    /// configured delay, and its HA VMs when its HA lease lapsed
    /// (`lease.rs`); starts them again once it has both back.
    async fn watch_quorum(self: &Arc<Self>) {
        let quorum = self.has_quorum();
        let since = {
            let mut s = lock(&self.cluster.quorum_lost_since);
            match (quorum, *s) {
                (true, _) => *s = None,
                (false, None) => {
                    *s = Some(Instant::now());
                    tracing::warn!(
                        delay_s = self.cfg.quorum_stop_delay.as_secs_f64(),
                        ha_delay_s = self.ha_fence_after().as_secs_f64(),
                        "lost the cluster's quorum; changes are refused, HA VMs stop when the \
                         HA lease lapses and the others after the delay"
                    );
                }
                (false, Some(_)) => {}
            }
            *s
        };
        let lapsed = self.ha_lease_lapsed();
        let mut stop: Vec<String> = Vec::new();
        if since.is_some_and(|t| t.elapsed() >= self.cfg.quorum_stop_delay) {
            stop = self.processes.ids();
            if !stop.is_empty() && !*lock(&self.cluster.stopped_for_quorum) {
                tracing::warn!(
                    vms = stop.len(),
                    "no quorum for the configured delay: stopping this host's VMs"
                );
            }
        } else if lapsed {
            stop = self.local_ha_vms().into_iter().map(|v| v.id).collect();
            if !stop.is_empty() {
                tracing::warn!(
                    vms = stop.len(),
                    after_s = self.ha_fence_after().as_secs_f64(),
                    "no word from the cluster's majority past the HA lease: stopping this \
                     host's HA VMs (the leader starts them elsewhere)"
                );
            }
        }
        if since.is_some() || lapsed {
            *lock(&self.cluster.stopped_for_quorum) |= !stop.is_empty();
            let stopped = !stop.is_empty();
            for id in stop {
                lock(&self.cluster.fenced).insert(id.clone());
                self.stop_instance(&id).await;
            }
            if stopped {
                self.write_ha_lease();
            }
            return;
        }
        let was = std::mem::replace(&mut *lock(&self.cluster.stopped_for_quorum), false);
        if was {
            self.after_quorum_regained().await;
        }
        self.write_ha_lease();
        if let Some(exe) = &self.cfg.watchdog_exe {
            self.keep_watchdog(exe);
        }
    }

    async fn after_quorum_regained(self: &Arc<Self>) {
        self.stop_stale_copies().await;
        let fenced: Vec<String> = lock(&self.cluster.fenced).drain().collect();
        self.event(
            "quorum-regained",
            Severity::Info,
            Some(format!("host/{}", self.host.id)),
            format!(
                "host {} reaches the majority again; {} VM(s) it had stopped are started again",
                self.host.id,
                fenced.len()
            ),
        )
        .await;
        for id in fenced {
            // As the leader has it: while this host was cut off, the VM may
            // have failed over, and this host's copy of the store may not
            // show it yet.
            let vm = match self.vm_as_the_leader_has_it(&id).await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(vm = %id, error = %e, "cannot read where the VM belongs now; not started again");
                    continue;
                }
            };
            if vm.host.as_deref() != Some(self.host.id.as_str()) {
                tracing::info!(vm = %vm.name, host = ?vm.host, "a VM stopped while cut off now belongs to another host");
                continue;
            }
            if vm.desired != Desired::Running {
                self.set_state(
                    &id,
                    VmStatus::Stopped,
                    Some("stopped: this host lost the cluster's quorum".into()),
                    None,
                )
                .await
                .best_effort("record that the VM is stopped");
                continue;
            }
            if let Err(e) = self.start_vm(&vm, None).await {
                tracing::error!(vm = %vm.name, error = %e, "cannot start a VM again after the quorum came back");
            }
        }
    }

    /// VM `id`'s record as the leader has it (a linearizable read): this
    /// host's copy of the store may not show yet a failover decided while
    /// it was cut off or down.
    pub(crate) async fn vm_as_the_leader_has_it(
        &self,
        id: &str,
    ) -> Result<Option<VmRecord>, CoreError> {
        match self.db.store().get_linearizable(kind::VM, id).await {
            Ok(Some((v, _))) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| crate::errors::internal(format!("unreadable VM record {id}: {e}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(crate::errors::store(e)),
        }
    }

    /// Whether VM `id` was stopped because this host lost the quorum.
    pub(crate) fn is_fenced(&self, id: &str) -> bool {
        lock(&self.cluster.fenced).contains(id)
    }

    /// Refuses changes without quorum.
    pub(crate) fn check_quorum(&self, action: &Action) -> Result<(), CoreError> {
        if is_read_only(action) || self.has_quorum() {
            Ok(())
        } else {
            Err(Self::no_quorum())
        }
    }
}

/// Whether an RFC 3339 time is more than 30 s old (or unreadable).
fn stale_timestamp(t: &str) -> bool {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds() > 30)
        .unwrap_or(true)
}
