//! VMs: their records (create, edit, delete) and views. The QEMU processes
//! behind them are in [`processes`], how their observed state follows QMP
//! events in [`monitor`], and power operations in [`power`].

mod monitor;
mod power;
mod processes;

pub(crate) use processes::{Running, VmProcesses};

use crate::errors;
use crate::jobs::JobFailure;
use crate::model::{
    kind, now_rfc3339, Desired, DiskRecord, DiskRole, Firmware, ImageRecord, ImageState, NicRecord,
    Severity, VmRecord, VmRuntime, VmStatus, VswitchRecord,
};
use crate::Inner;
use nasvisor_api_types::{CoreError, VmView};
use nasvisor_api_types::{NicModel as ApiNicModel, VmCreate, VmUpdate};
use nasvisor_net::MacAddr as NetMac;
use std::collections::HashSet;
use std::sync::Arc;

const MIB: u64 = 1024 * 1024;

impl Inner {
    /// The VM with this id or name.
    pub(crate) fn find_vm(&self, id_or_name: &str) -> Result<VmRecord, CoreError> {
        if let Some((v, _)) = self.db.get::<VmRecord>(kind::VM, id_or_name) {
            return Ok(v);
        }
        self.db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .find(|v| v.name == id_or_name)
            .ok_or_else(|| errors::not_found(format!("vm {id_or_name}")))
    }

    pub(crate) fn vm_view(&self, v: &VmRecord) -> VmView {
        let mut view = v.view(&self.processes.runtime(&v.id));
        view.ha_status = self.ha_status(v);
        self.mark_unknown(v, &mut view);
        view
    }

    pub(crate) fn list_vms(&self) -> Vec<VmView> {
        let all = self.db.list_shared::<VmRecord>(kind::VM);
        let mut vms: Vec<&VmRecord> = all.iter().collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        vms.into_iter().map(|v| self.vm_view(v)).collect()
    }

    /// Which VM uses volume `pool`/`volume` of this host, if any.
    pub(crate) fn volume_user(&self, pool: &str, volume: &str) -> Option<VmRecord> {
        let shared = self.pool_record(pool).is_some_and(|p| p.shared());
        self.db.list::<VmRecord>(kind::VM).into_iter().find(|v| {
            (shared || v.host.as_deref().is_none_or(|h| h == self.host.id))
                && v.disks
                    .iter()
                    .any(|d| d.role != DiskRole::Cdrom && d.pool == pool && d.volume == volume)
        })
    }

    fn check_host_fit(&self, vcpus: u32, memory_mib: u64) -> Result<(), CoreError> {
        let cap = self.vm_memory_capacity(&self.host);
        if memory_mib > cap {
            return Err(errors::invalid(
                "memory_mib",
                format!(
                    "{memory_mib} MiB is more than host {} can give a VM ({cap} MiB: {} MiB of RAM less {} MiB reserved)",
                    self.host.id, self.host.memory_mib, self.cfg.reserved_memory_mib
                ),
            ));
        }
        if vcpus > self.host.cpus {
            return Err(errors::invalid(
                "vcpus",
                format!(
                    "{vcpus} vCPUs is more than host {} has CPUs ({})",
                    self.host.id, self.host.cpus
                ),
            ));
        }
        Ok(())
    }

    fn used_macs(&self) -> HashSet<NetMac> {
        self.db
            .list::<VmRecord>(kind::VM)
            .iter()
            .flat_map(|v| v.nics.iter().filter_map(|n| n.mac.parse().ok()))
            .collect()
    }

