//! A clean reboot of this host from the API (`POST
//! /api/v1/host/firmware/reboot`; docs/firmware.md, "Reboot"): after a
//! firmware install the new slot boots at the next reboot, and the rolling
//! update and the appliance need the daemon to start it.
//!
//! Preconditions, checked in order, each a 409 that changes nothing:
//! - firmware management is on (`[firmware] enabled`): a host that is not
//!   an appliance is not rebooted by its virtualization service;
//! - no VM runs on this host: the reboot would kill their QEMUs. The
//!   refusal names them; the administrator stops or migrates them first
//!   (there is no `force`: a reboot never shuts guests down behind the
//!   administrator's back).
//!
//! Then the answer goes out and, [`REBOOT_DELAY`] later, the reboot command
//! (`[firmware] reboot-command`, `systemctl reboot` by default) runs. Its
//! failure is logged and recorded as a `host-reboot-failed` event.

use crate::errors;
use crate::model::{kind, Severity, VmRecord};
use crate::Inner;
use nasvisor_api_types::{CoreError, HostRebootView};
use std::sync::Arc;
use std::time::Duration;

/// How long after its answer the reboot command runs: the answer reaches
/// the client before systemd stops the daemon.
pub const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// How long the reboot command may take to return (`systemctl reboot`
/// returns once the reboot job is queued).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a reboot is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RebootRefused {
    /// Firmware management is off.
    #[error(
        "firmware management is not enabled on this host ([firmware] enabled = false): \
         it is not rebooted from the API"
    )]
    FirmwareOff,
    /// VMs run here.
    #[error(
        "VMs run on this host: {}; stop or migrate them first (a reboot would kill them)",
        .vms.join(", ")
    )]
    VmsRunning {
        /// Their names, sorted.
        vms: Vec<String>,
    },
}

impl From<RebootRefused> for CoreError {
    fn from(e: RebootRefused) -> CoreError {
        errors::conflict(e.to_string())
    }
}

/// Why the reboot command failed.
#[derive(Debug, thiserror::Error)]
pub enum RebootCommandError {
    /// It could not be started.
    #[error("cannot run {program:?}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited with a failure.
    #[error("{program:?} exited with {status}: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote on stderr, trimmed.
        stderr: String,
    },
    /// It did not return in time (it is killed).
    #[error("{program:?} did not return within {timeout:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The time it had.
        timeout: Duration,
    },
}

/// Runs `argv` once, waiting at most `timeout`.
pub async fn run_reboot_command(
    argv: &[String],
    timeout: Duration,
) -> Result<(), RebootCommandError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => Err(RebootCommandError::Timeout { program, timeout }),
        Ok(Err(source)) => Err(RebootCommandError::Spawn { program, source }),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => Err(RebootCommandError::Failed {
            program,
            status: o.status,
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
    }
}

impl Inner {
    /// The names of the VMs whose QEMU runs on this host, sorted.
    fn vms_running_here(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .processes
            .ids()
            .into_iter()
            .map(|id| match self.db.get::<VmRecord>(kind::VM, &id) {
                Some((v, _)) => v.name,
                None => id,
            })
            .collect();
        names.sort();
        names
    }

    /// Whether this host may be rebooted now.
    fn check_reboot(&self) -> Result<(), RebootRefused> {
        if self.cfg.firmware.is_none() {
            return Err(RebootRefused::FirmwareOff);
        }
        let vms = self.vms_running_here();
        if !vms.is_empty() {
            return Err(RebootRefused::VmsRunning { vms });
        }
        Ok(())
    }

    /// `POST /api/v1/host/firmware/reboot`: checks the preconditions,
    /// answers, and runs the reboot command [`REBOOT_DELAY`] later.
    #[tracing::instrument(skip(self), fields(host = %self.host.id))]
    pub(crate) async fn reboot_host(self: &Arc<Self>) -> Result<HostRebootView, CoreError> {
        if let Err(e) = self.check_reboot() {
            tracing::info!(reason = %e, "reboot refused");
            return Err(e.into());
        }
        let command = self.cfg.reboot_command.clone();
        let target = Some(format!("host/{}", self.host.id));
        let message = format!(
            "host {} reboots: {} runs in {} ms",
            self.host.id,
            command.join(" "),
            REBOOT_DELAY.as_millis()
        );
        self.event("host-reboot", Severity::Warning, target.clone(), &message)
            .await;
        let me = self.clone();
        let argv = command.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REBOOT_DELAY).await;
            tracing::warn!(command = ?argv, "running the reboot command");
            if let Err(e) = run_reboot_command(&argv, COMMAND_TIMEOUT).await {
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                me.event(
                    "host-reboot-failed",
                    Severity::Error,
                    target,
                    format!("the reboot command failed: {why}; the host keeps running"),
                )
                .await;
            }
        });
        Ok(HostRebootView {
            host: self.host.id.clone(),
            command,
            delay_ms: u64::try_from(REBOOT_DELAY.as_millis()).unwrap_or(u64::MAX),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reboot_command_reports_how_it_failed() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        run_reboot_command(&argv(&["true"]), Duration::from_secs(5))
            .await
            .unwrap();
        let e = run_reboot_command(
            &argv(&["sh", "-c", "echo no reboot for you >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("exit status: 3: no reboot for you"),
            "{e}"
        );
        let e = run_reboot_command(&argv(&["/nonexistent/reboot"]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, RebootCommandError::Spawn { .. }), "{e}");
        let e = run_reboot_command(&argv(&["sleep", "5"]), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, RebootCommandError::Timeout { .. }), "{e}");
    }

    #[test]
    fn a_refusal_names_the_vms() {
        let e = RebootRefused::VmsRunning {
            vms: vec!["db".into(), "web".into()],
        };
        assert_eq!(
            e.to_string(),
            "VMs run on this host: db, web; stop or migrate them first (a reboot would kill them)"
        );
    }
}
