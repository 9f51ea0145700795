//! Default SHA policy (being written).
use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct DefaultSha;

impl ShaPolicy for DefaultSha {
    fn check_setup(&self, _env: &dyn Env, _host: &HostInfo, _raw: &str) -> Result<SetupCheck, PluginError> {
        Err(PluginError::new(ErrorCode::Internal, "not written yet"))
    }
    fn parse_status(&self, _env: &dyn Env, _raw: &str) -> Result<ShaPairState, PluginError> {
        Err(PluginError::new(ErrorCode::Internal, "not written yet"))
    }
    fn on_state_change(&self, _env: &dyn Env, _view: &ClusterView, _host: &str, _previous: Option<&ShaPairState>, _current: &ShaPairState) -> Result<Vec<HaAction>, PluginError> {
        Err(PluginError::new(ErrorCode::Internal, "not written yet"))
    }
}

nasvisor_plugin_sdk::export_sha!(DefaultSha);
