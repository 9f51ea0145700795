//! The engine and its configuration: the wasm features refused, the
//! pooling allocator sized for `pool-instances` calls, the linker with the
//! host imports, the compiled-code cache, the epoch ticker and the reaper.

use super::pool::{Reaper, Reaping, Slots, KEEP_RESIDENT_BYTES};
use super::{thread_cpu_time, Runtime};
use crate::cache::CodeCache;
use crate::config::{
    RuntimeConfig, AUTO_TRANSFER_KIB, MAX_UNINTERRUPTIBLE_STEP_MS, MIN_TRANSFER_KIB,
};
use crate::host_imports;
use nasvisor_signing::VerifyingKey;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmFeatures};

/// Bytes of each pooled table kept resident between instances.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Core instances one plugin component may create (the default plugins
/// create 3: their module and the two small modules wit-component adds).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Tables one plugin component may have (the default plugins have 2).
const MAX_TABLES_PER_COMPONENT: u32 = 4;
/// Calls that run at once per CPU this process may use (see `Runtime::new`).
const CALLS_PER_CPU: usize = 2;
/// wasm features refused because one of their instructions can run over a
/// whole memory or table (bulk memory, reference types) or could block or
/// address beyond the cap's accounting (threads, memory64, multi-memory);
/// the others depend on reference types.
const REFUSED_FEATURES: WasmFeatures = WasmFeatures::BULK_MEMORY
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::FUNCTION_REFERENCES)
    .union(WasmFeatures::GC)
    .union(WasmFeatures::EXCEPTIONS)
    .union(WasmFeatures::THREADS)
    .union(WasmFeatures::SHARED_EVERYTHING_THREADS)
    .union(WasmFeatures::MULTI_MEMORY)
    .union(WasmFeatures::MEMORY64)
    .union(WasmFeatures::STACK_SWITCHING);

/// The thread that advances the engine's epoch.
pub(super) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    /// Starts the epoch ticker: it increments the engine's epoch every `tick` on an
    /// absolute schedule, so oversleeping once delays one tick and not all
    /// the following ones (after a long stall it restarts from now rather
    /// than bursting).
    fn start(engine: &Engine, tick: Duration) -> Result<Ticker, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // The ticker must wake on time when the machine is busy: give
                // it the highest nice level (when allowed; it only sleeps
                // and bumps a counter, so it takes next to no CPU).
                if let Err(e) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), -20)
                {
                    tracing::debug!(error = %e, "cannot raise the plugin epoch thread's priority");
                }
                let mut next = Instant::now();
                while !stopped.load(Ordering::Relaxed) {
                    next += tick;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > tick {
                        next = now;
                    }
                    engine.increment_epoch();
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(Ticker { stop, thread })
    }

    /// Stops the thread and waits for it.
    pub(super) fn shut_down(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the plugin epoch thread panicked");
        }
    }
}

/// CPU time this machine takes, at best of three, for the worst transfer of
/// `bytes` a plugin can hand the host: lifting a list of one-byte strings
/// (one allocation per element; wasmtime charges a `String` and its byte
/// per element) and one long string (UTF-8 check and copy), then dropping
/// them. Measured in 64 KiB steps; once `give_up` is spent before the end,
/// the rest is extrapolated.
#[doc(hidden)]
pub fn measure_transfer(bytes: usize, give_up: Duration) -> Duration {
    const STEP: usize = 64 << 10;
    let per_element = std::mem::size_of::<String>() + 1;
    let source = vec![b'x'; STEP];
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = thread_cpu_time();
        let mut many: Vec<String> = Vec::new();
        let mut long: Vec<String> = Vec::new();
        let mut done = 0;
        while done < bytes {
            let n = STEP.min(bytes - done);
            many.extend(
                source[..n / per_element]
                    .chunks(1)
                    .map(|c| String::from_utf8_lossy(c).into_owned()),
            );
            long.push(String::from_utf8_lossy(&source[..n]).into_owned());
            done += n;
            if done < bytes && thread_cpu_time().saturating_sub(start) > give_up {
                break;
            }
        }
        drop(std::hint::black_box((many, long)));
        let spent = thread_cpu_time().saturating_sub(start);
        best = best.min(spent.mul_f64(bytes as f64 / done.max(1) as f64));
    }
    best
}

/// The largest of [`AUTO_TRANSFER_KIB`] whose copy `cost` keeps within
/// `step`, and that cost; the smallest, with a warning, when none does (a machine this
/// slow cannot keep calls within the deadline precision at all, and a
/// daemon that would not start for it helps nobody).
fn auto_transfer_kib(cost: impl Fn(u64) -> Duration, step: Duration) -> (u64, Duration) {
    let mut last = Duration::ZERO;
    for kib in AUTO_TRANSFER_KIB {
        last = cost(kib);
        if last <= step {
            if kib != AUTO_TRANSFER_KIB[0] {
                tracing::info!(kib, "max-transfer-kib: this machine copies {kib} KiB within the {MAX_UNINTERRUPTIBLE_STEP_MS} ms step, not more");
            }
            return (kib, last);
        }
    }
    let kib = MIN_TRANSFER_KIB;
    tracing::warn!(
        kib,
        copy_ms = last.as_secs_f64() * 1e3,
        "max-transfer-kib: this machine takes {:.1} ms to copy even {kib} KiB out of a plugin, more \
         than the {MAX_UNINTERRUPTIBLE_STEP_MS} ms step: a plugin's call may overrun its deadline by that much",
        last.as_secs_f64() * 1e3
    );
    (kib, last)
}

