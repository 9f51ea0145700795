//! Choosing the accelerator: KVM only when a probe guest actually runs under it.
//!
//! `/dev/kvm` opening is not enough: on nested hosts KVM may accept a VM and
//! then run it far too slowly to boot anything (see `probe.S`). So the probe
//! boots a tiny guest (a 64 KiB firmware image, no disk, no kernel) under
//! `-accel kvm` with a timeout; it must reach long mode, do some real work and
//! exit through `isa-debug-exit` with the expected status. Otherwise TCG.

use nasvisor_best_effort::BestEffort;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// The outcome of [`probe`]: which accelerator, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    /// Human-readable reason, for the host's status report.
    pub reason: String,
    /// How long the KVM probe guest took, when it ran to completion.
    pub kvm_probe_time: Option<Duration>,
}

/// Options of [`probe`].
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub qemu_binary: PathBuf,
    /// How long the probe guest may take under KVM (default 5 s; a healthy KVM
    /// needs well under 100 ms).
    pub timeout: Duration,
    /// The KVM device node.
    pub kvm_device: PathBuf,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            timeout: Duration::from_secs(5),
            kvm_device: PathBuf::from("/dev/kvm"),
        }
    }
}

/// Why a probe guest did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot write the probe image: {0}")]
    Image(#[source] std::io::Error),
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the probe guest did not finish within {0:?}")]
    Timeout(Duration),
    #[error(
        "the probe guest ended with {status} instead of exit status {PROBE_EXIT_STATUS}: {stderr}"
    )]
    BadExit { status: String, stderr: String },
}

/// QEMU's exit status when the probe guest completes: `(0x2a << 1) | 1`.
pub const PROBE_EXIT_STATUS: i32 = 85;

/// Decides between KVM and TCG. Never fails: anything wrong with KVM means TCG,
/// with the reason.
pub async fn probe(options: &ProbeOptions) -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accel: Accel::Tcg,
        reason,
        kvm_probe_time: None,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&options.kvm_device)
    {
        return tcg(format!("cannot open {}: {e}", options.kvm_device.display()));
    }
    match run_probe_guest(&options.qemu_binary, Accel::Kvm, options.timeout).await {
        Ok(elapsed) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!("a probe guest ran under KVM in {} ms", elapsed.as_millis()),
            kvm_probe_time: Some(elapsed),
        },
        Err(e) => {
            tracing::warn!(error = %e, "KVM probe failed; using TCG");
            tcg(format!(
                "{} opens, but under KVM {e}",
                options.kvm_device.display()
            ))
        }
    }
}

