//! `rebalance`: advise live migrations that even out memory use.
//!
//! A host's load is its used-memory share, `(capacity - free) / capacity`,
//! computed in basis points (1/100 of a percent) so the arithmetic is exact.
//! Only `healthy` hosts with a non-zero memory capacity take part; cordoned
//! hosts may give VMs away but never receive one.
//!
//! Each step, on a simulated copy of the cluster where the moves already
//! proposed have been applied:
//!
//! 1. The least loaded non-cordoned host is the reference. Source hosts are
//!    taken from the most loaded down, as long as their load exceeds the
//!    reference's by more than `imbalance-threshold-percent` points.
//! 2. From the first such source that has one, the smallest (memory, then id)
//!    `running`, non-HA VM is moved to the least loaded target host (load, then
//!    id) where it fits and respects its hard constraints (pinned hosts,
//!    required labels, anti-affinity), provided the target ends up less loaded
//!    than the source was (so a move never just swaps the problem).
//! 3. Stop after `max-moves` moves, when balanced, or when no move is possible.
//!
//! HA VMs are never moved: they are tied to their active/passive pair. A VM is
//! moved at most once per call. The result only depends on the view and the
//! settings.

use std::collections::{BTreeMap, BTreeSet};

use nasvisor_plugin_sdk::prelude::*;

use crate::constraints::{clip, rejection, Occupancy};
use crate::settings::RebalanceSettings;

/// Basis points in 100 %.
const FULL_BP: u64 = 10_000;

/// A host in the simulation.
struct SimHost<'a> {
    info: &'a HostInfo,
    free: Resources,
}

impl SimHost<'_> {
    /// Used-memory share in basis points.
    fn load_bp(&self) -> u64 {
        let cap = self.info.capacity.memory_mib;
        let used = cap.saturating_sub(self.free.memory_mib);
        (u128::from(used) * u128::from(FULL_BP) / u128::from(cap)) as u64
    }

    /// Load after adding `extra_mib` of used memory.
    fn load_bp_with(&self, extra_mib: u64) -> u64 {
        let cap = self.info.capacity.memory_mib;
        let used = u128::from(cap.saturating_sub(self.free.memory_mib)) + u128::from(extra_mib);
        (used * u128::from(FULL_BP) / u128::from(cap)) as u64
    }
}

/// The simulated cluster: host free resources and where active VMs run.
struct Sim<'a> {
    hosts: BTreeMap<&'a str, SimHost<'a>>,
    /// Active VM id -> host id.
    location: BTreeMap<&'a str, &'a str>,
}

impl Occupancy for Sim<'_> {
    fn runs(&self, vm: &str, host: &str) -> bool {
        self.location.get(vm) == Some(&host)
    }
}

/// Format basis points as a percentage with two decimals at most.
fn pct(bp: u64) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{}.{:02}%", bp / 100, bp % 100)
    }
}

