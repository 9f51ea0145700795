//! [`VmState`], where a VM is, and the transitions QMP events cause.

use serde::{Deserialize, Serialize};

use crate::qmp::{EventKind, RunState};

/// Where a VM is, as far as QEMU has told us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum VmState {
    /// vCPUs running.
    Running,
    /// vCPUs stopped: paused by request, not yet started, or migrating.
    Paused,
    /// The ACPI power button was pressed; waiting for the guest to power off.
    ShuttingDown,
    /// The guest powered off (or QEMU is about to exit on request). QEMU itself
    /// is still there until [`VmState::Stopped`].
    Shutdown { reason: String },
    /// The guest panicked (pvpanic) or emulation failed; the VM is halted and
    /// QEMU still runs. The HA layer decides what to do.
    Panicked { detail: String },
    /// QEMU exited as expected (a shutdown, or a quit/kill we asked for).
    Stopped { reason: String },
    /// QEMU exited without being asked to: killed by a signal, or crashed.
    Crashed { detail: String },
}

impl VmState {
    /// Whether the QEMU process is gone.
    pub fn is_exited(&self) -> bool {
        matches!(self, VmState::Stopped { .. } | VmState::Crashed { .. })
    }

    /// A short name: `running`, `paused`, `shutting-down`, `shutdown`,
    /// `panicked`, `stopped`, `crashed`.
    pub fn name(&self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting-down",
            VmState::Shutdown { .. } => "shutdown",
            VmState::Panicked { .. } => "panicked",
            VmState::Stopped { .. } => "stopped",
            VmState::Crashed { .. } => "crashed",
        }
    }

    /// The state QEMU's run state implies (used when attaching and resyncing).
    pub fn from_run_state(status: &RunState) -> VmState {
        match status {
            RunState::Running => VmState::Running,
            RunState::Shutdown => VmState::Shutdown {
                reason: "guest powered off".into(),
            },
            RunState::GuestPanicked => VmState::Panicked {
                detail: "guest panicked".into(),
            },
            RunState::InternalError => VmState::Panicked {
                detail: "QEMU internal error: emulation stopped".into(),
            },
            _ => VmState::Paused,
        }
    }
}

/// The transition an event causes, if any.
pub fn apply_event(state: &VmState, event: &EventKind) -> Option<VmState> {
    if state.is_exited() {
        return None;
    }
    match event {
        EventKind::Stop => {
            matches!(state, VmState::Running | VmState::ShuttingDown).then_some(VmState::Paused)
        }
        EventKind::Resume => Some(VmState::Running),
        EventKind::Powerdown => matches!(state, VmState::Running).then_some(VmState::ShuttingDown),
        EventKind::Shutdown { reason, .. } => Some(VmState::Shutdown {
            reason: reason.clone(),
        }),
        EventKind::GuestPanicked { action, info } => Some(VmState::Panicked {
            detail: match info {
                Some(info) => format!("guest panicked (QEMU action: {action}; {info})"),
                None => format!("guest panicked (QEMU action: {action})"),
            },
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_follows_events() {
        let running = VmState::Running;
        assert_eq!(
            apply_event(&running, &EventKind::Stop),
            Some(VmState::Paused)
        );
        assert_eq!(
            apply_event(&VmState::Paused, &EventKind::Resume),
            Some(VmState::Running)
        );
        assert_eq!(
            apply_event(&running, &EventKind::Powerdown),
            Some(VmState::ShuttingDown)
        );
        let off = apply_event(
            &VmState::ShuttingDown,
            &EventKind::Shutdown {
                guest: true,
                reason: "guest-shutdown".into(),
            },
        )
        .unwrap();
        assert_eq!(off.name(), "shutdown");
        // The STOP that follows a guest shutdown does not hide it.
        assert_eq!(apply_event(&off, &EventKind::Stop), None);
        let panicked = apply_event(
            &running,
            &EventKind::GuestPanicked {
                action: "pause".into(),
                info: None,
            },
        )
        .unwrap();
        assert_eq!(panicked.name(), "panicked");
        assert_eq!(apply_event(&panicked, &EventKind::Stop), None);
        // Nothing moves an exited VM.
        let crashed = VmState::Crashed { detail: "x".into() };
        assert_eq!(apply_event(&crashed, &EventKind::Resume), None);
    }

    #[test]
    fn run_states_map() {
        assert_eq!(
            VmState::from_run_state(&RunState::Running),
            VmState::Running
        );
        assert_eq!(
            VmState::from_run_state(&RunState::Prelaunch),
            VmState::Paused
        );
        assert_eq!(
            VmState::from_run_state(&RunState::Postmigrate),
            VmState::Paused
        );
        assert_eq!(
            VmState::from_run_state(&RunState::Shutdown).name(),
            "shutdown"
        );
        assert_eq!(
            VmState::from_run_state(&RunState::GuestPanicked).name(),
            "panicked"
        );
    }

    #[test]
    fn state_serializes_with_a_tag() {
        let s = serde_json::to_value(VmState::Crashed { detail: "d".into() }).unwrap();
        assert_eq!(s, serde_json::json!({"state": "crashed", "detail": "d"}));
    }
}
