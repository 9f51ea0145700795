//! `nasvisor vswitch`: virtual switches.

use super::client::{enc, CliResult, Client};
use super::render::{cell, Out, Render};
use clap::Subcommand;
use nasvisor_api_types::{VswitchCreate, VswitchView};

#[derive(Debug, Subcommand)]
pub enum VswitchCmd {
    /// All virtual switches.
    List,
    /// Create a virtual switch.
    Create {
        name: String,
        /// Host interface to bridge to; an internal switch without.
        #[arg(long)]
        uplink: Option<String>,
        /// VLAN id 1-4094.
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Delete a virtual switch.
    Delete { name: String },
}

/// Runs `nasvisor vswitch ...`.
pub fn run(c: &Client, cmd: VswitchCmd, out: Out) -> CliResult<()> {
    match cmd {
        VswitchCmd::List => out.list(&c.get::<Vec<VswitchView>>("/api/v1/vswitches")?),
        VswitchCmd::Create { name, uplink, vlan } => {
            let body = VswitchCreate { name, uplink, vlan };
            let s: VswitchView = c.send("POST", "/api/v1/vswitches", &body)?;
            out.done(&s, |s| format!("vswitch {} created", cell(&s.name)));
        }
        VswitchCmd::Delete { name } => {
            c.call::<()>("DELETE", &format!("/api/v1/vswitches/{}", enc(&name)))?;
            out.note(|| format!("vswitch {name} deleted"));
        }
    }
    Ok(())
}

impl Render for VswitchView {
    const COLUMNS: &'static [&'static str] = &["name", "uplink", "vlan"];

    fn row(&self) -> Vec<String> {
        vec![cell(&self.name), cell(&self.uplink), cell(&self.vlan)]
    }
}
