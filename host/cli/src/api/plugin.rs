//! The API-backed `nasvisor plugin` commands: list (every host's state of
//! every world), install, uninstall, reset. The local ones (build, sign,
//! run, replay...) are in `plugin_cmd`.

use super::client::{enc, CliError, CliResult, Client};
use super::render::{cell, Out, Render};
use base64::Engine as _;
use nasvisor_api_types::{
    DecisionView, PluginHostStateView, PluginInstall, PluginResetView, PluginSlotState, PluginView,
    PluginWorld,
};
use serde::Serialize;
use std::path::Path;

/// `nasvisor plugin list`: the plugins of every host, one row per world
/// and host (quarantine is per host).
pub fn list(c: &Client, out: Out) -> CliResult<()> {
    let plugins: Vec<PluginView> = c.get("/api/v1/plugins")?;
    match out.doc() {
        Some(doc) => doc.print(&plugins),
        None => out.list(&rows(&plugins)),
    }
    Ok(())
}

/// `nasvisor plugin decisions`: a host's last decisions.
pub fn decisions(
    c: &Client,
    out: Out,
    world: Option<&str>,
    host: Option<&str>,
    limit: u32,
) -> CliResult<()> {
    let mut path = format!("/api/v1/decisions?limit={limit}");
    if let Some(w) = world {
        path.push_str(&format!("&world={}", enc(w)));
    }
    if let Some(h) = host {
        path.push_str(&format!("&host={}", enc(h)));
    }
    let list: Vec<DecisionView> = c.get(&path)?;
    match out.doc() {
        Some(doc) => doc.print(&list),
        None => out.list(&list),
    }
    Ok(())
}

impl Render for DecisionView {
    const COLUMNS: &'static [&'static str] = &[
        "time", "host", "world", "function", "plugin", "outcome", "cause", "ms",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.time),
            cell(&self.host),
            cell(&self.world),
            cell(&self.function),
            cell(&self.plugin),
            cell(&self.outcome),
            cell(&self.cause),
            format!("{:.1}", self.duration_us as f64 / 1000.0),
        ]
    }
}

/// `nasvisor plugin install FILE`: the package goes to every host.
pub fn install(c: &Client, out: Out, package: &Path) -> CliResult<()> {
    let bytes =
        std::fs::read(package).map_err(|e| CliError::msg(format!("{}: {e}", package.display())))?;
    let body = PluginInstall {
        package: base64::engine::general_purpose::STANDARD.encode(bytes),
    };
    let p: PluginView = c.send("POST", "/api/v1/plugins", &body)?;
    out.done(&p, |p| {
        format!(
            "plugin {}@{} installed for the {} world on every host",
            cell(&p.name),
            cell(&p.version),
            cell(&p.world)
        )
    });
    Ok(())
}

/// `nasvisor plugin uninstall WORLD`.
pub fn uninstall(c: &Client, out: Out, world: &str) -> CliResult<()> {
    c.call::<()>("DELETE", &format!("/api/v1/plugins/{}", enc(world)))?;
    out.note(|| format!("the cluster's {world} plugin removed; the built-in default decides"));
    Ok(())
}

/// `nasvisor plugin reset WORLD`: lifts its quarantine on every host.
pub fn reset(c: &Client, out: Out, world: &str) -> CliResult<()> {
    let r: PluginResetView = c.call("POST", &format!("/api/v1/plugins/{}/reset", enc(world)))?;
    out.done(&r, |r| cell(&r.message));
    Ok(())
}

/// A row of `plugin list`: one world's plugin on one host.
#[derive(Debug, Serialize)]
struct PluginRow<'a> {
    world: PluginWorld,
    name: String,
    version: Option<String>,
    vendor: &'a str,
    host: Option<&'a str>,
    state: PluginSlotState,
    consecutive_failures: u32,
    decisions: u64,
    failures: u64,
    fallbacks: u64,
    last_failure: Option<&'a str>,
}

