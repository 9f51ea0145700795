//! Is a replica server answering? A probe from the active host, on a
//! connection of its own: `qemu-io` reads the first sector of each export
//! (read-only, over TLS with the same credentials as QEMU), within a time
//! bound.
//!
//! It finds what no socket option can: a server that stopped answering
//! without closing its connection (a stopped process, a hang), whose
//! kernel still acknowledges the bytes QEMU sends. The caller then cuts the
//! replica's link ([`super::link::Sockets::cut`]), and the guest's held
//! write fails as on a cut link.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::migration::MirrorTarget;

/// The TLS of a probe: the directory of QEMU's client credentials
/// (`tls-creds-x509`, endpoint client) and the server's name in its
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTls {
    pub dir: PathBuf,
    pub hostname: String,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The server did not answer in time: it hangs.
    #[error(
        "the replica server at {addr} did not answer a read of export {export} within {within:?}"
    )]
    Timeout {
        addr: String,
        export: String,
        within: Duration,
    },
    /// The read failed (a server gone, a refused connection, or a
    /// `qemu-io` that could not run).
    #[error("probing the replica server at {addr} (export {export}) failed: {reason}")]
    Failed {
        addr: String,
        export: String,
        reason: String,
    },
}

/// Reads the first sector of each of `targets`' exports with `qemu_io`,
/// each within `within`.
pub async fn probe(
    qemu_io: &Path,
    targets: &[MirrorTarget],
    tls: Option<&ProbeTls>,
    within: Duration,
) -> Result<(), ProbeError> {
    for t in targets {
        probe_one(qemu_io, t, tls, within).await?;
    }
    Ok(())
}

async fn probe_one(
    qemu_io: &Path,
    t: &MirrorTarget,
    tls: Option<&ProbeTls>,
    within: Duration,
) -> Result<(), ProbeError> {
    let failed = |reason: String| ProbeError::Failed {
        addr: t.addr.to_string(),
        export: t.export.clone(),
        reason,
    };
    let mut opts = format!(
        "driver=nbd,server.type=inet,server.host={},server.port={},export={}",
        t.addr.host, t.addr.port, t.export
    );
    let mut cmd = tokio::process::Command::new(qemu_io);
    if let Some(tls) = tls {
        cmd.arg("--object").arg(format!(
            "tls-creds-x509,id=probe-tls,dir={},endpoint=client",
            tls.dir.display()
        ));
        opts.push_str(&format!(
            ",tls-creds=probe-tls,tls-hostname={}",
            tls.hostname
        ));
    }
    cmd.args(["-r", "--image-opts", &opts, "-c", "read -q 0 512"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| failed(format!("{}: {e}", qemu_io.display())))?;
    match tokio::time::timeout(within, child.wait_with_output()).await {
        Err(_) => Err(ProbeError::Timeout {
            addr: t.addr.to_string(),
            export: t.export.clone(),
            within,
        }),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Ok(Ok(out)) => {
            // qemu-io reports a failed command on its output, not always in
            // its exit status.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && !text.to_lowercase().contains("error") {
                Ok(())
            } else {
                Err(failed(text.trim().chars().take(400).collect()))
            }
        }
    }
}
