//! `react`: turn a batch of cluster events into HA actions.
//!
//! ## Rules
//!
//! - **Quorum.** The batch has quorum when `view.has-quorum` is true and the
//!   last `quorum-changed` event of the batch (if any) does not report a loss.
//!   Without quorum no fence, failover, switchover or restart is emitted (a
//!   minority must not act: its VMs are to be shut down, see DESIGN.md); each
//!   suppressed action is listed in one critical notice and a hold of
//!   `quorum-hold-ms` is emitted instead. Restarts are included because a
//!   minority side must not start VMs either.
//! - **SHA.** The last `sha-state-changed` event of each host counts. If it
//!   reports `switching` or `split-brain`, the host is *SHA-blocked*: a hold of
//!   `sha-hold-ms` is emitted, and no switchover or failover moves a VM from or
//!   to that host in this batch (a notice says which were deferred). A restart
//!   on an SHA-blocked host is delayed by at least `sha-hold-ms`. A failover
//!   whose passive host is SHA-blocked is deferred too, not redirected to a
//!   fallback host: the block is temporary.
//! - **Targets.** A switchover or failover target must be in the view,
//!   `healthy`, not fenced by this answer, and not named by a
//!   `heartbeat-missed`, `host-degraded` or `host-fenced` event of this batch
//!   nor SHA-blocked. A fallback failover target (when the passive host cannot
//!   be used) must also be uncordoned, have the free resources (reduced by
//!   earlier fallback choices of the same batch), and meet the VM's hard
//!   constraints; the one with the most free memory wins, ties by host id.
//! - **A host is fenced before any failover (I1).** A missed heartbeat only
//!   leads to a fence; VMs fail over on the later `host-fenced` event. A VM
//!   that faulted on an `unreachable` host is left alone until its host is
//!   fenced.
//! - **Events.**
//!   - `heartbeat-missed`: the largest `missed-ms` per host counts. At or above
//!     `fence-after-ms`: fence (quorum permitting). Below: hold for the
//!     remaining time. Already fenced hosts are ignored; unknown hosts give a
//!     warning.
//!   - `host-degraded` of a reachable host (`healthy`, `degraded` or
//!     `maintenance`): each
//!     `running` HA VM whose active host (`ha.active`, else `host`) it is gets
//!     a switchover to its passive host if that host is a valid target, else a
//!     warning.
//!   - `host-fenced`: each HA VM that should be running (`running`,
//!     `starting`, `paused`, `migrating`, `crashed`, `panicked`) and whose
//!     active host it was fails over to its passive host, or else to a
//!     fallback target, or else a critical notice. Non-HA VMs that should be
//!     running get a warning (they stay down). HA VMs whose *passive* host it
//!     was get a warning (they lost their protection).
//!   - `vm-crashed` / `guest-panicked`: a VM being stopped (`stopped`,
//!     `shutting-down`) is not restarted. While `recent-faults <= max-restarts`
//!     and its host is `healthy` or `degraded` (and not fenced in this batch),
//!     it restarts in place after `restart-base-delay-ms * 2^(faults-1)`
//!     (capped at `restart-max-delay-ms`). Otherwise an HA VM fails over to its
//!     passive host when that is a valid target; anything else gives a
//!     critical notice.
//!   - `sha-state-changed`: see SHA above; a split brain also gives a
//!     critical notice, a switchover an info notice.
//!   - `quorum-changed`: only the last one of the batch counts. A loss gives a
//!     critical notice and a hold; a gain an info notice.
//!   - `host-recovered`: an info notice.
//! - The answer holds at most one action per VM, in the order described in
//!   [`crate::plan`].

use std::collections::{BTreeMap, BTreeSet};

use nasvisor_plugin_sdk::prelude::*;

use crate::plan::{Plan, VmActionKind};
use crate::settings::Settings;

/// The WIT name of a host health value, for messages.
pub fn health_name(h: HostHealth) -> &'static str {
    h.as_str()
}

/// The host a VM is active on: `ha.active` for an assigned HA VM, else `host`.
pub fn active_host(vm: &VmInfo) -> Option<&str> {
    match &vm.ha {
        Some(ha) => Some(ha.active.as_str()),
        None => vm.host.as_deref(),
    }
}

