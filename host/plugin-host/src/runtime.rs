//! The wasmtime side: one engine with the pooling allocator and an epoch
//! ticker, a linker with the host imports, compilation (through the cache),
//! and one fresh store per call with a memory cap and a deadline.
//!
//! How a call is kept within `DEADLINE_PRECISION_MS` of its deadline:
//!
//! * The deadline is an instant, not a count of ticks: the ticker thread
//!   bumps the engine's epoch every `epoch-tick-ms` on an absolute schedule,
//!   and at each tick a running call compares the time with its deadline
//!   and stops there (`Store::epoch_deadline_callback`).
//! * Nothing a plugin does runs long between two checks: instructions that
//!   work on a whole memory or table at once (bulk memory, reference types)
//!   are refused at load; what a plugin hands the host is bounded by the
//!   hostcall fuel (`max-transfer-kib`, whose copy time is measured at start)
//!   and host imports copy only what they keep; a component has at most one
//!   memory, so no adapter copies between memories.
//! * Resetting a slot whose memory grew past what stays resident (the cost
//!   grows with the pages the plugin touched) happens on a reaper thread,
//!   after the caller has its answer.
//!
//! Faults of the host are told apart from faults of the plugin: a call waits,
//! bounded, for a slot (`CallError::NoSlot` after `slot-wait-ms`; at most
//! `pool-instances` calls, and two per CPU, run at once), and a deadline
//! reached while the calling thread got less than half the deadline in CPU
//! time is `CallError::Starved`.

use crate::cache::CodeCache;
use crate::config::{RuntimeConfig, MAX_UNINTERRUPTIBLE_STEP_MS};
use crate::error::{CallError, LoadError};
use crate::host_imports::{self, CallCtx, MemoryCap};
use crate::package::{self, Manifest, Package};
use ed25519_dalek::VerifyingKey;
use nasvisor_plugin_sdk::World;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Linker, Lower,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
    WasmFeatures,
};

/// Bytes of each pooled linear memory kept resident (reset in place rather
/// than released) between instances: covers what a decision of the default
/// plugins touches, so RSS is bounded by this times the slots in use.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Bytes of each pooled table kept resident between instances.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Core instances one plugin component may create (the default plugins
/// create 3: their module and the two small modules wit-component adds).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Tables one plugin component may have (the default plugins have 2).
const MAX_TABLES_PER_COMPONENT: u32 = 4;
/// Calls that run at once per CPU this process may use (see `Runtime::new`).
const CALLS_PER_CPU: usize = 2;
/// How long loading a plugin waits for a slot for its load-time check.
const LOAD_SLOT_WAIT: Duration = Duration::from_secs(5);
/// Instantiations a load-time check tries when the host is at fault (no
/// slot, a starved CPU) before it gives up.
const LOAD_ATTEMPTS: u32 = 5;
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
/// The message wasmtime gives when a lift exhausts the hostcall fuel.
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// The plugin runtime: shared by every plugin and every call.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallCtx>,
    config: RuntimeConfig,
    trusted_keys: Vec<VerifyingKey>,
    cache: Option<CodeCache>,
    slots: Arc<Slots>,
    /// Calls that may run at once: `pool-instances`, at most two per CPU.
    running: u32,
    ticker: Option<Ticker>,
    reaper: Option<Reaper>,
    /// What the reaper did for each plugin lately.
    reaping: Arc<Reaping>,
    next_plugin_id: AtomicU64,
    /// CPU time one worst-case transfer took to copy at start.
    transfer_cost: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop.store(true, Ordering::Relaxed);
            if t.thread.join().is_err() {
                tracing::error!("the plugin epoch thread panicked");
            }
        }
        if let Some(r) = self.reaper.take() {
            drop(r.retire);
            if r.thread.join().is_err() {
                tracing::error!("the plugin reaper thread panicked");
            }
        }
    }
}

/// The thread that advances the engine's epoch.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The thread that drops finished stores whose slot reset is expensive.
struct Reaper {
    retire: mpsc::Sender<FinishedCall>,
    thread: JoinHandle<()>,
}

