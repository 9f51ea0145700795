//! Setting moves right after a restart of either daemon.
//!
//! - The source: a move job it was running ends failed; what happens to the
//!   VM depends on the step the job recorded ([`MigrateStep`]) and, once
//!   ownership may have passed, on the log. A QEMU found still sending a
//!   move is told to stop and its guest resumed.
//! - The target: markers of incoming moves (`<run>/incoming/<vm>.json`):
//!   a switched move's guest is resumed, an unfinished one is dropped.

use super::process::stop_orphan_nbd;
use super::{CopyDisk, Inner, MigrateJob, MigrateStep};
use crate::errors;
use crate::model::{kind, HostRecord, VmRecord, VmStatus};
use nasvisor_api_types::CoreError;
use nasvisor_vm::migration::{leftover_mirror_nodes, MirrorSet};
use nasvisor_vm::VmInstance;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What survives a restart of the target's daemon about an incoming move
/// (`<run>/incoming/<vm id>.json`, written once the target is ready, gone
/// once the move ends here): the QEMU (found again by the VM's id), the
/// `qemu-nbd` servers, and what was created for the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IncomingMarker {
    pub vm: String,
    pub live: bool,
    pub nbd_pids: Vec<u32>,
    pub created: Vec<(String, String)>,
    pub vars: Option<PathBuf>,
}

/// Removes a file whose absence is the goal; other failures are logged.
fn remove_quietly(path: &std::path::Path, what: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove {what}");
        }
    }
}

impl Inner {
    /// After a restart of this daemon, a move job it was running: the VM is
    /// set right and the reason returned (the job is marked failed).
    pub(crate) async fn recover_migrate_job(
        self: &Arc<Self>,
        job_id: &str,
        params: MigrateJob,
    ) -> String {
        let Some(vm) = self
            .db
            .get::<VmRecord>(kind::VM, &params.vm)
            .map(|(v, _)| v)
        else {
            return "interrupted by a restart of nasvisord; the VM no longer exists".into();
        };
        let here = vm.host.as_deref() == Some(self.host.id.as_str());
        let switched = match params.step {
            // Ownership passes only while the memory moves.
            MigrateStep::Preparing | MigrateStep::CopyingDisks => {
                if !here {
                    tracing::error!(job = %job_id, vm = %vm.name, step = ?params.step, "the log gives the VM to another host before its move switched; the log wins");
                }
                !here
            }
            MigrateStep::CopyingMemory | MigrateStep::Unrecorded => !here,
            MigrateStep::Switched => true,
        };
        let target = self.host_record(&params.to).ok();
        if !switched {
            // The VM stays here (running if its QEMU is); the target drops
            // what it prepared.
            self.restore_after_failed_move(&vm, VmStatus::Stopped).await;
            if let Some(t) = target {
                self.tell_hosts_later(vec![t], super::TargetCall::Abort, &vm.id);
            }
            return format!(
                "interrupted by a restart of nasvisord before the switch; VM {} stays on host {}",
                vm.name, self.host.id
            );
        }
        // Switched: the target owns the VM; a QEMU left here goes, and so
        // do the copies of its disks here (as after a move that ended).
        if let Ok(inst) =
            VmInstance::attach(self.cfg.run_dir(), &vm.id, self.instance_options()).await
        {
            if let Err(e) = inst.kill().await {
                tracing::warn!(vm = %vm.name, error = %e, "cannot stop the source QEMU of a move that switched");
            }
            self.remove_taps(&vm);
        }
        let mut copies: Vec<CopyDisk> = params.copies.clone();
        for c in copies.iter_mut().filter(|c| c.pool.is_none()) {
            c.path = self.cfg.nvram_dir().join(format!("{}.fd", vm.id));
        }
        self.remove_copies(&copies).await;
        // The target may never have been told to take over.
        if params.step != MigrateStep::Switched {
            if let Some(t) = target.filter(|t| vm.host.as_deref() == Some(t.id.as_str())) {
                self.tell_hosts_later(vec![t], super::TargetCall::Finish, &vm.id);
            }
        }
        format!(
            "interrupted by a restart of nasvisord after the switch: VM {} runs on host {}; \
             its copies here were removed",
            vm.name,
            vm.host.as_deref().unwrap_or("?")
        )
    }