/// States in which a VM is meant to be running (so a failover brings it back).
pub fn should_run(s: VmState) -> bool {
    matches!(
        s,
        VmState::Running
            | VmState::Starting
            | VmState::Paused
            | VmState::Migrating
            | VmState::Crashed
            | VmState::Panicked
    )
}

/// Decision context for one batch.
struct Ctx<'a> {
    env: &'a dyn Env,
    view: &'a ClusterView,
    s: Settings,
    quorum: bool,
    /// SHA-blocked hosts and why.
    sha_blocked: BTreeMap<String, &'static str>,
    /// Hosts named by a heartbeat-missed, host-degraded or host-fenced event.
    troubled: BTreeSet<String>,
    /// Hosts named by a host-fenced event.
    fenced_now: BTreeSet<String>,
    /// Free resources, reduced by fallback failover choices.
    free: BTreeMap<String, Resources>,
    /// Where VMs failed over to in this batch (for anti-affinity).
    placed: BTreeMap<String, String>,
    /// Actions not taken for lack of quorum.
    suppressed: Vec<String>,
    /// VMs sorted by id (first of duplicate ids wins).
    vms: Vec<&'a VmInfo>,
}

impl<'a> Ctx<'a> {
    fn new(env: &'a dyn Env, view: &'a ClusterView, s: Settings, events: &'a [Event]) -> Self {
        let last_quorum = events.iter().rev().find_map(|e| match e {
            Event::QuorumChanged(q) => Some(q.has_quorum),
            _ => None,
        });
        let quorum = view.has_quorum && last_quorum != Some(false);
        let mut sha_last: BTreeMap<&str, &ShaPairState> = BTreeMap::new();
        let mut troubled = BTreeSet::new();
        let mut fenced_now = BTreeSet::new();
        for e in events {
            match e {
                Event::ShaStateChanged(c) => {
                    sha_last.insert(&c.host, &c.state);
                }
                Event::HeartbeatMissed(h) => {
                    troubled.insert(h.host.clone());
                }
                Event::HostDegraded(h) => {
                    troubled.insert(h.host.clone());
                }
                Event::HostFenced(h) => {
                    troubled.insert(h.clone());
                    fenced_now.insert(h.clone());
                }
                _ => {}
            }
        }
        let sha_blocked = sha_last
            .into_iter()
            .filter_map(|(h, st)| {
                let why = if st.split_brain {
                    "an SHA split brain"
                } else if st.switching {
                    "an SHA switchover in progress"
                } else {
                    return None;
                };
                Some((h.to_string(), why))
            })
            .collect();
        let mut free = BTreeMap::new();
        for h in &view.hosts {
            free.entry(h.id.clone()).or_insert(h.free);
        }
        let mut vms: Vec<&VmInfo> = view.vms.iter().collect();
        vms.sort_by(|a, b| a.id.cmp(&b.id));
        vms.dedup_by(|a, b| a.id == b.id);
        Ctx {
            env,
            view,
            s,
            quorum,
            sha_blocked,
            troubled,
            fenced_now,
            free,
            placed: BTreeMap::new(),
            suppressed: Vec::new(),
            vms,
        }
    }

    /// `"h1 (name)"`, or just the id when the host is unknown or unnamed.
    fn host_label(&self, id: &str) -> String {
        match self.view.host(id) {
            Some(h) if !h.name.is_empty() && h.name != id => format!("{id} ({})", h.name),
            _ => id.to_string(),
        }
    }

    /// Why `id` cannot be a switchover/failover target, or `None` if it can.
    /// With `ignore_sha`, an SHA block is not a problem here (the caller goes
    /// through [`Ctx::try_move`], which defers the move with a notice instead).
    fn target_problem(&self, id: &str, plan: &Plan, ignore_sha: bool) -> Option<String> {
        let Some(h) = self.view.host(id) else {
            return Some("not in the cluster view".into());
        };
        if h.health != HostHealth::Healthy {
            return Some(health_name(h.health).into());
        }
        if plan.fences(id) || self.fenced_now.contains(id) {
            return Some("being fenced".into());
        }
        if let (false, Some(why)) = (ignore_sha, self.sha_blocked.get(id)) {
            return Some(format!("waiting for {why}"));
        }
        if self.troubled.contains(id) {
            return Some("reported in trouble by this batch of events".into());
        }
        None
    }

