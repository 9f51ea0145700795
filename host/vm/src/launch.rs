//! Turning a [`VmSpec`] into a daemonized QEMU process.
//!
//! Decisions, fixed here once:
//! - QEMU runs with `-daemonize`: it double-forks, calls `setsid` and is
//!   reparented to init, so it outlives whoever started it (DESIGN principle 4).
//!   The launching process returns once QEMU has finished initialising.
//! - Everything is addressed by absolute path: `-daemonize` changes QEMU's
//!   working directory to `/`.
//! - Runtime files live in one run directory, named by the VM id:
//!   `<id>.qmp` (QMP socket), `<id>.pid`, `<id>.serial` (console socket),
//!   `<id>.console.log` (captured console), `<id>.qemu.log` (QEMU's own messages).
//! - `-action shutdown=pause` (what `-no-shutdown` means): after a guest
//!   poweroff QEMU stays, emits `SHUTDOWN` and reports run state `shutdown`. So a
//!   guest-initiated poweroff is distinguishable from a crash even when it
//!   happened while no daemon was watching.
//! - `-action panic=pause` with `pvpanic` and `pvpanic-pci` devices: a guest panic emits
//!   `GUEST_PANICKED` and leaves the VM paused for inspection.
//! - QEMU always starts with `-S` (vCPUs stopped) so the console can be attached
//!   before the guest prints anything; the instance layer then sends `cont`.
//! - `-machine graphics=off`: there is no display, so firmware (SeaBIOS, OVMF)
//!   writes to the serial console.

use nasvisor_best_effort::BestEffort;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::accel::Accel;
use crate::spec::{
    check_abs_path, DiskBus, DiskMedia, Firmware, MachineType, NicBackend, SerialSpec, SpecError,
    VmSpec,
};

/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Errors of rendering and launching.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The run directory or VM id cannot be used.
    #[error("run directory {path}: {reason}")]
    RunDir { path: PathBuf, reason: String },
    /// UEFI was asked for and no OVMF firmware is installed.
    #[error("`firmware`: UEFI requested but no OVMF firmware found (looked for {looked})")]
    NoOvmf { looked: String },
    /// A file needed for the launch could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A QEMU for this VM id is already running.
    #[error("VM {id} is already running as pid {pid}")]
    AlreadyRunning { id: String, pid: i32 },
    /// The QEMU binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited with an error during start-up.
    #[error("QEMU failed to start ({status}): {log}")]
    QemuFailed { status: String, log: String },
    /// QEMU did not finish starting in time.
    #[error("QEMU did not finish starting within {0:?}")]
    Timeout(Duration),
    /// QEMU started but its pidfile is unusable.
    #[error("QEMU started but its pidfile {path} is unusable: {source}")]
    Pidfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The runtime files of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    run_dir: PathBuf,
    id: String,
}

