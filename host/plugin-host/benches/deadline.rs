//! Deadline precision: how long after its deadline a call ends, for plugins
//! that try to run past it in each way the sandbox knows of. Each case runs
//! `RUNS` times through `invoke` with a 50 ms deadline and prints the median
//! and the largest wall time of the runs the machine did not starve
//! (`CallError::Starved`: the calling thread got less than half the deadline
//! in CPU time), how many were starved, and what the calls returned.
//!
//! Needs the built plugins (`scripts/build.sh`). Run with
//! `cargo bench -p nasvisor-plugin-host --bench deadline`.

#[path = "../tests/support/mod.rs"]
mod support;

use nasvisor_plugin_host::testkit::{cluster_view, place_input, plugin_bytes};
use nasvisor_plugin_host::{invoke, CallError, DecisionInput, LoadedPlugin, Runtime};
use std::collections::BTreeMap;
use std::time::Instant;
use support::*;

const RUNS: usize = 40;
const DEADLINE_MS: u64 = 50;

fn case(name: &str, rt: &Runtime, p: &LoadedPlugin, input: &DecisionInput) {
    let mut walls = Vec::new();
    let mut starved = 0;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = invoke(rt, p, input, 0);
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let outcome = match &r {
            Ok(Ok(_)) => "answered".to_string(),
            Ok(Err(e)) => format!("plugin error {:?}", e.code),
            Err(CallError::Starved { .. }) => {
                starved += 1;
                "starved".to_string()
            }
            Err(e) => e.cause().to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
        if !matches!(r, Err(CallError::Starved { .. })) {
            walls.push(wall);
        }
    }
    walls.sort_by(f64::total_cmp);
    let (median, max) = match walls.len() {
        0 => (f64::NAN, f64::NAN),
        n => (walls[n / 2], walls[n - 1]),
    };
    println!(
        "{name:<58} median {median:7.2} ms  max {max:7.2} ms  starved {starved:2}/{RUNS}  {outcomes:?}"
    );
}

fn main() {
    let place = place_input(cluster_view(3, 0), "vm", false);
    let rt = runtime_with(DEADLINE_MS, 64);
    println!("deadline {DEADLINE_MS} ms, {RUNS} runs per case");

    let p = load(&rt, &spinning_scheduler(DEADLINE_MS + 3));
    case("spins until 3 ms past the deadline", &rt, &p, &place);
    let p = load(&rt, &spinning_scheduler(DEADLINE_MS - 5));
    case("spins until 5 ms before the deadline", &rt, &p, &place);
    let p = load(&rt, &plugin_bytes("nasvisor-test-evil"));
    let endless = place_input(cluster_view(3, 0), "loop", false);
    case("endless loop", &rt, &p, &endless);

    let big = runtime_with(DEADLINE_MS, 4096);
    let p = load(&big, &all_memory_writer());
    case(
        "writes all of a 4096 MiB memory, again and again",
        &big,
        &p,
        &place,
    );

    let log_all = Scheduler {
        imports: r#"(import "nasvisor:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))"#,
        place_body: "i32.const 1000 memory.grow drop
          (loop $l
            i32.const 2 i32.const 1048576
            memory.size i32.const 16 i32.shl i32.const 1048576 i32.sub
            i32.const 0 i32.const 0 call $log br $l)",
        ..Default::default()
    };
    let p = load(&rt, &log_all.package("log-all"));
    case("logs a 63 MiB message, again and again", &rt, &p, &place);
}
