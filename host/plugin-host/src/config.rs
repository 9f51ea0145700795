//! Settings of the plugin runtime. Every field has a default.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Limits and behaviour of the plugin runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Wall-clock deadline of one plugin call, in milliseconds (epoch based).
    pub deadline_ms: u64,
    /// Cap on a plugin instance's linear memory, in MiB.
    pub memory_limit_mib: u64,
    /// Granularity of the epoch clock, in milliseconds.
    pub epoch_tick_ms: u64,
    /// Consecutive failed decisions after which a plugin is quarantined.
    pub max_consecutive_failures: u32,
    /// Instances the pooling allocator keeps slots for (concurrent calls).
    pub pool_instances: u32,
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
            cache_dir: None,
            log_budget_bytes: 64 * 1024,
            developer_mode: false,
        }
    }
}

impl RuntimeConfig {
    /// Checks the settings; the error names the field and the reason.
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
        if self.epoch_tick_ms == 0 || self.epoch_tick_ms > self.deadline_ms {
            return Err(format!(
                "epoch-tick-ms: {} must be between 1 and deadline-ms ({})",
                self.epoch_tick_ms, self.deadline_ms
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
        Ok(())
    }

    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_limit_mib * 1024 * 1024
    }
}
