//! The sandbox against real components built from source (scripts/build.sh):
//! each adversarial behaviour is contained with the right error within its
//! deadline plus a small margin, and the next decision works.
//!
//! One file although over 700 lines: no fixture is shared (each test makes
//! its own runtime), but its timed tests must not overlap and the `TIMED`
//! lock keeps them apart within one binary only; a split would save no setup
//! time and add a test binary to build.

mod support;

use nasvisor_plugin_host::package::{generate_key, Manifest, Package};
use nasvisor_plugin_host::testkit::*;
use nasvisor_plugin_host::{
    invoke, CallError, DecisionInput, DecisionOutput, DecisionSource, LoadError, PolicyHost,
    Runtime, RuntimeConfig,
};
use nasvisor_plugin_sdk::World;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE_MS: u64 = 50;
/// Slack for instantiation, host-side lifting and a loaded CI machine.
const MARGIN: Duration = Duration::from_millis(60);

/// Timed tests run one at a time so that the other tests of this binary do
/// not compete with them for the machine's two cores.
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime(cfg: RuntimeConfig) -> Arc<Runtime> {
    let key = build_signing_key().verifying_key();
    Arc::new(Runtime::new(cfg, vec![key]).expect("runtime"))
}

fn default_runtime() -> Arc<Runtime> {
    runtime_with_deadline(DEADLINE_MS)
}

fn runtime_with_deadline(deadline_ms: u64) -> Arc<Runtime> {
    runtime(RuntimeConfig {
        deadline_ms,
        ..RuntimeConfig::default()
    })
}

/// Filling 64 MiB takes tens of milliseconds on a busy 2-core machine, so
/// the memory tests give the plugin a longer deadline: the memory cap, not
/// the clock, must stop it.
const MEMORY_TEST_DEADLINE_MS: u64 = 2_000;

fn evil(rt: &Runtime) -> nasvisor_plugin_host::LoadedPlugin {
    rt.load(
        &plugin_bytes("nasvisor-test-evil"),
        Some(World::Scheduler),
        vec![],
    )
    .expect("evil plugin loads")
}

fn place(name: &str) -> DecisionInput {
    place_input(cluster_view(3, 10), name, false)
}

fn placed_host(out: &DecisionOutput) -> &str {
    match out {
        DecisionOutput::Placement(p) => &p.host,
        other => panic!("not a placement: {other:?}"),
    }
}

/// Calls the evil plugin with `mode`, checks the error and the time it took
/// (at most the deadline plus a margin), then checks that the same plugin
/// answers a normal call.
fn contained(mode: &str, deadline_ms: u64, check: impl Fn(&CallError) -> bool) {
    let rt = runtime_with_deadline(deadline_ms);
    let p = evil(&rt);
    let _serial = timed();
    let t = Instant::now();
    let r = invoke(&rt, &p, &place(mode), 0);
    let took = t.elapsed();
    let err = r.expect_err(&format!("{mode} must fail"));
    assert!(check(&err), "{mode}: unexpected error {err}");
    assert!(
        took < Duration::from_millis(deadline_ms) + MARGIN,
        "{mode}: contained only after {took:?}"
    );
    let ok = invoke(&rt, &p, &place("fine"), 0).expect("next call works");
    assert_eq!(placed_host(ok.as_ref().unwrap()), "host-0");
}

#[test]
fn allocation_bomb_hits_the_memory_cap() {
    contained(
        "alloc-bomb",
        MEMORY_TEST_DEADLINE_MS,
        |e| matches!(e, CallError::MemoryLimit { limit, .. } if *limit == 64 << 20),
    );
}

#[test]
fn deep_recursion_is_a_stack_overflow_trap() {
    contained(
        "recurse",
        DEADLINE_MS,
        |e| matches!(e, CallError::Trap(m) if m.contains("stack overflow")),
    );
}

#[test]
fn panic_is_a_trap() {
    contained(
        "panic",
        DEADLINE_MS,
        |e| matches!(e, CallError::Trap(m) if m.contains("unreachable")),
    );
}

