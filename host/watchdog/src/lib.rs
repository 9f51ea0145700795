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
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a lease ({source})")]
    Format {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("/proc/{pid}/stat: {reason}")]
    Proc { pid: u32, reason: String },
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
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| proc_err("no command name".into()))?;
    // After the name: state (field 3) ... starttime (field 22).
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return Err(proc_err("a zombie".into()));
    }
    fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| proc_err("no start time".into()))
}

/// What the watchdog guards: processes to kill once `expires_at_ms`
/// ([`monotonic_ms`]) has passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub expires_at_ms: u64,
    pub guests: Vec<Guard>,
}

/// What the watchdog killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// When ([`monotonic_ms`]) it last fired.
    pub at_ms: u64,
    pub killed: Vec<Guard>,
}

/// The lease file, its report (`PATH.fired`) and the watchdog's pid file
/// (`PATH.pid`).
#[derive(Debug, Clone)]
pub struct LeaseFile {
    path: PathBuf,
}

impl LeaseFile {
    pub fn new(path: impl Into<PathBuf>) -> LeaseFile {
        LeaseFile { path: path.into() }
    }

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
/// that are still the processes recorded, reports them in `PATH.fired`
/// and writes the lease back without them. What it killed.
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
    let mut killed = Vec::new();
    for g in &current.guests {
        if !g.is_alive() {
            tracing::info!(vm = %g.vm, pid = g.pid, "guarded process already gone (or its pid reused)");
            continue;
        }
        let Some(pid) = rustix::process::Pid::from_raw(g.pid as i32) else {
            continue;
        };
        match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            Ok(()) => {
                tracing::warn!(vm = %g.vm, pid = g.pid, late_ms = now - current.expires_at_ms, "HA lease lapsed: killed the VM's QEMU");
                killed.push(g.clone());
            }
            Err(e) => {
                tracing::error!(vm = %g.vm, pid = g.pid, error = %e, "cannot kill the VM's QEMU")
            }
        }
    }
    let disarmed = Lease {
        expires_at_ms: current.expires_at_ms,
        guests: Vec::new(),
    };
    state.last = Some(disarmed.clone());
    lease.write(&disarmed)?;
    if killed.is_empty() {
        return Ok(None);
    }
    let mut report = lease.fired().ok().flatten().unwrap_or(Fired {
        at_ms: now,
        killed: Vec::new(),
    });
    report.at_ms = now;
    report.killed.extend(killed.iter().cloned());
    let bytes = serde_json::to_vec(&report).map_err(|source| WatchdogError::Format {
        path: lease.fired_path(),
        source,
    })?;
    let path = lease.fired_path();
    nasvisor_best_effort::write_private(&path, &bytes).map_err(io(&path))?;
    Ok(Some(Fired { at_ms: now, killed }))
}

/// The watchdog: [`enforce_once`] every `poll` until `stop` is set, or
/// until the lease's directory is gone (its host's data was removed).
pub fn run(lease: &LeaseFile, poll: Duration, stop: &AtomicBool) {
    let mut state = WatchState::default();
    let dir = lease.path().parent().map(Path::to_path_buf);
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
