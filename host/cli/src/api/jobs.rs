//! `nasvisor job`, and following a job: the commands that answer with a
//! job print it with [`answer`], which follows it with [`wait`] on
//! `--wait`.

use super::client::{enc, CliError, CliResult, Client};
use super::render::{cell, Out, Render};
use super::table;
use clap::Subcommand;
use nasvisor_api_types::{JobState, JobView};
use std::io::IsTerminal;
use std::time::Duration;

/// How often a followed job is polled.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// All jobs.
    List,
    /// One job.
    Show { id: String },
    /// Ask a job to stop.
    Cancel { id: String },
    /// Follow a job until it ends (exit 0 when it succeeded, 1 otherwise).
    Wait { id: String },
}

fn job_path(id: &str) -> String {
    format!("/api/v1/jobs/{}", enc(id))
}

/// Runs `nasvisor job ...`.
pub fn run(c: &Client, cmd: JobCmd, out: Out) -> CliResult<()> {
    match cmd {
        JobCmd::List => out.list(&c.get::<Vec<JobView>>("/api/v1/jobs")?),
        JobCmd::Show { id } => out.show(&c.get::<JobView>(&job_path(&id))?),
        JobCmd::Cancel { id } => {
            let j: JobView = c.call("POST", &format!("{}/cancel", job_path(&id)))?;
            out.done(&j, line);
        }
        JobCmd::Wait { id } => out.done(&wait(c, &id)?, line),
    }
    Ok(())
}

impl Render for JobView {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "kind",
        "state",
        "progress",
        "target",
        "message",
        "created_at",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.id),
            cell(&self.kind),
            cell(&self.state),
            format!("{}%", percent(self.progress)),
            cell(&self.target),
            cell(&self.message),
            cell(&self.created_at),
        ]
    }

    fn show(&self) -> String {
        let mut out = table::fields(&[
            ("id", cell(&self.id)),
            ("kind", cell(&self.kind)),
            ("state", cell(&self.state)),
            ("target", cell(&self.target)),
        ]);
        out.push_str(&format!("progress:  {}\n", bar(self.progress)));
        out.push_str(&table::fields(&[
            ("message", cell(&self.message)),
            ("error", cell(&self.error)),
            ("created", cell(&self.created_at)),
            ("finished", cell(&self.finished_at)),
        ]));
        out
    }
}

fn percent(progress: f64) -> u32 {
    (progress.clamp(0.0, 1.0) * 100.0).round() as u32
}

/// One line about a job: `job ID (KIND) STATE [for TARGET]`.
pub fn line(j: &JobView) -> String {
    let mut s = format!("job {} ({}) {}", cell(&j.id), cell(&j.kind), cell(&j.state));
    if let Some(t) = &j.target {
        s.push_str(&format!(" for {t}"));
    }
    s
}

/// A progress bar: `[#####-----]  50%`.
pub fn bar(progress: f64) -> String {
    let p = progress.clamp(0.0, 1.0);
    let filled = (p * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        "-".repeat(20 - filled),
        percent(p)
    )
}

/// Prints the job an operation answered with, and follows it when `follow`
/// (with `--output json|yaml`, one document: the job as it ended).
pub fn answer(c: &Client, out: Out, j: &JobView, follow: bool) -> CliResult<()> {
    let doc = out.doc();
    if let (Some(doc), false) = (doc, follow) {
        doc.print(j);
    }
    out.note(|| line(j));
    if follow {
        let end = wait(c, &j.id)?;
        if let Some(doc) = doc {
            doc.print(&end);
        }
    } else if !j.state.is_final() {
        out.note(|| format!("follow it with: nasvisor job wait {}", j.id));
    }
    Ok(())
}

/// Polls job `id` every 250 ms, showing a progress line on stderr, until it
/// ends. `Ok(job)` when it succeeded, an error with the job's error otherwise.
pub fn wait(c: &Client, id: &str) -> CliResult<JobView> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let j: JobView = c.get(&job_path(id))?;
        let state = j.state.as_str();
        let mut progress = format!("{} {state}", bar(j.progress));
        if let Some(m) = j.message.as_deref().filter(|m| !m.is_empty()) {
            progress.push_str(": ");
            progress.push_str(m);
        }
        if tty {
            eprint!("\r\x1b[2K{progress}");
        } else if progress != last {
            eprintln!("{progress}");
        }
        last = progress;
        if !j.state.is_final() {
            std::thread::sleep(POLL);
            continue;
        }
        if tty {
            eprintln!();
        }
        if j.state == JobState::Succeeded {
            return Ok(j);
        }
        let why = j.error.as_deref().filter(|e| !e.is_empty()).unwrap_or(
            if j.state == JobState::Cancelled {
                "cancelled"
            } else {
                "no reason given"
            },
        );
        return Err(CliError::msg(format!("job {id} {state}: {why}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, target: Option<&str>) -> JobView {
        JobView {
            id: "j1".into(),
            kind: "install".into(),
            state,
            progress: 0.5,
            error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            target: target.map(Into::into),
            message: Some("copying".into()),
            finished_at: None,
        }
    }

    #[test]
    fn bars_lines_and_rows() {
        assert_eq!(bar(0.5), "[##########----------]  50%");
        assert_eq!(bar(2.0), "[####################] 100%");
        assert_eq!(bar(0.0), "[--------------------]   0%");
        assert_eq!(
            line(&job(JobState::Running, Some("vm/web1"))),
            "job j1 (install) running for vm/web1"
        );
        assert_eq!(
            line(&job(JobState::Queued, None)),
            "job j1 (install) queued"
        );
        let row = job(JobState::Running, None).row();
        assert_eq!(row[3], "50%");
        assert_eq!(row[4], "-");
        let show = job(JobState::Running, None).show();
        assert!(
            show.contains("progress:  [##########----------]  50%\n"),
            "{show}"
        );
        assert!(show.contains("finished:  -\n"), "{show}");
    }
}
