//! # nasvisor's default HA policy
//!
//! [`react`](HaPolicy::react) turns a batch of cluster events (missed
//! heartbeats, degraded/fenced/recovered hosts, crashed VMs, quorum and SHA
//! changes) into actions: fence, failover, switchover, restart, hold, notify.
//! The rules are documented in [`react`], the answer's order and the
//! one-action-per-VM rule in [`plan`], and the settings in [`settings`].
//!
//! Safety first: nothing is fenced, failed over, switched over or restarted
//! without quorum; a VM fails over only after its host was fenced (or after it
//! crashed on a reachable host); no VM is moved while its host's SHA pair
//! switches over or is split. The answer is a pure function of the view, the
//! events and the settings.

pub mod plan;
pub mod react;
pub mod settings;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use nasvisor_plugin_sdk::prelude::*;

/// The default HA policy. See [`react::react`].
#[derive(Debug, Default)]
pub struct DefaultHaPolicy;

impl HaPolicy for DefaultHaPolicy {
    /// See [`react::react`].
    fn react(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        events: &[Event],
    ) -> Result<Vec<HaAction>, PluginError> {
        react::react(env, view, events)
    }
}

nasvisor_plugin_sdk::export_ha_policy!(DefaultHaPolicy);