    /// Whether VM `vm` is active on `host`, counting failovers of this batch.
    fn runs(&self, vm: &str, host: &str) -> bool {
        if let Some(h) = self.placed.get(vm) {
            return h == host;
        }
        self.vms
            .iter()
            .any(|v| v.id == vm && v.state.is_active() && v.host.as_deref() == Some(host))
    }

    /// The best fallback failover target for `vm`, other than `exclude`.
    fn fallback_target(&self, vm: &VmInfo, exclude: &[&str], plan: &Plan) -> Option<String> {
        let c = &vm.constraints;
        let mut best: Option<(&str, u64)> = None;
        for h in &self.view.hosts {
            let id = h.id.as_str();
            if exclude.contains(&id) || h.cordoned || self.target_problem(id, plan, false).is_some()
            {
                continue;
            }
            let free = self.free.get(id).copied().unwrap_or(h.free);
            if !free.covers(&vm.resources)
                || (!c.pinned_hosts.is_empty() && !c.pinned_hosts.iter().any(|p| p == id))
                || c.required_labels.iter().any(|l| !h.labels.contains(l))
                || c.anti_affinity
                    .iter()
                    .any(|a| *a != vm.id && self.runs(a, id))
            {
                continue;
            }
            let better = match best {
                None => true,
                Some((bid, bmem)) => {
                    free.memory_mib > bmem || (free.memory_mib == bmem && id < bid)
                }
            };
            if better {
                best = Some((id, free.memory_mib));
            }
        }
        best.map(|(id, _)| id.to_string())
    }

    /// Record that `vm` takes its resources on `host` (fallback failover).
    fn consume(&mut self, vm: &VmInfo, host: &str) {
        if let Some(f) = self.free.get_mut(host) {
            f.vcpus = f.vcpus.saturating_sub(vm.resources.vcpus);
            f.memory_mib = f.memory_mib.saturating_sub(vm.resources.memory_mib);
            f.storage_gib = f.storage_gib.saturating_sub(vm.resources.storage_gib);
        }
    }

    /// Plan a VM move unless quorum is missing or an SHA hold blocks it.
    /// Returns whether the move was planned.
    fn try_move(
        &mut self,
        plan: &mut Plan,
        kind: VmActionKind,
        vm: &str,
        source: &str,
        target: &str,
        reason: String,
    ) -> bool {
        let name = if kind == VmActionKind::Failover {
            "failover"
        } else {
            "switchover"
        };
        if !self.quorum {
            self.suppressed
                .push(format!("{name} of VM {vm} to {target}"));
            return false;
        }
        if self
            .vms
            .iter()
            .any(|v| v.id == vm && v.host.as_deref() == Some(target))
        {
            plan.notify(
                Severity::Warning,
                format!("no {name} of VM {vm}: it is already recorded on its target {target}"),
            );
            return false;
        }
        for h in [source, target] {
            if let Some(why) = self.sha_blocked.get(h) {
                plan.notify(
                    Severity::Warning,
                    format!(
                        "{name} of VM {vm} to {target} deferred: host {} has {why}",
                        self.host_label(h)
                    ),
                );
                return false;
            }
        }
        self.env
            .log(LogLevel::Info, name, &[("vm", vm), ("target", target)]);
        match kind {
            VmActionKind::Failover => plan.failover(vm, target, reason),
            VmActionKind::Switchover => plan.switchover(vm, target, reason),
            VmActionKind::Restart => false,
        }
    }

    fn on_heartbeat(&mut self, plan: &mut Plan, host: &str, missed_ms: u64) {
        let Some(h) = self.view.host(host) else {
            plan.notify(
                Severity::Warning,
                format!("heartbeats missed from unknown host {host}; ignored"),
            );
            return;
        };
        if h.health == HostHealth::Fenced || self.fenced_now.contains(host) {
            return;
        }
        let label = self.host_label(host);
        let limit = self.s.fence_after_ms;
        if missed_ms >= limit {
            let reason = format!(
                "no heartbeat from host {label} for {missed_ms} ms (fence after {limit} ms)"
            );
            if self.quorum {
                plan.fence(host, reason);
            } else {
                self.suppressed.push(format!("fence of host {label}"));
            }
        } else {
            plan.hold(
                limit - missed_ms,
                format!("heartbeats from host {label} missed for {missed_ms} ms; fencing after {limit} ms unless they resume"),
            );
        }
    }

