//! `nasvisor firmware reboot`: reboots the host the CLI talks to with its
//! reboot command (`POST /api/v1/host/firmware/reboot`, admins). The host
//! refuses while VMs run on it, naming them (docs/firmware.md, "Reboot").

use super::client::{CliResult, Client};
use super::render::{cell, Out};
use nasvisor_api_types::HostRebootView;

const REBOOT_PATH: &str = "/api/v1/host/firmware/reboot";

/// `nasvisor firmware reboot`.
pub fn reboot(c: &Client, out: Out) -> CliResult<()> {
    let r: HostRebootView = c.call("POST", REBOOT_PATH)?;
    out.done(&r, |r| cell(&r.message));
    Ok(())
}
