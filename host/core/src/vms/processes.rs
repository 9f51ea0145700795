//! The QEMU processes this host runs: [`VmProcesses`] owns the map from VM
//! id to process, and nothing else touches it. Launching, adopting after a
//! restart and stopping a VM's QEMU are here too.

use crate::errors;
use crate::model::{
    kind, DiskRole, Firmware, Severity, VmRecord, VmRuntime, VmStatus, VswitchRecord,
};
use crate::{lock, Inner};
use nasvisor_api_types::{AccelKind, CoreError, QemuState};
use nasvisor_best_effort::BestEffort;
use nasvisor_net::{MacAddr as NetMac, Tap, TapName, TapOptions};
use nasvisor_vm::{
    Accel, ConsoleOptions, DiskSpec, InstanceOptions, LaunchOptions, NicBackend, NicModel, NicSpec,
    SpawnHook, VmInstance, VmSpec,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A running VM this daemon manages.
#[derive(Clone)]
pub(crate) struct Running {
    pub inst: VmInstance,
    pub taps: Vec<Option<String>>,
    pub accel: Accel,
}

/// The QEMU processes of this host, by VM id.
#[derive(Default)]
pub(crate) struct VmProcesses {
    map: Mutex<HashMap<String, Running>>,
}

/// How long a restarting daemon waits for the leader's copy of a VM record
/// whose QEMU is gone, before it goes by its own copy.
const LEADER_READ_AT_START: std::time::Duration = std::time::Duration::from_secs(2);

impl VmProcesses {
    /// Records the process of VM `id` (replacing an older handle).
    pub(crate) fn insert(&self, id: &str, running: Running) {
        lock(&self.map).insert(id.to_string(), running);
    }

    /// Drops the handle of VM `id`; the process itself is the caller's.
    pub(crate) fn remove(&self, id: &str) -> Option<Running> {
        lock(&self.map).remove(id)
    }

    /// Drops the handle of VM `id` only if it is still QEMU `pid` (a newer
    /// start may have replaced it). True when it was dropped.
    pub(crate) fn remove_if_pid(&self, id: &str, pid: i32) -> bool {
        let mut map = lock(&self.map);
        match map.get(id) {
            Some(r) if r.inst.pid() == pid => map.remove(id).is_some(),
            _ => false,
        }
    }

    /// Whether VM `id` has a QEMU on this host.
    pub(crate) fn contains(&self, id: &str) -> bool {
        lock(&self.map).contains_key(id)
    }

    /// The QEMU of VM `id`, if it runs here.
    pub(crate) fn instance(&self, id: &str) -> Option<VmInstance> {
        lock(&self.map).get(id).map(|r| r.inst.clone())
    }

    /// The ids of the VMs with a QEMU here.
    pub(crate) fn ids(&self) -> Vec<String> {
        lock(&self.map).keys().cloned().collect()
    }

    /// How many QEMUs run here.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Forgets every handle (at shutdown; the QEMUs keep running).
    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
    }

    /// What the process of VM `id` shows in its view.
    pub(crate) fn runtime(&self, id: &str) -> VmRuntime {
        match lock(&self.map).get(id) {
            Some(r) => VmRuntime {
                pid: Some(r.inst.pid()),
                qemu_state: Some(qemu_state_of(&r.inst.state())),
                accel: Some(accel_kind(r.accel)),
                taps: r.taps.clone(),
            },
            None => VmRuntime::default(),
        }
    }
}

