//! # Plugin test harness
//!
//! Runs a plugin both natively (the crate linked into the test) and as its
//! built component (through the real sandbox), against scenario files, and
//! reports every scenario where the two disagree or where the answer differs
//! from the scenario's expectation.
//!
//! A scenario file is JSON:
//!
//! ```json
//! {
//!   "description": "an HA VM gets a passive host",
//!   "settings": {"strategy": "spread"},
//!   "input": {"function": "place", "view": {...}, "request": {...}},
//!   "expect": {"ok": {"host": "h2", "passive-host": "h1", "reason": "..."}},
//!   "expect-host": "h2"
//! }
//! ```
//!
//! `input` uses the JSON forms of docs/plugin-json.md. `expect` (optional) is
//! the whole answer; `expect-match` (optional) must be contained in the
//! answer (see [`contains`]), for when reasons or other details may change.
//!
//! In a vendor crate's tests:
//!
//! ```ignore
//! let report = nasvisor_plugin_harness::run(
//!     "target/plugins/my-scheduler.nvplugin",
//!     NativePolicies::scheduler(&MyScheduler),
//!     "tests/scenarios",
//! ).unwrap();
//! report.assert_ok();
//! ```

pub use nasvisor_plugin_host::NativePolicies;
use nasvisor_plugin_host::{
    answer_json, invoke, invoke_native_with, DecisionInput, LoadedPlugin, NativeEnv, Runtime,
    RuntimeConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{path}: {reason}")]
    Scenario { path: PathBuf, reason: String },
    #[error("cannot load the component {path}: {reason}")]
    Component { path: PathBuf, reason: String },
    #[error("{0}")]
    Runtime(String),
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub input: DecisionInput,
    #[serde(default)]
    pub expect: Option<serde_json::Value>,
    #[serde(default)]
    pub expect_match: Option<serde_json::Value>,
    /// Wall clock the plugin sees (ms since the epoch); default 0.
    #[serde(default)]
    pub wall_clock_ms: u64,
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub path: PathBuf,
    pub native: serde_json::Value,
    pub component: serde_json::Value,
    /// Why the scenario failed; empty when it passed.
    pub failures: Vec<String>,
}

/// All scenarios' outcomes.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<ScenarioResult>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &ScenarioResult> {
        self.results.iter().filter(|r| !r.failures.is_empty())
    }

    /// Panics with every failure when any scenario failed, or when there were
    /// no scenarios at all.
    pub fn assert_ok(&self) {
        assert!(!self.results.is_empty(), "no scenarios were run");
        let failures: Vec<String> = self
            .failed()
            .map(|r| format!("{}:\n  {}", r.path.display(), r.failures.join("\n  ")))
            .collect();
        assert!(
            failures.is_empty(),
            "{} scenario(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// Reads every `*.json` scenario in `dir` (sorted by name).
pub fn load_scenarios(dir: &Path) -> Result<Vec<(PathBuf, Scenario)>, HarnessError> {
    let err = |path: &Path, reason: String| HarnessError::Scenario {
        path: path.to_path_buf(),
        reason,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| err(&p, e.to_string()))?;
            let s: Scenario = serde_json::from_str(&text).map_err(|e| err(&p, e.to_string()))?;
            Ok((p, s))
        })
        .collect()
}

/// True when `want` is contained in `got`: objects key by key (recursively);
/// a non-empty array when each of its elements is contained in some element
/// of `got`'s array (in any order); an empty array only in an empty array;
/// everything else when equal.
pub fn contains(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value::{Array, Object};
    match (got, want) {
        (Object(g), Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (Array(g), Array(w)) if w.is_empty() => g.is_empty(),
        (Array(g), Array(w)) => w.iter().all(|wv| g.iter().any(|gv| contains(gv, wv))),
        _ => got == want,
    }
}

fn load_component(
    rt: &Runtime,
    path: &Path,
    world: nasvisor_plugin_sdk::World,
    settings: Vec<(String, String)>,
) -> Result<LoadedPlugin, HarnessError> {
    let bytes = std::fs::read(path).map_err(|e| HarnessError::Component {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    rt.load(&bytes, Some(world), settings)
        .map_err(|e| HarnessError::Component {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Runs every scenario of `dir` through `native` and through the component at
/// `component` (a package or bare component; loaded in developer mode, since
/// the harness tests builds, not signatures).
pub fn run(
    component: impl AsRef<Path>,
    native: NativePolicies<'_>,
    dir: impl AsRef<Path>,
) -> Result<Report, HarnessError> {
    let component = component.as_ref();
    let rt = Runtime::new(
        RuntimeConfig {
            developer_mode: true,
            pool_instances: 4,
            ..RuntimeConfig::default()
        },
        vec![],
    )
    .map_err(HarnessError::Runtime)?;
    let mut report = Report::default();
    for (path, s) in load_scenarios(dir.as_ref())? {
        let settings: Vec<(String, String)> = s.settings.clone().into_iter().collect();
        let plugin = load_component(&rt, component, s.input.world(), settings.clone())?;
        let env = NativeEnv::new(settings, s.wall_clock_ms);
        let native_answer = answer_json(&invoke_native_with(&native, &s.input, &env));
        let component_answer = match invoke(&rt, &plugin, &s.input, s.wall_clock_ms) {
            Ok(a) => answer_json(&a),
            Err(e) => serde_json::json!({ "failure": e.to_string() }),
        };
        let mut failures = Vec::new();
        if native_answer != component_answer {
            failures.push(format!(
                "native and component disagree:\n    native:    {native_answer}\n    component: {component_answer}"
            ));
        }
        if let Some(want) = &s.expect {
            if &component_answer != want {
                failures.push(format!("expected {want}\n    got      {component_answer}"));
            }
        }
        if let Some(want) = &s.expect_match {
            if !contains(&component_answer, want) {
                failures.push(format!(
                    "expected to contain {want}\n    got {component_answer}"
                ));
            }
        }
        report.results.push(ScenarioResult {
            path,
            native: native_answer,
            component: component_answer,
            failures,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn containment() {
        let got = json!({"ok": {"host": "h1", "reason": "x", "list": [1, 2]}});
        assert!(contains(&got, &json!({"ok": {"host": "h1"}})));
        assert!(!contains(&got, &json!({"ok": {"host": "h2"}})));
        assert!(contains(&got, &json!({"ok": {"list": [2]}})));
        assert!(!contains(&got, &json!({"ok": {"list": [3]}})));
        assert!(!contains(&got, &json!({"ok": {"list": []}})));
        assert!(contains(&json!({"l": []}), &json!({"l": []})));
        assert!(!contains(&got, &json!({"error": {}})));
        let actions = json!({"ok": [{"fence": {"host": "h1", "reason": "r"}}, {"notify": {"severity": "info"}}]});
        assert!(contains(
            &actions,
            &json!({"ok": [{"notify": {"severity": "info"}}]})
        ));
        assert!(!contains(&actions, &json!({"ok": [{"failover": {}}]})));
    }
}
