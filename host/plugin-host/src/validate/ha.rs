//! HA actions (`react` of ha-policy, `on-state-change` of sha).
//!
//! The actions of one answer are checked together: resources are taken on
//! their targets in the answer's order (a VM failing over to its own passive
//! host uses the reservation held there, anything else takes from the host's
//! free resources), each VM appears in at most one action, and the fences of
//! the answer together must leave a majority of the cluster.

use super::{hard_constraints, text, usable_target, Ledger, MAX_ACTIONS, MAX_HOLD_MS};
use nasvisor_plugin_sdk::prelude::*;
use std::collections::{BTreeSet, HashSet};

/// The WIT name of a VM state, for messages.
pub(super) fn state_name(s: VmState) -> &'static str {
    match s {
        VmState::Stopped => "stopped",
        VmState::Starting => "starting",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Migrating => "migrating",
        VmState::ShuttingDown => "shutting-down",
        VmState::Crashed => "crashed",
        VmState::Panicked => "panicked",
        VmState::Failed => "failed",
    }
}

fn kind(a: &HaAction) -> &'static str {
    match a {
        HaAction::Switchover(_) => "switchover",
        HaAction::Failover(_) => "failover",
        HaAction::Restart(_) => "restart",
        HaAction::Fence(_) => "fence",
        HaAction::Hold(_) => "hold",
        HaAction::Notify(_) => "notify",
    }
}

/// States of a VM its administrator stopped (or is stopping): never
/// restarted or failed over.
fn stopped_by_admin(s: VmState) -> bool {
    matches!(s, VmState::Stopped | VmState::ShuttingDown)
}

/// States of a VM that went down on its own (eligible for a failover while
/// its host is not fenced).
fn down(s: VmState) -> bool {
    matches!(s, VmState::Crashed | VmState::Panicked | VmState::Failed)
}

struct Check<'v> {
    view: &'v ClusterView,
    ledger: Ledger<'v>,
    vms_touched: HashSet<&'v str>,
    fenced: BTreeSet<&'v str>,
}

pub(super) fn actions(view: &ClusterView, actions: &[HaAction]) -> Result<(), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!("{} actions (at most {MAX_ACTIONS})", actions.len()));
    }
    let mut c = Check {
        view,
        ledger: Ledger::new(view),
        vms_touched: HashSet::new(),
        fenced: BTreeSet::new(),
    };
    for (i, a) in actions.iter().enumerate() {
        let what = format!("action {i} ({})", kind(a));
        let needs_quorum = matches!(
            a,
            HaAction::Switchover(_)
                | HaAction::Failover(_)
                | HaAction::Fence(_)
                | HaAction::Restart(_)
        );
        if needs_quorum && !view.has_quorum {
            return Err(format!("{what} needs quorum and the view has none"));
        }
        match a {
            HaAction::Switchover(m) => c.switchover(&what, m)?,
            HaAction::Failover(m) => c.failover(&what, m)?,
            HaAction::Restart(r) => c.restart(&what, r)?,
            HaAction::Fence(f) => c.fence(&what, f)?,
            HaAction::Hold(h) => {
                text("reason", &h.reason)?;
                if h.delay_ms > MAX_HOLD_MS {
                    return Err(format!("{what}: hold of {} ms is too long", h.delay_ms));
                }
            }
            HaAction::Notify(n) => text("message", &n.message)?,
        }
    }
    c.majority()
}

