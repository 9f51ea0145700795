//! The sandbox against real components built from source (scripts/build.sh):
//! each adversarial behaviour is contained with the right error within its
//! deadline plus a small margin, and the next decision works.

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
fn infinite_loop_hits_the_deadline() {
    contained("loop", DEADLINE_MS, |e| {
        matches!(e, CallError::DeadlineExceeded { deadline_ms: 50 })
    });
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
        ("huge-output", "reason is 33554432 bytes"),
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
            DecisionSource::Fallback { cause, .. } => {
                assert!(cause.starts_with("invalid output"), "{mode}: {cause}");
                assert!(cause.contains(needle), "{mode}: {cause}");
            }
            other => panic!("{mode}: expected a fallback, got {other:?}"),
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
    assert_eq!(
        old.source,
        DecisionSource::Plugin {
            plugin: "nasvisor-test-evil@0.1.0".into()
        }
    );
    assert!(matches!(old.answer, Ok(DecisionOutput::Placement(ref p)) if p.reason == "slow"));
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
