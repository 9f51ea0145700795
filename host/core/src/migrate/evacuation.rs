//! Evacuation: cordon a host, then move every running VM away, one after
//! the other, to hosts the scheduler picks (each move its own job).

use crate::errors;
use crate::jobs::{EvacuateJob, JobCtx, JobFailure, JobSpec};
use crate::model::{kind, JobRecord, JobState, VmRecord};
use crate::Inner;
use nasvisor_api_types::CoreError;
use nasvisor_api_types::VmMigrate;
use std::sync::Arc;
use std::time::Duration;

impl Inner {
    pub(crate) async fn evacuate(
        self: &Arc<Self>,
        host: &str,
    ) -> Result<nasvisor_api_types::JobView, CoreError> {
        self.set_cordon(host, true).await?;
        let vms: Vec<VmRecord> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.host.as_deref() == Some(host) && self.processes.contains(&v.id))
            .collect();
        let (job, ctx) = self
            .job_start(
                &JobSpec::Evacuate(EvacuateJob {
                    host: host.to_string(),
                    vms: vms.iter().map(|v| v.name.clone()).collect(),
                }),
                Some(format!("host/{host}")),
            )
            .await?;
        let me = self.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            let n = vms.len().max(1);
            let mut moved = Vec::new();
            let mut failed = Vec::new();
            for (i, vm) in vms.iter().enumerate() {
                if ctx.is_cancelled() {
                    break;
                }
                ctx.milestone(i as f64 / n as f64, &format!("moving VM {}", vm.name));
                let r = async {
                    let target = me.place_excluding(vm, None, &[host.as_str()]).await?;
                    let job = me
                        .start_migration(
                            &vm.id,
                            VmMigrate {
                                host: target.clone(),
                                max_downtime_ms: None,
                            },
                        )
                        .await?;
                    me.wait_job_end(&job.id, &ctx).await?;
                    Ok::<String, CoreError>(target)
                }
                .await;
                match r {
                    Ok(t) => moved.push(format!("{} → {t}", vm.name)),
                    Err(e) => failed.push(format!("{}: {e}", vm.name)),
                }
            }
            let outcome = if ctx.is_cancelled() {
                Err(JobFailure::Cancelled)
            } else if failed.is_empty() {
                Ok(format!(
                    "host {host} evacuated: {}",
                    if moved.is_empty() {
                        "no running VMs".into()
                    } else {
                        moved.join(", ")
                    }
                ))
            } else {
                Err(JobFailure::Failed(format!(
                    "not moved: {}",
                    failed.join("; ")
                )))
            };
            me.job_finish(&ctx, outcome).await;
        });
        Ok(job.view())
    }

    /// Waits for job `id` to end; its error if it did not succeed.
    async fn wait_job_end(&self, id: &str, outer: &JobCtx) -> Result<(), CoreError> {
        loop {
            if outer.is_cancelled() {
                self.local_jobs.cancel(id);
            }
            match self.db.get::<JobRecord>(kind::JOB, id) {
                Some((j, _)) if j.state.is_final() => {
                    return match j.state {
                        JobState::Succeeded => Ok(()),
                        _ => Err(errors::conflict(j.error.unwrap_or_else(|| "failed".into()))),
                    };
                }
                None => return Err(errors::not_found(format!("job {id}"))),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
