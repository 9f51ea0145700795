//! A handle to one running VM: launch or re-attach, follow its state, control it.
//!
//! State comes from QMP events (and `query-status` when attaching or after a
//! lost event), never from what we asked for. QEMU's exit is watched through a
//! pidfd on its pid: an exit that follows a `SHUTDOWN` event or a quit/kill we
//! requested is [`VmState::Stopped`]; any other exit is [`VmState::Crashed`].
//!
//! Dropping every handle detaches (closes QMP and the console) and leaves QEMU
//! running; [`VmInstance::attach`] finds it again through its pidfile and QMP
//! socket. Processes are only ever signalled by pid (through a pidfd).
//!
//! The state machine is in `state`, the task that follows QEMU in `monitor`.

mod monitor;
mod state;

pub use state::{apply_event, VmState};

use nasvisor_best_effort::BestEffort;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::console::{Console, ConsoleError, ConsoleOptions};
use crate::launch::{self, log_tail, LaunchError, LaunchOptions, RunPaths};
use crate::proc::QemuProcess;
use crate::qmp::{QmpClient, QmpError, QmpEvent, QmpOptions, RunState};
use crate::spec::{SerialSpec, VmSpec};
use monitor::{lock, monitor, MonitorCtx, Tracking};

/// How often an incoming migration's load is looked at when no QMP event
/// comes (a fallback: the events end the wait).
const INCOMING_POLL: Duration = Duration::from_millis(100);

/// Errors of instance operations. Each names the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("VM {id}: {source}")]
    Qmp {
        id: String,
        #[source]
        source: QmpError,
    },
    #[error("VM {id}: {source}")]
    Console {
        id: String,
        #[source]
        source: ConsoleError,
    },
    /// No QEMU runs for this VM (no pidfile, or its process is gone).
    #[error("VM {id} is not running: {reason}")]
    NotRunning { id: String, reason: String },
    /// The pidfile names a process that is not this VM's QEMU.
    #[error("VM {id}: pidfile names pid {pid}, which is not this VM's QEMU: {reason}")]
    NotOurs {
        id: String,
        pid: i32,
        reason: String,
    },
    /// The QEMU process already exited.
    #[error("VM {id} has exited ({state:?})")]
    Exited { id: String, state: VmState },
    /// A state was not reached in time.
    #[error("VM {id}: timed out after {waited:?} waiting for {what} (state: {state:?})")]
    Timeout {
        id: String,
        what: String,
        waited: Duration,
        state: VmState,
    },
    /// Signalling QEMU failed.
    #[error("VM {id}: cannot signal QEMU pid {pid}: {source}")]
    Signal {
        id: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// How a [`VmInstance::shutdown`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The guest powered off after the ACPI request.
    Graceful { after: Duration },
    /// The guest did not react in time; QEMU was stopped by force.
    Forced { after: Duration },
    /// QEMU had already exited.
    AlreadyStopped,
}

/// Behaviour of an instance handle.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// Capture the console (when the VM's serial port is the socket).
    pub console: Option<ConsoleOptions>,
    /// Make QEMU exit once the guest powers off by itself, so a powered-off VM
    /// holds no process. When false, QEMU stays in state `Shutdown`.
    pub quit_on_guest_shutdown: bool,
    pub qmp: QmpOptions,
    /// How long `quit` may take before QEMU is killed.
    pub quit_timeout: Duration,
}

impl Default for InstanceOptions {
    fn default() -> Self {
        InstanceOptions {
            console: Some(ConsoleOptions::default()),
            quit_on_guest_shutdown: true,
            qmp: QmpOptions::default(),
            quit_timeout: Duration::from_secs(10),
        }
    }
}

struct Inner {
    paths: RunPaths,
    process: Arc<QemuProcess>,
    qmp: QmpClient,
    console: Option<Console>,
    state: Arc<watch::Sender<VmState>>,
    tracking: Arc<Mutex<Tracking>>,
    options: InstanceOptions,
    monitor: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

/// A handle to a running VM. Clones share it; dropping all of them detaches
/// and leaves QEMU running.
#[derive(Clone)]
pub struct VmInstance {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmInstance")
            .field("id", &self.id())
            .field("pid", &self.pid())
            .field("state", &self.state())
            .finish()
    }
}

