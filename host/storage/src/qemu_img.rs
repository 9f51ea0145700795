//! A thin, typed wrapper around the `qemu-img` tool.

use crate::error::StorageError;
use crate::limits::{self, Limits};
use nasvisor_best_effort::BestEffort;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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

/// The `qemu-img` binary (`$NASVISOR_QEMU_IMG`, else `qemu-img` on PATH)
/// and the [`Limits`] every run of it gets.
#[derive(Debug, Clone)]
pub struct QemuImg {
    bin: PathBuf,
    limits: Limits,
}

impl Default for QemuImg {
    fn default() -> Self {
        QemuImg {
            bin: std::env::var_os("NASVISOR_QEMU_IMG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("qemu-img")),
            limits: Limits::default(),
        }
    }
}

impl QemuImg {
    /// This `qemu-img` under other limits.
    pub fn with_limits(mut self, limits: Limits) -> QemuImg {
        self.limits = limits;
        self
    }

    /// The limits its runs get.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs a bounded operation (`cpu`: its CPU limit, if any) on `path`.
    fn run(
        &self,
        op: &'static str,
        path: &Path,
        cpu: Option<u64>,
        args: &[&std::ffi::OsStr],
    ) -> Result<limits::Finished, StorageError> {
        let mut cmd = limits::command(&self.bin, self.limits.memory_bytes, cpu);
        cmd.args(args);
        // Inspections have the wall-clock bound; the operations on volumes
        // of our own only a generous one.
        let wall = match cpu {
            Some(_) => self.limits.wall,
            None => std::time::Duration::from_secs(3600),
        };
        let out = limits::run(cmd, wall).map_err(|e| StorageError::QemuImg {
            op,
            stderr: format!("cannot run {}: {e}", self.bin.display()),
        })?;
        if let Some(hit) = limits::limit_hit(
            out.status,
            &out.stderr,
            out.timed_out,
            self.limits.memory_bytes,
            cpu,
        ) {
            return Err(limits::limit_error(path, op, hit));
        }
        Ok(out)
    }

