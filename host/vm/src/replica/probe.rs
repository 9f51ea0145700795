//! Is a replica server answering, and is the disk under it? A probe from
//! the active host, on a connection of its own (`qemu-io`, over TLS with
//! the same credentials as QEMU), within a time bound: for each replicated
//! disk it writes one sector with FUA to the server's probe file (a small
//! file beside the replica image, on the same disk, exported as
//! [`probe_export`]).
//!
//! It finds what no socket option can:
//! - a server that stopped answering without closing its connection (a
//!   stopped process, a hang), whose kernel still acknowledges the bytes
//!   QEMU sends;
//! - a live server whose disk hangs (a dead disk, a hung array or mount):
//!   a read is answered from its page cache, and a flush is skipped while
//!   no write completed since the last, but a write that must reach the
//!   disk does not come back. The guest's writes wait on that disk just
//!   as long, with no error.
//!
//! The caller then cuts the replica's link ([`super::link::Sockets::cut`]),
//! and the guest's held write fails as on a cut link.
//!
//! A server started by an older nasvisord has no probe file: it gets a
//! read and a flush of the replica export itself instead, which finds a
//! hung server but only some hung disks.

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
    /// The server, or the disk under it, did not answer in time: it
    /// hangs.
    #[error(
        "the replica server at {addr} did not answer a probe of export {export} within {within:?} (the server or its disk hangs)"
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

/// The export of the probe file of the replica export `export`.
pub fn probe_export(export: &str) -> String {
    format!("{export}-probe")
}

/// Probes each of `targets`' servers with `qemu_io`, each disk within
/// `within`: a write with FUA to its probe file or, on a server without
/// one, a read and a flush of the replica export.
pub async fn probe(
    qemu_io: &Path,
    targets: &[MirrorTarget],
    tls: Option<&ProbeTls>,
    within: Duration,
) -> Result<(), ProbeError> {
    for t in targets {
        match run(
            qemu_io,
            t,
            &probe_export(&t.export),
            "write -q -f 0 512",
            tls,
            within,
        )
        .await
        {
            Err(ProbeError::Failed { reason, .. }) if reason.contains(NO_EXPORT) => {
                run(qemu_io, t, &t.export, "read -q 0 512\nflush", tls, within).await?
            }
            r => r?,
        }
    }
    Ok(())
}

/// How `qemu-io` says an export is not there ("Requested export not
/// available").
const NO_EXPORT: &str = "export not available";

async fn run(
    qemu_io: &Path,
    t: &MirrorTarget,
    export: &str,
    commands: &str,
    tls: Option<&ProbeTls>,
    within: Duration,
) -> Result<(), ProbeError> {
    let failed = |reason: String| ProbeError::Failed {
        addr: t.addr.to_string(),
        export: export.to_string(),
        reason,
    };
    let mut opts = format!(
        "driver=nbd,server.type=inet,server.host={},server.port={},export={export}",
        t.addr.host, t.addr.port
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
    cmd.args(["--image-opts", &opts]);
    for c in commands.split('\n') {
        cmd.args(["-c", c]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| failed(format!("{}: {e}", qemu_io.display())))?;
    match tokio::time::timeout(within, child.wait_with_output()).await {
        Err(_) => Err(ProbeError::Timeout {
            addr: t.addr.to_string(),
            export: export.to_string(),
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
