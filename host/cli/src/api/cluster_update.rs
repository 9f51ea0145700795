//! `nasvisor cluster update`: a rolling update of every host with a signed
//! firmware bundle, its status, resume and abort (docs/firmware.md,
//! "Rolling cluster update").

use super::client::{CliError, CliResult, Client};
use super::render::{cell, table, Out, Render};
use clap::{Args, Subcommand};
use nasvisor_api_types::{RolloutHostView, RolloutState, RolloutView};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/cluster/update";

/// How often `--wait` looks.
const POLL: Duration = Duration::from_secs(1);
/// How long `--wait` keeps trying while the host it talks to is away (a
/// `service` release restarts it; a `reboot` bundle reboots it).
const AWAY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpdateArgs {
    #[command(subcommand)]
    pub cmd: Option<UpdateCmd>,
    /// The signed bundle (`nasvisor firmware build` + `sign`): copied to
    /// every member and checked there, then installed one host at a time.
    #[arg(value_name = "BUNDLE", required = true)]
    pub bundle: Option<PathBuf>,
    /// Follow the update until it ends (its steps on stderr).
    #[arg(long)]
    pub wait: bool,
    /// Leave the VMs a `reboot` bundle evacuated where they went, instead
    /// of moving them back to their host once it is updated.
    #[arg(long)]
    pub no_move_back: bool,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCmd {
    /// The last cluster update: each host's step and version.
    Status,
    /// Go on with a failed update from the host it stopped at.
    Resume {
        /// Follow it until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// End a running or failed update where it stands.
    Abort,
    /// Follow the running update until it ends.
    Wait,
}

/// Runs `nasvisor cluster update ...`.
pub fn run(c: &Client, args: UpdateArgs, out: Out) -> CliResult<()> {
    let (view, wait) = match args.cmd {
        Some(UpdateCmd::Status) => (c.get::<RolloutView>(PATH)?, false),
        Some(UpdateCmd::Wait) => (c.get::<RolloutView>(PATH)?, true),
        Some(UpdateCmd::Resume { wait }) => (
            c.call::<RolloutView>("POST", &format!("{PATH}/resume"))?,
            wait,
        ),
        Some(UpdateCmd::Abort) => (
            c.call::<RolloutView>("POST", &format!("{PATH}/abort"))?,
            false,
        ),
        None => {
            let bundle = args
                .bundle
                .ok_or_else(|| CliError::msg("a bundle file is needed"))?;
            if !bundle.is_file() {
                return Err(CliError::msg(format!(
                    "{}: not a bundle file",
                    bundle.display()
                )));
            }
            let path = if args.no_move_back {
                format!("{PATH}?move_back=false")
            } else {
                PATH.to_string()
            };
            let v: RolloutView = super::console::upload(c, &path, &bundle, "bundle")?;
            (v, args.wait)
        }
    };
    if !wait {
        out.show(&view);
        return Ok(());
    }
    let end = follow(c, view)?;
    out.show(&end);
    match end.state {
        RolloutState::Done => Ok(()),
        _ => Err(CliError::msg(format!(
            "cluster update {} {}: {}",
            end.id,
            end.state.as_str(),
            end.failure.as_deref().unwrap_or("see its status")
        ))),
    }
}

/// Polls the update until it is no longer running, printing each host's
/// step change on stderr; rides out the answering host's own restart.
fn follow(c: &Client, mut v: RolloutView) -> CliResult<RolloutView> {
    let mut shown: Vec<String> = Vec::new();
    let mut away_since: Option<Instant> = None;
    loop {
        for h in &v.hosts {
            let line = format!(
                "{}: {}{}",
                h.host,
                h.state.as_str(),
                h.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            if !shown.contains(&line) {
                eprintln!("{line}");
                shown.push(line);
            }
        }
        if !v.state.is_running() {
            return Ok(v);
        }
        std::thread::sleep(POLL);
        match c.get::<RolloutView>(PATH) {
            Ok(n) => {
                away_since = None;
                v = n;
            }
            // The answering host restarts or reboots in its turn, or has
            // no quorum for a moment: tried again.
            Err(e) if e.is_transient() => {
                let since = *away_since.get_or_insert_with(Instant::now);
                if since.elapsed() > AWAY {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

impl Render for RolloutHostView {
    const COLUMNS: &'static [&'static str] = &["host", "step", "from", "version", "job", "message"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.host),
            self.state.as_str().into(),
            cell(&self.from_version),
            cell(&self.version),
            cell(&self.job),
            cell(&self.message),
        ]
    }
}

impl Render for RolloutView {
    const COLUMNS: &'static [&'static str] = &["id", "version", "class", "state", "hosts"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.id),
            cell(&self.version),
            cell(&self.class),
            self.state.as_str().into(),
            self.hosts.len().to_string(),
        ]
    }

    /// The update, then a table of its hosts.
    fn show(&self) -> String {
        let mut out = format!(
            "update:     {} ({} bundle {}, {} bytes, sha256 {})\nstate:      {}\nstarted:    {} by {}\n",
            self.id,
            self.class,
            self.version,
            self.size,
            self.sha256,
            self.state.as_str(),
            self.started_at,
            self.started_by
        );
        if let Some(t) = &self.finished_at {
            out.push_str(&format!("ended:      {t}\n"));
        }
        out.push_str(&format!(
            "holder:     {}\nmove back:  {}\n",
            self.holder, self.move_back
        ));
        if let Some(f) = &self.failure {
            out.push_str(&format!("failure:    {f}\n"));
        }
        if let Some(a) = &self.advice {
            out.push_str(&format!("next:       {a}\n"));
        }
        out.push_str(&table(&self.hosts));
        for h in self.hosts.iter().filter(|h| !h.moved.is_empty()) {
            out.push_str(&format!("moved from {}: {}\n", h.host, h.moved.join(", ")));
        }
        out
    }
}
