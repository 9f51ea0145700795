//! Settings of the plugin runtime. Every field has a default.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The most a call may run past its deadline: the epoch tick plus the longest
/// step the plugin can make the host take without a deadline check (see
/// [`MAX_UNINTERRUPTIBLE_STEP_MS`]) must fit in it.
pub const DEADLINE_PRECISION_MS: u64 = 5;
/// The longest epoch tick that keeps a call within [`DEADLINE_PRECISION_MS`]
/// of its deadline, with the longest uninterruptible step on top.
pub const MAX_EPOCH_TICK_MS: u64 = 2;
/// The longest host-side step a plugin may cause that no deadline check can
/// interrupt (copying one transfer out of the plugin). `max-transfer-kib` is
/// refused at start when this machine takes longer for it.
pub const MAX_UNINTERRUPTIBLE_STEP_MS: u64 = 2;

/// The smallest `max-transfer-kib`.
pub const MIN_TRANSFER_KIB: u64 = 64;
/// What `max-transfer-kib` is when unset: the first of these this machine
/// copies within `MAX_UNINTERRUPTIBLE_STEP_MS`, else the last.
pub const AUTO_TRANSFER_KIB: [u64; 3] = [256, 128, MIN_TRANSFER_KIB];

/// Limits and behaviour of the plugin runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Wall-clock deadline of one plugin call (instantiation included), in
    /// milliseconds. A call is stopped at most `DEADLINE_PRECISION_MS` after it.
    pub deadline_ms: u64,
    /// Cap on a plugin instance's linear memory, in MiB.
    pub memory_limit_mib: u64,
    /// Period of the clock that makes running plugins check their deadline,
    /// in milliseconds (1 or 2).
    pub epoch_tick_ms: u64,
    /// Consecutive failed decisions after which a plugin is quarantined.
    pub max_consecutive_failures: u32,
    /// Instances the pooling allocator keeps slots for. At most this many
    /// plugin calls, and at most two per CPU, run at once; further calls
    /// wait for a slot.
    pub pool_instances: u32,
    /// How long a call waits for a slot before the native default decides
    /// instead (a fault of the host, not of the plugin), in milliseconds.
    /// The default, twice the default deadline, lets a call wait out one
    /// that runs to its deadline.
    pub slot_wait_ms: u64,
    /// The most a plugin may hand the host at once (its answer, or the
    /// arguments of one host call), in KiB. Copying it is the longest step a
    /// plugin can make the host take without a deadline check, so the
    /// runtime measures that copy at start: a value set here that this
    /// machine cannot copy within `MAX_UNINTERRUPTIBLE_STEP_MS` is refused;
    /// unset, it is the largest of [`AUTO_TRANSFER_KIB`] that this machine
    /// copies in time (the smallest, with a warning, on a machine too slow
    /// for any). [`RuntimeConfig::max_transfer_kib`] is the value in force.
    #[serde(rename = "max-transfer-kib")]
    pub max_transfer_kib_setting: Option<u64>,
    /// The value in force: set by `Runtime::new` from the setting and the
    /// measured copy (what is given here is overwritten).
    #[serde(skip)]
    pub transfer_kib: u64,
    /// Directory of the compiled-code cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of log text one call may write through the `log` import.
    pub log_budget_bytes: usize,
    /// Load unsigned plugins (developer mode). Off in production.
    pub developer_mode: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline_ms: 50,
            memory_limit_mib: 64,
            epoch_tick_ms: 1,
            max_consecutive_failures: 3,
            pool_instances: 32,
            slot_wait_ms: 100,
            max_transfer_kib_setting: None,
            transfer_kib: AUTO_TRANSFER_KIB[0],
            cache_dir: None,
            log_budget_bytes: 64 * 1024,
            developer_mode: false,
        }
    }
}

impl RuntimeConfig {
    /// Checks the settings; the error names the field and the reason. What
    /// depends on this machine's speed is checked by `Runtime::new`.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline_ms == 0 || self.deadline_ms > 60_000 {
            return Err(format!(
                "deadline-ms: {} is out of range (1..=60000)",
                self.deadline_ms
            ));
        }
        if self.memory_limit_mib == 0 || self.memory_limit_mib > 4096 {
            return Err(format!(
                "memory-limit-mib: {} is out of range (1..=4096)",
                self.memory_limit_mib
            ));
        }
        if self.epoch_tick_ms == 0 || self.epoch_tick_ms > MAX_EPOCH_TICK_MS {
            return Err(format!(
                "epoch-tick-ms: {} is out of range (1..={MAX_EPOCH_TICK_MS}): a longer tick \
                 cannot stop a plugin within {DEADLINE_PRECISION_MS} ms of its deadline",
                self.epoch_tick_ms
            ));
        }
        if self.max_consecutive_failures == 0 {
            return Err("max-consecutive-failures: must be at least 1".into());
        }
        if self.pool_instances == 0 || self.pool_instances > 10_000 {
            return Err(format!(
                "pool-instances: {} is out of range (1..=10000)",
                self.pool_instances
            ));
        }
        if self.slot_wait_ms > 60_000 {
            return Err(format!(
                "slot-wait-ms: {} is out of range (0..=60000)",
                self.slot_wait_ms
            ));
        }
        if let Some(kib) = self.max_transfer_kib_setting {
            if !(MIN_TRANSFER_KIB..=1 << 20).contains(&kib) {
                return Err(format!(
                    "max-transfer-kib: {kib} is out of range ({MIN_TRANSFER_KIB}..=1048576)"
                ));
            }
        }
        // Unset, it may come down to the smallest automatic value.
        let floor = self.max_transfer_kib_setting.unwrap_or(MIN_TRANSFER_KIB) * 1024;
        if self.log_budget_bytes as u64 > floor {
            return Err(format!(
                "log-budget-bytes: {} is more than max-transfer-kib ({floor} bytes{})",
                self.log_budget_bytes,
                if self.max_transfer_kib_setting.is_none() {
                    ", the least it is when unset"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }

    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_limit_mib * 1024 * 1024
    }

    /// The most a plugin may hand the host at once, in KiB, in force.
    pub fn max_transfer_kib(&self) -> u64 {
        self.transfer_kib
    }

    pub fn max_transfer_bytes(&self) -> u64 {
        self.transfer_kib * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_tick_too_long_for_the_deadline_precision_is_refused() {
        let cfg = RuntimeConfig {
            epoch_tick_ms: 3,
            ..RuntimeConfig::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(e.starts_with("epoch-tick-ms: 3 is out of range"), "{e}");
        assert!(e.contains("within 5 ms"), "{e}");
    }

    #[test]
    fn every_memory_cap_up_to_4096_mib_is_accepted_next_to_the_shortest_deadline() {
        for mib in [1, 64, 1024, 4096] {
            let cfg = RuntimeConfig {
                memory_limit_mib: mib,
                deadline_ms: 1,
                ..RuntimeConfig::default()
            };
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn out_of_range_slot_wait_and_transfer_limits_name_their_field() {
        let e = RuntimeConfig {
            slot_wait_ms: 60_001,
            ..RuntimeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("slot-wait-ms: 60001"), "{e}");
        let e = RuntimeConfig {
            max_transfer_kib_setting: Some(1),
            ..RuntimeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("max-transfer-kib: 1 "), "{e}");
        let e = RuntimeConfig {
            log_budget_bytes: 8 << 20,
            ..RuntimeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("log-budget-bytes: 8388608"), "{e}");
    }
}
