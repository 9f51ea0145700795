//! Default scheduler (placeholder while the pipeline is brought up).
use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct DefaultScheduler;

impl SchedulerPolicy for DefaultScheduler {
    fn place(&self, env: &dyn Env, _view: &ClusterView, req: &PlacementRequest) -> Result<Placement, PluginError> {
        env.info("placing");
        let host = req.eligible_hosts.first().cloned().ok_or_else(|| PluginError::new(ErrorCode::NoSolution, "no eligible host"))?;
        Ok(Placement { host, passive_host: None, reason: "first".into() })
    }
    fn rebalance(&self, _env: &dyn Env, _view: &ClusterView) -> Result<Vec<RebalanceMove>, PluginError> {
        Ok(vec![])
    }
}

nasvisor_plugin_sdk::export_scheduler!(DefaultScheduler);
