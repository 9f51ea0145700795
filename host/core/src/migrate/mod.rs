//! Moving a VM to another host, as a job of the source host.
//!
//! Live (the VM runs):
//! 1. the target creates the VM's volumes that are not on shared storage,
//!    starts QEMU as a migration target (`-incoming defer`, paused),
//!    exports those volumes over NBD and waits for the memory stream;
//! 2. the source mirrors each such disk onto the target's export
//!    (`blockdev-mirror`, the guest keeps writing: writes are mirrored);
//! 3. once every mirror is in sync, the source migrates the memory over a
//!    socket this daemon opens and hands to QEMU (its unsent data capped,
//!    `nasvisor_vm::migration::MigrationStream`); QEMU pauses the guest
//!    for the last pass (the downtime);
//! 4. the mirrors end in sync; ownership passes through the cluster log
//!    (the VM's host becomes the target), and only then does the target
//!    resume the guest (then it stops its NBD server); the source's QEMU
//!    and disk copies go. A `switch:` log line times these steps.
//!
//! Any failure before the switch cancels everything on both sides and the
//! VM keeps running on the source. A VM never runs on two hosts: the target
//! resumes only after the log says it owns the VM.
//!
//! Offline (the VM is stopped): the target serves its new volumes with
//! `qemu-nbd`, the source copies them with `qemu-img convert`, then the log
//! records the new host.
//!
//! The memory and disk streams go between the hosts' cluster addresses over
//! TLS with the cluster's certificates (QEMU's and qemu-nbd's
//! `tls-creds-x509`): each side checks the other's certificate against the
//! cluster CA, and the source checks the target's node name.
//!
//! Files: [`source`] runs a move (the job), [`target`] answers the source's
//! peer calls, [`recovery`] sets things right after a restart of either
//! daemon, [`tls`] makes the streams' credentials, [`evacuation`] moves
//! every VM off a host, [`job`] types the job's parameters and step,
//! [`process`] runs `qemu-nbd` and `qemu-img`. The QEMU side of a move
//! (mirrors, memory stream, incoming preparation, event-driven waits) is
//! `nasvisor_vm::migration`.

mod evacuation;
mod job;
mod process;
mod recovery;
mod source;
mod target;
mod tls;

pub(crate) use process::{free_port, run_qemu_img, stop_child, wait_listening};
pub(crate) use target::Migrations;
pub(crate) use tls::{qemu_tls_dir, tls_identity, tls_name};

use crate::errors;
use crate::jobs::{JobFailure, JobSpec};
use crate::model::{
    kind, pool_key, DiskRole, Firmware, HostRecord, ImageRecord, JobRecord, PoolRecord, Severity,
    VmRecord, VmStatus,
};
use crate::Inner;
pub(crate) use job::{MigrateJob, MigrateStep};
use nasvisor_api_types::peer;
use nasvisor_api_types::CoreError;
use nasvisor_api_types::VmMigrate;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the target may take to get ready.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default longest pause of the guest at the switch, ms (QEMU's own default).
const DEFAULT_DOWNTIME_MS: u32 = 300;

/// One disk whose contents go over the network (not on shared storage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CopyDisk {
    /// The block node (`disk<i>`, `pflash1` for UEFI variables).
    pub node: String,
    /// Pool and volume; `None` for the UEFI variables file.
    pub pool: Option<String>,
    pub volume: Option<String>,
    pub size_bytes: u64,
    /// The source file.
    #[serde(skip)]
    pub path: PathBuf,
}

impl CopyDisk {
    /// As the target is told about it.
    fn wire(&self) -> peer::CopyDisk {
        peer::CopyDisk {
            node: self.node.clone(),
            pool: self.pool.clone(),
            volume: self.volume.clone(),
            size_bytes: self.size_bytes,
        }
    }
}

/// What the source tells the target once the move is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetCall {
    /// `migrate-finish`: the target owns the VM, it resumes it.
    Finish,
    /// `migrate-abort`: the target drops what it prepared.
    Abort,
}

/// What a finished migration measured.
struct Outcome {
    total: Duration,
    downtime_ms: Option<u64>,
    copied_bytes: u64,
}

impl Inner {
    /// The IP of this host's cluster address.
    pub(crate) fn cluster_ip(&self) -> Result<String, CoreError> {
        crate::parse_listen(&self.cfg.cluster_address).map(|a| a.ip().to_string())
    }

    /// `POST /vms/{id}/migrate` on the VM's host: checks, then the job.
    pub(crate) async fn migrate_vm(
        self: &Arc<Self>,
        id: &str,
        req: VmMigrate,
    ) -> Result<nasvisor_api_types::JobView, CoreError> {
        self.start_migration(id, req).await.map(|j| j.view())
    }