    /// Runs an operation that must succeed; its stdout.
    fn run_ok(
        &self,
        op: &'static str,
        path: &Path,
        cpu: Option<u64>,
        args: &[&std::ffi::OsStr],
    ) -> Result<String, StorageError> {
        let out = self.run(op, path, cpu, args)?;
        if !out.status.success() {
            return Err(StorageError::qemu_img(op, out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `qemu-img info --output=json` of an image in `format` (pinned: qemu
    /// never probes), under the CPU and memory limits. The whole JSON, for
    /// callers that check more than [`ImageInfo`] holds.
    pub fn info_json(&self, path: &Path, format: &str) -> Result<serde_json::Value, StorageError> {
        let args: [&std::ffi::OsStr; 6] = [
            "info".as_ref(),
            "--output=json".as_ref(),
            "--force-share".as_ref(),
            "-f".as_ref(),
            format.as_ref(),
            path.as_os_str(),
        ];
        let json = self
            .run_ok("info", path, Some(self.limits.cpu_secs), &args)
            .map_err(|e| match e {
                StorageError::QemuImg { stderr, .. } => StorageError::BadImage {
                    path: path.to_path_buf(),
                    reason: format!("not a readable {format} image: {stderr}"),
                },
                other => other,
            })?;
        serde_json::from_str(&json).map_err(|e| StorageError::BadImage {
            path: path.to_path_buf(),
            reason: format!("unexpected qemu-img info output: {e}"),
        })
    }

    /// `qemu-img info` of an image in `format` (pinned: qemu never probes).
    pub fn info(&self, path: &Path, format: &str) -> Result<ImageInfo, StorageError> {
        let v = self.info_json(path, format)?;
        let raw: RawInfo = serde_json::from_value(v).map_err(|e| StorageError::BadImage {
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

    /// `qemu-img check`, under the CPU and memory limits: refuses an image
    /// with corruptions or one whose data lies beyond the end of the file (a
    /// truncated image). Formats qemu-img cannot check (raw) pass.
    pub fn check(&self, path: &Path, format: &str) -> Result<(), StorageError> {
        if format == "raw" {
            return Ok(());
        }
        let args: [&std::ffi::OsStr; 6] = [
            "check".as_ref(),
            "--output=json".as_ref(),
            "--force-share".as_ref(),
            "-f".as_ref(),
            format.as_ref(),
            path.as_os_str(),
        ];
        let out = self.run("check", path, Some(self.limits.cpu_secs), &args)?;
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
                    .unwrap_or(out.stderr);
                Err(StorageError::BadImage {
                    path: path.to_path_buf(),
                    reason: format!("the image is damaged or truncated ({detail})"),
                })
            }
        }
    }

    /// Creates a qcow2 image of `size` bytes, or an overlay on `backing`
    /// (a qcow2 image).
    pub fn create(
        &self,
        path: &Path,
        size: Option<u64>,
        backing: Option<&Path>,
    ) -> Result<(), StorageError> {
        let size_s = size.map(|s| s.to_string());
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
        ];
        if let Some(b) = backing {
            args.extend([
                "-b".as_ref(),
                b.as_os_str(),
                "-F".as_ref(),
                "qcow2".as_ref(),
            ]);
        }
        args.push(path.as_os_str());
        if let Some(s) = &size_s {
            args.push(s.as_ref());
        }
        self.run_ok("create", path, None, &args).map(drop)
    }

    /// Grows an image to `size` bytes.
    pub fn resize(&self, path: &Path, size: u64) -> Result<(), StorageError> {
        let s = size.to_string();
        self.run_ok(
            "resize",
            path,
            None,
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
        virtual_size: u64,
        dst: &Path,
        progress: impl FnMut(f64),
    ) -> Result<(), StorageError> {
        self.convert_cancellable(src, format, virtual_size, dst, progress, &|| false)
    }

    /// [`Self::convert`] that stops qemu-img (by its pid) and fails with
    /// [`StorageError::Cancelled`] once `cancelled` returns true; it is asked
    /// at every progress report. `dst` is then incomplete: the caller removes
    /// it. It runs under the memory limit and a CPU limit in proportion to
    /// `virtual_size` ([`Limits::convert_cpu_secs`]).
    pub fn convert_cancellable(
        &self,
        src: &Path,
        format: &str,
        virtual_size: u64,
        dst: &Path,
        mut progress: impl FnMut(f64),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), StorageError> {
        let cpu = self.limits.convert_cpu_secs(virtual_size);
        let mut child = limits::command(&self.bin, self.limits.memory_bytes, Some(cpu))
            .args(["convert", "-p", "-f", format, "-O", "qcow2"])
            .arg(src)
            .arg(dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StorageError::QemuImg {
                op: "convert",
                stderr: format!("cannot run {}: {e}", self.bin.display()),
            })?;
        let errors = limits::stderr_of(&mut child);
        let Some(mut stdout) = child.stdout.take() else {
            child.kill().best_effort("kill qemu-img");
            child.wait().best_effort("reap qemu-img");
            return Err(StorageError::QemuImg {
                op: "convert",
                stderr: "no stdout".into(),
            });
        };
        let mut buf = [0u8; 256];
        let mut pending = String::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    child.kill().best_effort("kill qemu-img");
                    child.wait().best_effort("reap qemu-img");
                    return Err(StorageError::io(dst, e));
                }
            };
            if n == 0 {
                break;
            }
            if cancelled() {
                child.kill().best_effort("kill qemu-img");
                child.wait().best_effort("reap qemu-img");
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
        let status = child.wait().map_err(|e| StorageError::io(dst, e))?;
        let stderr = limits::joined(errors);
        if let Some(hit) =
            limits::limit_hit(status, &stderr, None, self.limits.memory_bytes, Some(cpu))
        {
            return Err(limits::limit_error(src, "convert", hit));
        }
        if !status.success() {
            return Err(StorageError::qemu_img("convert", stderr));
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
        self.run_ok(
            opname,
            path,
            None,
            &[
                "snapshot".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
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
