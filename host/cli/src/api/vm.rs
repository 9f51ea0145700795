//! `nasvisor vm`: list, show, power, edit, delete, migrate and the console
//! (`vm create` and its install options are in [`super::install`]).

use super::client::{enc, query, CliError, CliResult, Client};
use super::install::{self, VmCreateArgs};
use super::jobs;
use super::render::{cell, Out, Render};
use super::table::{self, mib};
use clap::{ArgAction, Subcommand};
use nasvisor_api_types::{
    JobView, PowerOp, VmDiskView, VmMigrate, VmNicView, VmRecover, VmUpdate, VmView,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
};

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// All VMs.
    List,
    /// One VM in detail.
    Show { vm: String },
    /// Define a VM (and install it from --image).
    Create(Box<VmCreateArgs>),
    /// Power on.
    Start {
        vm: String,
        /// Host to start on (first power-on); the scheduler picks otherwise.
        #[arg(long)]
        host: Option<String>,
    },
    /// ACPI shutdown, forced off after --timeout seconds.
    Stop {
        vm: String,
        /// Seconds before forcing off (default 120).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Pull the plug.
    ForceOff { vm: String },
    /// ACPI reboot.
    Reboot { vm: String },
    /// Pause the vCPUs.
    Pause { vm: String },
    /// Resume paused vCPUs.
    Resume { vm: String },
    /// Remove a VM.
    Delete {
        vm: String,
        /// Also delete its volumes.
        #[arg(long)]
        delete_disks: bool,
        /// Drop the record of a VM whose host is lost (offline or removed
        /// from the cluster); its disks there are left behind.
        #[arg(long)]
        force: bool,
    },
    /// Start a VM whose host is lost on another host, from its disks on
    /// shared storage (waits until the lost host has fenced itself).
    Recover {
        vm: String,
        /// Host to recover it on; the scheduler picks otherwise.
        #[arg(long)]
        host: Option<String>,
        /// The lost host is known to be down (powered off or fenced): do
        /// not wait for its self-fencing deadline.
        #[arg(long)]
        confirm_host_down: bool,
    },
    /// Change a VM's settings.
    Edit {
        vm: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory, MiB.
        #[arg(long)]
        memory: Option<u64>,
        #[arg(long)]
        description: Option<String>,
        /// true or false.
        #[arg(long, action = ArgAction::Set)]
        autostart: Option<bool>,
        /// on or off: protect by HA (a passive host keeps its vCPUs and
        /// memory reserved for the VM; needs at least 3 online hosts).
        #[arg(long, value_parser = on_off)]
        ha: Option<bool>,
    },
    /// Show the serial console; with --follow, keep streaming and send the
    /// lines typed on stdin (Ctrl-] then Enter, or end of input, quits).
    Console {
        vm: String,
        /// Keep streaming new output.
        #[arg(long, short)]
        follow: bool,
        /// Bytes of history to show first (server default 65536, max 1048576).
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Move to another host: live when running (memory and, unless on
    /// shared storage, disks copied while the guest runs); a job.
    Migrate {
        vm: String,
        /// Target host.
        #[arg(long = "to")]
        to: String,
        /// Longest pause of the guest at the switch, ms (server default 300;
        /// the move aims at 25 ms and widens only if memory does not converge).
        #[arg(long)]
        max_downtime_ms: Option<u32>,
        /// Follow the job until it ends; with --output json|yaml, print the
        /// VM then.
        #[arg(long)]
        wait: bool,
    },
    /// Type text into the serial console.
    ConsoleSend {
        vm: String,
        text: String,
        /// Append a newline (Enter).
        #[arg(long, short = 'n')]
        newline: bool,
    },
}

/// `no`, or the HA state with its passive host and reason, and the last
/// move: `protected (passive nas3); last failover from nas2 to nas1 at T`,
/// `unprotected (passive -: why)`.
fn ha_line(v: &VmView) -> String {
    match (&v.ha_status, v.ha) {
        (_, false) => "no".into(),
        (None, true) => "yes".into(),
        (Some(s), true) => {
            let mut line = format!("{} (passive {}", cell(&s.state), cell(&s.passive));
            if let Some(r) = &s.reason {
                line.push_str(&format!(": {r}"));
            }
            line.push(')');
            if let Some(r) = &s.replica {
                line.push_str(&format!("; replica {}", super::ha::replica_text(r)));
            }
            if let Some(m) = &s.last_move {
                line.push_str(&format!("; last {m}"));
            }
            line
        }
    }
}

/// `on`/`off` (also `true`/`false`), for `--ha`.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: give on or off")),
    }
}

/// The path of a VM.
pub fn vm_path(vm: &str) -> String {
    format!("/api/v1/vms/{}", enc(vm))
}