/// Boots the probe guest under `accel` and returns how long it took.
pub async fn run_probe_guest(
    qemu_binary: &std::path::Path,
    accel: Accel,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let mut rom = tempfile::Builder::new()
        .prefix("nasvisor-accel-probe-")
        .suffix(".rom")
        .tempfile()
        .map_err(ProbeError::Image)?;
    rom.write_all(&probe_rom()).map_err(ProbeError::Image)?;
    rom.flush().map_err(ProbeError::Image)?;

    let start = Instant::now();
    let mut child = tokio::process::Command::new(qemu_binary)
        .args(["-accel", accel.qemu_name()])
        .args([
            "-machine",
            "pc",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-nic", "none", "-serial", "none"])
        .args(["-monitor", "none", "-parallel", "none"])
        .arg("-bios")
        .arg(rom.path())
        .args(["-device", "isa-debug-exit,iobase=0x501,iosize=1"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProbeError::Spawn {
            binary: qemu_binary.to_path_buf(),
            source,
        })?;
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            // What was read before an error is still the best message.
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(ProbeError::Spawn {
                binary: qemu_binary.to_path_buf(),
                source,
            })
        }
        Err(_) => {
            // Our direct child: kill and reap it.
            child.kill().await.best_effort("kill the accelerator probe");
            return Err(ProbeError::Timeout(timeout));
        }
    };
    let elapsed = start.elapsed();
    let stderr = stderr_task.await.unwrap_or_default();
    if status.code() == Some(PROBE_EXIT_STATUS) {
        Ok(elapsed)
    } else {
        Err(ProbeError::BadExit {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

/// The probe guest's code, assembled from `probe.S`.
const PROBE_CODE: &[u8] = &[
    0xfa, 0x2e, 0x66, 0x0f, 0x01, 0x16, 0xe8, 0x00, 0x0f, 0x20, 0xc0, 0x66, //
    0x83, 0xc8, 0x01, 0x0f, 0x22, 0xc0, 0x66, 0xea, 0x1a, 0x00, 0x0f, 0x00, //
    0x08, 0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, //
    0xbf, 0x00, 0x10, 0x00, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0x0c, 0x00, 0x00, //
    0xf3, 0xab, 0xc7, 0x05, 0x00, 0x10, 0x00, 0x00, 0x03, 0x20, 0x00, 0x00, //
    0xc7, 0x05, 0x00, 0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00, 0xbf, 0x00, //
    0x30, 0x00, 0x00, 0xb8, 0x83, 0x00, 0x00, 0x00, 0xb9, 0x00, 0x02, 0x00, //
    0x00, 0x89, 0x07, 0x05, 0x00, 0x00, 0x20, 0x00, 0x83, 0xc7, 0x08, 0xe2, //
    0xf4, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0x0f, 0x20, 0xe0, //
    0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, //
    0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20, 0xc0, 0x0d, //
    0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xea, 0x92, 0x00, 0x0f, 0x00, //
    0x18, 0x00, 0x48, 0xc7, 0xc7, 0x00, 0x00, 0x10, 0x00, 0x48, 0xc7, 0xc1, //
    0x00, 0x10, 0x00, 0x00, 0x48, 0x89, 0x3f, 0x48, 0x81, 0xc7, 0x00, 0x10, //
    0x00, 0x00, 0x48, 0xff, 0xc9, 0x75, 0xf1, 0x48, 0xc7, 0xc1, 0x00, 0x2d, //
    0x31, 0x01, 0x48, 0xff, 0xc9, 0x75, 0xfb, 0x66, 0xba, 0x01, 0x05, 0xb0, //
    0x2a, 0xee, 0xf4, 0xeb, 0xfd, 0x0f, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x9b, 0xcf, 0x00, //
    0xff, 0xff, 0x00, 0x00, 0x00, 0x93, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, //
    0x00, 0x9b, 0xaf, 0x00, 0x1f, 0x00, 0xc8, 0x00, 0x0f, 0x00,
];

/// The 64 KiB probe firmware image: [`PROBE_CODE`] at its start (physical
/// 0xF0000), `hlt` filler, and a far jump to it at the reset vector.
pub fn probe_rom() -> Vec<u8> {
    let mut rom = vec![0xf4u8; 64 * 1024];
    rom[..PROBE_CODE.len()].copy_from_slice(PROBE_CODE);
    // jmp far F000:0000
    rom[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0x00, 0x00, 0xf0]);
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_layout() {
        let rom = probe_rom();
        assert_eq!(rom.len(), 65536);
        assert_eq!(&rom[0xfff0..0xfff5], &[0xea, 0, 0, 0, 0xf0]);
        assert_eq!(rom[0], 0xfa); // cli
    }

    /// The embedded bytes are what `probe.S` assembles to (skipped when
    /// binutils are not installed).
    #[test]
    fn embedded_code_matches_source() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/accel/probe.S");
        if let Some(bin) = crate::asm::assemble_flat(std::path::Path::new(src), false) {
            assert_eq!(bin, PROBE_CODE);
        }
    }

    #[tokio::test]
    async fn missing_kvm_device_means_tcg() {
        let choice = probe(&ProbeOptions {
            kvm_device: "/nonexistent/kvm".into(),
            ..ProbeOptions::default()
        })
        .await;
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(
            choice.reason.contains("/nonexistent/kvm"),
            "{}",
            choice.reason
        );
    }
}
