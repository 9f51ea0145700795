//! A storage pool: a directory on a NAS volume holding qcow2 volumes
//! (`<name>.qcow2`). Every operation is all-or-nothing: new files are written
//! under a temporary name and renamed into place, and removed on failure.
//! Volumes are created 0600 (qemu-img runs with umask 077); a pool
//! directory is made 0700 by [`Pool::make_private`].

use crate::error::StorageError;
use crate::inspect::{inspect, volume_header_ok};
use crate::name;
use crate::private;
use crate::qemu_img::{QemuImg, SnapshotInfo, SnapshotOp};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Smallest and largest volume, in bytes.
pub const MIN_VOLUME: u64 = 1 << 20;
pub const MAX_VOLUME: u64 = 64 << 40;

/// Capacity of a pool's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PoolUsage {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    /// The filesystem is mounted read-only.
    pub read_only: bool,
}

/// Capacity, free space and mount flags of the filesystem holding `path`.
pub fn fs_usage(path: &Path) -> Result<PoolUsage, StorageError> {
    let st = rustix::fs::statvfs(path).map_err(|e| StorageError::io(path, e.into()))?;
    Ok(PoolUsage {
        capacity_bytes: st.f_blocks * st.f_frsize,
        free_bytes: st.f_bavail * st.f_frsize,
        read_only: st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
    })
}

/// A volume as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VolumeInfo {
    pub name: String,
    pub path: PathBuf,
    pub virtual_size: u64,
    pub actual_size: u64,
    /// The image this volume is an overlay of (a linked clone), if any.
    pub backing_file: Option<String>,
    pub snapshots: Vec<SnapshotInfo>,
}

/// One pool.
#[derive(Debug, Clone)]
pub struct Pool {
    name: String,
    dir: PathBuf,
    img: QemuImg,
}

/// Removes a temporary file unless disarmed.
struct TempFile(Option<PathBuf>);
impl TempFile {
    fn disarm(mut self) {
        self.0 = None;
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            nasvisor_best_effort::remove_file(p);
        }
    }
}

impl Pool {
    /// Opens the pool `name` at `dir`, an existing absolute directory.
    pub fn open(pool_name: &str, dir: &Path) -> Result<Pool, StorageError> {
        name::check("pool name", pool_name)?;
        if !dir.is_absolute() {
            return Err(StorageError::BadImage {
                path: dir.to_path_buf(),
                reason: "pool path must be absolute".into(),
            });
        }
        let meta = std::fs::metadata(dir).map_err(|e| StorageError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(StorageError::BadImage {
                path: dir.to_path_buf(),
                reason: "pool path is not a directory".into(),
            });
        }
        let dir = dir.canonicalize().map_err(|e| StorageError::io(dir, e))?;
        Ok(Pool {
            name: pool_name.to_string(),
            dir,
            img: QemuImg::default(),
        })
    }

