//! Heartbeats and quorum: the leader asks every member for its health,
//! resources and peer protocol version; a host silent for `offline_after`
//! is recorded offline, one refusing the leader's protocol version is
//! recorded as such; a host that loses the majority refuses changes and,
//! after `quorum_stop_delay`, stops its VMs.

use super::{is_host_local, is_read_only};
use crate::model::{kind, now_rfc3339, Desired, HostRecord, Severity, VmRecord, VmStatus};
use crate::{lock, Inner};
use nasvisor_api_types::peer::{Heartbeat, HeartbeatReply};
use nasvisor_api_types::{Action, CoreError};
use nasvisor_best_effort::BestEffort;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Inner {
    // ---- heartbeats and quorum ----

    /// The background loops of every host: heartbeats when leader, what
    /// they show recorded when leader, and the quorum watch always, each
    /// on a clock of its own.
    ///
    /// - The **heartbeat loop** only asks the members and notes their
    ///   answers in memory (`last_seen`, and the answer a follower's HA
    ///   lease counts from): a follower's lease is renewed by the next
    ///   heartbeat, so the heartbeats never wait for a write. A write
    ///   through the log takes as long as the slowest disk of the majority
    ///   (and up to its timeout, 10 s, on a leader cut off from it); had
    ///   the heartbeats waited behind it, the followers' leases would have
    ///   lapsed, and they would have stopped their HA VMs for a slow disk.
    /// - The **record loop** writes what the latest round showed (a host
    ///   online, offline, degraded, on another version), then runs the HA
    ///   round (fence, failover, switchover) and re-protection. It takes
    ///   the latest round only: an older one that it had no time for is
    ///   superseded.
    /// - The **quorum watch** never waits for either: self-fencing must
    ///   keep its deadline whether the host was leader or follower, so it
    ///   runs in its own task and writes nothing before it stops the VMs.
    pub(crate) fn spawn_cluster_loop(self: &Arc<Self>) {
        self.spawn_quorum_watch();
        self.spawn_record_loop();
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
                    // What the round shows is written in `term` only: a
                    // round that outlives this leadership changes nothing.
                    if let Some(round) = me.heartbeat_round(term).await {
                        *lock(&me.cluster.round) = Some(round);
                        me.cluster.round_ready.notify_one();
                    }
                }
                led = term;
            }
        });
    }

    /// The record loop (see [`Inner::spawn_cluster_loop`]): woken by each
    /// heartbeat round, and at the heartbeat interval for the plugins'
    /// cluster-wide state on any host.
    fn spawn_record_loop(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        let interval = self.cfg.heartbeat_interval;
        let ready = self.cluster.round_ready.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ready.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
                let Some(me) = weak.upgrade() else { break };
                me.apply_cluster_plugins().await;
                me.apply_plugin_resets();
                #[cfg(test)]
                if let Some(d) = me.cfg.test_record_delay {
                    tokio::time::sleep(d).await;
                }
                let round = lock(&me.cluster.round).take();
                let Some(round) = round else { continue };
                if me.db.store().leader_term() != Some(round.term) {
                    continue;
                }
                let term = round.term;
                me.record_round(round).await;
                me.ha_round(term).await;
                me.reprotect_ha_vms().await;
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

    /// Asks every member for its heartbeat and notes who answered, in
    /// memory only; what the answers show is for [`Inner::record_round`].
    /// `None` when this host has no majority to speak for.
    async fn heartbeat_round(self: &Arc<Self>, term: u64) -> Option<Round> {
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        let members: HashSet<u64> = self
            .db
            .store()
            .members()
            .iter()
            .map(|m| m.node_id)
            .collect();
        let timeout = self.cfg.heartbeat_interval.max(Duration::from_millis(200)) * 2;
        let age = self.db.store().quorum_ack_age()?;
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
        let at = Instant::now();
        for (h, r) in &results {
            if let Ok(hb) = r {
                lock(&self.cluster.last_seen).insert(h.id.clone(), at);
                lock(&self.cluster.answers_seen).insert(h.id.clone(), hb.seq);
            }
        }
        Some(Round { term, at, results })
    }

    /// Writes what a heartbeat round showed, in its term: hosts that
    /// answer again or changed, hosts silent past `offline_after`, hosts
    /// on a protocol version this leader does not write.
    async fn record_round(self: &Arc<Self>, round: Round) {
        let Round { term, at, results } = round;
        for (h, r) in results {
            match r {
                Ok(hb) => {
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
                    // A later round may have heard it since: the silence
                    // counts to this round's time (0 if it answered since).
                    let last = lock(&self.cluster.last_seen).get(&h.id).copied();
                    let silent = last.map(|t| at.duration_since(t)).unwrap_or_default();
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
        // The leader's own lease runs from the majority's last
        // acknowledgement, renewed here on this loop's clock too: the
        // heartbeat loop may be waiting for a slow member's answer.
        self.renew_own_ha_lease();
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
        if is_read_only(action) || is_host_local(action) || self.has_quorum() {
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

/// One heartbeat round of the leader of `term`: who answered what, asked
/// at `at`.
pub(crate) struct Round {
    term: u64,
    at: Instant,
    results: Vec<(HostRecord, Result<HeartbeatReply, CoreError>)>,
}

#[cfg(test)]
mod tests {
    use crate::peer::tests::{join, start_with};
    use nasvisor_api_types::{Action, Answer, ClusterCreate};
    use std::time::{Duration, Instant};

    /// A leader whose writes are slow (7 s a pass, past every host's HA
    /// lease of 5 s) still renews every lease with its heartbeats: nobody
    /// stops its HA VMs for a slow disk, and what the rounds show is
    /// recorded in the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_writes_on_the_leader_never_hold_its_heartbeats_or_let_a_lease_lapse() {
        let tmp = tempfile::tempdir().unwrap();
        let slow =
            |cfg: &mut crate::CoreConfig| cfg.test_record_delay = Some(Duration::from_secs(7));
        let a = start_with(tmp.path(), "a", slow).await;
        let b = start_with(tmp.path(), "b", slow).await;
        let c = start_with(tmp.path(), "c", slow).await;
        assert!(a.inner.ha_fence_after() < Duration::from_secs(7));
        a.admin(Action::CreateCluster(ClusterCreate::default()))
            .await
            .unwrap();
        join(&a, &b).await;
        join(&a, &c).await;

        let cores = [&a, &b, &c];
        let t0 = Instant::now();
        while !cores.iter().all(|x| x.inner.ha_lease_confirmed()) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the leases were never confirmed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // 12 s: at least one full slow pass, and more than twice a lease.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(12) {
            for (x, name) in cores.iter().zip(["a", "b", "c"]) {
                assert!(
                    !x.inner.ha_lease_lapsed(),
                    "host {name}'s HA lease lapsed {:.1} s into slow writes",
                    t0.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The records were written, late.
        let Answer::Hosts(hosts) = a.admin(Action::ListHosts).await.unwrap() else {
            panic!("not hosts")
        };
        assert_eq!(hosts.len(), 3);
        assert!(hosts.iter().all(|h| h.online), "{hosts:?}");
        for x in [a, b, c] {
            x.shutdown().await.unwrap();
        }
    }
}
