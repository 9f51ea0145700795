//! Installing a VM from a system image: the os-installer plugin plans, the
//! host carries the plan out as a job (root disk from the image, NoCloud seed
//! volume, first boot, wait for the completion signal). A failed, cancelled or
//! interrupted install leaves the VM `install_failed` with the reason and no
//! orphaned disks (unless asked to keep them).

use crate::jobs::{InstallJob, JobCtx, JobFailure, JobSpec};
use crate::model::{kind, DiskRecord, DiskRole, ImageRecord, Severity, VmRecord, VmStatus};
use crate::vms::failed;
use crate::Inner;
use nasvisor_api_types::CoreError;
use nasvisor_api_types::InstallSpec;
use nasvisor_best_effort::BestEffort;
use nasvisor_plugin_host::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::{
    Completion, DiskMethod, Firmware as PlanFirmware, ImageFormat, ImageMeta, InstallPlan,
    InstallRequest, NicSettings, UserSpec,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

fn image_format(f: Option<&str>) -> ImageFormat {
    match f {
        Some("raw") => ImageFormat::Raw,
        Some("vmdk") => ImageFormat::Vmdk,
        Some("vdi") => ImageFormat::Vdi,
        Some("iso") => ImageFormat::Iso,
        _ => ImageFormat::Qcow2,
    }
}

impl Inner {
    /// Starts the install job of a just-created VM.
    pub(crate) async fn start_install(
        self: &Arc<Self>,
        vm: VmRecord,
        img: ImageRecord,
        spec: InstallSpec,
    ) -> Result<VmRecord, CoreError> {
        let pool = spec.pool.clone().unwrap_or_else(|| "default".into());
        let (job, ctx) = self
            .job_start(
                &JobSpec::Install(InstallJob {
                    vm: vm.id.clone(),
                    pool: pool.clone(),
                    keep_disks: spec.keep_disks_on_failure,
                }),
                Some(format!("vm/{}", vm.name)),
            )
            .await?;
        let vm = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                v.install_job = Some(job.id.clone());
                v.state_reason = Some(format!("installing from image {}", img.name));
                Ok(())
            })
            .await?;
        let me = self.clone();
        let v = vm.clone();
        tokio::spawn(async move {
            let r = me.install_steps(&v, &img, &spec, &pool, &ctx).await;
            me.finish_install(&v, &pool, spec.keep_disks_on_failure, &ctx, r)
                .await;
        });
        Ok(vm)
    }

    fn install_request(
        &self,
        vm: &VmRecord,
        img: &ImageRecord,
        spec: &InstallSpec,
    ) -> InstallRequest {
        let disk_size_gib = spec
            .disk_size_gib
            .unwrap_or_else(|| img.virtual_size_bytes.div_ceil(GIB).max(1));
        InstallRequest {
            vm_name: vm.name.clone(),
            hostname: spec
                .hostname
                .clone()
                .unwrap_or_else(|| vm.name.to_ascii_lowercase()),
            users: spec
                .users
                .iter()
                .map(|u| UserSpec {
                    name: u.name.clone(),
                    password_hash: u.password_hash.clone(),
                    ssh_authorized_keys: u.ssh_authorized_keys.clone(),
                    sudo: u.sudo,
                    groups: u.groups.clone(),
                    shell: u.shell.clone(),
                })
                .collect(),
            packages: spec.packages.clone(),
            nics: vm
                .nics
                .iter()
                .enumerate()
                .map(|(i, n)| match spec.network.get(i) {
                    Some(net) => NicSettings {
                        mac: n.mac.clone(),
                        dhcp4: net.dhcp4,
                        addresses: net.addresses.clone(),
                        gateway4: net.gateway4.clone(),
                        nameservers: net.nameservers.clone(),
                    },
                    None => NicSettings {
                        mac: n.mac.clone(),
                        dhcp4: true,
                        ..Default::default()
                    },
                })
                .collect(),
            disk_size_gib,
            timezone: spec.timezone.clone(),
        }
    }

    /// Asks the os-installer for a plan. The requested disk must fit in the
    /// pool's free space (checked here, so that an honest plugin is not
    /// blamed for it); the validator checks the plan's disk against the same
    /// free space, which the input carries for the journal and replays.
    async fn plan(
        &self,
        vm: &VmRecord,
        img: &ImageRecord,
        spec: &InstallSpec,
        pool_name: &str,
        pool_free_bytes: u64,
    ) -> Result<InstallPlan, JobFailure> {
        let request = self.install_request(vm, img, spec);
        if request.disk_size_gib.saturating_mul(GIB) > pool_free_bytes {
            return Err(failed(format!(
                "install.disk_size_gib: {} GiB does not fit in pool {pool_name:?}, which has {} GiB free",
                request.disk_size_gib,
                pool_free_bytes / GIB
            )));
        }
        let input = DecisionInput::PlanInstall {
            image: ImageMeta {
                id: img.name.clone(),
                name: img.name.clone(),
                format: image_format(img.format.as_deref()),
                os_family: img.os_family.clone(),
                os_variant: img.os_variant.clone(),
                cloud_init: img.cloud_init,
                firmware: match img.firmware {
                    crate::model::Firmware::Bios => PlanFirmware::Bios,
                    crate::model::Firmware::Uefi => PlanFirmware::Uefi,
                },
                virtual_size_bytes: img.virtual_size_bytes,
                ready_marker: img.ready_marker.clone(),
            },
            request,
            pool_free_bytes: Some(pool_free_bytes),
        };
        let decision = self.decide(input).await.map_err(failed)?;
        tracing::info!(vm = %vm.name, source = ?decision.source, "install planned");
        match decision.answer {
            Ok(DecisionOutput::Plan(p)) => Ok(p),
            Ok(other) => Err(failed(format!(
                "the os-installer answered {other:?} instead of a plan"
            ))),
            // The plugin's own words may quote the request's secrets.
            Err(e) => Err(failed(format!(
                "the os-installer refused: {}",
                nasvisor_plugin_host::redact::redact_secrets(&e.message)
            ))),
        }
    }

    async fn install_steps(
        self: &Arc<Self>,
        vm: &VmRecord,
        img: &ImageRecord,
        spec: &InstallSpec,
        pool_name: &str,
        ctx: &JobCtx,
    ) -> Result<String, JobFailure> {
        ctx.milestone(0.02, "planning");
        let (pool, free) = self
            .on_pool(pool_name, "install.pool", |p| {
                let usage = p
                    .usage()
                    .map_err(|e| crate::errors::storage("install.pool", e))?;
                Ok((p.clone(), usage.free_bytes))
            })
            .await
            .map_err(failed)?;
        let plan = self.plan(vm, img, spec, pool_name, free).await?;
        if plan.completion == Completion::GuestAgent {
            return Err(failed(
                "the plan waits for a guest agent, which this host does not support yet",
            ));
        }
        let cancelled = || {
            if ctx.is_cancelled() {
                Err(JobFailure::Cancelled)
            } else {
                Ok(())
            }
        };
        cancelled()?;
        // Placed on a host without a copy of the image: copy it here first.
        self.ensure_image_here(&img.name, ctx).await?;
        let image = self.library.get(&img.name).map_err(failed)?;
        let root = format!("{}-root", vm.name);
        let seed = format!("{}-seed", vm.name);
        let is_iso = img.format.as_deref() == Some("iso");
        let size_gib = self.install_request(vm, img, spec).disk_size_gib;

        // 1. The root disk.
        ctx.milestone(0.05, "creating the root disk");
        let (p, r, path) = (pool.clone(), root.clone(), image.path.clone());
        let c = ctx.clone();
        // On shared storage a linked clone would lean on this host's image
        // library, which the other hosts cannot see: a full copy then.
        let method = match self.pool_record(pool_name).is_some_and(|p| p.shared()) {
            true => DiskMethod::FullConvert,
            false => plan.disk.method,
        };
        let resize = plan.disk.resize_gib.map(|g| g * GIB);
        let root_info = tokio::task::spawn_blocking(move || {
            if is_iso {
                return p.create(&r, size_gib * GIB);
            }
            match method {
                DiskMethod::CloneBacking => p.create_overlay(&r, &path, resize),
                DiskMethod::FullConvert => {
                    let v = p.import(&r, &path, |f| c.progress(0.05 + f / 100.0 * 0.2, None))?;
                    match resize.filter(|s| *s > v.virtual_size) {
                        Some(s) => p.resize(&r, s),
                        None => Ok(v),
                    }
                }
            }
        })
        .await
        .map_err(failed)?
        .map_err(|e| failed(format!("root disk: {e}")))?;
        let mut disks = vec![DiskRecord {
            pool: pool_name.to_string(),
            volume: root.clone(),
            size_mib: root_info.virtual_size >> 20,
            role: DiskRole::Disk,
            owned: true,
        }];
        disks.extend(
            vm.disks
                .iter()
                .filter(|d| d.role == DiskRole::Disk)
                .cloned(),
        );
        self.set_install_disks(&vm.id, disks.clone())
            .await
            .map_err(failed)?;
        cancelled()?;

        // 2. The NoCloud seed volume.
        if !plan.seed.is_empty() {
            ctx.milestone(0.28, "writing the cloud-init seed");
            let tmp = self.cfg.run_dir().join(format!("{}.cidata.img", vm.id));
            let files: Vec<(String, String)> = plan
                .seed
                .iter()
                .map(|f| (f.name.clone(), f.contents.clone()))
                .collect();
            let (p, s, t) = (pool.clone(), seed.clone(), tmp.clone());
            let info = tokio::task::spawn_blocking(move || {
                let refs: Vec<(&str, &str)> = files
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                nasvisor_storage::seed::build_nocloud_seed(&refs, &t)?;
                let r = p.import(&s, &t, |_| {});
                nasvisor_best_effort::remove_file(&t);
                r
            })
            .await
            .map_err(failed)?
            .map_err(|e| failed(format!("seed volume: {e}")))?;
            disks.push(DiskRecord {
                pool: pool_name.to_string(),
                volume: seed.clone(),
                size_mib: (info.virtual_size >> 20).max(1),
                role: DiskRole::Seed,
                owned: true,
            });
        }
        if plan.boot.attach_image_as_cdrom || is_iso {
            disks.push(DiskRecord {
                pool: "images".into(),
                volume: img.name.clone(),
                size_mib: (img.virtual_size_bytes >> 20).max(1),
                role: DiskRole::Cdrom,
                owned: false,
            });
        }
        let vm = self
            .set_install_disks(&vm.id, disks)
            .await
            .map_err(failed)?;
        cancelled()?;

        // 3. First boot, on the host the scheduler picks.
        ctx.milestone(0.3, "first boot");
        let host = match vm.host.clone() {
            // Placed when it was created (the create came to this host).
            Some(h) => h,
            None => {
                let _g = self.ops.lock().await;
                let h = self.place(&vm, None).await.map_err(failed)?;
                self.db
                    .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                        v.host = Some(h.clone());
                        Ok(())
                    })
                    .await
                    .map_err(failed)?;
                h
            }
        };
        if host != self.host.id {
            return Err(failed(format!(
                "the scheduler chose host {host}; installs run on the host that holds the image"
            )));
        }
        let vm = self.find_vm(&vm.id).map_err(failed)?;
        let inst = self.launch(&vm).await.map_err(failed)?;

        // 4. Wait for the completion signal.
        let timeout = Duration::from_millis(plan.timeout_ms.max(1000));
        let started = Instant::now();
        let ticker = {
            let c = ctx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let f = started.elapsed().as_secs_f64() / timeout.as_secs_f64();
                    c.progress(
                        0.3 + 0.65 * f.min(1.0),
                        Some("waiting for the guest to finish installing"),
                    );
                }
            })
        };
        let done = match &plan.completion {
            Completion::SerialMarker(marker) => {
                let console = inst
                    .console()
                    .cloned()
                    .ok_or_else(|| failed("the VM's console is not captured"))?;
                tokio::select! {
                    r = console.wait_for_output(marker.as_bytes(), timeout) => match r {
                        Ok(_) => Ok(format!("the guest reported {marker:?} after {:.1} s", started.elapsed().as_secs_f64())),
                        Err(_) if !inst.state().is_exited() => Err(failed(format!(
                            "the guest did not report {marker:?} on its serial console within {} s", timeout.as_secs()))),
                        Err(_) => Err(failed(format!("QEMU exited before the guest reported {marker:?}: {}", inst.state().name()))),
                    },
                    _ = ctx.cancel.cancelled() => Err(JobFailure::Cancelled),
                }
            }
            Completion::PowerOff => tokio::select! {
                r = inst.wait_exit(timeout) => match r {
                    Ok(st) => Ok(format!("the guest powered off ({})", st.name())),
                    Err(e) => Err(failed(format!("the guest did not power off within {} s: {e}", timeout.as_secs()))),
                },
                _ = ctx.cancel.cancelled() => Err(JobFailure::Cancelled),
            },
            Completion::GuestAgent => Err(failed("guest agent completion is not supported")),
        };
        ticker.abort();
        done
    }

    async fn set_install_disks(
        &self,
        id: &str,
        disks: Vec<DiskRecord>,
    ) -> Result<VmRecord, CoreError> {
        self.db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                v.disks = disks.clone();
                Ok(())
            })
            .await
    }

    /// Records the end of an install.
    async fn finish_install(
        self: &Arc<Self>,
        vm: &VmRecord,
        pool: &str,
        keep_disks: bool,
        ctx: &JobCtx,
        r: Result<String, JobFailure>,
    ) {
        let target = Some(format!("vm/{}", vm.name));
        match r {
            Ok(msg) => {
                let powered_off = !self.processes.contains(&vm.id);
                let state = if powered_off {
                    VmStatus::Stopped
                } else {
                    VmStatus::Running
                };
                self.db
                    .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                        v.state = state;
                        v.desired = if powered_off {
                            crate::model::Desired::Stopped
                        } else {
                            crate::model::Desired::Running
                        };
                        v.state_reason = Some(format!("installed: {msg}"));
                        Ok(())
                    })
                    .await
                    .best_effort("record the installed VM's state");
                self.event(
                    "install-finished",
                    Severity::Info,
                    target,
                    format!("VM {} installed: {msg}", vm.name),
                )
                .await;
                self.job_finish(ctx, Ok(msg)).await;
            }
            Err(f) => {
                let reason = match &f {
                    JobFailure::Cancelled => "install cancelled by the administrator".to_string(),
                    JobFailure::Failed(e) => format!("install failed: {e}"),
                };
                self.fail_install(&vm.id, pool, keep_disks, &reason).await;
                self.event(
                    "install-failed",
                    Severity::Error,
                    target,
                    format!("VM {}: {reason}", vm.name),
                )
                .await;
                self.job_finish(ctx, Err(f)).await;
            }
        }
    }

    /// Stops the install's QEMU, removes the disks it created (unless kept)
    /// and records the VM as `install_failed`.
    async fn fail_install(&self, vm_id: &str, pool: &str, keep_disks: bool, reason: &str) {
        self.stop_instance(vm_id).await;
        let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, vm_id) else {
            return;
        };
        let mut kept = Vec::new();
        if !keep_disks {
            let name = vm.name.clone();
            self.on_pool(pool, "install.pool", move |p| {
                for suffix in ["root", "seed"] {
                    p.delete(&format!("{name}-{suffix}"))
                        .best_effort("remove a disk of a failed install");
                }
                Ok(())
            })
            .await
            .best_effort("remove the disks of a failed install");
        }
        for d in &vm.disks {
            let ours = d.pool == pool
                && (d.volume == format!("{}-root", vm.name)
                    || d.volume == format!("{}-seed", vm.name));
            if d.role == DiskRole::Cdrom || (ours && !keep_disks) {
                continue;
            }
            kept.push(d.clone());
        }
        self.db
            .update::<VmRecord, _>(kind::VM, vm_id, |v| {
                v.state = VmStatus::InstallFailed;
                v.state_reason = Some(reason.to_string());
                v.desired = crate::model::Desired::Stopped;
                v.disks = kept.clone();
                Ok(())
            })
            .await
            .best_effort("record the failed install");
    }

    /// After a restart: an install cannot resume mid-boot; clean it up.
    pub(crate) async fn recover_install_job(&self, job: &InstallJob) -> String {
        let reason = "install interrupted by a restart of nasvisord; cleaned up";
        self.fail_install(&job.vm, &job.pool, job.keep_disks, reason)
            .await;
        reason.to_string()
    }
}