#[test]
fn a_lower_memory_cap_is_enforced() {
    let rt = runtime(RuntimeConfig {
        memory_limit_mib: 8,
        deadline_ms: MEMORY_TEST_DEADLINE_MS,
        ..RuntimeConfig::default()
    });
    let p = evil(&rt);
    let e = invoke(&rt, &p, &place("alloc-bomb"), 0).unwrap_err();
    assert!(
        matches!(e, CallError::MemoryLimit { limit, .. } if limit == 8 << 20),
        "{e}"
    );
}

#[test]
fn huge_and_invalid_outputs_fall_back_to_the_native_default() {
    let rt = runtime_with_deadline(MEMORY_TEST_DEADLINE_MS);
    let host = PolicyHost::new(rt.clone(), None);
    host.install(evil(&rt));
    let _serial = timed();
    for (mode, needle) in [
        ("huge-output", "more than max-transfer-kib (256 KiB)"),
        ("bad-host", "no-such-host"),
    ] {
        let t = Instant::now();
        let d = host.decide(place(mode));
        assert!(
            t.elapsed() < Duration::from_millis(MEMORY_TEST_DEADLINE_MS) + MARGIN,
            "{mode}: took {:?}",
            t.elapsed()
        );
        match &d.source {
            DecisionSource::Refused { reason, .. } => {
                assert!(reason.contains(needle), "{mode}: {reason}");
            }
            other => panic!("{mode}: expected a refusal, got {other:?}"),
        }
        // The native default spreads by free memory: host-0 has the most.
        let out = d.answer.expect("native default answers");
        assert!(matches!(out, DecisionOutput::Placement(_)));
    }
    let d = host.decide(place("fine"));
    assert!(
        matches!(d.source, DecisionSource::Plugin { .. }),
        "{:?}",
        d.source
    );
}

#[test]
fn log_flood_is_bounded_and_the_call_succeeds() {
    let rt = default_runtime();
    let p = evil(&rt);
    let out = invoke(&rt, &p, &place("log-flood"), 0).expect("call succeeds");
    assert!(matches!(out, Ok(DecisionOutput::Placement(ref pl)) if pl.reason == "flooded"));
}

#[test]
fn repeated_failures_quarantine_until_reinstalled() {
    let rt = runtime(RuntimeConfig {
        max_consecutive_failures: 3,
        ..RuntimeConfig::default()
    });
    let host = PolicyHost::new(rt.clone(), None);
    host.install(evil(&rt));
    host.drain_events();
    for i in 0..3 {
        let d = host.decide(place("panic"));
        assert!(
            matches!(d.source, DecisionSource::Fallback { .. }),
            "call {i}: {:?}",
            d.source
        );
        assert!(d.answer.is_ok(), "the native default answered");
    }
    let status = &host.status()[0];
    assert!(status.quarantined, "{status:?}");
    let events = host.drain_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            nasvisor_plugin_host::policy::PolicyEvent::PluginQuarantined { failures: 3, .. }
        )),
        "{events:?}"
    );
    // Quarantined: even a good input goes to the native default.
    let d = host.decide(place("fine"));
    assert!(
        matches!(d.source, DecisionSource::Quarantined { .. }),
        "{:?}",
        d.source
    );
    // Reloading lifts the quarantine.
    host.install(evil(&rt));
    let d = host.decide(place("fine"));
    assert!(
        matches!(d.source, DecisionSource::Plugin { .. }),
        "{:?}",
        d.source
    );
}

#[test]
fn a_success_resets_the_failure_count() {
    let rt = runtime(RuntimeConfig {
        max_consecutive_failures: 2,
        ..RuntimeConfig::default()
    });
    let host = PolicyHost::new(rt.clone(), None);
    host.install(evil(&rt));
    for _ in 0..5 {
        host.decide(place("panic"));
        host.decide(place("fine"));
    }
    assert!(!host.status()[0].quarantined);
}

#[test]
fn wrong_world_is_refused() {
    let rt = default_runtime();
    let e = rt
        .load(
            &plugin_bytes("nasvisor-ha-policy"),
            Some(World::Scheduler),
            vec![],
        )
        .unwrap_err();
    assert!(matches!(e, LoadError::WrongWorld { .. }), "{e}");
    assert!(e.to_string().starts_with("wrong world"), "{e}");

    // A package whose signed manifest lies about its world: the component
    // itself does not implement the scheduler world.
    let liar = Package::build(
        "liar",
        "1.0.0",
        World::Scheduler,
        component_bytes("nasvisor-ha-policy"),
        Some(&build_signing_key()),
    );
    let e = rt
        .load(&liar.to_bytes(), Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::ComponentMismatch { .. }), "{e}");
    assert!(e.to_string().contains("place"), "{e}");
}

