//! Asynchronous QMP events, raw and typed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JobStatus, MigrationStatus};

/// When QEMU emitted an event (seconds and microseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpTimestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

impl QmpTimestamp {
    /// The instant on the host's clock (QEMU runs on the same host).
    pub fn to_system_time(self) -> std::time::SystemTime {
        let micros = self
            .seconds
            .saturating_mul(1_000_000)
            .saturating_add(self.microseconds);
        let since_epoch = std::time::Duration::from_micros(micros.unsigned_abs());
        if micros >= 0 {
            std::time::UNIX_EPOCH + since_epoch
        } else {
            std::time::UNIX_EPOCH - since_epoch
        }
    }
}

/// One event as QEMU sent it. [`QmpEvent::kind`] gives a typed view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QmpEvent {
    /// The event name, e.g. `SHUTDOWN`.
    pub event: String,
    /// The event's data object (`null` when it has none).
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub timestamp: Option<QmpTimestamp>,
}

/// A typed view of the events nasvisor acts on; everything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The VM stopped running (paused, or halted after a guest shutdown or panic).
    Stop,
    /// The VM resumed.
    Resume,
    /// QEMU is shutting the VM down. `guest` tells whether the guest asked for it
    /// (ACPI poweroff); `reason` is QEMU's `ShutdownCause` (`guest-shutdown`,
    /// `host-qmp-quit`, `host-signal`, ...).
    Shutdown {
        guest: bool,
        reason: String,
    },
    /// An ACPI power-button press was delivered (`system_powerdown`).
    Powerdown,
    /// The VM was reset.
    Reset {
        guest: bool,
        reason: String,
    },
    /// The guest reported a panic (pvpanic). `action` is what QEMU did
    /// (`pause`, `poweroff`, `run`).
    GuestPanicked {
        action: String,
        info: Option<Value>,
    },
    /// The guest loaded a crash kernel after a panic.
    GuestCrashloaded {
        action: String,
    },
    /// Migration changed status (`setup`, `active`, `completed`, `failed`, ...).
    Migration {
        status: MigrationStatus,
    },
    /// A RAM dirty-sync pass of a migration finished.
    MigrationPass {
        pass: u64,
    },
    BlockJobCompleted {
        device: String,
        job_type: String,
        len: u64,
        offset: u64,
        error: Option<String>,
    },
    BlockJobCancelled {
        device: String,
        job_type: String,
        len: u64,
        offset: u64,
    },
    BlockJobReady {
        device: String,
        job_type: String,
        len: u64,
        offset: u64,
    },
    BlockJobError {
        device: String,
        operation: String,
        action: String,
    },
    /// A job changed status (`created`, `running`, `ready`, `concluded`, ...).
    JobStatusChange {
        id: String,
        status: JobStatus,
    },
    /// A device finished unplugging.
    DeviceDeleted {
        device: Option<String>,
        path: String,
    },
    /// A disk I/O error hit the guest.
    BlockIoError {
        device: String,
        node_name: Option<String>,
        operation: String,
        action: String,
        reason: Option<String>,
    },
    /// The guest watchdog fired.
    Watchdog {
        action: String,
    },
    Suspend,
    Wakeup,
    /// Any other event; see [`QmpEvent::event`] and [`QmpEvent::data`].
    Other,
}