/// When the reaper reset each plugin's instances: resetting what a plugin
/// touched takes CPU that its next calls then lack, so a call starved
/// while the reaper worked for the same plugin is that plugin's doing, not
/// the host's.
#[derive(Debug, Default)]
struct Reaping {
    by_plugin: Mutex<HashMap<u64, ReapLog>>,
}

#[derive(Debug, Default)]
struct ReapLog {
    /// Since when the reaper has been resetting an instance of the plugin.
    busy_since: Option<Instant>,
    /// Resets queued or in progress.
    pending: u32,
    /// The latest finished resets: (start, end).
    done: VecDeque<(Instant, Instant)>,
}

/// Finished resets kept per plugin.
const REAP_LOG_LEN: usize = 16;

impl Reaping {
    fn log(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReapLog>> {
        self.by_plugin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, plugin: u64) {
        self.log().entry(plugin).or_default().pending += 1;
    }

    fn started(&self, plugin: u64) {
        self.log().entry(plugin).or_default().busy_since = Some(Instant::now());
    }

    fn finished(&self, plugin: u64) {
        let mut log = self.log();
        let entry = log.entry(plugin).or_default();
        if let Some(start) = entry.busy_since.take() {
            if entry.done.len() == REAP_LOG_LEN {
                entry.done.pop_front();
            }
            entry.done.push_back((start, Instant::now()));
        }
        entry.pending = entry.pending.saturating_sub(1);
    }

    /// How long, between `since` and now, the reaper spent resetting
    /// instances of `plugin`.
    fn time_for(&self, plugin: u64, since: Instant) -> Duration {
        let now = Instant::now();
        let log = self.log();
        let Some(entry) = log.get(&plugin) else {
            return Duration::ZERO;
        };
        let overlap =
            |start: Instant, end: Instant| end.saturating_duration_since(start.max(since));
        entry
            .done
            .iter()
            .map(|&(s, e)| overlap(s, e))
            .sum::<Duration>()
            + entry.busy_since.map_or(Duration::ZERO, |s| overlap(s, now))
    }

    /// Drops what is known of a plugin that has nothing queued.
    fn forget_idle(&self) {
        self.log().retain(|_, e| {
            e.pending > 0
                || e.done
                    .back()
                    .is_some_and(|(_, end)| end.elapsed() < Duration::from_secs(60))
        });
    }
}

/// Counts the free call slots; a call holds a [`SlotPermit`] from before
/// its store exists until after the store is dropped, so the pooling
/// allocator never runs out. Waiters are served in arrival order: a freed
/// slot is handed to the longest waiter, never taken by a newcomer.
#[derive(Debug)]
struct Slots {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    free: u32,
    waiters: VecDeque<Arc<Waiter>>,
}

#[derive(Debug, Default)]
struct Waiter {
    /// Set, under the slots' lock, when a slot is handed to this waiter.
    granted: AtomicBool,
    wake: Condvar,
}

impl Slots {
    fn new(n: u32) -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiters: VecDeque::new(),
            }),
        }
    }

    /// Takes a free slot, waiting at most `wait` for one.
    fn acquire(self: &Arc<Self>, wait: Duration) -> Option<SlotPermit> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.free > 0 && s.waiters.is_empty() {
            s.free -= 1;
            return Some(SlotPermit(self.clone()));
        }
        let me = Arc::new(Waiter::default());
        s.waiters.push_back(me.clone());
        let until = Instant::now() + wait;
        loop {
            if me.granted.load(Ordering::Relaxed) {
                return Some(SlotPermit(self.clone()));
            }
            let now = Instant::now();
            if now >= until {
                s.waiters.retain(|w| !Arc::ptr_eq(w, &me));
                return None;
            }
            s = me
                .wake
                .wait_timeout(s, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One call slot, held for the life of a call's store.
#[derive(Debug)]
struct SlotPermit(Arc<Slots>);

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.waiters.pop_front() {
            Some(next) => {
                next.granted.store(true, Ordering::Relaxed);
                next.wake.notify_one();
            }
            None => s.free += 1,
        }
    }
}

/// A call's store and the slot it holds. Fields drop in order: the store
/// (which returns the instance's memory and tables to the pool), then the
/// permit that lets the next call use them.
struct FinishedCall {
    _store: Store<CallCtx>,
    _permit: SlotPermit,
}

