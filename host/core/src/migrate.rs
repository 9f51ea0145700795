//! Moving a VM to another host, as a job of the source host.
//!
//! Live (the VM runs):
//! 1. the target creates the VM's volumes that are not on shared storage,
//!    starts QEMU as a migration target (`-incoming defer`, paused),
//!    exports those volumes over NBD and waits for the memory stream;
//! 2. the source mirrors each such disk onto the target's export
//!    (`blockdev-mirror`, the guest keeps writing: writes are mirrored);
//! 3. once every mirror is in sync, the source migrates the memory; QEMU
//!    pauses the guest for the last pass (the downtime);
//! 4. the mirrors end in sync; ownership passes through the cluster log
//!    (the VM's host becomes the target), and only then does the target
//!    resume the guest; the source's QEMU and disk copies go.
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

use crate::errors;
use crate::jobs::{JobCtx, JobFailure};
use crate::model::{
    kind, pool_key, DiskRole, Firmware, HostRecord, ImageRecord, PoolRecord, Severity, VmRecord,
    VmStatus,
};
use crate::{lock, Inner, Running};
use nasvisor_api::action::VmMigrate;
use nasvisor_api::CoreError;
use nasvisor_vm::{LaunchOptions, SpawnHook, VmInstance};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the target may take to get ready.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default longest pause of the guest at the switch, ms (QEMU's own default).
const DEFAULT_DOWNTIME_MS: u32 = 300;
/// The pause a move aims for first, ms. QEMU switches over as soon as it
/// expects the rest to fit in its limit, and the rest then goes at the
/// stream's real (TLS) speed, so the limit must sit well below the pause one
/// wants: with 100 ms an idle guest paused for 50-60 ms, with 25 ms for 5-15.
const FIRST_DOWNTIME_MS: u32 = 25;
/// Dirty-bitmap passes without a switch before the limit is doubled.
const PASSES_PER_STEP: u64 = 4;

/// The downtime limit of a move: it starts low and doubles, up to the
/// allowed maximum, each time the guest dirties memory too fast for the
/// memory copy to converge within it (the way Proxmox VE widens its
/// `migrate_downtime`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DowntimeLadder {
    limit: u32,
    max: u32,
    passes_at_step: u64,
}

impl DowntimeLadder {
    fn new(max: u32) -> Self {
        DowntimeLadder {
            limit: FIRST_DOWNTIME_MS.min(max),
            max,
            passes_at_step: 1,
        }
    }

    /// The new limit to set after `passes` dirty-bitmap passes, if it is
    /// time to widen it.
    fn widen(&mut self, passes: u64) -> Option<u32> {
        if self.limit >= self.max || passes < self.passes_at_step + PASSES_PER_STEP {
            return None;
        }
        self.limit = self.limit.saturating_mul(2).min(self.max);
        self.passes_at_step = passes;
        Some(self.limit)
    }
}
/// Bandwidth cap of the memory stream, bytes/s (QEMU's default is far lower).
const MAX_BANDWIDTH: u64 = 10 << 30;

/// Incoming migrations of this host (it is their target).
#[derive(Default)]
pub(crate) struct Migrations {
    incoming: Mutex<HashMap<String, Incoming>>,
}

struct Incoming {
    vm: VmRecord,
    /// The paused QEMU of a live migration.
    inst: Option<VmInstance>,
    taps: Vec<Option<String>>,
    /// `qemu-nbd` servers of an offline move.
    nbd: Vec<tokio::process::Child>,
    /// Volumes created for the VM (removed if it fails).
    created: Vec<(String, String)>,
    /// The UEFI variables file created for the VM.
    vars: Option<PathBuf>,
}

/// What survives a restart of the target's daemon about an incoming move
/// (`<run>/incoming/<vm id>.json`, written once the target is ready, gone
/// once the move ends here): the QEMU (found again by the VM's id), the
/// `qemu-nbd` servers, and what was created for the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IncomingMarker {
    vm: String,
    live: bool,
    nbd_pids: Vec<u32>,
    created: Vec<(String, String)>,
    vars: Option<PathBuf>,
}