impl QmpEvent {
    /// Decodes the event into an [`EventKind`]. Missing fields take neutral
    /// defaults rather than failing, so a QEMU that adds or drops a field does not
    /// lose the event.
    pub fn kind(&self) -> EventKind {
        let d = &self.data;
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let opt_s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
        let b = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(false);
        let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
        match self.event.as_str() {
            "STOP" => EventKind::Stop,
            "RESUME" => EventKind::Resume,
            "SHUTDOWN" => EventKind::Shutdown {
                guest: b("guest"),
                reason: s("reason"),
            },
            "POWERDOWN" => EventKind::Powerdown,
            "RESET" => EventKind::Reset {
                guest: b("guest"),
                reason: s("reason"),
            },
            "GUEST_PANICKED" => EventKind::GuestPanicked {
                action: s("action"),
                info: d.get("info").cloned(),
            },
            "GUEST_CRASHLOADED" => EventKind::GuestCrashloaded {
                action: s("action"),
            },
            "MIGRATION" => EventKind::Migration {
                status: decode_enum(d, "status", MigrationStatus::Unknown),
            },
            "MIGRATION_PASS" => EventKind::MigrationPass { pass: n("pass") },
            "BLOCK_JOB_COMPLETED" => EventKind::BlockJobCompleted {
                device: s("device"),
                job_type: s("type"),
                len: n("len"),
                offset: n("offset"),
                error: opt_s("error"),
            },
            "BLOCK_JOB_CANCELLED" => EventKind::BlockJobCancelled {
                device: s("device"),
                job_type: s("type"),
                len: n("len"),
                offset: n("offset"),
            },
            "BLOCK_JOB_READY" => EventKind::BlockJobReady {
                device: s("device"),
                job_type: s("type"),
                len: n("len"),
                offset: n("offset"),
            },
            "BLOCK_JOB_ERROR" => EventKind::BlockJobError {
                device: s("device"),
                operation: s("operation"),
                action: s("action"),
            },
            "JOB_STATUS_CHANGE" => EventKind::JobStatusChange {
                id: s("id"),
                status: decode_enum(d, "status", JobStatus::Unknown),
            },
            "DEVICE_DELETED" => EventKind::DeviceDeleted {
                device: opt_s("device"),
                path: s("path"),
            },
            "BLOCK_IO_ERROR" => EventKind::BlockIoError {
                device: s("device"),
                node_name: opt_s("node-name"),
                operation: s("operation"),
                action: s("action"),
                reason: opt_s("reason"),
            },
            "WATCHDOG" => EventKind::Watchdog {
                action: s("action"),
            },
            "SUSPEND" => EventKind::Suspend,
            "WAKEUP" => EventKind::Wakeup,
            _ => EventKind::Other,
        }
    }
}

/// Field `key` of `data` as the enum `T`; `unknown` when it is missing or
/// not a string.
fn decode_enum<T: serde::de::DeserializeOwned>(data: &Value, key: &str, unknown: T) -> T {
    data.get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> QmpEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn shutdown_event_decodes_guest_and_reason() {
        let e = ev(
            json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"},
            "timestamp": {"seconds": 1, "microseconds": 2}}),
        );
        assert_eq!(
            e.kind(),
            EventKind::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            }
        );
        assert_eq!(e.timestamp.unwrap().microseconds, 2);
    }

    #[test]
    fn events_without_data_decode() {
        assert_eq!(ev(json!({"event": "STOP"})).kind(), EventKind::Stop);
        assert_eq!(ev(json!({"event": "RESUME"})).kind(), EventKind::Resume);
        assert_eq!(ev(json!({"event": "NEW_THING"})).kind(), EventKind::Other);
    }

    #[test]
    fn panic_and_jobs_decode() {
        let e = ev(json!({"event": "GUEST_PANICKED", "data": {"action": "pause"}}));
        assert_eq!(
            e.kind(),
            EventKind::GuestPanicked {
                action: "pause".into(),
                info: None
            }
        );
        let e = ev(
            json!({"event": "BLOCK_JOB_READY", "data": {"device": "m0", "type": "mirror",
            "len": 10, "offset": 10, "speed": 0}}),
        );
        assert_eq!(
            e.kind(),
            EventKind::BlockJobReady {
                device: "m0".into(),
                job_type: "mirror".into(),
                len: 10,
                offset: 10
            }
        );
        let e = ev(json!({"event": "JOB_STATUS_CHANGE", "data": {"id": "m0", "status": "ready"}}));
        assert_eq!(
            e.kind(),
            EventKind::JobStatusChange {
                id: "m0".into(),
                status: JobStatus::Ready
            }
        );
        let e = ev(json!({"event": "MIGRATION", "data": {"status": "pre-switchover"}}));
        assert_eq!(
            e.kind(),
            EventKind::Migration {
                status: MigrationStatus::PreSwitchover
            }
        );
        let e = ev(json!({"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/n1"}}));
        assert_eq!(
            e.kind(),
            EventKind::DeviceDeleted {
                device: None,
                path: "/machine/peripheral/n1".into()
            }
        );
    }
}