/// A call in progress.
struct Call {
    store: Store<CallCtx>,
    permit: SlotPermit,
    /// CPU time of the calling thread when the store was made.
    cpu_start: Duration,
    /// When the call must have ended.
    deadline: Instant,
}

/// How a plugin was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadSource {
    /// Compiled from the component bytes.
    Compiled,
    /// Deserialized from the authenticated compiled-code cache.
    Cache,
}

/// A plugin ready to be called: verified, compiled, linked once.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    /// Id of the key that signed it; `None` when loaded unsigned (developer mode).
    pub signer: Option<String>,
    pub load_source: LoadSource,
    pub(crate) pre: InstancePre<CallCtx>,
    pub(crate) exports: HashMap<&'static str, ComponentExportIndex>,
    pub(crate) settings: Arc<Vec<(String, String)>>,
    pub(crate) label: Arc<str>,
    /// Unique among the plugins this runtime loaded.
    pub(crate) id: u64,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("manifest", &self.manifest)
            .field("signer", &self.signer)
            .finish()
    }
}

impl LoadedPlugin {
    /// "name@version"
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn world(&self) -> World {
        self.manifest.world
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
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

impl Runtime {
    /// Creates the engine, the linker, the epoch ticker and the reaper, and
    /// measures the copy of one transfer (`max-transfer-kib`): the error
    /// names the field and gives the measured time when this machine cannot
    /// keep a call within the deadline precision with it.
    pub fn new(config: RuntimeConfig, trusted_keys: Vec<VerifyingKey>) -> Result<Runtime, String> {
        config.validate()?;
        let step = Duration::from_millis(MAX_UNINTERRUPTIBLE_STEP_MS);
        let transfer_cost = measure_transfer(config.max_transfer_bytes() as usize, step);
        if transfer_cost > step {
            return Err(format!(
                "max-transfer-kib: {} KiB takes {:.1} ms of CPU to copy out of a plugin on \
                 this machine (measured now), more than the {MAX_UNINTERRUPTIBLE_STEP_MS} ms a step \
                 without a deadline check may take to keep calls within {} ms of their deadline; \
                 lower it",
                config.max_transfer_kib,
                transfer_cost.as_secs_f64() * 1e3,
                crate::config::DEADLINE_PRECISION_MS,
            ));
        }
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
        let ticker = Self::start_ticker(&engine, Duration::from_millis(config.epoch_tick_ms))?;
        let (retire, retired) = mpsc::channel::<FinishedCall>();
        let reaping = Arc::new(Reaping::default());
        let reaper = {
            let reaping = reaping.clone();
            std::thread::Builder::new()
                .name("plugin-reaper".into())
                .spawn(move || {
                    for done in retired {
                        let plugin = done._store.data().plugin_id;
                        reaping.started(plugin);
                        drop(done);
                        reaping.finished(plugin);
                    }
                })
                .map_err(|e| format!("reaper thread: {e}"))?
        };
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
            reaper: Some(Reaper {
                retire,
                thread: reaper,
            }),
            reaping,
            next_plugin_id: AtomicU64::new(0),
            transfer_cost,
        })
    }

