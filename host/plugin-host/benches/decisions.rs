//! Decision and load latency of the plugin host, in one run:
//!
//! * `place/component/HxV`: the scheduler's `place` through the component
//!   (`invoke`: fresh store + instance per decision, lowering of the view,
//!   the guest's work, lifting of the answer), on views of H hosts x V VMs.
//!   7x0 is there to separate the fixed cost from the per-VM (lowering) cost.
//! * `place/native/HxV`: the same default policy compiled natively
//!   (`invoke_native`), the baseline of the component/native ratio.
//!   The component's `place` gets a reduced view (every host, only the VMs
//!   the request's constraints name; see `place` in wit/worlds.wit), so its
//!   cost no longer grows with the VM count.
//! * `rebalance/component/7x100` and `rebalance/native/7x100`: `rebalance`,
//!   which gets the full view, to show what lowering 100 VMs costs.
//! * `instantiate/instantiate-only`: a fresh store + instance, dropped
//!   without a call (`Runtime::instantiate_only`).
//! * `instantiate/instantiate+trivial-call`: a fresh store + instance and a
//!   call of `rebalance` on an empty view: the floor of any decision.
//! * `runtime/new`: `Runtime::new` with the defaults (engine, epoch and
//!   reaper threads, and the measured copy of a worst-case transfer).
//! * `load/cold-compile` and `load/from-cache`: `Runtime::load` of the signed
//!   scheduler package (signature, digest, compile or deserialize, link,
//!   typecheck), without a cache and from a filled compiled-code cache (the
//!   loaded plugin is dropped outside the timed section).
//! * `policy-host/decide/7x100`: `PolicyHost::decide` with the scheduler
//!   installed (invoke + validation; journal off). `decide` takes the input
//!   by value, so this includes dropping the 7x100 view; that drop alone is
//!   `policy-host/drop-input/7x100`.
//!
//! Needs the built plugins (`scripts/build.sh`). Run with
//! `cargo bench -p nasvisor-plugin-host --bench decisions`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use nasvisor_plugin_host::testkit::{build_signing_key, cluster_view, place_input, plugin_bytes};
use nasvisor_plugin_host::{
    invoke, invoke_native, Answer, CallError, DecisionInput, DecisionSource, LoadSource,
    LoadedPlugin, NativeEnv, PolicyHost, Runtime, RuntimeConfig,
};
use nasvisor_plugin_sdk::prelude::ClusterView;
use nasvisor_plugin_sdk::World;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HOSTS: usize = 7;
const SCHEDULER: &str = "nasvisor-scheduler";

/// Calls that hit the 50 ms deadline or were starved of CPU (only ever seen
/// when another process starves this one); counted and reported rather than
/// aborting the run.
static DEADLINE_MISSES: AtomicU64 = AtomicU64::new(0);

