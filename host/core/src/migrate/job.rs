//! What a move job records: its parameters and the step it reached, typed,
//! so that a restart matches on the step instead of guessing it.
//!
//! Stored as the job's `params`. Records written before the step was
//! recorded have the same fields without `step`; they read back as
//! [`MigrateStep::Unrecorded`], and recovery then asks the log, as it did.

use super::CopyDisk;
use crate::jobs::JobSpec;
use crate::model::{kind, JobRecord};
use crate::Inner;
use nasvisor_api_types::CoreError;
use serde::{Deserialize, Serialize};

/// Where a move stands. Each step is committed before the work it names
/// begins, except [`MigrateStep::Switched`], committed once the target was
/// told to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum MigrateStep {
    /// A record written before steps were recorded: the log decides.
    #[default]
    Unrecorded,
    /// The target is being prepared; the VM is this host's.
    Preparing,
    /// Disks are being copied (mirrors, or `qemu-img` offline); the VM is
    /// this host's.
    CopyingDisks,
    /// The memory is on its way and ownership may pass through the log any
    /// moment: the log decides.
    CopyingMemory,
    /// The log passed the VM on and the target was told to take over; only
    /// this host's leftovers remain.
    Switched,
}

/// The parameters of a `migrate` job, and its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MigrateJob {
    /// The VM's id.
    pub vm: String,
    /// The source host's id.
    pub from: String,
    /// The target host's id.
    pub to: String,
    pub live: bool,
    /// The block nodes whose contents travel.
    pub copied_disks: Vec<String>,
    /// What a restart after the switch must remove here.
    pub copies: Vec<CopyDisk>,
    #[serde(default)]
    pub step: MigrateStep,
}

impl Inner {
    /// Commits that move job `id` reached `step`.
    pub(crate) async fn set_migrate_step(
        &self,
        id: &str,
        job: &mut MigrateJob,
        step: MigrateStep,
    ) -> Result<(), CoreError> {
        job.step = step;
        let params = JobSpec::Migrate(job.clone()).params()?;
        self.db
            .update::<JobRecord, _>(kind::JOB, id, |j| {
                j.params = params.clone();
                Ok(())
            })
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_recorded_before_steps_existed_reads_back_as_unrecorded() {
        // The shape written by earlier releases.
        let old = json!({"vm": "v1", "from": "nas1", "to": "nas2", "live": true,
            "copied_disks": ["disk0"],
            "copies": [{"node": "disk0", "pool": "default", "volume": "v-disk0",
                "size_bytes": 1024}]});
        let j: MigrateJob = serde_json::from_value(old).unwrap();
        assert_eq!(j.step, MigrateStep::Unrecorded);
        assert_eq!((j.vm.as_str(), j.to.as_str()), ("v1", "nas2"));
        assert_eq!(j.copies[0].volume.as_deref(), Some("v-disk0"));
    }

    #[test]
    fn a_step_round_trips_and_an_unreadable_record_names_the_problem() {
        let j = MigrateJob {
            vm: "v".into(),
            from: "a".into(),
            to: "b".into(),
            live: false,
            copied_disks: vec![],
            copies: vec![],
            step: MigrateStep::CopyingMemory,
        };
        let v = JobSpec::Migrate(j.clone()).params().unwrap();
        assert_eq!(v["step"], "copying-memory");
        assert_eq!(serde_json::from_value::<MigrateJob>(v).unwrap(), j);
        let rec = crate::jobs::spec::tests::record("migrate", json!({"from": "nas1"}));
        let e = JobSpec::of(&rec).unwrap_err();
        assert!(e.contains("unreadable") && e.contains("vm"), "{e}");
    }
}
