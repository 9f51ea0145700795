//! A thin, typed wrapper around the `qemu-img` tool.

use crate::error::StorageError;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Disk image formats nasvisor accepts for import.
pub const IMPORT_FORMATS: [&str; 4] = ["qcow2", "raw", "vmdk", "vdi"];

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub backing_file: Option<String>,
    pub snapshots: Vec<SnapshotInfo>,
}

/// An internal (qcow2) snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    pub name: String,
    pub vm_state_size: u64,
    pub date_sec: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawInfo {
    format: String,
    virtual_size: u64,
    #[serde(default)]
    actual_size: u64,
    #[serde(default)]
    backing_filename: Option<String>,
    #[serde(default)]
    snapshots: Vec<RawSnap>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawSnap {
    name: String,
    #[serde(default)]
    vm_state_size: u64,
    #[serde(default)]
    date_sec: u64,
}

/// The `qemu-img` binary (`$NASVISOR_QEMU_IMG`, else `qemu-img` on PATH).
#[derive(Debug, Clone)]
pub struct QemuImg {
    bin: PathBuf,
}

impl Default for QemuImg {
    fn default() -> Self {
        QemuImg {
            bin: std::env::var_os("NASVISOR_QEMU_IMG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("qemu-img")),
        }
    }
}

impl QemuImg {
    fn run(&self, op: &'static str, args: &[&std::ffi::OsStr]) -> Result<String, StorageError> {
        let out = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StorageError::QemuImg {
                op,
                stderr: format!("cannot run {}: {e}", self.bin.display()),
            })?;
        if !out.status.success() {
            return Err(StorageError::QemuImg {
                op,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `qemu-img info` of an image. `format` forces the format (no probing).
    pub fn info(&self, path: &Path, format: Option<&str>) -> Result<ImageInfo, StorageError> {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["info".as_ref(), "--output=json".as_ref(), "-U".as_ref()];
        if let Some(f) = format {
            args.push("-f".as_ref());
            args.push(f.as_ref());
        }
        args.push(path.as_os_str());
        let json = self.run("info", &args).map_err(|e| match e {
            StorageError::QemuImg { stderr, .. } => StorageError::BadImage {
                path: path.to_path_buf(),
                reason: format!("not a readable disk image: {stderr}"),
            },
            other => other,
        })?;
        let raw: RawInfo = serde_json::from_str(&json).map_err(|e| StorageError::BadImage {
            path: path.to_path_buf(),
            reason: format!("unexpected qemu-img info output: {e}"),
        })?;
        Ok(ImageInfo {
            format: raw.format,
            virtual_size: raw.virtual_size,
            actual_size: raw.actual_size,
            backing_file: raw.backing_filename,
            snapshots: raw
                .snapshots
                .into_iter()
                .map(|s| SnapshotInfo {
                    name: s.name,
                    vm_state_size: s.vm_state_size,
                    date_sec: s.date_sec,
                })
                .collect(),
        })
    }

    /// `qemu-img check`: refuses an image with corruptions or one whose data
    /// lies beyond the end of the file (a truncated image). Formats qemu-img
    /// cannot check (raw) pass.
    pub fn check(&self, path: &Path, format: &str) -> Result<(), StorageError> {
        if format == "raw" {
            return Ok(());
        }
        let out = Command::new(&self.bin)
            .args(["check", "--output=json", "-U", "-f", format])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StorageError::QemuImg {
                op: "check",
                stderr: e.to_string(),
            })?;
        // Exit 0: clean; 3: only leaked clusters (harmless); 63: check not
        // supported for this format. Anything else: corrupt or unreadable.
        match out.status.code() {
            Some(0) | Some(3) | Some(63) => Ok(()),
            _ => {
                let detail = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .ok()
                    .map(|v| {
                        format!(
                            "{} corruptions, {} check errors",
                            v["corruptions"].as_u64().unwrap_or(0),
                            v["check-errors"].as_u64().unwrap_or(0)
                        )
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
                Err(StorageError::BadImage {
                    path: path.to_path_buf(),
                    reason: format!("the image is damaged or truncated ({detail})"),
                })
            }
        }
    }

    /// Creates a qcow2 image of `size` bytes, or an overlay on `backing`.
    pub fn create(
        &self,
        path: &Path,
        size: Option<u64>,
        backing: Option<(&Path, &str)>,
    ) -> Result<(), StorageError> {
        let size_s = size.map(|s| s.to_string());
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
        ];
        if let Some((b, fmt)) = backing {
            args.extend(["-b".as_ref(), b.as_os_str(), "-F".as_ref(), fmt.as_ref()]);
        }
        args.push(path.as_os_str());
        if let Some(s) = &size_s {
            args.push(s.as_ref());
        }
        self.run("create", &args).map(drop)
    }

    /// Grows an image to `size` bytes.
    pub fn resize(&self, path: &Path, size: u64) -> Result<(), StorageError> {
        let s = size.to_string();
        self.run(
            "resize",
            &[
                "resize".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                path.as_os_str(),
                s.as_ref(),
            ],
        )
        .map(drop)
    }

    /// Converts `src` (of `format`) into a new qcow2 `dst`, calling
    /// `progress` with 0..=100 as qemu-img reports it.
    pub fn convert(
        &self,
        src: &Path,
        format: &str,
        dst: &Path,
        progress: impl FnMut(f64),
    ) -> Result<(), StorageError> {
        self.convert_cancellable(src, format, dst, progress, &|| false)
    }

    /// [`Self::convert`] that stops qemu-img (by its pid) and fails with
    /// [`StorageError::Cancelled`] once `cancelled` returns true; it is asked
    /// at every progress report. `dst` is then incomplete: the caller removes it.
    pub fn convert_cancellable(
        &self,
        src: &Path,
        format: &str,
        dst: &Path,
        mut progress: impl FnMut(f64),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), StorageError> {
        let mut child = Command::new(&self.bin)
            .args(["convert", "-p", "-f", format, "-O", "qcow2"])
            .arg(src)
            .arg(dst)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StorageError::QemuImg {
                op: "convert",
                stderr: e.to_string(),
            })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut buf = [0u8; 256];
        let mut pending = String::new();
        loop {
            let n = stdout
                .read(&mut buf)
                .map_err(|e| StorageError::io(dst, e))?;
            if n == 0 {
                break;
            }
            if cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StorageError::Cancelled { op: "convert" });
            }
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            // Progress lines look like "    (42.00/100%)\r".
            while let Some(end) = pending.find(['\r', '\n']) {
                let line: String = pending.drain(..=end).collect();
                if let Some(p) = parse_progress(&line) {
                    progress(p);
                }
            }
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|e| StorageError::io(dst, e))?;
        if !status.success() {
            return Err(StorageError::QemuImg {
                op: "convert",
                stderr: stderr.trim().to_string(),
            });
        }
        progress(100.0);
        Ok(())
    }

    /// `qemu-img snapshot -c|-a|-d`.
    pub fn snapshot(&self, path: &Path, op: SnapshotOp, name: &str) -> Result<(), StorageError> {
        let (flag, opname) = match op {
            SnapshotOp::Create => ("-c", "snapshot create"),
            SnapshotOp::Apply => ("-a", "snapshot revert"),
            SnapshotOp::Delete => ("-d", "snapshot delete"),
        };
        self.run(
            opname,
            &[
                "snapshot".as_ref(),
                "-q".as_ref(),
                flag.as_ref(),
                name.as_ref(),
                path.as_os_str(),
            ],
        )
        .map(drop)
    }
}

/// What to do with an internal snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOp {
    Create,
    Apply,
    Delete,
}

fn parse_progress(line: &str) -> Option<f64> {
    let l = line.trim();
    let inner = l.strip_prefix('(')?.strip_suffix("%)")?;
    inner.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_lines() {
        assert_eq!(super::parse_progress("    (42.50/100%)\r"), Some(42.5));
        assert_eq!(super::parse_progress("garbage"), None);
    }
}
