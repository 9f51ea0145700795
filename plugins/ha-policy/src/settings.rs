//! The HA policy's settings, read through [`Env`].
//!
//! | key | type | default | meaning |
//! |-----|------|---------|---------|
//! | `fence-after-ms` | u64 | 3000 | Fence a host once its heartbeats were missed for at least this long (and the view has quorum). |
//! | `restart-base-delay-ms` | u64 | 1000 | Delay before restarting a VM after its first recent fault; doubles with each further recent fault. |
//! | `restart-max-delay-ms` | u64 | 60000 | Cap of the restart delay. |
//! | `max-restarts` | u32 | 3 | Restart a faulted VM in place while its recent faults are at most this many; beyond, fail it over (HA) or give up. nasvisord passes its `[cluster] ha-max-restarts` here unless it is set, and refuses a value above it. |
//! | `sha-hold-ms` | u64 | 30000 | Hold while an SHA switchover or split brain is reported. |
//! | `quorum-hold-ms` | u64 | 5000 | Hold while the view has no quorum. |
//!
//! A value that does not parse is a `bad-settings` error naming the key. The
//! millisecond settings may not exceed [`MAX_DELAY_MS`] (one hour, the longest
//! hold or restart delay the host accepts).

use nasvisor_plugin_sdk::prelude::*;

/// Largest accepted value of the millisecond settings: one hour.
pub const MAX_DELAY_MS: u64 = nasvisor_plugin_sdk::limits::MAX_HOLD_MS;

/// Setting key, see the module documentation.
pub const FENCE_AFTER_MS: &str = "fence-after-ms";
/// Setting key, see the module documentation.
pub const RESTART_BASE_DELAY_MS: &str = "restart-base-delay-ms";
/// Setting key, see the module documentation.
pub const RESTART_MAX_DELAY_MS: &str = "restart-max-delay-ms";
/// Setting key, see the module documentation.
pub const MAX_RESTARTS: &str = "max-restarts";
/// Setting key, see the module documentation.
pub const SHA_HOLD_MS: &str = "sha-hold-ms";
/// Setting key, see the module documentation.
pub const QUORUM_HOLD_MS: &str = "quorum-hold-ms";

/// All settings of the HA policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// See [`FENCE_AFTER_MS`].
    pub fence_after_ms: u64,
    /// See [`RESTART_BASE_DELAY_MS`].
    pub restart_base_delay_ms: u64,
    /// See [`RESTART_MAX_DELAY_MS`].
    pub restart_max_delay_ms: u64,
    /// See [`MAX_RESTARTS`].
    pub max_restarts: u32,
    /// See [`SHA_HOLD_MS`].
    pub sha_hold_ms: u64,
    /// See [`QUORUM_HOLD_MS`].
    pub quorum_hold_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fence_after_ms: 3_000,
            restart_base_delay_ms: 1_000,
            restart_max_delay_ms: 60_000,
            max_restarts: 3,
            sha_hold_ms: 30_000,
            quorum_hold_ms: 5_000,
        }
    }
}

impl Settings {
    /// Read every setting, using the defaults for unset keys.
    pub fn load(env: &dyn Env) -> Result<Self, PluginError> {
        let d = Settings::default();
        let ms = |key: &str, default: u64| -> Result<u64, PluginError> {
            let v = env.setting_or(key, default)?;
            if v > MAX_DELAY_MS {
                return Err(PluginError::new(
                    ErrorCode::BadSettings,
                    format!("setting {key:?}: {v} ms is more than the {MAX_DELAY_MS} ms accepted"),
                ));
            }
            Ok(v)
        };
        Ok(Settings {
            fence_after_ms: ms(FENCE_AFTER_MS, d.fence_after_ms)?,
            restart_base_delay_ms: ms(RESTART_BASE_DELAY_MS, d.restart_base_delay_ms)?,
            restart_max_delay_ms: ms(RESTART_MAX_DELAY_MS, d.restart_max_delay_ms)?,
            max_restarts: env.setting_or(MAX_RESTARTS, d.max_restarts)?,
            sha_hold_ms: ms(SHA_HOLD_MS, d.sha_hold_ms)?,
            quorum_hold_ms: ms(QUORUM_HOLD_MS, d.quorum_hold_ms)?,
        })
    }

    /// Restart delay after the `recent_faults`-th recent fault (at least 1):
    /// `restart-base-delay-ms * 2^(recent_faults - 1)`, capped at
    /// `restart-max-delay-ms`, without overflow.
    pub fn restart_delay_ms(&self, recent_faults: u32) -> u64 {
        let exp = recent_faults.max(1) - 1;
        let factor = if exp >= 64 { u64::MAX } else { 1u64 << exp };
        self.restart_base_delay_ms
            .saturating_mul(factor)
            .min(self.restart_max_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_with;

    #[test]
    fn defaults() {
        assert_eq!(Settings::load(&env_with(&[])).unwrap(), Settings::default());
        let s = Settings::default();
        assert_eq!(
            (
                s.fence_after_ms,
                s.restart_base_delay_ms,
                s.restart_max_delay_ms,
                s.max_restarts,
                s.sha_hold_ms
            ),
            (3_000, 1_000, 60_000, 3, 30_000)
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for key in [
            FENCE_AFTER_MS,
            RESTART_BASE_DELAY_MS,
            RESTART_MAX_DELAY_MS,
            MAX_RESTARTS,
            SHA_HOLD_MS,
            QUORUM_HOLD_MS,
        ] {
            let e = Settings::load(&env_with(&[(key, "soon")])).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadSettings);
            assert!(e.message.contains(key), "{}", e.message);
        }
    }

    #[test]
    fn delays_above_one_hour_are_refused() {
        for key in [
            FENCE_AFTER_MS,
            RESTART_BASE_DELAY_MS,
            RESTART_MAX_DELAY_MS,
            SHA_HOLD_MS,
            QUORUM_HOLD_MS,
        ] {
            assert!(Settings::load(&env_with(&[(key, "3600000")])).is_ok());
            let e = Settings::load(&env_with(&[(key, "3600001")])).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadSettings);
            assert!(e.message.contains(key), "{}", e.message);
        }
        assert!(Settings::load(&env_with(&[(MAX_RESTARTS, "4000000000")])).is_ok());
    }

    #[test]
    fn restart_delay_doubles_and_caps() {
        let s = Settings::default();
        assert_eq!(s.restart_delay_ms(0), 1_000);
        assert_eq!(s.restart_delay_ms(1), 1_000);
        assert_eq!(s.restart_delay_ms(2), 2_000);
        assert_eq!(s.restart_delay_ms(3), 4_000);
        assert_eq!(s.restart_delay_ms(6), 32_000);
        assert_eq!(s.restart_delay_ms(7), 60_000);
        assert_eq!(s.restart_delay_ms(64), 60_000);
        assert_eq!(s.restart_delay_ms(65), 60_000);
        assert_eq!(s.restart_delay_ms(u32::MAX), 60_000);
        let huge = Settings {
            restart_max_delay_ms: u64::MAX,
            ..s
        };
        assert_eq!(huge.restart_delay_ms(200), u64::MAX);
    }
}