/// Runs `nasvisor vm ...`.
pub fn run(c: &Client, cmd: VmCmd, out: Out) -> CliResult<()> {
    match cmd {
        VmCmd::List => out.list(&c.get::<Vec<VmView>>("/api/v1/vms")?),
        VmCmd::Show { vm } => out.show(&c.get::<VmView>(&vm_path(&vm))?),
        VmCmd::Create(args) => install::run(c, &args, out)?,
        VmCmd::Start { vm, host } => power(c, out, &vm, PowerOp::Start { host })?,
        VmCmd::Stop { vm, timeout } => power(
            c,
            out,
            &vm,
            PowerOp::Shutdown {
                timeout_s: timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_S),
            },
        )?,
        VmCmd::ForceOff { vm } => power(c, out, &vm, PowerOp::ForceOff {})?,
        VmCmd::Reboot { vm } => power(c, out, &vm, PowerOp::Reboot {})?,
        VmCmd::Pause { vm } => power(c, out, &vm, PowerOp::Pause {})?,
        VmCmd::Resume { vm } => power(c, out, &vm, PowerOp::Resume {})?,
        VmCmd::Delete {
            vm,
            delete_disks,
            force,
        } => {
            let mut params = Vec::new();
            if delete_disks {
                params.push(("delete_disks", "true".to_string()));
            }
            if force {
                params.push(("force", "true".to_string()));
            }
            let q = if params.is_empty() {
                String::new()
            } else {
                query(&params)
            };
            let v: Option<VmView> = c.call("DELETE", &format!("{}{q}", vm_path(&vm)))?;
            out.done(&v, |v| deleted_line(&vm, v.as_ref(), delete_disks, force));
        }
        VmCmd::Recover {
            vm,
            host,
            confirm_host_down,
        } => {
            let body = VmRecover {
                host,
                confirm_host_down,
            };
            let v: VmView = c.send("POST", &format!("{}/recover", vm_path(&vm)), &body)?;
            out.done(&v, |v| {
                format!("{} on host {}", state_line(v, "recovered"), cell(&v.host))
            });
        }
        VmCmd::Edit {
            vm,
            name,
            vcpus,
            memory,
            description,
            autostart,
            ha,
        } => {
            let update = VmUpdate {
                name,
                vcpus,
                memory_mib: memory,
                description,
                autostart,
                ha,
            };
            if update == VmUpdate::default() {
                return Err(CliError::msg(
                    "nothing to change: give --name, --vcpus, --memory, --description, --autostart or --ha",
                ));
            }
            let v: VmView = c.send("PATCH", &vm_path(&vm), &update)?;
            out.done(&v, |v| format!("vm {} updated", cell(&v.name)));
        }
        VmCmd::Console { vm, follow, tail } => super::console::run(c, &vm, follow, tail)?,
        VmCmd::Migrate {
            vm,
            to,
            max_downtime_ms,
            wait,
        } => {
            let body = VmMigrate {
                host: to,
                max_downtime_ms,
            };
            let j: JobView = c.send("POST", &format!("{}/migrate", vm_path(&vm)), &body)?;
            if let (Some(doc), true) = (out.doc(), wait) {
                // One document: the VM once moved.
                jobs::wait(c, &j.id)?;
                doc.print(&c.get::<VmView>(&vm_path(&vm))?);
            } else {
                jobs::answer(c, out, &j, wait)?;
            }
        }
        VmCmd::ConsoleSend { vm, text, newline } => {
            let mut data = text;
            if newline {
                data.push('\n');
            }
            super::console::send(c, &vm, &data)?;
        }
    }
    Ok(())
}

/// The line after `vm delete`; a forced delete names the disks left behind
/// on the lost host.
fn deleted_line(vm: &str, v: Option<&VmView>, delete_disks: bool, force: bool) -> String {
    let name = v.map_or(vm, |v| v.name.as_str());
    let mut line = format!(
        "vm {name} deleted{}",
        if delete_disks { " with its disks" } else { "" }
    );
    if let (true, Some(v)) = (force, v) {
        let left: Vec<String> = v
            .disks
            .iter()
            .map(|d| format!("{}/{}", d.pool, d.volume))
            .collect();
        let host = v.host.as_deref().unwrap_or("its host");
        if left.is_empty() {
            line.push_str(&format!(" (no disks were left on {host})"));
        } else {
            line.push_str(&format!(
                "; its disks are left on {host}: {}",
                left.join(", ")
            ));
        }
    }
    line
}

