//! `nasvisor ha status`: every HA VM with its active and passive host and
//! whether it is protected (read from the VMs' views).

use super::client::{CliResult, Client};
use super::render::{cell, Out, Render};
use clap::Subcommand;
use nasvisor_api_types::{VmHaView, VmView};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum HaCmd {
    /// Every HA VM: state, active host, passive host, protection and why.
    Status,
}

/// One row of `ha status`.
#[derive(Debug, Serialize)]
pub struct HaRow {
    vm: String,
    state: nasvisor_api_types::VmState,
    ha: Option<VmHaView>,
}

/// Runs `nasvisor ha ...`.
pub fn run(c: &Client, cmd: HaCmd, out: Out) -> CliResult<()> {
    match cmd {
        HaCmd::Status => {
            let vms: Vec<VmView> = c.get("/api/v1/vms")?;
            let rows: Vec<HaRow> = vms
                .into_iter()
                .filter(|v| v.ha)
                .map(|v| HaRow {
                    vm: v.name,
                    state: v.state,
                    ha: v.ha_status,
                })
                .collect();
            out.list(&rows);
        }
    }
    Ok(())
}

impl Render for HaRow {
    const COLUMNS: &'static [&'static str] = &[
        "vm",
        "state",
        "active",
        "passive",
        "protection",
        "reason",
        "replica",
        "last move",
    ];

    fn row(&self) -> Vec<String> {
        let ha = self.ha.as_ref();
        vec![
            cell(&self.vm),
            cell(&self.state),
            cell(&ha.and_then(|h| h.active.as_ref())),
            cell(&ha.and_then(|h| h.passive.as_ref())),
            cell(&ha.map(|h| h.state)),
            cell(&ha.and_then(|h| h.reason.as_ref())),
            cell(&ha.and_then(|h| h.replica.as_ref()).map(replica_text)),
            cell(&ha.and_then(|h| h.last_move.as_ref())),
        ]
    }
}

/// A disk replica in words: `in-sync on nas3 (resumed: 6.1 MiB copied)`,
/// `syncing (40%) on nas3`, `outdated on nas3 (why)`.
pub fn replica_text(r: &nasvisor_api_types::ReplicaView) -> String {
    use nasvisor_api_types::{ReplicaState, ReplicaSyncKind};
    match r.state {
        ReplicaState::InSync => match &r.last_sync {
            Some(s) => format!(
                "in-sync on {} ({}: {:.1} MiB copied)",
                r.host,
                match s.kind {
                    ReplicaSyncKind::Full => "full copy",
                    ReplicaSyncKind::Resumed => "resumed",
                },
                s.copied_bytes as f64 / f64::from(1u32 << 20)
            ),
            None => format!("in-sync on {}", r.host),
        },
        ReplicaState::Syncing => format!("syncing ({}%) on {}", r.progress.unwrap_or(0), r.host),
        ReplicaState::Outdated => format!(
            "outdated on {} ({})",
            r.host,
            r.reason.as_deref().unwrap_or("no reason recorded")
        ),
    }
}
