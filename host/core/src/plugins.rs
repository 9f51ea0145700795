//! Plugins of the whole cluster: `nasvisor plugin install` commits a signed
//! package through the log (chunked, with its SHA-256) and every host loads
//! it into its policy host, checking the signature against its own trusted
//! keys; `plugin uninstall` removes it and the built-in default decides.
//! A plugin the cluster installed replaces the one of the host's plugin
//! directory for that world, also after a restart.

use crate::errors;
use crate::model::{kind, now_rfc3339, rfc3339_ms, Severity};
use crate::plugin_reports::{reported_text, slot_state, world_view, PluginHostState};
use crate::{lock, Inner};
use nasvisor_api_types::CoreError;
use nasvisor_api_types::PluginInstall;
use nasvisor_api_types::PluginView;
use nasvisor_best_effort::BestEffort;
use nasvisor_plugin_host::package::{self, Package};
use nasvisor_plugin_host::{Decision, DecisionInput};
use nasvisor_plugin_sdk::World;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of a package per chunk record (base64 grows them by a third; the
/// store takes 1 MiB per value).
const CHUNK: usize = 512 * 1024;

/// The cluster's plugin of one world (kind `plugin`, key the world).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub world: String,
    /// `name@version` from the manifest.
    pub label: String,
    /// SHA-256 of the package, hex.
    pub sha256: String,
    pub size: u64,
    pub chunks: u32,
    pub installed_at: String,
}

/// What this host applied of the cluster's plugin records.
#[derive(Default)]
pub(crate) struct ClusterPlugins {
    /// World -> SHA-256 of the package loaded (or refused) here.
    applied: Mutex<HashMap<String, String>>,
}

fn chunk_key(world: &str, sha: &str, i: u32) -> String {
    format!("{world}-{}-{i}", &sha[..16])
}

impl Inner {
    /// Makes one decision, on a blocking thread: a plugin call runs
    /// CPU-bound guest code (and may wait for an instance slot) for up to
    /// its deadline, which must not stall the async workers. Every decision
    /// of the core goes through here. Then wakes the report task, which
    /// records the faults the decision may have queued.
    pub(crate) async fn decide(&self, input: DecisionInput) -> Result<Decision, CoreError> {
        let policy = self.policy.clone();
        let decision = tokio::task::spawn_blocking(move || policy.decide(input))
            .await
            .map_err(|e| errors::internal(format!("the decision thread failed: {e}")))?;
        self.plugin_reports.wake();
        Ok(decision)
    }

    /// `GET /api/v1/decisions`: this host's last decisions (of `world`),
    /// oldest first, the last `limit`.
    pub(crate) fn recent_decisions(
        &self,
        world: Option<&str>,
        limit: u32,
    ) -> Vec<nasvisor_api_types::DecisionView> {
        let mut all: Vec<_> = self
            .policy
            .recent_decisions()
            .into_iter()
            .filter(|d| world.is_none_or(|w| d.world.as_str() == w))
            .collect();
        let skip = all.len().saturating_sub(limit as usize);
        all.drain(..skip);
        all.into_iter()
            .map(|d| nasvisor_api_types::DecisionView {
                time: rfc3339_ms(d.at_ms),
                host: self.host.id.clone(),
                world: d.world.as_str().to_string(),
                function: d.function,
                plugin: d.plugin,
                outcome: d.outcome.to_string(),
                cause: d.cause,
                duration_us: d.duration_us,
            })
            .collect()
    }

    /// `GET /api/v1/plugins`: one [`PluginView`] per world.
    pub(crate) fn plugin_views(&self) -> Vec<PluginView> {
        self.policy
            .status()
            .into_iter()
            .map(|s| {
                let (name, version) = match &s.plugin {
                    Some(p) => match p.rsplit_once('@') {
                        Some((n, v)) => (n.to_string(), v.to_string()),
                        None => (p.clone(), String::new()),
                    },
                    None => (
                        format!("builtin-{}", s.world.as_str()),
                        env!("CARGO_PKG_VERSION").to_string(),
                    ),
                };
                PluginView {
                    name,
                    world: world_view(s.world),
                    version,
                    vendor: s
                        .signer
                        .clone()
                        .unwrap_or_else(|| "nasvisor (built in)".into()),
                    state: slot_state(&s),
                    consecutive_failures: s.consecutive_failures,
                    decisions: s.decisions,
                    failures: s.failures,
                    fallbacks: s.fallbacks,
                    last_failure: s.last_failure.as_deref().map(reported_text),
                    hosts: self
                        .plugin_host_states(&s)
                        .iter()
                        .map(PluginHostState::view)
                        .collect(),
                }
            })
            .collect()
    }