impl<'v> Check<'v> {
    /// The VM an action names, once per answer.
    fn vm(&mut self, what: &str, id: &str) -> Result<&'v VmInfo, String> {
        let vm = self
            .view
            .vm(id)
            .ok_or_else(|| format!("{what} names unknown VM {id:?}"))?;
        if !self.vms_touched.insert(vm.id.as_str()) {
            return Err(format!("VM {id:?} appears in two actions"));
        }
        Ok(vm)
    }

    fn switchover(&mut self, what: &str, m: &'v VmMove) -> Result<(), String> {
        text("reason", &m.reason)?;
        let vm = self.vm(what, &m.vm)?;
        let Some(ha) = vm.ha.as_ref().filter(|_| vm.ha_enabled) else {
            return Err(format!(
                "{what}: VM {:?} has no passive host; a switchover moves an HA VM to its passive host",
                m.vm
            ));
        };
        if ha.passive != m.target {
            return Err(format!(
                "{what}: target {:?} is not the passive host {:?} of VM {:?}",
                m.target, ha.passive, m.vm
            ));
        }
        usable_target(self.view, &m.target, what)?;
        if vm.host.as_deref() == Some(m.target.as_str()) {
            return Err(format!(
                "{what}: VM {:?} already runs on target {:?}",
                m.vm, m.target
            ));
        }
        if vm.state != VmState::Running {
            return Err(format!(
                "{what}: VM {:?} is {}, not running",
                m.vm,
                state_name(vm.state)
            ));
        }
        let src = vm.host.as_deref().and_then(|h| self.view.host(h));
        // Reachable: answering heartbeats (a host in maintenance answers).
        let reachable = |h: &HostInfo| {
            matches!(
                h.health,
                HostHealth::Healthy | HostHealth::Degraded | HostHealth::Maintenance
            )
        };
        if src.is_none_or(|h| !reachable(h)) {
            return Err(format!(
                "{what}: switchover of VM {:?} needs its host reachable",
                m.vm
            ));
        }
        // The VM's resources are reserved on its passive host.
        Ok(())
    }

    fn failover(&mut self, what: &str, m: &'v VmMove) -> Result<(), String> {
        text("reason", &m.reason)?;
        let vm = self.vm(what, &m.vm)?;
        if !vm.ha_enabled {
            return Err(format!(
                "{what}: VM {:?} is not HA; only HA VMs fail over",
                m.vm
            ));
        }
        if stopped_by_admin(vm.state) {
            return Err(format!(
                "{what}: VM {:?} is {} (stopped by its administrator); it is not failed over",
                m.vm,
                state_name(vm.state)
            ));
        }
        let target = usable_target(self.view, &m.target, what)?;
        if vm.host.as_deref() == Some(m.target.as_str()) {
            return Err(format!(
                "{what}: VM {:?} already runs on target {:?}",
                m.vm, m.target
            ));
        }
        // I1: a VM may only be started elsewhere when its host is fenced or
        // the VM itself went down.
        let host_fenced = vm
            .host
            .as_deref()
            .and_then(|h| self.view.host(h))
            .is_none_or(|h| h.health == HostHealth::Fenced);
        if !host_fenced && !down(vm.state) {
            return Err(format!(
                "{what}: VM {:?} is {} and its host {:?} is not fenced",
                m.vm,
                state_name(vm.state),
                vm.host
            ));
        }
        if vm.ha.as_ref().is_some_and(|ha| ha.passive == m.target) {
            // Its resources are reserved there.
            return Ok(());
        }
        if target.cordoned {
            return Err(format!("{what}: target {:?} is cordoned", m.target));
        }
        let view = self.view;
        hard_constraints(
            target,
            vm,
            |id| {
                view.vm(id)
                    .filter(|v| v.state.is_active())
                    .and_then(|v| v.host.as_deref())
            },
            what,
        )?;
        self.ledger.take(&m.target, vm, what)
    }

    fn restart(&mut self, what: &str, r: &'v VmRestart) -> Result<(), String> {
        text("reason", &r.reason)?;
        let vm = self.vm(what, &r.vm)?;
        if r.delay_ms > MAX_HOLD_MS {
            return Err(format!(
                "{what}: restart delay {} ms is too long",
                r.delay_ms
            ));
        }
        if stopped_by_admin(vm.state) {
            return Err(format!(
                "{what}: VM {:?} is {} (stopped by its administrator); it is not restarted",
                r.vm,
                state_name(vm.state)
            ));
        }
        let host = vm
            .host
            .as_deref()
            .ok_or_else(|| format!("{what}: VM {:?} has no host to restart on", r.vm))?;
        let h = self
            .view
            .host(host)
            .ok_or_else(|| format!("{what}: VM {:?} is on unknown host {host:?}", r.vm))?;
        if matches!(h.health, HostHealth::Fenced | HostHealth::Unreachable) {
            return Err(format!(
                "{what}: VM {:?} is on host {host:?} which is {}",
                r.vm,
                h.health.as_str()
            ));
        }
        Ok(())
    }

    /// Only an `unreachable` host is fenced: a `healthy`, `degraded` or
    /// `maintenance` host answers (its VMs are moved by switchover or by
    /// the administrator), and a `fenced` one is already fenced.
    fn fence(&mut self, what: &str, f: &'v FenceHost) -> Result<(), String> {
        text("reason", &f.reason)?;
        let h = self
            .view
            .host(&f.host)
            .ok_or_else(|| format!("{what} fences unknown host {:?}", f.host))?;
        match h.health {
            HostHealth::Unreachable => {}
            HostHealth::Fenced => {
                return Err(format!("{what}: host {:?} is already fenced", f.host))
            }
            other => {
                return Err(format!(
                    "{what}: host {:?} is {}; only unreachable hosts are fenced",
                    f.host,
                    other.as_str()
                ))
            }
        }
        if !self.fenced.insert(h.id.as_str()) {
            return Err(format!("{what}: host {:?} is fenced twice", f.host));
        }
        Ok(())
    }

    /// After the answer's fences, the hosts neither fenced nor unreachable
    /// must be a strict majority of the cluster.
    fn majority(&self) -> Result<(), String> {
        if self.fenced.is_empty() {
            return Ok(());
        }
        let mut lost: BTreeSet<&str> = self
            .view
            .hosts
            .iter()
            .filter(|h| matches!(h.health, HostHealth::Fenced | HostHealth::Unreachable))
            .map(|h| h.id.as_str())
            .collect();
        lost.extend(self.fenced.iter().copied());
        let total: BTreeSet<&str> = self.view.hosts.iter().map(|h| h.id.as_str()).collect();
        let left = total.len() - lost.len();
        if 2 * left <= total.len() {
            return Err(format!(
                "fencing {:?} would leave {left} of {} hosts neither fenced nor unreachable ({:?} are), not a majority",
                self.fenced,
                total.len(),
                lost
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn refused(view: &ClusterView, a: &[HaAction], needle: &str) {
        let e = actions(view, a).expect_err(needle);
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }

    /// h1 fenced with three 4 GiB HA VMs; h2 and h3 are their passive hosts;
    /// h4 has room for one more 4 GiB VM only.
    fn after_fence() -> ClusterView {
        view(
            vec![
                host_in("h1", HostHealth::Fenced),
                host("h2", 0),
                host("h3", 0),
                host("h4", 6_144),
                host("h5", 65_536),
            ],
            vec![
                ha_vm("a", "h1", "h2", 4_096),
                ha_vm("b", "h1", "h2", 4_096),
                ha_vm("c", "h1", "h3", 4_096),
            ],
        )
    }

    #[test]
    fn two_failovers_onto_a_host_that_fits_one_are_refused_together() {
        let v = after_fence();
        actions(&v, &[failover("a", "h4")]).unwrap();
        actions(&v, &[failover("b", "h4")]).unwrap();
        refused(
            &v,
            &[failover("a", "h4"), failover("b", "h4")],
            "action 1 (failover): target \"h4\" has 7 vCPU / 2048 MiB",
        );
        actions(&v, &[failover("a", "h4"), failover("b", "h5")]).unwrap();
    }

    #[test]
    fn failovers_to_their_passive_hosts_use_their_reservations() {
        // h2 has no free memory left: the reservations of a and b are in use.
        let v = after_fence();
        actions(
            &v,
            &[
                failover("a", "h2"),
                failover("b", "h2"),
                failover("c", "h3"),
            ],
        )
        .unwrap();
        // c's reservation is on h3, not on h2.
        refused(&v, &[failover("c", "h2")], "target \"h2\" has");
    }

    #[test]
    fn switchovers_and_failovers_are_counted_together() {
        let mut v = after_fence();
        v.hosts[4] = host("h5", 0);
        v.hosts.push(host_in("h6", HostHealth::Degraded));
        v.vms.push(ha_vm("s", "h6", "h4", 4_096));
        // s's switchover uses its reservation on h4; a still fits there.
        actions(&v, &[switchover("s", "h4"), failover("a", "h4")]).unwrap();
        refused(
            &v,
            &[
                switchover("s", "h4"),
                failover("a", "h4"),
                failover("b", "h4"),
            ],
            "action 2 (failover): target \"h4\"",
        );
        // A switchover goes to the VM's passive host only.
        refused(
            &v,
            &[switchover("s", "h5")],
            "target \"h5\" is not the passive host \"h4\" of VM \"s\"",
        );
    }

    #[test]
    fn only_unreachable_hosts_are_fenced() {
        let v = view(
            vec![
                host("h1", 0),
                host_in("h2", HostHealth::Degraded),
                host_in("h3", HostHealth::Maintenance),
                host_in("h4", HostHealth::Fenced),
                host_in("h5", HostHealth::Unreachable),
                host("h6", 0),
                host("h7", 0),
            ],
            vec![],
        );
        refused(
            &v,
            &[fence("h1")],
            "host \"h1\" is healthy; only unreachable hosts are fenced",
        );
        refused(&v, &[fence("h2")], "is degraded");
        refused(&v, &[fence("h3")], "is maintenance");
        refused(&v, &[fence("h4")], "already fenced");
        refused(&v, &[fence("h9")], "unknown host");
        refused(&v, &[fence("h5"), fence("h5")], "fenced twice");
        actions(&v, &[fence("h5")]).unwrap();
    }

    #[test]
    fn fencing_that_leaves_no_majority_is_refused() {
        let mut v = view(
            vec![
                host("h1", 0),
                host("h2", 0),
                host_in("h3", HostHealth::Unreachable),
                host_in("h4", HostHealth::Unreachable),
                host_in("h5", HostHealth::Unreachable),
            ],
            vec![],
        );
        // The view claims quorum, yet three of five hosts are gone.
        refused(&v, &[fence("h3")], "would leave 2 of 5 hosts");
        v.hosts[4].health = HostHealth::Fenced;
        refused(&v, &[fence("h3")], "would leave 2 of 5 hosts");
        v.hosts[4].health = HostHealth::Healthy;
        actions(&v, &[fence("h3"), fence("h4")]).unwrap();
    }

    #[test]
    fn stopped_vms_are_neither_failed_over_nor_restarted() {
        let mut v = after_fence();
        v.hosts[0].health = HostHealth::Healthy;
        for (state, ok) in [
            (VmState::Stopped, false),
            (VmState::ShuttingDown, false),
            (VmState::Crashed, true),
            (VmState::Panicked, true),
            (VmState::Failed, true),
        ] {
            v.vms[0].state = state;
            let fo = actions(&v, &[failover("a", "h2")]);
            let rs = actions(&v, &[restart("a")]);
            assert_eq!(fo.is_ok(), ok, "failover of a {state:?} VM: {fo:?}");
            assert_eq!(rs.is_ok(), ok, "restart of a {state:?} VM: {rs:?}");
            if !ok {
                assert!(fo.unwrap_err().contains("stopped by its administrator"));
            }
        }
        // On a fenced host too: a stopped VM stays stopped.
        v.hosts[0].health = HostHealth::Fenced;
        v.vms[0].state = VmState::Stopped;
        refused(&v, &[failover("a", "h2")], "stopped by its administrator");
    }

    #[test]
    fn restarts_need_quorum_and_failovers_need_an_ha_vm() {
        let mut v = after_fence();
        v.vms.push(VmInfo {
            state: VmState::Crashed,
            ..vm("plain", "h5", 1_024)
        });
        refused(&v, &[failover("plain", "h4")], "is not HA");
        actions(&v, &[restart("plain")]).unwrap();
        v.has_quorum = false;
        refused(&v, &[restart("plain")], "needs quorum");
    }

    #[test]
    fn failover_to_another_host_keeps_the_hard_constraints() {
        let mut v = after_fence();
        v.vms[0].constraints.pinned_hosts = vec!["h5".into()];
        refused(&v, &[failover("a", "h4")], "pinned");
        actions(&v, &[failover("a", "h5")]).unwrap();
        // Its own passive host holds its reservation: no constraint check.
        actions(&v, &[failover("a", "h2")]).unwrap();
        v.vms.push(vm("x", "h5", 1_024));
        v.vms[0].constraints.anti_affinity = vec!["x".into()];
        refused(&v, &[failover("a", "h5")], "runs VM \"x\"");
    }
}