impl Inner {
    /// Builds the QEMU spec of a VM: disk paths, taps on the vswitches.
    pub(crate) async fn build_spec(
        &self,
        vm: &VmRecord,
    ) -> Result<(VmSpec, Vec<Option<String>>), CoreError> {
        let mut spec = VmSpec::new(vm.name.clone(), vm.memory_mib);
        spec.uuid = vm.id.parse().map_err(errors::internal)?;
        spec.vcpus = vm.vcpus;
        spec.firmware = match vm.firmware {
            Firmware::Bios => nasvisor_vm::Firmware::Bios,
            Firmware::Uefi => nasvisor_vm::Firmware::Uefi,
        };
        if vm.firmware == Firmware::Uefi {
            spec.uefi_vars = Some(self.cfg.nvram_dir().join(format!("{}.fd", vm.id)));
        }
        for (i, d) in vm.disks.iter().enumerate() {
            let field = format!("disks[{i}]");
            let disk = match d.role {
                DiskRole::Cdrom => {
                    let img = self
                        .library
                        .get(&d.volume)
                        .map_err(|e| errors::storage(&field, e))?;
                    DiskSpec::cdrom(img.path)
                }
                DiskRole::Disk | DiskRole::Seed => {
                    let (vol, f) = (d.volume.clone(), field.clone());
                    let info = self
                        .on_pool(&d.pool, &field, move |p| {
                            p.volume(&vol).map_err(|e| errors::storage(&f, e))
                        })
                        .await?;
                    DiskSpec {
                        // An HA VM's disk on its host's own pool gets a
                        // synchronous replica (core/src/replica.rs).
                        replicated: self.is_replicated(vm, d),
                        ..DiskSpec::qcow2(info.path)
                    }
                }
            };
            spec.disks.push(disk);
        }
        let mut taps = Vec::new();
        for (i, n) in vm.nics.iter().enumerate() {
            let sw = self
                .db
                .get::<VswitchRecord>(kind::VSWITCH, &n.vswitch)
                .map(|(s, _)| s)
                .ok_or_else(|| {
                    errors::conflict(format!(
                        "vswitch {} of nics[{i}] no longer exists",
                        n.vswitch
                    ))
                })?;
            let bridge = self
                .ensure_vswitch(&sw)
                .map_err(|e| errors::net(&format!("nics[{i}]"), e))?;
            let tap_name = TapName::for_vm(&vm.id, i as u16).map_err(errors::internal)?;
            let mac: NetMac = n
                .mac
                .parse()
                .map_err(|_| errors::internal(format!("bad stored MAC {}", n.mac)))?;
            let tap = Tap::ensure(&self.net, &tap_name, &bridge, &TapOptions::default())
                .map_err(|e| errors::net(&format!("nics[{i}]"), e))?;
            spec.nics.push(NicSpec {
                mac: n
                    .mac
                    .parse()
                    .map_err(|_| errors::internal(format!("bad stored MAC {mac}")))?,
                backend: NicBackend::Tap {
                    ifname: tap.name.as_str().to_string(),
                },
                model: if n.model == "e1000" {
                    NicModel::E1000
                } else {
                    NicModel::VirtioNetPci
                },
            });
            taps.push(Some(tap.name.as_str().to_string()));
        }
        Ok((spec, taps))
    }

    pub(crate) fn remove_taps(&self, vm: &VmRecord) {
        for i in 0..vm.nics.len() {
            if let Ok(t) = TapName::for_vm(&vm.id, i as u16) {
                if let Err(e) = Tap::delete(&self.net, &t) {
                    tracing::warn!(vm = %vm.name, tap = t.as_str(), error = %e, "cannot remove a tap");
                }
            }
        }
    }

    /// Starts QEMU for `vm` on this host and watches it.
    pub(crate) async fn launch(self: &Arc<Self>, vm: &VmRecord) -> Result<VmInstance, CoreError> {
        // A replica of it this host served (it was the passive host) holds
        // its images: it ends before they are opened (a failover).
        self.stop_replica_server(&vm.id).await;
        let (spec, taps) = self.build_spec(vm).await?;
        let mut opts = LaunchOptions::new(self.cfg.run_dir(), self.accel);
        opts.qemu_binary = self.cfg.qemu_binary.clone();
        if self.cfg.netns.is_some() {
            let net = self.net.clone();
            opts.spawn_hook = Some(SpawnHook(Arc::new(move |cmd| {
                net.enter_on_spawn(cmd).map_err(std::io::Error::other)
            })));
        }
        let inst = match VmInstance::launch(&spec, &opts, self.instance_options()).await {
            Ok(i) => i,
            Err(e) => {
                self.remove_taps(vm);
                return Err(errors::internal(format!("QEMU did not start: {e}")));
            }
        };
        self.processes.insert(
            &vm.id,
            Running {
                inst: inst.clone(),
                taps,
                accel: self.accel,
            },
        );
        self.spawn_monitor(vm.id.clone(), inst.clone());
        self.write_ha_lease();
        self.spawn_replica_keeper(&vm.id);
        Ok(inst)
    }