#[test]
fn tampered_bytes_are_refused() {
    let rt = default_runtime();
    let mut bytes = plugin_bytes("nasvisor-scheduler");
    let n = bytes.len();
    bytes[n - 100] ^= 0x40;
    let e = rt.load(&bytes, Some(World::Scheduler), vec![]).unwrap_err();
    assert!(matches!(e, LoadError::Tampered { .. }), "{e}");
    assert!(e.to_string().starts_with("bad signature"), "{e}");
}

#[test]
fn unsigned_plugins_load_only_in_developer_mode() {
    let rt = default_runtime();
    let bare = component_bytes("nasvisor-scheduler");
    let e = rt.load(&bare, Some(World::Scheduler), vec![]).unwrap_err();
    assert!(matches!(e, LoadError::Unsigned), "{e}");
    let unsigned = Package::build("s", "1.0.0", World::Scheduler, bare.clone(), None).to_bytes();
    let e = rt
        .load(&unsigned, Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::Unsigned), "{e}");

    let dev = runtime(RuntimeConfig {
        developer_mode: true,
        ..RuntimeConfig::default()
    });
    let p = dev
        .load(&bare, Some(World::Scheduler), vec![])
        .expect("dev mode loads bare");
    assert_eq!(p.signer, None);
    dev.load(&unsigned, Some(World::Scheduler), vec![])
        .expect("dev mode loads unsigned");
}

#[test]
fn untrusted_signer_is_refused() {
    let rt = default_runtime();
    let pkg = Package::build(
        "s",
        "1.0.0",
        World::Scheduler,
        component_bytes("nasvisor-scheduler"),
        Some(&generate_key()),
    );
    let e = rt
        .load(&pkg.to_bytes(), Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::UntrustedKey { .. }), "{e}");
}

#[test]
fn incompatible_wit_version_is_refused() {
    let rt = default_runtime();
    let comp = component_bytes("nasvisor-scheduler");
    let manifest = Manifest {
        name: "future".into(),
        version: "9.0.0".into(),
        world: World::Scheduler,
        wit_version: "0.2.0".into(),
        component_sha256: nasvisor_plugin_host::package::sha256_hex(&comp),
    };
    let pkg = Package::from_manifest(manifest, comp, Some(&build_signing_key()));
    let e = rt
        .load(&pkg.to_bytes(), Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::IncompatibleWit { .. }), "{e}");
}

#[test]
fn garbage_is_a_clear_error() {
    let rt = runtime(RuntimeConfig {
        developer_mode: true,
        ..RuntimeConfig::default()
    });
    let e = rt
        .load(b"\0asm\x0d\0\x01\0garbage", Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::Compile(_)), "{e}");
    let e = rt
        .load(b"NVPLUGIN\x01\0\0", Some(World::Scheduler), vec![])
        .unwrap_err();
    assert!(matches!(e, LoadError::MalformedPackage(_)), "{e}");
}

#[test]
fn compiled_code_cache_is_used_and_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = plugin_bytes("nasvisor-scheduler");
    let first = runtime(cfg.clone()).load(&bytes, None, vec![]).unwrap();
    assert_eq!(
        first.load_source,
        nasvisor_plugin_host::LoadSource::Compiled
    );
    let rt2 = runtime(cfg.clone());
    let second = rt2.load(&bytes, None, vec![]).unwrap();
    assert_eq!(second.load_source, nasvisor_plugin_host::LoadSource::Cache);
    let out = invoke(&rt2, &second, &place("x"), 0).unwrap().unwrap();
    assert!(matches!(out, DecisionOutput::Placement(_)));

    // Tamper with every cache entry: it must be discarded, not deserialized.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n / 2] ^= 0xff;
            std::fs::write(&p, b).unwrap();
        }
    }
    let third = runtime(cfg).load(&bytes, None, vec![]).unwrap();
    assert_eq!(
        third.load_source,
        nasvisor_plugin_host::LoadSource::Compiled
    );
}

