//! The deadline is kept to within 5 ms, whatever the plugin does and
//! whatever memory cap the configuration accepts: plugins just over and just
//! under the deadline, and each kind of work a plugin can make run without a
//! deadline check (bulk memory instructions, touching all of a large memory,
//! host calls and answers as big as memory).

mod support;

use nasvisor_plugin_host::testkit::{cluster_view, place_input, plugin_bytes};
use nasvisor_plugin_host::{invoke, CallError, DecisionInput, LoadError, RuntimeConfig};
use std::time::Duration;
use support::*;

const DEADLINE_MS: u64 = 50;
/// What the sandbox promises: a call ends at most this long after its deadline.
const PRECISION: Duration = Duration::from_millis(5);

/// The largest memory cap the configuration accepts.
const LARGEST_CAP_MIB: u64 = 4096;

/// Timed tests run one at a time so that the other tests of this binary do
/// not compete with them for the machine's two cores.
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(|e| e.into_inner())
}

fn place() -> DecisionInput {
    place_input(cluster_view(3, 0), "vm", false)
}

fn deadline() -> Duration {
    Duration::from_millis(DEADLINE_MS)
}

#[test]
fn a_plugin_running_3_ms_past_the_deadline_is_stopped_within_5_ms_of_it() {
    let rt = runtime_with(DEADLINE_MS, 64);
    let p = load(&rt, &spinning_scheduler(DEADLINE_MS + 3));
    let _serial = timed();
    for _ in 0..5 {
        let (r, took) = unstarved(|| invoke(&rt, &p, &place(), 0));
        assert_eq!(r, Err(CallError::DeadlineExceeded { deadline_ms: 50 }));
        assert!(took < deadline() + PRECISION, "stopped after {took:?}");
    }
}

#[test]
fn a_plugin_finishing_5_ms_before_the_deadline_is_answered() {
    let rt = runtime_with(DEADLINE_MS, 64);
    let p = load(&rt, &spinning_scheduler(DEADLINE_MS - 5));
    let _serial = timed();
    for _ in 0..5 {
        let (r, took) = unstarved(|| invoke(&rt, &p, &place(), 0));
        let answer = r.expect("a plugin within its deadline answers");
        assert!(answer.is_ok(), "{answer:?}");
        assert!(took >= deadline() - PRECISION, "{took:?}");
    }
}

#[test]
fn an_endless_loop_is_stopped_within_5_ms_of_the_deadline() {
    let rt = runtime_with(DEADLINE_MS, 64);
    let p = load(&rt, &plugin_bytes("nasvisor-test-evil"));
    let _serial = timed();
    let input = place_input(cluster_view(3, 0), "loop", false);
    for _ in 0..5 {
        let (r, took) = unstarved(|| invoke(&rt, &p, &input, 0));
        assert_eq!(r, Err(CallError::DeadlineExceeded { deadline_ms: 50 }));
        assert!(took < deadline() + PRECISION, "stopped after {took:?}");
    }
}

/// `place` growing memory to the cap and running `body` (which may use
/// `$a` and `$i`) forever.
fn forever_over_all_memory(body: &str) -> String {
    format!(
        "i32.const {} memory.grow drop
         (loop $forever {body} br $forever)",
        LARGEST_CAP_MIB * 16 - 2
    )
}