/// One disk whose contents go over the network (not on shared storage).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CopyDisk {
    /// The block node (`disk<i>`, `pflash1` for UEFI variables).
    node: String,
    /// Pool and volume; `None` for the UEFI variables file.
    pool: Option<String>,
    volume: Option<String>,
    size_bytes: u64,
    /// The source file.
    #[serde(skip)]
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prepare {
    vm: VmRecord,
    copy: Vec<CopyDisk>,
    live: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prepared {
    /// NBD server: address and the port of each export (one port for
    /// QEMU's server, one per volume for `qemu-nbd`).
    host: String,
    ports: HashMap<String, u16>,
    /// `tcp:ip:port` of the memory stream (live only).
    migrate_uri: Option<String>,
}

/// What a finished migration measured.
struct Outcome {
    total: Duration,
    downtime_ms: Option<u64>,
    copied_bytes: u64,
}

/// The directories of QEMU TLS credentials made from this host's cluster
/// certificate (`endpoint` `server` or `client`, GnuTLS file names).
pub(crate) fn qemu_tls_dir(inner: &Inner, endpoint: &str) -> Result<PathBuf, CoreError> {
    let (ca, cert, key) = inner.db.store().node_tls_pem().ok_or_else(|| {
        errors::conflict("this host belongs to no cluster: no certificate for the stream")
    })?;
    let dir = inner.cfg.run_dir().join("qemu-tls").join(endpoint);
    write_qemu_tls_dir(dir, endpoint, ca, cert, key)
}

/// Writes a CA, a certificate and its key into `dir` under GnuTLS's file
/// names for `endpoint`; unchanged files are left alone.
fn write_qemu_tls_dir(
    dir: PathBuf,
    endpoint: &str,
    ca: String,
    cert: String,
    key: String,
) -> Result<PathBuf, CoreError> {
    let io = |e: std::io::Error| errors::internal(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let files = [
        ("ca-cert.pem".to_string(), ca, 0o644),
        (format!("{endpoint}-cert.pem"), cert, 0o644),
        (format!("{endpoint}-key.pem"), key, 0o600),
    ];
    for (name, content, mode) in files {
        let path = dir.join(&name);
        if std::fs::read_to_string(&path).is_ok_and(|c| c == content) {
            continue;
        }
        // Whole files only: a QEMU may be reading them.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(content.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
    }
    Ok(dir)
}

/// `--object` of `qemu-nbd` / `qemu-img` for those credentials.
pub(crate) fn tls_object(id: &str, dir: &std::path::Path, endpoint: &str) -> String {
    format!(
        "tls-creds-x509,id={id},dir={},endpoint={endpoint},verify-peer=on",
        dir.display()
    )
}

/// The name in host `node_id`'s certificate, checked by TLS clients.
pub(crate) fn tls_name(node_id: u64) -> String {
    nasvisor_cluster::node_name(node_id)
}

/// The distinguished name of host `node_id`'s certificate as GnuTLS prints
/// it (in the certificate's order, CN then O, as `ca.rs` issues it): what a
/// QEMU TLS server's `authz-simple` compares with its client's certificate.
/// A stream server admits only the member that asked for it, so a removed
/// host (or any other) is refused even with a certificate of the cluster's
/// CA.
pub(crate) fn tls_identity(node_id: u64) -> String {
    format!("CN={},O=nasvisor", tls_name(node_id))
}

/// The TLS arguments of a `qemu-nbd` that serves only host `client`, with
/// the server credentials in `dir`.
fn nbd_server_tls_args(dir: &std::path::Path, client: u64) -> Vec<String> {
    vec![
        "--object".into(),
        tls_object("nvtls", dir, "server"),
        "--object".into(),
        // Commas in an option value are doubled.
        format!(
            "authz-simple,id=nvauthz,identity={}",
            tls_identity(client).replace(',', ",,")
        ),
        "--tls-creds".into(),
        "nvtls".into(),
        "--tls-authz".into(),
        "nvauthz".into(),
    ]
}

/// What a TLS client of a stream adds: `--object` arguments and NBD
/// options (empty when `migration-tls` is off).
pub(crate) struct TlsClient {
    pub args: Vec<String>,
    pub opts: String,
}

impl Inner {
    /// The client side of a stream to host `peer`; `prefix` goes before the
    /// NBD options (`file.` when NBD is the protocol under a format).
    pub(crate) fn tls_client(&self, prefix: &str, peer: u64) -> Result<TlsClient, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(TlsClient {
                args: Vec::new(),
                opts: String::new(),
            });
        }
        let dir = qemu_tls_dir(self, "client")?;
        Ok(TlsClient {
            args: vec!["--object".into(), tls_object("nvtls", &dir, "client")],
            opts: format!(
                ",{prefix}tls-creds=nvtls,{prefix}tls-hostname={}",
                tls_name(peer)
            ),
        })
    }

    /// The arguments of a `qemu-nbd` serving host `client` over TLS, and
    /// only that host (none when off).
    pub(crate) fn tls_server_args(&self, client: u64) -> Result<Vec<String>, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(Vec::new());
        }
        let dir = qemu_tls_dir(self, "server")?;
        Ok(nbd_server_tls_args(&dir, client))
    }
}

/// A QMP `object-add` of TLS credentials (ignored when it exists).
async fn add_tls_object(
    qmp: &nasvisor_vm::QmpClient,
    id: &str,
    dir: &std::path::Path,
    endpoint: &str,
) -> Result<(), String> {
    let r = qmp
        .execute(
            "object-add",
            Some(json!({
                "qom-type": "tls-creds-x509", "id": id, "dir": dir.to_string_lossy(),
                "endpoint": endpoint, "verify-peer": true,
            })),
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("already") || e.to_string().contains("duplicate") => {
            Ok(())
        }
        Err(e) => Err(format!("TLS credentials: {e}")),
    }
}

/// A port on `ip` that was free a moment ago.
pub(crate) fn free_port(ip: &str) -> Result<u16, CoreError> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| errors::internal(format!("no free port on {ip}: {e}")))
}

impl Inner {
    /// The IP of this host's cluster address.
    fn cluster_ip(&self) -> Result<String, CoreError> {
        crate::parse_listen(&self.cfg.cluster_address).map(|a| a.ip().to_string())
    }

    /// `POST /vms/{id}/migrate` on the VM's host: checks, then the job.
    pub(crate) async fn migrate_vm(
        self: &Arc<Self>,
        id: &str,
        req: VmMigrate,
    ) -> Result<Value, CoreError> {
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
        let live = lock(&self.running).contains_key(&vm.id);
        if live {
            // Room on the target (the VM's memory is not counted there yet).
            self.place_excluding(&vm, Some(&target.id), &[]).await?;
        }
        let copy = self.disks_to_copy(&vm, &target)?;
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
        let params = json!({
            "vm": vm.id, "from": self.host.id, "to": target.id, "live": live,
            "copied_disks": copy.iter().map(|c| c.node.clone()).collect::<Vec<_>>(),
            // What a restart after the switch must remove here.
            "copies": copy,
        });
        let (job, ctx) = match self
            .job_start("migrate", Some(format!("vm/{}", vm.name)), params)
            .await
        {
            Ok(j) => j,
            Err(e) => {
                self.restore_after_failed_move(&vm, before).await;
                return Err(e);
            }
        };
        drop(_g);
        let me = self.clone();
        tokio::spawn(async move {
            let r = if live {
                me.migrate_live(&ctx, &vm, &target, &copy, downtime).await
            } else {
                me.move_offline(&ctx, &vm, &target, &copy).await
            };
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
        Ok(job.to_json())
    }

    async fn restore_after_failed_move(&self, vm: &VmRecord, before: VmStatus) {
        let running = lock(&self.running).get(&vm.id).map(|r| r.inst.state());
        let state = match running {
            Some(nasvisor_vm::VmState::Paused) => VmStatus::Paused,
            Some(s) if !s.is_exited() => VmStatus::Running,
            _ => before,
        };
        let _ = self
            .db
            .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                if v.state == VmStatus::Migrating && v.host.as_deref() == Some(&self.host.id) {
                    v.state = state;
                    v.state_reason = None;
                }
                Ok(())
            })
            .await;
    }

