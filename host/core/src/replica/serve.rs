//! The passive host's side: `replica-serve` and `replica-drop`, and its
//! replica servers (started, ended, stale ones found).
//!
//! Its work on the pool's files runs on blocking threads, each within
//! [`crate::pool_io::POOL_IO_LIMIT`] ([`Inner::pool_io`]): the replica's disk is the one a
//! failing passive host may have lost, and a call into a hung filesystem
//! must fail the request, not hold one of the daemon's async workers (and
//! its heartbeat answers with it).

use crate::errors;
use crate::migrate::{free_port, qemu_tls_dir, tls_identity};
use crate::model::{kind, VmRecord};
use crate::Inner;
use nasvisor_api_types::peer::{ReplicaDrop, ReplicaServe, ReplicaServing};
use nasvisor_api_types::CoreError;
use nasvisor_best_effort::BestEffort;
use nasvisor_storage::Pool;
use nasvisor_vm::qmp::InetAddr;
use nasvisor_vm::replica::{ReplicaDisk, ReplicaServer, ReplicaTls};
use std::path::{Path, PathBuf};

impl Inner {
    /// Ends the replica servers on this host whose VM's record does not
    /// give its replica to this host (any more): after this host was lost
    /// and came back, or a drop it was not asked for.
    pub(crate) async fn end_stale_replica_servers(&self) {
        let run_dir = self.cfg.run_dir();
        let Ok(rd) = std::fs::read_dir(&run_dir) else {
            return;
        };
        let ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".replica.pid")
                    .map(str::to_string)
            })
            .collect();
        for id in ids {
            let ours = self
                .db
                .get::<VmRecord>(kind::VM, &id)
                .is_some_and(|(v, _)| v.replica.is_some_and(|r| r.host == self.host.id));
            if !ours {
                tracing::info!(vm = %id, "ending a stale replica server");
                self.stop_replica_server(&id).await;
            }
        }
    }

    /// Deletes the replica volumes of `vm` that this host holds, unless a
    /// VM here uses one (in the background, on a blocking thread).
    pub(crate) fn delete_replica_volumes(&self, vm: &VmRecord) {
        let Some(r) = vm.replica.as_ref().filter(|r| r.host == self.host.id) else {
            return;
        };
        let mut gone = Vec::new();
        for (_, pool_name, vol) in &r.disks {
            let Some(rec) = self.pool_record(pool_name).filter(|p| !p.shared()) else {
                continue;
            };
            let in_use = self
                .volume_user(pool_name, vol)
                .is_some_and(|u| u.id != vm.id && u.host.as_deref() == Some(self.host.id.as_str()));
            if !in_use {
                gone.push((rec.name, PathBuf::from(rec.path), vol.clone()));
            }
        }
        tokio::task::spawn_blocking(move || {
            for (name, dir, vol) in gone {
                if let Ok(pool) = Pool::open(&name, &dir) {
                    if pool.volume(&vol).is_ok() {
                        pool.delete(&vol).best_effort("delete a replica volume");
                    }
                }
            }
        });
    }

    /// VM `id`, when this host is its passive host and it does not run
    /// here (so this host may hold its `what`).
    pub(crate) fn passive_here(&self, id: &str, what: &str) -> Result<VmRecord, CoreError> {
        let vm = self.find_vm(id)?;
        if vm.passive.as_deref() != Some(self.host.id.as_str()) {
            return Err(errors::conflict(format!(
                "host {} is not VM {}'s passive host",
                self.host.id, vm.name
            )));
        }
        if self.processes.contains(&vm.id) {
            return Err(errors::conflict(format!(
                "VM {} runs on host {}: it cannot hold its {what}",
                vm.name, self.host.id
            )));
        }
        Ok(vm)
    }

    /// `replica-serve` on the passive host: fresh replica volumes and a
    /// replica server of VM `req.id`, admitting only host `from`.
    pub(crate) async fn replica_serve(
        &self,
        from: u64,
        req: ReplicaServe,
    ) -> Result<ReplicaServing, CoreError> {
        let vm = self.passive_here(&req.id, "replica")?;
        if let Some(kept) = self.kept_replica_server(&vm, &req).await? {
            return Ok(kept);
        }
        self.stop_replica_server(&vm.id).await;
        let mut wanted = Vec::new();
        for d in &req.disks {
            let rec = self
                .pool_record(&d.pool)
                .filter(|p| !p.shared())
                .ok_or_else(|| {
                    errors::conflict(format!(
                        "host {} has no pool {} of its own for the replica of {}",
                        self.host.id, d.pool, d.volume
                    ))
                })?;
            if let Some(user) = self.volume_user(&d.pool, &d.volume) {
                if user.id != vm.id && user.host.as_deref() == Some(self.host.id.as_str()) {
                    return Err(errors::conflict(format!(
                        "volume {}/{} on host {} belongs to VM {}",
                        d.pool, d.volume, self.host.id, user.name
                    )));
                }
            }
            wanted.push((rec.name, PathBuf::from(rec.path), d.clone()));
        }
        let what = format!("the replica volumes of {}", vm.name);
        let disks = self
            .pool_io(&what, move || {
                let mut disks = Vec::new();
                for (name, dir, d) in wanted {
                    let field = format!("disks[{}]", d.node);
                    let pool = Pool::open(&name, &dir).map_err(|e| errors::storage(&field, e))?;
                    // An older copy (a former replica, or what a failover
                    // left here) is replaced: the sync writes every block
                    // anyway.
                    if pool.volume(&d.volume).is_ok() {
                        pool.delete(&d.volume)
                            .map_err(|e| errors::storage(&field, e))?;
                    }
                    let info = pool
                        .create(&d.volume, d.size_bytes)
                        .map_err(|e| errors::storage(&field, e))?;
                    disks.push(ReplicaDisk {
                        node: d.node.clone(),
                        path: info.path,
                    });
                }
                Ok(disks)
            })
            .await?;
        let ip = self.cluster_ip()?;
        let port = free_port(&ip)?;
        let tls = if self.cfg.migration_tls {
            Some(ReplicaTls {
                dir: qemu_tls_dir(self, "server")?,
                client_identity: tls_identity(from),
            })
        } else {
            None
        };
        let addr = InetAddr::new(ip.clone(), port);
        let server = ReplicaServer::start(
            Path::new(&self.cfg.qemu_storage_daemon),
            &self.cfg.run_dir(),
            &vm.id,
            &disks,
            &addr,
            tls.as_ref(),
        )
        .await
        .map_err(|e| errors::internal(e.to_string()))?;
        tracing::info!(vm = %vm.name, pid = server.pid(), %addr, "serving the replica");
        Ok(ReplicaServing {
            host: ip,
            port,
            server: server.identity(),
            kept: false,
        })
    }

    /// The answer to a `replica-serve` that asks to resume: the server it
    /// names still runs (the same process, on this boot of this host) and
    /// every volume is there, so it is kept with what it holds.
    async fn kept_replica_server(
        &self,
        vm: &VmRecord,
        req: &ReplicaServe,
    ) -> Result<Option<ReplicaServing>, CoreError> {
        let Some(want) = req.resume.as_deref() else {
            return Ok(None);
        };
        let Some(running) = ReplicaServer::running(&self.cfg.run_dir(), &vm.id) else {
            return Ok(None);
        };
        if running.identity != want {
            tracing::info!(vm = %vm.name, "the replica server was restarted since: a full copy");
            return Ok(None);
        }
        let mut volumes = Vec::new();
        for d in &req.disks {
            let Some(rec) = self.pool_record(&d.pool).filter(|p| !p.shared()) else {
                return Ok(None);
            };
            volumes.push((rec.name, PathBuf::from(rec.path), d.volume.clone()));
        }
        let what = format!("the replica volumes of {}", vm.name);
        let all_there = self
            .pool_io(&what, move || {
                Ok(volumes.iter().all(|(name, dir, vol)| {
                    Pool::open(name, dir).is_ok_and(|pool| pool.volume(vol).is_ok())
                }))
            })
            .await?;
        if !all_there {
            return Ok(None);
        }
        tracing::info!(vm = %vm.name, addr = %running.addr, "the replica server runs on: resuming");
        Ok(Some(ReplicaServing {
            host: running.addr.host,
            port: running.addr.port,
            server: Some(running.identity),
            kept: true,
        }))
    }

    /// `replica-drop`: stops VM `req.id`'s replica server here and deletes
    /// its volumes (unless a VM here uses one).
    pub(crate) async fn replica_drop(&self, req: ReplicaDrop) -> Result<(), CoreError> {
        self.stop_replica_server(&req.id).await;
        if !req.delete_volumes {
            return Ok(());
        }
        let mut gone = Vec::new();
        for (pool_name, vol) in &req.volumes {
            let Some(rec) = self.pool_record(pool_name).filter(|p| !p.shared()) else {
                continue;
            };
            let in_use = self
                .volume_user(pool_name, vol)
                .is_some_and(|u| u.host.as_deref() == Some(self.host.id.as_str()));
            if !in_use {
                gone.push((rec.name, PathBuf::from(rec.path), vol.clone()));
            }
        }
        self.pool_io(&format!("dropping the replica of {}", req.id), move || {
            for (name, dir, vol) in gone {
                let pool = Pool::open(&name, &dir).map_err(|e| errors::storage("pool", e))?;
                if pool.volume(&vol).is_ok() {
                    pool.delete(&vol)
                        .map_err(|e| errors::storage("volume", e))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Stops VM `id`'s replica server on this host, if one runs (before
    /// the VM is launched here from its replica, and when it is dropped).
    pub(crate) async fn stop_replica_server(&self, id: &str) {
        if ReplicaServer::end(&self.cfg.run_dir(), id).await {
            tracing::info!(vm = id, "replica server stopped");
        }
    }
}
