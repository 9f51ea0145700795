//! Validation of plugin answers before the host acts on them. Each rule
//! returns a reason naming the offending item; an answer that breaks any rule
//! is refused, and the host falls back to the native default.
//!
//! One module per world: [`scheduler`] (placements and rebalance moves),
//! [`ha`] (HA actions, also those of the SHA plugin), [`install`] (install
//! plans, with [`cloud_config`] for user-data and vendor-data and [`yaml`]
//! for the strict YAML reader). docs/plugins.md lists every rule.

mod cloud_config;
mod ha;
mod install;
mod scheduler;
pub mod yaml;

use crate::decision::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::*;
use std::collections::HashMap;

pub use nasvisor_plugin_sdk::limits::{MAX_ACTIONS, MAX_HOLD_MS, MAX_SEED_BYTES, MAX_TEXT};

/// Checks `output` for `input`.
pub fn validate(input: &DecisionInput, output: &DecisionOutput) -> Result<(), String> {
    match (input, output) {
        (DecisionInput::Place { view, request }, DecisionOutput::Placement(p)) => {
            scheduler::placement(view, request, p)
        }
        (DecisionInput::Rebalance { view }, DecisionOutput::Moves(m)) => scheduler::moves(view, m),
        (DecisionInput::React { view, .. }, DecisionOutput::Actions(a))
        | (DecisionInput::OnStateChange { view, .. }, DecisionOutput::Actions(a)) => {
            ha::actions(view, a)
        }
        (DecisionInput::CheckSetup { .. }, DecisionOutput::SetupCheck(c)) => setup_check(c),
        (DecisionInput::ParseStatus { .. }, DecisionOutput::PairState(s)) => pair_state(s),
        (
            DecisionInput::PlanInstall {
                image,
                request,
                pool_free_bytes,
            },
            DecisionOutput::Plan(p),
        ) => install::plan(image, request, *pool_free_bytes, p),
        (i, _) => Err(format!("answer of the wrong kind for {}", i.function())),
    }
}

fn text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!(
            "{what} is {} bytes long (at most {MAX_TEXT})",
            s.len()
        ));
    }
    Ok(())
}

/// The host `host` of the view, which must be healthy.
fn usable_target<'v>(
    view: &'v ClusterView,
    host: &str,
    what: &str,
) -> Result<&'v HostInfo, String> {
    let h = view
        .host(host)
        .ok_or_else(|| format!("{what} names unknown host {host:?}"))?;
    if h.health != HostHealth::Healthy {
        return Err(format!(
            "{what} targets host {host:?} which is {}",
            h.health.as_str()
        ));
    }
    Ok(h)
}

/// `s` quoted for a message, cut to 80 characters.
fn show(s: &str) -> String {
    if s.chars().count() > 80 {
        let short: String = s.chars().take(77).collect();
        format!("{short:?}...")
    } else {
        format!("{s:?}")
    }
}

fn fmt_resources(r: &Resources) -> String {
    format!(
        "{} vCPU / {} MiB / {} GiB",
        r.vcpus, r.memory_mib, r.storage_gib
    )
}

/// Free resources per host while the actions of one answer are checked in
/// order: every VM an answer puts on a host takes its resources there, so
/// two VMs cannot both be given room that only one of them fits in.
struct Ledger<'v> {
    free: HashMap<&'v str, Resources>,
}

impl<'v> Ledger<'v> {
    fn new(view: &'v ClusterView) -> Ledger<'v> {
        let mut free = HashMap::new();
        for h in &view.hosts {
            free.entry(h.id.as_str()).or_insert(h.free);
        }
        Ledger { free }
    }

    /// `vm` takes its resources on `host`.
    fn take(&mut self, host: &str, vm: &VmInfo, what: &str) -> Result<(), String> {
        let Some(f) = self.free.get_mut(host) else {
            return Err(format!("{what} names unknown host {host:?}"));
        };
        let need = &vm.resources;
        if !f.covers(need) {
            return Err(format!(
                "{what}: target {host:?} has {} free (after the earlier actions of this answer) and VM {:?} needs {}",
                fmt_resources(f),
                vm.id,
                fmt_resources(need)
            ));
        }
        f.vcpus -= need.vcpus;
        f.memory_mib -= need.memory_mib;
        f.storage_gib -= need.storage_gib;
        Ok(())
    }

    /// `vm` leaves `host`, giving its resources back.
    fn give(&mut self, host: &str, vm: &VmInfo) {
        if let Some(f) = self.free.get_mut(host) {
            f.vcpus = f.vcpus.saturating_add(vm.resources.vcpus);
            f.memory_mib = f.memory_mib.saturating_add(vm.resources.memory_mib);
            f.storage_gib = f.storage_gib.saturating_add(vm.resources.storage_gib);
        }
    }
}

/// Checks `vm`'s hard constraints on `host`: pinned hosts, required labels,
/// and no VM of its anti-affinity list on the host, where `runs_on(vm)` says
/// where a VM is active.
fn hard_constraints<'a>(
    host: &HostInfo,
    vm: &VmInfo,
    runs_on: impl Fn(&str) -> Option<&'a str>,
    what: &str,
) -> Result<(), String> {
    let c = &vm.constraints;
    if !c.pinned_hosts.is_empty() && !c.pinned_hosts.contains(&host.id) {
        return Err(format!(
            "{what}: VM {:?} is pinned to {:?}, not to {:?}",
            vm.id, c.pinned_hosts, host.id
        ));
    }
    if let Some(l) = c.required_labels.iter().find(|l| !host.labels.contains(l)) {
        return Err(format!(
            "{what}: host {:?} lacks the label {}={} that VM {:?} requires",
            host.id, l.key, l.value, vm.id
        ));
    }
    if let Some(a) = c
        .anti_affinity
        .iter()
        .find(|a| **a != vm.id && runs_on(a) == Some(host.id.as_str()))
    {
        return Err(format!(
            "{what}: host {:?} runs VM {a:?}, which VM {:?} must not share a host with",
            host.id, vm.id
        ));
    }
    Ok(())
}