impl Runtime {
    /// Creates the engine, the linker, the epoch ticker and the reaper, and
    /// measures the copy of one transfer (`max-transfer-kib`): the error
    /// names the field and gives the measured time when this machine cannot
    /// keep a call within the deadline precision with it.
    pub fn new(
        mut config: RuntimeConfig,
        trusted_keys: Vec<VerifyingKey>,
    ) -> Result<Runtime, String> {
        config.validate()?;
        let step = Duration::from_millis(MAX_UNINTERRUPTIBLE_STEP_MS);
        let cost = |kib: u64| measure_transfer((kib * 1024) as usize, step);
        let (transfer_kib, transfer_cost) = match config.max_transfer_kib_setting {
            Some(kib) => {
                let transfer_cost = cost(kib);
                if transfer_cost > step {
                    return Err(format!(
                        "max-transfer-kib: {kib} KiB takes {:.1} ms of CPU to copy out of a plugin \
                         on this machine (measured now), more than the \
                         {MAX_UNINTERRUPTIBLE_STEP_MS} ms a step without a deadline check may \
                         take to keep calls within {} ms of their deadline; lower it, or leave it \
                         unset for the largest this machine copies in time",
                        transfer_cost.as_secs_f64() * 1e3,
                        crate::config::DEADLINE_PRECISION_MS,
                    ));
                }
                (kib, transfer_cost)
            }
            None => auto_transfer_kib(cost, step),
        };
        config.transfer_kib = transfer_kib;
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.wasm_features(REFUSED_FEATURES, false);
        cfg.epoch_interruption(true);
        cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::default();
        let n = config.pool_instances;
        // Every total is what `n` components at their per-component maxima
        // need, so a call holding a `SlotPermit` always finds room.
        pool.total_component_instances(n);
        pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
        pool.total_core_instances(n * MAX_CORE_INSTANCES_PER_COMPONENT);
        pool.max_memories_per_component(1);
        pool.total_memories(n);
        pool.max_tables_per_component(MAX_TABLES_PER_COMPONENT);
        pool.total_tables(n * MAX_TABLES_PER_COMPONENT);
        pool.max_memories_per_module(1);
        pool.max_memory_size(config.memory_limit_bytes() as usize);
        // Fresh instance per decision, made cheap: a slot's linear memory
        // and tables stay mapped and resident between instances, and only
        // the pages the previous instance dirtied are reset. On Linux >= 6.7
        // the PAGEMAP_SCAN ioctl finds those pages (one syscall per call);
        // elsewhere the first `KEEP_RESIDENT_BYTES` are reset with memset.
        // Without this every instance took fresh page faults on first use
        // (about 20 us per decision here). See BENCHMARKS.md.
        pool.linear_memory_keep_resident(
            KEEP_RESIDENT_BYTES.min(config.memory_limit_bytes() as usize),
        );
        pool.table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| format!("engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        host_imports::add_to_linker(&mut linker).map_err(|e| format!("linker: {e}"))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                CodeCache::open(dir, &engine)
                    .map_err(|e| format!("cache-dir {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let ticker = Ticker::start(&engine, Duration::from_millis(config.epoch_tick_ms))?;
        let reaping = Arc::new(Reaping::default());
        let reaper = Reaper::start(reaping.clone())?;
        // Plugins never wait (no import blocks), so many more calls than
        // CPUs would only share the CPUs, stretch every call in progress and
        // make them miss their deadlines; they wait for a slot instead. Two
        // per CPU keep the CPUs busy while one call is preempted by another
        // process, and a call preempted by its sibling waits one time slice.
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        let running = n.min(u32::try_from(CALLS_PER_CPU * cpus).unwrap_or(u32::MAX));
        Ok(Runtime {
            engine,
            linker,
            slots: Arc::new(Slots::new(running)),
            running,
            config,
            trusted_keys,
            cache,
            ticker: Some(ticker),
            reaper: Some(reaper),
            reaping,
            next_plugin_id: AtomicU64::new(0),
            transfer_cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(ms: [f64; 3]) -> impl Fn(u64) -> Duration {
        move |kib| {
            let i = AUTO_TRANSFER_KIB.iter().position(|k| *k == kib).unwrap();
            Duration::from_secs_f64(ms[i] / 1e3)
        }
    }

    #[test]
    fn unset_the_transfer_limit_is_the_largest_this_machine_copies_in_a_step_and_never_stops_the_start(
    ) {
        let step = Duration::from_millis(MAX_UNINTERRUPTIBLE_STEP_MS);
        assert_eq!(auto_transfer_kib(costs([0.9, 0.5, 0.2]), step).0, 256);
        assert_eq!(auto_transfer_kib(costs([3.0, 1.9, 0.9]), step).0, 128);
        assert_eq!(auto_transfer_kib(costs([8.8, 4.4, 2.0]), step).0, 64);
        // A machine too slow for any (TCG: 8.8 ms for 256 KiB): the
        // smallest, and its cost to report.
        let (kib, cost) = auto_transfer_kib(costs([17.6, 8.8, 4.4]), step);
        assert_eq!(
            (kib, cost),
            (MIN_TRANSFER_KIB, Duration::from_secs_f64(4.4e-3))
        );
    }

    #[test]
    fn the_runtime_reports_the_transfer_limit_in_force() {
        let rt = Runtime::new(RuntimeConfig::default(), Vec::new()).unwrap();
        assert!(AUTO_TRANSFER_KIB.contains(&rt.config().max_transfer_kib()));
        let rt = Runtime::new(
            RuntimeConfig {
                max_transfer_kib_setting: Some(64),
                transfer_kib: 999,
                ..RuntimeConfig::default()
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(rt.config().max_transfer_kib(), 64);
        assert_eq!(rt.config().max_transfer_bytes(), 64 * 1024);
    }
}
