//! Default HA policy (being written).
use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct DefaultHaPolicy;

impl HaPolicy for DefaultHaPolicy {
    fn react(&self, _env: &dyn Env, _view: &ClusterView, _events: &[Event]) -> Result<Vec<HaAction>, PluginError> {
        Err(PluginError::new(ErrorCode::Internal, "not written yet"))
    }
}

nasvisor_plugin_sdk::export_ha_policy!(DefaultHaPolicy);
