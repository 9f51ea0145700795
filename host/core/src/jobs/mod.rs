//! Jobs: long operations (image import, upload, volume import, install,
//! migrate, evacuate, firmware install, a forced host reboot), typed by [`JobSpec`], committed to the store at their
//! start, their milestones and their end, cancellable, and cleaned up by
//! [`Inner::recover_jobs`] after a restart. [`LocalJobs`] owns the handles
//! of the jobs running on this host and their live progress.

use crate::errors;
use crate::model::{kind, now_rfc3339, JobRecord, JobState};
use crate::{lock, Inner};
use nasvisor_api_types::peer::{JobLive, JobProgress};
use nasvisor_api_types::{CoreError, JobView};
use nasvisor_best_effort::BestEffort;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) mod spec;

pub(crate) use spec::{
    EvacuateJob, FirmwareJob, HostRebootJob, ImageJob, InstallJob, JobSpec, VolumeImportJob,
};

/// How many ended jobs are kept (the oldest go first).
const KEEP_ENDED_JOBS: usize = 500;

/// How often a running job's latest milestone is committed (milestones
/// closer together are coalesced).
const MILESTONE_INTERVAL: Duration = Duration::from_millis(300);

/// How long a read waits for another host's live progress before it shows
/// the committed record.
const LIVE_PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a running job stands, in memory.
#[derive(Debug, Clone, Default)]
struct Live {
    progress: f64,
    message: Option<String>,
    /// A milestone not committed yet.
    milestone: bool,
}

/// A running job's handle: progress reports and its cancellation token.
///
/// Progress is observed state: [`JobCtx::progress`] only updates memory,
/// which reads of the job overlay on its record (on other hosts through the
/// `job-progress` peer call). [`JobCtx::milestone`] also commits it, for the
/// steps a restart or an administrator reading the log must see.
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub id: String,
    pub cancel: CancellationToken,
    live: Arc<Mutex<Live>>,
    /// The job's kind and start, for its metrics.
    kind: &'static str,
    started: std::time::Instant,
}

impl JobCtx {
    /// Reports progress (0..1) and, optionally, the current step; kept in
    /// memory only.
    pub fn progress(&self, fraction: f64, message: Option<&str>) {
        let mut l = lock(&self.live);
        l.progress = fraction.clamp(0.0, 1.0);
        if let Some(m) = message {
            l.message = Some(m.to_string());
        }
    }

    /// Reports a step worth committing (install steps, a move's switch, a
    /// VM of an evacuation): as [`JobCtx::progress`], and committed to the
    /// job's record within [`MILESTONE_INTERVAL`].
    pub fn milestone(&self, fraction: f64, message: &str) {
        self.progress(fraction, Some(message));
        lock(&self.live).milestone = true;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn live(&self) -> JobLive {
        let l = lock(&self.live);
        JobLive {
            id: self.id.clone(),
            progress: l.progress,
            message: l.message.clone(),
        }
    }

    /// The milestone to commit, if one is pending.
    fn take_milestone(&self) -> Option<Live> {
        let mut l = lock(&self.live);
        std::mem::take(&mut l.milestone).then(|| l.clone())
    }
}

/// The jobs running on this host: the one owner of their handles.
#[derive(Default)]
pub(crate) struct LocalJobs {
    running: Mutex<HashMap<String, JobCtx>>,
}

impl LocalJobs {
    fn insert(&self, ctx: JobCtx) {
        lock(&self.running).insert(ctx.id.clone(), ctx);
    }

