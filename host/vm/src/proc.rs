//! The QEMU process, known by pid only.
//!
//! A daemonized QEMU is not our child (`-daemonize` forks twice), so we cannot
//! `waitpid` it. [`QemuProcess`] holds a pidfd instead: it pins the identity of
//! the process (no pid-reuse races when signalling) and becomes readable when the
//! process exits. Where pidfds are unavailable it falls back to polling
//! `/proc/<pid>`. Processes are only ever addressed by pid, never by name.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often the `/proc` fallback polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A process we watch and may signal.
pub struct QemuProcess {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl std::fmt::Debug for QemuProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuProcess")
            .field("pid", &self.pid.as_raw_nonzero())
            .field("pidfd", &self.pidfd.is_some())
            .finish()
    }
}

impl QemuProcess {
    /// Starts watching `pid`. Fails with `NotFound` if no such process exists
    /// (or it is already a zombie). Must run inside a tokio runtime.
    pub fn open(pid: i32) -> io::Result<QemuProcess> {
        let pid = Pid::from_raw(pid)
            .filter(|p| p.as_raw_nonzero().get() > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
        let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK) {
            // SAFETY: `fd` is an `OwnedFd` that the `AsyncFd` takes ownership of:
            // it is open, stays open and refers to the same pidfd until the
            // `AsyncFd` is dropped, and `as_raw_fd` on an `OwnedFd` always
            // returns that same descriptor. We never swap it out via `get_mut`.
            Ok(fd) => unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok(),
            Err(rustix::io::Errno::SRCH) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no process {pid:?}"),
                ))
            }
            Err(e) => {
                tracing::debug!(error = %e, "pidfd_open failed; polling /proc instead");
                None
            }
        };
        let process = QemuProcess { pid, pidfd };
        if !process.is_alive() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {} has exited", process.pid()),
            ));
        }
        Ok(process)
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// Whether the process still runs (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        is_alive(self.pid())
    }

    /// Resolves when the process has exited.
    pub async fn wait_exit(&self) {
        if let Some(fd) = &self.pidfd {
            // A pidfd polls readable once the process has terminated.
            match fd.readable().await {
                Ok(_guard) => return,
                Err(e) => tracing::debug!(error = %e, "pidfd poll failed; polling /proc"),
            }
        }
        while self.is_alive() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub async fn wait_exit_timeout(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.wait_exit())
            .await
            .is_ok()
            || !self.is_alive()
    }

    /// Sends `signal` to exactly this process (through the pidfd when there is
    /// one). Signalling a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let result = match &self.pidfd {
            Some(fd) => rustix::process::pidfd_send_signal(fd.get_ref(), signal),
            None => rustix::process::kill_process(self.pid, signal),
        };
        match result {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILL.
    pub fn kill(&self) -> io::Result<()> {
        self.signal(Signal::KILL)
    }
}

/// Whether `pid` names a live (non-zombie) process.
pub fn is_alive(pid: i32) -> bool {
    matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X' && state != 'x')
}

/// The state letter from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), if the process
/// exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// The argv of `pid`, from `/proc/<pid>/cmdline`.
pub fn cmdline(pid: i32) -> io::Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The guest name a QEMU was started with (`-name guest=NAME,...`), read
/// from its command line.
pub fn guest_name(pid: i32) -> Option<String> {
    let args = cmdline(pid).ok()?;
    let at = args.iter().position(|a| a == "-name")?;
    args.get(at + 1)?
        .split(',')
        .find_map(|p| p.strip_prefix("guest=").map(str::to_string))
}

/// Reads a pidfile as QEMU writes it (`<pid>\n`).
/// Which process `pid` is, in a form no other process shares: this boot of
/// the host, the pid and the process's start time (`/proc/<pid>/stat`,
/// field 22). `None` when no such process runs.
pub fn instance_id(pid: i32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')'. Field 22 is the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{}/{pid}/{start}", boot.trim()))
}

pub fn read_pidfile(path: &Path) -> io::Result<i32> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a pid: {:?}", path.display(), text.trim()),
            )
        })
}

/// Checks that `pid` is a QEMU system emulator whose command line contains
/// `needle` (its QMP socket path). Returns a description of the mismatch.
pub fn verify_qemu(pid: i32, needle: &str) -> Result<(), String> {
    let args = cmdline(pid).map_err(|e| format!("cannot read /proc/{pid}/cmdline: {e}"))?;
    let argv0 = args.first().cloned().unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let is_qemu = |s: &str| {
        Path::new(s)
            .file_name()
            .map(|n| n.to_string_lossy().starts_with("qemu-system"))
            .unwrap_or(false)
    };
    if !is_qemu(&argv0) && !is_qemu(&exe) {
        return Err(format!(
            "process {pid} is not QEMU (argv[0] {argv0:?}, exe {exe:?})"
        ));
    }
    if !args.iter().any(|a| a.contains(needle)) {
        return Err(format!(
            "QEMU process {pid} does not use {needle} (another VM's pidfile, or a reused pid)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_has_a_cmdline() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(verify_qemu(me, "whatever")
            .unwrap_err()
            .contains("not QEMU"));
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pidfile(&p).unwrap(), 1234);
        std::fs::write(&p, "garbage").unwrap();
        assert!(read_pidfile(&p).is_err());
        std::fs::write(&p, "-5").unwrap();
        assert!(read_pidfile(&p).is_err());
    }

    #[tokio::test]
    async fn watches_a_child_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = QemuProcess::open(child.id() as i32).unwrap();
        assert!(p.is_alive());
        assert!(!p.wait_exit_timeout(Duration::from_millis(100)).await);
        p.kill().unwrap();
        // Our own child turns into a zombie until reaped; the pidfd fires anyway.
        assert!(p.wait_exit_timeout(Duration::from_secs(10)).await);
        child.wait().unwrap();
        p.kill().unwrap(); // signalling an exited process is fine
    }
}