fn setup_check(c: &SetupCheck) -> Result<(), String> {
    if c.problems.len() > MAX_ACTIONS {
        return Err(format!(
            "{} problems (at most {MAX_ACTIONS})",
            c.problems.len()
        ));
    }
    if c.ok != c.problems.is_empty() {
        return Err(format!(
            "ok is {} but {} problems are listed",
            c.ok,
            c.problems.len()
        ));
    }
    for p in &c.problems {
        text("problem code", &p.code)?;
        text("problem message", &p.message)?;
    }
    if let Some(s) = &c.state {
        pair_state(s)?;
    }
    Ok(())
}

fn pair_state(s: &ShaPairState) -> Result<(), String> {
    text("resource-name", &s.resource_name)?;
    if s.sync_percent > 100 {
        return Err(format!("sync-percent {} is over 100", s.sync_percent));
    }
    Ok(())
}

#[cfg(test)]
mod fixtures {
    use nasvisor_plugin_sdk::prelude::*;

    /// A healthy host with 8 vCPUs and `free_mib` of free memory.
    pub fn host(id: &str, free_mib: u64) -> HostInfo {
        HostInfo {
            id: id.into(),
            name: id.into(),
            capacity: Resources {
                vcpus: 8,
                memory_mib: 65_536,
                storage_gib: 1_000,
            },
            free: Resources {
                vcpus: 8,
                memory_mib: free_mib,
                storage_gib: 1_000,
            },
            health: HostHealth::Healthy,
            ..Default::default()
        }
    }

    /// A host in `health`.
    pub fn host_in(id: &str, health: HostHealth) -> HostInfo {
        HostInfo {
            health,
            ..host(id, 65_536)
        }
    }

    /// A running non-HA VM of 1 vCPU and `mib` of memory on `host`.
    pub fn vm(id: &str, host: &str, mib: u64) -> VmInfo {
        VmInfo {
            id: id.into(),
            name: id.into(),
            resources: Resources {
                vcpus: 1,
                memory_mib: mib,
                storage_gib: 10,
            },
            state: VmState::Running,
            host: Some(host.into()),
            ..Default::default()
        }
    }

    /// A running HA VM active on `active`, reserved on `passive`.
    pub fn ha_vm(id: &str, active: &str, passive: &str, mib: u64) -> VmInfo {
        VmInfo {
            ha_enabled: true,
            ha: Some(HaAssignment {
                active: active.into(),
                passive: passive.into(),
            }),
            ..vm(id, active, mib)
        }
    }

    pub fn view(hosts: Vec<HostInfo>, vms: Vec<VmInfo>) -> ClusterView {
        ClusterView {
            hosts,
            vms,
            has_quorum: true,
            now_ms: 0,
        }
    }

    pub fn mv(vm: &str, target: &str) -> VmMove {
        VmMove {
            vm: vm.into(),
            target: target.into(),
            reason: String::new(),
        }
    }

    pub fn failover(vm: &str, target: &str) -> HaAction {
        HaAction::Failover(mv(vm, target))
    }

    pub fn switchover(vm: &str, target: &str) -> HaAction {
        HaAction::Switchover(mv(vm, target))
    }

    pub fn restart(vm: &str) -> HaAction {
        HaAction::Restart(VmRestart {
            vm: vm.into(),
            delay_ms: 0,
            reason: String::new(),
        })
    }

    pub fn fence(host: &str) -> HaAction {
        HaAction::Fence(FenceHost {
            host: host.into(),
            reason: String::new(),
        })
    }
}
