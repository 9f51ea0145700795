//! The wasmtime side: one engine with the pooling allocator and an epoch
//! ticker, a linker with the host imports, compilation (through the cache),
//! and one fresh store per call with a memory cap and a deadline.

use crate::cache::CodeCache;
use crate::config::RuntimeConfig;
use crate::error::{CallError, LoadError};
use crate::host_imports::{self, CallCtx, MemoryCap, HOST_INTERFACE, TYPES_INTERFACE};
use crate::package::{self, Manifest, Package};
use ed25519_dalek::VerifyingKey;
use nasvisor_plugin_sdk::World;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Linker, Lower,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

/// Bytes of each pooled linear memory kept resident (reset in place rather
/// than released) between instances: covers what a decision of the default
/// plugins touches, so RSS is bounded by this times the slots in use.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Bytes of each pooled table kept resident between instances.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;

/// The plugin runtime: shared by every plugin and every call.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallCtx>,
    config: RuntimeConfig,
    trusted_keys: Vec<VerifyingKey>,
    cache: Option<CodeCache>,
    ticker_stop: Arc<AtomicBool>,
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
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
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

impl Runtime {
    /// Creates the engine, the linker and the epoch ticker.
    pub fn new(config: RuntimeConfig, trusted_keys: Vec<VerifyingKey>) -> Result<Runtime, String> {
        config.validate()?;
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::default();
        let n = config.pool_instances;
        pool.total_component_instances(n);
        pool.total_core_instances(n * 2);
        pool.total_memories(n * 2);
        pool.total_tables(n * 2);
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
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = Duration::from_millis(config.epoch_tick_ms);
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("epoch thread: {e}"))?;
        }
        Ok(Runtime {
            engine,
            linker,
            config,
            trusted_keys,
            cache,
            ticker_stop,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
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
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
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
    /// the host's own imports, and every export of the world with its types.
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
        for (name, _) in ty.imports(&self.engine) {
            if name != HOST_INTERFACE && name != TYPES_INTERFACE {
                return Err(LoadError::ForbiddenImport {
                    import: name.to_string(),
                });
            }
        }
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
        };
        crate::decision::typecheck(self, &plugin)
            .map_err(|detail| LoadError::ComponentMismatch { world, detail })?;
        Ok(plugin)
    }

    fn new_store(&self, plugin: &LoadedPlugin, wall_clock_ms: u64) -> Store<CallCtx> {
        let ctx = CallCtx {
            limiter: MemoryCap {
                limit: self.config.memory_limit_bytes() as usize,
                hit: None,
            },
            settings: plugin.settings.clone(),
            wall_clock_ms,
            origin: Instant::now(),
            log_budget: self.config.log_budget_bytes,
            logs_dropped: 0,
            plugin: plugin.label.clone(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|cx| &mut cx.limiter);
        // Ticks are `epoch_tick_ms` long; one extra tick so the deadline is
        // never shorter than configured.
        let ticks = self.config.deadline_ms.div_ceil(self.config.epoch_tick_ms) + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Checks that `export` has the Rust signature `P -> R`, in a throwaway
    /// instance.
    pub(crate) fn typecheck_export<P, R>(
        &self,
        plugin: &LoadedPlugin,
        export: &str,
    ) -> Result<(), String>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let mut store = self.new_store(plugin, 0);
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("instantiation: {e:#}"))?;
        let idx = plugin
            .exports
            .get(export)
            .ok_or_else(|| format!("no export {export}"))?;
        instance
            .get_typed_func::<P, R>(&mut store, idx)
            .map_err(|e| format!("export {export:?} has the wrong type: {e:#}"))?;
        Ok(())
    }

    /// A fresh store and instance of `plugin`, dropped without a call: what
    /// every decision pays before the guest runs. For benchmarks.
    #[doc(hidden)]
    pub fn instantiate_only(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        let mut store = self.new_store(plugin, 0);
        plugin
            .pre
            .instantiate(&mut store)
            .map(drop)
            .map_err(|e| self.classify(&store, e, true))
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
        let mut store = self.new_store(plugin, wall_clock_ms);
        let idx = plugin
            .exports
            .get(export)
            .ok_or_else(|| CallError::Instantiate(format!("no export {export}")))?;
        let result = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e, true))
            .and_then(|instance| {
                let f = instance
                    .get_typed_func::<P, R>(&mut store, idx)
                    .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
                f.call(&mut store, params)
                    .map_err(|e| self.classify(&store, e, false))
            });
        if store.data().logs_dropped > 0 {
            tracing::warn!(plugin = %plugin.label, dropped = store.data().logs_dropped, "plugin log records dropped");
        }
        result
    }

    fn classify(
        &self,
        store: &Store<CallCtx>,
        e: wasmtime::Error,
        instantiating: bool,
    ) -> CallError {
        if let Some(requested) = store.data().limiter.hit {
            return CallError::MemoryLimit {
                requested: requested as u64,
                limit: self.config.memory_limit_bytes(),
            };
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::DeadlineExceeded {
                deadline_ms: self.config.deadline_ms,
            },
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
            None if instantiating => CallError::Instantiate(format!("{e:#}")),
            None => CallError::Trap(format!("{e:#}")),
        }
    }
}
