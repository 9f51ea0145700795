//! Fixture builders shared by the HA policy's unit tests.

use nasvisor_plugin_sdk::prelude::*;

/// An env with these settings.
pub fn env_with(settings: &[(&str, &str)]) -> StaticEnv {
    StaticEnv::with_settings(settings)
}

/// A healthy host with `free_mib` free memory (8 vCPUs, 500 GiB free).
pub fn host(id: &str, free_mib: u64) -> HostInfo {
    HostInfo {
        id: id.into(),
        capacity: Resources {
            vcpus: 16,
            memory_mib: 65536,
            storage_gib: 1000,
        },
        free: Resources {
            vcpus: 8,
            memory_mib: free_mib,
            storage_gib: 500,
        },
        ..Default::default()
    }
}

/// A host with the given health.
pub fn host_in(id: &str, health: HostHealth) -> HostInfo {
    HostInfo {
        health,
        ..host(id, 32768)
    }
}

/// A running non-HA VM on `host` (1 vCPU, 1024 MiB, 10 GiB).
pub fn vm(id: &str, host: &str) -> VmInfo {
    VmInfo {
        id: id.into(),
        name: format!("name-{id}"),
        resources: Resources {
            vcpus: 1,
            memory_mib: 1024,
            storage_gib: 10,
        },
        state: VmState::Running,
        host: Some(host.into()),
        ..Default::default()
    }
}

/// A running HA VM active on `active`, passive on `passive`.
pub fn ha_vm(id: &str, active: &str, passive: &str) -> VmInfo {
    VmInfo {
        ha_enabled: true,
        ha: Some(HaAssignment {
            active: active.into(),
            passive: passive.into(),
        }),
        ..vm(id, active)
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

/// Three healthy hosts h1, h2, h3 with 32 GiB free.
pub fn three_hosts() -> Vec<HostInfo> {
    vec![host("h1", 32768), host("h2", 32768), host("h3", 32768)]
}

/// A vm-fault event payload.
pub fn fault(vm: &str, host: &str, recent: u32) -> VmFault {
    VmFault {
        vm: vm.into(),
        host: host.into(),
        recent_faults: recent,
        detail: "qemu exited with signal 9".into(),
    }
}

/// An SHA state with the given flags.
pub fn sha_state(switching: bool, split_brain: bool) -> ShaPairState {
    ShaPairState {
        resource_name: "r0".into(),
        local_role: ShaRole::Primary,
        peer_role: ShaRole::Secondary,
        peer_connected: true,
        replication: ReplicationState::InSync,
        sync_percent: 100,
        split_brain,
        switching,
    }
}

/// A compact, comparable rendering of actions.
pub fn brief(actions: &[HaAction]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            HaAction::Fence(f) => format!("fence {}", f.host),
            HaAction::Failover(m) => format!("failover {} -> {}", m.vm, m.target),
            HaAction::Switchover(m) => format!("switchover {} -> {}", m.vm, m.target),
            HaAction::Restart(r) => format!("restart {} after {}", r.vm, r.delay_ms),
            HaAction::Hold(h) => format!("hold {}", h.delay_ms),
            HaAction::Notify(n) => format!("notify {:?}", n.severity),
        })
        .collect()
}

/// The messages of all notices.
pub fn notices(actions: &[HaAction]) -> Vec<(Severity, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            HaAction::Notify(n) => Some((n.severity, n.message.clone())),
            _ => None,
        })
        .collect()
}

/// The actions without notices.
pub fn without_notices(actions: &[HaAction]) -> Vec<String> {
    brief(actions)
        .into_iter()
        .filter(|s| !s.starts_with("notify"))
        .collect()
}
