//! The passive host's side of an HA VM's synchronous disk replicas: a
//! `qemu-storage-daemon` of its own serves the replica images over NBD
//! (TLS with the cluster's certificates when given), and the VM's QEMU on
//! the active host brings each replicated disk's replica in step and makes
//! it a member of the disk's quorum ([`link`]: a guest write completes only
//! once both copies hold it).
//!
//! Like a VM's QEMU, the server is a daemonized process of its own, found
//! again by its pidfile: it outlives nasvisord, and [`ReplicaServer::stop`]
//! (or a kill of its pid) ends it. The files, in the run directory:
//! `<id>.replica.pid`, `<id>.replica.qmp`, `<id>.replica.log`.

pub mod link;
pub mod probe;
pub mod resync;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::migration::{serve_disks, tls_server, MigrateError};
use crate::qmp::{
    BlockdevOptions, FileNode, InetAddr, NbdExport, Qcow2Node, QmpClient, QmpError, QmpOptions,
};

/// How long the server may take to start and to stop.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the replica server. Each names the step and the file or
/// address involved.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// `qemu-storage-daemon` could not be run, or it failed to start.
    #[error("cannot start the replica server of {id} ({binary}): {reason}")]
    Start {
        id: String,
        binary: String,
        reason: String,
    },
    /// A replica image is missing or unusable.
    #[error("replica image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    /// A QMP command of the server failed.
    #[error("replica server of {id}: {what}: {source}")]
    Qmp {
        id: String,
        what: String,
        #[source]
        source: QmpError,
    },
    /// Serving the images failed.
    #[error("replica server of {id}: {source}")]
    Serve {
        id: String,
        #[source]
        source: MigrateError,
    },
    /// The server did not exit in time.
    #[error("the replica server of {id} (pid {pid}) did not exit within {SERVER_TIMEOUT:?}")]
    Stop { id: String, pid: i32 },
}

/// One replica image and the export name its disk's mirror writes to (the
/// guest's node name on the active host, e.g. `disk0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDisk {
    pub node: String,
    pub path: PathBuf,
}

/// TLS of the server: the directory of its x509 credentials (as QEMU's
/// `tls-creds-x509` reads it) and the distinguished name of the one client
/// certificate admitted (the active host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTls {
    pub dir: PathBuf,
    pub client_identity: String,
}

/// The files of VM `id`'s replica server in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPaths {
    run_dir: PathBuf,
    id: String,
}

impl ReplicaPaths {
    pub fn new(run_dir: &Path, id: &str) -> Self {
        ReplicaPaths {
            run_dir: run_dir.to_path_buf(),
            id: id.to_string(),
        }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.run_dir.join(format!("{}{suffix}", self.id))
    }

    pub fn pidfile(&self) -> PathBuf {
        self.file(".replica.pid")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.file(".replica.qmp")
    }

    pub fn log(&self) -> PathBuf {
        self.file(".replica.log")
    }

    /// Where the server serves (`host:port`).
    pub fn addr_file(&self) -> PathBuf {
        self.file(".replica.addr")
    }
}

/// A replica server found running by its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningServer {
    /// Which process it is ([`crate::proc::instance_id`]): a server that
    /// was restarted, or runs on another boot of its host, has another.
    pub identity: String,
    /// Where it serves.
    pub addr: InetAddr,
}

/// A running replica server.
pub struct ReplicaServer {
    paths: ReplicaPaths,
    pid: i32,
    qmp: QmpClient,
}