/// The name of a power operation in the line about it, e.g. `force-off`.
fn op_name(op: &PowerOp) -> &'static str {
    match op {
        PowerOp::Start { .. } => "start",
        PowerOp::Shutdown { .. } => "shutdown",
        PowerOp::ForceOff {} => "force-off",
        PowerOp::Reboot {} => "reboot",
        PowerOp::Pause {} => "pause",
        PowerOp::Resume {} => "resume",
    }
}

fn power(c: &Client, out: Out, vm: &str, op: PowerOp) -> CliResult<()> {
    let what = op_name(&op);
    let v: VmView = c.send("POST", &format!("{}/power", vm_path(vm)), &op)?;
    out.done(&v, |v| state_line(v, what));
    Ok(())
}

/// One line about a VM after an operation: name, state, reason.
fn state_line(v: &VmView, what: &str) -> String {
    let (name, state) = (&v.name, v.state.as_str());
    match &v.state_reason {
        Some(r) => format!("vm {name} {what}: {state} ({r})"),
        None => format!("vm {name} {what}: {state}"),
    }
}

impl Render for VmView {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "name",
        "state",
        "host",
        "vcpus",
        "memory_mib",
        "firmware",
        "image",
        "autostart",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.id),
            cell(&self.name),
            cell(&self.state),
            cell(&self.host),
            cell(&self.vcpus),
            cell(&self.memory_mib),
            cell(&self.firmware),
            cell(&self.image),
            cell(&self.autostart),
        ]
    }

    /// Every setting, then tables of its disks and NICs.
    fn show(&self) -> String {
        let mut out = table::fields(&[
            ("id", cell(&self.id)),
            ("name", cell(&self.name)),
            ("state", cell(&self.state)),
            ("reason", cell(&self.state_reason)),
            ("host", cell(&self.host)),
            ("pid", cell(&self.pid)),
            ("accel", cell(&self.accel)),
            ("vcpus", cell(&self.vcpus)),
        ]);
        out.push_str(&format!("memory:       {}\n", mib(self.memory_mib)));
        out.push_str(&table::fields(&[
            ("firmware", cell(&self.firmware)),
            ("image", cell(&self.image)),
            ("install job", cell(&self.install_job)),
            ("autostart", cell(&self.autostart)),
            ("ha", ha_line(self)),
            ("created", cell(&self.created_at)),
            ("description", cell(&self.description)),
        ]));
        out.push_str("\ndisks:\n");
        out.push_str(&table::indent(&super::render::table(&self.disks)));
        out.push_str("\nnics:\n");
        out.push_str(&table::indent(&super::render::table(&self.nics)));
        out
    }
}

impl Render for VmDiskView {
    const COLUMNS: &'static [&'static str] = &["pool", "volume", "size_mib", "role"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.pool),
            cell(&self.volume),
            cell(&self.size_mib),
            cell(&self.role),
        ]
    }
}

impl Render for VmNicView {
    const COLUMNS: &'static [&'static str] = &["vswitch", "mac", "model", "tap"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.vswitch),
            cell(&self.mac),
            cell(&self.model),
            cell(&self.tap),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasvisor_api_types::{DiskRole, FirmwareKind, VmState};

    fn vm() -> VmView {
        VmView {
            id: "u1".into(),
            name: "web1".into(),
            state: VmState::Crashed,
            state_reason: Some("QEMU exited".into()),
            host: None,
            vcpus: 2,
            memory_mib: 2048,
            description: None,
            autostart: false,
            ha: true,
            ha_status: None,
            firmware: FirmwareKind::Uefi,
            image: None,
            pid: None,
            qemu_state: None,
            accel: None,
            install_job: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            disks: vec![VmDiskView {
                pool: "p1".into(),
                volume: "v1".into(),
                size_mib: 64,
                role: DiskRole::Seed,
            }],
            nics: vec![],
        }
    }

    #[test]
    fn a_vm_in_a_line_a_row_and_alone() {
        assert_eq!(
            state_line(&vm(), "force-off"),
            "vm web1 force-off: crashed (QEMU exited)"
        );
        assert_eq!(op_name(&PowerOp::ForceOff {}), "force-off");
        assert_eq!(
            vm().row(),
            ["u1", "web1", "crashed", "-", "2", "2048", "uefi", "-", "no"]
        );
        let show = vm().show();
        assert!(show.contains("memory:       2.0 GiB\n"), "{show}");
        assert!(show.contains("ha:           yes\n"), "{show}");
        assert!(
            show.contains(
                "disks:\n  POOL  VOLUME  SIZE_MIB  ROLE\n  p1    v1      64        seed\n"
            ),
            "{show}"
        );
        assert!(
            show.ends_with("nics:\n  VSWITCH  MAC  MODEL  TAP\n"),
            "{show}"
        );
    }
}
