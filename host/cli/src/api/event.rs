//! `nasvisor event list`: the event log, once or followed.

use super::client::{query, CliResult, Client};
use super::render::{cell, Out, Render};
use clap::Subcommand;
use nasvisor_api_types::EventView;
use std::io::Write;
use std::time::Duration;

/// How long a followed log waits after an empty answer.
const FOLLOW_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Events, oldest first.
    List {
        /// Only events after this sequence number.
        #[arg(long)]
        since: Option<u64>,
        /// At most this many per request (1-1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Keep polling for new events.
        #[arg(long, short)]
        follow: bool,
    },
}

/// Runs `nasvisor event ...`.
pub fn run(c: &Client, cmd: EventCmd, out: Out) -> CliResult<()> {
    let EventCmd::List {
        since,
        limit,
        follow,
    } = cmd;
    let fetch = |since: Option<u64>| -> CliResult<Vec<EventView>> {
        let mut q = Vec::new();
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        c.get(&format!("/api/v1/events{}", query(&q)))
    };
    let first = fetch(since)?;
    if !follow {
        out.list(&first);
        return Ok(());
    }
    // Following: a header once, then one line per event (a JSON object on
    // one line, or a YAML document).
    let mut last = since;
    let mut header = true;
    let mut batch = first;
    loop {
        if batch.is_empty() {
            std::thread::sleep(FOLLOW_IDLE);
        } else {
            if let Some(doc) = out.doc() {
                for e in &batch {
                    doc.print_item(e);
                }
            } else {
                let t = super::render::table(&batch);
                for l in t.lines().skip(usize::from(!header)) {
                    println!("{l}");
                }
                header = false;
            }
            // A stdout that cannot be flushed (a closed pipe) has no reader to tell.
            let _ = std::io::stdout().flush();
            last = batch.iter().map(|e| e.seq).max().or(last);
        }
        batch = fetch(last)?;
    }
}

impl Render for EventView {
    const COLUMNS: &'static [&'static str] =
        &["seq", "time", "severity", "kind", "target", "message"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.seq),
            cell(&self.time),
            cell(&self.severity),
            cell(&self.kind),
            cell(&self.target),
            cell(&self.message),
        ]
    }
}
