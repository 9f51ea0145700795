//! Jobs: long operations (image import, upload, volume import, install),
//! committed to the store with their progress, cancellable, and cleaned up
//! by [`Inner::recover`](crate::Inner) after a restart.

use crate::errors;
use crate::model::{kind, now_rfc3339, JobRecord, JobState};
use crate::{lock, Inner};
use nasvisor_api_types::{CoreError, JobView};
use nasvisor_best_effort::BestEffort;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many ended jobs are kept (the oldest go first).
const KEEP_ENDED_JOBS: usize = 500;

/// How often a running job's progress is committed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(300);

/// A running job's handle: progress reports and its cancellation token.
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub id: String,
    pub cancel: CancellationToken,
    progress: Arc<Mutex<(f64, Option<String>, bool)>>,
}

impl JobCtx {
    /// Reports progress (0..1) and, optionally, the current step.
    pub fn progress(&self, fraction: f64, message: Option<&str>) {
        let mut p = lock(&self.progress);
        p.0 = fraction.clamp(0.0, 1.0);
        if let Some(m) = message {
            p.1 = Some(m.to_string());
        }
        p.2 = true;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Why a job ended without success.
#[derive(Debug)]
pub(crate) enum JobFailure {
    Cancelled,
    Failed(String),
}

impl From<CoreError> for JobFailure {
    fn from(e: CoreError) -> Self {
        JobFailure::Failed(e.to_string())
    }
}

impl Inner {
    /// Commits a new running job and returns its handle; a task commits its
    /// progress until it ends.
    pub(crate) async fn job_start(
        self: &Arc<Self>,
        job_kind: &str,
        target: Option<String>,
        params: Value,
    ) -> Result<(JobRecord, JobCtx), CoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let rec = JobRecord {
            id: id.clone(),
            kind: job_kind.to_string(),
            state: JobState::Running,
            progress: 0.0,
            error: None,
            created_at: now_rfc3339(),
            target,
            message: Some("starting".into()),
            finished_at: None,
            host: Some(self.host.id.clone()),
            params,
        };
        self.db.create(kind::JOB, &id, &rec, "job").await?;
        self.prune_jobs().await;
        let ctx = JobCtx {
            id: id.clone(),
            // Not tied to the core's shutdown: a job the daemon's exit interrupts
            // is ended by the next start's recovery, not recorded as cancelled.
            cancel: CancellationToken::new(),
            progress: Arc::new(Mutex::new((0.0, None, false))),
        };
        lock(&self.jobs).insert(id.clone(), ctx.cancel.clone());
        let me = self.clone();
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_INTERVAL).await;
                if !lock(&me.jobs).contains_key(&c.id) {
                    break;
                }
                let (fraction, message, dirty) = {
                    let mut p = lock(&c.progress);
                    let v = p.clone();
                    p.2 = false;
                    v
                };
                if dirty {
                    me.db
                        .update::<JobRecord, _>(kind::JOB, &c.id, |j| {
                            if !j.state.is_final() {
                                j.progress = fraction;
                                if message.is_some() {
                                    j.message = message.clone();
                                }
                            }
                            Ok(())
                        })
                        .await
                        .best_effort("record the job's progress");
                }
            }
        });
        Ok((rec, ctx))
    }

    /// Records how a job ended.
    pub(crate) async fn job_finish(&self, ctx: &JobCtx, outcome: Result<String, JobFailure>) {
        lock(&self.jobs).remove(&ctx.id);
        let r = self
            .db
            .update::<JobRecord, _>(kind::JOB, &ctx.id, |j| {
                j.finished_at = Some(now_rfc3339());
                match &outcome {
                    Ok(msg) => {
                        j.state = JobState::Succeeded;
                        j.progress = 1.0;
                        j.message = Some(msg.clone());
                        j.error = None;
                    }
                    Err(JobFailure::Cancelled) => {
                        j.state = JobState::Cancelled;
                        j.message = Some("cancelled".into());
                        j.error = Some("cancelled by the administrator".into());
                    }
                    Err(JobFailure::Failed(e)) => {
                        j.state = JobState::Failed;
                        j.message = Some("failed".into());
                        j.error = Some(e.clone());
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(job = %ctx.id, error = %e, "cannot record the end of a job");
        }
    }

    /// Forgets the oldest ended jobs beyond [`KEEP_ENDED_JOBS`].
    async fn prune_jobs(&self) {
        let mut ended: Vec<JobRecord> = self
            .db
            .list::<JobRecord>(kind::JOB)
            .into_iter()
            .filter(|j| j.state.is_final())
            .collect();
        if ended.len() <= KEEP_ENDED_JOBS {
            return;
        }
        ended.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        for j in &ended[..ended.len() - KEEP_ENDED_JOBS] {
            self.db
                .delete(kind::JOB, &j.id)
                .await
                .best_effort("remove an ended job beyond those kept");
        }
    }

    pub(crate) fn get_job(&self, id: &str) -> Result<JobView, CoreError> {
        self.db
            .get::<JobRecord>(kind::JOB, id)
            .map(|(j, _)| j.view())
            .ok_or_else(|| errors::not_found(format!("job {id}")))
    }

    pub(crate) fn list_jobs(&self) -> Vec<JobView> {
        let mut jobs: Vec<JobRecord> = self.db.list(kind::JOB);
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        jobs.iter().map(JobRecord::view).collect()
    }

    /// Asks a running job to stop; it ends as `cancelled` once it has
    /// undone its partial work.
    pub(crate) async fn cancel_job(&self, id: &str) -> Result<JobView, CoreError> {
        let Some((job, _)) = self.db.get::<JobRecord>(kind::JOB, id) else {
            return Err(errors::not_found(format!("job {id}")));
        };
        if job.state.is_final() {
            return Err(errors::conflict(format!(
                "job {id} already ended ({})",
                job.state.as_str()
            )));
        }
        let token = lock(&self.jobs).get(id).cloned();
        match token {
            Some(t) => t.cancel(),
            None => {
                return Err(errors::conflict(format!(
                    "job {id} runs on host {}; cancel it there",
                    job.host.as_deref().unwrap_or("?")
                )))
            }
        }
        // Wait briefly for the job to wind down so the answer shows it.
        for _ in 0..50 {
            if !lock(&self.jobs).contains_key(id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.get_job(id)
    }
}
