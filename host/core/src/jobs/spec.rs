//! What each kind of job does, typed: the parameters a restart needs to
//! resume or clean it up.
//!
//! A job record stores its kind (`JobRecord::kind`) and its parameters
//! (`JobRecord::params`) as two fields, the layout of earlier releases;
//! [`JobSpec`] is the one place that maps between the two and the typed
//! form. An unreadable record is an error naming the job, its kind and
//! serde's reason (the field), never a default. Unknown fields are
//! ignored, as everywhere in the store: a record a newer release wrote still
//! reads after a rollback.

use crate::errors;
use crate::migrate::MigrateJob;
use crate::model::JobRecord;
use nasvisor_api_types::CoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `image-import` and `image-upload`: an image of the library being
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageJob {
    /// The image's name.
    pub name: String,
}

/// `volume-import`: a file converted into a new volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeImportJob {
    pub pool: String,
    /// The new volume's name.
    pub name: String,
    /// The file imported, on the job's host.
    pub path: String,
}

/// `install`: a VM installed from a system image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstallJob {
    /// The VM's id.
    pub vm: String,
    /// The pool of its disks.
    pub pool: String,
    /// Whether a failed install keeps its disks (for inspection).
    pub keep_disks: bool,
}

/// `evacuate`: every running VM of a host moved away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EvacuateJob {
    /// The host emptied.
    pub host: String,
    /// The names of the VMs to move.
    pub vms: Vec<String>,
}

/// `firmware-install`: a bundle installed into this host's inactive slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FirmwareJob {
    /// The received bundle, in the data directory (removed at the end).
    pub bundle: String,
}

/// `host-reboot`: a forced reboot of this host, its running VMs shut down
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostRebootJob {
    /// The ids of the VMs shut down (started again when the daemon is back).
    pub vms: Vec<String>,
    /// The kernel's boot id when the job started: a restart that finds
    /// another one knows the host rebooted.
    pub boot_id: String,
}

/// A job's kind and parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobSpec {
    ImageImport(ImageJob),
    ImageUpload(ImageJob),
    VolumeImport(VolumeImportJob),
    Install(InstallJob),
    Migrate(MigrateJob),
    Evacuate(EvacuateJob),
    FirmwareInstall(FirmwareJob),
    HostReboot(HostRebootJob),
}