    fn on_degraded(&mut self, plan: &mut Plan, d: &HostDegraded) {
        let Some(h) = self.view.host(&d.host) else {
            plan.notify(
                Severity::Warning,
                format!("unknown host {} reported degraded; ignored", d.host),
            );
            return;
        };
        let label = self.host_label(&d.host);
        let reasons = if d.reasons.is_empty() {
            h.health_reasons.join("; ")
        } else {
            d.reasons.join("; ")
        };
        let reasons = if reasons.is_empty() {
            "no reason given".to_string()
        } else {
            reasons
        };
        // Reachable: it answers heartbeats (a host in maintenance does).
        if !matches!(
            h.health,
            HostHealth::Healthy | HostHealth::Degraded | HostHealth::Maintenance
        ) {
            plan.notify(
                Severity::Info,
                format!(
                    "host {label} reported degraded ({reasons}) but is {}; no switchover",
                    health_name(h.health)
                ),
            );
            return;
        }
        plan.notify(
            Severity::Warning,
            format!("host {label} degraded: {reasons}"),
        );
        let vms: Vec<&VmInfo> = self.vms.clone();
        for vm in vms {
            if !vm.ha_enabled
                || vm.state != VmState::Running
                || active_host(vm) != Some(d.host.as_str())
            {
                continue;
            }
            let Some(ha) = &vm.ha else {
                plan.notify(
                    Severity::Warning,
                    format!(
                        "HA VM {} on degraded host {label} has no passive host assigned; it stays",
                        vm.id
                    ),
                );
                continue;
            };
            let problem = if ha.passive == d.host {
                Some("the degraded host itself".to_string())
            } else {
                self.target_problem(&ha.passive, plan, true)
            };
            match problem {
                None => {
                    let reason = format!(
                        "host {label} degraded ({reasons}); passive host {} is healthy",
                        self.host_label(&ha.passive)
                    );
                    let (id, passive) = (vm.id.clone(), ha.passive.clone());
                    self.try_move(
                        plan,
                        VmActionKind::Switchover,
                        &id,
                        &d.host,
                        &passive,
                        reason,
                    );
                }
                Some(why) => plan.notify(
                    Severity::Warning,
                    format!(
                        "HA VM {} stays on degraded host {label}: its passive host {} is {why}",
                        vm.id,
                        self.host_label(&ha.passive)
                    ),
                ),
            }
        }
    }

    fn on_fenced(&mut self, plan: &mut Plan, host: &str) {
        let label = self.host_label(host);
        let vms: Vec<&VmInfo> = self.vms.clone();
        for vm in vms {
            if vm.ha_enabled && active_host(vm) != Some(host) {
                if let Some(ha) = &vm.ha {
                    if ha.passive == host {
                        plan.notify(
                            Severity::Warning,
                            format!("HA VM {} lost its passive host {label} (fenced); it is unprotected until a new passive host is assigned", vm.id),
                        );
                    }
                }
                continue;
            }
            if active_host(vm) != Some(host) || !should_run(vm.state) {
                continue;
            }
            if !vm.ha_enabled {
                plan.notify(
                    Severity::Warning,
                    format!(
                        "VM {} (not HA) was on fenced host {label} and stays down",
                        vm.id
                    ),
                );
                continue;
            }
            if plan.vm_action(&vm.id) == Some(VmActionKind::Failover) {
                continue;
            }
            let passive = vm.ha.as_ref().map(|ha| ha.passive.as_str());
            let passive_problem = match passive {
                None => Some("not assigned".to_string()),
                Some(p) if p == host => Some("the fenced host itself".to_string()),
                Some(p) => self.target_problem(p, plan, true),
            };
            if let (Some(p), None) = (passive, &passive_problem) {
                let reason = format!(
                    "host {label} fenced; starting on passive host {}",
                    self.host_label(p)
                );
                self.try_move(plan, VmActionKind::Failover, &vm.id, host, p, reason);
                continue;
            }
            let why = passive_problem.unwrap_or_default();
            let passive_txt = passive
                .map(|p| self.host_label(p))
                .unwrap_or_else(|| "(none)".into());
            let mut exclude = vec![host];
            exclude.extend(passive);
            match self.fallback_target(vm, &exclude, plan) {
                Some(t) => {
                    let reason = format!(
                        "host {label} fenced and passive host {passive_txt} is {why}; starting on {}, the healthy host with the most free memory where it fits",
                        self.host_label(&t)
                    );
                    if self.try_move(plan, VmActionKind::Failover, &vm.id, host, &t, reason) {
                        self.consume(vm, &t);
                        self.placed.insert(vm.id.clone(), t);
                    }
                }
                None => plan.notify(
                    Severity::Critical,
                    format!(
                        "HA VM {} cannot fail over from fenced host {label}: passive host {passive_txt} is {why} and no other healthy host can take it",
                        vm.id
                    ),
                ),
            }
        }
    }