    /// Defines a VM. New volumes are created; with an image, the install job
    /// starts. A failure leaves nothing behind.
    pub(crate) async fn create_vm(self: &Arc<Self>, req: VmCreate) -> Result<VmView, CoreError> {
        let _g = self.ops.lock().await;
        let vms: Vec<VmRecord> = self.db.list(kind::VM);
        if vms.iter().any(|v| v.name == req.name) {
            return Err(errors::conflict(format!(
                "a VM named {} already exists",
                req.name
            )));
        }
        self.check_host_fit(req.vcpus, req.memory_mib)?;
        if req.ha {
            self.check_ha_possible()?;
        }
        let image = match &req.image {
            Some(name) => {
                let (img, _) = self
                    .db
                    .get::<ImageRecord>(kind::IMAGE, name)
                    .ok_or_else(|| {
                        errors::invalid("image", format!("no image {name:?} in the library"))
                    })?;
                if img.state != ImageState::Ready {
                    return Err(errors::conflict(format!(
                        "image {name} is not ready (it is being imported or failed)"
                    )));
                }
                Some(img)
            }
            None => None,
        };
        // NICs.
        let mut used = self.used_macs();
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let mut nics = Vec::new();
        for (i, n) in req.nics.iter().enumerate() {
            if self
                .db
                .get::<VswitchRecord>(kind::VSWITCH, &n.vswitch)
                .is_none()
            {
                return Err(errors::invalid(
                    format!("nics[{i}].vswitch"),
                    format!("no vswitch {:?}", n.vswitch),
                ));
            }
            let mac = match &n.mac {
                Some(m) => {
                    let mac: NetMac = NetMac::parse_nic("mac", m)
                        .map_err(|e| errors::invalid(format!("nics[{i}].mac"), e.to_string()))?;
                    if used.contains(&mac) {
                        return Err(errors::conflict(format!(
                            "MAC address {m} is already used by another NIC"
                        )));
                    }
                    mac
                }
                None => nasvisor_net::mac::generate(&self.cfg.cluster_id, &id, i as u16, &used)
                    .map_err(errors::internal)?,
            };
            used.insert(mac);
            nics.push(NicRecord {
                vswitch: n.vswitch.clone(),
                mac: mac.to_string(),
                model: match n.model.unwrap_or(ApiNicModel::Virtio) {
                    ApiNicModel::Virtio => "virtio".into(),
                    ApiNicModel::E1000 => "e1000".into(),
                },
            });
        }
        // Disks: check everything before creating anything.
        let mut planned = Vec::new();
        for (i, d) in req.disks.iter().enumerate() {
            let field = format!("disks[{i}].pool");
            match (&d.volume, d.size_mib) {
                (Some(vol), _) => {
                    let (v, pool_name) = (vol.clone(), d.pool.clone());
                    let info = self
                        .on_pool(&d.pool, &field, move |p| {
                            p.volume(&v).map_err(|e| match e {
                                nasvisor_storage::StorageError::NotFound { .. } => errors::invalid(
                                    format!("disks[{i}].volume"),
                                    format!("no volume {v:?} in pool {pool_name}"),
                                ),
                                e => errors::storage(&format!("disks[{i}].volume"), e),
                            })
                        })
                        .await?;
                    if let Some(u) = self.volume_user(&d.pool, vol) {
                        return Err(errors::conflict(format!(
                            "volume {}/{vol} is used by VM {}",
                            d.pool, u.name
                        )));
                    }
                    planned.push((d.pool.clone(), vol.clone(), info.virtual_size / MIB, false));
                }
                (None, Some(size)) => {
                    let vol = format!("{}-disk{i}", req.name);
                    if self.volume_exists(&d.pool, &field, &vol).await? {
                        return Err(errors::conflict(format!(
                            "volume {}/{vol} already exists",
                            d.pool
                        )));
                    }
                    planned.push((d.pool.clone(), vol, size, true));
                }
                (None, None) => {
                    return Err(errors::invalid(
                        format!("disks[{i}]"),
                        "give size_mib or volume",
                    ))
                }
            }
        }
        let install = req.install.clone();
        if let Some(img) = &image {
            let pool_name = install
                .as_ref()
                .and_then(|i| i.pool.clone())
                .unwrap_or_else(|| "default".into());
            for suffix in ["root", "seed"] {
                let vol = format!("{}-{suffix}", req.name);
                if self.volume_exists(&pool_name, "install.pool", &vol).await? {
                    return Err(errors::conflict(format!(
                        "volume {pool_name}/{vol} already exists"
                    )));
                }
            }
            if img.format.as_deref() == Some("iso") && !img.cloud_init && req.disks.is_empty() {
                return Err(errors::invalid(
                    "disks",
                    "installing from an ISO needs a disk to install onto",
                ));
            }
        }
        // Create the new volumes; undo on failure.
        let mut disks = Vec::new();
        let mut created: Vec<(String, String)> = Vec::new();
        for (i, (pool, vol, size_mib, new)) in planned.into_iter().enumerate() {
            if new {
                let v = vol.clone();
                let field = format!("disks[{i}].size_mib");
                let f = field.clone();
                let made = self
                    .on_pool(&pool, &field, move |p| {
                        p.create(&v, size_mib * MIB)
                            .map_err(|e| errors::storage(&f, e))
                    })
                    .await;
                if let Err(e) = made {
                    self.remove_created_disks(&created).await;
                    return Err(e);
                }
                created.push((pool.clone(), vol.clone()));
            }
            disks.push(DiskRecord {
                pool,
                volume: vol,
                size_mib,
                role: DiskRole::Disk,
                owned: new,
            });
        }
        let rec = VmRecord {
            id: id.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
            firmware: match req.firmware {
                nasvisor_api_types::FirmwareKind::Uefi => Firmware::Uefi,
                nasvisor_api_types::FirmwareKind::Bios => {
                    image.as_ref().map(|i| i.firmware).unwrap_or_default()
                }
            },
            autostart: req.autostart,
            ha: req.ha,
            passive: None,
            last_ha_move: None,
            image: req.image.clone(),
            disks,
            nics,
            host: req.host.clone(),
            desired: Desired::Stopped,
            state: if image.is_some() {
                VmStatus::Installing
            } else {
                VmStatus::Stopped
            },
            state_reason: None,
            install_job: None,
            created_at: now_rfc3339(),
            replica: None,
        };
        if let Err(e) = self
            .db
            .create(kind::VM, &id, &rec, &format!("vm {}", rec.name))
            .await
        {
            self.remove_created_disks(&created).await;
            return Err(e);
        }
        drop(_g);
        let rec = match image {
            Some(img) => {
                self.start_install(rec, img, install.unwrap_or_default())
                    .await?
            }
            None => rec,
        };
        Ok(self.vm_view(&rec))
    }