impl std::fmt::Debug for ReplicaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaServer")
            .field("id", &self.paths.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl ReplicaServer {
    /// Starts VM `id`'s replica server with `binary` (`qemu-storage-daemon`),
    /// serving each of `disks` (existing qcow2 images, the size of the disk
    /// they replicate) writable on `addr`. On failure nothing is left
    /// running.
    pub async fn start(
        binary: &Path,
        run_dir: &Path,
        id: &str,
        disks: &[ReplicaDisk],
        addr: &InetAddr,
        tls: Option<&ReplicaTls>,
    ) -> Result<ReplicaServer, ReplicaError> {
        for d in disks {
            if !d.path.is_file() {
                return Err(ReplicaError::Image {
                    path: d.path.clone(),
                    reason: "no such file".into(),
                });
            }
        }
        let paths = ReplicaPaths::new(run_dir, id);
        let start_err = |reason: String| ReplicaError::Start {
            id: id.to_string(),
            binary: binary.display().to_string(),
            reason,
        };
        for p in [paths.pidfile(), paths.qmp_socket()] {
            nasvisor_best_effort::remove_file(&p);
        }
        let log = std::fs::File::create(paths.log())
            .map_err(|e| start_err(format!("cannot create {}: {e}", paths.log().display())))?;
        let mut child = tokio::process::Command::new(binary)
            .arg("--daemonize")
            .arg("--pidfile")
            .arg(paths.pidfile())
            .arg("--chardev")
            .arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                paths.qmp_socket().display()
            ))
            .args(["--monitor", "chardev=qmp0"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| start_err(e.to_string()))?;
        let status = tokio::time::timeout(SERVER_TIMEOUT, child.wait())
            .await
            .map_err(|_| start_err(format!("no answer within {SERVER_TIMEOUT:?}")))?
            .map_err(|e| start_err(e.to_string()))?;
        if !status.success() {
            return Err(start_err(format!(
                "{status}: {}",
                crate::launch::log_tail(&paths.log(), 2048)
            )));
        }
        let pid = crate::proc::read_pidfile(&paths.pidfile())
            .map_err(|e| start_err(format!("{}: {e}", paths.pidfile().display())))?;
        let server = match Self::connect(paths.clone(), pid).await {
            Ok(s) => s,
            Err(e) => {
                kill(pid);
                return Err(e);
            }
        };
        if let Err(e) = server.serve(disks, addr, tls).await {
            kill(pid);
            return Err(e);
        }
        if let Err(e) = std::fs::write(paths.addr_file(), format!("{}:{}", addr.host, addr.port)) {
            kill(pid);
            return Err(start_err(format!("{}: {e}", paths.addr_file().display())));
        }
        tracing::info!(%id, pid, %addr, disks = disks.len(), "replica server running");
        Ok(server)
    }

    /// VM `id`'s replica server in `run_dir`, if one runs (its pidfile
    /// names a live process whose command line names that pidfile).
    pub fn running(run_dir: &Path, id: &str) -> Option<RunningServer> {
        let paths = ReplicaPaths::new(run_dir, id);
        let pidfile = paths.pidfile();
        let pid = crate::proc::read_pidfile(&pidfile).ok()?;
        let ours = crate::proc::cmdline(pid)
            .is_ok_and(|args| args.iter().any(|a| a.contains(&*pidfile.to_string_lossy())));
        if !ours {
            return None;
        }
        let identity = crate::proc::instance_id(pid)?;
        let text = std::fs::read_to_string(paths.addr_file()).ok()?;
        let (host, port) = text.trim().rsplit_once(':')?;
        Some(RunningServer {
            identity,
            addr: InetAddr::new(host, port.parse().ok()?),
        })
    }

    /// Which process the server is ([`RunningServer::identity`]).
    pub fn identity(&self) -> Option<String> {
        crate::proc::instance_id(self.pid)
    }

    /// Finds VM `id`'s running replica server again (after a restart of
    /// nasvisord).
    pub async fn attach(run_dir: &Path, id: &str) -> Result<ReplicaServer, ReplicaError> {
        let paths = ReplicaPaths::new(run_dir, id);
        let pid = crate::proc::read_pidfile(&paths.pidfile()).map_err(|e| ReplicaError::Start {
            id: id.to_string(),
            binary: "qemu-storage-daemon".into(),
            reason: format!("no running server: {}: {e}", paths.pidfile().display()),
        })?;
        Self::connect(paths, pid).await
    }

    async fn connect(paths: ReplicaPaths, pid: i32) -> Result<ReplicaServer, ReplicaError> {
        let qmp = QmpClient::connect_with(paths.qmp_socket(), QmpOptions::default())
            .await
            .map_err(|source| ReplicaError::Qmp {
                id: paths.id.clone(),
                what: format!("connecting to {}", paths.qmp_socket().display()),
                source,
            })?;
        Ok(ReplicaServer { paths, pid, qmp })
    }

    async fn serve(
        &self,
        disks: &[ReplicaDisk],
        addr: &InetAddr,
        tls: Option<&ReplicaTls>,
    ) -> Result<(), ReplicaError> {
        for d in disks {
            let node = Qcow2Node::new(&d.node, &d.path.to_string_lossy());
            self.qmp
                .blockdev_add(&BlockdevOptions::Qcow2(node))
                .await
                .map_err(|source| ReplicaError::Qmp {
                    id: self.paths.id.clone(),
                    what: format!("opening {}", d.path.display()),
                    source,
                })?;
        }
        let serve_err = |source| ReplicaError::Serve {
            id: self.paths.id.clone(),
            source,
        };
        let tls = match tls {
            Some(t) => Some(
                tls_server(
                    &self.qmp,
                    "replica-tls",
                    &t.dir,
                    "replica-authz",
                    &t.client_identity,
                )
                .await
                .map_err(serve_err)?,
            ),
            None => None,
        };
        let nodes: Vec<String> = disks.iter().map(|d| d.node.clone()).collect();
        serve_disks(&self.qmp, addr, &nodes, tls.as_ref())
            .await
            .map_err(serve_err)?;
        for d in disks {
            self.serve_probe_file(d).await?;
        }
        Ok(())
    }

    /// Serves the probe file of replica image `d` ([`probe_file`], made
    /// here): a small file beside the image, on the same disk, exported
    /// writable as [`probe::probe_export`] of the disk's export, where the
    /// active host's probe writes with FUA to see that disk answer.
    async fn serve_probe_file(&self, d: &ReplicaDisk) -> Result<(), ReplicaError> {
        let path = probe_file(&d.path);
        let made = std::fs::File::create(&path).and_then(|f| f.set_len(PROBE_FILE_SIZE));
        if let Err(e) = made {
            return Err(ReplicaError::Image {
                path,
                reason: format!("cannot make the probe file: {e}"),
            });
        }
        let node = probe::probe_export(&d.node);
        let qmp_err = |what: String| {
            let id = self.paths.id.clone();
            move |source| ReplicaError::Qmp { id, what, source }
        };
        self.qmp
            .blockdev_add(&BlockdevOptions::File(FileNode {
                node_name: node.clone(),
                filename: path.to_string_lossy().into_owned(),
            }))
            .await
            .map_err(qmp_err(format!("opening {}", path.display())))?;
        self.qmp
            .block_export_add(&NbdExport {
                id: format!("probe-{}", d.node),
                node_name: node.clone(),
                name: node.clone(),
                writable: true,
            })
            .await
            .map_err(qmp_err(format!("exporting {node}")))
    }

    /// Ends VM `id`'s replica server in `run_dir`, if one runs: a clean
    /// stop over QMP, or else SIGKILL of the pid its pidfile names, once
    /// `/proc` shows that pid is that server (its command line names the
    /// pidfile), never another process that reused the pid. True when a
    /// server was found.
    pub async fn end(run_dir: &Path, id: &str) -> bool {
        if let Ok(server) = Self::attach(run_dir, id).await {
            if let Err(e) = server.stop().await {
                tracing::warn!(%id, error = %e, "stopping the replica server");
            }
            return true;
        }
        let paths = ReplicaPaths::new(run_dir, id);
        let pidfile = paths.pidfile();
        let Ok(pid) = crate::proc::read_pidfile(&pidfile) else {
            return false;
        };
        let ours = crate::proc::cmdline(pid)
            .is_ok_and(|args| args.iter().any(|a| a.contains(&*pidfile.to_string_lossy())));
        if ours {
            kill(pid);
        }
        for p in [pidfile, paths.qmp_socket(), paths.addr_file()] {
            nasvisor_best_effort::remove_file(&p);
        }
        ours
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Stops the server: it closes its images (flushed) and exits.
    pub async fn stop(self) -> Result<(), ReplicaError> {
        // The answer may not come: the server exits.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.execute("quit", None)).await;
        let deadline = Instant::now() + SERVER_TIMEOUT;
        while crate::proc::is_alive(self.pid) {
            if Instant::now() >= deadline {
                kill(self.pid);
                return Err(ReplicaError::Stop {
                    id: self.paths.id.clone(),
                    pid: self.pid,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in [
            self.paths.pidfile(),
            self.paths.qmp_socket(),
            self.paths.addr_file(),
        ] {
            nasvisor_best_effort::remove_file(&p);
        }
        tracing::info!(id = %self.paths.id, "replica server stopped");
        Ok(())
    }
}

/// The size of a probe file.
const PROBE_FILE_SIZE: u64 = 64 << 10;

/// The probe file of replica image `image`: `<image>.probe` (a pool keeps
/// it as one of its entries and deletes it with the volume).
pub fn probe_file(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".probe");
    PathBuf::from(p)
}

/// SIGKILL of the server's own pid.
fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        use nasvisor_best_effort::BestEffort;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .best_effort("kill the replica server");
    }
}
