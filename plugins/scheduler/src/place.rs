//! `place`: choose a VM's host (and an HA VM's passive host) at first power-on.
//!
//! Candidates are the request's eligible hosts, deduplicated and re-checked
//! against the hard constraints (see [`crate::constraints::rejection`]). Each
//! remaining host gets a score from the memory it would have left after the
//! placement: with `spread` the most free memory wins, with `pack` the least.
//! A host running one of the VM's affinity VMs gets `affinity-bonus-mib` added
//! in its favour. Equal scores are broken by host id (smallest first).
//!
//! For an HA VM the passive host is chosen the same way among the eligible
//! passive hosts, different from the active host. If the best active host is
//! the only possible passive host, the next best active host is tried, so a
//! valid pair is found whenever one exists.

use std::collections::BTreeSet;

use nasvisor_plugin_sdk::prelude::*;

use crate::constraints::{affine_vms_on, clip, rejection};
use crate::settings::{PlaceSettings, Strategy};

/// A host that can take the VM, with its score.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate<'a> {
    id: &'a str,
    /// Higher is better.
    score: i128,
    /// Free memory (MiB) left after the placement.
    free_after_mib: u64,
    /// Affinity VMs active on the host.
    affine: Vec<&'a str>,
}

impl Candidate<'_> {
    /// Why this host was chosen, for the placement's reason.
    fn explain(&self, s: &PlaceSettings) -> String {
        let mut r = match s.strategy {
            Strategy::Spread => format!(
                "most free memory after placement: {} MiB",
                self.free_after_mib
            ),
            Strategy::Pack => format!(
                "least free memory after placement (pack): {} MiB",
                self.free_after_mib
            ),
        };
        if !self.affine.is_empty() && s.affinity_bonus_mib > 0 {
            r.push_str(&format!(
                ", with a {} MiB affinity bonus for running {}",
                s.affinity_bonus_mib,
                self.affine.join(", ")
            ));
        }
        r
    }
}

/// The hosts of `list` that can take the VM, best first, and the reasons the
/// others were refused (as `"host: reason"`, sorted by host id).
fn rank<'a>(
    view: &'a ClusterView,
    vm: &'a VmInfo,
    list: &'a [HostId],
    s: &PlaceSettings,
) -> (Vec<Candidate<'a>>, Vec<String>) {
    let unique: BTreeSet<&str> = list.iter().map(String::as_str).collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for id in unique {
        let Some(h) = view.host(id) else {
            refused.push(format!("{id}: not in the cluster view"));
            continue;
        };
        if let Some(why) = rejection(h, &h.free, vm, view) {
            refused.push(format!("{id}: {why}"));
            continue;
        }
        let free_after_mib = h.free.memory_mib - vm.resources.memory_mib;
        let affine = affine_vms_on(vm, id, view);
        let bonus = if affine.is_empty() {
            0
        } else {
            i128::from(s.affinity_bonus_mib)
        };
        let base = i128::from(free_after_mib);
        let score = match s.strategy {
            Strategy::Spread => base + bonus,
            Strategy::Pack => -base + bonus,
        };
        ok.push(Candidate {
            id,
            score,
            free_after_mib,
            affine,
        });
    }
    ok.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.id.cmp(b.id)));
    (ok, refused)
}

/// Join refusal reasons, or say the list was empty.
fn why_none(what: &str, refused: &[String]) -> String {
    if refused.is_empty() {
        format!("the {what} list is empty")
    } else {
        refused.join("; ")
    }
}

