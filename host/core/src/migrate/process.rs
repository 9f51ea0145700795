//! Helper processes of moves and copies between hosts: `qemu-nbd` servers
//! (started, awaited, stopped by pid), `qemu-img` runs, free ports.

use crate::errors;
use crate::jobs::JobFailure;
use nasvisor_api_types::CoreError;
use std::time::{Duration, Instant};

/// A port on `ip` that was free a moment ago.
pub(crate) fn free_port(ip: &str) -> Result<u16, CoreError> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| errors::internal(format!("no free port on {ip}: {e}")))
}

/// SIGTERM to a `qemu-nbd` left by an earlier run of this daemon, if `pid`
/// still is one (pids are checked, never names).
pub(crate) fn stop_orphan_nbd(pid: u32) {
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
                if let Err(err) = e.read_to_string(&mut msg).await {
                    tracing::warn!(error = %err, "cannot read the error output of qemu-nbd");
                }
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
        if let Err(e) = child.kill().await {
            tracing::warn!(pid = ?child.id(), error = %e, "cannot kill a child that ignored SIGTERM");
        }
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
                    if let Err(e) = s.read_to_string(&mut msg).await {
                        tracing::warn!(error = %e, "cannot read the error output of qemu-img");
                    }
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