#[test]
fn hot_reload_lets_in_flight_decisions_finish_on_the_old_plugin() {
    let rt = default_runtime();
    let host = Arc::new(PolicyHost::new(rt.clone(), None));
    host.install(evil(&rt));
    let h2 = host.clone();
    let in_flight = std::thread::spawn(move || h2.decide(place("slow")));
    std::thread::sleep(Duration::from_millis(10));
    let new = rt
        .load(&plugin_bytes("nasvisor-scheduler"), None, vec![])
        .unwrap();
    host.install(new);
    let old = in_flight.join().unwrap();
    // It ran on the old plugin. On a loaded machine the host may starve
    // the slow decision past its deadline (a fault of the host, not the
    // plugin's): then the fallback names the old plugin too.
    match &old.source {
        DecisionSource::Plugin { plugin } => {
            assert_eq!(plugin, "nasvisor-test-evil@0.1.0");
            assert!(
                matches!(old.answer, Ok(DecisionOutput::Placement(ref p)) if p.reason == "slow")
            );
        }
        DecisionSource::Fallback { plugin, cause, .. } if cause.contains("host starved") => {
            assert_eq!(plugin, "nasvisor-test-evil@0.1.0")
        }
        other => panic!("the in-flight decision: {other:?}"),
    }
    let next = host.decide(place("slow"));
    assert_eq!(
        next.source,
        DecisionSource::Plugin {
            plugin: "nasvisor-scheduler@0.1.0".into()
        }
    );
}

