//! Storage pools and their volumes: create, resize, delete, snapshots,
//! clones, imports (a job).

use crate::errors;
use crate::jobs::{JobFailure, JobSpec, VolumeImportJob};
use crate::model::{kind, PoolRecord, VmRecord};
use crate::Inner;
use nasvisor_api_types::{CoreError, JobView, PoolView, SnapshotView, VolumeView};
use nasvisor_api_types::{PoolCreate, VolumeCreate, VolumeFormat};
use nasvisor_best_effort::BestEffort;
use nasvisor_storage::{SnapshotOp, VolumeInfo};
use std::path::Path;
use std::sync::Arc;

const MIB: u64 = 1024 * 1024;

fn snapshot_view(pool: &str, volume: &str, s: &nasvisor_storage::SnapshotInfo) -> SnapshotView {
    let created = time::OffsetDateTime::from_unix_timestamp(s.date_sec as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    SnapshotView {
        name: s.name.clone(),
        pool: pool.to_string(),
        volume: volume.to_string(),
        created_at: created,
    }
}

impl Inner {
    fn volume_view(&self, pool: &str, v: &VolumeInfo) -> VolumeView {
        VolumeView {
            name: v.name.clone(),
            pool: pool.to_string(),
            size_mib: (v.virtual_size / MIB).max(1),
            format: VolumeFormat::Qcow2,
            used_by: self.volume_user(pool, &v.name).map(|vm| vm.name),
        }
    }

    /// Refuses to touch a volume a running VM has open.
    fn not_in_use(&self, pool: &str, volume: &str, what: &str) -> Result<(), CoreError> {
        if let Some(vm) = self.volume_user(pool, volume) {
            if vm.is_active() || self.processes.contains(&vm.id) {
                return Err(errors::conflict(format!(
                    "volume {pool}/{volume} is in use by VM {}, which is {}; stop it to {what}",
                    vm.name,
                    vm.state.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Every pool of the cluster; usage (as the health checks last
    /// measured it) for the pools this host reaches (0 for other hosts'
    /// pools).
    pub(crate) fn list_pools(&self) -> Result<Vec<PoolView>, CoreError> {
        let mut out = Vec::new();
        for p in self.db.list::<PoolRecord>(kind::POOL) {
            let here = p.host.as_deref().is_none_or(|h| h == self.host.id);
            let usage = self
                .pool_usage(&p.name)
                .filter(|_| here)
                .map(|u| (u.capacity_bytes / MIB, u.free_bytes / MIB))
                .unwrap_or((0, 0));
            out.push(pool_view(&p, usage));
        }
        Ok(out)
    }

    pub(crate) async fn create_pool(&self, req: PoolCreate) -> Result<PoolView, CoreError> {
        let _g = self.ops.lock().await;
        let pools: Vec<PoolRecord> = self.local_pools();
        let all: Vec<PoolRecord> = self.db.list(kind::POOL);
        // A shared pool's name must be free on every host.
        let taken = if req.shared {
            all.iter().find(|p| p.name == req.name)
        } else {
            pools.iter().find(|p| p.name == req.name)
        };
        if let Some(p) = taken {
            return Err(errors::conflict(format!(
                "pool {} already exists{}",
                req.name,
                match &p.host {
                    Some(h) => format!(" on host {h}"),
                    None => " (shared)".into(),
                }
            )));
        }
        // The directory's work (made, opened, checked, made private) on a
        // blocking thread within the pool limit: the path may be on a
        // hung mount.
        let mine: Vec<PoolRecord> = all
            .iter()
            .filter(|p| p.host.as_deref().is_none_or(|h| h == self.host.id))
            .cloned()
            .collect();
        let data_dir = self.cfg.data_dir.clone();
        let (name, path) = (req.name.clone(), req.path.clone());
        let pool = self
            .pool_io(&format!("pool {} ({})", req.name, req.path), move || {
                let dir = Path::new(&path);
                let mut made = false;
                if !dir.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .mode(nasvisor_storage::private::DIR_MODE)
                        .create(dir)
                        .map_err(|e| {
                            errors::invalid("path", format!("cannot create {path}: {e}"))
                        })?;
                    made = true;
                }
                let checked = nasvisor_storage::Pool::open(&name, dir)
                    .map_err(|e| errors::storage("path", e))
                    .and_then(|pool| {
                        check_pool_dir(pool.dir(), &mine, &data_dir)?;
                        Ok(pool)
                    });
                let pool = match checked {
                    Ok(p) => p,
                    Err(e) => {
                        if made {
                            nasvisor_best_effort::remove_dir(dir);
                        }
                        return Err(e);
                    }
                };
                // Its volumes hold guest data: the directory is 0700,
                // volumes 0600.
                pool.make_private()
                    .map_err(|e| errors::storage("path", e))?;
                Ok(pool)
            })
            .await?;
        let canon = pool.dir().to_string_lossy().into_owned();
        let rec = PoolRecord {
            name: req.name.clone(),
            path: canon,
            host: (!req.shared).then(|| self.host.id.clone()),
        };
        self.db
            .create(kind::POOL, &rec.key(), &rec, &format!("pool {}", rec.name))
            .await?;
        let usage = self
            .pool_io(&format!("pool {}", rec.name), move || {
                pool.usage().map_err(|e| errors::storage("path", e))
            })
            .await?;
        self.note_pool_usage(&rec.name, Some(usage));
        Ok(pool_view(
            &rec,
            (usage.capacity_bytes / MIB, usage.free_bytes / MIB),
        ))
    }

    pub(crate) async fn delete_pool(&self, name: &str) -> Result<(), CoreError> {
        let _g = self.ops.lock().await;
        let Some(rec) = self.pool_record(name) else {
            return Err(errors::not_found(format!(
                "pool {name} on host {}",
                self.host.id
            )));
        };
        let vols = self
            .on_pool(name, "name", |p| {
                p.volumes().map_err(|e| errors::storage("name", e))
            })
            .await?;
        if !vols.is_empty() {
            return Err(errors::conflict(format!(
                "pool {name} still holds {} volume(s) ({}); delete them first",
                vols.len(),
                vols.iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.db.delete(kind::POOL, &rec.key()).await?;
        self.note_pool_usage(name, None);
        Ok(())
    }

    /// 404 unless this host has pool `name`.
    fn pool_here(&self, name: &str) -> Result<(), CoreError> {
        match self.pool_record(name) {
            Some(_) => Ok(()),
            None => Err(errors::not_found(format!(
                "pool {name} on host {}",
                self.host.id
            ))),
        }
    }

    /// Runs `f` on this host's pool `name` (404 when there is none) off
    /// the async workers ([`Inner::on_pool`]).
    async fn on_existing_pool<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&nasvisor_storage::Pool) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        self.pool_here(name)?;
        self.on_pool(name, "pool", f).await
    }

    pub(crate) async fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeView>, CoreError> {
        let vols = self
            .on_existing_pool(pool, |p| {
                p.volumes().map_err(|e| errors::storage("pool", e))
            })
            .await?;
        Ok(vols.iter().map(|v| self.volume_view(pool, v)).collect())
    }

    pub(crate) async fn create_volume(
        &self,
        pool: &str,
        req: VolumeCreate,
    ) -> Result<VolumeView, CoreError> {
        if req.format == Some(VolumeFormat::Raw) {
            return Err(errors::invalid(
                "format",
                "pools hold qcow2 volumes; import a raw file with POST /pools/{pool}/imports",
            ));
        }
        let v = self
            .on_existing_pool(pool, move |p| {
                p.create(&req.name, req.size_mib * MIB)
                    .map_err(|e| errors::storage("name", e))
            })
            .await?;
        Ok(self.volume_view(pool, &v))
    }

    pub(crate) async fn delete_volume(&self, pool: &str, volume: &str) -> Result<(), CoreError> {
        let _g = self.ops.lock().await;
        if let Some(vm) = self.volume_user(pool, volume) {
            return Err(errors::conflict(format!(
                "volume {pool}/{volume} belongs to VM {}; delete the VM with its disks",
                vm.name
            )));
        }
        let (name, volume) = (pool.to_string(), volume.to_string());
        self.on_existing_pool(pool, move |p| {
            let backed: Vec<String> = p
                .volumes()
                .map_err(|e| errors::storage("volume", e))?
                .into_iter()
                .filter(|v| {
                    v.backing_file
                        .as_deref()
                        .is_some_and(|b| b.ends_with(&format!("/{volume}.qcow2")))
                })
                .map(|v| v.name)
                .collect();
            if !backed.is_empty() {
                return Err(errors::conflict(format!(
                    "volume {name}/{volume} backs linked clone(s) {}",
                    backed.join(", ")
                )));
            }
            p.delete(&volume).map_err(|e| errors::storage("volume", e))
        })
        .await
    }

    pub(crate) async fn resize_volume(
        &self,
        pool: &str,
        volume: &str,
        size_mib: u64,
    ) -> Result<VolumeView, CoreError> {
        self.not_in_use(pool, volume, "resize it")?;
        let vol = volume.to_string();
        let v = self
            .on_existing_pool(pool, move |p| {
                p.resize(&vol, size_mib * MIB)
                    .map_err(|e| errors::storage("size_mib", e))
            })
            .await?;
        // Keep the VM's recorded disk size current.
        if let Some(vm) = self.volume_user(pool, volume) {
            self.db
                .update::<VmRecord, _>(kind::VM, &vm.id, |r| {
                    for d in r
                        .disks
                        .iter_mut()
                        .filter(|d| d.pool == pool && d.volume == volume)
                    {
                        d.size_mib = size_mib;
                    }
                    Ok(())
                })
                .await
                .best_effort("record the resized disk's size in its VM");
        }
        Ok(self.volume_view(pool, &v))
    }

    pub(crate) async fn snapshot_op(
        &self,
        pool: &str,
        volume: &str,
        name: &str,
        op: SnapshotOp,
    ) -> Result<Option<SnapshotView>, CoreError> {
        if op != SnapshotOp::Create || self.volume_user(pool, volume).is_some() {
            self.not_in_use(pool, volume, "change its snapshots")?;
        }
        let (vol, snap) = (volume.to_string(), name.to_string());
        let info = self
            .on_existing_pool(pool, move |p| {
                p.snapshot(&vol, op, &snap)
                    .map_err(|e| errors::storage("name", e))
            })
            .await?;
        match op {
            SnapshotOp::Delete => Ok(None),
            _ => {
                let s = info
                    .snapshots
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| {
                        errors::internal(format!("snapshot {name} missing after {op:?}"))
                    })?;
                Ok(Some(snapshot_view(pool, volume, s)))
            }
        }
    }

    pub(crate) async fn list_snapshots(
        &self,
        pool: &str,
        volume: &str,
    ) -> Result<Vec<SnapshotView>, CoreError> {
        let vol = volume.to_string();
        let info = self
            .on_existing_pool(pool, move |p| {
                p.volume(&vol).map_err(|e| errors::storage("volume", e))
            })
            .await?;
        Ok(info
            .snapshots
            .iter()
            .map(|s| snapshot_view(pool, volume, s))
            .collect())
    }

    pub(crate) async fn clone_volume(
        &self,
        pool: &str,
        volume: &str,
        name: &str,
        linked: bool,
    ) -> Result<VolumeView, CoreError> {
        self.not_in_use(pool, volume, "clone it consistently")?;
        let (src, dst) = (volume.to_string(), name.to_string());
        self.pool_here(pool)?;
        // A full clone copies the whole volume: no time limit.
        let v = self
            .on_pool_unbounded(pool, "pool", move |p| {
                p.clone_volume(&src, &dst, linked)
                    .map_err(|e| errors::storage("name", e))
            })
            .await?;
        Ok(self.volume_view(pool, &v))
    }

    /// Imports a raw/qcow2/vmdk/vdi file as a volume, as a job. The file is
    /// inspected ([`nasvisor_storage::inspect`]) before the job starts.
    pub(crate) async fn import_volume(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        path: &str,
    ) -> Result<JobView, CoreError> {
        if !Path::new(path).is_file() {
            return Err(errors::invalid(
                "path",
                format!("{path} is not a file on host {}", self.host.id),
            ));
        }
        let vol = name.to_string();
        if self
            .on_existing_pool(pool, move |p| Ok(p.volume(&vol).is_ok()))
            .await?
        {
            return Err(errors::conflict(format!(
                "volume {pool}/{name} already exists"
            )));
        }
        let src = Path::new(path).to_path_buf();
        tokio::task::spawn_blocking(move || {
            nasvisor_storage::inspect(&nasvisor_storage::QemuImg::default(), &src)
        })
        .await
        .map_err(errors::internal)?
        .map_err(|e| errors::storage("path", e))?;
        let (job, ctx) = self
            .job_start(
                &JobSpec::VolumeImport(VolumeImportJob {
                    pool: pool.to_string(),
                    name: name.to_string(),
                    path: path.to_string(),
                }),
                Some(format!("volume/{pool}/{name}")),
            )
            .await?;
        let me = self.clone();
        let (pool, name, path) = (pool.to_string(), name.to_string(), path.to_string());
        tokio::spawn(async move {
            let c = ctx.clone();
            let me2 = me.clone();
            let r = tokio::task::spawn_blocking(move || {
                c.milestone(0.0, "converting");
                let p = me2
                    .pool(&pool, "pool")
                    .map_err(|e| JobFailure::Failed(e.to_string()))?;
                let c2 = c.clone();
                p.import_cancellable(
                    &name,
                    Path::new(&path),
                    |f| c.progress(f / 100.0, None),
                    &move || c2.is_cancelled(),
                )
                .map_err(|e| match e {
                    nasvisor_storage::StorageError::Cancelled { .. } => JobFailure::Cancelled,
                    e => JobFailure::Failed(e.to_string()),
                })
            })
            .await;
            let outcome = match r {
                Ok(Ok(v)) => Ok(format!(
                    "volume {} imported ({} MiB)",
                    v.name,
                    v.virtual_size / MIB
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(JobFailure::Failed(e.to_string())),
            };
            me.job_finish(&ctx, outcome).await;
        });
        Ok(job.view())
    }
}

/// Whether the canonical directory `dir` may become a new pool of this
/// host: not a system directory, empty or holding only volumes, apart from
/// nasvisor's own data (`data_dir`; but for `<data-dir>/pools/NAME`), and
/// neither inside nor around a pool this host sees (`mine`). It reads the
/// filesystem: it runs on a blocking thread.
fn check_pool_dir(dir: &Path, mine: &[PoolRecord], data_dir: &Path) -> Result<(), CoreError> {
    use nasvisor_storage::pool_dir::{not_a_system_dir, only_volumes, overlaps};
    not_a_system_dir(dir).map_err(|e| errors::storage("path", e))?;
    for p in mine {
        let other = Path::new(&p.path);
        if other == dir {
            return Err(errors::conflict(format!(
                "{} already is pool {}",
                dir.display(),
                p.name
            )));
        }
        if overlaps(dir, other) {
            return Err(errors::conflict(format!(
                "{} {} pool {} ({}); pools may not nest",
                dir.display(),
                if dir.starts_with(other) {
                    "is inside"
                } else {
                    "holds"
                },
                p.name,
                p.path
            )));
        }
    }
    let data = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let pools_dir = data.join("pools");
    if overlaps(dir, &data) && !(dir.starts_with(&pools_dir) && dir != pools_dir) {
        return Err(errors::invalid(
            "path",
            format!(
                "{} overlaps nasvisor's data directory {}; a pool there goes under {}/NAME",
                dir.display(),
                data.display(),
                pools_dir.display()
            ),
        ));
    }
    only_volumes(dir).map_err(|e| errors::storage("path", e))
}

fn pool_view(p: &PoolRecord, (capacity_mib, free_mib): (u64, u64)) -> PoolView {
    PoolView {
        name: p.name.clone(),
        path: p.path.clone(),
        host: p.host.clone(),
        shared: p.shared(),
        capacity_mib,
        free_mib,
    }
}

#[cfg(test)]
mod tests {
    use crate::peer::tests::start;
    use nasvisor_api_types::{Action, CoreError, PoolCreate};
    use std::os::unix::fs::PermissionsExt;

    fn create(path: &std::path::Path, name: &str) -> Action {
        Action::CreatePool(PoolCreate {
            name: name.into(),
            path: path.to_string_lossy().into_owned(),
            shared: false,
        })
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_is_never_a_system_directory_a_directory_of_other_files_or_nested() {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(tmp.path(), "a", None).await;
        let refused = |e: CoreError| match e {
            CoreError::Invalid { field, reason } => {
                assert_eq!(field, "path");
                reason
            }
            CoreError::Conflict { reason } => reason,
            other => panic!("not a refusal of the path: {other:?}"),
        };

        // A system directory: refused, and its mode is left alone.
        let before = mode(std::path::Path::new("/usr/share"));
        for d in ["/", "/etc", "/usr/share", "/var/lib"] {
            let e = a
                .admin(create(std::path::Path::new(d), "sys"))
                .await
                .unwrap_err();
            let r = refused(e);
            assert!(
                r.contains("system directory") || r.contains("root directory"),
                "{d}: {r}"
            );
        }
        assert_eq!(mode(std::path::Path::new("/usr/share")), before);

        // A directory of someone else's files: refused, untouched.
        let docs = tmp.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        std::fs::write(docs.join("notes.txt"), b"mine").unwrap();
        std::fs::set_permissions(&docs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = refused(a.admin(create(&docs, "docs")).await.unwrap_err());
        assert!(r.contains("not volumes (\"notes.txt\")"), "{r}");
        assert_eq!(mode(&docs), 0o755);

        // nasvisor's own data, but for <data-dir>/pools/NAME.
        let data = tmp.path().join("a").canonicalize().unwrap();
        for d in [data.clone(), data.join("images"), data.join("pools")] {
            let r = refused(a.admin(create(&d, "mine")).await.unwrap_err());
            assert!(
                r.contains("data directory") || r.contains("pool default"),
                "{}: {r}",
                d.display()
            );
        }
        a.admin(create(&data.join("pools/fast"), "fast"))
            .await
            .unwrap();

        // Pools do not nest, either way; a new empty directory is a pool
        // and becomes private.
        let vms = tmp.path().join("vms");
        a.admin(create(&vms, "vms")).await.unwrap();
        assert_eq!(mode(&vms), 0o700);
        std::fs::create_dir(vms.join("inner")).unwrap();
        let r = refused(
            a.admin(create(&vms.join("inner"), "inner"))
                .await
                .unwrap_err(),
        );
        assert!(r.contains("is inside pool vms"), "{r}");
        let r = refused(a.admin(create(tmp.path(), "outer")).await.unwrap_err());
        assert!(r.contains("holds pool"), "{r}");
        // A refused new directory is not left behind.
        let gone = data.join("images/new");
        refused(a.admin(create(&gone, "new")).await.unwrap_err());
        assert!(!gone.exists());
        a.shutdown().await.unwrap();
    }

    /// A pool directory on a FUSE pass-through (bindfs) whose process
    /// this guard can stop: the pool's disk stops answering. Resumed and
    /// unmounted when dropped, also when the test fails.
    struct HungMount {
        dir: std::path::PathBuf,
        bindfs: std::process::Child,
    }

    impl HungMount {
        fn mount(backing: &std::path::Path, dir: &std::path::Path) -> HungMount {
            std::fs::create_dir_all(backing).unwrap();
            std::fs::create_dir_all(dir).unwrap();
            let bindfs = std::process::Command::new("bindfs")
                .args(["-f", "--no-allow-other"])
                .arg(backing)
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("bindfs (scripts/setup.sh installs it)");
            let m = HungMount {
                dir: dir.to_path_buf(),
                bindfs,
            };
            let want = dir.to_string_lossy().to_string();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "bindfs did not mount {want}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            m
        }

        /// Sends `sig` (STOP or CONT) to this guard's own bindfs, by pid.
        fn signal(&self, sig: &str) {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.bindfs.id().to_string())
                .status();
        }
    }

    impl Drop for HungMount {
        fn drop(&mut self) {
            self.signal("CONT");
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
            let _ = self.bindfs.kill();
            let _ = self.bindfs.wait();
        }
    }

    /// A pool whose disk stops answering: each request on it (a new pool
    /// on the same mount too) fails with 503 within the pool limit, and
    /// while more of them hang than the core has async workers (2), the
    /// rest of the API still answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_pool_fails_its_requests_with_503_and_the_rest_of_the_api_still_answers() {
        use nasvisor_api_types::VolumeCreate;
        use std::time::{Duration, Instant};
        let tmp = tempfile::tempdir().unwrap();
        let a = start(tmp.path(), "a", None).await;
        let disk = HungMount::mount(&tmp.path().join("backing"), &tmp.path().join("slow"));
        a.admin(create(&disk.dir, "slow")).await.unwrap();
        let volume = |name: &str| Action::CreateVolume {
            pool: "slow".into(),
            volume: VolumeCreate {
                name: name.into(),
                size_mib: 16,
                format: None,
            },
        };
        a.admin(volume("v0")).await.unwrap();

        disk.signal("STOP");
        // Were the core's workers held by the pool, nothing in this test
        // could run again (its timers included): a thread of its own
        // fails it rather than letting it hang.
        let (done, watch) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                watch.recv_timeout(Duration::from_secs(90))
            {
                eprintln!("FAILED: the core stopped answering while its pool hung");
                std::process::exit(101);
            }
        });
        let t0 = Instant::now();
        let hung: Vec<_> = (0..5)
            .map(|i| {
                let a = a.clone();
                let action = match i {
                    0 => Action::ListVolumes {
                        pool: "slow".into(),
                    },
                    // A new pool whose path is on the hung mount.
                    4 => create(&disk.dir.join("inner"), "inner"),
                    1 => Action::ListSnapshots {
                        pool: "slow".into(),
                        volume: "v0".into(),
                    },
                    _ => volume(&format!("v{i}")),
                };
                tokio::spawn(async move { (a.admin(action).await, t0.elapsed()) })
            })
            .collect();
        // The five are stuck in the pool; the API is not.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for action in [Action::ListPools, Action::ListVms] {
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(5), a.admin(action))
                .await
                .expect("an answer while the pool hangs")
                .unwrap();
            assert!(t.elapsed() < Duration::from_secs(5));
        }
        for h in hung {
            let (r, took) = h.await.unwrap();
            match r {
                Err(CoreError::Unavailable { reason }) => assert!(
                    reason.contains("did not answer") || reason.contains("does not answer"),
                    "{reason}"
                ),
                other => panic!("a request on the hung pool answered {other:?}"),
            }
            assert!(took < Duration::from_secs(25), "answered after {took:?}");
        }
        // It answers again: so do its requests.
        disk.signal("CONT");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match a
                .admin(Action::ListVolumes {
                    pool: "slow".into(),
                })
                .await
            {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "still refused: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(disk);
        let _ = done.send(());
        a.shutdown().await.unwrap();
    }
}