    /// The epoch ticker: increments the engine's epoch every `tick` on an
    /// absolute schedule, so oversleeping once delays one tick and not all
    /// the following ones (after a long stall it restarts from now rather
    /// than bursting).
    fn start_ticker(engine: &Engine, tick: Duration) -> Result<Ticker, String> {
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

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many calls may run at once: `pool-instances`, but at most two
    /// per CPU this process may use. Further calls wait for a slot.
    pub fn concurrent_calls(&self) -> u32 {
        self.running
    }

    /// CPU time a worst-case transfer of `max-transfer-kib` took to copy on
    /// this machine, measured by `Runtime::new`.
    pub fn transfer_cost(&self) -> Duration {
        self.transfer_cost
    }

    /// Compiles a component, through the cache when one is configured.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, LoadSource), LoadError> {
        let digest = CodeCache::component_key(bytes);
        if let Some(cache) = &self.cache {
            if let Some(code) = cache.get(&digest) {
                // SAFETY: `code` comes from `Component::serialize` of this
                // host's engine (the cache key includes the engine's
                // compatibility hash) and its HMAC, keyed with a secret only
                // this host holds, verified: these are bytes we produced.
                match unsafe { Component::deserialize(&self.engine, &code) } {
                    Ok(c) => return Ok((c, LoadSource::Cache)),
                    Err(e) => tracing::warn!(error = %e, "cached code rejected; recompiling"),
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            let detail = format!("{e:#}");
            if detail.contains("not enabled") {
                LoadError::UnsupportedFeature { detail }
            } else {
                LoadError::Compile(detail)
            }
        })?;
        if let Some(cache) = &self.cache {
            match component.serialize() {
                Ok(code) => {
                    if let Err(e) = cache.put(&digest, &code) {
                        tracing::warn!(error = %e, "cannot write compiled-code cache");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot serialize compiled component"),
            }
        }
        Ok((component, LoadSource::Compiled))
    }

    /// Loads a plugin file's bytes: a signed package, or (developer mode
    /// only) a bare component, which then needs `world`.
    ///
    /// Preconditions checked here: signature by a trusted key (or developer
    /// mode), intact bytes, compatible WIT version, the expected world, only
    /// the WebAssembly features the sandbox can interrupt, only the host's
    /// own imports (each function by name and type), every export of the
    /// world with its types, and a fresh instance that comes up within the
    /// deadline and the memory cap.
    pub fn load(
        &self,
        bytes: &[u8],
        expected: Option<World>,
        settings: Vec<(String, String)>,
    ) -> Result<LoadedPlugin, LoadError> {
        let (manifest, signer, component_bytes) = if package::is_package(bytes) {
            let pkg = Package::parse(bytes)?;
            let signer = pkg.verify(&self.trusted_keys, self.config.developer_mode)?;
            (pkg.manifest, signer, pkg.component)
        } else {
            if !self.config.developer_mode {
                return Err(LoadError::Unsigned);
            }
            let world = expected.ok_or_else(|| {
                LoadError::MalformedPackage(
                    "a bare component has no manifest: name its world".into(),
                )
            })?;
            let manifest = Manifest {
                name: "unsigned".into(),
                version: "0.0.0".into(),
                world,
                wit_version: nasvisor_plugin_sdk::WIT_VERSION.into(),
                component_sha256: package::sha256_hex(bytes),
            };
            (manifest, None, bytes.to_vec())
        };
        if let Some(expected) = expected {
            if manifest.world != expected {
                return Err(LoadError::WrongWorld {
                    expected,
                    found: manifest.world.to_string(),
                });
            }
        }
        let world = manifest.world;
        let (component, load_source) = self.compile(&component_bytes)?;
        let ty = component.component_type();
        host_imports::check_imports(&self.engine, &ty)
            .map_err(|(import, detail)| LoadError::ForbiddenImport { import, detail })?;
        let mut exports = HashMap::new();
        for &f in world.exports() {
            let idx = component.get_export_index(None, f).ok_or_else(|| {
                let found: Vec<String> = ty
                    .exports(&self.engine)
                    .map(|(n, _)| n.to_string())
                    .collect();
                LoadError::ComponentMismatch {
                    world,
                    detail: format!("no export {f:?} (it exports {found:?})"),
                }
            })?;
            exports.insert(f, idx);
        }
        let pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::ComponentMismatch {
                    world,
                    detail: format!("{e:#}"),
                })?;
        let label: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        let plugin = LoadedPlugin {
            manifest,
            signer,
            load_source,
            pre,
            exports,
            settings: Arc::new(settings),
            label,
            id: self.next_plugin_id.fetch_add(1, Ordering::Relaxed),
        };
        crate::decision::typecheck(self, &plugin)?;
        Ok(plugin)
    }

    /// Takes a slot (waiting at most `wait`) and makes a fresh store for one
    /// call of `plugin`: memory cap, hostcall fuel, and a deadline
    /// `deadline-ms` from now.
    fn begin(
        &self,
        plugin: &LoadedPlugin,
        wall_clock_ms: u64,
        wait: Duration,
    ) -> Result<Call, CallError> {
        let waited = Instant::now();
        let permit = self.slots.acquire(wait).ok_or_else(|| CallError::NoSlot {
            waited_ms: waited.elapsed().as_millis() as u64,
        })?;
        let cpu_start = thread_cpu_time();
        let origin = Instant::now();
        let deadline = origin + Duration::from_millis(self.config.deadline_ms);
        let ctx = CallCtx {
            limiter: MemoryCap::new(self.config.memory_limit_bytes() as usize),
            settings: plugin.settings.clone(),
            wall_clock_ms,
            origin,
            log_budget: self.config.log_budget_bytes,
            logs_dropped: 0,
            plugin: plugin.label.clone(),
            plugin_id: plugin.id,
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|cx| &mut cx.limiter);
        store.set_hostcall_fuel(self.config.max_transfer_bytes() as usize);
        // At every tick, the running call compares the time with its
        // deadline.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        Ok(Call {
            store,
            permit,
            cpu_start,
            deadline,
        })
    }

