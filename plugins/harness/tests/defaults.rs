//! The default plugins, natively and as their built components, against the
//! scenario files under `plugins/harness/scenarios/<world>/`.

use nasvisor_plugin_harness::{run, NativePolicies};
use nasvisor_plugin_host::testkit::plugin_path;
use std::path::PathBuf;

fn scenarios(world: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(world)
}

fn check(plugin: &str, world: &str) {
    let report = run(
        plugin_path(plugin, "nvplugin"),
        NativePolicies::defaults(),
        scenarios(world),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    report.assert_ok();
}

#[test]
fn scheduler_scenarios() {
    check("nasvisor-scheduler", "scheduler");
}

#[test]
fn ha_policy_scenarios() {
    check("nasvisor-ha-policy", "ha-policy");
}

#[test]
fn sha_scenarios() {
    check("nasvisor-sha", "sha");
}

#[test]
fn os_installer_scenarios() {
    check("nasvisor-os-installer", "os-installer");
}

#[test]
fn a_component_that_disagrees_with_its_native_build_is_reported() {
    // The evil scheduler places on the first eligible host; the default
    // spreads by free memory. Comparing one with the other must fail.
    let report = run(
        plugin_path("nasvisor-test-evil", "nvplugin"),
        NativePolicies::defaults(),
        scenarios("scheduler"),
    )
    .unwrap();
    let failed: Vec<_> = report.failed().collect();
    assert!(!failed.is_empty());
    assert!(failed.iter().any(|r| r
        .failures
        .iter()
        .any(|f| f.contains("native and component disagree"))));
}

#[test]
fn a_broken_scenario_file_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("typo.json"), r#"{"inptu": {}}"#).unwrap();
    let e = run(
        plugin_path("nasvisor-scheduler", "nvplugin"),
        NativePolicies::defaults(),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("typo.json") && e.contains("inptu"), "{e}");
}
