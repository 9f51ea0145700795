//! `nasvisor event list`: the event log, once or followed ([`list_log`]
//! also lists the audit log).

use super::client::{query, CliResult, Client};
use super::render::{cell, Out, Render};
use clap::{Args, Subcommand};
use nasvisor_api_types::EventView;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::time::Duration;

/// How long a followed log waits after an empty answer.
const FOLLOW_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Events, oldest first.
    List(LogList),
}

/// The options of a numbered log's list (events, audit).
#[derive(Debug, Args)]
pub struct LogList {
    /// Only entries after this sequence number.
    #[arg(long)]
    pub since: Option<u64>,
    /// At most this many per request (1-1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Keep polling for new entries.
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs `nasvisor event ...`.
pub fn run(c: &Client, cmd: EventCmd, out: Out) -> CliResult<()> {
    let EventCmd::List(l) = cmd;
    list_log(c, "/api/v1/events", &l, out, |e: &EventView| e.seq)
}

/// Lists a numbered log (`path`: the events, the audit log) after `since`,
/// once or, with `follow`, polling for new records: a header once, then a
/// line per record (or a JSON line / YAML document each).
pub fn list_log<T: Render + DeserializeOwned>(
    c: &Client,
    path: &str,
    l: &LogList,
    out: Out,
    seq: impl Fn(&T) -> u64,
) -> CliResult<()> {
    let fetch = |since: Option<u64>| -> CliResult<Vec<T>> {
        let mut q = Vec::new();
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        if let Some(n) = l.limit {
            q.push(("limit", n.to_string()));
        }
        c.get(&format!("{path}{}", query(&q)))
    };
    let first = fetch(l.since)?;
    if !l.follow {
        out.list(&first);
        return Ok(());
    }
    let mut last = l.since;
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
            last = batch.iter().map(&seq).max().or(last);
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
