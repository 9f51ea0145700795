//! Hard placement constraints, checked defensively on top of the host's own
//! eligibility filter, and the soft-affinity lookup.

pub use nasvisor_plugin_sdk::limits::{clip, MAX_TEXT};
use nasvisor_plugin_sdk::prelude::*;

/// Where active VMs run: answers "is VM `vm` active on host `host`?".
///
/// `place` answers from the cluster view; `rebalance` from its simulated
/// state, where already-planned moves have been applied.
pub trait Occupancy {
    /// True when the VM with id `vm` is active (see [`VmState::is_active`]) on `host`.
    fn runs(&self, vm: &str, host: &str) -> bool;
}

impl Occupancy for ClusterView {
    fn runs(&self, vm: &str, host: &str) -> bool {
        self.vms
            .iter()
            .any(|v| v.id == vm && v.state.is_active() && v.host.as_deref() == Some(host))
    }
}

/// The WIT name of a host health value, for messages.
pub fn health_name(h: HostHealth) -> &'static str {
    h.as_str()
}

/// Format resources as `"2 vCPU / 4096 MiB / 20 GiB"`.
pub fn fmt_resources(r: &Resources) -> String {
    format!(
        "{} vCPU / {} MiB / {} GiB",
        r.vcpus, r.memory_mib, r.storage_gib
    )
}

/// Why `host` (with `free` resources left) cannot take `vm`, or `None` when it
/// can. Checks, in order: health is `healthy`, not cordoned, `free` covers the
/// VM's resources, the host is among the VM's pinned hosts (if any), the host
/// carries every required label, and no VM of the VM's anti-affinity list (other
/// than the VM itself) is active on the host.
pub fn rejection(
    host: &HostInfo,
    free: &Resources,
    vm: &VmInfo,
    occ: &dyn Occupancy,
) -> Option<String> {
    if host.health != HostHealth::Healthy {
        return Some(format!("health is {}", health_name(host.health)));
    }
    if host.cordoned {
        return Some("cordoned".into());
    }
    if !free.covers(&vm.resources) {
        return Some(format!(
            "not enough free resources (free {}, needs {})",
            fmt_resources(free),
            fmt_resources(&vm.resources)
        ));
    }
    let c = &vm.constraints;
    if !c.pinned_hosts.is_empty() && !c.pinned_hosts.contains(&host.id) {
        return Some("not one of the VM's pinned hosts".into());
    }
    if let Some(l) = c.required_labels.iter().find(|l| !host.labels.contains(l)) {
        return Some(format!("lacks required label {}={}", l.key, l.value));
    }
    if let Some(a) = c
        .anti_affinity
        .iter()
        .find(|a| **a != vm.id && occ.runs(a, &host.id))
    {
        return Some(format!("runs anti-affine VM {a}"));
    }
    None
}

/// The VMs of `vm`'s affinity list (other than itself) active on `host`,
/// sorted and deduplicated.
pub fn affine_vms_on<'a>(vm: &'a VmInfo, host: &str, occ: &dyn Occupancy) -> Vec<&'a str> {
    let mut out: Vec<&str> = vm
        .constraints
        .affinity
        .iter()
        .filter(|a| **a != vm.id && occ.runs(a, host))
        .map(String::as_str)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn clip_bounds_text() {
        assert_eq!(clip("abc".into()), "abc");
        let c = clip("ü".repeat(5000));
        assert!(c.len() <= MAX_TEXT && c.ends_with("..."));
        assert_eq!(clip("a".repeat(MAX_TEXT)).len(), MAX_TEXT);
    }

    #[test]
    fn healthy_roomy_host_is_accepted() {
        let h = host("h1", 8, 16384);
        let v = vm("v", 2, 4096);
        assert_eq!(
            rejection(&h, &h.free, &v, &view(vec![h.clone()], vec![])),
            None
        );
    }

    #[test]
    fn each_hard_constraint_rejects_with_a_reason() {
        let view0 = view(vec![], vec![]);
        let v = vm("v", 2, 4096);

        let mut h = host("h1", 8, 16384);
        h.health = HostHealth::Degraded;
        assert_eq!(
            rejection(&h, &h.free, &v, &view0).unwrap(),
            "health is degraded"
        );

        let mut h = host("h1", 8, 16384);
        h.cordoned = true;
        assert_eq!(rejection(&h, &h.free, &v, &view0).unwrap(), "cordoned");

        let h = host("h1", 1, 16384);
        assert!(rejection(&h, &h.free, &v, &view0)
            .unwrap()
            .contains("not enough free"));
        let h = host("h1", 8, 4095);
        assert!(rejection(&h, &h.free, &v, &view0)
            .unwrap()
            .contains("needs 2 vCPU / 4096 MiB"));

        let h = host("h1", 8, 16384);
        let mut pinned = v.clone();
        pinned.constraints.pinned_hosts = vec!["h2".into()];
        assert!(rejection(&h, &h.free, &pinned, &view0)
            .unwrap()
            .contains("pinned"));

        let mut labelled = v.clone();
        labelled.constraints.required_labels = vec![label("zone", "a")];
        assert!(rejection(&h, &h.free, &labelled, &view0)
            .unwrap()
            .contains("zone=a"));
        let mut h2 = h.clone();
        h2.labels = vec![label("zone", "b")];
        assert!(rejection(&h2, &h2.free, &labelled, &view0).is_some());
        h2.labels.push(label("zone", "a"));
        assert_eq!(rejection(&h2, &h2.free, &labelled, &view0), None);
    }

    #[test]
    fn anti_affinity_only_counts_active_vms_on_that_host() {
        let h = host("h1", 8, 16384);
        let mut v = vm("v", 1, 1024);
        v.constraints.anti_affinity = vec!["other".into(), "v".into()];
        let mut other = vm_on("other", 1, 1024, "h1");
        let occ = view(vec![h.clone()], vec![other.clone()]);
        assert_eq!(
            rejection(&h, &h.free, &v, &occ).unwrap(),
            "runs anti-affine VM other"
        );
        other.state = VmState::Stopped;
        let occ = view(vec![h.clone()], vec![other.clone()]);
        assert_eq!(rejection(&h, &h.free, &v, &occ), None);
        other.state = VmState::Running;
        other.host = Some("h2".into());
        let occ = view(vec![h.clone()], vec![other]);
        assert_eq!(rejection(&h, &h.free, &v, &occ), None);
    }

    #[test]
    fn affine_vms_are_sorted_and_deduplicated() {
        let mut v = vm("v", 1, 1024);
        v.constraints.affinity = vec!["b".into(), "a".into(), "b".into(), "v".into(), "c".into()];
        let occ = view(
            vec![],
            vec![
                vm_on("a", 1, 1, "h1"),
                vm_on("b", 1, 1, "h1"),
                vm_on("c", 1, 1, "h2"),
                vm_on("v", 1, 1, "h1"),
            ],
        );
        assert_eq!(affine_vms_on(&v, "h1", &occ), vec!["a", "b"]);
        assert_eq!(affine_vms_on(&v, "h2", &occ), vec!["c"]);
        assert!(affine_vms_on(&v, "h3", &occ).is_empty());
    }
}
