//! The HA watchdog (docs/ha.md, "The watchdog").
//!
//! A host's HA VMs run in QEMU processes that outlive `nasvisord`. When the
//! host loses the cluster, the leader starts those VMs elsewhere after a
//! deadline, so they must be gone by then, also when the daemon itself died
//! or hangs and cannot stop them. The daemon therefore writes a **lease**
//! ([`Lease`]: a deadline and the HA QEMUs, each by pid and start time) each
//! time it confirms its contact with the cluster, and a separate process,
//! the watchdog ([`run`], started by [`ensure_running`] as `nasvisord
//! watchdog --lease PATH`), kills those QEMUs when the deadline passes
//! without a renewal. It leaves a report ([`Fired`]) for the daemon.
//!
//! - **Clock**: `CLOCK_MONOTONIC` ([`monotonic_ms`]), the same for every
//!   process of the host and never set back.
//! - **Pid reuse**: a guest is killed only when the process with its pid
//!   started at the recorded time (field 22 of `/proc/PID/stat`).
//! - **A corrupt or vanished lease file** does not disarm the watchdog: it
//!   keeps the last lease it read.
//! - **Daemon restarts**: the watchdog is a session of its own and survives
//!   them; a restarted daemon finds it again by its pid file and keeps it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Errors of the lease and the watchdog.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// A file (the lease, its report, the pid file, the log) could not be
    /// read or written, or the watchdog could not be started.
    #[error("{path}: {source}")]
    Io {
        /// The file, or the program that could not be started.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lease or its report is not the JSON it should be.
    #[error("{path}: not a lease ({source})")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No start time for a process: it is gone, a zombie, or its `stat`
    /// could not be parsed.
    #[error("/proc/{pid}/stat: {reason}")]
    Proc {
        /// The process.
        pid: u32,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WatchdogError + '_ {
    move |source| WatchdogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `CLOCK_MONOTONIC`, in ms.
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// A process the watchdog kills when the lease lapses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// The VM it runs (for the report).
    pub vm: String,
    /// The process (a QEMU).
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/PID/stat`).
    pub start_ticks: u64,
}

impl Guard {
    /// The guard of process `pid`, running VM `vm`.
    pub fn of(vm: &str, pid: u32) -> Result<Guard, WatchdogError> {
        Ok(Guard {
            vm: vm.to_string(),
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether the process with this pid is the one guarded.
    fn is_alive(&self) -> bool {
        start_ticks(self.pid).is_ok_and(|t| t == self.start_ticks)
    }
}

/// The start time of process `pid` (field 22 of its `stat`, counted after
/// the command name, which may hold spaces and parentheses).
fn start_ticks(pid: u32) -> Result<u64, WatchdogError> {
    let proc_err = |reason: String| WatchdogError::Proc { pid, reason };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| proc_err(e.to_string()))?;
    parse_start_ticks(&stat).map_err(|r| proc_err(r.into()))
}

/// Field 22 (starttime) of a `/proc/PID/stat` line, counted after the
/// last `)`: the command name (field 2) may hold spaces and parentheses.
/// A zombie or a dead process has none.
fn parse_start_ticks(stat: &str) -> Result<u64, &'static str> {
    let (_, after) = stat.rsplit_once(')').ok_or("no command name")?;
    // After the name: state (field 3) ... starttime (field 22).
    let fields: Vec<&str> = after.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X" | &"x")) {
        return Err("a zombie or dead");
    }
    fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or("no start time")
}

/// What the watchdog guards: processes to kill once `expires_at_ms`
/// ([`monotonic_ms`]) has passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The deadline, in [`monotonic_ms`] time.
    pub expires_at_ms: u64,
    /// The processes killed once it has passed.
    pub guests: Vec<Guard>,
}

/// What the watchdog killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// When ([`monotonic_ms`]) it last fired.
    pub at_ms: u64,
    /// Every process it killed since the report was last cleared.
    pub killed: Vec<Guard>,
}

/// The lease file, its report (`PATH.fired`) and the watchdog's pid file
/// (`PATH.pid`).
#[derive(Debug, Clone)]
pub struct LeaseFile {
    path: PathBuf,
}

impl LeaseFile {
    /// The lease at `path`; its report and pid file sit beside it.
    pub fn new(path: impl Into<PathBuf>) -> LeaseFile {
        LeaseFile { path: path.into() }
    }

    /// The lease's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, ext: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    }

    /// The report's path.
    pub fn fired_path(&self) -> PathBuf {
        self.sibling(".fired")
    }

    /// The watchdog's pid file.
    pub fn pid_path(&self) -> PathBuf {
        self.sibling(".pid")
    }

    /// Writes `lease` (atomically, mode 0600).
    pub fn write(&self, lease: &Lease) -> Result<(), WatchdogError> {
        let bytes = serde_json::to_vec(lease).map_err(|source| WatchdogError::Format {
            path: self.path.clone(),
            source,
        })?;
        nasvisor_best_effort::write_private(&self.path, &bytes).map_err(io(&self.path))
    }

    /// The lease; `None` when there is no file.
    pub fn read(&self) -> Result<Option<Lease>, WatchdogError> {
        read_json(&self.path)
    }

    /// The watchdog's report; `None` when it never fired (or it was
    /// cleared).
    pub fn fired(&self) -> Result<Option<Fired>, WatchdogError> {
        read_json(&self.fired_path())
    }

    /// Removes the report.
    pub fn clear_fired(&self) {
        nasvisor_best_effort::remove_file(&self.fired_path());
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, WatchdogError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| WatchdogError::Format {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// What the watchdog remembers between rounds.
#[derive(Debug, Default)]
pub struct WatchState {
    /// The last lease read.
    last: Option<Lease>,
}

/// One round of the watchdog: reads the lease (keeping the last good one
/// when the file is unreadable), and when it has lapsed kills the guests
/// that are still the processes recorded, adds them to the report
/// (`PATH.fired`) and writes the lease back without guests, so that it
/// does not fire again. What it killed.
///
/// The report is written before the lease: a lease that cannot be written
/// loses no report. The lease is written back only if the file still holds
/// the lease that lapsed: a renewal that landed meanwhile is kept.
pub fn enforce_once(
    lease: &LeaseFile,
    state: &mut WatchState,
) -> Result<Option<Fired>, WatchdogError> {
    match lease.read() {
        Ok(Some(l)) => state.last = Some(l),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "unreadable lease; the last one read stays in force"),
    }
    let Some(current) = &state.last else {
        return Ok(None);
    };
    let now = monotonic_ms();
    if now <= current.expires_at_ms || current.guests.is_empty() {
        return Ok(None);
    }
    let lapsed = current.clone();
    let killed = kill_guests(&lapsed, now);
    let disarmed = Lease {
        expires_at_ms: lapsed.expires_at_ms,
        guests: Vec::new(),
    };
    state.last = Some(disarmed.clone());
    let fired = (!killed.is_empty()).then_some(Fired { at_ms: now, killed });
    if let Some(f) = &fired {
        report(lease, f)?;
    }
    match lease.read() {
        Ok(Some(l)) if l != lapsed => {
            tracing::info!("the lease was renewed while the watchdog fired; the renewal stays");
        }
        // Gone (its host's data removed): nothing to disarm on disk.
        Ok(None) => {}
        // The lapsed lease, or a corrupt file: a valid disarmed lease replaces it.
        Ok(Some(_)) | Err(_) => lease.write(&disarmed)?,
    }
    Ok(fired)
}

/// SIGKILLs every guest of `lapsed` that is still the process recorded.
/// Those killed.
fn kill_guests(lapsed: &Lease, now: u64) -> Vec<Guard> {
    let mut killed = Vec::new();
    for g in &lapsed.guests {
        if !g.is_alive() {
            tracing::info!(vm = %g.vm, pid = g.pid, "guarded process already gone (or its pid reused): not killed");
            continue;
        }
        let Some(pid) = i32::try_from(g.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            Ok(()) => {
                tracing::warn!(vm = %g.vm, pid = g.pid, late_ms = now - lapsed.expires_at_ms, "HA lease lapsed: killed the VM's QEMU");
                killed.push(g.clone());
            }
            Err(e) => {
                tracing::error!(vm = %g.vm, pid = g.pid, error = %e, "cannot kill the VM's QEMU")
            }
        }
    }
    killed
}

/// Adds `fired` to the report (`PATH.fired`), or starts one.
fn report(lease: &LeaseFile, fired: &Fired) -> Result<(), WatchdogError> {
    let mut report = match lease.fired() {
        Ok(Some(r)) => r,
        Ok(None) => Fired {
            at_ms: fired.at_ms,
            killed: Vec::new(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "unreadable report of the watchdog; a new one replaces it");
            Fired {
                at_ms: fired.at_ms,
                killed: Vec::new(),
            }
        }
    };
    report.at_ms = fired.at_ms;
    report.killed.extend(fired.killed.iter().cloned());
    let path = lease.fired_path();
    let bytes = serde_json::to_vec(&report).map_err(|source| WatchdogError::Format {
        path: path.clone(),
        source,
    })?;
    nasvisor_best_effort::write_private(&path, &bytes).map_err(io(&path))
}

/// The watchdog: [`enforce_once`] every `poll` until `stop` is set, or
/// until the lease's directory is gone (its host's data was removed).
pub fn run(lease: &LeaseFile, poll: Duration, stop: &AtomicBool) {
    let mut state = WatchState::default();
    let dir = lease.path().parent().map(Path::to_path_buf);
    tracing::info!(lease = %lease.path().display(), poll_ms = poll.as_millis() as u64, "the HA watchdog watches");
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = enforce_once(lease, &mut state) {
            tracing::error!(error = %e, "watchdog round failed");
        }
        if dir.as_deref().is_some_and(|d| !d.exists()) {
            tracing::info!("the lease's directory is gone; the watchdog ends");
            return;
        }
        std::thread::sleep(poll);
    }
    tracing::info!("the HA watchdog was asked to stop");
}

/// The arguments the watchdog runs with (after the program).
fn watchdog_args(lease: &LeaseFile) -> Vec<std::ffi::OsString> {
    vec![
        "watchdog".into(),
        "--lease".into(),
        lease.path().as_os_str().to_owned(),
    ]
}

/// Whether process `pid` is a watchdog of `lease`.
fn is_watchdog_of(pid: u32, lease: &LeaseFile) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let want = watchdog_args(lease);
    start_ticks(pid).is_ok()
        && args.len() > want.len()
        && args[1..=want.len()]
            .iter()
            .zip(&want)
            .all(|(a, w)| *a == w.as_encoded_bytes())
}

/// Finds the watchdog of `lease` by its pid file, or starts one:
/// `exe watchdog --lease PATH`, in a session of its own (it survives the
/// daemon), output appended to `log`. Its pid.
pub fn ensure_running(exe: &Path, lease: &LeaseFile, log: &Path) -> Result<u32, WatchdogError> {
    let pid_path = lease.pid_path();
    if let Ok(text) = std::fs::read_to_string(&pid_path) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            if is_watchdog_of(pid, lease) {
                return Ok(pid);
            }
        }
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(log))?;
    let err = out.try_clone().map_err(io(log))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(watchdog_args(lease))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: `pre_exec` runs in the forked child before exec; `setsid` is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            rustix::process::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(io(exe))?;
    let pid = child.id();
    // The daemon stays its parent: reap it if it ever ends.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    nasvisor_best_effort::write_private(&pid_path, pid.to_string().as_bytes())
        .map_err(io(&pid_path))?;
    tracing::info!(pid, lease = %lease.path().display(), "started the HA watchdog");
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line with `comm` as the command name and 4242 as start time.
    fn stat(comm: &str, state: &str) -> String {
        format!("77 ({comm}) {state} 1 77 77 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 4242 5000 100")
    }

    #[test]
    fn the_watchdog_reads_the_start_time_after_the_last_parenthesis() {
        assert_eq!(parse_start_ticks(&stat("sleep", "S")), Ok(4242));
        assert_eq!(parse_start_ticks(&stat("a) b (c", "S")), Ok(4242));
        assert_eq!(parse_start_ticks(&stat(") 1 2 3 )", "R")), Ok(4242));
        assert_eq!(parse_start_ticks(&stat("", "S")), Ok(4242));
    }

    #[test]
    fn the_watchdog_sees_no_start_time_for_a_zombie_or_a_short_line() {
        assert_eq!(
            parse_start_ticks(&stat("qemu", "Z")),
            Err("a zombie or dead")
        );
        assert_eq!(parse_start_ticks("77 (qemu) S 1 2"), Err("no start time"));
        assert_eq!(parse_start_ticks("77 qemu S"), Err("no command name"));
    }
}