/// Choose the host (and passive host for an HA VM) for `req.vm`.
///
/// Errors: `bad-settings` for an invalid `strategy` or `affinity-bonus-mib`;
/// `no-solution` when no eligible host passes the checks, or when an HA VM has
/// no valid passive host distinct from every possible active host.
pub fn place(
    env: &dyn Env,
    view: &ClusterView,
    req: &PlacementRequest,
) -> Result<Placement, PluginError> {
    let s = PlaceSettings::load(env)?;
    let vm = &req.vm;
    let (actives, refused) = rank(view, vm, &req.eligible_hosts, &s);
    if actives.is_empty() {
        return Err(PluginError::new(
            ErrorCode::NoSolution,
            clip(format!(
                "no eligible host can take VM {}: {}",
                vm.id,
                why_none("eligible-hosts", &refused)
            )),
        ));
    }
    if !vm.ha_enabled {
        let best = &actives[0];
        env.log(
            LogLevel::Info,
            "placed",
            &[("vm", &vm.id), ("host", best.id)],
        );
        return Ok(Placement {
            host: best.id.to_string(),
            passive_host: None,
            reason: clip(best.explain(&s)),
        });
    }
    let (passives, refused_passive) = rank(view, vm, &req.eligible_passive_hosts, &s);
    for active in &actives {
        if let Some(passive) = passives.iter().find(|p| p.id != active.id) {
            env.log(
                LogLevel::Info,
                "placed HA VM",
                &[("vm", &vm.id), ("host", active.id), ("passive", passive.id)],
            );
            return Ok(Placement {
                host: active.id.to_string(),
                passive_host: Some(passive.id.to_string()),
                reason: clip(format!(
                    "{}; passive host {}: {}",
                    active.explain(&s),
                    passive.id,
                    passive.explain(&s)
                )),
            });
        }
    }
    let msg = if passives.is_empty() {
        format!(
            "VM {} is HA but no eligible passive host can take it: {}",
            vm.id,
            why_none("eligible-passive-hosts", &refused_passive)
        )
    } else {
        format!(
            "VM {} is HA but its only possible passive host {} is also its only possible active host; \
             the passive host must differ from the active one",
            vm.id, passives[0].id
        )
    };
    Err(PluginError::new(ErrorCode::NoSolution, clip(msg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn req(vm: VmInfo, eligible: &[&str], passive: &[&str]) -> PlacementRequest {
        PlacementRequest {
            vm,
            eligible_hosts: ids(eligible),
            eligible_passive_hosts: ids(passive),
        }
    }

    fn three_hosts() -> Vec<HostInfo> {
        vec![
            host("h1", 16, 8192),
            host("h2", 16, 16384),
            host("h3", 16, 12288),
        ]
    }

    #[test]
    fn spread_picks_most_free_memory_after_placement() {
        let v = view(three_hosts(), vec![]);
        let p = place(
            &env_with(&[]),
            &v,
            &req(vm("v", 2, 4096), &["h1", "h2", "h3"], &[]),
        )
        .unwrap();
        assert_eq!(p.host, "h2");
        assert_eq!(p.passive_host, None);
        assert_eq!(p.reason, "most free memory after placement: 12288 MiB");
    }

    #[test]
    fn only_eligible_hosts_are_considered() {
        let v = view(three_hosts(), vec![]);
        let p = place(
            &env_with(&[]),
            &v,
            &req(vm("v", 2, 4096), &["h1", "h3"], &[]),
        )
        .unwrap();
        assert_eq!(p.host, "h3");
    }

    #[test]
    fn pack_picks_least_free_memory_that_fits() {
        let v = view(three_hosts(), vec![]);
        let env = env_with(&[("strategy", "pack")]);
        let p = place(&env, &v, &req(vm("v", 2, 4096), &["h1", "h2", "h3"], &[])).unwrap();
        assert_eq!(p.host, "h1");
        assert!(
            p.reason.contains("pack") && p.reason.contains("4096 MiB"),
            "{}",
            p.reason
        );
        // A VM that does not fit on h1 goes to the next tightest host.
        let p = place(&env, &v, &req(vm("v", 2, 10000), &["h1", "h2", "h3"], &[])).unwrap();
        assert_eq!(p.host, "h3");
    }

    #[test]
    fn ties_are_broken_by_host_id_whatever_the_input_order() {
        let hosts = vec![
            host("hb", 8, 8192),
            host("hc", 8, 8192),
            host("ha", 8, 8192),
        ];
        for order in [["hb", "hc", "ha"], ["ha", "hb", "hc"], ["hc", "ha", "hb"]] {
            let mut hs = hosts.clone();
            hs.reverse();
            let v = view(hs, vec![]);
            let p = place(&env_with(&[]), &v, &req(vm("v", 1, 1024), &order, &[])).unwrap();
            assert_eq!(p.host, "ha");
            let p = place(
                &env_with(&[("strategy", "pack")]),
                &v,
                &req(vm("v", 1, 1024), &order, &[]),
            )
            .unwrap();
            assert_eq!(p.host, "ha");
        }
    }

    #[test]
    fn affinity_bonus_can_outweigh_free_memory() {
        let hosts = vec![host("h1", 16, 12288), host("h2", 16, 16384)];
        let mut v = vm("v", 1, 1024);
        v.constraints.affinity = vec!["friend".into()];
        let cv = view(hosts.clone(), vec![vm_on("friend", 1, 1024, "h1")]);
        // h1: 11264 + 4096 = 15360 > h2: 15360? equal -> id tie-break picks h1.
        let p = place(&env_with(&[]), &cv, &req(v.clone(), &["h1", "h2"], &[])).unwrap();
        assert_eq!(p.host, "h1");
        assert!(
            p.reason.contains("affinity bonus") && p.reason.contains("friend"),
            "{}",
            p.reason
        );
        // A smaller bonus does not.
        let p = place(
            &env_with(&[("affinity-bonus-mib", "1000")]),
            &cv,
            &req(v.clone(), &["h1", "h2"], &[]),
        )
        .unwrap();
        assert_eq!(p.host, "h2");
        // A stopped affinity VM gives no bonus.
        let mut stopped = vm_on("friend", 1, 1024, "h1");
        stopped.state = VmState::Stopped;
        let cv = view(hosts, vec![stopped]);
        let p = place(&env_with(&[]), &cv, &req(v, &["h1", "h2"], &[])).unwrap();
        assert_eq!(p.host, "h2");
    }

    #[test]
    fn affinity_bonus_also_applies_with_pack() {
        let hosts = vec![host("h1", 16, 8192), host("h2", 16, 10240)];
        let mut v = vm("v", 1, 1024);
        v.constraints.affinity = vec!["friend".into()];
        let cv = view(hosts, vec![vm_on("friend", 1, 1024, "h2")]);
        let p = place(
            &env_with(&[("strategy", "pack")]),
            &cv,
            &req(v, &["h1", "h2"], &[]),
        )
        .unwrap();
        assert_eq!(p.host, "h2");
    }

    #[test]
    fn defensive_checks_refuse_bad_eligible_hosts() {
        let mut degraded = host("h1", 16, 60000);
        degraded.health = HostHealth::Degraded;
        let mut cordoned = host("h2", 16, 60000);
        cordoned.cordoned = true;
        let small = host("h3", 16, 1000);
        let mut unlabelled = host("h4", 16, 60000);
        unlabelled.labels = vec![label("ssd", "no")];
        let mut anti = host("h5", 16, 60000);
        anti.labels = vec![label("ssd", "yes")];
        let mut good = host("h6", 16, 4096);
        good.labels = vec![label("ssd", "yes")];
        let cv = view(
            vec![degraded, cordoned, small, unlabelled, anti, good],
            vec![vm_on("enemy", 1, 1024, "h5")],
        );
        let mut v = vm("v", 2, 2048);
        v.constraints.anti_affinity = vec!["enemy".into()];
        v.constraints.required_labels = vec![label("ssd", "yes")];
        let all = ["h1", "h2", "h3", "h4", "h5", "h6", "ghost"];
        let p = place(&env_with(&[]), &cv, &req(v.clone(), &all, &[])).unwrap();
        assert_eq!(p.host, "h6");
        let e = place(&env_with(&[]), &cv, &req(v, &all[..5], &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSolution);
        for needle in [
            "h1: health is degraded",
            "h2: cordoned",
            "h3: not enough",
            "h4: lacks required label ssd=yes",
            "h5: runs anti-affine VM enemy",
        ] {
            assert!(
                e.message.contains(needle),
                "{needle:?} missing from {}",
                e.message
            );
        }
    }

    #[test]
    fn pinned_hosts_restrict_the_choice() {
        let cv = view(three_hosts(), vec![]);
        let mut v = vm("v", 1, 1024);
        v.constraints.pinned_hosts = vec!["h1".into()];
        let p = place(&env_with(&[]), &cv, &req(v, &["h1", "h2", "h3"], &[])).unwrap();
        assert_eq!(p.host, "h1");
    }

    #[test]
    fn no_eligible_host_is_no_solution() {
        let cv = view(three_hosts(), vec![]);
        let e = place(&env_with(&[]), &cv, &req(vm("v", 1, 1024), &[], &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSolution);
        assert!(
            e.message.contains("eligible-hosts list is empty"),
            "{}",
            e.message
        );
        assert!(e.message.contains("VM v"));
    }

    #[test]
    fn empty_view_and_unknown_ids_are_no_solution() {
        let e = place(
            &env_with(&[]),
            &ClusterView::default(),
            &req(vm("v", 1, 1), &["h1"], &[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSolution);
        assert!(
            e.message.contains("h1: not in the cluster view"),
            "{}",
            e.message
        );
    }

    #[test]
    fn duplicate_eligible_ids_are_harmless() {
        let cv = view(three_hosts(), vec![]);
        let p = place(
            &env_with(&[]),
            &cv,
            &req(vm("v", 1, 1024), &["h1", "h1", "h3", "h3"], &[]),
        )
        .unwrap();
        assert_eq!(p.host, "h3");
    }

    #[test]
    fn bad_strategy_is_bad_settings() {
        let cv = view(three_hosts(), vec![]);
        let e = place(
            &env_with(&[("strategy", "fastest")]),
            &cv,
            &req(vm("v", 1, 1), &["h1"], &[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("strategy"));
    }

    #[test]
    fn non_ha_vm_never_gets_a_passive_host() {
        let cv = view(three_hosts(), vec![]);
        let p = place(
            &env_with(&[]),
            &cv,
            &req(vm("v", 1, 1024), &["h1", "h2"], &["h3"]),
        )
        .unwrap();
        assert_eq!(p.passive_host, None);
    }

    #[test]
    fn ha_vm_gets_a_distinct_passive_host_scored_the_same_way() {
        let cv = view(three_hosts(), vec![]);
        let mut v = vm("v", 2, 4096);
        v.ha_enabled = true;
        let p = place(
            &env_with(&[]),
            &cv,
            &req(v, &["h1", "h2", "h3"], &["h1", "h2", "h3"]),
        )
        .unwrap();
        assert_eq!(p.host, "h2");
        assert_eq!(p.passive_host.as_deref(), Some("h3"));
        assert!(
            p.reason
                .contains("passive host h3: most free memory after placement: 8192 MiB"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn ha_vm_falls_back_to_next_active_host_to_free_the_only_passive() {
        let cv = view(three_hosts(), vec![]);
        let mut v = vm("v", 2, 4096);
        v.ha_enabled = true;
        // h2 is the best active host but also the only passive candidate.
        let p = place(&env_with(&[]), &cv, &req(v, &["h1", "h2", "h3"], &["h2"])).unwrap();
        assert_eq!(p.host, "h3");
        assert_eq!(p.passive_host.as_deref(), Some("h2"));
    }

    #[test]
    fn ha_vm_without_valid_passive_is_no_solution() {
        let mut small = host("h3", 16, 1024);
        small.name = "small".into();
        let cv = view(
            vec![host("h1", 16, 8192), host("h2", 16, 16384), small],
            vec![],
        );
        let mut v = vm("v", 2, 4096);
        v.ha_enabled = true;
        let e = place(&env_with(&[]), &cv, &req(v.clone(), &["h1", "h2"], &["h3"])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSolution);
        assert!(
            e.message.contains("passive") && e.message.contains("h3: not enough"),
            "{}",
            e.message
        );

        let e = place(&env_with(&[]), &cv, &req(v.clone(), &["h2"], &["h2"])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSolution);
        assert!(e.message.contains("must differ"), "{}", e.message);

        let e = place(&env_with(&[]), &cv, &req(v, &["h2"], &[])).unwrap_err();
        assert!(
            e.message.contains("eligible-passive-hosts list is empty"),
            "{}",
            e.message
        );
    }

    #[test]
    fn passive_host_respects_anti_affinity() {
        let cv = view(three_hosts(), vec![vm_on("enemy", 1, 1, "h3")]);
        let mut v = vm("v", 2, 4096);
        v.ha_enabled = true;
        v.constraints.anti_affinity = vec!["enemy".into()];
        let p = place(
            &env_with(&[]),
            &cv,
            &req(v, &["h1", "h2"], &["h1", "h2", "h3"]),
        )
        .unwrap();
        assert_eq!(p.host, "h2");
        assert_eq!(p.passive_host.as_deref(), Some("h1"));
    }

    #[test]
    fn long_ids_keep_reasons_within_host_limits() {
        let cv = view(
            three_hosts(),
            vec![
                vm_on(&"f".repeat(3000), 1, 1, "h1"),
                vm_on(&"g".repeat(3000), 1, 1, "h1"),
            ],
        );
        let mut v = vm("v", 1, 1024);
        v.ha_enabled = true;
        v.constraints.affinity = vec!["f".repeat(3000), "g".repeat(3000)];
        let p = place(
            &env_with(&[("affinity-bonus-mib", "100000")]),
            &cv,
            &req(v, &["h1", "h2"], &["h1", "h2"]),
        )
        .unwrap();
        assert_eq!(p.host, "h1");
        assert!(p.reason.len() <= crate::constraints::MAX_TEXT);
        let ghosts: Vec<String> = (0..500).map(|i| format!("ghost-host-{i:04}")).collect();
        let refs: Vec<&str> = ghosts.iter().map(String::as_str).collect();
        let e = place(&env_with(&[]), &cv, &req(vm("v", 1, 1), &refs, &[])).unwrap_err();
        assert!(e.message.len() <= crate::constraints::MAX_TEXT);
    }

    #[test]
    fn equal_inputs_give_equal_outputs() {
        let cv = view(three_hosts(), vec![]);
        let mut v = vm("v", 2, 4096);
        v.ha_enabled = true;
        let r = req(v, &["h3", "h1", "h2"], &["h2", "h3", "h1"]);
        let a = place(&env_with(&[]), &cv, &r).unwrap();
        for _ in 0..5 {
            assert_eq!(place(&env_with(&[]), &cv, &r).unwrap(), a);
        }
    }
}