    fn on_fault(&mut self, plan: &mut Plan, f: &VmFault, what: &str) {
        let Some(vm) = self.vms.iter().copied().find(|v| v.id == f.vm) else {
            plan.notify(
                Severity::Warning,
                format!("VM {} {what} but is not in the cluster view; ignored", f.vm),
            );
            return;
        };
        if matches!(vm.state, VmState::Stopped | VmState::ShuttingDown) {
            plan.notify(
                Severity::Info,
                format!("VM {} {what} while being stopped; not restarted", vm.id),
            );
            return;
        }
        let label = self.host_label(&f.host);
        let n = f.recent_faults.max(1);
        let max = self.s.max_restarts;
        let detail = if f.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.detail)
        };
        let health = self.view.host(&f.host).map(|h| h.health);
        if health == Some(HostHealth::Unreachable) {
            plan.notify(
                Severity::Warning,
                format!(
                    "VM {} {what} on unreachable host {label}; waiting for the host to be fenced",
                    vm.id
                ),
            );
            return;
        }
        let host_problem = match health {
            None => Some("not in the cluster view".to_string()),
            Some(HostHealth::Healthy | HostHealth::Degraded) => {
                if plan.fences(&f.host) || self.fenced_now.contains(&f.host) {
                    Some("being fenced".to_string())
                } else {
                    None
                }
            }
            Some(h) => Some(health_name(h).to_string()),
        };
        if n <= max && host_problem.is_none() {
            let mut delay = self.s.restart_delay_ms(n);
            let mut reason = format!(
                "VM {what}{detail}; recent fault {n} of at most {max} restarts: restarting in place on {label} after {delay} ms"
            );
            if let Some(why) = self.sha_blocked.get(&f.host) {
                if delay < self.s.sha_hold_ms {
                    delay = self.s.sha_hold_ms;
                    reason = format!("{reason}, delayed to {delay} ms by {why}");
                }
            }
            if self.quorum {
                plan.restart(&vm.id, delay, reason);
            } else {
                self.suppressed.push(format!("restart of VM {}", vm.id));
            }
            return;
        }
        let why_not = match &host_problem {
            Some(p) => format!("host {label} is {p}"),
            None => format!("it faulted {n} times recently (more than max-restarts {max})"),
        };
        if vm.ha_enabled {
            if let Some(ha) = &vm.ha {
                let problem = if ha.passive == f.host {
                    Some("the faulting host itself".to_string())
                } else {
                    self.target_problem(&ha.passive, plan, true)
                };
                match problem {
                    None => {
                        let reason = format!(
                            "VM {what}{detail} and is not restarted in place: {why_not}; starting on passive host {}",
                            self.host_label(&ha.passive)
                        );
                        let passive = ha.passive.clone();
                        self.try_move(plan, VmActionKind::Failover, &vm.id, &f.host, &passive, reason);
                    }
                    Some(p) => plan.notify(
                        Severity::Critical,
                        format!(
                            "VM {} {what}{detail} and is not restarted: {why_not}, and its passive host {} is {p}",
                            vm.id,
                            self.host_label(&ha.passive)
                        ),
                    ),
                }
                return;
            }
        }
        plan.notify(
            Severity::Critical,
            format!(
                "VM {} {what}{detail} and is not restarted: {why_not}",
                vm.id
            ),
        );
    }

    fn on_sha(&mut self, plan: &mut Plan, host: &str, st: &ShaPairState) {
        let label = self.host_label(host);
        let res = if st.resource_name.is_empty() {
            String::new()
        } else {
            format!(" (resource {})", st.resource_name)
        };
        if st.split_brain {
            plan.notify(
                Severity::Critical,
                format!("SHA split brain on host {label}{res}: both boxes may have written data; resolve it manually. VM moves of this host wait"),
            );
            plan.hold(
                self.s.sha_hold_ms,
                format!("SHA split brain on host {label}"),
            );
        } else if st.switching {
            plan.notify(
                Severity::Info,
                format!("SHA switchover in progress on host {label}{res}; VM moves of this host wait for it"),
            );
            plan.hold(
                self.s.sha_hold_ms,
                format!("SHA switchover in progress on host {label}"),
            );
        }
    }

    fn on_quorum(&mut self, plan: &mut Plan, q: &QuorumChange) {
        if q.has_quorum {
            plan.notify(
                Severity::Info,
                format!(
                    "quorum regained: {} of {} hosts online",
                    q.online_hosts, q.total_hosts
                ),
            );
        } else {
            plan.notify(
                Severity::Critical,
                format!(
                    "quorum lost: {} of {} hosts online; fencing, failover, switchover and restarts are suspended",
                    q.online_hosts, q.total_hosts
                ),
            );
            plan.hold(self.s.quorum_hold_ms, "no quorum".into());
        }
    }
}

