//! A clean reboot of this host from the API (`POST
//! /api/v1/host/firmware/reboot`; docs/firmware.md, "Reboot"): after a
//! firmware install the new slot boots at the next reboot, and the rolling
//! update and the appliance need the daemon to start it.
//!
//! Preconditions, checked in order, each a 409 that changes nothing:
//! - firmware management is on (`[firmware] enabled`): a host that is not
//!   an appliance is not rebooted by its virtualization service;
//! - no reboot of this host is under way (a `host-reboot` job);
//! - no VM runs on this host, unless `force`: the reboot would kill their
//!   QEMUs. The refusal names them; the administrator stops or migrates
//!   them first, or asks again with `force`.
//!
//! Without VMs the answer goes out and, [`REBOOT_DELAY`] later, the reboot
//! command (`[firmware] reboot-command`, `systemctl reboot` by default)
//! runs. Its failure is logged and recorded as a `host-reboot-failed`
//! event.
//!
//! With `force` and VMs running (as Proxmox VE stops its guests on a node
//! reboot), a `host-reboot` job shuts them all down at once (ACPI, each
//! forced off after `shutdown_timeout_s`), then runs the command. Their ids
//! are kept first in `<data-dir>/restart-after-reboot.json`: when the
//! daemon starts again (after the boot, or after a restart that came
//! first) it starts them again, as Incus restores its instances' last
//! state. When the reboot is called off (a shutdown that fails, a VM
//! started here meanwhile, a cancel, a reboot command that fails), the VMs
//! it shut down are started again at once and the job fails, saying why.