    /// Ends a call: the store goes back to the pool here, or on the reaper
    /// thread when its memory grew past the part kept resident (resetting
    /// it costs in proportion to the pages the plugin touched).
    fn finish(&self, call: Call) {
        let data = call.store.data();
        if data.logs_dropped > 0 {
            tracing::warn!(plugin = %data.plugin, dropped = data.logs_dropped, "plugin log records dropped");
        }
        let expensive = data.limiter.largest > KEEP_RESIDENT_BYTES || data.limiter.hit.is_some();
        let plugin = data.plugin_id;
        let done = FinishedCall {
            _store: call.store,
            _permit: call.permit,
        };
        if expensive {
            if let Some(r) = &self.reaper {
                self.reaping.forget_idle();
                self.reaping.queued(plugin);
                if let Err(mpsc::SendError(done)) = r.retire.send(done) {
                    // The reaper is gone: drop it here.
                    drop(done);
                    self.reaping.finished(plugin);
                }
            }
        }
    }

    /// Instantiates `plugin` in a fresh store, as a decision does.
    fn instantiate(
        &self,
        plugin: &LoadedPlugin,
        wall_clock_ms: u64,
        wait: Duration,
    ) -> Result<(Call, Instance), (Option<Call>, CallError)> {
        let mut call = self
            .begin(plugin, wall_clock_ms, wait)
            .map_err(|e| (None, e))?;
        match plugin.pre.instantiate(&mut call.store) {
            Ok(instance) => Ok((call, instance)),
            Err(e) => {
                let e = self.classify(&call, e, true);
                Err((Some(call), e))
            }
        }
    }

    /// Instantiates `plugin` and hands the instance to `check`, for the
    /// load-time checks of its exports. A failed instantiation is
    /// `LoadError::Instantiation` with the call's error (deadline, trap,
    /// memory limit...); `check`'s error is the component's mismatch.
    pub(crate) fn check_instance(
        &self,
        plugin: &LoadedPlugin,
        check: impl FnOnce(&mut Store<CallCtx>, &Instance) -> Result<(), String>,
    ) -> Result<(), LoadError> {
        let mut attempts = 0;
        let (mut call, instance) = loop {
            attempts += 1;
            match self.instantiate(plugin, 0, LOAD_SLOT_WAIT) {
                Ok(ok) => break ok,
                Err((call, cause)) => {
                    if let Some(call) = call {
                        self.finish(call);
                    }
                    // A busy or starved host says nothing about the plugin:
                    // try again before refusing it.
                    if cause.is_plugin_fault() || attempts == LOAD_ATTEMPTS {
                        return Err(LoadError::Instantiation { cause });
                    }
                }
            }
        };
        let checked = check(&mut call.store, &instance);
        self.finish(call);
        checked.map_err(|detail| LoadError::ComponentMismatch {
            world: plugin.world(),
            detail,
        })
    }