    pub(crate) async fn install_plugin(&self, req: PluginInstall) -> Result<PluginView, CoreError> {
        let bytes = req
            .bytes()
            .map_err(|e| errors::invalid("package", e.reason))?;
        if !package::is_package(&bytes) {
            return Err(errors::invalid(
                "package",
                "not a signed nasvisor plugin package (.nvplugin, from `nasvisor plugin build` or `plugin sign`)",
            ));
        }
        let pkg = Package::parse(&bytes).map_err(|e| errors::invalid("package", e.to_string()))?;
        let world = pkg.manifest.world;
        // Loading checks the signature, the world and the WIT version here
        // before anything is committed.
        let plugin = self
            .policy
            .runtime()
            .load(&bytes, Some(world), self.policy.settings(world))
            .map_err(|e| errors::invalid("package", e.to_string()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let chunks = bytes.chunks(CHUNK).collect::<Vec<_>>();
        for (i, c) in chunks.iter().enumerate() {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(c);
            self.db
                .put(
                    kind::PLUGIN_CHUNK,
                    &chunk_key(world.as_str(), &sha, i as u32),
                    &data,
                    None,
                )
                .await?;
        }
        let previous = self
            .db
            .get::<PluginRecord>(kind::PLUGIN, world.as_str())
            .map(|(r, _)| r);
        let rec = PluginRecord {
            world: world.as_str().to_string(),
            label: plugin.label().to_string(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            chunks: chunks.len() as u32,
            installed_at: now_rfc3339(),
        };
        self.db
            .put(kind::PLUGIN, world.as_str(), &rec, None)
            .await?;
        self.policy.install(plugin);
        lock(&self.cluster_plugins.applied).insert(rec.world.clone(), sha.clone());
        if let Some(old) = previous.filter(|p| p.sha256 != sha) {
            self.delete_chunks(&old).await;
        }
        self.event(
            "plugin-installed",
            Severity::Info,
            Some(format!("plugin/{}", rec.world)),
            format!(
                "plugin {} installed for the {} world on every host",
                rec.label, rec.world
            ),
        )
        .await;
        self.plugin_views()
            .into_iter()
            .find(|p| p.world == world_view(world))
            .ok_or_else(|| errors::internal("the installed plugin is not listed"))
    }

    pub(crate) async fn uninstall_plugin(&self, world: &str) -> Result<(), CoreError> {
        let w: World = world
            .parse()
            .map_err(|_| errors::invalid("world", format!("no world {world:?}")))?;
        let Some((rec, _)) = self.db.get::<PluginRecord>(kind::PLUGIN, world) else {
            return Err(errors::not_found(format!(
                "a plugin installed in the cluster for the {world} world"
            )));
        };
        self.db.delete(kind::PLUGIN, world).await?;
        self.delete_chunks(&rec).await;
        self.policy.uninstall(w);
        lock(&self.cluster_plugins.applied).remove(world);
        self.event(
            "plugin-uninstalled",
            Severity::Info,
            Some(format!("plugin/{world}")),
            format!(
                "plugin {} removed; the built-in {world} policy decides",
                rec.label
            ),
        )
        .await;
        Ok(())
    }

    async fn delete_chunks(&self, rec: &PluginRecord) {
        for i in 0..rec.chunks {
            self.db
                .delete(kind::PLUGIN_CHUNK, &chunk_key(&rec.world, &rec.sha256, i))
                .await
                .best_effort("remove a stored chunk of a replaced plugin");
        }
    }

    /// Loads the cluster's plugins this host has not applied yet (at start
    /// and after every change another host made).
    pub(crate) async fn apply_cluster_plugins(&self) {
        let records: Vec<PluginRecord> = self.db.list(kind::PLUGIN);
        let mut seen = Vec::new();
        for rec in records {
            seen.push(rec.world.clone());
            let done = lock(&self.cluster_plugins.applied).get(&rec.world) == Some(&rec.sha256);
            if done {
                continue;
            }
            lock(&self.cluster_plugins.applied).insert(rec.world.clone(), rec.sha256.clone());
            match self.load_cluster_plugin(&rec) {
                Ok(()) => {
                    tracing::info!(world = %rec.world, plugin = %rec.label, "cluster plugin loaded")
                }
                Err(e) => {
                    self.event(
                        "plugin-refused",
                        Severity::Error,
                        Some(format!("plugin/{}", rec.world)),
                        format!(
                            "host {} cannot load the cluster's plugin {}: {e}",
                            self.host.id, rec.label
                        ),
                    )
                    .await;
                }
            }
        }
        // Removed elsewhere.
        let gone: Vec<String> = lock(&self.cluster_plugins.applied)
            .keys()
            .filter(|w| !seen.contains(w))
            .cloned()
            .collect();
        for w in gone {
            lock(&self.cluster_plugins.applied).remove(&w);
            if let Ok(world) = w.parse::<World>() {
                self.policy.uninstall(world);
                tracing::info!(world = %w, "cluster plugin removed; the built-in default decides");
            }
        }
    }

    fn load_cluster_plugin(&self, rec: &PluginRecord) -> Result<(), String> {
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(rec.size as usize);
        for i in 0..rec.chunks {
            let key = chunk_key(&rec.world, &rec.sha256, i);
            let (data, _) = self
                .db
                .get::<String>(kind::PLUGIN_CHUNK, &key)
                .ok_or_else(|| format!("chunk {i} of the package is missing"))?;
            let part = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("chunk {i}: {e}"))?;
            bytes.extend_from_slice(&part);
        }
        if hex::encode(Sha256::digest(&bytes)) != rec.sha256 {
            return Err("the package does not match its SHA-256".into());
        }
        let world: World = rec
            .world
            .parse()
            .map_err(|_| format!("no world {}", rec.world))?;
        let plugin = self
            .policy
            .runtime()
            .load(&bytes, Some(world), self.policy.settings(world))
            .map_err(|e| e.to_string())?;
        self.policy.install(plugin);
        Ok(())
    }
}