impl VmInstance {
    /// Starts QEMU for `spec` and returns a handle once QMP is connected, the
    /// console attached and the vCPUs started (unless `start_paused` or
    /// `incoming_defer`). On any failure after QEMU started, QEMU is killed:
    /// nothing is left half-created.
    pub async fn launch(
        spec: &VmSpec,
        launch_options: &LaunchOptions,
        options: InstanceOptions,
    ) -> Result<VmInstance, VmError> {
        let (paths, pid) = launch::spawn(spec, launch_options).await?;
        let id = paths.id().to_string();
        let process = QemuProcess::open(pid).map_err(|e| VmError::NotRunning {
            id: id.clone(),
            reason: format!(
                "QEMU pid {pid} vanished right after start ({e}); log: {}",
                log_tail(&paths.qemu_log(), 1024)
            ),
        })?;
        let process = Arc::new(process);
        // Kills QEMU if this future is dropped before the handle exists.
        let mut guard = KillProcessOnDrop {
            process: process.clone(),
            armed: true,
        };
        let with_console = spec.serial == SerialSpec::Socket;
        let start = !(launch_options.start_paused || launch_options.incoming_defer);
        match Self::connect(paths.clone(), process.clone(), options, with_console, start).await {
            Ok(vm) => {
                guard.armed = false;
                Ok(vm)
            }
            Err(e) => {
                tracing::warn!(%id, pid, error = %e, "launch failed after QEMU started; killing it");
                guard.armed = false;
                process
                    .kill()
                    .best_effort("kill a QEMU whose launch failed");
                process.wait_exit_timeout(Duration::from_secs(10)).await;
                paths.remove_stale_of(pid);
                Err(e)
            }
        }
    }

    /// Finds a running VM again (after a daemon restart) through
    /// `<run_dir>/<id>.pid` and `<run_dir>/<id>.qmp`. Verifies that the pid is
    /// alive and is a QEMU whose command line names this QMP socket. Re-attaches
    /// the console when the VM has a console socket.
    pub async fn attach(
        run_dir: impl AsRef<Path>,
        id: &str,
        options: InstanceOptions,
    ) -> Result<VmInstance, VmError> {
        let paths = RunPaths::new(run_dir.as_ref(), id)?;
        let not_running = |reason: String| VmError::NotRunning {
            id: id.to_string(),
            reason,
        };
        let pid = crate::proc::read_pidfile(&paths.pidfile())
            .map_err(|e| not_running(format!("pidfile {}: {e}", paths.pidfile().display())))?;
        // Open the pidfd first, then verify: the pidfd pins the process we checked.
        let process = QemuProcess::open(pid)
            .map_err(|e| not_running(format!("pid {pid} from the pidfile: {e}")))?;
        let qmp_path = paths.qmp_socket();
        crate::proc::verify_qemu(pid, qmp_path.to_str().unwrap_or_default()).map_err(|reason| {
            VmError::NotOurs {
                id: id.to_string(),
                pid,
                reason,
            }
        })?;
        if !process.is_alive() {
            return Err(not_running(format!("pid {pid} exited while attaching")));
        }
        let with_console = paths.serial_socket().exists();
        tracing::info!(%id, pid, "re-attaching to running QEMU");
        Self::connect(paths, Arc::new(process), options, with_console, false).await
    }

    async fn connect(
        paths: RunPaths,
        process: Arc<QemuProcess>,
        options: InstanceOptions,
        with_console: bool,
        start: bool,
    ) -> Result<VmInstance, VmError> {
        let id = paths.id().to_string();
        let qmp_err = |source| VmError::Qmp {
            id: id.clone(),
            source,
        };
        let qmp = QmpClient::connect_with(paths.qmp_socket(), options.qmp.clone())
            .await
            .map_err(qmp_err)?;
        // Subscribe before anything can change state, so no event is missed.
        let events = qmp.events();

        let console = match (&options.console, with_console) {
            (Some(copts), true) => Some(
                Console::attach(paths.serial_socket(), paths.console_log(), copts.clone())
                    .await
                    .map_err(|source| VmError::Console {
                        id: id.clone(),
                        source,
                    })?,
            ),
            _ => None,
        };

        if start {
            qmp.cont().await.map_err(qmp_err)?;
        }
        let status = qmp.query_status().await.map_err(qmp_err)?;
        let initial = VmState::from_run_state(&status.status);
        let tracking = Arc::new(Mutex::new(Tracking::default()));
        if let VmState::Shutdown { .. } = initial {
            lock(&tracking).shutdown_reason = Some("guest-shutdown".into());
        }
        let state = Arc::new(watch::Sender::new(initial.clone()));

        let monitor = tokio::spawn(monitor(MonitorCtx {
            id: id.clone(),
            paths: paths.clone(),
            process: process.clone(),
            qmp: qmp.clone(),
            state: state.clone(),
            tracking: tracking.clone(),
            quit_on_guest_shutdown: options.quit_on_guest_shutdown,
            events,
        }));

        let vm = VmInstance {
            inner: Arc::new(Inner {
                paths,
                process,
                qmp,
                console,
                state,
                tracking,
                options,
                monitor,
            }),
        };
        if matches!(initial, VmState::Shutdown { .. }) && vm.inner.options.quit_on_guest_shutdown {
            // The guest powered off while nobody watched: finish the job.
            tracing::info!(%id, "guest had powered off; stopping its QEMU");
            vm.request_exit("guest powered off while detached");
            vm.inner
                .qmp
                .quit()
                .await
                .best_effort("quit the QEMU of a guest that powered off while detached");
        }
        Ok(vm)
    }

