//! The SHA policy's settings, read through [`Env`].
//!
//! | key | type | default | meaning |
//! |-----|------|---------|---------|
//! | `resource` | string | (first resource) | Which DRBD resource of the status is the SHA pair. Empty means unset. |
//! | `sha-hold-ms` | u64, at most 3600000 | 30000 | How long `on-state-change` asks the host to hold during an SHA switchover or split brain. |
//!
//! A value that does not parse is a `bad-settings` error naming the key.

use nasvisor_plugin_sdk::prelude::*;

/// Setting key: the DRBD resource to read.
pub const RESOURCE: &str = "resource";
/// Setting key: hold time during a switchover or split brain.
pub const SHA_HOLD_MS: &str = "sha-hold-ms";
/// Largest accepted [`SHA_HOLD_MS`]: one hour, the longest hold the host accepts.
pub const MAX_SHA_HOLD_MS: u64 = 3_600_000;
/// Default of [`SHA_HOLD_MS`].
pub const DEFAULT_SHA_HOLD_MS: u64 = 30_000;

/// The `resource` setting, `None` when unset or blank.
pub fn resource(env: &dyn Env) -> Option<String> {
    env.setting(RESOURCE)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The `sha-hold-ms` setting.
pub fn sha_hold_ms(env: &dyn Env) -> Result<u64, PluginError> {
    let v = env.setting_or(SHA_HOLD_MS, DEFAULT_SHA_HOLD_MS)?;
    if v > MAX_SHA_HOLD_MS {
        return Err(PluginError::new(
            ErrorCode::BadSettings,
            format!(
                "setting {SHA_HOLD_MS:?}: {v} ms is more than the {MAX_SHA_HOLD_MS} ms accepted"
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_with;

    #[test]
    fn defaults_and_values() {
        assert_eq!(resource(&env_with(&[])), None);
        assert_eq!(resource(&env_with(&[("resource", "  ")])), None);
        assert_eq!(
            resource(&env_with(&[("resource", " r1 ")])).as_deref(),
            Some("r1")
        );
        assert_eq!(sha_hold_ms(&env_with(&[])).unwrap(), 30_000);
        assert_eq!(sha_hold_ms(&env_with(&[("sha-hold-ms", "5")])).unwrap(), 5);
        let e = sha_hold_ms(&env_with(&[("sha-hold-ms", "-5")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("sha-hold-ms"));
        assert_eq!(
            sha_hold_ms(&env_with(&[("sha-hold-ms", "3600000")])).unwrap(),
            3_600_000
        );
        let e = sha_hold_ms(&env_with(&[("sha-hold-ms", "3600001")])).unwrap_err();
        assert!(e.message.contains("sha-hold-ms"));
    }
}