#[test]
fn concurrent_decisions_each_get_their_own_instance() {
    let rt = default_runtime();
    let host = Arc::new(PolicyHost::new(rt.clone(), None));
    host.install(evil(&rt));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let h = host.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mode = if i % 2 == 0 { "panic" } else { "fine" };
                    let d = h.decide(place(mode));
                    assert!(d.answer.is_ok());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn settings_reach_the_plugin() {
    let rt = default_runtime();
    let p = rt
        .load(
            &plugin_bytes("nasvisor-scheduler"),
            None,
            vec![("strategy".into(), "bogus".into())],
        )
        .unwrap();
    let answer = invoke(&rt, &p, &place("x"), 0).unwrap();
    let err = answer.expect_err("a bad setting is the plugin's own error");
    assert_eq!(err.code, nasvisor_plugin_sdk::ErrorCode::BadSettings);
    assert!(err.message.contains("strategy"), "{}", err.message);
}

/// A core module, assembled here, that reads state a previous instance could
/// have left behind and then leaves some: a data-segment word (initially 5),
/// a mutable global (7), a heap word past the data (0), the memory size (1
/// page), a word at 2.5 MiB after growing memory by 48 pages (past the
/// resident part the pool resets in place, so that path is covered too). A
/// fresh instance returns 13. (A plugin cannot write a table: the
/// instructions that do, from the reference-types proposal, are refused.)
fn stateful_module() -> Vec<u8> {
    fn leb_u(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn i32_const(v: i32, out: &mut Vec<u8>) {
        out.push(0x41);
        let mut v = v as i64;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0) {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb_u(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    const LOAD: [u8; 3] = [0x28, 0x02, 0x00];
    const STORE: [u8; 3] = [0x36, 0x02, 0x00];
    const ADD: u8 = 0x6a;
    const HIGH: i32 = 0x28_0000; // 2.5 MiB
    let mut code = vec![0x00]; // no locals
    i32_const(16, &mut code);
    code.extend(LOAD);
    code.extend([0x23, 0x00, ADD]); // + global 0
    i32_const(40_000, &mut code);
    code.extend(LOAD);
    code.push(ADD);
    code.extend([0x3f, 0x00, ADD]); // + memory.size
    i32_const(48, &mut code);
    code.extend([0x40, 0x00, 0x1a]); // memory.grow 48; drop
    i32_const(HIGH, &mut code);
    code.extend(LOAD);
    code.push(ADD);
    // Leave state behind.
    for addr in [16, 40_000, HIGH] {
        i32_const(addr, &mut code);
        i32_const(100, &mut code);
        code.extend(STORE);
    }
    i32_const(100, &mut code);
    code.extend([0x24, 0x00]); // global.set 0
    code.push(0x0b);

    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x01, 0x7f], &mut m); // type: () -> i32
    section(3, &[0x01, 0x00], &mut m); // func 0: type 0
    section(4, &[0x01, 0x70, 0x00, 0x02], &mut m); // table: 2 funcref
    section(5, &[0x01, 0x00, 0x01], &mut m); // memory: 1 page
    section(6, &[0x01, 0x7f, 0x01, 0x41, 0x07, 0x0b], &mut m); // global mut i32 = 7
    section(7, &[0x01, 0x01, b'f', 0x00, 0x00], &mut m); // export "f"
    section(9, &[0x01, 0x00, 0x41, 0x00, 0x0b, 0x01, 0x00], &mut m); // elem: table[0] = f
    let mut body = Vec::new();
    leb_u(code.len() as u64, &mut body);
    body.extend(&code);
    let mut code_sec = vec![0x01];
    code_sec.extend(body);
    section(10, &code_sec, &mut m);
    section(
        11,
        &[0x01, 0x00, 0x41, 0x10, 0x0b, 0x04, 5, 0, 0, 0],
        &mut m,
    ); // data at 16
    m
}

#[test]
fn no_state_leaks_between_instances_of_a_pool_slot() {
    // The runtime's engine keeps each pool slot's memory and tables resident
    // and resets only dirtied pages between instances; a fresh instance must
    // still see exactly the module's initial state, whatever the previous
    // instance in the slot did.
    let rt = default_runtime();
    let module = wasmtime::Module::new(rt.engine(), stateful_module()).expect("module");
    for i in 0..50 {
        let mut store = wasmtime::Store::new(rt.engine(), ());
        store.set_epoch_deadline(1_000_000);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "f")
            .expect("f");
        assert_eq!(f.call(&mut store, ()).expect("call"), 13, "call {i}");
        // The module does leave state behind: a second call of the same
        // instance sees all of it (100 * 4 + 49 pages).
        assert_eq!(f.call(&mut store, ()).expect("call"), 449, "call {i}");
    }
}

#[test]
fn no_state_leaks_between_decisions_of_the_scheduler() {
    // The scheduler component runs with a bump allocator and a small stack:
    // the same inputs in any order give the native policy's answers.
    let rt = default_runtime();
    let p = rt
        .load(&plugin_bytes("nasvisor-scheduler"), None, vec![])
        .unwrap();
    let env = nasvisor_plugin_host::NativeEnv::new(vec![], 0);
    let inputs = [
        place_input(cluster_view(7, 100), "a", false),
        DecisionInput::Rebalance {
            view: cluster_view(7, 1000),
        },
        place_input(cluster_view(7, 1000), "b", true),
        place_input(cluster_view(3, 0), "c", false),
    ];
    for round in 0..5 {
        for input in &inputs {
            let component = invoke(&rt, &p, input, 0).expect("call");
            let native = nasvisor_plugin_host::invoke_native(input, &env);
            assert_eq!(component, native, "round {round}, {}", input.function());
        }
    }
}

#[test]
fn place_through_the_component_sees_the_vms_its_constraints_name() {
    use nasvisor_plugin_sdk::prelude::*;
    let rt = default_runtime();
    // A bonus larger than the free-memory gaps between the test hosts.
    let settings = vec![("affinity-bonus-mib".to_string(), "100000".to_string())];
    let p = rt
        .load(&plugin_bytes("nasvisor-scheduler"), None, settings.clone())
        .unwrap();
    let env = nasvisor_plugin_host::NativeEnv::new(settings, 0);
    let view = cluster_view(7, 1000);
    // Without constraints the spread policy picks host-0 (most free memory).
    let DecisionInput::Place { request, .. } = place_input(view.clone(), "v", false) else {
        unreachable!()
    };
    let first = |c: PlacementConstraints, ha: bool| {
        let mut req = request.clone();
        req.vm.constraints = c;
        req.vm.ha_enabled = ha;
        if ha {
            req.eligible_passive_hosts = req.eligible_hosts.clone();
        }
        let input = DecisionInput::Place {
            view: view.clone(),
            request: req,
        };
        let component = invoke(&rt, &p, &input, 0).expect("call");
        let native = nasvisor_plugin_host::invoke_native(&input, &env);
        assert_eq!(component, native);
        match component {
            Ok(DecisionOutput::Placement(pl)) => pl,
            other => panic!("{other:?}"),
        }
    };
    let free = first(PlacementConstraints::default(), false);
    assert_eq!(free.host, "host-0");
    // vm-0007 runs on host-0: anti-affinity to it moves the VM elsewhere.
    let anti = first(
        PlacementConstraints {
            anti_affinity: vec!["vm-0007".into(), "not-a-vm".into()],
            ..Default::default()
        },
        false,
    );
    assert_ne!(anti.host, "host-0");
    // vm-0003 runs on host-3: with the affinity bonus host-3 wins.
    let affine = first(
        PlacementConstraints {
            affinity: vec!["vm-0003".into()],
            ..Default::default()
        },
        true,
    );
    assert_eq!(affine.host, "host-3", "{}", affine.reason);
    assert!(affine.reason.contains("vm-0003"), "{}", affine.reason);
    assert!(affine.passive_host.is_some());
}

#[test]
fn an_extra_function_in_the_host_interface_is_a_forbidden_import_naming_it() {
    let rt = default_runtime();
    let module = support::Scheduler {
        imports: r#"(import "nasvisor:plugin/host@0.1.0" "exec" (func $exec (param i32 i32) (result i32)))"#,
        place_body: "i32.const 0 i32.const 0 call $exec drop",
        ..Default::default()
    };
    let comp = module.component_with_wit(&|t| {
        t.replace(
            "interface host {",
            "interface host {\n    exec: func(command: string) -> u32;",
        )
    });
    let e = support::load_err(&rt, &support::signed("exec", comp));
    assert!(matches!(e, LoadError::ForbiddenImport { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "forbidden import: nasvisor:plugin/host@0.1.0 (function `exec`)"
    );
}

#[test]
fn a_host_function_imported_with_another_type_is_a_forbidden_import_naming_both_types() {
    let rt = default_runtime();
    let module = support::Scheduler {
        imports: r#"(import "nasvisor:plugin/host@0.1.0" "monotonic-now-ns" (func $now (result i32)))"#,
        place_body: "call $now drop",
        ..Default::default()
    };
    let comp = module.component_with_wit(&|t| {
        t.replace(
            "monotonic-now-ns: func() -> u64",
            "monotonic-now-ns: func() -> u32",
        )
    });
    let e = support::load_err(&rt, &support::signed("now32", comp));
    assert_eq!(
        e.to_string(),
        "forbidden import: nasvisor:plugin/host@0.1.0 (function `monotonic-now-ns` of type \
         func() -> u32; the host grants func() -> u64)"
    );
}

#[test]
fn an_import_outside_the_host_interfaces_is_forbidden() {
    let rt = default_runtime();
    let module = support::Scheduler {
        imports: r#"(import "$root" "exec" (func $exec (result i32)))"#,
        place_body: "call $exec drop",
        ..Default::default()
    };
    let comp = module.component_with_wit(&|t| {
        t.replace(
            "world scheduler {",
            "world scheduler {\n    import exec: func() -> u32;",
        )
    });
    let e = support::load_err(&rt, &support::signed("exec", comp));
    assert!(
        e.to_string().starts_with(
            "forbidden import: exec (function; plugins may only import nasvisor:plugin/host@0.1.0"
        ),
        "{e}"
    );
}

#[test]
fn a_start_function_that_never_returns_is_a_deadline_at_instantiation() {
    let rt = default_runtime();
    let module = support::Scheduler {
        extra: "(func $forever (loop $l br $l)) (start $forever)",
        ..Default::default()
    };
    let _serial = timed();
    let t = Instant::now();
    let e = support::load_err(&rt, &module.package("start-loop"));
    assert!(
        matches!(
            &e,
            LoadError::Instantiation {
                cause: CallError::DeadlineExceeded { deadline_ms: 50 } | CallError::Starved { .. }
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("the plugin cannot be instantiated: "),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_start_function_that_traps_is_reported_at_instantiation() {
    let rt = default_runtime();
    let module = support::Scheduler {
        extra: "(func $boom unreachable) (start $boom)",
        ..Default::default()
    };
    let e = support::load_err(&rt, &module.package("start-trap"));
    assert_eq!(
        e.to_string(),
        "the plugin cannot be instantiated: trap: unreachable code reached (the plugin panicked or aborted)"
    );
}
