//! The target's side of a move: the peer calls of the source. `prepare`
//! creates the VM's volumes, starts a paused QEMU waiting for the memory
//! stream (live) or `qemu-nbd` servers (offline); `finish` resumes the
//! guest once the log says this host owns it; `abort` drops everything.

use super::{free_port, stop_child, wait_listening, Inner};
use crate::errors;
use crate::lock;
use crate::model::VmRecord;
use crate::vms::Running;
use nasvisor_api_types::peer::{CopyDisk, MigratePrepare, Prepared};
use nasvisor_api_types::CoreError;
use nasvisor_vm::migration::{listen_incoming, serve_disks};
use nasvisor_vm::qmp::InetAddr;
use nasvisor_vm::{LaunchOptions, SpawnHook, VmInstance};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Incoming migrations of this host (it is their target).
#[derive(Default)]
pub(crate) struct Migrations {
    incoming: Mutex<HashMap<String, Incoming>>,
}

impl Migrations {
    /// Whether VM `id` is arriving here.
    pub(crate) fn is_arriving(&self, id: &str) -> bool {
        lock(&self.incoming).contains_key(id)
    }
}

struct Incoming {
    vm: VmRecord,
    /// The paused QEMU of a live migration.
    inst: Option<VmInstance>,
    /// Whether that QEMU serves disks over NBD.
    serves_disks: bool,
    taps: Vec<Option<String>>,
    /// `qemu-nbd` servers of an offline move.
    nbd: Vec<tokio::process::Child>,
    /// Volumes created for the VM (removed if it fails).
    created: Vec<(String, String)>,
    /// The UEFI variables file created for the VM.
    vars: Option<PathBuf>,
}

impl Inner {
    /// `migrate-prepare` from member `source` (its certificate was checked
    /// by the peer channel).
    pub(crate) async fn prepare_incoming(
        self: &Arc<Self>,
        source: u64,
        p: MigratePrepare<VmRecord>,
    ) -> Result<Prepared, CoreError> {
        let vm = p.vm;
        if lock(&self.migrations.incoming).contains_key(&vm.id) || self.processes.contains(&vm.id) {
            return Err(errors::conflict(format!(
                "VM {} is already arriving on or running on host {}",
                vm.name, self.host.id
            )));
        }
        let ip = self.cluster_ip()?;
        let mut inc = Incoming {
            vm: vm.clone(),
            inst: None,
            serves_disks: false,
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
                let marker = super::recovery::IncomingMarker {
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
        // A replica of the VM here (this host was its passive host) gives
        // way: the move writes the volumes of the same names afresh.
        if vm.replica.as_ref().is_some_and(|r| r.host == self.host.id) {
            self.stop_replica_server(&vm.id).await;
            self.delete_replica_volumes(&vm);
        }
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
                    let (v, size) = (vol.clone(), c.size_bytes);
                    let info = self
                        .on_pool(&rec.name, "pool", move |p| {
                            p.create(&v, size).map_err(|e| errors::storage("volume", e))
                        })
                        .await?;
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
        let (spec, taps) = self.build_spec(&vm).await?;
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
        let tls = self.qemu_stream_server(qmp, source).await?;
        let mut ports = HashMap::new();
        if !copy.is_empty() {
            inc.serves_disks = true;
            let port = free_port(ip)?;
            let nodes: Vec<String> = copy.iter().map(|c| c.node.clone()).collect();
            serve_disks(qmp, &InetAddr::new(ip, port), &nodes, tls.as_ref())
                .await
                .map_err(|e| errors::internal(e.to_string()))?;
            for c in copy {
                ports.insert(c.node.clone(), port);
            }
        }
        let mport = free_port(ip)?;
        let uri = format!("tcp:{ip}:{mport}");
        listen_incoming(qmp, &uri, tls.as_ref())
            .await
            .map_err(|e| errors::internal(e.to_string()))?;
        Ok(Prepared {
            host: ip.to_string(),
            ports,
            migrate_uri: Some(uri),
        })
    }

    /// The log says this host owns the VM: resume it (live) or close the
    /// copy servers (offline).
    pub(crate) async fn finish_incoming(self: &Arc<Self>, id: &str) -> Result<(), CoreError> {
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
        // The memory must have arrived.
        let loaded = inst
            .wait_incoming_loaded(Duration::from_secs(30))
            .await
            .map_err(|e| errors::internal(format!("the memory stream never completed here: {e}")));
        // The guest resumes first: every moment until then is downtime. The
        // source's mirrors ended in sync before the switch, so nothing
        // writes through the NBD server any more; it goes after.
        let resumed = match loaded {
            Ok(()) => inst
                .resume()
                .await
                .map_err(|e| errors::internal(format!("resuming the guest: {e}"))),
            Err(e) => Err(e),
        };
        if inc.serves_disks {
            if let Err(e) = inst.qmp().nbd_server_stop().await {
                tracing::warn!(vm = %id, error = %e, "cannot stop the NBD server of an arrived VM");
            }
        }
        resumed?;
        self.processes.insert(
            id,
            Running {
                inst: inst.clone(),
                taps: inc.taps.clone(),
                accel: self.accel,
            },
        );
        self.spawn_monitor(id.to_string(), inst);
        self.write_ha_lease();
        self.remove_incoming_marker(id);
        self.spawn_replica_keeper(id);
        Ok(())
    }

    pub(crate) async fn abort_incoming(&self, id: &str) {
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
            if let Err(e) = inst.kill().await {
                tracing::warn!(vm = %inc.vm.name, error = %e, "cannot stop the QEMU of a move that did not happen");
            }
            self.remove_taps(&inc.vm);
        }
        self.remove_created(&inc.created, inc.vars.as_deref()).await;
    }

    /// Removes the volumes and the UEFI variables file created for an
    /// incoming move that did not happen.
    pub(super) async fn remove_created(&self, created: &[(String, String)], vars: Option<&Path>) {
        for (pool, vol) in created {
            self.delete_volume_or_warn(
                pool,
                vol,
                "remove a volume made for a move that did not happen",
            )
            .await;
        }
        if let Some(v) = vars {
            if let Err(e) = std::fs::remove_file(v) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %v.display(), error = %e, "cannot remove UEFI variables made for a move that did not happen");
                }
            }
        }
    }
}
