//! VMs: create, edit, delete, power operations, the QEMU processes behind
//! them, and how their observed state follows QMP events.

use crate::errors;
use crate::jobs::JobFailure;
use crate::model::{
    kind, now_rfc3339, Desired, DiskRecord, DiskRole, Firmware, ImageRecord, ImageState, NicRecord,
    PoolRecord, Severity, VmRecord, VmRuntime, VmStatus, VswitchRecord,
};
use crate::{lock, Inner, Running};
use nasvisor_api_types::{AccelKind, CoreError, QemuState, VmView};
use nasvisor_api_types::{NicModel as ApiNicModel, PowerOp, VmCreate, VmUpdate};
use nasvisor_best_effort::BestEffort;
use nasvisor_net::{MacAddr as NetMac, Tap, TapName, TapOptions};
use nasvisor_storage::Pool;
use nasvisor_vm::{
    ConsoleOptions, DiskSpec, InstanceOptions, LaunchOptions, NicBackend, NicModel, NicSpec,
    ShutdownOutcome, SpawnHook, VmInstance, VmSpec, VmState,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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

    pub(crate) fn runtime_of(&self, id: &str) -> VmRuntime {
        match lock(&self.running).get(id) {
            Some(r) => VmRuntime {
                pid: Some(r.inst.pid()),
                qemu_state: Some(qemu_state_of(&r.inst.state())),
                accel: Some(accel_kind(r.accel)),
                taps: r.taps.clone(),
            },
            None => VmRuntime::default(),
        }
    }

    pub(crate) fn vm_view(&self, v: &VmRecord) -> VmView {
        v.view(&self.runtime_of(&v.id))
    }

    pub(crate) fn list_vms(&self) -> Vec<VmView> {
        let mut vms: Vec<VmRecord> = self.db.list(kind::VM);
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        vms.iter().map(|v| self.vm_view(v)).collect()
    }

    pub(crate) fn pool(&self, name: &str, field: &str) -> Result<Pool, CoreError> {
        let rec: PoolRecord = self.pool_record(name).ok_or_else(|| {
            errors::invalid(field, format!("no pool {name:?} on host {}", self.host.id))
        })?;
        Pool::open(&rec.name, std::path::Path::new(&rec.path))
            .map_err(|e| errors::storage(field, e))
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
            let hosts = self.db.list::<crate::model::HostRecord>(kind::HOST).len();
            if hosts < 3 {
                return Err(errors::invalid(
                    "ha",
                    format!("HA needs a cluster of at least 3 hosts; this cluster has {hosts}"),
                ));
            }
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
            let pool = self.pool(&d.pool, &format!("disks[{i}].pool"))?;
            match (&d.volume, d.size_mib) {
                (Some(vol), _) => {
                    let info = pool.volume(vol).map_err(|e| match e {
                        nasvisor_storage::StorageError::NotFound { .. } => errors::invalid(
                            format!("disks[{i}].volume"),
                            format!("no volume {vol:?} in pool {}", d.pool),
                        ),
                        e => errors::storage(&format!("disks[{i}].volume"), e),
                    })?;
                    if let Some(u) = self.volume_user(&d.pool, vol) {
                        return Err(errors::conflict(format!(
                            "volume {}/{vol} is used by VM {}",
                            d.pool, u.name
                        )));
                    }
                    planned.push((pool, vol.clone(), info.virtual_size / MIB, false));
                }
                (None, Some(size)) => {
                    let vol = format!("{}-disk{i}", req.name);
                    if pool.volume(&vol).is_ok() {
                        return Err(errors::conflict(format!(
                            "volume {}/{vol} already exists",
                            d.pool
                        )));
                    }
                    planned.push((pool, vol, size, true));
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
            let pool = self.pool(&pool_name, "install.pool")?;
            for suffix in ["root", "seed"] {
                let vol = format!("{}-{suffix}", req.name);
                if pool.volume(&vol).is_ok() {
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
        let mut created: Vec<(Pool, String)> = Vec::new();
        for (i, (pool, vol, size_mib, new)) in planned.into_iter().enumerate() {
            if new {
                if let Err(e) = pool.create(&vol, size_mib * MIB) {
                    for (p, v) in &created {
                        p.delete(v)
                            .best_effort("remove a disk created for a VM that was not created");
                    }
                    return Err(errors::storage(&format!("disks[{i}].size_mib"), e));
                }
                created.push((pool.clone(), vol.clone()));
            }
            disks.push(DiskRecord {
                pool: pool.name().to_string(),
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
        };
        if let Err(e) = self
            .db
            .create(kind::VM, &id, &rec, &format!("vm {}", rec.name))
            .await
        {
            for (p, v) in &created {
                p.delete(v)
                    .best_effort("remove a disk created for a VM that was not created");
            }
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

    pub(crate) async fn update_vm(&self, id: &str, upd: VmUpdate) -> Result<VmView, CoreError> {
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
        if hw && (vm.is_active() || lock(&self.running).contains_key(&vm.id)) {
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
                Ok(())
            })
            .await?;
        Ok(self.vm_view(&rec))
    }

    pub(crate) async fn delete_vm(
        &self,
        id: &str,
        delete_disks: bool,
    ) -> Result<VmView, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(id)?;
        if lock(&self.running).contains_key(&vm.id) || vm.is_active() {
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
                match self
                    .pool(&d.pool, "disks")
                    .and_then(|p| p.delete(&d.volume).map_err(|e| errors::storage("disks", e)))
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

    /// Builds the QEMU spec of a VM: disk paths, taps on the vswitches.
    pub(crate) fn build_spec(
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
                    let pool = self.pool(&d.pool, &field)?;
                    let info = pool
                        .volume(&d.volume)
                        .map_err(|e| errors::storage(&field, e))?;
                    DiskSpec::qcow2(info.path)
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
        let (spec, taps) = self.build_spec(vm)?;
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
        lock(&self.running).insert(
            vm.id.clone(),
            Running {
                inst: inst.clone(),
                taps,
                accel: self.accel,
            },
        );
        self.spawn_monitor(vm.id.clone(), inst.clone());
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

    /// Follows a VM's QEMU state into its record until QEMU exits.
    pub(crate) fn spawn_monitor(self: &Arc<Self>, id: String, inst: VmInstance) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rx = inst.watch_state();
            loop {
                let st = rx.borrow_and_update().clone();
                if st.is_exited() {
                    // Forget the process first: once the record says it
                    // stopped or crashed, no answer shows a pid.
                    me.forget_instance(&id, inst.pid());
                    me.observe(&id, &st).await;
                    return;
                }
                me.observe(&id, &st).await;
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = me.shutdown.cancelled() => return,
                }
            }
            me.forget_instance(&id, inst.pid());
        });
    }

    /// Drops the handle of VM `id`'s QEMU `pid` (if it still is the current
    /// one) and removes its taps.
    fn forget_instance(&self, id: &str, pid: i32) {
        let ours = {
            let mut running = lock(&self.running);
            match running.get(id) {
                Some(r) if r.inst.pid() == pid => running.remove(id).is_some(),
                _ => false,
            }
        };
        if ours {
            if let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) {
                self.remove_taps(&vm);
            }
        }
    }

    /// Records what QEMU reports. An install in progress owns the record.
    async fn observe(&self, id: &str, st: &VmState) {
        let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) else {
            return;
        };
        // An install or a migration owns the record; a VM that moved away
        // is the other host's to report.
        if matches!(vm.state, VmStatus::Installing | VmStatus::Migrating)
            || vm.host.as_deref().is_some_and(|h| h != self.host.id)
        {
            return;
        }
        // Stopped because this host lost the quorum: what should run is
        // decided when the quorum is back.
        if self.is_fenced(id) {
            return;
        }
        let (status, reason) = match st {
            VmState::Running => (VmStatus::Running, None),
            VmState::Paused => (VmStatus::Paused, None),
            VmState::ShuttingDown => (
                VmStatus::Stopping,
                Some("ACPI power button pressed".to_string()),
            ),
            VmState::Shutdown { reason } => (
                VmStatus::Stopping,
                Some(format!("guest shutdown ({reason})")),
            ),
            VmState::Panicked { detail } => (VmStatus::GuestPanicked, Some(detail.clone())),
            VmState::Stopped { reason } => (VmStatus::Stopped, Some(reason.clone())),
            VmState::Crashed { detail } => (VmStatus::Crashed, Some(detail.clone())),
        };
        if vm.state == status && vm.state_reason == reason {
            return;
        }
        // A stop we asked for keeps its reason.
        if vm.state == VmStatus::Stopped && matches!(status, VmStatus::Stopped | VmStatus::Stopping)
        {
            return;
        }
        let r = self
            .db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                if v.state != VmStatus::Installing {
                    v.state = status;
                    v.state_reason = reason.clone();
                    if matches!(status, VmStatus::Stopped) {
                        v.desired = Desired::Stopped;
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(vm = %vm.name, error = %e, "cannot record the VM's state");
        }
        let event = match st {
            VmState::Crashed { detail } => {
                Some(("vm-crashed", Severity::Error, format!("crashed: {detail}")))
            }
            VmState::Panicked { detail } => {
                Some(("vm-guest-panicked", Severity::Error, detail.clone()))
            }
            VmState::Stopped { reason } => {
                Some(("vm-stopped", Severity::Info, format!("stopped: {reason}")))
            }
            _ => None,
        };
        if let Some((kind_, severity, what)) = event {
            let message = format!("VM {} {what}", vm.name);
            self.event(kind_, severity, Some(format!("vm/{}", vm.name)), message)
                .await;
        }
    }

    pub(crate) fn instance(&self, vm: &VmRecord) -> Result<VmInstance, CoreError> {
        lock(&self.running)
            .get(&vm.id)
            .map(|r| r.inst.clone())
            .ok_or_else(|| {
                errors::conflict(format!(
                    "VM {} is not running (it is {})",
                    vm.name,
                    vm.state.as_str()
                ))
            })
    }

    pub(crate) async fn set_state(
        &self,
        id: &str,
        state: VmStatus,
        reason: Option<String>,
        desired: Option<Desired>,
    ) -> Result<VmRecord, CoreError> {
        self.db
            .update::<VmRecord, _>(kind::VM, id, |v| {
                v.state = state;
                v.state_reason = reason.clone();
                if let Some(d) = desired {
                    v.desired = d;
                }
                Ok(())
            })
            .await
    }

    /// Powers a VM on: first power-on places it.
    pub(crate) async fn start_vm(
        self: &Arc<Self>,
        vm: &VmRecord,
        wanted: Option<&str>,
    ) -> Result<VmRecord, CoreError> {
        let _g = self.ops.lock().await;
        let vm = self.find_vm(&vm.id)?;
        if lock(&self.running).contains_key(&vm.id) {
            return Err(errors::conflict(format!(
                "VM {} is already {}{}",
                vm.name,
                vm.state.as_str(),
                if vm.state == VmStatus::GuestPanicked {
                    "; force it off first"
                } else {
                    ""
                }
            )));
        }
        match vm.state {
            VmStatus::Installing => {
                return Err(errors::conflict(format!(
                    "VM {} is being installed",
                    vm.name
                )))
            }
            VmStatus::InstallFailed => {
                return Err(errors::conflict(format!(
                    "VM {}'s install failed ({}); delete it and create it again",
                    vm.name,
                    vm.state_reason.as_deref().unwrap_or("no reason recorded")
                )))
            }
            _ => {}
        }
        if let Some(w) = wanted {
            if self
                .db
                .get::<crate::model::HostRecord>(kind::HOST, w)
                .is_none()
            {
                return Err(errors::invalid(
                    "host",
                    format!("no host {w:?} in the cluster"),
                ));
            }
        }
        let host = match (&vm.host, wanted) {
            (Some(h), None) => h.clone(),
            (Some(h), Some(w)) if h == w => h.clone(),
            (Some(h), Some(w)) => {
                return Err(errors::conflict(format!(
                    "VM {} lives on host {h}; migrate it to start it on {w}",
                    vm.name
                )))
            }
            (None, w) => self.place(&vm, w).await?,
        };
        if host != self.host.id {
            return Err(CoreError::Unavailable {
                reason: format!(
                    "VM {} is on host {host}; start it through that host",
                    vm.name
                ),
            });
        }
        self.check_host_fit(vm.vcpus, vm.memory_mib)?;
        let (used, _) = self.used_memory_mib(&host, Some(&vm.id));
        let cap = self.vm_memory_capacity(&self.host);
        if used + vm.memory_mib > cap {
            return Err(errors::conflict(format!(
                "host {host} has {} MiB free for VMs, VM {} needs {}",
                cap.saturating_sub(used),
                vm.name,
                vm.memory_mib
            )));
        }
        let vm = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                v.host = Some(host.clone());
                v.state = VmStatus::Starting;
                v.state_reason = None;
                v.desired = Desired::Running;
                Ok(())
            })
            .await?;
        match self.launch(&vm).await {
            Ok(_) => {
                let rec = self
                    .set_state(&vm.id, VmStatus::Running, None, None)
                    .await?;
                self.event(
                    "vm-started",
                    Severity::Info,
                    Some(format!("vm/{}", vm.name)),
                    format!("VM {} started on {host}", vm.name),
                )
                .await;
                Ok(rec)
            }
            Err(e) => {
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some(e.to_string()),
                    Some(Desired::Stopped),
                )
                .await
                .best_effort("record that the VM did not start");
                Err(e)
            }
        }
    }

    pub(crate) async fn power(
        self: &Arc<Self>,
        id: &str,
        op: PowerOp,
    ) -> Result<VmView, CoreError> {
        let vm = self.find_vm(id)?;
        let rec = match op {
            PowerOp::Start { host } => self.start_vm(&vm, host.as_deref()).await?,
            PowerOp::Shutdown { timeout_s } => {
                let inst = self.instance(&vm)?;
                let rec = self
                    .set_state(
                        &vm.id,
                        VmStatus::Stopping,
                        Some(format!("shutting down (forced off after {timeout_s} s)")),
                        Some(Desired::Stopped),
                    )
                    .await?;
                let me = self.clone();
                let id = vm.id.clone();
                tokio::spawn(async move {
                    match inst.shutdown(Duration::from_secs(timeout_s.into())).await {
                        Ok(outcome) => {
                            let reason = match outcome {
                                ShutdownOutcome::Graceful { after } => {
                                    format!(
                                        "the guest powered off after {:.1} s",
                                        after.as_secs_f64()
                                    )
                                }
                                ShutdownOutcome::Forced { after } => format!(
                                    "forced off after {:.0} s: the guest did not power off",
                                    after.as_secs_f64()
                                ),
                                ShutdownOutcome::AlreadyStopped => "it had already stopped".into(),
                            };
                            me.forget_instance(&id, inst.pid());
                            me.set_state(
                                &id,
                                VmStatus::Stopped,
                                Some(format!("shut down by the administrator: {reason}")),
                                Some(Desired::Stopped),
                            )
                            .await
                            .best_effort("record the VM's shutdown");
                        }
                        Err(e) => tracing::warn!(vm = %id, error = %e, "shutdown failed"),
                    }
                });
                rec
            }
            PowerOp::ForceOff {} => {
                let inst = self.instance(&vm)?;
                // Record the intent first so the monitor keeps this reason.
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some("forced off by the administrator".into()),
                    Some(Desired::Stopped),
                )
                .await?;
                inst.force_off()
                    .await
                    .map_err(|e| errors::internal(format!("force off: {e}")))?;
                // QEMU is gone: drop the handle and the taps now, so the
                // answer shows no process.
                self.forget_instance(&vm.id, inst.pid());
                self.set_state(
                    &vm.id,
                    VmStatus::Stopped,
                    Some("forced off by the administrator".into()),
                    Some(Desired::Stopped),
                )
                .await?
            }
            PowerOp::Reboot {} => {
                let inst = self.instance(&vm)?;
                inst.reboot()
                    .await
                    .map_err(|e| errors::internal(format!("reboot: {e}")))?;
                self.find_vm(&vm.id)?
            }
            PowerOp::Pause {} => {
                let inst = self.instance(&vm)?;
                inst.pause()
                    .await
                    .map_err(|e| errors::internal(format!("pause: {e}")))?;
                self.set_state(
                    &vm.id,
                    VmStatus::Paused,
                    Some("paused by the administrator".into()),
                    None,
                )
                .await?
            }
            PowerOp::Resume {} => {
                let inst = self.instance(&vm)?;
                inst.resume()
                    .await
                    .map_err(|e| errors::internal(format!("resume: {e}")))?;
                self.set_state(&vm.id, VmStatus::Running, None, None)
                    .await?
            }
        };
        Ok(self.vm_view(&rec))
    }

    /// After a restart: adopt the QEMUs that kept running, record the ones
    /// that died meanwhile, start autostart VMs after a host boot.
    pub(crate) async fn recover_vms(self: &Arc<Self>) {
        let boot_file = self.cfg.data_dir.join("boot-id");
        let boot_id =
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
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
                    lock(&self.running).insert(
                        vm.id.clone(),
                        Running {
                            inst: inst.clone(),
                            taps,
                            accel: self.accel,
                        },
                    );
                    if vm.state != VmStatus::Installing {
                        self.clear_interrupted_move(&vm, &inst).await;
                        self.spawn_monitor(vm.id.clone(), inst);
                    }
                }
                Err(e) => {
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
                    if host_booted
                        && vm.autostart
                        && !matches!(vm.state, VmStatus::Installing | VmStatus::InstallFailed)
                    {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.start_vm(&vm, None).await {
                                me.event(
                                    "vm-autostart-failed",
                                    Severity::Error,
                                    Some(format!("vm/{}", vm.name)),
                                    format!("autostart of VM {} failed: {e}", vm.name),
                                )
                                .await;
                            }
                        });
                    }
                }
            }
        }
    }

    /// Reports that an install's QEMU was stopped (shared by install paths).
    pub(crate) async fn stop_instance(&self, id: &str) {
        let r = lock(&self.running).remove(id);
        if let Some(r) = r {
            r.inst.kill().await.best_effort("kill the VM's QEMU");
        }
        if let Some((vm, _)) = self.db.get::<VmRecord>(kind::VM, id) {
            self.remove_taps(&vm);
        }
    }
}

/// Job failure from a core error, for `?` in job bodies.
pub(crate) fn failed(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::Failed(e.to_string())
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
pub(crate) fn accel_kind(a: nasvisor_vm::Accel) -> AccelKind {
    match a {
        nasvisor_vm::Accel::Kvm => AccelKind::Kvm,
        nasvisor_vm::Accel::Tcg => AccelKind::Tcg,
    }
}
