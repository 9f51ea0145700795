//! The image library: imports from a file, a URL or an upload, as jobs; the
//! bundled image on first start.

use crate::errors;
use crate::jobs::{ImageJob, JobCtx, JobFailure, JobSpec};
use crate::model::{
    kind, Firmware, ImageRecord, ImageState, JobRecord, JobState, Severity, VmRecord,
};
use crate::Inner;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use nasvisor_api_types::{CoreError, ImageView, JobView};
use nasvisor_api_types::{FirmwareKind, ImageAdd, ImageMetaSpec, ImageSource};
use nasvisor_best_effort::BestEffort;
use nasvisor_storage::{Expected, Image, ImageSpec, StorageError};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// A reader that fails once its job is cancelled (the library then removes
/// the partial file).
struct Cancellable<R> {
    inner: R,
    ctx: JobCtx,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ctx.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

fn spec_of(meta: &ImageMetaSpec) -> ImageSpec {
    ImageSpec {
        os_family: meta.os_family.clone(),
        os_variant: meta.os_variant.clone(),
        cloud_init: meta.cloud_init,
        firmware: match meta.firmware {
            FirmwareKind::Bios => "bios".into(),
            FirmwareKind::Uefi => "uefi".into(),
        },
        ready_marker: meta.ready_marker.clone(),
    }
}

fn record_of(name: &str, meta: &ImageMetaSpec, job: Option<String>) -> ImageRecord {
    ImageRecord {
        name: name.to_string(),
        state: ImageState::Importing,
        job,
        error: None,
        os_family: meta.os_family.clone(),
        os_variant: meta.os_variant.clone(),
        cloud_init: meta.cloud_init,
        firmware: match meta.firmware {
            FirmwareKind::Bios => Firmware::Bios,
            FirmwareKind::Uefi => Firmware::Uefi,
        },
        ready_marker: meta.ready_marker.clone(),
        format: None,
        size_bytes: 0,
        virtual_size_bytes: 0,
        hosts: Vec::new(),
    }
}

impl Inner {
    pub(crate) fn list_images(&self) -> Vec<ImageView> {
        self.db
            .list::<ImageRecord>(kind::IMAGE)
            .iter()
            .map(ImageRecord::view)
            .collect()
    }

    /// Refuses a name in use (a failed import's record may be replaced).
    fn image_name_free(&self, name: &str) -> Result<(), CoreError> {
        match self.db.get::<ImageRecord>(kind::IMAGE, name) {
            Some((r, _)) if r.state != ImageState::Failed => {
                Err(errors::conflict(format!("image {name} already exists")))
            }
            _ => {
                // A failed import's leftovers go now.
                self.library
                    .delete(name)
                    .or_else(gone_is_done)
                    .best_effort("remove a failed import's leftovers");
                Ok(())
            }
        }
    }

