//! # nasvisor's default scheduler policy
//!
//! Placement happens in two stages (as in Incus): the host service filters the
//! eligible hosts deterministically, then this policy chooses among them.
//!
//! - [`place`](SchedulerPolicy::place) (see [`place`]) re-checks the hard
//!   constraints defensively, then scores the remaining hosts by the free
//!   memory left after the placement (`spread`: most, `pack`: least), with a
//!   soft bonus for hosts that run the VM's affinity VMs, ties broken by host
//!   id. An HA VM also gets a passive host, different from the active one.
//! - [`rebalance`](SchedulerPolicy::rebalance) (see [`rebalance`]) proposes a
//!   few live migrations of small non-HA VMs from the most to the least loaded
//!   hosts while their memory use differs by more than a threshold.
//!
//! The settings are documented in [`settings`]. The policy is a pure function
//! of its inputs and its settings: equal inputs give equal outputs.

pub mod constraints;
pub mod place;
pub mod rebalance;
pub mod settings;
#[cfg(test)]
mod testutil;

use nasvisor_plugin_sdk::prelude::*;

/// The default scheduler: spread (or pack) by free memory, soft affinity,
/// hard constraints re-checked; threshold-driven rebalancing.
#[derive(Debug, Default)]
pub struct DefaultScheduler;

impl SchedulerPolicy for DefaultScheduler {
    /// See [`place::place`].
    fn place(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        req: &PlacementRequest,
    ) -> Result<Placement, PluginError> {
        place::place(env, view, req)
    }

    /// See [`rebalance::rebalance`].
    fn rebalance(
        &self,
        env: &dyn Env,
        view: &ClusterView,
    ) -> Result<Vec<RebalanceMove>, PluginError> {
        rebalance::rebalance(env, view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn trait_methods_delegate_to_the_modules() {
        let s = DefaultScheduler;
        let v = view(vec![host("h1", 4, 4096), host("h2", 4, 8192)], vec![]);
        let req = PlacementRequest {
            vm: vm("v", 1, 1024),
            eligible_hosts: ids(&["h1", "h2"]),
            eligible_passive_hosts: vec![],
        };
        assert_eq!(s.place(&env_with(&[]), &v, &req).unwrap().host, "h2");
        assert!(s.rebalance(&env_with(&[]), &v).unwrap().is_empty());
    }

    #[test]
    fn results_round_trip_through_json() {
        let s = DefaultScheduler;
        let v = view(vec![host("h1", 4, 4096)], vec![]);
        let req = PlacementRequest {
            vm: vm("v", 1, 1024),
            eligible_hosts: ids(&["h1"]),
            eligible_passive_hosts: vec![],
        };
        let p = s.place(&env_with(&[]), &v, &req).unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Placement>(&j).unwrap(), p);
        assert!(j.contains("\"passive-host\":null"), "{j}");
    }
}

nasvisor_plugin_sdk::export_scheduler!(DefaultScheduler);

/// The component's allocator: one instance serves one decision, so a bump
/// allocator is enough (see `OneShotAlloc`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: nasvisor_plugin_sdk::guest::OneShotAlloc =
    nasvisor_plugin_sdk::guest::OneShotAlloc::new();
