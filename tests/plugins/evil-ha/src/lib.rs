//! An HA policy that answers whatever its `answer` setting holds: the JSON
//! form of a list of actions (docs/plugin-json.md), or nothing when unset.
//! The validator tests use it to send hostile answers (fencing healthy
//! hosts, failing over stopped VMs, overcommitting a host) through a real,
//! signed component.

use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct EvilHa;

impl HaPolicy for EvilHa {
    fn react(
        &self,
        env: &dyn Env,
        _view: &ClusterView,
        _events: &[Event],
    ) -> Result<Vec<HaAction>, PluginError> {
        match env.setting("answer") {
            None => Ok(Vec::new()),
            Some(a) => serde_json::from_str(&a)
                .map_err(|e| PluginError::new(ErrorCode::BadSettings, format!("answer: {e}"))),
        }
    }
}

nasvisor_plugin_sdk::export_ha_policy!(EvilHa);