    /// Records the outcome of an import: the image ready on this host, or,
    /// when it failed, no record at all (the job and an
    /// `image-import-failed` event keep the reason).
    pub(crate) async fn image_done(&self, name: &str, result: &Result<Image, String>) {
        let Ok(img) = result else {
            let ours = self
                .db
                .get::<ImageRecord>(kind::IMAGE, name)
                .is_some_and(|(r, _)| r.state != ImageState::Ready);
            if ours {
                if let Err(e) = self.db.delete(kind::IMAGE, name).await {
                    tracing::error!(image = name, error = %e, "cannot remove a failed import's record");
                }
            }
            return;
        };
        let host = self.host.id.clone();
        let r = self
            .db
            .update::<ImageRecord, _>(kind::IMAGE, name, |r| {
                r.state = ImageState::Ready;
                r.error = None;
                r.format = Some(img.source_format.clone());
                r.size_bytes = std::fs::metadata(&img.path).map(|m| m.len()).unwrap_or(0);
                r.virtual_size_bytes = img.virtual_size;
                if !r.hosts.contains(&host) {
                    r.hosts.push(host.clone());
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(image = name, error = %e, "cannot record the import's outcome");
        }
    }

    /// Imports an image from a file of this host or a URL, as a job. A file
    /// is inspected ([`nasvisor_storage::inspect`]) before the job starts.
    pub(crate) async fn add_image(self: &Arc<Self>, add: ImageAdd) -> Result<JobView, CoreError> {
        let _g = self.ops.lock().await;
        self.image_name_free(&add.name)?;
        if let ImageSource::Path(p) = &add.source {
            let path = Path::new(p);
            if !path.is_file() {
                return Err(errors::invalid(
                    "path",
                    format!("{p} is not a file on host {}", self.host.id),
                ));
            }
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || {
                nasvisor_storage::inspect(&nasvisor_storage::QemuImg::default(), &path)
            })
            .await
            .map_err(errors::internal)?
            .map_err(|e| errors::storage("path", e))?;
        }
        let (job, ctx) = self
            .job_start(
                &JobSpec::ImageImport(ImageJob {
                    name: add.name.clone(),
                }),
                Some(format!("image/{}", add.name)),
            )
            .await?;
        let rec = record_of(&add.name, &add.meta, Some(job.id.clone()));
        self.db.put(kind::IMAGE, &add.name, &rec, None).await?;
        drop(_g);
        let me = self.clone();
        tokio::spawn(async move {
            let lib = me.library.clone();
            let downloader = me.downloader.clone();
            let c = ctx.clone();
            let name = add.name.clone();
            let spec = spec_of(&add.meta);
            let r = tokio::task::spawn_blocking(move || -> Result<Image, StorageError> {
                let progress = |n: u64, total: Option<u64>| {
                    let f = total
                        .filter(|t| *t > 0)
                        .map(|t| n as f64 / t as f64 * 0.9)
                        .unwrap_or(0.0);
                    c.progress(f, Some(&format!("received {} MiB", n >> 20)));
                };
                match &add.source {
                    ImageSource::Path(p) => {
                        let f = std::fs::File::open(p).map_err(|e| StorageError::Io {
                            path: p.into(),
                            source: e,
                        })?;
                        let expected = Expected {
                            len: f.metadata().map(|m| m.len()).ok(),
                            sha256: add.sha256.clone(),
                        };
                        lib.add_reader(
                            &name,
                            Cancellable {
                                inner: f,
                                ctx: c.clone(),
                            },
                            expected,
                            p,
                            spec,
                            progress,
                        )
                    }
                    ImageSource::Url(u) => {
                        let (reader, len) = nasvisor_storage::fetch_url(
                            downloader.as_ref(),
                            u,
                            add.sha256.as_deref(),
                            nasvisor_storage::DOWNLOAD_READ_TIMEOUT,
                        )?;
                        let expected = Expected {
                            len,
                            sha256: add.sha256.clone(),
                        };
                        lib.add_reader(
                            &name,
                            Cancellable {
                                inner: reader,
                                ctx: c.clone(),
                            },
                            expected,
                            u,
                            spec,
                            progress,
                        )
                    }
                }
            })
            .await;
            me.finish_import(
                &ctx,
                &add.name,
                r.map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
            )
            .await;
        });
        Ok(job.view())
    }

    async fn finish_import(&self, ctx: &JobCtx, name: &str, r: Result<Image, String>) {
        self.image_done(name, &r).await;
        let outcome = match &r {
            Ok(img) => Ok(format!(
                "image {name} ready ({}, {} MiB virtual)",
                img.source_format,
                img.virtual_size >> 20
            )),
            Err(_) if ctx.is_cancelled() => Err(JobFailure::Cancelled),
            Err(e) => Err(JobFailure::Failed(e.clone())),
        };
        if let Err(e) = &r {
            self.event(
                "image-import-failed",
                Severity::Warning,
                Some(format!("image/{name}")),
                format!("import of image {name} failed: {e}"),
            )
            .await;
        }
        self.job_finish(ctx, outcome).await;
    }

    /// Imports an upload streamed through the API. Answers once the image
    /// is in the library (or refused).
    pub(crate) async fn upload_image(
        self: &Arc<Self>,
        name: String,
        meta: ImageMetaSpec,
        body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    ) -> Result<JobView, CoreError> {
        {
            let _g = self.ops.lock().await;
            self.image_name_free(&name)?;
        }
        let (job, ctx) = self
            .job_start(
                &JobSpec::ImageUpload(ImageJob { name: name.clone() }),
                Some(format!("image/{name}")),
            )
            .await?;
        self.db
            .put(
                kind::IMAGE,
                &name,
                &record_of(&name, &meta, Some(job.id.clone())),
                None,
            )
            .await?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(
            body.map_err(std::io::Error::other),
        ));
        let lib = self.library.clone();
        let c = ctx.clone();
        let n2 = name.clone();
        let spec = spec_of(&meta);
        let r = tokio::task::spawn_blocking(move || {
            lib.add_reader(
                &n2,
                Cancellable {
                    inner: reader,
                    ctx: c.clone(),
                },
                Expected::default(),
                "upload",
                spec,
                |n, _| c.progress(0.0, Some(&format!("received {} MiB", n >> 20))),
            )
        })
        .await
        .map_err(errors::internal)?;
        let failed = r.as_ref().err().map(|e| e.to_string());
        self.finish_import(&ctx, &name, r.map_err(|e| e.to_string()))
            .await;
        if let Some(e) = failed {
            return Err(errors::invalid("body", e));
        }
        self.get_job(&job.id).await
    }