    /// Checks a move of VM `id` and starts its job; the job's record.
    pub(crate) async fn start_migration(
        self: &Arc<Self>,
        id: &str,
        req: VmMigrate,
    ) -> Result<JobRecord, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(id)?;
        let target = self.host_record(&req.host).map_err(|_| {
            errors::invalid("host", format!("no host {:?} in the cluster", req.host))
        })?;
        if vm.host.as_deref() == Some(target.id.as_str()) {
            return Err(errors::conflict(format!(
                "VM {} already lives on host {}",
                vm.name, target.id
            )));
        }
        if !target.online {
            return Err(CoreError::Unavailable {
                reason: format!("host {} is offline", target.id),
            });
        }
        if target.cordoned {
            return Err(errors::conflict(format!(
                "host {} is cordoned; uncordon it first",
                target.id
            )));
        }
        if matches!(
            vm.state,
            VmStatus::Installing | VmStatus::Migrating | VmStatus::Starting | VmStatus::Stopping
        ) {
            return Err(errors::conflict(format!(
                "VM {} is {}; try again when that is over",
                vm.name,
                vm.state.as_str()
            )));
        }
        let live = self.processes.contains(&vm.id);
        if live && !vm.reserves_on(&target.id) {
            // Room on the target (the VM's memory is not counted there yet;
            // an HA VM moving to its passive host has its room reserved).
            self.place_excluding(&vm, Some(&target.id), &[]).await?;
        }
        let copy = self.disks_to_copy(&vm, &target).await?;
        let downtime = req.max_downtime_ms.unwrap_or(DEFAULT_DOWNTIME_MS);
        let before = vm.state;
        self.db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                if v.state != before {
                    return Err(errors::conflict(format!(
                        "VM {} changed meanwhile (it is {})",
                        v.name,
                        v.state.as_str()
                    )));
                }
                v.state = VmStatus::Migrating;
                v.state_reason = Some(format!("moving to host {}", target.id));
                Ok(())
            })
            .await?;
        let params = MigrateJob {
            vm: vm.id.clone(),
            from: self.host.id.clone(),
            to: target.id.clone(),
            live,
            copied_disks: copy.iter().map(|c| c.node.clone()).collect(),
            copies: copy.clone(),
            step: MigrateStep::Preparing,
        };
        let started = self
            .job_start(
                &JobSpec::Migrate(params.clone()),
                Some(format!("vm/{}", vm.name)),
            )
            .await;
        let (job, ctx) = match started {
            Ok(j) => j,
            Err(e) => {
                self.restore_after_failed_move(&vm, before).await;
                return Err(e);
            }
        };
        drop(_g);
        let me = self.clone();
        let mut mv = source::Move {
            ctx,
            vm: vm.clone(),
            target: target.clone(),
            copy,
            job: params,
        };
        tokio::spawn(async move {
            let r = if live {
                me.migrate_live(&mut mv, downtime).await
            } else {
                me.move_offline(&mut mv).await
            };
            let ctx = mv.ctx.clone();
            let outcome = match r {
                Ok(o) => {
                    let msg = format!(
                        "moved to host {} in {:.2} s{}{}",
                        target.id,
                        o.total.as_secs_f64(),
                        match o.downtime_ms {
                            Some(d) => format!("; downtime {d} ms"),
                            None => String::new(),
                        },
                        if o.copied_bytes > 0 {
                            format!("; {} MiB of disk copied", o.copied_bytes >> 20)
                        } else {
                            String::new()
                        }
                    );
                    me.event(
                        "vm-migrated",
                        Severity::Info,
                        Some(format!("vm/{}", vm.name)),
                        format!("VM {} {msg}", vm.name),
                    )
                    .await;
                    Ok(msg)
                }
                Err(e) => {
                    me.restore_after_failed_move(&vm, before).await;
                    if let JobFailure::Failed(why) = &e {
                        me.event(
                            "vm-migration-failed",
                            Severity::Warning,
                            Some(format!("vm/{}", vm.name)),
                            format!(
                                "VM {} could not move to host {}: {why}; it stays on host {}",
                                vm.name, target.id, me.host.id
                            ),
                        )
                        .await;
                    }
                    Err(e)
                }
            };
            me.job_finish(&ctx, outcome).await;
        });
        Ok(job)
    }

    async fn restore_after_failed_move(&self, vm: &VmRecord, before: VmStatus) {
        let running = self.processes.instance(&vm.id).map(|i| i.state());
        let state = match running {
            Some(nasvisor_vm::VmState::Paused) => VmStatus::Paused,
            Some(s) if !s.is_exited() => VmStatus::Running,
            _ => before,
        };
        let r = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                if v.state == VmStatus::Migrating && v.host.as_deref() == Some(&self.host.id) {
                    v.state = state;
                    v.state_reason = None;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(vm = %vm.name, error = %e, "cannot record the VM's state after a move that did not happen");
        }
    }

    /// The disks of `vm` whose contents must travel to `target`; refuses a
    /// move the target cannot take.
    async fn disks_to_copy(
        &self,
        vm: &VmRecord,
        target: &HostRecord,
    ) -> Result<Vec<CopyDisk>, CoreError> {
        let mut out = Vec::new();
        for (i, d) in vm.disks.iter().enumerate() {
            let field = format!("disks[{i}]");
            if d.role == DiskRole::Cdrom {
                let on_target = self
                    .db
                    .get::<ImageRecord>(kind::IMAGE, &d.volume)
                    .is_some_and(|(img, _)| img.hosts.contains(&target.id));
                if !on_target {
                    return Err(errors::conflict(format!(
                        "image {} (a CD-ROM of the VM) has no copy on host {}",
                        d.volume, target.id
                    )));
                }
                continue;
            }
            let rec: PoolRecord = self
                .pool_record(&d.pool)
                .ok_or_else(|| errors::conflict(format!("pool {} of {field} is gone", d.pool)))?;
            if rec.shared() {
                continue;
            }
            if self
                .db
                .get::<PoolRecord>(kind::POOL, &pool_key(Some(&target.id), &d.pool))
                .is_none()
            {
                return Err(errors::conflict(format!(
                    "host {} has no pool {} for {field} (volume {}); create it there first",
                    target.id, d.pool, d.volume
                )));
            }
            let (vol, f) = (d.volume.clone(), field.clone());
            let info = self
                .on_pool(&d.pool, &field, move |p| {
                    p.volume(&vol).map_err(|e| errors::storage(&f, e))
                })
                .await?;
            if !info.snapshots.is_empty() {
                return Err(errors::conflict(format!(
                    "volume {}/{} has snapshots, which a copy to another host would lose; \
                     delete them or use a shared pool",
                    d.pool, d.volume
                )));
            }
            out.push(CopyDisk {
                node: format!("disk{i}"),
                pool: Some(d.pool.clone()),
                volume: Some(d.volume.clone()),
                size_bytes: info.virtual_size,
                path: info.path,
            });
        }
        if vm.firmware == Firmware::Uefi {
            let vars = self.cfg.nvram_dir().join(format!("{}.fd", vm.id));
            if let Ok(m) = std::fs::metadata(&vars) {
                out.push(CopyDisk {
                    node: "pflash1".into(),
                    pool: None,
                    volume: None,
                    size_bytes: m.len(),
                    path: vars,
                });
            }
        }
        Ok(out)
    }

    /// The switch, through the log: `target` owns the VM, in `state`.
    async fn pass_ownership(
        &self,
        vm: &VmRecord,
        target: &HostRecord,
        state: VmStatus,
    ) -> Result<VmRecord, CoreError> {
        self.db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                v.host = Some(target.id.clone());
                v.state = state;
                v.state_reason = None;
                v.take_replica_on(&target.id);
                Ok(())
            })
            .await
    }

    /// `migrate-finish` or `migrate-abort` of VM `id` on host `target`.
    async fn peer_call(
        &self,
        target: &HostRecord,
        call: TargetCall,
        id: &str,
        timeout: Duration,
    ) -> Result<(), CoreError> {
        let id = id.to_string();
        match call {
            TargetCall::Finish => {
                self.call_peer(target, peer::MigrateFinish { id }, timeout)
                    .await
            }
            TargetCall::Abort => {
                self.call_peer(target, peer::MigrateAbort { id }, timeout)
                    .await
            }
        }
    }

    /// Tells the target to drop what it prepared; a failure is logged and
    /// returned in words for the job's error.
    async fn peer_abort(&self, target: &HostRecord, vm: &VmRecord) -> Option<String> {
        match self
            .peer_call(target, TargetCall::Abort, &vm.id, PREPARE_TIMEOUT)
            .await
        {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(vm = %vm.name, host = %target.id, error = %e, "the target could not clean up an aborted migration");
                Some(format!("host {} could not clean up: {e}", target.id))
            }
        }
    }

    /// After a restart: tells `hosts` `call` for VM `id`, in the
    /// background, retrying for a minute (the cluster channel may not be up
    /// yet).
    fn tell_hosts_later(self: &Arc<Self>, hosts: Vec<HostRecord>, call: TargetCall, id: &str) {
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut left = hosts;
            for _ in 0..30 {
                let mut still = Vec::new();
                for h in left {
                    if let Err(e) = me.peer_call(&h, call, &id, Duration::from_secs(10)).await {
                        tracing::debug!(host = %h.id, vm = %id, ?call, error = %e, "peer not reached yet");
                        still.push(h);
                    }
                }
                left = still;
                if left.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let names: Vec<&str> = left.iter().map(|h| h.id.as_str()).collect();
            tracing::warn!(vm = %id, ?call, hosts = ?names, "hosts not reached after a restart; they clean up on their own restart");
        });
    }
}

/// Joins what could not be undone into a sentence for a job's error.
fn undo_report(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!("; undoing it: {}", problems.join("; "))
    }
}