    /// After a restart of this daemon, for a VM it owns and found running: a
    /// move it was sending when it stopped is over. QEMU went on without
    /// it (the memory may even have arrived, pausing the guest here), but
    /// the log never passed the VM on, so the guest stays here: the
    /// migration and disk mirrors are cancelled, the guest resumed, and
    /// the other hosts told to drop what they prepared for it.
    pub(crate) async fn clear_interrupted_move(self: &Arc<Self>, vm: &VmRecord, inst: &VmInstance) {
        let qmp = inst.qmp();
        let migrating = match qmp.query_migrate().await {
            Ok(i) => i.status.is_some_and(|s| s.is_in_progress()),
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "query-migrate of an adopted VM");
                false
            }
        };
        let paused_by_move = matches!(
            qmp.query_status().await.map(|s| s.status),
            Ok(nasvisor_vm::qmp::RunState::Postmigrate | nasvisor_vm::qmp::RunState::FinishMigrate)
        );
        let nodes = match leftover_mirror_nodes(qmp).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "cannot list the block nodes of an adopted VM");
                Vec::new()
            }
        };
        if !migrating && !paused_by_move && nodes.is_empty() {
            return;
        }
        tracing::warn!(vm = %vm.name, "a move was being sent when nasvisord stopped: cancelled, the VM stays here");
        let mut mirrors = MirrorSet::leftover(qmp, &nodes);
        // A guest the move paused (its memory sent) is resumed, as before.
        let problems = self.abort_source(inst, &mut mirrors, paused_by_move).await;
        if !problems.is_empty() {
            tracing::warn!(vm = %vm.name, problems = ?problems, "an interrupted move was not entirely undone");
        }
        let others: Vec<HostRecord> = self
            .db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .filter(|h| h.id != self.host.id)
            .collect();
        self.tell_hosts_later(others, super::TargetCall::Abort, &vm.id);
    }

    fn incoming_dir(&self) -> PathBuf {
        self.cfg.run_dir().join("incoming")
    }

    pub(super) fn write_incoming_marker(&self, m: &IncomingMarker) -> Result<(), CoreError> {
        let dir = self.incoming_dir();
        let io = |e: std::io::Error| errors::internal(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", m.vm));
        let body = serde_json::to_vec(m).map_err(errors::internal)?;
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, dir.join(format!("{}.json", m.vm))).map_err(io)
    }

    pub(crate) fn remove_incoming_marker(&self, id: &str) {
        remove_quietly(
            &self.incoming_dir().join(format!("{id}.json")),
            "an incoming-move marker",
        );
    }

    /// After a restart of this daemon: moves that were arriving here when it
    /// stopped. If the log says this host owns the VM, the switch happened:
    /// a live guest that finished loading is resumed (then adopted like any
    /// running VM). Otherwise the move failed or was abandoned: its QEMU,
    /// `qemu-nbd` servers, volumes and UEFI variables here go.
    pub(crate) async fn recover_incoming(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(self.incoming_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                remove_quietly(&path, "a partial incoming-move marker");
                continue;
            }
            let marker: IncomingMarker = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable incoming-move marker dropped");
                    remove_quietly(&path, "an unreadable incoming-move marker");
                    continue;
                }
            };
            self.recover_one_incoming(&marker).await;
            remove_quietly(&path, "an incoming-move marker");
        }
    }

    async fn recover_one_incoming(self: &Arc<Self>, marker: &IncomingMarker) {
        for pid in &marker.nbd_pids {
            stop_orphan_nbd(*pid);
        }
        let vm = self
            .db
            .get::<VmRecord>(kind::VM, &marker.vm)
            .map(|(v, _)| v);
        let owned = vm
            .as_ref()
            .is_some_and(|v| v.host.as_deref() == Some(self.host.id.as_str()));
        let inst =
            VmInstance::attach(self.cfg.run_dir(), &marker.vm, self.instance_options()).await;
        if owned {
            if let (true, Ok(inst)) = (marker.live, inst) {
                let resumed = match inst.wait_incoming_loaded(Duration::from_secs(30)).await {
                    Ok(()) => inst.resume().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match resumed {
                    Ok(()) => {
                        tracing::info!(vm = %marker.vm, "a move that switched over while nasvisord was down: guest resumed here")
                    }
                    Err(e) => {
                        tracing::error!(vm = %marker.vm, error = %e, "a move that switched over while nasvisord was down: the guest could not be resumed");
                        if let Err(e) = inst.kill().await {
                            tracing::warn!(vm = %marker.vm, error = %e, "cannot stop the QEMU of a guest that could not be resumed");
                        }
                    }
                }
            }
        } else {
            if let Ok(inst) = inst {
                if let Err(e) = inst.kill().await {
                    tracing::warn!(vm = %marker.vm, error = %e, "cannot stop the QEMU of an unfinished incoming move");
                }
            }
            if let Some(v) = &vm {
                self.remove_taps(v);
            }
            self.remove_created(&marker.created, marker.vars.as_deref())
                .await;
            tracing::info!(vm = %marker.vm, "an unfinished incoming move was cleaned up");
        }
    }
}