    /// This pool's `qemu-img` with other limits.
    pub fn with_qemu_img(mut self, img: QemuImg) -> Pool {
        self.img = img;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the pool directory 0700 and its volumes (and temporaries) 0600,
    /// leaving other files alone. Returns how many modes changed.
    pub fn make_private(&self) -> Result<usize, StorageError> {
        let mut changed = private::tighten(&self.dir, private::DIR_MODE)?;
        for e in std::fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let e = e.map_err(|e| StorageError::io(&self.dir, e))?;
            let f = e.file_name();
            let f = f.to_string_lossy();
            if (f.ends_with(".qcow2") || f.contains(".qcow2.tmp-"))
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                changed += private::tighten(&e.path(), private::FILE_MODE)?;
            }
        }
        Ok(changed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Capacity and free space of the pool's filesystem.
    pub fn usage(&self) -> Result<PoolUsage, StorageError> {
        fs_usage(&self.dir)
    }

    /// Whether a file can be created, written, synced and removed in the
    /// pool: what a health check asks (a filesystem can refuse writes
    /// without being mounted read-only: permissions, I/O errors, quota).
    pub fn write_probe(&self) -> Result<(), StorageError> {
        let path = self.dir.join(".nasvisor-health-probe.tmp");
        let r = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            f.write_all(b"nasvisor")?;
            f.sync_all()
        })();
        let removed = std::fs::remove_file(&path);
        r.and(removed).map_err(|e| StorageError::io(&path, e))
    }

    /// The path of volume `name` (which is checked, so it stays in the pool).
    pub fn volume_path(&self, volume: &str) -> Result<PathBuf, StorageError> {
        name::check("volume name", volume)?;
        Ok(self.dir.join(format!("{volume}.qcow2")))
    }

    fn temp_path(&self, volume: &str) -> PathBuf {
        self.dir
            .join(format!(".{volume}.qcow2.tmp-{}", std::process::id()))
    }

    fn existing(&self, volume: &str) -> Result<PathBuf, StorageError> {
        let p = self.volume_path(volume)?;
        if !p.is_file() {
            return Err(StorageError::NotFound {
                what: "volume",
                name: volume.to_string(),
            });
        }
        Ok(p)
    }

    fn absent(&self, volume: &str) -> Result<PathBuf, StorageError> {
        let p = self.volume_path(volume)?;
        if p.exists() {
            return Err(StorageError::Exists {
                what: "volume",
                name: volume.to_string(),
            });
        }
        Ok(p)
    }

    fn need_space(&self, needed: u64) -> Result<(), StorageError> {
        let free = self.usage()?.free_bytes;
        if free < needed {
            return Err(StorageError::NoSpace {
                pool: self.name.clone(),
                free,
                needed,
            });
        }
        Ok(())
    }

    fn check_size(size: u64) -> Result<(), StorageError> {
        if !(MIN_VOLUME..=MAX_VOLUME).contains(&size) {
            return Err(StorageError::BadSize {
                field: "size",
                reason: format!("{size} bytes is out of range (1 MiB to 64 TiB)"),
            });
        }
        Ok(())
    }

    /// Moves a finished temporary file into place.
    fn commit(
        &self,
        tmp: TempFile,
        tmp_path: &Path,
        volume: &str,
    ) -> Result<VolumeInfo, StorageError> {
        let dst = self.absent(volume)?;
        std::fs::rename(tmp_path, &dst).map_err(|e| StorageError::io(&dst, e))?;
        tmp.disarm();
        self.volume(volume)
    }

    /// Information on one volume. A file whose header names an external
    /// data file or encryption is not a volume of ours and is refused.
    pub fn volume(&self, volume: &str) -> Result<VolumeInfo, StorageError> {
        let path = self.existing(volume)?;
        volume_header_ok(&path)?;
        let info = self.img.info(&path, "qcow2")?;
        Ok(VolumeInfo {
            name: volume.to_string(),
            path,
            virtual_size: info.virtual_size,
            actual_size: info.actual_size,
            backing_file: info.backing_file,
            snapshots: info.snapshots,
        })
    }

    /// All volumes, sorted by name (files refused by [`Self::volume`] left out).
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io(&self.dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".qcow2"))
                    .filter(|n| name::check("volume name", n).is_ok())
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in &names {
            match self.volume(n) {
                Ok(v) => out.push(v),
                // A file that is not a usable volume (it names an external
                // data file...) is not listed; it can still be deleted.
                Err(e @ StorageError::BadImage { .. }) => {
                    tracing::warn!(pool = %self.name, volume = %n, error = %e, "not listed as a volume");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Creates an empty (thin) qcow2 volume of `size` bytes.
    pub fn create(&self, volume: &str, size: u64) -> Result<VolumeInfo, StorageError> {
        Self::check_size(size)?;
        self.absent(volume)?;
        let tmp_path = self.temp_path(volume);
        let tmp = TempFile(Some(tmp_path.clone()));
        self.img.create(&tmp_path, Some(size), None)?;
        self.commit(tmp, &tmp_path, volume)
    }

    /// Creates a linked clone: a qcow2 overlay whose backing file is `base`
    /// (a qcow2 image of the library or another volume, opened as qcow2),
    /// optionally larger.
    pub fn create_overlay(
        &self,
        volume: &str,
        base: &Path,
        size: Option<u64>,
    ) -> Result<VolumeInfo, StorageError> {
        if let Some(s) = size {
            Self::check_size(s)?;
        }
        self.absent(volume)?;
        let base = base.canonicalize().map_err(|e| StorageError::io(base, e))?;
        volume_header_ok(&base)?;
        let info = self.img.info(&base, "qcow2")?;
        if let Some(s) = size {
            if s < info.virtual_size {
                return Err(StorageError::BadSize {
                    field: "size",
                    reason: format!(
                        "{s} bytes is smaller than the base image ({} bytes)",
                        info.virtual_size
                    ),
                });
            }
        }
        let tmp_path = self.temp_path(volume);
        let tmp = TempFile(Some(tmp_path.clone()));
        self.img.create(&tmp_path, size, Some(&base))?;
        self.commit(tmp, &tmp_path, volume)
    }

    /// Grows a volume. Shrinking is refused: it would destroy guest data.
    pub fn resize(&self, volume: &str, size: u64) -> Result<VolumeInfo, StorageError> {
        Self::check_size(size)?;
        let info = self.volume(volume)?;
        if size < info.virtual_size {
            return Err(StorageError::BadSize {
                field: "size",
                reason: format!(
                    "{size} bytes would shrink volume {volume:?} ({} bytes); only growing is supported",
                    info.virtual_size
                ),
            });
        }
        if !info.snapshots.is_empty() {
            return Err(StorageError::BadSize {
                field: "size",
                reason: format!("volume {volume:?} has snapshots; delete them before resizing"),
            });
        }
        self.img.resize(&info.path, size)?;
        self.volume(volume)
    }

    /// Deletes a volume.
    /// Deletes volume `volume`, and the probe file a replica server kept
    /// beside it, if any.
    pub fn delete(&self, volume: &str) -> Result<(), StorageError> {
        let p = self.existing(volume)?;
        std::fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
        let probe = self
            .dir
            .join(format!("{volume}{}", crate::pool_dir::PROBE_SUFFIX));
        match std::fs::remove_file(&probe) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(&probe, e)),
            _ => Ok(()),
        }
    }

    /// Imports a raw, qcow2, vmdk or vdi file as a new qcow2 volume. The
    /// source is inspected first ([`crate::inspect`]: the format allow-list,
    /// nothing that references another file, not damaged or truncated); a
    /// failed import leaves nothing behind.
    pub fn import(
        &self,
        volume: &str,
        src: &Path,
        progress: impl FnMut(f64),
    ) -> Result<VolumeInfo, StorageError> {
        self.import_cancellable(volume, src, progress, &|| false)
    }

    /// [`Self::import`] that stops once `cancelled` returns true, leaving
    /// nothing behind.
    pub fn import_cancellable(
        &self,
        volume: &str,
        src: &Path,
        progress: impl FnMut(f64),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<VolumeInfo, StorageError> {
        self.absent(volume)?;
        let found = inspect(&self.img, src)?;
        if found.format == crate::inspect::SourceFormat::Iso {
            return Err(StorageError::BadImage {
                path: src.to_path_buf(),
                reason: "an ISO is not a disk; add it to the image library instead".into(),
            });
        }
        self.need_space(found.actual_size)?;
        let tmp_path = self.temp_path(volume);
        let tmp = TempFile(Some(tmp_path.clone()));
        self.img.convert_cancellable(
            &found.path,
            found.format.qemu_name(),
            found.virtual_size,
            &tmp_path,
            progress,
            cancelled,
        )?;
        // A file swapped for another (or rewritten) between the inspection
        // and the conversion could have made qemu-img read anything.
        found.unchanged()?;
        self.commit(tmp, &tmp_path, volume)
    }

    /// Clones a volume: a full, independent copy, or a linked clone (an
    /// overlay backed by the source).
    pub fn clone_volume(
        &self,
        src: &str,
        dst: &str,
        linked: bool,
    ) -> Result<VolumeInfo, StorageError> {
        let from = self.volume(src)?;
        self.absent(dst)?;
        if linked {
            return self.create_overlay(dst, &from.path, None);
        }
        self.need_space(from.actual_size)?;
        let tmp_path = self.temp_path(dst);
        let tmp = TempFile(Some(tmp_path.clone()));
        self.img
            .convert(&from.path, "qcow2", from.virtual_size, &tmp_path, |_| {})?;
        self.commit(tmp, &tmp_path, dst)
    }

    /// Creates, reverts to or deletes an internal snapshot of a volume that
    /// no running VM uses (a running VM's snapshots go through QMP).
    pub fn snapshot(
        &self,
        volume: &str,
        op: SnapshotOp,
        snapshot: &str,
    ) -> Result<VolumeInfo, StorageError> {
        name::check("snapshot name", snapshot)?;
        let info = self.volume(volume)?;
        let exists = info.snapshots.iter().any(|s| s.name == snapshot);
        match (op, exists) {
            (SnapshotOp::Create, true) => {
                return Err(StorageError::Exists {
                    what: "snapshot",
                    name: snapshot.to_string(),
                })
            }
            (SnapshotOp::Apply | SnapshotOp::Delete, false) => {
                return Err(StorageError::NotFound {
                    what: "snapshot",
                    name: snapshot.to_string(),
                })
            }
            _ => {}
        }
        self.img.snapshot(&info.path, op, snapshot)?;
        self.volume(volume)
    }

    /// Removes temporary files a crash left behind (call at start-up).
    pub fn clean_temporaries(&self) -> Result<usize, StorageError> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let e = e.map_err(|e| StorageError::io(&self.dir, e))?;
            let file = e.file_name();
            let f = file.to_string_lossy();
            if f.starts_with('.') && f.contains(".qcow2.tmp-") {
                std::fs::remove_file(e.path()).map_err(|err| StorageError::io(e.path(), err))?;
                n += 1;
            }
        }
        Ok(n)
    }
}
