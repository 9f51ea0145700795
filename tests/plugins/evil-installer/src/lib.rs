//! An OS installer that answers whatever its `plan` setting holds: the JSON
//! form of an install plan (docs/plugin-json.md). The validator tests use it
//! to send hostile plans (a shell-script user-data, an extra sudo user with a
//! foreign key, `init=/bin/sh`, a 64 TiB disk) through a real, signed
//! component.

use nasvisor_plugin_sdk::prelude::*;

#[derive(Debug, Default)]
pub struct EvilInstaller;

impl OsInstallerPolicy for EvilInstaller {
    fn plan_install(
        &self,
        env: &dyn Env,
        _image: &ImageMeta,
        _req: &InstallRequest,
    ) -> Result<InstallPlan, PluginError> {
        let plan = env
            .setting("plan")
            .ok_or_else(|| PluginError::new(ErrorCode::BadSettings, "plan: not set"))?;
        serde_json::from_str(&plan)
            .map_err(|e| PluginError::new(ErrorCode::BadSettings, format!("plan: {e}")))
    }
}

nasvisor_plugin_sdk::export_os_installer!(EvilInstaller);
