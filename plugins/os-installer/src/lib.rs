//! # nasvisor's default OS installer
//!
//! [`plan_install`](OsInstallerPolicy::plan_install) turns a system image and
//! an administrator's request into an install plan: how to make the disk, the
//! cloud-init NoCloud seed (`meta-data`, `user-data`, `network-config`), boot
//! settings, and how the host knows the install is done. The rules are in
//! [`plan`], the field checks in [`validate`], the seed files in [`seed`]
//! (written by hand with the safe quoting of [`yaml`]), the settings in
//! [`settings`].
//!
//! Every request field that reaches the guest is validated against an
//! allow-list and every string is quoted, so hostile input cannot add keys to
//! the cloud-config or commands to the guest. Password hashes are required to
//! be crypt(3) hashes: a clear-text password is refused.

pub mod plan;
pub mod seed;
pub mod settings;
#[cfg(test)]
mod testutil;
pub mod validate;
pub mod yaml;

use nasvisor_plugin_sdk::prelude::*;

/// The default OS installer: image clone plus a cloud-init NoCloud seed.
#[derive(Debug, Default)]
pub struct DefaultOsInstaller;

impl OsInstallerPolicy for DefaultOsInstaller {
    /// See [`plan::plan_install`].
    fn plan_install(
        &self,
        env: &dyn Env,
        image: &ImageMeta,
        req: &InstallRequest,
    ) -> Result<InstallPlan, PluginError> {
        plan::plan_install(env, image, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn trait_method_delegates_and_plan_round_trips_json() {
        let p = DefaultOsInstaller
            .plan_install(&env_with(&[]), &disk_image(), &full_request())
            .unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<InstallPlan>(&j).unwrap(), p);
        assert!(j.contains("\"serial-marker\":\"NASVISOR-READY\""), "{j}");
    }
}

nasvisor_plugin_sdk::export_os_installer!(DefaultOsInstaller);