impl RunPaths {
    /// Validates `run_dir` (absolute, no `,`, short enough for socket paths) and
    /// `id` (`A-Z a-z 0-9 . _ -`, no `..`).
    pub fn new(
        run_dir: impl Into<PathBuf>,
        id: impl Into<String>,
    ) -> Result<RunPaths, LaunchError> {
        let run_dir = run_dir.into();
        let id = id.into();
        let dir_for_errors = run_dir.clone();
        let bad = |reason: String| LaunchError::RunDir {
            path: dir_for_errors.clone(),
            reason,
        };
        check_abs_path("run_dir", &run_dir).map_err(|e| bad(e.reason))?;
        let Some(dir) = run_dir.to_str() else {
            return Err(bad("is not valid UTF-8".into()));
        };
        if dir.contains(',') {
            return Err(bad("must not contain ',' (QEMU option syntax)".into()));
        }
        if id.is_empty()
            || id.contains("..")
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(format!(
                "VM id {id:?} must be non-empty letters, digits, '.', '_', '-' without \"..\""
            )));
        }
        let paths = RunPaths { run_dir, id };
        let longest = paths.serial_socket().as_os_str().len();
        if longest > MAX_SOCKET_PATH {
            return Err(bad(format!(
                "socket paths would be {longest} bytes; Unix sockets allow {MAX_SOCKET_PATH}"
            )));
        }
        Ok(paths)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.run_dir.join(format!("{}{suffix}", self.id))
    }

    /// `<run_dir>/<id>.qmp`
    pub fn qmp_socket(&self) -> PathBuf {
        self.file(".qmp")
    }

    /// `<run_dir>/<id>.pid`
    pub fn pidfile(&self) -> PathBuf {
        self.file(".pid")
    }

    /// `<run_dir>/<id>.serial`
    pub fn serial_socket(&self) -> PathBuf {
        self.file(".serial")
    }

    /// `<run_dir>/<id>.console.log` (and `.console.log.1`, the rotated part).
    pub fn console_log(&self) -> PathBuf {
        self.file(".console.log")
    }

    /// `<run_dir>/<id>.qemu.log`: QEMU's own error and status messages.
    pub fn qemu_log(&self) -> PathBuf {
        self.file(".qemu.log")
    }

    /// `<run_dir>/<id>.OVMF_VARS.fd`: the default UEFI variable store.
    pub fn default_uefi_vars(&self) -> PathBuf {
        self.file(".OVMF_VARS.fd")
    }

    /// Removes the runtime files of a VM that is not running (sockets, pidfile).
    /// Logs are kept.
    pub fn remove_stale(&self) {
        for p in [self.qmp_socket(), self.pidfile(), self.serial_socket()] {
            nasvisor_best_effort::remove_file(&p);
        }
    }

    /// Like [`RunPaths::remove_stale`], but only while the pidfile still names
    /// `pid` (or is gone): files of a newer QEMU for the same id are left alone.
    pub fn remove_stale_of(&self, pid: i32) {
        match crate::proc::read_pidfile(&self.pidfile()) {
            Ok(p) if p != pid => {}
            _ => self.remove_stale(),
        }
    }
}

/// OVMF code and variable-template images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvmfPaths {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

/// Candidate OVMF pairs, most preferred first (Debian's `ovmf` package).
const OVMF_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

impl OvmfPaths {
    /// Finds an installed OVMF (non-secure-boot build), if any.
    pub fn find() -> Option<OvmfPaths> {
        OVMF_CANDIDATES
            .iter()
            .map(|(c, v)| OvmfPaths {
                code: c.into(),
                vars_template: v.into(),
            })
            .find(|p| p.code.is_file() && p.vars_template.is_file())
    }
}

/// How to launch: where, with what, under which accelerator.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The emulator; looked up in `PATH` unless absolute.
    pub qemu_binary: PathBuf,
    /// Directory of the runtime files (absolute).
    pub run_dir: PathBuf,
    pub accel: Accel,
    /// Leave the vCPUs stopped after the launch (run state `prelaunch`).
    pub start_paused: bool,
    /// Start as a migration target (`-incoming defer`); the caller then runs
    /// `migrate-incoming`.
    pub incoming_defer: bool,
    /// OVMF to use; found on the host when unset.
    pub ovmf: Option<OvmfPaths>,
    /// How long QEMU may take to initialise.
    pub launch_timeout: Duration,
    /// Extra arguments appended verbatim (tests, diagnostics).
    pub extra_args: Vec<String>,
    /// Adjusts the launcher's command before it is spawned, e.g. to start
    /// QEMU inside the network namespace where its taps live.
    pub spawn_hook: Option<SpawnHook>,
}

/// The function inside a [`SpawnHook`].
pub type SpawnFn = dyn Fn(&mut std::process::Command) -> std::io::Result<()> + Send + Sync;

/// A function that prepares QEMU's command before it is spawned.
#[derive(Clone)]
pub struct SpawnHook(pub std::sync::Arc<SpawnFn>);

impl std::fmt::Debug for SpawnHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnHook(..)")
    }
}

impl LaunchOptions {
    pub fn new(run_dir: impl Into<PathBuf>, accel: Accel) -> LaunchOptions {
        LaunchOptions {
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            run_dir: run_dir.into(),
            accel,
            start_paused: false,
            incoming_defer: false,
            ovmf: None,
            launch_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
            spawn_hook: None,
        }
    }
}