    pub(crate) async fn update_vm(
        self: &Arc<Self>,
        id: &str,
        upd: VmUpdate,
    ) -> Result<VmView, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(id)?;
        if let Some(n) = &upd.name {
            if n != &vm.name
                && self
                    .db
                    .list::<VmRecord>(kind::VM)
                    .iter()
                    .any(|v| &v.name == n)
            {
                return Err(errors::conflict(format!("a VM named {n} already exists")));
            }
        }
        let hw = upd.vcpus.is_some() || upd.memory_mib.is_some();
        if hw && (vm.is_active() || self.processes.contains(&vm.id)) {
            return Err(errors::conflict(format!(
                "VM {} is {}; vCPUs and memory change only while it is stopped",
                vm.name,
                vm.state.as_str()
            )));
        }
        self.check_host_fit(
            upd.vcpus.unwrap_or(vm.vcpus),
            upd.memory_mib.unwrap_or(vm.memory_mib),
        )?;
        // HA on: a passive host now if the VM has a host (else at its first
        // start); off: the reservation goes.
        let passive = match upd.ha {
            Some(true) if !vm.ha => {
                self.check_ha_possible()?;
                match &vm.host {
                    Some(active) => self.choose_passive(&vm, active).await,
                    None => None,
                }
            }
            Some(true) => vm.passive.clone(),
            Some(false) => None,
            None => vm.passive.clone(),
        };
        let rec = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                if let Some(n) = &upd.name {
                    v.name = n.clone();
                }
                if let Some(c) = upd.vcpus {
                    v.vcpus = c;
                }
                if let Some(m) = upd.memory_mib {
                    v.memory_mib = m;
                }
                if let Some(d) = &upd.description {
                    v.description = Some(d.clone());
                }
                if let Some(a) = upd.autostart {
                    v.autostart = a;
                }
                if let Some(h) = upd.ha {
                    v.ha = h;
                }
                v.passive = passive.clone();
                Ok(())
            })
            .await?;
        // Its disk replica: kept by a keeper while it runs here (one starts
        // when HA is turned on); dropped with HA when it does not run.
        if self.processes.contains(&rec.id) {
            self.spawn_replica_keeper(&rec.id);
        } else if !rec.ha {
            if let Some(r) = rec.replica.clone() {
                self.ask_drop(&rec.id, &r).await;
                self.db
                    .update::<VmRecord, _>(kind::VM, &rec.id, |v| {
                        v.replica = None;
                        Ok(())
                    })
                    .await?;
            }
        }
        Ok(self.vm_view(&rec))
    }

    pub(crate) async fn delete_vm(
        &self,
        id: &str,
        delete_disks: bool,
    ) -> Result<VmView, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(id)?;
        if self.processes.contains(&vm.id) || vm.is_active() {
            return Err(errors::conflict(format!(
                "VM {} is {}; stop it first",
                vm.name,
                vm.state.as_str()
            )));
        }
        let mut problems = Vec::new();
        for d in &vm.disks {
            let delete = d.role == DiskRole::Seed || (delete_disks && d.role == DiskRole::Disk);
            if delete {
                let vol = d.volume.clone();
                match self
                    .on_pool(&d.pool, "disks", move |p| {
                        p.delete(&vol).map_err(|e| errors::storage("disks", e))
                    })
                    .await
                {
                    Ok(()) | Err(CoreError::NotFound { .. }) => {}
                    Err(e) => problems.push(format!("{}/{}: {e}", d.pool, d.volume)),
                }
            }
        }
        nasvisor_best_effort::remove_file(&self.cfg.nvram_dir().join(format!("{}.fd", vm.id)));
        if let Ok(paths) = nasvisor_vm::RunPaths::new(self.cfg.run_dir(), &vm.id) {
            paths.remove_stale();
            for p in [paths.console_log(), paths.qemu_log()] {
                nasvisor_best_effort::remove_file(&p);
                nasvisor_best_effort::remove_file(&p.with_extension("log.1"));
            }
        }
        self.db.delete(kind::VM, &vm.id).await?;
        // Its replica goes with it (a copy of the disks on another host).
        if let Some(r) = &vm.replica {
            self.ask_drop(&vm.id, r).await;
        }
        self.event(
            "vm-deleted",
            Severity::Info,
            Some(format!("vm/{}", vm.name)),
            format!(
                "VM {} deleted{}",
                vm.name,
                if delete_disks { " with its disks" } else { "" }
            ),
        )
        .await;
        if !problems.is_empty() {
            tracing::warn!(vm = %vm.name, ?problems, "some disks could not be deleted");
        }
        let mut out = vm.view(&VmRuntime::default());
        out.state = VmStatus::Stopped;
        Ok(out)
    }
}

/// Job failure from a core error, for `?` in job bodies.
pub(crate) fn failed(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::Failed(e.to_string())
}

impl Inner {
    /// Whether pool `pool` holds volume `vol` (off the async workers).
    async fn volume_exists(&self, pool: &str, field: &str, vol: &str) -> Result<bool, CoreError> {
        let vol = vol.to_string();
        self.on_pool(pool, field, move |p| Ok(p.volume(&vol).is_ok()))
            .await
    }

    /// Removes the disks made for a VM that was not created.
    async fn remove_created_disks(&self, created: &[(String, String)]) {
        for (pool, vol) in created {
            self.delete_volume_or_warn(
                pool,
                vol,
                "remove a disk created for a VM that was not created",
            )
            .await;
        }
    }
}
