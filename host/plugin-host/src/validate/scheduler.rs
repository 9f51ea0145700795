//! Scheduler answers: a placement, and rebalance moves.

use super::{hard_constraints, text, usable_target, Ledger, MAX_ACTIONS};
use nasvisor_plugin_sdk::prelude::*;
use std::collections::{HashMap, HashSet};

pub(super) fn placement(
    view: &ClusterView,
    req: &PlacementRequest,
    p: &Placement,
) -> Result<(), String> {
    text("reason", &p.reason)?;
    if !req.eligible_hosts.contains(&p.host) {
        return Err(format!(
            "placement host {:?} is not one of the eligible hosts {:?}",
            p.host, req.eligible_hosts
        ));
    }
    usable_target(view, &p.host, "placement")?;
    match (&p.passive_host, req.vm.ha_enabled) {
        (None, true) => Err(format!(
            "VM {:?} is HA but no passive host was chosen",
            req.vm.id
        )),
        (Some(ph), false) => Err(format!(
            "VM {:?} is not HA but a passive host ({ph:?}) was chosen",
            req.vm.id
        )),
        (Some(ph), true) => {
            if *ph == p.host {
                return Err(format!(
                    "passive host {ph:?} is the same as the active host"
                ));
            }
            if !req.eligible_passive_hosts.contains(ph) {
                return Err(format!(
                    "passive host {ph:?} is not one of the eligible passive hosts {:?}",
                    req.eligible_passive_hosts
                ));
            }
            usable_target(view, ph, "passive placement").map(|_| ())
        }
        (None, false) => Ok(()),
    }
}

/// Rebalance moves are live migrations carried out in the answer's order:
/// each takes its VM's resources on its target and gives them back on its
/// source for the moves after it, and each VM's hard constraints are checked
/// where the earlier moves left the other VMs.
pub(super) fn moves(view: &ClusterView, moves: &[RebalanceMove]) -> Result<(), String> {
    if moves.len() > MAX_ACTIONS {
        return Err(format!("{} moves (at most {MAX_ACTIONS})", moves.len()));
    }
    let mut ledger = Ledger::new(view);
    let mut runs_on: HashMap<&str, &str> = HashMap::new();
    for v in &view.vms {
        if let (true, Some(h)) = (v.state.is_active(), v.host.as_deref()) {
            runs_on.entry(v.id.as_str()).or_insert(h);
        }
    }
    let mut seen = HashSet::new();
    for (i, m) in moves.iter().enumerate() {
        let what = format!("move {i}");
        text("reason", &m.reason)?;
        let vm = view
            .vm(&m.vm)
            .ok_or_else(|| format!("{what} names unknown VM {:?}", m.vm))?;
        if !seen.insert(&m.vm) {
            return Err(format!("VM {:?} is moved twice", m.vm));
        }
        if vm.host.as_deref() != Some(m.source.as_str()) {
            return Err(format!(
                "{what}: VM {:?} is on {:?}, not on source {:?}",
                m.vm, vm.host, m.source
            ));
        }
        if vm.state != VmState::Running {
            return Err(format!(
                "{what}: VM {:?} is {}, not running; only running VMs are live-migrated",
                m.vm,
                super::ha::state_name(vm.state)
            ));
        }
        let source = view
            .host(&m.source)
            .ok_or_else(|| format!("{what} names unknown source host {:?}", m.source))?;
        if !matches!(source.health, HostHealth::Healthy | HostHealth::Degraded) {
            return Err(format!(
                "{what}: source host {:?} is {}; a live migration needs it reachable",
                m.source,
                source.health.as_str()
            ));
        }
        if m.target == m.source {
            return Err(format!("{what}: target equals source {:?}", m.source));
        }
        let t = usable_target(view, &m.target, &what)?;
        if t.cordoned {
            return Err(format!("{what}: target {:?} is cordoned", m.target));
        }
        if vm.ha.as_ref().is_some_and(|ha| ha.passive == m.target) {
            return Err(format!(
                "{what}: target {:?} is the passive host of HA VM {:?}; active and passive would share a host",
                m.target, m.vm
            ));
        }
        hard_constraints(t, vm, |id| runs_on.get(id).copied(), &what)?;
        ledger.take(&m.target, vm, &what)?;
        ledger.give(&m.source, vm);
        runs_on.insert(vm.id.as_str(), t.id.as_str());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn mv(vm: &str, source: &str, target: &str) -> RebalanceMove {
        RebalanceMove {
            vm: vm.into(),
            source: source.into(),
            target: target.into(),
            reason: String::new(),
        }
    }

    fn refused(view: &ClusterView, m: &[RebalanceMove], needle: &str) {
        let e = moves(view, m).expect_err(needle);
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }

    fn cluster() -> ClusterView {
        view(
            vec![host("h1", 0), host("h2", 4_096), host("h3", 0)],
            vec![
                vm("a", "h1", 4_096),
                vm("b", "h1", 4_096),
                vm("c", "h3", 4_096),
                ha_vm("d", "h1", "h3", 1_024),
            ],
        )
    }

    #[test]
    fn two_moves_onto_a_host_that_fits_one_are_refused_together() {
        let v = cluster();
        moves(&v, &[mv("a", "h1", "h2")]).unwrap();
        refused(
            &v,
            &[mv("a", "h1", "h2"), mv("b", "h1", "h2")],
            "move 1: target \"h2\" has 7 vCPU / 0 MiB",
        );
    }

    #[test]
    fn a_move_may_use_room_an_earlier_move_freed() {
        let v = cluster();
        // c leaves h3 first, so a fits there.
        moves(&v, &[mv("c", "h3", "h2"), mv("a", "h1", "h3")]).unwrap();
        refused(&v, &[mv("a", "h1", "h3")], "target \"h3\" has");
    }

    #[test]
    fn moves_keep_hard_constraints_and_ha_pairs_apart() {
        let mut v = cluster();
        v.hosts[1].free.memory_mib = 65_536;
        refused(&v, &[mv("d", "h1", "h3")], "passive host of HA VM \"d\"");
        v.vms[0].constraints.pinned_hosts = vec!["h1".into()];
        refused(&v, &[mv("a", "h1", "h2")], "pinned");
        v.vms[0].constraints.pinned_hosts.clear();
        v.vms[0].constraints.required_labels = vec![Label {
            key: "ssd".into(),
            value: "yes".into(),
        }];
        refused(&v, &[mv("a", "h1", "h2")], "lacks the label ssd=yes");
        v.vms[0].constraints.required_labels.clear();
        v.vms[0].constraints.anti_affinity = vec!["c".into()];
        moves(&v, &[mv("a", "h1", "h2")]).unwrap();
        // c moved to h2 by an earlier move of the same answer.
        refused(
            &v,
            &[mv("c", "h3", "h2"), mv("a", "h1", "h2")],
            "runs VM \"c\"",
        );
    }

    #[test]
    fn only_running_vms_on_reachable_hosts_move() {
        let mut v = cluster();
        v.hosts[1].free.memory_mib = 65_536;
        v.vms[0].state = VmState::Stopped;
        refused(&v, &[mv("a", "h1", "h2")], "stopped, not running");
        v.vms[0].state = VmState::Running;
        v.hosts[0].health = HostHealth::Unreachable;
        refused(
            &v,
            &[mv("a", "h1", "h2")],
            "source host \"h1\" is unreachable",
        );
    }
}