/// React to `events` given `view`. See the module documentation for the rules.
///
/// Errors: `bad-settings` when a setting does not parse.
pub fn react(
    env: &dyn Env,
    view: &ClusterView,
    events: &[Event],
) -> Result<Vec<HaAction>, PluginError> {
    let s = Settings::load(env)?;
    let mut ctx = Ctx::new(env, view, s, events);
    let mut plan = Plan::default();

    // SHA states: the last one of each host.
    let mut sha_last: BTreeMap<&str, &ShaPairState> = BTreeMap::new();
    // Heartbeats: the largest missed time of each host.
    let mut heartbeats: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        match e {
            Event::ShaStateChanged(c) => {
                sha_last.insert(&c.host, &c.state);
            }
            Event::HeartbeatMissed(h) => {
                let m = heartbeats.entry(&h.host).or_insert(0);
                *m = (*m).max(h.missed_ms);
            }
            _ => {}
        }
    }
    if let Some(q) = events.iter().rev().find_map(|e| match e {
        Event::QuorumChanged(q) => Some(q),
        _ => None,
    }) {
        ctx.on_quorum(&mut plan, q);
    }
    for (host, st) in sha_last {
        ctx.on_sha(&mut plan, host, st);
    }
    for (host, missed) in heartbeats {
        ctx.on_heartbeat(&mut plan, host, missed);
    }
    // Fenced hosts first, so that their failovers take precedence and their
    // fallback targets are chosen before anything else consumes resources.
    let mut fenced_seen = BTreeSet::new();
    for e in events {
        if let Event::HostFenced(h) = e {
            if fenced_seen.insert(h.as_str()) {
                ctx.on_fenced(&mut plan, h);
            }
        }
    }
    for e in events {
        match e {
            Event::HostDegraded(d) => ctx.on_degraded(&mut plan, d),
            Event::VmCrashed(f) => ctx.on_fault(&mut plan, f, "crashed"),
            Event::GuestPanicked(f) => ctx.on_fault(&mut plan, f, "guest panicked"),
            Event::QuorumChanged(_) => {}
            Event::HostRecovered(h) => {
                let label = ctx.host_label(h);
                plan.notify(Severity::Info, format!("host {label} recovered"));
            }
            Event::HeartbeatMissed(_) | Event::HostFenced(_) | Event::ShaStateChanged(_) => {}
        }
    }
    if !ctx.suppressed.is_empty() {
        plan.notify(
            Severity::Critical,
            format!(
                "no quorum: not acting on {} (no fence, failover, switchover or restart without a majority)",
                ctx.suppressed.join(", ")
            ),
        );
        plan.hold(ctx.s.quorum_hold_ms, "no quorum".into());
    }
    Ok(plan.finish())
}
