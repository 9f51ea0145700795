//! The source's side of a move: the job that prepares the target, copies
//! the disks and the memory, passes ownership through the log, and then
//! hands the guest over; or undoes everything when a step fails before the
//! switch.

use super::{
    undo_report, CopyDisk, Inner, MigrateJob, MigrateStep, Outcome, TargetCall, PREPARE_TIMEOUT,
};
use crate::errors;
use crate::jobs::{JobCtx, JobFailure};
use crate::model::{HostRecord, VmRecord, VmStatus};
use nasvisor_api_types::peer::{MigratePrepare, Prepared};
use nasvisor_api_types::CoreError;
use nasvisor_vm::migration::{
    migrate_out, MigrationStream, MirrorSet, MirrorTarget, OutgoingSettings,
};
use nasvisor_vm::qmp::InetAddr;
use nasvisor_vm::VmInstance;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bandwidth cap of the memory stream, bytes/s (QEMU's default is far lower).
const MAX_BANDWIDTH: u64 = 10 << 30;
/// How long the mirrors may take to end in sync once the guest is paused.
const MIRROR_END_TIMEOUT: Duration = Duration::from_secs(60);

/// One move in progress, as its job runs it.
pub(super) struct Move {
    pub ctx: JobCtx,
    pub vm: VmRecord,
    pub target: HostRecord,
    pub copy: Vec<CopyDisk>,
    pub job: MigrateJob,
}

fn failed(what: &str, e: impl std::fmt::Display) -> JobFailure {
    JobFailure::Failed(format!("{what}: {e}"))
}

impl Inner {
    /// Commits the move's next step; a move whose step cannot be recorded
    /// stops (a restart could not tell where it stood).
    async fn step(&self, mv: &mut Move, step: MigrateStep) -> Result<(), JobFailure> {
        let id = mv.ctx.id.clone();
        self.set_migrate_step(&id, &mut mv.job, step)
            .await
            .map_err(|e| failed("recording the move's step", e))
    }

    pub(super) async fn migrate_live(
        self: &Arc<Self>,
        mv: &mut Move,
        downtime_ms: u32,
    ) -> Result<Outcome, JobFailure> {
        let started = Instant::now();
        let inst = self
            .instance(&mv.vm)
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        // Whether the guest runs now: only then is it resumed after a
        // failure (a guest the administrator paused stays paused).
        let was_running = inst
            .qmp()
            .query_status()
            .await
            .map_err(|e| failed("query-status", e))?
            .running;
        // A synchronous replica stops being one before the move (the
        // target may be the host that holds it).
        self.replica_before_move(&mv.vm, &inst, &mv.target.id)
            .await
            .map_err(|e| failed("detaching the disk replica", e))?;
        mv.ctx
            .milestone(0.0, &format!("preparing host {}", mv.target.id));
        let prepared: Prepared = self
            .peer_prepare(&mv.target, &mv.vm, &mv.copy, true)
            .await
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        let mut mirrors = MirrorSet::new(inst.qmp());
        let r = self
            .live_transfer(mv, &inst, &prepared, downtime_ms, &mut mirrors)
            .await;
        let mut switch = match r {
            Ok(switch) => switch,
            Err(e) => {
                let mut problems = self.abort_source(&inst, &mut mirrors, was_running).await;
                problems.extend(self.peer_abort(&mv.target, &mv.vm).await);
                return Err(with_undo(e, &problems));
            }
        };
        // The switch: the log says the target owns the VM, then it resumes.
        mv.ctx.milestone(0.99, "switching over");
        if let Err(e) = self
            .pass_ownership(&mv.vm, &mv.target, VmStatus::Running)
            .await
        {
            // Still ours: run on here.
            let mut problems = self.abort_source(&inst, &mut mirrors, was_running).await;
            problems.extend(self.peer_abort(&mv.target, &mv.vm).await);
            return Err(JobFailure::Failed(format!(
                "the cluster did not record the switch ({e}); the VM stays on host {}{}",
                self.host.id,
                undo_report(&problems)
            )));
        }
        switch.recorded = Some(SystemTime::now());
        // The target resumes first: every moment until then is downtime.
        let finished = self
            .peer_call(&mv.target, TargetCall::Finish, &mv.vm.id, PREPARE_TIMEOUT)
            .await;
        if finished.is_ok() {
            switch.resumed = Some(SystemTime::now());
        }
        switch.log(&mv.vm.name, &mv.target.id);
        // The source QEMU goes: it is paused and no longer the VM.
        self.retire_source(&mv.vm, &inst, &mv.copy).await;
        if let Err(e) = finished {
            return Err(JobFailure::Failed(format!(
                "host {} owns the VM but could not resume it: {e}; resume it there",
                mv.target.id
            )));
        }
        if let Err(e) = self.step(mv, MigrateStep::Switched).await {
            tracing::warn!(vm = %mv.vm.name, error = ?e, "the move ended but its last step was not recorded");
        }
        Ok(Outcome {
            total: started.elapsed(),
            downtime_ms: switch.downtime_ms,
            copied_bytes: mirrors.copied(),
        })
    }

    /// Mirrors the disks, then migrates the memory. On success the source
    /// guest is paused and every mirror has ended in sync.
    async fn live_transfer(
        &self,
        mv: &mut Move,
        inst: &VmInstance,
        prepared: &Prepared,
        downtime_ms: u32,
        mirrors: &mut MirrorSet,
    ) -> Result<Switch, JobFailure> {
        let qmp = inst.qmp();
        let disk_share = if mv.copy.is_empty() { 0.0 } else { 0.5 };
        let tls = self
            .qemu_stream_client(qmp, mv.target.node_id)
            .await
            .map_err(|e| failed("TLS", e))?;
        if !mv.copy.is_empty() {
            self.step(mv, MigrateStep::CopyingDisks).await?;
        }
        for c in &mv.copy {
            let port = *prepared.ports.get(&c.node).ok_or_else(|| {
                JobFailure::Failed(format!("the target gave no NBD port for {}", c.node))
            })?;
            let target = MirrorTarget {
                node: c.node.clone(),
                addr: InetAddr::new(prepared.host.clone(), port),
                export: c.node.clone(),
            };
            mirrors
                .add(&target, tls.as_ref())
                .await
                .map_err(|e| JobFailure::Failed(e.to_string()))?;
        }
        let ctx = mv.ctx.clone();
        // Disks in sync.
        mirrors
            .wait_ready(ctx.cancel.cancelled(), |p| {
                let frac = if p.len == 0 {
                    1.0
                } else {
                    p.done as f64 / p.len as f64
                };
                ctx.progress(
                    frac * disk_share,
                    Some(&format!(
                        "disks: {} of {} MiB copied",
                        p.done >> 20,
                        p.len >> 20
                    )),
                );
            })
            .await
            .map_err(job_failure)?;
        // Memory.
        let uri = prepared
            .migrate_uri
            .clone()
            .ok_or_else(|| JobFailure::Failed("the target gave no migration address".into()))?;
        self.step(mv, MigrateStep::CopyingMemory).await?;
        // This daemon opens the stream's socket (capped in what it holds
        // unsent) and hands it to QEMU.
        let stream = MigrationStream::connect(&uri).await.map_err(job_failure)?;
        let settings = OutgoingSettings {
            max_downtime_ms: downtime_ms,
            max_bandwidth: MAX_BANDWIDTH,
            tls,
        };
        let done = migrate_out(qmp, &settings, &stream, ctx.cancel.cancelled(), |p| {
            ctx.progress(
                disk_share + p.fraction * (0.98 - disk_share),
                Some(&format!(
                    "memory: {} of {} MiB, about {:.0} s left",
                    p.transferred >> 20,
                    p.total >> 20,
                    p.seconds_left.ceil()
                )),
            );
        })
        .await
        .map_err(job_failure)?;
        let stream_done = SystemTime::now();
        drop(stream);
        // The guest is paused: end the mirrors in sync.
        mirrors
            .finish_in_sync(MIRROR_END_TIMEOUT)
            .await
            .map_err(job_failure)?;
        Ok(Switch {
            downtime_ms: done.info.downtime,
            paused: done.paused_at,
            stream_done,
            mirrors_done: (!mv.copy.is_empty()).then(SystemTime::now),
            recorded: None,
            resumed: None,
        })
    }

    /// Undoes the source's side of a failed live migration: the memory
    /// stream is cancelled, the mirrors and their NBD nodes go, and a guest
    /// that ran before the move runs again. Returns what could not be
    /// undone (each also logged).
    pub(super) async fn abort_source(
        &self,
        inst: &VmInstance,
        mirrors: &mut MirrorSet,
        was_running: bool,
    ) -> Vec<String> {
        let qmp = inst.qmp();
        let mut problems = Vec::new();
        match qmp.query_migrate().await {
            Ok(info) if info.status.is_some_and(|s| s.is_in_progress()) => {
                if let Err(e) = qmp.migrate_cancel().await {
                    tracing::warn!(vm = %inst.id(), error = %e, "cannot cancel the memory migration");
                    problems.push(format!("cancelling the memory migration: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(vm = %inst.id(), error = %e, "query-migrate during an abort");
                problems.push(format!("query-migrate: {e}"));
            }
        }
        problems.extend(mirrors.abort().await);
        if was_running {
            if let Err(e) = self.resume_after_move(inst).await {
                tracing::error!(vm = %inst.id(), error = %e, "the guest stays paused after a move that did not happen");
                problems.push(format!("the guest could not be resumed and is paused: {e}"));
            }
        }
        problems
    }

    /// Resumes a guest a move paused (the memory stream may have completed:
    /// `cont` takes its disks back). A guest already running is left alone.
    pub(super) async fn resume_after_move(&self, inst: &VmInstance) -> Result<(), CoreError> {
        let st = inst
            .qmp()
            .query_status()
            .await
            .map_err(|e| errors::internal(format!("query-status: {e}")))?;
        if st.running {
            return Ok(());
        }
        // A migration that completed goes `finish-migrate` → `postmigrate`
        // in a bottom half; `cont` is refused in between.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = st.status;
        while status == nasvisor_vm::qmp::RunState::FinishMigrate && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            status = inst
                .qmp()
                .query_status()
                .await
                .map_err(|e| errors::internal(format!("query-status: {e}")))?
                .status;
        }
        inst.resume()
            .await
            .map_err(|e| errors::internal(format!("resuming the guest: {e}")))
    }

    /// After the switch: the source's QEMU, taps and disk copies go. The
    /// guest is paused; what it printed last is read off the console first.
    async fn retire_source(&self, vm: &VmRecord, inst: &VmInstance, copy: &[CopyDisk]) {
        if let Some(console) = inst.console() {
            let mut last: Option<Vec<u8>> = None;
            for _ in 0..20 {
                let now = match console.read_log().await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(vm = %vm.name, error = %e, "cannot read the source's console log");
                        break;
                    }
                };
                if last.as_ref() == Some(&now) {
                    break;
                }
                last = Some(now);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.processes.remove(&vm.id);
        if let Err(e) = inst.kill().await {
            tracing::warn!(vm = %vm.name, error = %e, "cannot stop the source's QEMU after the switch");
        }
        self.remove_taps(vm);
        self.remove_copies(copy).await;
    }

    /// Removes this host's copies of disks that moved.
    pub(super) async fn remove_copies(&self, copy: &[CopyDisk]) {
        for c in copy {
            match (&c.pool, &c.volume) {
                (Some(p), Some(v)) => {
                    self.delete_volume_or_warn(p, v, "remove the source copy of a moved volume")
                        .await
                }
                _ => {
                    if let Err(e) = std::fs::remove_file(&c.path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %c.path.display(), error = %e, "cannot remove the source copy of the UEFI variables");
                        }
                    }
                }
            }
        }
    }

    pub(super) async fn move_offline(
        self: &Arc<Self>,
        mv: &mut Move,
    ) -> Result<Outcome, JobFailure> {
        let started = Instant::now();
        let (vm, target) = (mv.vm.clone(), mv.target.clone());
        let prepared = if mv.copy.is_empty() {
            None
        } else {
            mv.ctx
                .milestone(0.0, &format!("preparing host {}", target.id));
            let p = self
                .peer_prepare(&target, &vm, &mv.copy, false)
                .await
                .map_err(|e| JobFailure::Failed(e.to_string()))?;
            if let Err(e) = self.step(mv, MigrateStep::CopyingDisks).await {
                let problems: Vec<String> =
                    self.peer_abort(&target, &vm).await.into_iter().collect();
                return Err(with_undo(e, &problems));
            }
            Some(p)
        };
        let total: u64 = mv.copy.iter().map(|c| c.size_bytes).sum::<u64>().max(1);
        let mut done = 0;
        for c in &mv.copy {
            let Some(p) = prepared.as_ref() else { break };
            mv.ctx.milestone(
                done as f64 / total as f64 * 0.95,
                &format!("copying {} ({} MiB)", c.node, c.size_bytes >> 20),
            );
            let r = self.copy_offline(&mv.ctx, p, c, target.node_id).await;
            if let Err(e) = r {
                let problems: Vec<String> =
                    self.peer_abort(&target, &vm).await.into_iter().collect();
                return Err(with_undo(e, &problems));
            }
            done += c.size_bytes;
        }
        if let Err(e) = self.pass_ownership(&vm, &target, VmStatus::Stopped).await {
            let problems: Vec<String> = self.peer_abort(&target, &vm).await.into_iter().collect();
            return Err(JobFailure::Failed(format!(
                "the cluster did not record the move: {e}{}",
                undo_report(&problems)
            )));
        }
        if prepared.is_some() {
            if let Err(e) = self
                .peer_call(&target, TargetCall::Finish, &vm.id, PREPARE_TIMEOUT)
                .await
            {
                tracing::warn!(vm = %vm.name, error = %e, "the target could not close its copy servers");
            }
        }
        self.remove_copies(&mv.copy).await;
        if let Err(e) = self.step(mv, MigrateStep::Switched).await {
            tracing::warn!(vm = %vm.name, error = ?e, "the move ended but its last step was not recorded");
        }
        Ok(Outcome {
            total: started.elapsed(),
            downtime_ms: None,
            copied_bytes: mv.copy.iter().map(|c| c.size_bytes).sum(),
        })
    }

    /// Copies one stopped disk onto the target's `qemu-nbd` export.
    async fn copy_offline(
        &self,
        ctx: &JobCtx,
        p: &Prepared,
        c: &CopyDisk,
        target_node: u64,
    ) -> Result<(), JobFailure> {
        let port = p.ports.get(&c.node).copied().ok_or_else(|| {
            JobFailure::Failed(format!("the target gave no NBD port for {}", c.node))
        })?;
        let fmt = if c.pool.is_some() { "qcow2" } else { "raw" };
        let tls = self
            .tls_client("", target_node)
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        let target_opts = format!(
            "driver=nbd,server.type=inet,server.host={},server.port={port},export={}{}",
            p.host, c.node, tls.opts
        );
        let src = c.path.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec!["convert".into(), "-n".into()];
        args.extend(tls.args);
        args.extend([
            "-f".into(),
            fmt.into(),
            "--target-image-opts".into(),
            src,
            target_opts,
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::run_qemu_img(&ctx.cancel, &args).await
    }

    pub(super) async fn peer_prepare(
        &self,
        target: &HostRecord,
        vm: &VmRecord,
        copy: &[CopyDisk],
        live: bool,
    ) -> Result<Prepared, CoreError> {
        let call = MigratePrepare {
            vm: vm.clone(),
            copy: copy.iter().map(CopyDisk::wire).collect(),
            live,
        };
        self.call_peer(target, call, PREPARE_TIMEOUT).await
    }
}

/// The instants of a move's switch, for its `switch:` log line.
struct Switch {
    /// The pause QEMU measured, ms.
    downtime_ms: Option<u64>,
    /// QEMU paused the guest for the last pass (its `STOP` event).
    paused: Option<SystemTime>,
    /// The memory stream completed (the source's QEMU said so).
    stream_done: SystemTime,
    /// Every disk mirror ended in sync (`None`: no disk was copied).
    mirrors_done: Option<SystemTime>,
    /// The log recorded the target as the VM's host.
    recorded: Option<SystemTime>,
    /// The target said the guest runs there again.
    resumed: Option<SystemTime>,
}

impl Switch {
    /// Logs each step of the switch as ms since the pause: `switch: paused
    /// → stream completed +A → mirrors ended +B → recorded +C → resumed on
    /// the target +D`. `resumed_ms` is the guest's whole pause as this host
    /// sees it; QEMU's `downtime` covers the stream's part only. Both go to
    /// the metrics too.
    fn log(&self, vm: &str, target: &str) {
        let since = |t: Option<SystemTime>| -> Option<u64> {
            let d = t?.duration_since(self.paused?).ok()?;
            u64::try_from(d.as_millis()).ok()
        };
        let ms = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |m| format!("{m} ms"));
        let stream = since(Some(self.stream_done));
        let mirrors = since(self.mirrors_done);
        let recorded = since(self.recorded);
        let resumed = since(self.resumed);
        nasvisor_metrics::migration_switch(
            self.downtime_ms.map(|m| m as f64 / 1000.0),
            resumed.map(|m| m as f64 / 1000.0),
        );
        let mirrors_text = match self.mirrors_done {
            Some(_) => format!("mirrors ended +{}", ms(mirrors)),
            None => "no mirror".to_string(),
        };
        tracing::info!(
            vm,
            target,
            qemu_downtime_ms = self.downtime_ms,
            stream_ms = stream,
            mirrors_ms = mirrors,
            recorded_ms = recorded,
            resumed_ms = resumed,
            "switch: paused → stream completed +{} → {mirrors_text} → ownership recorded +{} → resumed on the target +{} (QEMU's downtime {})",
            ms(stream),
            ms(recorded),
            ms(resumed),
            ms(self.downtime_ms),
        );
    }
}

/// A mechanism error as a job's failure (a cancel is a cancel).
fn job_failure(e: nasvisor_vm::MigrateError) -> JobFailure {
    match e {
        nasvisor_vm::MigrateError::Cancelled => JobFailure::Cancelled,
        e => JobFailure::Failed(e.to_string()),
    }
}

/// `e` with what could not be undone appended.
fn with_undo(e: JobFailure, problems: &[String]) -> JobFailure {
    match e {
        JobFailure::Failed(why) => JobFailure::Failed(format!("{why}{}", undo_report(problems))),
        JobFailure::Cancelled => {
            if !problems.is_empty() {
                tracing::warn!(problems = ?problems, "a cancelled move left things behind");
            }
            JobFailure::Cancelled
        }
    }
}
