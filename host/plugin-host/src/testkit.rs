//! Helpers for tests and benchmarks: where the built plugins are, and
//! synthetic cluster views of a given size.

use crate::decision::DecisionInput;
use nasvisor_plugin_sdk::prelude::*;
use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directory of the built plugin packages: `$NASVISOR_PLUGIN_DIR`, else
/// `<workspace>/target/plugins`. Panics with a hint when plugins are missing.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("NASVISOR_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/plugins"));
    assert!(
        dir.join("nasvisor-scheduler.nvplugin").is_file(),
        "built plugins not found in {}: run scripts/build.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

/// Directory of the built adversarial test plugins:
/// `$NASVISOR_TEST_PLUGIN_DIR`, else `<workspace>/target/test-plugins`.
pub fn test_plugin_dir() -> PathBuf {
    std::env::var_os("NASVISOR_TEST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-plugins"))
}

/// Path of a built plugin file (`name.ext`) in the plugin or test-plugin dir.
pub fn plugin_path(name: &str, ext: &str) -> PathBuf {
    let file = format!("{name}.{ext}");
    let p = plugin_dir().join(&file);
    if p.is_file() {
        return p;
    }
    let t = test_plugin_dir().join(&file);
    assert!(
        t.is_file(),
        "{file} not found in {} or {}: run scripts/build.sh first",
        plugin_dir().display(),
        test_plugin_dir().display()
    );
    t
}

/// Bytes of a built plugin package, e.g. `plugin_bytes("nasvisor-scheduler")`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let p = plugin_path(name, "nvplugin");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Bytes of a built bare component.
pub fn component_bytes(name: &str) -> Vec<u8> {
    let p = plugin_path(name, "wasm");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The key the build signed the plugins with (`target/keys/build.key`).
pub fn build_signing_key() -> nasvisor_signing::SigningKey {
    let p = workspace_root().join("target/keys/build.key");
    crate::package::read_signing_key(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A view of `hosts` healthy hosts and `vms` running VMs spread over them.
pub fn cluster_view(hosts: usize, vms: usize) -> ClusterView {
    let hosts_v: Vec<HostInfo> = (0..hosts)
        .map(|i| HostInfo {
            id: format!("host-{i}"),
            name: format!("nas{i}"),
            capacity: Resources {
                vcpus: 64,
                memory_mib: 262_144,
                storage_gib: 16_000,
            },
            free: Resources {
                vcpus: 64 - (i as u32 % 8),
                memory_mib: 262_144 - (i as u64 * 7_919) % 65_536,
                storage_gib: 16_000 - i as u64 * 10,
            },
            health: HostHealth::Healthy,
            labels: vec![Label {
                key: "rack".into(),
                value: format!("r{}", i % 2),
            }],
            ..Default::default()
        })
        .collect();
    let vms_v: Vec<VmInfo> = (0..vms)
        .map(|i| VmInfo {
            id: format!("vm-{i:04}"),
            name: format!("guest-{i}"),
            resources: Resources {
                vcpus: 1 + (i as u32 % 4),
                memory_mib: 512 * (1 + (i as u64 % 8)),
                storage_gib: 20,
            },
            state: VmState::Running,
            host: Some(format!("host-{}", i % hosts.max(1))),
            ha_enabled: i % 5 == 0,
            ha: (i % 5 == 0).then(|| HaAssignment {
                active: format!("host-{}", i % hosts.max(1)),
                passive: format!("host-{}", (i + 1) % hosts.max(1)),
            }),
            constraints: PlacementConstraints {
                anti_affinity: if i % 10 == 0 {
                    vec![format!("vm-{:04}", (i + 1) % vms.max(1))]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        })
        .collect();
    ClusterView {
        hosts: hosts_v,
        vms: vms_v,
        has_quorum: true,
        now_ms: 1_700_000_000_000,
    }
}

/// A first power-on of a new 2 vCPU / 4 GiB VM on `view`, every host eligible.
pub fn place_input(view: ClusterView, vm_name: &str, ha: bool) -> DecisionInput {
    let eligible: Vec<String> = view.hosts.iter().map(|h| h.id.clone()).collect();
    DecisionInput::Place {
        request: PlacementRequest {
            vm: VmInfo {
                id: "vm-new".into(),
                name: vm_name.into(),
                resources: Resources {
                    vcpus: 2,
                    memory_mib: 4096,
                    storage_gib: 40,
                },
                ha_enabled: ha,
                ..Default::default()
            },
            eligible_passive_hosts: if ha { eligible.clone() } else { vec![] },
            eligible_hosts: eligible,
        },
        view,
    }
}