    pub(crate) fn instance_options(&self) -> InstanceOptions {
        InstanceOptions {
            console: Some(ConsoleOptions {
                max_log_bytes: self.cfg.console_log_bytes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn instance(&self, vm: &VmRecord) -> Result<VmInstance, CoreError> {
        self.processes.instance(&vm.id).ok_or_else(|| {
            errors::conflict(format!(
                "VM {} is not running (it is {})",
                vm.name,
                vm.state.as_str()
            ))
        })
    }

    /// After a restart: adopt the QEMUs that kept running, record the ones
    /// that died meanwhile, start autostart VMs after a host boot and the
    /// VMs a forced reboot shut down (crate::firmware_reboot).
    pub(crate) async fn recover_vms(self: &Arc<Self>) {
        let boot_file = self.cfg.data_dir.join("boot-id");
        let boot_id = crate::firmware_reboot::this_boot_id();
        let restart = self.vms_to_restart();
        let host_booted = std::fs::read_to_string(&boot_file)
            .map(|b| b != boot_id)
            .unwrap_or(true);
        std::fs::write(&boot_file, &boot_id).best_effort("record this boot's id");
        for vm in self.db.list::<VmRecord>(kind::VM) {
            if vm.host.as_deref().is_some_and(|h| h != self.host.id) {
                continue;
            }
            match VmInstance::attach(self.cfg.run_dir(), &vm.id, self.instance_options()).await {
                Ok(inst) => {
                    tracing::info!(vm = %vm.name, pid = inst.pid(), "found a running VM again");
                    let taps = (0..vm.nics.len())
                        .map(|i| {
                            TapName::for_vm(&vm.id, i as u16)
                                .ok()
                                .map(|t| t.as_str().to_string())
                        })
                        .collect();
                    self.processes.insert(
                        &vm.id,
                        Running {
                            inst: inst.clone(),
                            taps,
                            accel: self.accel,
                        },
                    );
                    if vm.state != VmStatus::Installing {
                        self.clear_interrupted_move(&vm, &inst).await;
                        self.spawn_monitor(vm.id.clone(), inst);
                        self.spawn_replica_keeper(&vm.id);
                    }
                }
                Err(e) => {
                    // No QEMU here: what to record, or start, follows the
                    // record as the leader has it, when it answers (a
                    // failover while this daemon was down may not have
                    // reached this host's copy yet).
                    let vm = if self.multi_host() {
                        let read = self.vm_as_the_leader_has_it(&vm.id);
                        let read = tokio::time::timeout(LEADER_READ_AT_START, read)
                            .await
                            .unwrap_or_else(|_| {
                                Err(CoreError::Unavailable {
                                    reason: format!("no answer within {LEADER_READ_AT_START:?}"),
                                })
                            });
                        match read {
                            Ok(Some(v)) if v.host.as_deref() == Some(self.host.id.as_str()) => v,
                            Ok(Some(v)) if v.host.is_none() && vm.host.is_none() => v,
                            Ok(other) => {
                                tracing::info!(vm = %vm.name, now = ?other.map(|v| v.host), "a VM of this host moved away while nasvisord was down");
                                continue;
                            }
                            Err(err) => {
                                tracing::warn!(vm = %vm.name, error = %err, "cannot read the VM's record from the leader; going by this host's copy");
                                vm
                            }
                        }
                    } else {
                        vm
                    };
                    // A move's VM (Migrating) is set right by recover_jobs.
                    if vm.is_active()
                        && !matches!(vm.state, VmStatus::Installing | VmStatus::Migrating)
                    {
                        let reason = format!(
                            "QEMU is gone; it exited while nasvisord was not running ({e})"
                        );
                        self.set_state(&vm.id, VmStatus::Crashed, Some(reason.clone()), None)
                            .await
                            .best_effort("record that the VM's QEMU is gone");
                        self.event(
                            "vm-crashed",
                            Severity::Error,
                            Some(format!("vm/{}", vm.name)),
                            format!("VM {}: {reason}", vm.name),
                        )
                        .await;
                    }
                    let autostart = host_booted
                        && vm.autostart
                        && !matches!(vm.state, VmStatus::Installing | VmStatus::InstallFailed);
                    // Shut down by a forced reboot of this host: started
                    // again, whether the host rebooted or the daemon only
                    // restarted before it did.
                    let rebooted = restart.contains(&vm.id) && vm.state == VmStatus::Stopped;
                    if autostart || rebooted {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.start_vm(&vm, None).await {
                                let what = if rebooted {
                                    format!("starting VM {} again after the host's reboot", vm.name)
                                } else {
                                    format!("autostart of VM {}", vm.name)
                                };
                                me.event(
                                    "vm-autostart-failed",
                                    Severity::Error,
                                    Some(format!("vm/{}", vm.name)),
                                    format!("{what} failed: {e}"),
                                )
                                .await;
                            }
                        });
                    }
                }
            }
        }
        if !restart.is_empty() {
            self.forget_vms_to_restart();
        }
    }

    /// Stops the QEMUs of this host that run a VM this host does not own:
    /// its record is gone (`vm delete --force` while this host was lost) or
    /// names another host (`vm recover`, or a failover). Such a copy may
    /// only exist when this host was cut off without stopping its VMs (its
    /// daemon was down); it must not run on, or the VM's disk diverges.
    pub(crate) async fn stop_stale_copies(&self) {
        let run_dir = self.cfg.run_dir();
        let Ok(entries) = std::fs::read_dir(&run_dir) else {
            return;
        };
        let ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // A replica server is no copy of a VM (ended below).
                if name.ends_with(".replica.pid") {
                    return None;
                }
                name.strip_suffix(".pid").map(str::to_string)
            })
            .collect();
        self.end_stale_replica_servers().await;
        for id in ids {
            let owner = self.db.get::<VmRecord>(kind::VM, &id).map(|(v, _)| v);
            let ours = owner
                .as_ref()
                .is_some_and(|v| v.host.as_deref() == Some(self.host.id.as_str()));
            if ours || self.processes.contains(&id) || self.migrations.is_arriving(&id) {
                continue;
            }
            let Ok(inst) = VmInstance::attach(&run_dir, &id, self.instance_options()).await else {
                continue;
            };
            let pid = inst.pid();
            tracing::warn!(vm = %id, pid, "stopping a stale copy of a VM this host no longer owns");
            let (name, why) = match &owner {
                Some(v) => (
                    v.name.clone(),
                    format!(
                        "it now belongs to host {}",
                        v.host.as_deref().unwrap_or("none")
                    ),
                ),
                None => (
                    nasvisor_vm::proc::guest_name(pid).unwrap_or_else(|| id.clone()),
                    "its record was deleted".to_string(),
                ),
            };
            inst.kill().await.best_effort("kill a stale copy of a VM");
            if let Some(v) = &owner {
                self.remove_taps(v);
            }
            self.event(
                "vm-stale-copy-stopped",
                Severity::Warning,
                Some(format!("vm/{name}")),
                format!(
                    "host {} stopped its copy of VM {name} (QEMU pid {pid}): {why}",
                    self.host.id
                ),
            )
            .await;
        }
    }

    /// Reports that an install's QEMU was stopped (shared by install paths).
    pub(crate) async fn stop_instance(&self, id: &str) {
        let r = self.processes.remove(id);
        if let Some(r) = r {
            r.inst.kill().await.best_effort("kill the VM's QEMU");
        }
        if let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) {
            self.remove_taps(&vm);
        }
    }
}

/// What a QEMU reports, as the API names it.
fn qemu_state_of(s: &nasvisor_vm::VmState) -> QemuState {
    use nasvisor_vm::VmState as S;
    match s {
        S::Running => QemuState::Running,
        S::Paused => QemuState::Paused,
        S::ShuttingDown => QemuState::ShuttingDown,
        S::Shutdown { .. } => QemuState::Shutdown,
        S::Panicked { .. } => QemuState::Panicked,
        S::Stopped { .. } => QemuState::Stopped,
        S::Crashed { .. } => QemuState::Crashed,
    }
}

/// An accelerator, as the API names it.
fn accel_kind(a: nasvisor_vm::Accel) -> AccelKind {
    match a {
        nasvisor_vm::Accel::Kvm => AccelKind::Kvm,
        nasvisor_vm::Accel::Tcg => AccelKind::Tcg,
    }
}