/// Renders the QEMU arguments (without argv\[0\]) for `spec`. Validates the
/// spec first; touches the filesystem only to look for OVMF.
pub fn render_argv(spec: &VmSpec, options: &LaunchOptions) -> Result<Vec<String>, LaunchError> {
    spec.validate()?;
    let paths = RunPaths::new(&options.run_dir, spec.id())?;
    let mut a: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));

    push(&["-name", &format!("guest={},debug-threads=on", spec.name)]);
    push(&["-uuid", &spec.id()]);

    let mut machine = format!("{},graphics=off", spec.machine.qemu_name());
    let mut blockdevs: Vec<Value> = Vec::new();
    if spec.firmware == Firmware::Uefi {
        let ovmf = match &options.ovmf {
            Some(o) => o.clone(),
            None => OvmfPaths::find().ok_or_else(|| LaunchError::NoOvmf {
                looked: OVMF_CANDIDATES
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        };
        let vars = spec
            .uefi_vars
            .clone()
            .unwrap_or_else(|| paths.default_uefi_vars());
        blockdevs.push(json!({"driver": "file", "node-name": "pflash0-file",
            "filename": ovmf.code, "read-only": true}));
        blockdevs.push(json!({"driver": "raw", "node-name": "pflash0",
            "file": "pflash0-file", "read-only": true}));
        blockdevs.push(json!({"driver": "file", "node-name": "pflash1-file",
            "filename": vars}));
        blockdevs.push(json!({"driver": "raw", "node-name": "pflash1", "file": "pflash1-file"}));
        machine.push_str(",pflash0=pflash0,pflash1=pflash1");
    }
    push(&["-machine", &machine]);
    push(&["-accel", options.accel.qemu_name()]);
    if let Some(cpu) = &spec.cpu_model {
        push(&["-cpu", cpu]);
    }
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-daemonize"]);
    push(&["-pidfile", path_str(&paths.pidfile())]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path_str(&paths.qmp_socket())),
    ]);
    push(&["-action", "shutdown=pause,panic=pause,reboot=reset"]);
    // Both variants: the ISA one (port 0x505, firmware and the `pvpanic-mmio`
    // driver) and the PCI one (the `pvpanic-pci` driver, which guests load on
    // any machine type).
    push(&["-device", "pvpanic"]);
    push(&["-device", "pvpanic-pci"]);
    push(&["-msg", "timestamp=on"]);
    push(&["-D", path_str(&paths.qemu_log())]);
    push(&["-S"]);
    if options.incoming_defer {
        push(&["-incoming", "defer"]);
    }

    match &spec.serial {
        SerialSpec::Socket => {
            push(&[
                "-chardev",
                // QEMU logs the console itself, attached or not (see
                // console.rs).
                &format!(
                    "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
                    path_str(&paths.serial_socket()),
                    path_str(&paths.console_log())
                ),
            ]);
            push(&["-device", "isa-serial,chardev=serial0"]);
        }
        SerialSpec::File { path } => {
            push(&[
                "-chardev",
                &format!("file,id=serial0,path={},append=on", escape_opt(path)),
            ]);
            push(&["-device", "isa-serial,chardev=serial0"]);
        }
        SerialSpec::None => {}
    }

    let mut devices: Vec<Value> = Vec::new();
    if spec.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        devices.push(json!({"driver": "virtio-scsi-pci", "id": "scsi0"}));
    }
    let mut ide_index = 0usize;
    for (i, d) in spec.disks.iter().enumerate() {
        let node = format!("disk{i}");
        let file = format!("disk{i}-file");
        let ro = d.is_readonly();
        blockdevs.push(
            json!({"driver": "file", "node-name": file, "filename": d.path,
            "read-only": ro, "discard": "unmap"}),
        );
        let replicated = d.replicated && !ro;
        let format_node = if replicated {
            format!("disk{i}-local")
        } else {
            node.clone()
        };
        blockdevs.push(
            json!({"driver": d.format.qemu_driver(), "node-name": format_node,
            "file": file, "read-only": ro, "discard": "unmap"}),
        );
        if replicated {
            let size = d.virtual_size().map_err(|source| LaunchError::Prepare {
                path: d.path.clone(),
                source,
            })?;
            let alone = crate::replica::link::placeholder(&node);
            blockdevs.push(json!({"driver": "null-co", "node-name": alone, "size": size}));
            blockdevs.push(json!({"driver": "quorum", "node-name": node,
                "vote-threshold": 2, "read-pattern": "fifo",
                "children": [format_node, alone]}));
        }
        let cdrom = d.media == DiskMedia::Cdrom;
        let driver = match (d.bus, cdrom) {
            (DiskBus::Virtio, _) => "virtio-blk-pci",
            (DiskBus::Scsi, false) => "scsi-hd",
            (DiskBus::Scsi, true) => "scsi-cd",
            (DiskBus::Ide, false) => "ide-hd",
            (DiskBus::Ide, true) => "ide-cd",
        };
        let mut dev = json!({"driver": driver, "drive": node, "id": format!("disk{i}-dev")});
        if replicated {
            // A write one copy did not take stops the guest instead of
            // completing: it is retried when the guest goes on.
            dev["werror"] = json!("stop");
            dev["rerror"] = json!("report");
        }
        match d.bus {
            DiskBus::Scsi => dev["bus"] = json!("scsi0.0"),
            DiskBus::Ide => {
                // QEMU's automatic IDE placement trips over AHCI's one-unit
                // buses; place devices explicitly.
                match spec.machine {
                    MachineType::Q35 => dev["bus"] = json!(format!("ide.{ide_index}")),
                    MachineType::Pc => {
                        dev["bus"] = json!(format!("ide.{}", ide_index / 2));
                        dev["unit"] = json!(ide_index % 2);
                    }
                }
                ide_index += 1;
            }
            DiskBus::Virtio => {}
        }
        if spec.kernel.is_none() {
            dev["bootindex"] = json!(i);
        }
        devices.push(dev);
    }

    let mut netdevs: Vec<Value> = Vec::new();
    for (i, n) in spec.nics.iter().enumerate() {
        let mut dev = json!({"driver": n.model.qemu_driver(), "id": format!("net{i}-dev"),
            "mac": n.mac.to_string()});
        if let NicBackend::Tap { ifname } = &n.backend {
            netdevs.push(
                json!({"type": "tap", "id": format!("net{i}"), "ifname": ifname,
                "script": "no", "downscript": "no"}),
            );
            dev["netdev"] = json!(format!("net{i}"));
        }
        devices.push(dev);
    }

    for b in blockdevs {
        push(&["-blockdev", &b.to_string()]);
    }
    for n in netdevs {
        push(&["-netdev", &n.to_string()]);
    }
    for d in devices {
        push(&["-device", &d.to_string()]);
    }
    if spec.nics.is_empty() {
        push(&["-nic", "none"]);
    }

    if let Some(k) = &spec.kernel {
        push(&["-kernel", path_str(&k.kernel)]);
        if let Some(initrd) = &k.initrd {
            push(&["-initrd", path_str(initrd)]);
        }
        if let Some(append) = &k.append {
            push(&["-append", append]);
        }
    }
    a.extend(options.extra_args.iter().cloned());
    Ok(a)
}

