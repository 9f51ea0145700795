//! `nasvisor firmware install|status`: this host's firmware slots over the
//! API (the bundle commands `build`, `sign`, `verify` and `inspect` work
//! locally, in `firmware_cmd`).

use super::client::{CliError, CliResult, Client};
use super::jobs;
use super::render::{cell, Out, Render};
use super::table;
use nasvisor_api_types::{
    FirmwareSlotState, FirmwareSlotView, FirmwareView, FirmwareWatchdogView, JobView,
};
use std::path::Path;

const STATUS_PATH: &str = "/api/v1/host/firmware";
const INSTALL_PATH: &str = "/api/v1/host/firmware/install";

/// `nasvisor firmware status`.
pub fn status(c: &Client, out: Out) -> CliResult<()> {
    out.show(&c.get::<FirmwareView>(STATUS_PATH)?);
    Ok(())
}

/// `nasvisor firmware install BUNDLE [--wait]`: streams the bundle to the
/// host, which installs it into its inactive slot as a job.
pub fn install(c: &Client, out: Out, bundle: &Path, wait: bool) -> CliResult<()> {
    if !bundle.is_file() {
        return Err(CliError::msg(format!(
            "{}: not a bundle file",
            bundle.display()
        )));
    }
    let j: JobView = super::console::upload(c, INSTALL_PATH, bundle, "bundle")?;
    jobs::answer(c, out, &j, wait)?;
    if wait {
        out.note(|| {
            "a reboot bundle's slot boots at the next reboot; a service release runs once \
             nasvisord restarted into it (in seconds; VMs keep running). `nasvisor firmware \
             status` shows which"
                .into()
        });
    }
    Ok(())
}

/// A slot's state in words, with its tries.
fn state(s: &FirmwareSlotView) -> String {
    match (s.state, s.tries_left, s.tries_done, s.blessed) {
        (FirmwareSlotState::Pending, Some(n), _, _) => format!("pending ({n} tries left)"),
        (FirmwareSlotState::Bad, _, Some(n), _) => format!("bad ({n} tries failed)"),
        (FirmwareSlotState::Booted, _, _, Some(false)) => "booted (not blessed yet)".into(),
        (st, ..) => st.as_str().into(),
    }
}

impl Render for FirmwareSlotView {
    const COLUMNS: &'static [&'static str] = &["slot", "state", "version", "generation", "entry"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.slot),
            state(self),
            cell(&self.version),
            cell(&self.generation),
            cell(&self.entry),
        ]
    }
}

impl Render for FirmwareView {
    const COLUMNS: &'static [&'static str] = &[
        "booted",
        "rollback_floor",
        "clock_floor",
        "pending",
        "last_outcome",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.booted),
            cell(&self.rollback_floor),
            cell(&self.clock_floor),
            cell(
                &self
                    .pending
                    .as_ref()
                    .map(|p| format!("{} (slot {})", p.version, p.slot)),
            ),
            cell(&self.last_outcome.as_ref().map(|o| o.result.as_str())),
        ]
    }

    /// The slots as a table, then the floors, the pending update and the
    /// last outcome.
    fn show(&self) -> String {
        let mut out = super::render::table(&self.slots);
        out.push('\n');
        let pending = match &self.pending {
            Some(p) => format!(
                "{} in slot {} (generation {}, installed {}): boots at the next reboot",
                p.version, p.slot, p.generation, p.installed_at
            ),
            None => "-".into(),
        };
        let last = match &self.last_outcome {
            Some(o) => {
                let mut s = o.result.as_str().to_string();
                if let Some(v) = &o.version {
                    s.push_str(&format!(" {v}"));
                }
                if let Some(slot) = &o.slot {
                    s.push_str(&format!(" (slot {slot})"));
                }
                s.push_str(&format!(" at {}", o.at));
                if let Some(r) = &o.reason {
                    s.push_str(&format!(": {r}"));
                }
                if let Some(code) = &o.code {
                    s.push_str(&format!(" [{code}]"));
                }
                s
            }
            None => "-".into(),
        };
        out.push_str(&table::fields(&[
            ("booted slot", cell(&self.booted)),
            ("rollback floor", cell(&self.rollback_floor)),
            ("clock floor", cell(&self.clock_floor)),
            ("pending update", pending),
            ("last update", last),
            (
                "service",
                self.service.as_ref().map_or("-".into(), |v| {
                    let or = |x: &Option<String>, none: &str| {
                        x.clone().unwrap_or_else(|| none.to_string())
                    };
                    format!(
                        "running {}; current {}; previous {}; on trial {}; deadline {} s",
                        or(&v.running, "the slot's own"),
                        or(&v.current, "the slot's own"),
                        or(&v.previous, "the slot's own"),
                        or(&v.on_trial, "-"),
                        v.deadline_s
                    )
                }),
            ),
            ("watchdog", watchdog_line(self.watchdog.as_ref())),
            ("secure boot", cell(&self.secure_boot)),
        ]));
        out
    }
}

/// `i6300ESB timer (/dev/watchdog0) active, 60 s; nasvisord 90 s`.
fn watchdog_line(w: Option<&FirmwareWatchdogView>) -> String {
    let Some(w) = w else {
        return "-".into();
    };
    let mut parts: Vec<String> = w
        .hardware
        .iter()
        .map(|h| {
            let mut s = format!(
                "{} ({})",
                h.identity.as_deref().unwrap_or("timer"),
                h.device
            );
            if let Some(st) = &h.state {
                s.push_str(&format!(" {st}"));
            }
            if let Some(t) = h.timeout_s {
                s.push_str(&format!(", {t} s"));
            }
            s
        })
        .collect();
    if parts.is_empty() {
        parts.push("no hardware watchdog".into());
    }
    let service = match w.service_timeout_s {
        Some(t) => format!("nasvisord {t} s"),
        None => "nasvisord not watched".into(),
    };
    format!("{}; {service}", parts.join(", "))
}