    /// Checks that `export` of `instance` has the Rust signature `P -> R`.
    pub(crate) fn check_export<P, R>(
        plugin: &LoadedPlugin,
        store: &mut Store<CallCtx>,
        instance: &Instance,
        export: &str,
    ) -> Result<(), String>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let idx = plugin
            .exports
            .get(export)
            .ok_or_else(|| format!("no export {export}"))?;
        instance
            .get_typed_func::<P, R>(&mut *store, idx)
            .map_err(|e| format!("export {export:?} has the wrong type: {e:#}"))?;
        Ok(())
    }

    fn slot_wait(&self) -> Duration {
        Duration::from_millis(self.config.slot_wait_ms)
    }

    /// A fresh store and instance of `plugin`, dropped without a call: what
    /// every decision pays before the guest runs. For benchmarks.
    #[doc(hidden)]
    pub fn instantiate_only(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        match self.instantiate(plugin, 0, self.slot_wait()) {
            Ok((call, _)) => {
                self.finish(call);
                Ok(())
            }
            Err((call, e)) => {
                if let Some(call) = call {
                    self.finish(call);
                }
                Err(e)
            }
        }
    }

    /// Calls `export` in a fresh instance with the configured limits.
    pub fn call<P, R>(
        &self,
        plugin: &LoadedPlugin,
        export: &str,
        wall_clock_ms: u64,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let idx = plugin
            .exports
            .get(export)
            .ok_or_else(|| CallError::Instantiate(format!("no export {export}")))?;
        let (mut call, instance) = match self.instantiate(plugin, wall_clock_ms, self.slot_wait()) {
            Ok(ok) => ok,
            Err((call, e)) => {
                if let Some(call) = call {
                    self.finish(call);
                }
                return Err(e);
            }
        };
        let result = instance
            .get_typed_func::<P, R>(&mut call.store, idx)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))
            .and_then(|f| {
                f.call(&mut call.store, params)
                    .map_err(|e| self.classify(&call, e, false))
            })
            .and_then(|answer| {
                // A call whose thread was off the CPU when the deadline
                // passed can finish without another deadline check: its
                // answer came too late all the same.
                if Instant::now() > call.deadline {
                    return Err(self.late(&call));
                }
                Ok(answer)
            });
        self.finish(call);
        result
    }

    /// The error of a call that reached its deadline: the plugin's fault,
    /// unless the calling thread got less than half the deadline in CPU
    /// time (a plugin that runs never waits: no import blocks), which is the
    /// host's doing. Except when the reaper spent a quarter of the deadline
    /// or more, during the call, resetting memory this plugin touched in
    /// earlier calls: then the plugin starved itself.
    fn late(&self, call: &Call) -> CallError {
        let deadline_ms = self.config.deadline_ms;
        let deadline = Duration::from_millis(deadline_ms);
        let cpu = thread_cpu_time().saturating_sub(call.cpu_start);
        let data = call.store.data();
        if cpu < deadline / 2 && self.reaping.time_for(data.plugin_id, data.origin) < deadline / 4 {
            CallError::Starved {
                deadline_ms,
                cpu_ms: cpu.as_millis() as u64,
            }
        } else {
            CallError::DeadlineExceeded { deadline_ms }
        }
    }

    fn classify(&self, call: &Call, e: wasmtime::Error, instantiating: bool) -> CallError {
        if let Some(requested) = call.store.data().limiter.hit {
            return CallError::MemoryLimit {
                requested: requested as u64,
                limit: self.config.memory_limit_bytes(),
            };
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => self.late(call),
            Some(trap) => {
                let what = match trap {
                    wasmtime::Trap::UnreachableCodeReached => {
                        "unreachable code reached (the plugin panicked or aborted)".to_string()
                    }
                    wasmtime::Trap::StackOverflow => {
                        "stack overflow (recursion too deep)".to_string()
                    }
                    other => other.to_string(),
                };
                CallError::Trap(what)
            }
            None if e.chain().any(|c| c.to_string().contains(FUEL_EXHAUSTED)) => {
                CallError::InvalidOutput(format!(
                    "the plugin handed the host more than max-transfer-kib ({} KiB) at once \
                     (its answer, or the arguments of one host call)",
                    self.config.max_transfer_kib
                ))
            }
            None if instantiating => CallError::Instantiate(format!("{e:#}")),
            None => CallError::Trap(format!("{e:#}")),
        }
    }
}