    /// The disks of `vm` whose contents must travel to `target`; refuses a
    /// move the target cannot take.
    fn disks_to_copy(
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
            let pool = self.pool(&d.pool, &field)?;
            let info = pool
                .volume(&d.volume)
                .map_err(|e| errors::storage(&field, e))?;
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

    async fn migrate_live(
        self: &Arc<Self>,
        ctx: &JobCtx,
        vm: &VmRecord,
        target: &HostRecord,
        copy: &[CopyDisk],
        downtime_ms: u32,
    ) -> Result<Outcome, JobFailure> {
        let started = Instant::now();
        let inst = self
            .instance(vm)
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        ctx.progress(0.0, Some(&format!("preparing host {}", target.id)));
        let prepared: Prepared = self
            .peer_prepare(target, vm, copy, true)
            .await
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        let r = self
            .live_transfer(ctx, &inst, &prepared, copy, downtime_ms, target.node_id)
            .await;
        let (info, copied) = match r {
            Ok(v) => v,
            Err(e) => {
                let nodes: Vec<String> = copy.iter().map(|c| c.node.clone()).collect();
                self.abort_source(&inst, &nodes).await;
                self.peer_abort(target, vm).await;
                return Err(e);
            }
        };
        // The switch: the log says the target owns the VM, then it resumes.
        ctx.progress(0.99, Some("switching over"));
        if let Err(e) = self.pass_ownership(vm, target, VmStatus::Running).await {
            // Still ours: run on here.
            let _ = inst.resume().await;
            self.peer_abort(target, vm).await;
            return Err(JobFailure::Failed(format!(
                "the cluster did not record the switch ({e}); the VM runs on here"
            )));
        }
        // The source QEMU goes: it is paused and no longer the VM.
        self.retire_source(vm, &inst, copy).await;
        if let Err(e) = self
            .call_host(
                target,
                "migrate-finish",
                json!({ "id": vm.id }),
                PREPARE_TIMEOUT,
            )
            .await
        {
            return Err(JobFailure::Failed(format!(
                "host {} owns the VM but could not resume it: {e}; resume it there",
                target.id
            )));
        }
        Ok(Outcome {
            total: started.elapsed(),
            downtime_ms: info.downtime,
            copied_bytes: copied,
        })
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
                Ok(())
            })
            .await
    }

    /// Mirrors the disks, then migrates the memory. On success the source
    /// guest is paused and every mirror has ended in sync.
    async fn live_transfer(
        &self,
        ctx: &JobCtx,
        inst: &VmInstance,
        prepared: &Prepared,
        copy: &[CopyDisk],
        downtime_ms: u32,
        target_node: u64,
    ) -> Result<(nasvisor_vm::qmp::MigrationInfo, u64), JobFailure> {
        let qmp = inst.qmp();
        let mut events = inst.events();
        let fail =
            |what: &str, e: &dyn std::fmt::Display| JobFailure::Failed(format!("{what}: {e}"));
        let disk_share = if copy.is_empty() { 0.0 } else { 0.5 };
        let tls = self.cfg.migration_tls;
        if tls {
            let tls_dir = qemu_tls_dir(self, "client").map_err(|e| fail("TLS", &e))?;
            add_tls_object(qmp, "nv-tls-client", &tls_dir, "client")
                .await
                .map_err(JobFailure::Failed)?;
        }
        let (creds, peer_name) = match tls {
            true => ("nv-tls-client", tls_name(target_node)),
            false => ("", String::new()),
        };
        for c in copy {
            let port = prepared.ports.get(&c.node).copied().unwrap_or(0);
            let mut nbd = json!({
                "driver": "nbd",
                "node-name": format!("mig-{}", c.node),
                "server": { "type": "inet", "host": prepared.host, "port": port.to_string() },
                "export": c.node,
            });
            if tls {
                nbd["tls-creds"] = creds.into();
                nbd["tls-hostname"] = peer_name.clone().into();
            }
            qmp.blockdev_add(nbd)
                .await
                .map_err(|e| fail(&format!("connecting {} to the target", c.node), &e))?;
            qmp.blockdev_mirror(
                &format!("mig-{}", c.node),
                &c.node,
                &format!("mig-{}", c.node),
                "full",
                None,
            )
            .await
            .map_err(|e| fail(&format!("mirroring {}", c.node), &e))?;
        }
        // Disks in sync.
        let mut copied = 0;
        loop {
            if ctx.is_cancelled() {
                return Err(JobFailure::Cancelled);
            }
            if copy.is_empty() {
                break;
            }
            let jobs = qmp
                .execute("query-block-jobs", None)
                .await
                .map_err(|e| fail("query-block-jobs", &e))?;
            let ours: Vec<&Value> = jobs
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|j| j["device"].as_str().is_some_and(|d| d.starts_with("mig-")))
                        .collect()
                })
                .unwrap_or_default();
            if ours.len() < copy.len() {
                // Why: the job's completion event carries the error.
                let mut why = String::from("no reason reported");
                while let Ok(ev) = events.try_recv() {
                    match ev.kind() {
                        nasvisor_vm::EventKind::BlockJobCompleted {
                            error: Some(e),
                            device,
                            ..
                        } => why = format!("{device}: {e}"),
                        nasvisor_vm::EventKind::BlockJobError {
                            device, operation, ..
                        } => why = format!("{device}: {operation} error"),
                        _ => {}
                    }
                }
                return Err(JobFailure::Failed(format!(
                    "a disk mirror ended before it was in sync ({why})"
                )));
            }
            let len: u64 = ours.iter().map(|j| j["len"].as_u64().unwrap_or(0)).sum();
            let done: u64 = ours.iter().map(|j| j["offset"].as_u64().unwrap_or(0)).sum();
            copied = done;
            let frac = if len == 0 {
                1.0
            } else {
                done as f64 / len as f64
            };
            ctx.progress(
                frac * disk_share,
                Some(&format!(
                    "disks: {} of {} MiB copied",
                    done >> 20,
                    len >> 20
                )),
            );
            if ours.iter().all(|j| j["ready"].as_bool() == Some(true)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Memory.
        let uri = prepared
            .migrate_uri
            .clone()
            .ok_or_else(|| JobFailure::Failed("the target gave no migration address".into()))?;
        qmp.migrate_set_capabilities(&[("events", true)])
            .await
            .map_err(|e| fail("migrate-set-capabilities", &e))?;
        let mut ladder = DowntimeLadder::new(downtime_ms);
        qmp.migrate_set_parameters(json!({
            "downtime-limit": ladder.limit,
            "max-bandwidth": MAX_BANDWIDTH,
            "tls-creds": creds,
            "tls-hostname": peer_name,
        }))
        .await
        .map_err(|e| fail("migrate-set-parameters", &e))?;
        qmp.migrate(&uri).await.map_err(|e| fail("migrate", &e))?;
        let info = loop {
            if ctx.is_cancelled() {
                let _ = qmp.migrate_cancel().await;
                return Err(JobFailure::Cancelled);
            }
            let info = qmp
                .query_migrate()
                .await
                .map_err(|e| fail("query-migrate", &e))?;
            match info.status.as_deref() {
                Some("completed") => break info,
                Some("failed") | Some("cancelled") => {
                    return Err(JobFailure::Failed(format!(
                        "the memory migration {}: {}",
                        info.status.as_deref().unwrap_or("failed"),
                        info.error_desc.as_deref().unwrap_or("no reason given")
                    )))
                }
                _ => {
                    if let Some(ram) = &info.ram {
                        if let Some(limit) = ladder.widen(ram.dirty_sync_count) {
                            tracing::info!(vm = %inst.id(), limit, "memory not converging: downtime limit raised");
                            qmp.migrate_set_parameters(json!({ "downtime-limit": limit }))
                                .await
                                .map_err(|e| fail("migrate-set-parameters", &e))?;
                        }
                        let frac = if ram.total == 0 {
                            0.0
                        } else {
                            (ram.total - ram.remaining.min(ram.total)) as f64 / ram.total as f64
                        };
                        let left_s = if ram.mbps > 0.0 {
                            ram.remaining as f64 * 8.0 / (ram.mbps * 1e6)
                        } else {
                            0.0
                        };
                        ctx.progress(
                            disk_share + frac * (0.98 - disk_share),
                            Some(&format!(
                                "memory: {} of {} MiB, about {:.0} s left",
                                ram.transferred >> 20,
                                ram.total >> 20,
                                left_s.ceil()
                            )),
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The guest is paused: end the mirrors in sync (a ready mirror
        // cancelled completes without pivoting).
        for c in copy {
            let job = format!("mig-{}", c.node);
            if let Err(e) = qmp.block_job_cancel(&job, false).await {
                return Err(fail(&format!("ending the mirror of {}", c.node), &e));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = qmp
                .execute("query-block-jobs", None)
                .await
                .map_err(|e| fail("query-block-jobs", &e))?;
            let left = jobs
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|j| j["device"].as_str().is_some_and(|d| d.starts_with("mig-")))
                        .count()
                })
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(JobFailure::Failed(
                    "the disk mirrors did not end within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((info, copied))
    }

    /// Undoes the source's side of a failed live migration; the guest runs
    /// on.
    async fn abort_source(&self, inst: &VmInstance, nodes: &[String]) {
        let qmp = inst.qmp();
        let _ = qmp.migrate_cancel().await;
        for node in nodes {
            let _ = qmp.block_job_cancel(&format!("mig-{node}"), true).await;
        }
        // Give the cancelled jobs a moment, then drop the NBD clients.
        for _ in 0..50 {
            let busy = qmp
                .execute("query-block-jobs", None)
                .await
                .ok()
                .and_then(|j| j.as_array().map(|a| !a.is_empty()))
                .unwrap_or(false);
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for node in nodes {
            let _ = qmp.blockdev_del(&format!("mig-{node}")).await;
        }
        if matches!(
            qmp.query_status().await.map(|s| s.status),
            Ok(nasvisor_vm::qmp::RunState::Postmigrate)
        ) {
            let _ = inst.resume().await;
        }
    }

    /// After a restart of this daemon, a move job it was running: the VM is
    /// set right and the reason returned (the job is marked failed).
    pub(crate) async fn recover_migrate_job(
        self: &Arc<Self>,
        job: &crate::model::JobRecord,
    ) -> String {
        let Some(vm) = job.params["vm"]
            .as_str()
            .and_then(|id| self.db.get::<VmRecord>(kind::VM, id))
            .map(|(v, _)| v)
        else {
            return "interrupted by a restart of nasvisord; the VM no longer exists".into();
        };
        if vm.host.as_deref() == Some(self.host.id.as_str()) {
            // Not switched: the VM stays here (running if its QEMU is).
            self.restore_after_failed_move(&vm, VmStatus::Stopped).await;
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
            let _ = inst.kill().await;
            self.remove_taps(&vm);
        }
        let mut copies: Vec<CopyDisk> =
            serde_json::from_value(job.params["copies"].clone()).unwrap_or_default();
        for c in copies.iter_mut().filter(|c| c.pool.is_none()) {
            c.path = self.cfg.nvram_dir().join(format!("{}.fd", vm.id));
        }
        self.remove_copies(&copies);
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
        let migrating = qmp
            .query_migrate()
            .await
            .ok()
            .and_then(|i| i.status)
            .is_some_and(|s| !matches!(s.as_str(), "none" | "completed" | "cancelled" | "failed"));
        let paused_by_move = matches!(
            qmp.query_status().await.map(|s| s.status),
            Ok(nasvisor_vm::qmp::RunState::Postmigrate)
        );
        let nodes: Vec<String> = qmp
            .execute("query-named-block-nodes", Some(json!({ "flat": true })))
            .await
            .ok()
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|n| n["node-name"].as_str())
                        .filter_map(|n| n.strip_prefix("mig-"))
                        .map(str::to_string)
                        .collect()
                })
            })
            .unwrap_or_default();
        if !migrating && !paused_by_move && nodes.is_empty() {
            return;
        }
        tracing::warn!(vm = %vm.name, "a move was being sent when nasvisord stopped: cancelled, the VM stays here");
        self.abort_source(inst, &nodes).await;
        let me = self.clone();
        let id = vm.id.clone();
        tokio::spawn(async move {
            // The cluster channel may not be up yet; the targets are tried
            // for a while.
            let mut left: Vec<HostRecord> = me
                .db
                .list::<HostRecord>(kind::HOST)
                .into_iter()
                .filter(|h| h.id != me.host.id)
                .collect();
            for _ in 0..30 {
                let mut still = Vec::new();
                for h in left {
                    let r = me
                        .call_host(
                            &h,
                            "migrate-abort",
                            json!({ "id": id }),
                            Duration::from_secs(10),
                        )
                        .await;
                    if r.is_err() {
                        still.push(h);
                    }
                }
                left = still;
                if left.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// After the switch: the source's QEMU, taps and disk copies go. The
    /// guest is paused; what it printed last is read off the console first.
    async fn retire_source(&self, vm: &VmRecord, inst: &VmInstance, copy: &[CopyDisk]) {
        if let Some(console) = inst.console() {
            let mut last: Option<Vec<u8>> = None;
            for _ in 0..20 {
                let now = console.read_log().await.unwrap_or_default();
                if last.as_ref() == Some(&now) {
                    break;
                }
                last = Some(now);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        lock(&self.running).remove(&vm.id);
        let _ = inst.kill().await;
        self.remove_taps(vm);
        self.remove_copies(copy);
    }

    fn remove_copies(&self, copy: &[CopyDisk]) {
        for c in copy {
            match (&c.pool, &c.volume) {
                (Some(p), Some(v)) => {
                    if let Ok(pool) = self.pool(p, "pool") {
                        if let Err(e) = pool.delete(v) {
                            tracing::warn!(pool = %p, volume = %v, error = %e, "cannot remove the source copy of a moved volume");
                        }
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(&c.path);
                }
            }
        }
    }

    async fn move_offline(
        self: &Arc<Self>,
        ctx: &JobCtx,
        vm: &VmRecord,
        target: &HostRecord,
        copy: &[CopyDisk],
    ) -> Result<Outcome, JobFailure> {
        let started = Instant::now();
        let prepared = if copy.is_empty() {
            None
        } else {
            ctx.progress(0.0, Some(&format!("preparing host {}", target.id)));
            Some(
                self.peer_prepare(target, vm, copy, false)
                    .await
                    .map_err(|e| JobFailure::Failed(e.to_string()))?,
            )
        };
        let total: u64 = copy.iter().map(|c| c.size_bytes).sum::<u64>().max(1);
        let mut done = 0;
        for c in copy {
            let p = prepared
                .as_ref()
                .expect("prepared when there is something to copy");
            ctx.progress(
                done as f64 / total as f64 * 0.95,
                Some(&format!("copying {} ({} MiB)", c.node, c.size_bytes >> 20)),
            );
            let port = p.ports.get(&c.node).copied().unwrap_or(0);
            let fmt = if c.pool.is_some() { "qcow2" } else { "raw" };
            let tls = self
                .tls_client("", target.node_id)
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
            let r = run_qemu_img(&ctx.cancel, &args).await;
            if let Err(e) = r {
                self.peer_abort(target, vm).await;
                return Err(e);
            }
            done += c.size_bytes;
        }
        if let Err(e) = self.pass_ownership(vm, target, VmStatus::Stopped).await {
            self.peer_abort(target, vm).await;
            return Err(JobFailure::Failed(format!(
                "the cluster did not record the move: {e}"
            )));
        }
        if prepared.is_some() {
            if let Err(e) = self
                .call_host(
                    target,
                    "migrate-finish",
                    json!({ "id": vm.id }),
                    PREPARE_TIMEOUT,
                )
                .await
            {
                tracing::warn!(vm = %vm.name, error = %e, "the target could not close its copy servers");
            }
        }
        self.remove_copies(copy);
        Ok(Outcome {
            total: started.elapsed(),
            downtime_ms: None,
            copied_bytes: copy.iter().map(|c| c.size_bytes).sum(),
        })
    }

    async fn peer_prepare(
        &self,
        target: &HostRecord,
        vm: &VmRecord,
        copy: &[CopyDisk],
        live: bool,
    ) -> Result<Prepared, CoreError> {
        let body = serde_json::to_value(Prepare {
            vm: vm.clone(),
            copy: copy.to_vec(),
            live,
        })
        .map_err(errors::internal)?;
        let v = self
            .call_host(target, "migrate-prepare", body, PREPARE_TIMEOUT)
            .await?;
        serde_json::from_value(v).map_err(errors::internal)
    }

    async fn peer_abort(&self, target: &HostRecord, vm: &VmRecord) {
        if let Err(e) = self
            .call_host(
                target,
                "migrate-abort",
                json!({ "id": vm.id }),
                PREPARE_TIMEOUT,
            )
            .await
        {
            tracing::warn!(vm = %vm.name, host = %target.id, error = %e, "the target could not clean up an aborted migration");
        }
    }

    // ---- the target's side ----

    /// Peer methods of the target; `from` is the member that called (its
    /// certificate was checked by the peer channel).
    pub(crate) async fn on_migrate_peer(
        self: &Arc<Self>,
        from: u64,
        method: &str,
        body: Value,
    ) -> Result<Value, CoreError> {
        match method {
            "migrate-prepare" => {
                let p: Prepare = serde_json::from_value(body).map_err(errors::internal)?;
                let prepared = self.prepare_incoming(from, p).await?;
                serde_json::to_value(prepared).map_err(errors::internal)
            }
            "migrate-finish" => {
                let id = body["id"].as_str().unwrap_or_default().to_string();
                self.finish_incoming(&id).await?;
                Ok(Value::Null)
            }
            "migrate-abort" => {
                let id = body["id"].as_str().unwrap_or_default().to_string();
                self.abort_incoming(&id).await;
                Ok(Value::Null)
            }
            other => Err(errors::invalid(
                "method",
                format!("no peer method {other:?}"),
            )),
        }
    }

    async fn prepare_incoming(
        self: &Arc<Self>,
        source: u64,
        p: Prepare,
    ) -> Result<Prepared, CoreError> {
        let vm = p.vm;
        if lock(&self.migrations.incoming).contains_key(&vm.id)
            || lock(&self.running).contains_key(&vm.id)
        {
            return Err(errors::conflict(format!(
                "VM {} is already arriving on or running on host {}",
                vm.name, self.host.id
            )));
        }
        let ip = self.cluster_ip()?;
        let mut inc = Incoming {
            vm: vm.clone(),
            inst: None,
            taps: Vec::new(),
            nbd: Vec::new(),
            created: Vec::new(),
            vars: None,
        };
        let r = self
            .prepare_incoming_inner(source, &p.copy, p.live, &ip, &mut inc)
            .await;
        match r {
            Ok(prepared) => {
                let marker = IncomingMarker {
                    vm: vm.id.clone(),
                    live: p.live,
                    nbd_pids: inc.nbd.iter().filter_map(|c| c.id()).collect(),
                    created: inc.created.clone(),
                    vars: inc.vars.clone(),
                };
                if let Err(e) = self.write_incoming_marker(&marker) {
                    self.discard_incoming(inc).await;
                    return Err(e);
                }
                lock(&self.migrations.incoming).insert(vm.id.clone(), inc);
                Ok(prepared)
            }
            Err(e) => {
                self.discard_incoming(inc).await;
                Err(e)
            }
        }
    }

    async fn prepare_incoming_inner(
        self: &Arc<Self>,
        source: u64,
        copy: &[CopyDisk],
        live: bool,
        ip: &str,
        inc: &mut Incoming,
    ) -> Result<Prepared, CoreError> {
        let vm = inc.vm.clone();
        // The volumes, empty, of the source's sizes.
        let mut paths = HashMap::new();
        for c in copy {
            match (&c.pool, &c.volume) {
                (Some(pool_name), Some(vol)) => {
                    let rec = self
                        .pool_record(pool_name)
                        .filter(|p| !p.shared())
                        .ok_or_else(|| {
                            errors::conflict(format!(
                                "host {} has no pool {pool_name}",
                                self.host.id
                            ))
                        })?;
                    let pool = self.pool(&rec.name, "pool")?;
                    let info = pool
                        .create(vol, c.size_bytes)
                        .map_err(|e| errors::storage("volume", e))?;
                    inc.created.push((pool_name.clone(), vol.clone()));
                    paths.insert(c.node.clone(), (info.path, "qcow2"));
                }
                _ => {
                    let vars = self.cfg.nvram_dir().join(format!("{}.fd", vm.id));
                    let f = std::fs::File::create(&vars)
                        .and_then(|f| f.set_len(c.size_bytes).map(|_| f))
                        .map_err(|e| errors::internal(format!("{}: {e}", vars.display())))?;
                    drop(f);
                    inc.vars = Some(vars.clone());
                    paths.insert(c.node.clone(), (vars, "raw"));
                }
            }
        }
        if !live {
            // One qemu-nbd per volume, TLS with the cluster's certificates.
            let tls = self.tls_server_args(source)?;
            let mut ports = HashMap::new();
            for c in copy {
                let (path, fmt) = &paths[&c.node];
                let port = free_port(ip)?;
                let mut cmd = tokio::process::Command::new("qemu-nbd");
                cmd.args(&tls)
                    .args(["--persistent", "--cache=writeback", "-f", fmt, "-b", ip])
                    .args(["-p", &port.to_string(), "-x", &c.node])
                    .arg(path)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                let mut child = cmd
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| errors::internal(format!("qemu-nbd does not start: {e}")))?;
                let up = wait_listening(&mut child, ip, port).await;
                inc.nbd.push(child);
                up?;
                ports.insert(c.node.clone(), port);
            }
            return Ok(Prepared {
                host: ip.to_string(),
                ports,
                migrate_uri: None,
            });
        }
        // A paused QEMU waiting for the memory stream.
        let (spec, taps) = self.build_spec(&vm)?;
        inc.taps = taps;
        let mut opts = LaunchOptions::new(self.cfg.run_dir(), self.accel);
        opts.qemu_binary = self.cfg.qemu_binary.clone();
        opts.incoming_defer = true;
        if self.cfg.netns.is_some() {
            let net = self.net.clone();
            opts.spawn_hook = Some(SpawnHook(Arc::new(move |cmd| {
                net.enter_on_spawn(cmd).map_err(std::io::Error::other)
            })));
        }
        let inst = VmInstance::launch(&spec, &opts, self.instance_options())
            .await
            .map_err(|e| {
                errors::internal(format!("QEMU did not start as a migration target: {e}"))
            })?;
        inc.inst = Some(inst.clone());
        let qmp = inst.qmp();
        // TLS, admitting only the source's certificate.
        let (creds, authz) = if self.cfg.migration_tls {
            let tls_dir = qemu_tls_dir(self, "server")?;
            add_tls_object(qmp, "nv-tls-server", &tls_dir, "server")
                .await
                .map_err(errors::internal)?;
            qmp.execute(
                "object-add",
                Some(json!({
                    "qom-type": "authz-simple", "id": "nv-authz",
                    "identity": tls_identity(source),
                })),
            )
            .await
            .map_err(|e| errors::internal(format!("TLS authorization: {e}")))?;
            ("nv-tls-server", "nv-authz")
        } else {
            ("", "")
        };
        let mut ports = HashMap::new();
        if !copy.is_empty() {
            let port = free_port(ip)?;
            let mut args = json!({
                "addr": { "type": "inet", "data": { "host": ip, "port": port.to_string() } },
            });
            if !creds.is_empty() {
                args["tls-creds"] = creds.into();
                args["tls-authz"] = authz.into();
            }
            qmp.execute("nbd-server-start", Some(args))
                .await
                .map_err(|e| errors::internal(format!("nbd-server-start: {e}")))?;
            for c in copy {
                qmp.execute(
                    "block-export-add",
                    Some(json!({
                        "type": "nbd", "id": format!("mig-{}", c.node), "node-name": c.node,
                        "name": c.node, "writable": true,
                    })),
                )
                .await
                .map_err(|e| errors::internal(format!("exporting {}: {e}", c.node)))?;
                ports.insert(c.node.clone(), port);
            }
        }
        let mport = free_port(ip)?;
        let uri = format!("tcp:{ip}:{mport}");
        qmp.migrate_set_capabilities(&[("events", true)])
            .await
            .map_err(|e| errors::internal(format!("migrate-set-capabilities: {e}")))?;
        qmp.migrate_set_parameters(json!({ "tls-creds": creds, "tls-authz": authz }))
            .await
            .map_err(|e| errors::internal(format!("migrate-set-parameters: {e}")))?;
        qmp.migrate_incoming(&uri)
            .await
            .map_err(|e| errors::internal(format!("migrate-incoming: {e}")))?;
        Ok(Prepared {
            host: ip.to_string(),
            ports,
            migrate_uri: Some(uri),
        })
    }

    /// The log says this host owns the VM: resume it (live) or close the
    /// copy servers (offline).
    async fn finish_incoming(self: &Arc<Self>, id: &str) -> Result<(), CoreError> {
        let inc = lock(&self.migrations.incoming).remove(id);
        let Some(mut inc) = inc else {
            return Err(errors::not_found(format!("incoming migration of VM {id}")));
        };
        for mut child in inc.nbd.drain(..) {
            stop_child(&mut child).await;
        }
        let Some(inst) = inc.inst.take() else {
            self.remove_incoming_marker(id);
            return Ok(());
        };
        let qmp = inst.qmp();
        let _ = qmp.execute("nbd-server-stop", None).await;
        // The memory must have arrived.
        inst.wait_incoming_loaded(Duration::from_secs(30))
            .await
            .map_err(|e| {
                errors::internal(format!("the memory stream never completed here: {e}"))
            })?;
        inst.resume()
            .await
            .map_err(|e| errors::internal(format!("resuming the guest: {e}")))?;
        lock(&self.running).insert(
            id.to_string(),
            Running {
                inst: inst.clone(),
                taps: inc.taps.clone(),
                accel: self.accel,
            },
        );
        self.spawn_monitor(id.to_string(), inst);
        self.remove_incoming_marker(id);
        Ok(())
    }

    async fn abort_incoming(&self, id: &str) {
        let inc = lock(&self.migrations.incoming).remove(id);
        if let Some(inc) = inc {
            self.discard_incoming(inc).await;
        }
    }

    async fn discard_incoming(&self, mut inc: Incoming) {
        for mut child in inc.nbd.drain(..) {
            stop_child(&mut child).await;
        }
        self.remove_incoming_marker(&inc.vm.id);
        if let Some(inst) = inc.inst.take() {
            let _ = inst.kill().await;
            self.remove_taps(&inc.vm);
        }
        self.remove_created(&inc.created, inc.vars.as_deref());
    }

    /// Removes the volumes and the UEFI variables file created for an
    /// incoming move that did not happen.
    fn remove_created(&self, created: &[(String, String)], vars: Option<&std::path::Path>) {
        for (pool, vol) in created {
            if let Ok(p) = self.pool(pool, "pool") {
                let _ = p.delete(vol);
            }
        }
        if let Some(v) = vars {
            let _ = std::fs::remove_file(v);
        }
    }
}

impl Inner {
    fn incoming_dir(&self) -> PathBuf {
        self.cfg.run_dir().join("incoming")
    }

    fn write_incoming_marker(&self, m: &IncomingMarker) -> Result<(), CoreError> {
        let dir = self.incoming_dir();
        let io = |e: std::io::Error| errors::internal(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", m.vm));
        let body = serde_json::to_vec(m).map_err(errors::internal)?;
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, dir.join(format!("{}.json", m.vm))).map_err(io)
    }

    pub(crate) fn remove_incoming_marker(&self, id: &str) {
        let _ = std::fs::remove_file(self.incoming_dir().join(format!("{id}.json")));
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
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let marker: IncomingMarker = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable incoming-move marker dropped");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
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
                            let _ = inst.kill().await;
                        }
                    }
                }
            } else {
                if let Ok(inst) = inst {
                    let _ = inst.kill().await;
                }
                if let Some(v) = &vm {
                    self.remove_taps(v);
                }
                self.remove_created(&marker.created, marker.vars.as_deref());
                tracing::info!(vm = %marker.vm, "an unfinished incoming move was cleaned up");
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// SIGTERM to a `qemu-nbd` left by an earlier run of this daemon, if `pid`
/// still is one (pids are checked, never names).
fn stop_orphan_nbd(pid: u32) {
    let is_nbd = nasvisor_vm::proc::cmdline(pid as i32).is_ok_and(|args| {
        args.first()
            .and_then(|a| std::path::Path::new(a).file_name())
            .is_some_and(|n| n == "qemu-nbd")
    });
    if is_nbd {
        // SAFETY: kill(2) with a pid just checked to be a qemu-nbd; the only
        // qemu-nbd servers on this host's cluster address are nasvisord's.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

/// Waits until `child` (qemu-nbd starting) listens on `ip:port`; its error
/// output when it exits instead.
pub(crate) async fn wait_listening(
    child: &mut tokio::process::Child,
    ip: &str,
    port: u16,
) -> Result<(), CoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect((ip, port)).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let mut msg = String::new();
            if let Some(e) = child.stderr.as_mut() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut msg).await;
            }
            return Err(errors::internal(format!(
                "qemu-nbd exited ({st}): {}",
                msg.trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(errors::internal(format!(
                "qemu-nbd did not listen on {ip}:{port} within 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM (qemu-nbd flushes and exits), SIGKILL after 10 s.
pub(crate) async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of our own child, not reaped yet (we
        // hold its handle), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Runs `qemu-img` with `args`; cancellable (stopped by its pid). A
/// failure carries qemu-img's message.
pub(crate) async fn run_qemu_img(
    cancel: &tokio_util::sync::CancellationToken,
    args: &[&str],
) -> Result<(), JobFailure> {
    let mut child = tokio::process::Command::new("qemu-img")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobFailure::Failed(format!("qemu-img does not start: {e}")))?;
    let mut stderr = child.stderr.take();
    tokio::select! {
        st = child.wait() => {
            let st = st.map_err(|e| JobFailure::Failed(format!("qemu-img: {e}")))?;
            if st.success() {
                Ok(())
            } else {
                let mut msg = String::new();
                if let Some(s) = stderr.as_mut() {
                    use tokio::io::AsyncReadExt;
                    let _ = s.read_to_string(&mut msg).await;
                }
                Err(JobFailure::Failed(format!("qemu-img {}: {}", args.first().unwrap_or(&""), msg.trim())))
            }
        }
        _ = cancel.cancelled() => {
            stop_child(&mut child).await;
            Err(JobFailure::Cancelled)
        }
    }
}

/// Evacuation: cordon, then move every running VM away, one after the
/// other, to hosts the scheduler picks.
impl Inner {
    pub(crate) async fn evacuate(self: &Arc<Self>, host: &str) -> Result<Value, CoreError> {
        self.set_cordon(host, true).await?;
        let vms: Vec<VmRecord> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.host.as_deref() == Some(host) && lock(&self.running).contains_key(&v.id))
            .collect();
        let (job, ctx) = self
            .job_start(
                "evacuate",
                Some(format!("host/{host}")),
                json!({ "host": host, "vms": vms.iter().map(|v| v.name.clone()).collect::<Vec<_>>() }),
            )
            .await?;
        let me = self.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            let n = vms.len().max(1);
            let mut moved = Vec::new();
            let mut failed = Vec::new();
            for (i, vm) in vms.iter().enumerate() {
                if ctx.is_cancelled() {
                    break;
                }
                ctx.progress(i as f64 / n as f64, Some(&format!("moving VM {}", vm.name)));
                let r = async {
                    let target = me.place_excluding(vm, None, &[host.as_str()]).await?;
                    let job = me
                        .migrate_vm(
                            &vm.id,
                            VmMigrate {
                                host: target.clone(),
                                max_downtime_ms: None,
                            },
                        )
                        .await?;
                    let id = job["id"].as_str().unwrap_or_default().to_string();
                    me.wait_job_end(&id, &ctx).await?;
                    Ok::<String, CoreError>(target)
                }
                .await;
                match r {
                    Ok(t) => moved.push(format!("{} → {t}", vm.name)),
                    Err(e) => failed.push(format!("{}: {e}", vm.name)),
                }
            }
            let outcome = if ctx.is_cancelled() {
                Err(JobFailure::Cancelled)
            } else if failed.is_empty() {
                Ok(format!(
                    "host {host} evacuated: {}",
                    if moved.is_empty() {
                        "no running VMs".into()
                    } else {
                        moved.join(", ")
                    }
                ))
            } else {
                Err(JobFailure::Failed(format!(
                    "not moved: {}",
                    failed.join("; ")
                )))
            };
            me.job_finish(&ctx, outcome).await;
        });
        Ok(job.to_json())
    }

    /// Waits for job `id` to end; its error if it did not succeed.
    async fn wait_job_end(&self, id: &str, outer: &JobCtx) -> Result<(), CoreError> {
        loop {
            if outer.is_cancelled() {
                if let Some(t) = lock(&self.jobs).get(id) {
                    t.cancel();
                }
            }
            match self.db.get::<crate::model::JobRecord>(kind::JOB, id) {
                Some((j, _)) if j.state.is_final() => {
                    return match j.state {
                        crate::model::JobState::Succeeded => Ok(()),
                        _ => Err(errors::conflict(j.error.unwrap_or_else(|| "failed".into()))),
                    };
                }
                None => return Err(errors::not_found(format!("job {id}"))),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downtime_limit_starts_low_and_doubles_up_to_the_maximum() {
        let mut l = DowntimeLadder::new(300);
        assert_eq!(l.limit, FIRST_DOWNTIME_MS);
        // The first copy and a few passes: converging may take a while.
        for passes in 1..1 + PASSES_PER_STEP {
            assert_eq!(l.widen(passes), None, "pass {passes}");
        }
        assert_eq!(l.widen(1 + PASSES_PER_STEP), Some(50));
        assert_eq!(l.widen(2 + PASSES_PER_STEP), None);
        assert_eq!(l.widen(1 + 2 * PASSES_PER_STEP), Some(100));
        assert_eq!(l.widen(1 + 3 * PASSES_PER_STEP), Some(200));
        assert_eq!(l.widen(1 + 4 * PASSES_PER_STEP), Some(300));
        assert_eq!(l.widen(1 + 9 * PASSES_PER_STEP), None, "capped");
    }

    /// Real `qemu-nbd` and `qemu-img` with certificates of one cluster CA:
    /// the stream server admits the member it serves and refuses another.
    #[tokio::test]
    async fn a_stream_server_admits_only_the_member_it_serves() {
        use nasvisor_cluster_net::ca::{new_node_key, ClusterCa};
        let tmp = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("authz-test").unwrap();
        let node = |id: u64, endpoint: &str| {
            let (key, csr) = new_node_key().unwrap();
            let cert = ca.issue(id, "127.0.0.1:1", &csr).unwrap();
            write_qemu_tls_dir(
                tmp.path().join(format!("{endpoint}-{id}")),
                endpoint,
                ca.cert_pem().to_string(),
                cert,
                key,
            )
            .unwrap()
        };
        let server = node(1, "server");
        let image = tmp.path().join("v.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap();
        assert!(st.success());
        let port = free_port("127.0.0.1").unwrap();
        let mut child = tokio::process::Command::new("qemu-nbd")
            .args(nbd_server_tls_args(&server, 2))
            .args(["--persistent", "-f", "qcow2", "-b", "127.0.0.1", "-x", "v"])
            .args(["-p", &port.to_string()])
            .arg(&image)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_listening(&mut child, "127.0.0.1", port).await.unwrap();
        let info = |id: u64| {
            let dir = node(id, "client");
            std::process::Command::new("qemu-img")
                .args(["info", "--object", &tls_object("c", &dir, "client")])
                .arg("--image-opts")
                .arg(format!(
                    "driver=nbd,host=127.0.0.1,port={port},export=v,tls-creds=c,tls-hostname={}",
                    tls_name(1)
                ))
                .output()
                .unwrap()
        };
        let served = info(2);
        let other = info(3);
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert!(
            served.status.success(),
            "the member served: {}",
            String::from_utf8_lossy(&served.stderr)
        );
        assert!(
            String::from_utf8_lossy(&served.stdout).contains("virtual size: 16 MiB"),
            "{}",
            String::from_utf8_lossy(&served.stdout)
        );
        assert!(!other.status.success(), "another member was admitted");
    }

    #[test]
    fn a_maximum_below_the_first_step_is_used_as_is() {
        let mut l = DowntimeLadder::new(10);
        assert_eq!(l.limit, 10);
        assert_eq!(l.widen(100), None);
    }
}