impl<'a> PluginRow<'a> {
    /// The plugin as a host loaded it: its name and version from the
    /// host's label (`name@version`), `builtin-<world>` without one.
    fn on_host(p: &'a PluginView, h: &'a PluginHostStateView) -> Self {
        let (name, version) = match h.plugin.as_deref() {
            Some(label) => match label.rsplit_once('@') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (label.to_string(), None),
            },
            None => (format!("builtin-{}", h.world.as_str()), None),
        };
        Self {
            world: h.world,
            name,
            version,
            vendor: &p.vendor,
            host: Some(&h.host),
            state: h.state,
            consecutive_failures: h.consecutive_failures,
            decisions: h.decisions,
            failures: h.failures,
            fallbacks: h.fallbacks,
            last_failure: h.last_failure.as_deref(),
        }
    }

    /// A plugin no host reported on: as the answering host sees it.
    fn answering(p: &'a PluginView) -> Self {
        Self {
            world: p.world,
            name: p.name.clone(),
            version: Some(p.version.clone()),
            vendor: &p.vendor,
            host: None,
            state: p.state,
            consecutive_failures: p.consecutive_failures,
            decisions: p.decisions,
            failures: p.failures,
            fallbacks: p.fallbacks,
            last_failure: p.last_failure.as_deref(),
        }
    }
}

/// The rows of `plugin list`: each world's state on each host.
fn rows(plugins: &[PluginView]) -> Vec<PluginRow<'_>> {
    let mut rows = Vec::new();
    for p in plugins {
        if p.hosts.is_empty() {
            rows.push(PluginRow::answering(p));
        }
        rows.extend(p.hosts.iter().map(|h| PluginRow::on_host(p, h)));
    }
    rows
}

impl Render for PluginRow<'_> {
    const COLUMNS: &'static [&'static str] = &[
        "world",
        "name",
        "version",
        "vendor",
        "host",
        "state",
        "fails_in_row",
        "decisions",
        "failures",
        "fallbacks",
        "last_failure",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.world),
            cell(&self.name),
            cell(&self.version),
            cell(self.vendor),
            cell(&self.host),
            cell(&self.state),
            cell(&self.consecutive_failures),
            cell(&self.decisions),
            cell(&self.failures),
            cell(&self.fallbacks),
            cell(&self.last_failure),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(host: &str, plugin: Option<&str>, state: PluginSlotState) -> PluginHostStateView {
        PluginHostStateView {
            host: host.into(),
            world: PluginWorld::HaPolicy,
            plugin: plugin.map(Into::into),
            state,
            consecutive_failures: 3,
            decisions: 1,
            failures: 3,
            fallbacks: 5,
            last_failure: Some("trap".into()),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn one_row_per_world_and_host() {
        let mut p = PluginView {
            name: "evil".into(),
            world: PluginWorld::HaPolicy,
            version: "0.1.0".into(),
            vendor: "acme".into(),
            state: PluginSlotState::Active,
            consecutive_failures: 0,
            decisions: 4,
            failures: 0,
            fallbacks: 0,
            last_failure: None,
            hosts: vec![
                host("nas1", Some("evil@0.1.0"), PluginSlotState::Quarantined),
                host("nas2", None, PluginSlotState::Fallback),
            ],
        };
        let line = |r: &PluginRow| r.row().join(" ");
        let r = rows(std::slice::from_ref(&p));
        assert_eq!(
            line(&r[0]),
            "ha-policy evil 0.1.0 acme nas1 quarantined 3 1 3 5 trap"
        );
        assert_eq!(
            line(&r[1]),
            "ha-policy builtin-ha-policy - acme nas2 fallback 3 1 3 5 trap"
        );
        p.hosts.clear();
        let r = rows(std::slice::from_ref(&p));
        assert_eq!(r.len(), 1);
        assert_eq!(line(&r[0]), "ha-policy evil 0.1.0 acme - active 0 4 0 0 -");
    }
}