    pub(crate) async fn delete_image(&self, name: &str) -> Result<(), CoreError> {
        let _g = self.ops.lock().await;
        let Some((rec, _)) = self.db.get::<ImageRecord>(kind::IMAGE, name) else {
            return Err(errors::not_found(format!("image {name}")));
        };
        if rec.state == ImageState::Importing {
            return Err(errors::conflict(format!(
                "image {name} is being imported; cancel job {} first",
                rec.job.unwrap_or_default()
            )));
        }
        let users: Vec<String> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.image.as_deref() == Some(name))
            .map(|v| v.name)
            .collect();
        if !users.is_empty() {
            return Err(errors::conflict(format!(
                "image {name} backs the disks of VM(s) {}; delete them first",
                users.join(", ")
            )));
        }
        match self.library.delete(name) {
            Ok(()) | Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(errors::storage("name", e)),
        }
        self.db.delete(kind::IMAGE, name).await?;
        Ok(())
    }

    /// Adds the bundled images that are not in the library yet.
    pub(crate) async fn add_bundled_images(&self) {
        for b in self.cfg.bundled_images.clone() {
            let existing = self.db.get::<ImageRecord>(kind::IMAGE, &b.name);
            let here = self.library.get(&b.name).is_ok();
            match &existing {
                // Recorded, and this host has its copy.
                Some((r, _)) if here && r.hosts.contains(&self.host.id) => continue,
                // Another image of that name (not ours to replace).
                Some((r, _)) if r.state != ImageState::Ready => continue,
                _ => {}
            }
            let meta: Value = b
                .metadata
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let s = |k: &str, d: &str| meta[k].as_str().unwrap_or(d).to_string();
            let m = ImageMetaSpec {
                os_family: s("os-family", "linux"),
                os_variant: s("os-variant", ""),
                cloud_init: meta["cloud-init"].as_bool().unwrap_or(true),
                firmware: if s("firmware", "bios") == "uefi" {
                    FirmwareKind::Uefi
                } else {
                    FirmwareKind::Bios
                },
                ready_marker: meta["ready-marker"].as_str().map(str::to_string),
            };
            self.library
                .delete(&b.name)
                .or_else(gone_is_done)
                .best_effort("remove the previous copy of a bundled image");
            let r = self
                .library
                .add_file(&b.name, &b.path, spec_of(&m), |_, _| {});
            if existing.is_none() {
                if let Err(e) = self
                    .db
                    .put(kind::IMAGE, &b.name, &record_of(&b.name, &m, None), None)
                    .await
                {
                    tracing::error!(image = %b.name, error = %e, "cannot record the bundled image");
                    continue;
                }
            }
            let r = r.map_err(|e| e.to_string());
            if let Err(e) = &r {
                tracing::error!(image = %b.name, error = %e, "cannot add the bundled image");
            } else {
                tracing::info!(image = %b.name, "bundled image added to the library");
            }
            self.image_done(&b.name, &r).await;
        }
    }