#[test]
fn bulk_memory_and_table_instructions_are_refused_at_load_with_the_largest_cap() {
    let rt = runtime_with(DEADLINE_MS, LARGEST_CAP_MIB);
    for (what, body, extra) in [
        (
            "memory.fill",
            forever_over_all_memory("i32.const 0 i32.const 1 i32.const -1 memory.fill"),
            "",
        ),
        (
            "memory.copy",
            forever_over_all_memory("i32.const 0 i32.const 1 i32.const -2 memory.copy"),
            "",
        ),
        (
            "table.fill",
            "(loop $l i32.const 0 ref.null func i32.const 1000 table.fill $t br $l)".to_string(),
            "(table $t 1000 funcref)",
        ),
    ] {
        let e = load_err(
            &rt,
            &Scheduler {
                place_body: &body,
                extra,
                ..Default::default()
            }
            .package(what),
        );
        assert!(
            matches!(e, LoadError::UnsupportedFeature { .. }),
            "{what}: {e}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with("unsupported WebAssembly feature"), "{msg}");
        assert!(msg.contains("target-cpu=mvp"), "{msg}");
    }
}

#[test]
fn a_plugin_writing_all_of_a_4_gib_memory_is_stopped_within_5_ms_of_the_deadline() {
    // The page faults, and after the call the reset of every page touched
    // (50-90 % of the time it took to touch them, done on a reaper thread).
    let rt = runtime_with(DEADLINE_MS, LARGEST_CAP_MIB);
    let p = load(&rt, &all_memory_writer());
    let _serial = timed();
    for _ in 0..3 {
        let (r, took) = unstarved(|| invoke(&rt, &p, &place(), 0));
        assert_eq!(r, Err(CallError::DeadlineExceeded { deadline_ms: 50 }));
        assert!(took < deadline() + PRECISION, "stopped after {took:?}");
    }
}

const IMPORT_LOG: &str =
    r#"(import "nasvisor:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))"#;

/// The last address of memory.
const MEMORY_END: &str = "memory.size i32.const 16 i32.shl";

/// Stores, at `at`, `n` (pointer, length) pairs that all name memory from
/// 1 MiB to its end (after growing it to 64 MiB).
fn aliases(at: u32, n: u32) -> String {
    format!(
        "i32.const 1000 memory.grow drop
         (block $b (loop $l
            local.get $i i32.const {n} i32.ge_u br_if $b
            local.get $i i32.const 8 i32.mul i32.const {at} i32.add local.tee $a
            i32.const 1048576 i32.store
            local.get $a {MEMORY_END} i32.const 1048576 i32.sub i32.store offset=4
            local.get $i i32.const 1 i32.add local.set $i
            br $l))"
    )
}

#[test]
fn a_log_call_handing_over_all_of_memory_is_refused_without_copying_it() {
    // Before: each call copied ~63 MiB before the log budget was checked.
    let msg_loop = format!(
        "(loop $l
           i32.const 2 i32.const 1048576 {MEMORY_END} i32.const 1048576 i32.sub
           i32.const 0 i32.const 0 call $log br $l)"
    );
    // 4096 fields whose keys all alias the same 63 MiB.
    let fields_loop = format!(
        "{} (loop $l i32.const 2 i32.const 0 i32.const 0 i32.const 100000 i32.const 2048 call $log br $l)",
        aliases(100_000, 4096)
    );
    let rt = runtime_with(DEADLINE_MS, 64);
    let _serial = timed();
    for (what, body) in [
        (
            "message",
            format!("i32.const 1000 memory.grow drop {msg_loop}"),
        ),
        ("fields", fields_loop),
    ] {
        let p = load(
            &rt,
            &Scheduler {
                imports: IMPORT_LOG,
                place_body: &body,
                ..Default::default()
            }
            .package(what),
        );
        let (r, took) = unstarved(|| invoke(&rt, &p, &place(), 0));
        match r {
            Err(CallError::InvalidOutput(m)) => {
                assert!(m.contains("max-transfer-kib (256 KiB)"), "{what}: {m}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(took < PRECISION, "{what}: refused after {took:?}");
    }
}

#[test]
fn an_answer_whose_strings_all_alias_memory_is_refused_without_copying_it() {
    // `rebalance` answers 512 moves whose 4 strings each name the same
    // 63 MiB (before: 128 MiB copied, then wasmtime's default fuel ran out).
    let body = format!(
        "{}
         i32.const 200000 i32.const 0 i32.store
         i32.const 200004 i32.const 300000 i32.store
         i32.const 200008 i32.const 512 i32.store
         i32.const 200000 return",
        aliases(300_000, 2048)
    );
    let rt = runtime_with(DEADLINE_MS, 64);
    let p = load(
        &rt,
        &Scheduler {
            rebalance_body: &body,
            ..Default::default()
        }
        .package("aliaser"),
    );
    let input = DecisionInput::Rebalance {
        view: cluster_view(3, 0),
    };
    let _serial = timed();
    let (r, took) = unstarved(|| invoke(&rt, &p, &input, 0));
    match r {
        Err(CallError::InvalidOutput(m)) => assert!(m.contains("max-transfer-kib"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(took < PRECISION, "refused after {took:?}");
}

#[test]
fn a_transfer_limit_this_machine_cannot_copy_in_time_is_refused_with_the_measured_time() {
    let key = nasvisor_plugin_host::testkit::build_signing_key().verifying_key();
    let e = nasvisor_plugin_host::Runtime::new(
        RuntimeConfig {
            max_transfer_kib_setting: Some(1 << 20),
            ..RuntimeConfig::default()
        },
        vec![key],
    )
    .unwrap_err();
    assert!(e.starts_with("max-transfer-kib: 1048576 KiB takes "), "{e}");
    let ms: f64 = e["max-transfer-kib: 1048576 KiB takes ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no measured time in {e}"));
    assert!(ms > 2.0, "{e}");
}