/// `invoke`, tolerating (and counting) a deadline miss; any other error panics.
fn invoke_counted(rt: &Runtime, p: &LoadedPlugin, input: &DecisionInput) -> Option<Answer> {
    match invoke(rt, p, input, 0) {
        Ok(a) => Some(a),
        Err(CallError::DeadlineExceeded { .. } | CallError::Starved { .. }) => {
            DEADLINE_MISSES.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(e) => panic!("component call failed: {e}"),
    }
}

fn runtime(cfg: RuntimeConfig) -> Runtime {
    Runtime::new(cfg, vec![build_signing_key().verifying_key()]).expect("runtime")
}

fn load_scheduler(rt: &Runtime, bytes: &[u8]) -> LoadedPlugin {
    rt.load(bytes, Some(World::Scheduler), vec![])
        .expect("the scheduler plugin loads")
}

/// Checks that the component and the native policy agree on `input`, so the
/// two sides of the ratio do the same work.
fn check_same_answer(rt: &Runtime, p: &LoadedPlugin, input: &DecisionInput) {
    let component = invoke(rt, p, input, 0).expect("component call");
    let native = invoke_native(input, &NativeEnv::new(vec![], 0));
    assert!(
        component.is_ok(),
        "component answered an error: {component:?}"
    );
    assert_eq!(component, native, "component and native answers differ");
}

fn decisions(c: &mut Criterion) {
    let bytes = plugin_bytes(SCHEDULER);
    let rt = runtime(RuntimeConfig::default());
    let plugin = load_scheduler(&rt, &bytes);
    let env = NativeEnv::new(vec![], 0);

    // 1. place: component vs native.
    let mut g = c.benchmark_group("place");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(50);
    for vms in [0usize, 100, 1000] {
        let input = place_input(cluster_view(HOSTS, vms), "bench-vm", false);
        check_same_answer(&rt, &plugin, &input);
        let size = format!("{HOSTS}x{vms}");
        g.bench_with_input(BenchmarkId::new("component", &size), &input, |b, input| {
            b.iter(|| invoke_counted(&rt, &plugin, black_box(input)))
        });
        if vms > 0 {
            g.bench_with_input(BenchmarkId::new("native", &size), &input, |b, input| {
                b.iter(|| invoke_native(black_box(input), &env))
            });
        }
    }
    g.finish();

    // 1b. rebalance (full view) at 7x100: component vs native.
    let mut g = c.benchmark_group("rebalance");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(50);
    let input = DecisionInput::Rebalance {
        view: cluster_view(HOSTS, 100),
    };
    check_same_answer(&rt, &plugin, &input);
    g.bench_with_input(
        BenchmarkId::new("component", "7x100"),
        &input,
        |b, input| b.iter(|| invoke_counted(&rt, &plugin, black_box(input))),
    );
    g.bench_with_input(BenchmarkId::new("native", "7x100"), &input, |b, input| {
        b.iter(|| invoke_native(black_box(input), &env))
    });
    g.finish();

    // 2. instantiation alone, and instantiate + the cheapest call.
    let mut g = c.benchmark_group("instantiate");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(50);
    let trivial = DecisionInput::Rebalance {
        view: ClusterView::default(),
    };
    let out = invoke(&rt, &plugin, &trivial, 0).expect("trivial call");
    assert!(out.is_ok(), "rebalance on an empty view failed: {out:?}");
    g.bench_function("instantiate-only", |b| {
        b.iter(|| match rt.instantiate_only(black_box(&plugin)) {
            Ok(()) => {}
            Err(CallError::DeadlineExceeded { .. } | CallError::Starved { .. }) => {
                DEADLINE_MISSES.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("instantiation failed: {e}"),
        })
    });
    g.bench_function("instantiate+trivial-call", |b| {
        b.iter(|| invoke_counted(&rt, &plugin, black_box(&trivial)))
    });
    g.finish();

    // 2b. a runtime: engine, ticker and reaper threads, and the measured
    // copy of one worst-case transfer (`max-transfer-kib`).
    let mut g = c.benchmark_group("runtime");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("new", |b| {
        b.iter_with_large_drop(|| runtime(RuntimeConfig::default()))
    });
    g.finish();
    eprintln!(
        "worst-case transfer of max-transfer-kib ({} KiB): {:.3} ms of CPU (measured by Runtime::new)",
        rt.config().max_transfer_kib(),
        rt.transfer_cost().as_secs_f64() * 1e3
    );

    // 3. load: cold compile, and from the compiled-code cache.
    let mut g = c.benchmark_group("load");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    // The loaded plugins are dropped outside the timed section: a host keeps
    // what it loads.
    g.bench_function("cold-compile", |b| {
        b.iter_with_large_drop(|| {
            let p = load_scheduler(&rt, black_box(&bytes));
            assert_eq!(p.load_source, LoadSource::Compiled);
            p
        })
    });
    g.finish();

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cached_rt = runtime(RuntimeConfig {
        cache_dir: Some(cache_dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    });
    let first = load_scheduler(&cached_rt, &bytes);
    assert_eq!(
        first.load_source,
        LoadSource::Compiled,
        "the cache starts empty"
    );
    drop(first);
    let mut g = c.benchmark_group("load");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("from-cache", |b| {
        b.iter_with_large_drop(|| {
            let p = load_scheduler(&cached_rt, black_box(&bytes));
            assert_eq!(p.load_source, LoadSource::Cache);
            p
        })
    });
    g.finish();
    drop(cached_rt);

    // 4. the full decision path: invoke + validation (journal off).
    let host_rt = Arc::new(runtime(RuntimeConfig::default()));
    let host = PolicyHost::new(host_rt.clone(), None);
    host.install(load_scheduler(&host_rt, &bytes));
    let input = place_input(cluster_view(HOSTS, 100), "bench-vm", false);
    let d = host.decide(input.clone());
    assert!(
        matches!(d.source, DecisionSource::Plugin { .. }) && d.answer.is_ok(),
        "the plugin must answer (no fallback): {:?} {:?}",
        d.source,
        d.answer
    );
    let mut g = c.benchmark_group("policy-host");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(50);
    g.bench_with_input(
        BenchmarkId::new("drop-input", "7x100"),
        &input,
        |b, input| b.iter_batched(|| input.clone(), drop, BatchSize::SmallInput),
    );
    g.bench_with_input(BenchmarkId::new("decide", "7x100"), &input, |b, input| {
        b.iter_batched(
            || input.clone(),
            |input| {
                let d = host.decide(input);
                match &d.source {
                    DecisionSource::Plugin { .. } => {}
                    // A fallback (only a deadline miss under CPU starvation
                    // is expected); the next success resets the failure count.
                    DecisionSource::Fallback { .. } => {
                        DEADLINE_MISSES.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        panic!("the plugin no longer decides ({other:?}): results would be invalid")
                    }
                }
                d
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let misses = DEADLINE_MISSES.load(Ordering::Relaxed);
    if misses > 0 {
        eprintln!("WARNING: {misses} component call(s) hit the deadline or fell back during the run (machine busy?)");
    } else {
        eprintln!("no component call hit the deadline or fell back");
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