fn path_str(p: &Path) -> &str {
    // RunPaths and spec validation guarantee UTF-8 for run-dir paths; spec
    // paths that are not UTF-8 are passed lossily (QEMU would reject them anyway).
    p.to_str().unwrap_or("<non-utf8 path>")
}

/// Escapes a value for QEMU's `key=value,...` option syntax (`,` -> `,,`).
fn escape_opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Starts QEMU for `spec`, daemonized, and returns its pid once it has
/// initialised (QMP socket listening, pidfile written, vCPUs stopped by `-S`).
///
/// Preconditions: no QEMU runs for this VM id (checked: a live QEMU owning the
/// pidfile gives [`LaunchError::AlreadyRunning`]).
pub async fn spawn(spec: &VmSpec, options: &LaunchOptions) -> Result<(RunPaths, i32), LaunchError> {
    let argv = render_argv(spec, options)?;
    let paths = RunPaths::new(&options.run_dir, spec.id())?;
    prepare_run_dir(&paths)?;
    if matches!(spec.serial, SerialSpec::Socket) {
        crate::console::prepare_log(&paths.console_log()).map_err(|source| {
            LaunchError::Prepare {
                path: paths.console_log(),
                source,
            }
        })?;
    }

    if let Ok(pid) = crate::proc::read_pidfile(&paths.pidfile()) {
        if crate::proc::is_alive(pid)
            && crate::proc::verify_qemu(pid, path_str(&paths.qmp_socket())).is_ok()
        {
            return Err(LaunchError::AlreadyRunning {
                id: paths.id().to_string(),
                pid,
            });
        }
    }
    paths.remove_stale();

    if spec.firmware == Firmware::Uefi {
        let vars = spec
            .uefi_vars
            .clone()
            .unwrap_or_else(|| paths.default_uefi_vars());
        if !vars.exists() {
            let ovmf = options
                .ovmf
                .clone()
                .or_else(OvmfPaths::find)
                .ok_or_else(|| LaunchError::NoOvmf {
                    looked: "/usr/share/OVMF".into(),
                })?;
            // The guest's UEFI variables (boot entries, secure-boot keys,
            // whatever the guest stores): 0600 from creation, unlike
            // `fs::copy`, which would give them the template's 0644.
            copy_private(&ovmf.vars_template, &vars).map_err(|source| LaunchError::Prepare {
                path: vars.clone(),
                source,
            })?;
        }
    }

    // Keep the previous run's messages for post-mortems.
    let log = paths.qemu_log();
    if log.exists() {
        std::fs::rename(&log, log.with_extension("log.1"))
            .best_effort("keep the previous QEMU log");
    }
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .map_err(|source| LaunchError::Prepare {
            path: log.clone(),
            source,
        })?;

    // If this future is dropped mid-launch, a QEMU that got as far as its
    // pidfile is killed: nothing is left half-created.
    let mut guard = KillOnDrop {
        paths: paths.clone(),
        armed: true,
    };

    tracing::info!(id = paths.id(), name = %spec.name, accel = %options.accel, "launching QEMU");
    tracing::debug!(?argv, "QEMU argv");
    let mut command = tokio::process::Command::new(&options.qemu_binary);
    if let Some(hook) = &options.spawn_hook {
        (hook.0)(command.as_std_mut()).map_err(|source| LaunchError::Spawn {
            binary: options.qemu_binary.clone(),
            source,
        })?;
    }
    let mut child = command
        .args(&argv)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            binary: options.qemu_binary.clone(),
            source,
        })?;

    // The launcher exits once the daemonized QEMU reports it initialised.
    let status = match tokio::time::timeout(options.launch_timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(LaunchError::Spawn {
                binary: options.qemu_binary.clone(),
                source,
            })
        }
        Err(_) => {
            // The launcher dies with the child handle; a grandchild that got
            // as far as its pidfile is stopped by pid.
            kill_from_pidfile(&paths);
            return Err(LaunchError::Timeout(options.launch_timeout));
        }
    };
    if !status.success() {
        kill_from_pidfile(&paths);
        return Err(LaunchError::QemuFailed {
            status: status.to_string(),
            log: log_tail(&log, 2048),
        });
    }
    let pid =
        crate::proc::read_pidfile(&paths.pidfile()).map_err(|source| LaunchError::Pidfile {
            path: paths.pidfile(),
            source,
        })?;
    // QEMU's -daemonize sets umask 027, so its sockets (QMP: control of the
    // VM; serial: its console) come out 0750; the run directory (0700)
    // already keeps others out, and they are made 0600 too.
    for sock in [paths.qmp_socket(), paths.serial_socket()] {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %sock.display(), error = %e, "cannot make a QEMU socket private");
            }
        }
    }
    guard.armed = false;
    drop(guard);
    tracing::info!(id = paths.id(), pid, "QEMU running");
    Ok((paths, pid))
}

