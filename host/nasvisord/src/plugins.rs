//! Bringing up the policy host from the configuration: trusted keys, the
//! sandbox runtime, the decision journal, and the plugins of the plugin dir.

use crate::config::Config;
use anyhow::{anyhow, Context, Result};
use nasvisor_plugin_host::journal::Journal;
use nasvisor_plugin_host::package::{Package, VerifyingKey};
use nasvisor_plugin_host::{LoadSource, PolicyHost, Runtime};
use nasvisor_plugin_sdk::World;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What happened to one plugin file at start-up.
#[derive(Debug)]
pub struct PluginLoad {
    pub path: PathBuf,
    pub result: Result<Loaded, String>,
}

/// A plugin installed at start-up.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Loaded {
    pub world: World,
    pub plugin: String,
    /// Compiled now, or read from the compiled-code cache.
    pub load_source: LoadSource,
}

fn trusted_keys(dir: &Path) -> Result<Vec<VerifyingKey>> {
    let keys = match nasvisor_signing::read_public_keys_in(dir) {
        Ok(keys) => keys,
        Err(e) if e.is_not_found() && !dir.exists() => {
            tracing::warn!(dir = %dir.display(), "no trusted-keys directory: only developer mode could load plugins");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e).context("plugins.trusted-keys-dir"),
    };
    for t in &keys {
        tracing::info!(key = %nasvisor_signing::key_id(&t.key), path = %t.path.display(), "trusted plugin signer");
    }
    Ok(keys.into_iter().map(|t| t.key).collect())
}

/// Creates the policy host and installs every plugin package of the plugin
/// dir. A package that fails to load is reported; its world keeps the
/// built-in default.
pub fn start(cfg: &Config) -> Result<(Arc<PolicyHost>, Vec<PluginLoad>)> {
    let mut rt_cfg = cfg.plugins.runtime.clone();
    if rt_cfg.cache_dir.is_none() {
        rt_cfg.cache_dir = Some(cfg.data_dir.join("plugin-cache"));
    }
    let keys = trusted_keys(&cfg.plugins.trusted_keys_dir)?;
    let rt = Arc::new(Runtime::new(rt_cfg, keys).map_err(|e| anyhow!("plugins.runtime: {e}"))?);
    let journal = if cfg.plugins.journal_max_bytes > 0 {
        let p = cfg.data_dir.join("journal/decisions.jsonl");
        Some(
            Journal::open(&p, cfg.plugins.journal_max_bytes)
                .with_context(|| format!("journal {}", p.display()))?,
        )
    } else {
        None
    };
    let host = Arc::new(PolicyHost::new(rt.clone(), journal));
    for w in World::ALL {
        host.set_native_settings(w, settings_for(cfg, w));
    }
    let mut loads = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&cfg.plugins.dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "nvplugin"))
            .collect(),
        Err(e) => {
            tracing::warn!(dir = %cfg.plugins.dir.display(), error = %e, "no plugin directory: built-in defaults decide");
            Vec::new()
        }
    };
    files.sort();
    let mut taken: Vec<(World, PathBuf)> = Vec::new();
    for path in files {
        let result = load_one(&rt, &host, cfg, &path, &mut taken);
        match &result {
            Ok(l) => {
                tracing::info!(world = %l.world, plugin = %l.plugin, source = ?l.load_source, "plugin loaded")
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "plugin refused"),
        }
        loads.push(PluginLoad { path, result });
    }
    Ok((host, loads))
}

fn settings_for(cfg: &Config, w: World) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = cfg
        .plugins
        .settings
        .get(w.as_str())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    // The host stops restarting a VM in place past `ha-max-restarts`
    // whatever the policy answers: the policy's own limit is the host's,
    // so that its failover comes at that limit (a larger one is refused by
    // the config check).
    if w == World::HaPolicy && !settings.iter().any(|(k, _)| k == HA_MAX_RESTARTS_KEY) {
        settings.push((
            HA_MAX_RESTARTS_KEY.to_string(),
            cfg.cluster.ha_max_restarts.to_string(),
        ));
    }
    settings
}

/// The bundled ha-policy's restart limit setting.
pub(crate) const HA_MAX_RESTARTS_KEY: &str = "max-restarts";

fn load_one(
    rt: &Runtime,
    host: &PolicyHost,
    cfg: &Config,
    path: &Path,
    taken: &mut Vec<(World, PathBuf)>,
) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let world = Package::parse(&bytes)
        .map_err(|e| e.to_string())?
        .manifest
        .world;
    if let Some((_, other)) = taken.iter().find(|(w, _)| *w == world) {
        return Err(format!(
            "{} already provides the {world} world; one package per world",
            other.display()
        ));
    }
    let plugin = rt
        .load(&bytes, Some(world), settings_for(cfg, world))
        .map_err(|e| e.to_string())?;
    let loaded = Loaded {
        world,
        plugin: plugin.label().to_string(),
        load_source: plugin.load_source,
    };
    host.install(plugin);
    taken.push((world, path.to_path_buf()));
    Ok(loaded)
}