    fn remove(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    fn get(&self, id: &str) -> Option<JobCtx> {
        lock(&self.running).get(id).cloned()
    }

    /// Whether no job runs here.
    pub fn is_empty(&self) -> bool {
        lock(&self.running).is_empty()
    }

    /// Asks job `id` to stop; false if it does not run here.
    pub fn cancel(&self, id: &str) -> bool {
        match self.get(id) {
            Some(c) => {
                c.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The live progress of those of `ids` that run here.
    pub fn live(&self, ids: &[String]) -> Vec<JobLive> {
        let running = lock(&self.running);
        ids.iter()
            .filter_map(|id| running.get(id).map(JobCtx::live))
            .collect()
    }
}

/// `rec` with the live progress `live` (a running job's memory).
fn overlay(rec: &mut JobRecord, live: &JobLive) {
    if !rec.state.is_final() {
        rec.progress = live.progress;
        if live.message.is_some() {
            rec.message = live.message.clone();
        }
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
    /// Commits a new running job and returns its handle; a task commits
    /// its milestones until it ends.
    pub(crate) async fn job_start(
        self: &Arc<Self>,
        spec: &JobSpec,
        target: Option<String>,
    ) -> Result<(JobRecord, JobCtx), CoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let rec = JobRecord {
            id: id.clone(),
            kind: spec.kind().to_string(),
            state: JobState::Running,
            progress: 0.0,
            error: None,
            created_at: now_rfc3339(),
            target,
            message: Some("starting".into()),
            finished_at: None,
            host: Some(self.host.id.clone()),
            params: spec.params()?,
        };
        self.db.create(kind::JOB, &id, &rec, "job").await?;
        self.prune_jobs().await;
        let ctx = JobCtx {
            id: id.clone(),
            // Not tied to the core's shutdown: a job the daemon's exit interrupts
            // is ended by the next start's recovery, not recorded as cancelled.
            cancel: CancellationToken::new(),
            live: Arc::new(Mutex::new(Live::default())),
            kind: spec.kind(),
            started: std::time::Instant::now(),
        };
        self.local_jobs.insert(ctx.clone());
        let me = self.clone();
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MILESTONE_INTERVAL).await;
                if me.local_jobs.get(&c.id).is_none() {
                    break;
                }
                let Some(m) = c.take_milestone() else {
                    continue;
                };
                me.db
                    .update::<JobRecord, _>(kind::JOB, &c.id, |j| {
                        if !j.state.is_final() {
                            j.progress = m.progress;
                            j.message = m.message.clone();
                        }
                        Ok(())
                    })
                    .await
                    .best_effort("record the job's milestone");
            }
        });
        Ok((rec, ctx))
    }

    /// Records how a job ended.
    pub(crate) async fn job_finish(&self, ctx: &JobCtx, outcome: Result<String, JobFailure>) {
        self.local_jobs.remove(&ctx.id);
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
        let state = match &outcome {
            Ok(_) => JobState::Succeeded,
            Err(JobFailure::Cancelled) => JobState::Cancelled,
            Err(JobFailure::Failed(_)) => JobState::Failed,
        };
        nasvisor_metrics::job_finished(
            ctx.kind,
            &crate::metrics::name_of(&state),
            ctx.started.elapsed().as_secs_f64(),
        );
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

    /// Job `id`, with its live progress if it is running.
    pub(crate) async fn get_job(&self, id: &str) -> Result<JobView, CoreError> {
        let (rec, _) = self
            .db
            .get::<JobRecord>(kind::JOB, id)
            .ok_or_else(|| errors::not_found(format!("job {id}")))?;
        let mut jobs = [rec];
        self.with_live_progress(&mut jobs).await;
        Ok(jobs[0].view())
    }

    /// Every job kept, oldest first, running ones with their live progress.
    pub(crate) async fn list_jobs(&self) -> Vec<JobView> {
        let mut jobs: Vec<JobRecord> = self.db.list(kind::JOB);
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        self.with_live_progress(&mut jobs).await;
        jobs.iter().map(JobRecord::view).collect()
    }

    /// Overlays the live progress of the running jobs among `jobs`: this
    /// host's from memory, the others' asked of their hosts (all at once,
    /// each within [`LIVE_PROGRESS_TIMEOUT`]). A host that cannot answer
    /// leaves its jobs at their last committed milestone.
    async fn with_live_progress(&self, jobs: &mut [JobRecord]) {
        let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for j in jobs.iter_mut().filter(|j| !j.state.is_final()) {
            match j.host.as_deref() {
                Some(h) if h != self.host.id => elsewhere
                    .entry(h.to_string())
                    .or_default()
                    .push(j.id.clone()),
                _ => {
                    if let Some(l) = self.local_jobs.live(std::slice::from_ref(&j.id)).first() {
                        overlay(j, l);
                    }
                }
            }
        }
        let asks = elsewhere.into_iter().filter_map(|(host, ids)| {
            let rec = self.host_record(&host).ok()?;
            Some(async move {
                let r = self
                    .call_peer(&rec, JobProgress { ids }, LIVE_PROGRESS_TIMEOUT)
                    .await;
                if let Err(e) = &r {
                    tracing::debug!(host = %rec.id, error = %e, "no live job progress from a host; showing the committed one");
                }
                r.unwrap_or_default()
            })
        });
        for live in futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
        {
            if let Some(j) = jobs.iter_mut().find(|j| j.id == live.id) {
                overlay(j, &live);
            }
        }
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
        if !self.local_jobs.cancel(id) {
            return Err(errors::conflict(format!(
                "job {id} runs on host {}; cancel it there",
                job.host.as_deref().unwrap_or("?")
            )));
        }
        // Wait briefly for the job to wind down so the answer shows it.
        for _ in 0..50 {
            if self.local_jobs.get(id).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.get_job(id).await
    }
}

#[cfg(test)]
mod tests;
