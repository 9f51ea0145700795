//! Loading a plugin: verifying its package, compiling it (through the
//! cache), checking its imports and exports, and a first instance.

use super::Runtime;
use crate::cache::CodeCache;
use crate::error::{CallError, LoadError};
use crate::host_imports::{self, CallCtx};
use crate::package::{self, Manifest, Package};
use nasvisor_plugin_sdk::World;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
};
use wasmtime::Store;

/// How long loading a plugin waits for a slot for its load-time check.
const LOAD_SLOT_WAIT: Duration = Duration::from_secs(5);
/// Instantiations a load-time check tries when the host is at fault (no
/// slot, a starved CPU) before it gives up.
const LOAD_ATTEMPTS: u32 = 5;

/// Whether a failed load-time instantiation is tried again. The host's
/// faults are, up to [`LOAD_ATTEMPTS`]. So is a first instance that ran past
/// the deadline: the first instance of a plugin pays for what no decision
/// pays (the compiled code's pages faulted in cold, the host's first-use
/// set-up), which on a slow board at boot, or under emulation, can take
/// longer than a decision's whole deadline. A second, warm instance judges
/// the plugin; one that runs past the deadline again is refused.
fn load_retries(cause: &CallError, attempts: u32) -> bool {
    attempts < LOAD_ATTEMPTS
        && (!cause.is_plugin_fault()
            || (attempts == 1 && matches!(cause, CallError::DeadlineExceeded { .. })))
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

    /// The index of `export`, one of its world's exports.
    pub(super) fn export_index(&self, export: &str) -> Result<&ComponentExportIndex, String> {
        self.exports
            .get(export)
            .ok_or_else(|| format!("no export {export}"))
    }
}

impl Runtime {
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
                    // A busy or starved host, or a cold first instance, says
                    // nothing about the plugin: try again before refusing it.
                    if !load_retries(&cause, attempts) {
                        tracing::debug!(plugin = %plugin.manifest.name, attempts, error = %cause, "the load-time instance failed");
                        return Err(LoadError::Instantiation { cause });
                    }
                    tracing::debug!(plugin = %plugin.manifest.name, attempts, error = %cause, "the load-time instance failed; trying again");
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
        let idx = plugin.export_index(export)?;
        instance
            .get_typed_func::<P, R>(&mut *store, idx)
            .map_err(|e| format!("export {export:?} has the wrong type: {e:#}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_first_instance_past_the_deadline_is_tried_once_more_and_only_once() {
        let late = CallError::DeadlineExceeded { deadline_ms: 50 };
        assert!(load_retries(&late, 1));
        assert!(!load_retries(&late, 2));
        let starved = CallError::Starved {
            deadline_ms: 50,
            cpu_ms: 3,
        };
        assert!((1..LOAD_ATTEMPTS).all(|a| load_retries(&starved, a)));
        assert!(!load_retries(&starved, LOAD_ATTEMPTS));
        let trap = CallError::Trap("unreachable".into());
        assert!(!load_retries(&trap, 1));
    }
}
