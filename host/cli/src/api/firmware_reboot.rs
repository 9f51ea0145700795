//! `nasvisor firmware reboot [--force]`: reboots the host the CLI talks
//! to with its reboot command (`POST /api/v1/host/firmware/reboot`,
//! admins). The host refuses while VMs run on it, naming them, unless
//! `--force`: then a job shuts them down first (docs/firmware.md,
//! "Reboot").

use super::client::{query, CliResult, Client};
use super::jobs;
use super::render::{cell, Out};
use nasvisor_api_types::HostRebootView;

const REBOOT_PATH: &str = "/api/v1/host/firmware/reboot";

/// `nasvisor firmware reboot [--force [--shutdown-timeout S] [--wait]]`.
pub fn reboot(
    c: &Client,
    out: Out,
    force: bool,
    shutdown_timeout: Option<u32>,
    wait: bool,
) -> CliResult<()> {
    let mut params = Vec::new();
    if force {
        params.push(("force", "true".to_string()));
    }
    if let Some(s) = shutdown_timeout {
        params.push(("shutdown_timeout_s", s.to_string()));
    }
    let r: HostRebootView = c.call("POST", &format!("{REBOOT_PATH}{}", query(&params)))?;
    out.done(&r, |r| cell(&r.message));
    if let Some(job) = r.job.as_deref() {
        if wait {
            let j = jobs::wait(c, job)?;
            out.note(|| j.message.clone().unwrap_or_default());
        } else {
            out.note(|| format!("follow it with: nasvisor job wait {job}"));
        }
    }
    Ok(())
}