    /// The VM id (names its runtime files).
    pub fn id(&self) -> &str {
        self.inner.paths.id()
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.inner.process.pid()
    }

    /// The VM's runtime file paths.
    pub fn paths(&self) -> &RunPaths {
        &self.inner.paths
    }

    /// The QMP session, for commands without a wrapper here.
    pub fn qmp(&self) -> &QmpClient {
        &self.inner.qmp
    }

    /// The attached console, if the VM has one and capture is enabled.
    pub fn console(&self) -> Option<&Console> {
        self.inner.console.as_ref()
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<VmState> {
        self.inner.state.subscribe()
    }

    /// Raw QMP events from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.inner.qmp.events()
    }

    /// Waits until `pred` holds for the state, up to `timeout`.
    pub async fn wait_for_state(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&VmState) -> bool,
    ) -> Result<VmState, VmError> {
        let mut rx = self.watch_state();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|s| pred(s)).await.map(|s| s.clone()).ok()
        })
        .await;
        match reached {
            Ok(Some(s)) => Ok(s),
            _ => Err(VmError::Timeout {
                id: self.id().to_string(),
                what: what.to_string(),
                waited: timeout,
                state: self.state(),
            }),
        }
    }

    /// Waits until an incoming migration has loaded all of its state here
    /// (QEMU has left `inmigrate`), up to `timeout`. The source reporting
    /// `completed` does not mean this side has finished loading: a `cont`
    /// before that only arms autostart, and console input that arrives
    /// meanwhile is overwritten by the loaded serial state.
    pub async fn wait_incoming_loaded(&self, timeout: Duration) -> Result<(), VmError> {
        // Subscribed before the first look: no event can slip in between.
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let st = self
                .inner
                .qmp
                .query_status()
                .await
                .map_err(|e| self.qmp_err(e))?;
            if st.status != RunState::Inmigrate {
                return Ok(());
            }
            // Any event (`MIGRATION`, `STOP`, `RESUME`) may be the end of the
            // load: look again. A slow poll covers QEMUs without migration
            // events and events a lagging subscriber lost.
            let next = tokio::time::timeout_at(
                deadline,
                tokio::time::timeout(INCOMING_POLL, events.recv()),
            )
            .await;
            match next {
                Err(_) => {
                    return Err(VmError::Timeout {
                        id: self.id().to_string(),
                        what: "the incoming migration to load".to_string(),
                        waited: timeout,
                        state: self.state(),
                    })
                }
                Ok(Ok(Err(broadcast::error::RecvError::Closed))) => {
                    // The connection closed: QEMU exited (reported above on
                    // the next turn); wait for the monitor to notice.
                    tokio::time::sleep(INCOMING_POLL).await;
                    events = self.events();
                }
                Ok(_) => {}
            }
        }
    }

    /// Waits for QEMU to exit and returns the final state
    /// ([`VmState::Stopped`] or [`VmState::Crashed`]).
    pub async fn wait_exit(&self, timeout: Duration) -> Result<VmState, VmError> {
        self.wait_for_state("QEMU to exit", timeout, VmState::is_exited)
            .await
    }

    fn check_alive(&self) -> Result<(), VmError> {
        let state = self.state();
        if state.is_exited() {
            return Err(VmError::Exited {
                id: self.id().to_string(),
                state,
            });
        }
        Ok(())
    }

    fn qmp_err(&self, source: QmpError) -> VmError {
        VmError::Qmp {
            id: self.id().to_string(),
            source,
        }
    }

    fn request_exit(&self, why: &str) {
        lock(&self.inner.tracking)
            .exit_requested
            .get_or_insert_with(|| why.to_string());
    }

    /// Pauses the vCPUs; returns once QEMU reported `STOP`.
    pub async fn pause(&self) -> Result<(), VmError> {
        self.check_alive()?;
        self.inner.qmp.stop().await.map_err(|e| self.qmp_err(e))?;
        self.wait_for_state("paused", Duration::from_secs(10), |s| {
            !matches!(s, VmState::Running | VmState::ShuttingDown)
        })
        .await
        .map(|_| ())
    }

    /// Resumes the vCPUs; returns once QEMU reported `RESUME`.
    pub async fn resume(&self) -> Result<(), VmError> {
        self.check_alive()?;
        self.inner.qmp.cont().await.map_err(|e| self.qmp_err(e))?;
        self.wait_for_state("running", Duration::from_secs(10), |s| {
            matches!(s, VmState::Running) || s.is_exited()
        })
        .await
        .map(|_| ())
    }

    /// Hard-resets the VM (`system_reset`).
    pub async fn reboot(&self) -> Result<(), VmError> {
        self.check_alive()?;
        self.inner
            .qmp
            .system_reset()
            .await
            .map_err(|e| self.qmp_err(e))
    }

    /// ACPI shutdown, then force after `timeout`: presses the power button and
    /// waits for the guest to power off; if it has not within `timeout` (guests
    /// without ACPI support, hung guests), stops QEMU by force. Returns once
    /// QEMU has exited.
    pub async fn shutdown(&self, timeout: Duration) -> Result<ShutdownOutcome, VmError> {
        let start = Instant::now();
        if self.state().is_exited() {
            return Ok(ShutdownOutcome::AlreadyStopped);
        }
        if !matches!(self.state(), VmState::Shutdown { .. }) {
            if matches!(self.state(), VmState::Running) {
                self.inner.state.send_if_modified(|s| {
                    if matches!(s, VmState::Running) {
                        *s = VmState::ShuttingDown;
                        true
                    } else {
                        false
                    }
                });
            }
            if let Err(e) = self.inner.qmp.system_powerdown().await {
                if !e.is_disconnected() {
                    return Err(self.qmp_err(e));
                }
            }
        }
        let off = self
            .wait_for_state("the guest to power off", timeout, |s| {
                matches!(s, VmState::Shutdown { .. }) || s.is_exited()
            })
            .await;
        match off {
            Ok(_) => {
                self.force_off().await?;
                Ok(ShutdownOutcome::Graceful {
                    after: start.elapsed(),
                })
            }
            Err(_) => {
                tracing::info!(
                    id = self.id(),
                    ?timeout,
                    "guest ignored ACPI shutdown; forcing"
                );
                self.force_off().await?;
                Ok(ShutdownOutcome::Forced {
                    after: start.elapsed(),
                })
            }
        }
    }

    /// Stops QEMU now: `quit` over QMP, SIGKILL by pid if that does not end it
    /// within the quit timeout. Returns the final state.
    pub async fn force_off(&self) -> Result<VmState, VmError> {
        if self.state().is_exited() {
            return Ok(self.state());
        }
        self.request_exit("quit requested");
        let quit_timeout = self.inner.options.quit_timeout;
        let quit = self
            .inner
            .qmp
            .execute_with_timeout("quit", None, quit_timeout)
            .await;
        if let Err(e) = &quit {
            if !e.is_disconnected() {
                tracing::warn!(id = self.id(), error = %e, "quit failed; killing QEMU");
            }
        }
        if !self.inner.process.wait_exit_timeout(quit_timeout).await {
            tracing::warn!(
                id = self.id(),
                pid = self.pid(),
                "QEMU did not quit; SIGKILL"
            );
            self.signal_kill()?;
        }
        self.wait_exit(quit_timeout + Duration::from_secs(10)).await
    }

    /// SIGKILL to QEMU's pid (pulls the plug without asking QEMU). Returns the
    /// final state ([`VmState::Stopped`]: we asked for it).
    pub async fn kill(&self) -> Result<VmState, VmError> {
        if self.state().is_exited() {
            return Ok(self.state());
        }
        self.request_exit("killed on request");
        self.signal_kill()?;
        self.wait_exit(Duration::from_secs(20)).await
    }

    fn signal_kill(&self) -> Result<(), VmError> {
        self.inner.process.kill().map_err(|source| VmError::Signal {
            id: self.id().to_string(),
            pid: self.pid(),
            source,
        })
    }
}

/// SIGKILLs the process when dropped while armed.
struct KillProcessOnDrop {
    process: Arc<QemuProcess>,
    armed: bool,
}

impl Drop for KillProcessOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.process
                .kill()
                .best_effort("kill a QEMU left by a failed start");
        }
    }
}
