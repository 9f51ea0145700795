//! The scheduler's settings, read through [`Env`].
//!
//! | key | type | default | meaning |
//! |-----|------|---------|---------|
//! | `strategy` | `spread` or `pack` | `spread` | `spread` puts a VM on the host with the most free memory after placement; `pack` on the host with the least free memory that still fits (bin packing). |
//! | `affinity-bonus-mib` | u64 | 4096 | Memory (MiB) added to a host's score when it runs one of the VM's affinity VMs (soft affinity). |
//! | `max-moves` | u32, 0..=256 | 3 | Most moves one `rebalance` call proposes (the host accepts at most 256). |
//! | `imbalance-threshold-percent` | u64, 0..=100 | 20 | `rebalance` acts while the used-memory share of the most and the least loaded host differ by more than this many percentage points. |
//!
//! A value that does not parse is a `bad-settings` error naming the key.

use nasvisor_plugin_sdk::prelude::*;

/// Setting key: placement strategy.
pub const STRATEGY: &str = "strategy";
/// Setting key: soft-affinity bonus in MiB.
pub const AFFINITY_BONUS_MIB: &str = "affinity-bonus-mib";
/// Setting key: most moves per rebalance.
pub const MAX_MOVES: &str = "max-moves";
/// Setting key: imbalance threshold in percentage points.
pub const IMBALANCE_THRESHOLD_PERCENT: &str = "imbalance-threshold-percent";

/// Default of [`AFFINITY_BONUS_MIB`].
pub const DEFAULT_AFFINITY_BONUS_MIB: u64 = 4096;
/// Default of [`MAX_MOVES`].
pub const DEFAULT_MAX_MOVES: u32 = 3;
/// Largest accepted [`MAX_MOVES`] (the host refuses longer answers).
pub const MAX_MAX_MOVES: u32 = 256;
/// Default of [`IMBALANCE_THRESHOLD_PERCENT`].
pub const DEFAULT_IMBALANCE_THRESHOLD_PERCENT: u64 = 20;

/// How `place` ranks the hosts that can take a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Most free memory after placement first (even out the cluster).
    #[default]
    Spread,
    /// Least free memory after placement first (fill hosts up: bin packing).
    Pack,
}

impl Strategy {
    /// The setting value naming this strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::Pack => "pack",
        }
    }
}

/// Settings used by `place`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceSettings {
    /// See [`STRATEGY`].
    pub strategy: Strategy,
    /// See [`AFFINITY_BONUS_MIB`].
    pub affinity_bonus_mib: u64,
}

impl PlaceSettings {
    /// Read the placement settings, refusing unknown or malformed values.
    pub fn load(env: &dyn Env) -> Result<Self, PluginError> {
        let strategy = match env.setting(STRATEGY) {
            None => Strategy::default(),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "spread" => Strategy::Spread,
                "pack" => Strategy::Pack,
                _ => {
                    return Err(PluginError::new(
                        ErrorCode::BadSettings,
                        format!("setting {STRATEGY:?}: unknown value {v:?} (expected \"spread\" or \"pack\")"),
                    ))
                }
            },
        };
        let affinity_bonus_mib = env.setting_or(AFFINITY_BONUS_MIB, DEFAULT_AFFINITY_BONUS_MIB)?;
        Ok(PlaceSettings {
            strategy,
            affinity_bonus_mib,
        })
    }
}

/// Settings used by `rebalance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceSettings {
    /// See [`MAX_MOVES`].
    pub max_moves: u32,
    /// See [`IMBALANCE_THRESHOLD_PERCENT`].
    pub threshold_percent: u64,
}

impl RebalanceSettings {
    /// Read the rebalance settings; a threshold above 100 is refused.
    pub fn load(env: &dyn Env) -> Result<Self, PluginError> {
        let max_moves = env.setting_or(MAX_MOVES, DEFAULT_MAX_MOVES)?;
        if max_moves > MAX_MAX_MOVES {
            return Err(PluginError::new(
                ErrorCode::BadSettings,
                format!("setting {MAX_MOVES:?}: {max_moves} is above {MAX_MAX_MOVES}"),
            ));
        }
        let threshold_percent = env.setting_or(
            IMBALANCE_THRESHOLD_PERCENT,
            DEFAULT_IMBALANCE_THRESHOLD_PERCENT,
        )?;
        if threshold_percent > 100 {
            return Err(PluginError::new(
                ErrorCode::BadSettings,
                format!(
                    "setting {IMBALANCE_THRESHOLD_PERCENT:?}: {threshold_percent} is above 100"
                ),
            ));
        }
        Ok(RebalanceSettings {
            max_moves,
            threshold_percent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_with;

    #[test]
    fn defaults_apply_when_unset() {
        let env = env_with(&[]);
        let p = PlaceSettings::load(&env).unwrap();
        assert_eq!(p.strategy, Strategy::Spread);
        assert_eq!(p.affinity_bonus_mib, 4096);
        let r = RebalanceSettings::load(&env).unwrap();
        assert_eq!(r.max_moves, 3);
        assert_eq!(r.threshold_percent, 20);
    }

    #[test]
    fn strategy_accepts_both_values_case_insensitively() {
        let p = PlaceSettings::load(&env_with(&[("strategy", " Pack ")])).unwrap();
        assert_eq!(p.strategy, Strategy::Pack);
        let p = PlaceSettings::load(&env_with(&[("strategy", "spread")])).unwrap();
        assert_eq!(p.strategy, Strategy::Spread);
    }

    #[test]
    fn unknown_strategy_is_bad_settings_naming_the_key() {
        let e = PlaceSettings::load(&env_with(&[("strategy", "random")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(
            e.message.contains("strategy") && e.message.contains("random"),
            "{}",
            e.message
        );
    }

    #[test]
    fn malformed_numbers_are_bad_settings_naming_the_key() {
        let e = PlaceSettings::load(&env_with(&[("affinity-bonus-mib", "-1")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("affinity-bonus-mib"));
        let e = RebalanceSettings::load(&env_with(&[("max-moves", "many")])).unwrap_err();
        assert!(e.message.contains("max-moves"));
        let e = RebalanceSettings::load(&env_with(&[("max-moves", "257")])).unwrap_err();
        assert!(e.message.contains("max-moves") && e.message.contains("256"));
        assert_eq!(
            RebalanceSettings::load(&env_with(&[("max-moves", "256")]))
                .unwrap()
                .max_moves,
            256
        );
        let e = RebalanceSettings::load(&env_with(&[("imbalance-threshold-percent", "101")]))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("imbalance-threshold-percent"));
    }
}