/// Propose at most `max-moves` moves that even out the cluster's memory use.
///
/// Errors: `bad-settings` for an invalid `max-moves` or
/// `imbalance-threshold-percent`.
pub fn rebalance(env: &dyn Env, view: &ClusterView) -> Result<Vec<RebalanceMove>, PluginError> {
    let s = RebalanceSettings::load(env)?;
    let threshold_bp = s.threshold_percent * 100;

    let mut sim = Sim {
        hosts: BTreeMap::new(),
        location: BTreeMap::new(),
    };
    for h in &view.hosts {
        if h.health == HostHealth::Healthy && h.capacity.memory_mib > 0 {
            sim.hosts.entry(h.id.as_str()).or_insert(SimHost {
                info: h,
                free: h.free,
            });
        }
    }
    for v in &view.vms {
        if let (true, Some(host)) = (v.state.is_active(), v.host.as_deref()) {
            sim.location.entry(v.id.as_str()).or_insert(host);
        }
    }
    // Movable VMs, smallest first.
    let mut movable: Vec<&VmInfo> = view
        .vms
        .iter()
        .filter(|v| {
            v.state == VmState::Running && !v.ha_enabled && v.ha.is_none() && v.host.is_some()
        })
        .collect();
    movable.sort_by(|a, b| {
        a.resources
            .memory_mib
            .cmp(&b.resources.memory_mib)
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut moved: BTreeSet<&str> = BTreeSet::new();
    let mut moves = Vec::new();

    while moves.len() < s.max_moves as usize {
        let Some(step) = next_move(&sim, &movable, &moved, threshold_bp) else {
            break;
        };
        let Step {
            vm,
            source,
            target,
            reason,
        } = step;
        let res = vm.resources;
        if let Some(h) = sim.hosts.get_mut(source) {
            h.free.vcpus = h.free.vcpus.saturating_add(res.vcpus);
            h.free.memory_mib = h.free.memory_mib.saturating_add(res.memory_mib);
            h.free.storage_gib = h.free.storage_gib.saturating_add(res.storage_gib);
        }
        if let Some(h) = sim.hosts.get_mut(target) {
            h.free.vcpus -= res.vcpus;
            h.free.memory_mib -= res.memory_mib;
            h.free.storage_gib -= res.storage_gib;
        }
        sim.location.insert(vm.id.as_str(), target);
        moved.insert(vm.id.as_str());
        env.log(
            LogLevel::Info,
            "rebalance move",
            &[("vm", &vm.id), ("source", source), ("target", target)],
        );
        moves.push(RebalanceMove {
            vm: vm.id.clone(),
            source: source.to_string(),
            target: target.to_string(),
            reason,
        });
    }
    Ok(moves)
}

/// One planned move.
struct Step<'a> {
    vm: &'a VmInfo,
    source: &'a str,
    target: &'a str,
    reason: String,
}

/// The next move, or `None` when balanced or nothing can move.
fn next_move<'a>(
    sim: &Sim<'a>,
    movable: &[&'a VmInfo],
    moved: &BTreeSet<&str>,
    threshold_bp: u64,
) -> Option<Step<'a>> {
    let mut by_load: Vec<(&'a str, u64)> =
        sim.hosts.iter().map(|(id, h)| (*id, h.load_bp())).collect();
    // Most loaded first, ties by id.
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut targets: Vec<(&'a str, u64)> = by_load
        .iter()
        .copied()
        .filter(|(id, _)| !sim.hosts[id].info.cordoned)
        .collect();
    // Least loaded first, ties by id.
    targets.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let &(least_id, least_bp) = targets.first()?;

    for &(source, source_bp) in &by_load {
        let spread = source_bp.saturating_sub(least_bp);
        if spread <= threshold_bp {
            // Sources are sorted by load: the rest are balanced too.
            return None;
        }
        for vm in movable.iter().filter(|v| {
            sim.location.get(v.id.as_str()) == Some(&source) && !moved.contains(v.id.as_str())
        }) {
            for &(target, _) in &targets {
                if target == source {
                    continue;
                }
                let t = &sim.hosts[target];
                if rejection(t.info, &t.free, vm, sim).is_some() {
                    continue;
                }
                if t.load_bp_with(vm.resources.memory_mib) >= source_bp {
                    continue;
                }
                let reason = format!(
                    "{source} uses {} of its memory and {least_id} {} (spread {} points > threshold {}): \
                     moving {} ({} MiB), the smallest movable VM, to {target}, the least loaded host where it fits",
                    pct(source_bp),
                    pct(least_bp),
                    pct(spread).trim_end_matches('%'),
                    pct(threshold_bp).trim_end_matches('%'),
                    vm.id,
                    vm.resources.memory_mib,
                );
                let reason = clip(reason);
                return Some(Step {
                    vm,
                    source,
                    target,
                    reason,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn moves(env: &StaticEnv, v: &ClusterView) -> Vec<(String, String, String)> {
        rebalance(env, v)
            .unwrap()
            .into_iter()
            .map(|m| (m.vm, m.source, m.target))
            .collect()
    }

    fn t(vm: &str, s: &str, d: &str) -> (String, String, String) {
        (vm.into(), s.into(), d.into())
    }

    #[test]
    fn empty_view_is_balanced() {
        assert!(rebalance(&env_with(&[]), &ClusterView::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn balanced_cluster_gives_no_moves() {
        let v = view(
            vec![host_used("h1", 10000, 5000), host_used("h2", 10000, 3100)],
            vec![vm_on("a", 1, 5000, "h1"), vm_on("b", 1, 3100, "h2")],
        );
        // Spread 19 points <= 20.
        assert!(moves(&env_with(&[]), &v).is_empty());
    }

    #[test]
    fn spread_exactly_at_threshold_gives_no_moves() {
        let v = view(
            vec![host_used("h1", 10000, 5000), host_used("h2", 10000, 3000)],
            vec![vm_on("a", 1, 1000, "h1"), vm_on("b", 1, 4000, "h1")],
        );
        assert!(moves(&env_with(&[]), &v).is_empty());
    }

    #[test]
    fn moves_smallest_running_non_ha_vm_to_least_loaded_host() {
        let mut ha = vm_on("ha", 1, 500, "h1");
        ha.ha_enabled = true;
        let mut stopped = vm_on("stopped", 1, 100, "h1");
        stopped.state = VmState::Paused;
        let v = view(
            vec![
                host_used("h1", 10000, 8000),
                host_used("h2", 10000, 5000),
                host_used("h3", 10000, 1000),
            ],
            vec![
                ha,
                stopped,
                vm_on("big", 1, 4000, "h1"),
                vm_on("small", 1, 2000, "h1"),
                vm_on("x", 1, 1000, "h3"),
            ],
        );
        let m = rebalance(&env_with(&[]), &v).unwrap();
        assert_eq!(m[0].vm, "small");
        assert_eq!(m[0].source, "h1");
        assert_eq!(m[0].target, "h3");
        assert!(
            m[0].reason.contains("h1 uses 80%") && m[0].reason.contains("h3 10%"),
            "{}",
            m[0].reason
        );
        assert!(m.iter().all(|m| m.vm != "ha" && m.vm != "stopped"));
    }

    #[test]
    fn stops_once_balanced() {
        // h1 80 %, h2 20 %: moving one 3000 MiB VM gives 50 % / 50 %.
        let v = view(
            vec![host_used("h1", 10000, 8000), host_used("h2", 10000, 2000)],
            vec![
                vm_on("a", 1, 3000, "h1"),
                vm_on("b", 1, 5000, "h1"),
                vm_on("c", 1, 2000, "h2"),
            ],
        );
        assert_eq!(moves(&env_with(&[]), &v), vec![t("a", "h1", "h2")]);
    }

    #[test]
    fn respects_max_moves() {
        let vms: Vec<VmInfo> = (0..8)
            .map(|i| vm_on(&format!("v{i}"), 1, 1000, "h1"))
            .collect();
        let v = view(
            vec![host_used("h1", 10000, 8000), host_used("h2", 10000, 0)],
            vms,
        );
        assert_eq!(moves(&env_with(&[]), &v).len(), 3);
        assert_eq!(
            moves(&env_with(&[("max-moves", "1")]), &v),
            vec![t("v0", "h1", "h2")]
        );
        assert!(moves(&env_with(&[("max-moves", "0")]), &v).is_empty());
        // Unlimited moves stop at balance: 80/0 -> 50/30 leaves 20 points.
        assert_eq!(moves(&env_with(&[("max-moves", "100")]), &v).len(), 3);
        assert_eq!(
            moves(
                &env_with(&[("max-moves", "100"), ("imbalance-threshold-percent", "0")]),
                &v
            )
            .len(),
            4
        );
    }

    #[test]
    fn never_targets_unhealthy_or_cordoned_hosts() {
        let mut down = host_used("h2", 10000, 0);
        down.health = HostHealth::Unreachable;
        let mut cordoned = host_used("h3", 10000, 0);
        cordoned.cordoned = true;
        let v = view(
            vec![
                host_used("h1", 10000, 9000),
                down,
                cordoned,
                host_used("h4", 10000, 5000),
            ],
            vec![vm_on("a", 1, 1000, "h1")],
        );
        assert_eq!(moves(&env_with(&[]), &v), vec![t("a", "h1", "h4")]);
    }

    #[test]
    fn cordoned_host_can_be_a_source() {
        let mut c = host_used("h1", 10000, 9000);
        c.cordoned = true;
        let v = view(
            vec![c, host_used("h2", 10000, 0)],
            vec![vm_on("a", 1, 1000, "h1")],
        );
        assert_eq!(moves(&env_with(&[]), &v), vec![t("a", "h1", "h2")]);
    }

    #[test]
    fn respects_pinning_labels_and_anti_affinity() {
        let mut labelled = host_used("h3", 10000, 3000);
        labelled.labels = vec![label("gpu", "yes")];
        let v0 = |a: VmInfo| {
            view(
                vec![
                    host_used("h1", 10000, 9000),
                    host_used("h2", 10000, 1000),
                    labelled.clone(),
                ],
                vec![a, vm_on("enemy", 1, 1000, "h2")],
            )
        };
        let mut pinned = vm_on("a", 1, 1000, "h1");
        pinned.constraints.pinned_hosts = vec!["h1".into(), "h3".into()];
        assert_eq!(moves(&env_with(&[]), &v0(pinned)), vec![t("a", "h1", "h3")]);

        let mut lab = vm_on("a", 1, 1000, "h1");
        lab.constraints.required_labels = vec![label("gpu", "yes")];
        assert_eq!(moves(&env_with(&[]), &v0(lab)), vec![t("a", "h1", "h3")]);

        let mut anti = vm_on("a", 1, 1000, "h1");
        anti.constraints.anti_affinity = vec!["enemy".into()];
        assert_eq!(moves(&env_with(&[]), &v0(anti)), vec![t("a", "h1", "h3")]);

        let mut stuck = vm_on("a", 1, 1000, "h1");
        stuck.constraints.pinned_hosts = vec!["h1".into()];
        assert!(moves(&env_with(&[]), &v0(stuck)).is_empty());
    }

    #[test]
    fn anti_affinity_sees_earlier_planned_moves() {
        // a and b must not share a host; both would otherwise go to h2.
        let mut a = vm_on("a", 1, 1000, "h1");
        a.constraints.anti_affinity = vec!["b".into()];
        let mut b = vm_on("b", 1, 1100, "h1");
        b.constraints.anti_affinity = vec!["a".into()];
        let v = view(
            vec![
                host_used("h1", 10000, 9000),
                host_used("h2", 10000, 0),
                host_used("h3", 10000, 3000),
            ],
            vec![a, b],
        );
        let m = moves(&env_with(&[("imbalance-threshold-percent", "5")]), &v);
        assert_eq!(m[0], t("a", "h1", "h2"));
        assert_eq!(m[1], t("b", "h1", "h3"));
    }

    #[test]
    fn does_not_move_a_vm_that_would_overload_the_target() {
        // Moving the only VM (6000 MiB) to h2 would make h2 as loaded as h1 was.
        let v = view(
            vec![host_used("h1", 10000, 6000), host_used("h2", 10000, 0)],
            vec![vm_on("a", 1, 6000, "h1")],
        );
        assert!(moves(&env_with(&[]), &v).is_empty());
    }

    #[test]
    fn vm_that_does_not_fit_is_skipped_for_a_larger_target_or_next_vm() {
        let mut tiny_cpu = host_used("h2", 10000, 0);
        tiny_cpu.free.vcpus = 1;
        let v = view(
            vec![host_used("h1", 10000, 9000), tiny_cpu],
            vec![vm_on("a", 4, 1000, "h1"), vm_on("b", 1, 2000, "h1")],
        );
        assert_eq!(
            moves(&env_with(&[("max-moves", "1")]), &v),
            vec![t("b", "h1", "h2")]
        );
    }

    #[test]
    fn next_source_is_tried_when_most_loaded_has_nothing_movable() {
        let mut ha = vm_on("ha", 1, 9000, "h1");
        ha.ha_enabled = true;
        let v = view(
            vec![
                host_used("h1", 10000, 9000),
                host_used("h2", 10000, 8000),
                host_used("h3", 10000, 0),
            ],
            vec![ha, vm_on("b", 1, 1000, "h2")],
        );
        assert_eq!(
            moves(&env_with(&[("max-moves", "1")]), &v),
            vec![t("b", "h2", "h3")]
        );
    }

    #[test]
    fn ties_are_deterministic() {
        let v1 = view(
            vec![
                host_used("hb", 10000, 0),
                host_used("ha", 10000, 0),
                host_used("hx", 10000, 9000),
            ],
            vec![vm_on("z", 1, 1000, "hx"), vm_on("y", 1, 1000, "hx")],
        );
        let mut v2 = v1.clone();
        v2.hosts.reverse();
        v2.vms.reverse();
        let env = env_with(&[("max-moves", "1")]);
        assert_eq!(moves(&env, &v1), vec![t("y", "hx", "ha")]);
        assert_eq!(moves(&env, &v1), moves(&env, &v2));
    }

    #[test]
    fn zero_capacity_and_unknown_hosts_are_ignored() {
        let mut zero = host_used("h0", 10000, 0);
        zero.capacity.memory_mib = 0;
        let v = view(
            vec![zero, host_used("h1", 10000, 9000)],
            vec![vm_on("a", 1, 1000, "h1"), vm_on("b", 1, 1000, "ghost")],
        );
        assert!(moves(&env_with(&[]), &v).is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        let e = rebalance(
            &env_with(&[("imbalance-threshold-percent", "x")]),
            &ClusterView::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("imbalance-threshold-percent"));
    }

    #[test]
    fn pct_formats_basis_points() {
        assert_eq!(pct(8000), "80%");
        assert_eq!(pct(1234), "12.34%");
        assert_eq!(pct(5), "0.05%");
    }
}
