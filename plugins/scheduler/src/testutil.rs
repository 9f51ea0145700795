//! Fixture builders shared by the scheduler's unit tests.

use nasvisor_plugin_sdk::prelude::*;

/// An env with these settings.
pub fn env_with(settings: &[(&str, &str)]) -> StaticEnv {
    StaticEnv::with_settings(settings)
}

/// A healthy host with `vcpus` free vCPUs and `memory_mib` free memory, out of
/// a capacity of 64 vCPUs / 65536 MiB / 10000 GiB; 1000 GiB storage free.
pub fn host(id: &str, vcpus: u32, memory_mib: u64) -> HostInfo {
    HostInfo {
        id: id.into(),
        name: format!("name-{id}"),
        capacity: Resources {
            vcpus: 64,
            memory_mib: 65536,
            storage_gib: 10000,
        },
        free: Resources {
            vcpus,
            memory_mib,
            storage_gib: 1000,
        },
        ..Default::default()
    }
}

/// A healthy host with `cap_mib` memory capacity of which `used_mib` is used.
pub fn host_used(id: &str, cap_mib: u64, used_mib: u64) -> HostInfo {
    let mut h = host(id, 64, cap_mib - used_mib);
    h.capacity.memory_mib = cap_mib;
    h
}

/// A stopped, unplaced VM needing `vcpus` vCPUs, `memory_mib` MiB and 10 GiB.
pub fn vm(id: &str, vcpus: u32, memory_mib: u64) -> VmInfo {
    VmInfo {
        id: id.into(),
        name: format!("name-{id}"),
        resources: Resources {
            vcpus,
            memory_mib,
            storage_gib: 10,
        },
        ..Default::default()
    }
}

/// A VM running on `host`.
pub fn vm_on(id: &str, vcpus: u32, memory_mib: u64, host: &str) -> VmInfo {
    VmInfo {
        state: VmState::Running,
        host: Some(host.into()),
        ..vm(id, vcpus, memory_mib)
    }
}

/// A label.
pub fn label(k: &str, v: &str) -> Label {
    Label {
        key: k.into(),
        value: v.into(),
    }
}

/// A view with quorum.
pub fn view(hosts: Vec<HostInfo>, vms: Vec<VmInfo>) -> ClusterView {
    ClusterView {
        hosts,
        vms,
        has_quorum: true,
        now_ms: 1_700_000_000_000,
    }
}

/// Host ids as owned strings.
pub fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