    /// Records every image of this host's library as present here (after a
    /// join: the cluster learns this host's copies). An image the cluster
    /// already has under that name gets this host added to its copies.
    pub(crate) async fn register_library_images(&self) {
        let Ok(images) = self.library.list() else {
            return;
        };
        for img in images {
            let rec = self.db.get::<ImageRecord>(kind::IMAGE, &img.name);
            if rec
                .as_ref()
                .is_some_and(|(r, _)| r.hosts.contains(&self.host.id))
            {
                continue;
            }
            if rec.is_none() {
                let meta = ImageMetaSpec {
                    os_family: img.spec.os_family.clone(),
                    os_variant: img.spec.os_variant.clone(),
                    cloud_init: img.spec.cloud_init,
                    firmware: if img.spec.firmware == "uefi" {
                        FirmwareKind::Uefi
                    } else {
                        FirmwareKind::Bios
                    },
                    ready_marker: img.spec.ready_marker.clone(),
                };
                if let Err(e) = self
                    .db
                    .put(
                        kind::IMAGE,
                        &img.name,
                        &record_of(&img.name, &meta, None),
                        Some(0),
                    )
                    .await
                {
                    tracing::warn!(image = %img.name, error = %e, "cannot record an image of the library");
                    continue;
                }
            }
            let name = img.name.clone();
            self.image_done(&name, &Ok(img)).await;
        }
    }

    /// After a restart: an import the crash interrupted either completed on
    /// disk (recorded ready now) or is gone (recorded failed).
    pub(crate) async fn recover_image_job(&self, job: &ImageJob) -> Result<(), String> {
        let name = job.name.clone();
        match self.library.get(&name) {
            Ok(img) => {
                self.image_done(&name, &Ok(img)).await;
                Ok(())
            }
            Err(_) => {
                let e = "interrupted by a restart of nasvisord; the partial file was removed"
                    .to_string();
                self.image_done(&name, &Err(e.clone())).await;
                Err(e)
            }
        }
    }

    /// Marks every unfinished job of this host as ended: resumed where the
    /// work was complete, otherwise cleaned up.
    pub(crate) async fn recover_jobs(self: &Arc<Self>) {
        for job in self.db.list::<JobRecord>(kind::JOB) {
            if job.state.is_final() || job.host.as_deref().is_some_and(|h| h != self.host.id) {
                continue;
            }
            let outcome: Result<String, String> = match JobSpec::of(&job) {
                Ok(JobSpec::ImageImport(j) | JobSpec::ImageUpload(j)) => self
                    .recover_image_job(&j)
                    .await
                    .map(|_| "completed before the restart".to_string()),
                Ok(JobSpec::Install(j)) => Err(self.recover_install_job(&j).await),
                Ok(JobSpec::Migrate(j)) => Err(self.recover_migrate_job(&job.id, j).await),
                Ok(JobSpec::FirmwareInstall(j)) => Err(self.recover_firmware_job(&j)),
                Ok(JobSpec::HostReboot(j)) => self.recover_reboot_job(&j),
                Ok(JobSpec::VolumeImport(_) | JobSpec::Evacuate(_)) => {
                    Err("interrupted by a restart of nasvisord; partial files were removed".into())
                }
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "a job that cannot be recovered");
                    Err(format!("interrupted by a restart of nasvisord; {e}"))
                }
            };
            self.db
                .update::<JobRecord, _>(kind::JOB, &job.id, |j| {
                    j.finished_at = Some(crate::model::now_rfc3339());
                    match &outcome {
                        Ok(m) => {
                            j.state = JobState::Succeeded;
                            j.progress = 1.0;
                            j.message = Some(m.clone());
                        }
                        Err(e) => {
                            j.state = JobState::Failed;
                            j.error = Some(e.clone());
                            j.message = Some("interrupted".into());
                        }
                    }
                    Ok(())
                })
                .await
                .best_effort("record the end of the image's job");
            self.event(
                "job-interrupted",
                Severity::Warning,
                job.target.clone(),
                format!(
                    "job {} ({}) was interrupted by a restart: {}",
                    job.id,
                    job.kind,
                    match &outcome {
                        Ok(m) => m.clone(),
                        Err(e) => e.clone(),
                    }
                ),
            )
            .await;
        }
    }
}

/// An image that is already gone needs no removal.
fn gone_is_done(e: nasvisor_storage::StorageError) -> Result<(), nasvisor_storage::StorageError> {
    match e {
        nasvisor_storage::StorageError::NotFound { .. } => Ok(()),
        e => Err(e),
    }
}
