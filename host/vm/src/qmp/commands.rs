//! Typed helpers for the QMP commands of a VM's life (status, power, CPUs,
//! devices), and their reply types. Block jobs and NBD: [`super::block`];
//! migration and its TLS objects: [`super::migration`].
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
}