impl JobSpec {
    /// The kind as recorded and shown (`JobView::kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::ImageImport(_) => "image-import",
            JobSpec::ImageUpload(_) => "image-upload",
            JobSpec::VolumeImport(_) => "volume-import",
            JobSpec::Install(_) => "install",
            JobSpec::Migrate(_) => "migrate",
            JobSpec::Evacuate(_) => "evacuate",
            JobSpec::FirmwareInstall(_) => "firmware-install",
            JobSpec::HostReboot(_) => "host-reboot",
        }
    }

    /// The parameters as recorded.
    pub fn params(&self) -> Result<Value, CoreError> {
        let v = match self {
            JobSpec::ImageImport(j) | JobSpec::ImageUpload(j) => serde_json::to_value(j),
            JobSpec::VolumeImport(j) => serde_json::to_value(j),
            JobSpec::Install(j) => serde_json::to_value(j),
            JobSpec::Migrate(j) => serde_json::to_value(j),
            JobSpec::Evacuate(j) => serde_json::to_value(j),
            JobSpec::FirmwareInstall(j) => serde_json::to_value(j),
            JobSpec::HostReboot(j) => serde_json::to_value(j),
        };
        v.map_err(|e| errors::internal(format!("the parameters of a {} job: {e}", self.kind())))
    }

    /// The kind and parameters of record `job`; an error naming the job,
    /// its kind and what is unreadable.
    pub fn of(job: &JobRecord) -> Result<JobSpec, String> {
        fn read<T: DeserializeOwned>(job: &JobRecord) -> Result<T, String> {
            serde_json::from_value(job.params.clone()).map_err(|e| {
                format!(
                    "job {} ({}): the recorded parameters are unreadable ({e})",
                    job.id, job.kind
                )
            })
        }
        Ok(match job.kind.as_str() {
            "image-import" => JobSpec::ImageImport(read(job)?),
            "image-upload" => JobSpec::ImageUpload(read(job)?),
            "volume-import" => JobSpec::VolumeImport(read(job)?),
            "install" => JobSpec::Install(read(job)?),
            "migrate" => JobSpec::Migrate(read(job)?),
            "evacuate" => JobSpec::Evacuate(read(job)?),
            "firmware-install" => JobSpec::FirmwareInstall(read(job)?),
            "host-reboot" => JobSpec::HostReboot(read(job)?),
            other => return Err(format!("job {}: unknown kind {other:?}", job.id)),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::migrate::MigrateStep;
    use crate::model::JobState;
    use serde_json::json;

    /// A running job record of `kind` with `params`.
    pub(crate) fn record(kind: &str, params: Value) -> JobRecord {
        JobRecord {
            id: "j1".into(),
            kind: kind.into(),
            state: JobState::Running,
            progress: 0.0,
            error: None,
            created_at: String::new(),
            target: None,
            message: None,
            finished_at: None,
            host: None,
            params,
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_record() {
        let specs = [
            JobSpec::ImageImport(ImageJob { name: "deb".into() }),
            JobSpec::ImageUpload(ImageJob { name: "up".into() }),
            JobSpec::VolumeImport(VolumeImportJob {
                pool: "default".into(),
                name: "big".into(),
                path: "/tmp/x.raw".into(),
            }),
            JobSpec::Install(InstallJob {
                vm: "v1".into(),
                pool: "fast".into(),
                keep_disks: true,
            }),
            JobSpec::Migrate(MigrateJob {
                vm: "v1".into(),
                from: "nas1".into(),
                to: "nas2".into(),
                live: true,
                copied_disks: vec!["disk0".into()],
                copies: vec![],
                step: MigrateStep::CopyingDisks,
            }),
            JobSpec::Evacuate(EvacuateJob {
                host: "nas1".into(),
                vms: vec!["a".into(), "b".into()],
            }),
            JobSpec::FirmwareInstall(FirmwareJob {
                bundle: "/var/lib/nasvisor/firmware/uploads/x.nvfw".into(),
            }),
            JobSpec::HostReboot(HostRebootJob {
                vms: vec!["v1".into(), "v2".into()],
                boot_id: "0b2e".into(),
            }),
        ];
        for spec in specs {
            let rec = record(spec.kind(), spec.params().unwrap());
            assert_eq!(JobSpec::of(&rec).unwrap(), spec);
        }
    }

    #[test]
    fn the_records_of_earlier_releases_still_read() {
        // The shapes written with json! before the parameters were typed.
        let install = record(
            "install",
            json!({"vm": "v9", "pool": "default", "keep_disks": false}),
        );
        assert_eq!(
            JobSpec::of(&install).unwrap(),
            JobSpec::Install(InstallJob {
                vm: "v9".into(),
                pool: "default".into(),
                keep_disks: false
            })
        );
        let import = record(
            "volume-import",
            json!({"pool": "p", "name": "n", "path": "/x"}),
        );
        assert!(matches!(
            JobSpec::of(&import).unwrap(),
            JobSpec::VolumeImport(_)
        ));
        let image = record("image-upload", json!({"name": "img"}));
        assert_eq!(
            JobSpec::of(&image).unwrap(),
            JobSpec::ImageUpload(ImageJob { name: "img".into() })
        );
    }

    #[test]
    fn an_unreadable_record_names_the_job_its_kind_and_the_field() {
        // An install without its VM: no silent "" VM to clean up.
        let e = JobSpec::of(&record("install", json!({"pool": "default"}))).unwrap_err();
        assert!(
            e.contains("j1") && e.contains("install") && e.contains("`vm`"),
            "{e}"
        );
        let e = JobSpec::of(&record("image-import", json!({"name": 7}))).unwrap_err();
        assert!(
            e.contains("image-import") && e.contains("invalid type"),
            "{e}"
        );
        let e = JobSpec::of(&record("defrag", json!({}))).unwrap_err();
        assert!(e.contains("unknown kind") && e.contains("defrag"), "{e}");
    }
}