use crate::errors;
use crate::jobs::{HostRebootJob, JobCtx, JobFailure, JobSpec};
use crate::model::{kind, Desired, JobRecord, Severity, VmRecord, VmStatus};
use crate::Inner;
use nasvisor_api_types::{CoreError, HostRebootView, DEFAULT_REBOOT_SHUTDOWN_TIMEOUT_S};
use nasvisor_best_effort::BestEffort;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long after its answer the reboot command runs: the answer reaches
/// the client before systemd stops the daemon.
pub const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// How long the reboot command may take to return (`systemctl reboot`
/// returns once the reboot job is queued).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The file, in the data directory, of the VMs a forced reboot shut down.
const RESTART_FILE: &str = "restart-after-reboot.json";

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`, as
/// read), empty when unreadable.
pub(crate) fn this_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

/// Why a reboot is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RebootRefused {
    /// Firmware management is off.
    #[error(
        "firmware management is not enabled on this host ([firmware] enabled = false): \
         it is not rebooted from the API"
    )]
    FirmwareOff,
    /// A forced reboot's job is still shutting VMs down.
    #[error(
        "a reboot of this host is under way (job {job}); follow it with `nasvisor job show {job}`"
    )]
    UnderWay {
        /// Its job.
        job: String,
    },
    /// VMs run here.
    #[error(
        "VMs run on this host: {}; stop or migrate them first (a reboot would kill them), \
         or reboot with force to shut them down first",
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

/// An error and its causes, joined with `: `.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        why.push_str(&format!(": {c}"));
        cause = c.source();
    }
    why
}

/// The VMs a forced reboot shut down, as kept in [`RESTART_FILE`].
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RestartList {
    /// Their ids.
    vms: Vec<String>,
}

impl Inner {
    /// The VMs whose QEMU runs on this host, `(id, name)` sorted by name.
    fn vms_running_here(&self) -> Vec<(String, String)> {
        let mut vms: Vec<(String, String)> = self
            .processes
            .ids()
            .into_iter()
            .map(|id| match self.db.get::<VmRecord>(kind::VM, &id) {
                Some((v, _)) => (id, v.name),
                None => (id.clone(), id),
            })
            .collect();
        vms.sort_by(|a, b| a.1.cmp(&b.1));
        vms
    }

    /// A `host-reboot` job of this host that has not ended.
    fn reboot_under_way(&self) -> Option<String> {
        self.db
            .list::<JobRecord>(kind::JOB)
            .into_iter()
            .find(|j| {
                j.kind == "host-reboot"
                    && !j.state.is_final()
                    && j.host.as_deref() == Some(self.host.id.as_str())
            })
            .map(|j| j.id)
    }

    /// Whether this host may be rebooted now; the VMs to shut down first
    /// (empty unless `force`).
    fn check_reboot(&self, force: bool) -> Result<Vec<(String, String)>, RebootRefused> {
        if self.cfg.firmware.is_none() {
            return Err(RebootRefused::FirmwareOff);
        }
        if let Some(job) = self.reboot_under_way() {
            return Err(RebootRefused::UnderWay { job });
        }
        let vms = self.vms_running_here();
        if !vms.is_empty() && !force {
            return Err(RebootRefused::VmsRunning {
                vms: vms.into_iter().map(|(_, name)| name).collect(),
            });
        }
        Ok(vms)
    }

    fn restart_file(&self) -> PathBuf {
        self.cfg.data_dir.join(RESTART_FILE)
    }

    /// The ids of the VMs a forced reboot shut down (empty when none; an
    /// unreadable file is logged and read as empty).
    pub(crate) fn vms_to_restart(&self) -> Vec<String> {
        let path = self.restart_file();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RestartList>(&bytes) {
                Ok(l) => l.vms,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "an unreadable list of VMs to start again after a reboot");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the list of VMs to start again after a reboot");
                Vec::new()
            }
        }
    }

    /// Forgets the list of VMs to start again after a reboot.
    pub(crate) fn forget_vms_to_restart(&self) {
        match std::fs::remove_file(self.restart_file()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot remove the list of VMs to start again after a reboot")
            }
        }
    }

    /// Starts again the VMs `ids` a forced reboot shut down, where they are
    /// still this host's and stopped (`after`: "the reboot was called
    /// off"); a failure is a `vm-autostart-failed` event. Then forgets the
    /// list.
    async fn restart_vms(self: &Arc<Self>, ids: &[String], after: &str) {
        for id in ids {
            let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) else {
                continue;
            };
            if vm.host.as_deref() != Some(self.host.id.as_str()) || vm.state != VmStatus::Stopped {
                continue;
            }
            if let Err(e) = self.start_vm(&vm, None).await {
                self.event(
                    "vm-autostart-failed",
                    Severity::Error,
                    Some(format!("vm/{}", vm.name)),
                    format!("starting VM {} again after {after} failed: {e}", vm.name),
                )
                .await;
            }
        }
        self.forget_vms_to_restart();
    }

    /// `POST /api/v1/host/firmware/reboot`: checks the preconditions; then
    /// answers and runs the reboot command [`REBOOT_DELAY`] later, or, with
    /// `force` and VMs running, starts the job that shuts them down first.
    #[tracing::instrument(skip(self), fields(host = %self.host.id))]
    pub(crate) async fn reboot_host(
        self: &Arc<Self>,
        force: bool,
        shutdown_timeout_s: Option<u32>,
    ) -> Result<HostRebootView, CoreError> {
        let vms = match self.check_reboot(force) {
            Ok(vms) => vms,
            Err(e) => {
                tracing::info!(reason = %e, "reboot refused");
                return Err(e.into());
            }
        };
        let command = self.cfg.reboot_command.clone();
        let target = Some(format!("host/{}", self.host.id));
        let delay_ms = u64::try_from(REBOOT_DELAY.as_millis()).unwrap_or(u64::MAX);
        if !vms.is_empty() {
            return self
                .forced_reboot(vms, shutdown_timeout_s, command, target, delay_ms)
                .await;
        }
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
                me.event(
                    "host-reboot-failed",
                    Severity::Error,
                    target,
                    format!(
                        "the reboot command failed: {}; the host keeps running",
                        with_causes(&e)
                    ),
                )
                .await;
            }
        });
        Ok(HostRebootView {
            host: self.host.id.clone(),
            command,
            delay_ms,
            message,
            stopping: Vec::new(),
            job: None,
        })
    }

    /// A reboot with VMs running: keeps their ids to start them again,
    /// starts the `host-reboot` job and answers with it.
    async fn forced_reboot(
        self: &Arc<Self>,
        vms: Vec<(String, String)>,
        shutdown_timeout_s: Option<u32>,
        command: Vec<String>,
        target: Option<String>,
        delay_ms: u64,
    ) -> Result<HostRebootView, CoreError> {
        let timeout_s = shutdown_timeout_s.unwrap_or(DEFAULT_REBOOT_SHUTDOWN_TIMEOUT_S);
        let ids: Vec<String> = vms.iter().map(|(id, _)| id.clone()).collect();
        let names: Vec<String> = vms.iter().map(|(_, name)| name.clone()).collect();
        // Kept before any VM goes down: a daemon that dies from here on
        // starts them again when it is back.
        let mut keep = self.vms_to_restart();
        keep.extend(
            ids.iter()
                .filter(|id| !keep.contains(id))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let list = serde_json::to_vec_pretty(&RestartList { vms: keep })
            .map_err(|e| errors::internal(format!("the list of VMs to start again: {e}")))?;
        nasvisor_firmware::write_atomic(&self.restart_file(), &list).map_err(|e| {
            errors::internal(format!(
                "cannot write {}: {e}",
                self.restart_file().display()
            ))
        })?;
        let spec = JobSpec::HostReboot(HostRebootJob {
            vms: ids,
            boot_id: this_boot_id(),
        });
        let (job, ctx) = match self.job_start(&spec, target.clone()).await {
            Ok(j) => j,
            Err(e) => {
                self.forget_vms_to_restart();
                return Err(e);
            }
        };
        let message = format!(
            "host {} reboots once VMs {} are shut down (each forced off after {timeout_s} s): \
             job {}; they start again when nasvisord is back",
            self.host.id,
            names.join(", "),
            job.id
        );
        self.event("host-reboot", Severity::Warning, target.clone(), &message)
            .await;
        let me = self.clone();
        let timeout = Duration::from_secs(timeout_s.into());
        let argv = command.clone();
        tokio::spawn(async move {
            me.run_forced_reboot(ctx, vms, timeout, argv, target).await;
        });
        Ok(HostRebootView {
            host: self.host.id.clone(),
            command,
            delay_ms,
            message,
            stopping: names,
            job: Some(job.id),
        })
    }

    /// The `host-reboot` job: every VM of `vms` shut down at once, then
    /// the reboot command; the reboot called off (its VMs started again)
    /// when that cannot be done cleanly.
    async fn run_forced_reboot(
        self: Arc<Self>,
        ctx: JobCtx,
        vms: Vec<(String, String)>,
        timeout: Duration,
        command: Vec<String>,
        target: Option<String>,
    ) {
        let total = vms.len();
        let ids: Vec<String> = vms.iter().map(|(id, _)| id.clone()).collect();
        let mut shutdowns = tokio::task::JoinSet::new();
        for (id, name) in vms {
            let Some(inst) = self.processes.instance(&id) else {
                continue;
            };
            self.set_state(
                &id,
                VmStatus::Stopping,
                Some(format!(
                    "shutting down for the host's reboot (forced off after {} s)",
                    timeout.as_secs()
                )),
                Some(Desired::Stopped),
            )
            .await
            .best_effort("record that the VM shuts down for the reboot");
            let me = self.clone();
            shutdowns.spawn(async move {
                let r = me
                    .shut_down(&id, inst, timeout, "shut down for the host's reboot")
                    .await;
                (name, r)
            });
        }
        ctx.milestone(0.0, &format!("shutting down {total} VMs"));
        let (mut done, mut failed) = (0usize, Vec::new());
        while let Some(joined) = shutdowns.join_next().await {
            done += 1;
            match joined {
                Ok((name, Ok(how))) => ctx.milestone(
                    done as f64 / (total + 1) as f64,
                    &format!("{name}: {how} ({done} of {total} off)"),
                ),
                Ok((name, Err(e))) => failed.push(format!("{name}: {e}")),
                Err(e) => failed.push(format!("a shutdown task: {e}")),
            }
        }
        let running: Vec<String> = self
            .vms_running_here()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        let called_off = if !failed.is_empty() {
            Some(JobFailure::Failed(format!(
                "cannot shut down {}; the reboot is called off",
                failed.join("; ")
            )))
        } else if ctx.is_cancelled() {
            Some(JobFailure::Cancelled)
        } else if !running.is_empty() {
            Some(JobFailure::Failed(format!(
                "VMs run on this host again: {}; the reboot is called off",
                running.join(", ")
            )))
        } else {
            None
        };
        if let Some(why) = called_off {
            self.restart_vms(&ids, "the reboot was called off").await;
            let text = match &why {
                JobFailure::Cancelled => "the reboot was cancelled".to_string(),
                JobFailure::Failed(e) => e.clone(),
            };
            self.event(
                "host-reboot-failed",
                Severity::Error,
                target,
                format!("{text}; the VMs it shut down are started again"),
            )
            .await;
            self.job_finish(&ctx, Err(why)).await;
            return;
        }
        ctx.milestone(total as f64 / (total + 1) as f64, "rebooting");
        tokio::time::sleep(REBOOT_DELAY).await;
        tracing::warn!(command = ?command, "running the reboot command, the VMs shut down");
        match run_reboot_command(&command, COMMAND_TIMEOUT).await {
            Ok(()) => {
                self.job_finish(
                    &ctx,
                    Ok(format!(
                        "{total} VMs shut down; {} ran: the host reboots",
                        command.join(" ")
                    )),
                )
                .await
            }
            Err(e) => {
                let why = format!("the reboot command failed: {}", with_causes(&e));
                self.restart_vms(&ids, "a failed reboot").await;
                self.event(
                    "host-reboot-failed",
                    Severity::Error,
                    target,
                    format!("{why}; the host keeps running and its VMs are started again"),
                )
                .await;
                self.job_finish(&ctx, Err(JobFailure::Failed(why))).await;
            }
        }
    }

    /// After a restart: a `host-reboot` job that had not ended succeeded
    /// when the host booted since, else the restart interrupted it (the
    /// VMs it shut down were started again by `recover_vms`).
    pub(crate) fn recover_reboot_job(&self, job: &HostRebootJob) -> Result<String, String> {
        if !job.boot_id.is_empty() && this_boot_id() != job.boot_id {
            Ok("the host rebooted".into())
        } else {
            Err(
                "interrupted by a restart of nasvisord before the host rebooted; \
                 the VMs it had shut down are started again"
                    .into(),
            )
        }
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
            "VMs run on this host: db, web; stop or migrate them first (a reboot would kill \
             them), or reboot with force to shut them down first"
        );
    }
}
