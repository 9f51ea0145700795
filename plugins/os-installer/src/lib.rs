//! Default OS installer (being written).
use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct DefaultOsInstaller;

impl OsInstallerPolicy for DefaultOsInstaller {
    fn plan_install(&self, _env: &dyn Env, _image: &ImageMeta, _req: &InstallRequest) -> Result<InstallPlan, PluginError> {
        Err(PluginError::new(ErrorCode::Internal, "not written yet"))
    }
}

nasvisor_plugin_sdk::export_os_installer!(DefaultOsInstaller);