/// Kills the QEMU named by the pidfile when dropped while armed.
struct KillOnDrop {
    paths: RunPaths,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            kill_from_pidfile(&self.paths);
        }
    }
}

fn prepare_run_dir(paths: &RunPaths) -> Result<(), LaunchError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(paths.run_dir())
        .map_err(|source| LaunchError::Prepare {
            path: paths.run_dir().to_path_buf(),
            source,
        })
}

/// Copies `src` to a new file `dst` created with mode 0600; a failed copy
/// leaves no `dst`.
fn copy_private(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut from = std::fs::File::open(src)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    let r = std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all());
    if r.is_err() {
        nasvisor_best_effort::remove_file(dst);
    }
    r
}

/// Kills (SIGKILL, by pid) a half-started QEMU whose pidfile names it.
fn kill_from_pidfile(paths: &RunPaths) {
    if let Ok(pid) = crate::proc::read_pidfile(&paths.pidfile()) {
        if crate::proc::verify_qemu(pid, path_str(&paths.qmp_socket())).is_ok() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                rustix::process::kill_process(pid, rustix::process::Signal::KILL)
                    .best_effort("kill a stale QEMU");
            }
        }
    }
}

/// The last `max` bytes of a log file, trimmed, for error messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
#[path = "launch_tests.rs"]
mod tests;
