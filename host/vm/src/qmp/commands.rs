//! Typed helpers for the QMP commands nasvisor uses, and their reply types.
//!
//! Reply structs decode the fields nasvisor reads and keep the rest in `extra`,
//! so newer QEMU versions that add fields still decode.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{QmpClient, QmpError};

/// QEMU's `RunState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Debug,
    Inmigrate,
    InternalError,
    IoError,
    Paused,
    Postmigrate,
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    Shutdown,
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
    /// A state this library does not know.
    #[serde(other)]
    Unknown,
}

/// Reply of `query-status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    pub running: bool,
    pub status: RunState,
}

/// One entry of `query-cpus-fast`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInfoFast {
    pub cpu_index: u32,
    pub qom_path: String,
    /// The host thread running this vCPU.
    pub thread_id: i64,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockInfo {
    /// Legacy drive name; empty for `-blockdev` nodes.
    #[serde(default)]
    pub device: String,
    /// The QOM path of the guest device the node is attached to.
    #[serde(default)]
    pub qdev: Option<String>,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub removable: bool,
    #[serde(default)]
    pub inserted: Option<BlockDeviceInfo>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The medium of a [`BlockInfo`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockDeviceInfo {
    pub file: String,
    #[serde(default)]
    pub node_name: Option<String>,
    pub ro: bool,
    pub drv: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reply of `query-migrate`. Every field is optional: QEMU omits them before a
/// migration starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    #[serde(default)]
    pub status: Option<String>,
    /// Milliseconds since the migration started.
    #[serde(default)]
    pub total_time: Option<u64>,
    /// Milliseconds the guest was stopped (after completion).
    #[serde(default)]
    pub downtime: Option<u64>,
    #[serde(default)]
    pub expected_downtime: Option<u64>,
    #[serde(default)]
    pub setup_time: Option<u64>,
    #[serde(default)]
    pub ram: Option<MigrationRamStats>,
    #[serde(default)]
    pub error_desc: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// RAM statistics of a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationRamStats {
    #[serde(default)]
    pub transferred: u64,
    #[serde(default)]
    pub remaining: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub mbps: f64,
    /// Passes over the dirty bitmap so far (1 after the first full copy).
    #[serde(default)]
    pub dirty_sync_count: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn unit(result: Result<Value, QmpError>) -> Result<(), QmpError> {
    result.map(|_| ())
}

impl QmpClient {
    /// `query-status`: whether the vCPUs run, and QEMU's run state.
    pub async fn query_status(&self) -> Result<StatusInfo, QmpError> {
        self.execute_as("query-status", None).await
    }

    /// `cont`: resume the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        unit(self.execute("cont", None).await)
    }

    /// `stop`: pause the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        unit(self.execute("stop", None).await)
    }

    /// `system_powerdown`: press the ACPI power button. The guest may ignore it.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        unit(self.execute("system_powerdown", None).await)
    }

    /// `system_reset`: hard-reset the VM.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        unit(self.execute("system_reset", None).await)
    }

    /// `quit`: make QEMU exit at once. QEMU may close the socket before or right
    /// after replying; both count as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_disconnected() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `query-cpus-fast`: the vCPUs and their host threads.
    pub async fn query_cpus_fast(&self) -> Result<Vec<CpuInfoFast>, QmpError> {
        self.execute_as("query-cpus-fast", None).await
    }

    /// `query-block`: the guest's block devices and their media.
    pub async fn query_block(&self) -> Result<Vec<BlockInfo>, QmpError> {
        self.execute_as("query-block", None).await
    }

    /// `query-migrate`: the status of the current or last outgoing migration.
    pub async fn query_migrate(&self) -> Result<MigrationInfo, QmpError> {
        self.execute_as("query-migrate", None).await
    }

    /// `migrate`: start an outgoing migration to `uri` (e.g. `tcp:10.0.0.2:4444`).
    /// Progress arrives through [`Self::query_migrate`], and as `MIGRATION`
    /// events once the `events` capability is on
    /// ([`Self::migrate_set_capabilities`]`(&[("events", true)])`).
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        unit(self.execute("migrate", Some(json!({ "uri": uri }))).await)
    }

    /// `migrate-incoming`: on a QEMU started with `-incoming defer`, listen on `uri`.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        unit(
            self.execute("migrate-incoming", Some(json!({ "uri": uri })))
                .await,
        )
    }

    /// `migrate_cancel`: cancel the outgoing migration.
    pub async fn migrate_cancel(&self) -> Result<(), QmpError> {
        unit(self.execute("migrate_cancel", None).await)
    }

    /// `migrate-set-capabilities` with `(capability, state)` pairs.
    pub async fn migrate_set_capabilities(
        &self,
        capabilities: &[(&str, bool)],
    ) -> Result<(), QmpError> {
        let caps: Vec<Value> = capabilities
            .iter()
            .map(|(name, state)| json!({ "capability": name, "state": state }))
            .collect();
        unit(
            self.execute(
                "migrate-set-capabilities",
                Some(json!({ "capabilities": caps })),
            )
            .await,
        )
    }

    /// `migrate-set-parameters` with a JSON object of parameters, e.g.
    /// `{"downtime-limit": 300, "max-bandwidth": 1073741824}`.
    pub async fn migrate_set_parameters(&self, parameters: Value) -> Result<(), QmpError> {
        unit(
            self.execute("migrate-set-parameters", Some(parameters))
                .await,
        )
    }

    /// `blockdev-add` with the `BlockdevOptions` object, e.g.
    /// `{"driver": "nbd", "node-name": "target", "server": {...}, "export": "vda"}`.
    pub async fn blockdev_add(&self, options: Value) -> Result<(), QmpError> {
        unit(self.execute("blockdev-add", Some(options)).await)
    }

    /// `blockdev-del`: remove a node added with `blockdev-add`.
    pub async fn blockdev_del(&self, node_name: &str) -> Result<(), QmpError> {
        unit(
            self.execute("blockdev-del", Some(json!({ "node-name": node_name })))
                .await,
        )
    }

    /// `blockdev-mirror`: mirror node `device` onto node `target`.
    /// `extra` adds options such as `{"copy-mode": "write-blocking"}`.
    pub async fn blockdev_mirror(
        &self,
        job_id: &str,
        device: &str,
        target: &str,
        sync: &str,
        extra: Option<Map<String, Value>>,
    ) -> Result<(), QmpError> {
        let mut args = Map::new();
        args.insert("job-id".into(), json!(job_id));
        args.insert("device".into(), json!(device));
        args.insert("target".into(), json!(target));
        args.insert("sync".into(), json!(sync));
        if let Some(extra) = extra {
            args.extend(extra);
        }
        unit(
            self.execute("blockdev-mirror", Some(Value::Object(args)))
                .await,
        )
    }

    /// `block-job-cancel`. For a ready mirror, a non-forced cancel completes it
    /// without pivoting.
    pub async fn block_job_cancel(&self, device: &str, force: bool) -> Result<(), QmpError> {
        unit(
            self.execute(
                "block-job-cancel",
                Some(json!({ "device": device, "force": force })),
            )
            .await,
        )
    }

    /// `block-job-complete`: pivot a ready mirror onto its target.
    pub async fn block_job_complete(&self, device: &str) -> Result<(), QmpError> {
        unit(
            self.execute("block-job-complete", Some(json!({ "device": device })))
                .await,
        )
    }

    /// `device_add` of `driver` with `id` and further properties.
    pub async fn device_add(
        &self,
        driver: &str,
        id: &str,
        properties: Map<String, Value>,
    ) -> Result<(), QmpError> {
        let mut args = properties;
        args.insert("driver".into(), json!(driver));
        args.insert("id".into(), json!(id));
        unit(self.execute("device_add", Some(Value::Object(args))).await)
    }

    /// `device_del`: request an unplug; completion is the `DEVICE_DELETED` event.
    pub async fn device_del(&self, id: &str) -> Result<(), QmpError> {
        unit(self.execute("device_del", Some(json!({ "id": id }))).await)
    }

    /// `human-monitor-command`: run an HMP command and return its text output.
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, QmpError> {
        self.execute_as(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_decodes_known_and_unknown() {
        let s: StatusInfo =
            serde_json::from_value(json!({"running": false, "status": "guest-panicked"})).unwrap();
        assert_eq!(s.status, RunState::GuestPanicked);
        let s: StatusInfo =
            serde_json::from_value(json!({"running": false, "status": "brand-new"})).unwrap();
        assert_eq!(s.status, RunState::Unknown);
    }

    #[test]
    fn migration_info_tolerates_missing_fields() {
        let m: MigrationInfo = serde_json::from_value(json!({})).unwrap();
        assert!(m.status.is_none());
        let m: MigrationInfo = serde_json::from_value(json!({"status": "completed",
            "downtime": 5, "ram": {"transferred": 10, "remaining": 0, "total": 10, "mbps": 1.5,
            "dirty-pages-rate": 0}}))
        .unwrap();
        assert_eq!(m.downtime, Some(5));
        assert_eq!(m.ram.unwrap().transferred, 10);
    }
}
