//! # nasvisor core
//!
//! The one place that acts. The API layer parses a request into an
//! [`nasvisor_api_types::Action`] and forwards it to [`NasCore`], which:
//!
//! - commits every change of desired state (VMs, pools, vswitches, images,
//!   jobs, events, hosts) through the cluster store (openraft + redb); a
//!   single host is a cluster of one;
//! - runs VMs as QEMU processes driven over QMP ([`nasvisor_vm`]), which
//!   outlive the daemon: on start it finds them again and reconciles;
//! - manages storage pools, volumes and the image library
//!   ([`nasvisor_storage`]) and vswitches and taps ([`nasvisor_net`]);
//! - asks the plugins ([`nasvisor_plugin_host`]) where a VM runs (scheduler)
//!   and how an image is installed (os-installer);
//! - runs long operations as persisted, cancellable jobs that a restart
//!   cleans up.

mod access;
mod cluster;
pub mod db;
pub mod errors;
mod events;
mod failover;
mod faults;
mod firmware;
mod firmware_judge;
mod firmware_reboot;
mod ha;
mod handle;
mod health;
mod image_copy;
mod images;
mod install;
mod jobs;
mod metrics;
mod migrate;
pub mod model;
mod peer;
mod placement;
mod plugin_reports;
mod plugins;
mod pool_io;
mod replica;
mod rollout;
mod settings;
mod storage_ops;
mod vms;
mod vswitches;

use crate::db::Db;
pub use crate::firmware::FirmwareSettings;
use crate::model::{kind, HostRecord};
pub use crate::settings::{SettingsCheck, SiteAtStart, SiteSettings, SiteTrial, TrialStart};
use nasvisor_api_types::CoreError;
use nasvisor_cluster::{ClusterNet, ClusterStore};
use nasvisor_net::Net;
use nasvisor_plugin_host::PolicyHost;
use nasvisor_storage::{Downloader, ImageLibrary};
use nasvisor_vm::Accel;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccelSetting {
    /// KVM when a probe guest runs under it within the timeout, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// A system image shipped with the firmware, added to the library on first
/// start.
#[derive(Debug, Clone)]
pub struct BundledImage {
    pub name: String,
    /// The qcow2 file.
    pub path: PathBuf,
    /// Its metadata (`guest-image.json`: `ready-marker`, `os-family`...).
    pub metadata: Option<PathBuf>,
}

/// Everything the core needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The daemon's data directory.
    pub data_dir: PathBuf,
    /// This host's id and name.
    pub host_name: String,
    pub qemu_binary: PathBuf,
    /// `qemu-storage-daemon`, which serves HA VMs' disk replicas.
    pub qemu_storage_daemon: PathBuf,
    /// `qemu-io`, which probes whether a replica server still answers.
    pub qemu_io: PathBuf,
    pub accel: AccelSetting,
    /// How long the KVM probe guest may take.
    pub accel_probe_timeout: Duration,
    /// Run the VMs' taps, bridges and QEMU in this network namespace
    /// (tests); the host's own when `None`.
    pub netns: Option<String>,
    /// Memory kept for the host itself, never given to VMs.
    pub reserved_memory_mib: u64,
    /// Bound of each VM's console log.
    pub console_log_bytes: u64,
    /// Images added to the library on first start.
    pub bundled_images: Vec<BundledImage>,
    /// The cluster id (used to derive stable MAC addresses).
    pub cluster_id: String,
    /// This host's cluster endpoint (`ip:port`): what the other hosts dial
    /// and what it listens on once it belongs to a cluster.
    pub cluster_address: String,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// A host silent this long is recorded offline; a leader without
    /// acknowledgements from a majority this long has lost the quorum.
    pub offline_after: Duration,
    /// How long a host without quorum keeps its VMs running.
    pub quorum_stop_delay: Duration,
    /// How long after `offline_after` a host without contact with the
    /// majority keeps its HA VMs running; the leader starts them elsewhere
    /// a margin later (docs/ha.md).
    pub ha_fence_delay: Duration,
    /// The fence command: a program and its arguments (`{host}` and
    /// `{address}` replaced by the lost host's id and cluster address) that
    /// powers a lost host off and exits 0 once it is off. Empty: none, the
    /// leader waits for the lost host's own deadline.
    pub fence_command: Vec<String>,
    /// How long the fence command may take.
    pub fence_command_timeout: Duration,
    /// The program run as the HA watchdog (`nasvisord watchdog`); none in
    /// unit tests.
    pub watchdog_exe: Option<PathBuf>,
    /// Where the HA lease and the watchdog's files live; by default a
    /// directory of `/run/nasvisor` named after the data directory
    /// (`Inner::ha_lease_dir`).
    pub ha_lease_dir: Option<PathBuf>,
    /// TLS on the migration, disk-copy and image-copy streams.
    pub migration_tls: bool,
    /// Restarts in place of an HA VM that faulted more often than this
    /// within `ha_restart_period` are refused: it stays down.
    pub ha_max_restarts: u32,
    /// The window in which an HA VM's faults are counted.
    pub ha_restart_period: Duration,
    /// The cluster endpoint's connection caps and timeouts.
    pub cluster_limits: nasvisor_cluster::ServerLimits,
    /// This host's firmware slots; `None` (the default) leaves firmware
    /// management off (`GET /api/v1/host/firmware` answers 409).
    pub firmware: Option<FirmwareSettings>,
    /// The service release this process runs (a `service` bundle's
    /// version, docs/firmware.md "Service releases"); `None`: the slot's
    /// own nasvisord. It is the version the host reports.
    pub service_release: Option<String>,
    /// The program and arguments that reboot this host (`[firmware]
    /// reboot-command`), run by `POST /api/v1/host/firmware/reboot`.
    pub reboot_command: Vec<String>,
    /// The time systemd gives nasvisord to say it is alive (the unit's
    /// `WatchdogSec=`); `None`: no service manager watches it. Shown by
    /// `GET /api/v1/host/firmware`.
    pub service_watchdog: Option<Duration>,
    /// This host's site settings file (`/api/v1/host/settings`); `None`:
    /// the configuration names none, and none can be written.
    pub site_settings: Option<SiteSettings>,
    /// Test builds only: the peer protocol window this core pretends to
    /// have (a member one version ahead or behind); this build's otherwise.
    #[cfg(test)]
    pub(crate) test_peer_window: Option<nasvisor_api_types::peer::PeerWindow>,
    /// Test builds only: how long the leader's record loop waits before
    /// each pass, as a slow disk under the store would make it.
    #[cfg(test)]
    pub(crate) test_record_delay: Option<Duration>,
}

impl CoreConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> CoreConfig {
        CoreConfig {
            data_dir: data_dir.into(),
            host_name: system_hostname(),
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            qemu_storage_daemon: PathBuf::from("qemu-storage-daemon"),
            qemu_io: PathBuf::from("qemu-io"),
            accel: AccelSetting::Auto,
            accel_probe_timeout: Duration::from_secs(5),
            netns: None,
            reserved_memory_mib: 512,
            console_log_bytes: 1024 * 1024,
            bundled_images: Vec::new(),
            cluster_id: "nasvisor".into(),
            cluster_address: "127.0.0.1:8444".into(),
            heartbeat_interval: Duration::from_millis(500),
            offline_after: Duration::from_secs(3),
            quorum_stop_delay: Duration::from_secs(60),
            ha_fence_delay: Duration::from_secs(2),
            fence_command: Vec::new(),
            fence_command_timeout: Duration::from_secs(30),
            watchdog_exe: None,
            ha_lease_dir: None,
            migration_tls: true,
            ha_max_restarts: 3,
            ha_restart_period: Duration::from_secs(600),
            cluster_limits: nasvisor_cluster::ServerLimits::default(),
            firmware: None,
            service_release: None,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            service_watchdog: None,
            site_settings: None,
            #[cfg(test)]
            test_peer_window: None,
            #[cfg(test)]
            test_record_delay: None,
        }
    }

    /// The peer protocol versions this core serves and writes.
    pub(crate) fn peer_window(&self) -> nasvisor_api_types::peer::PeerWindow {
        #[cfg(test)]
        if let Some(w) = self.test_peer_window {
            return w;
        }
        nasvisor_api_types::peer::PeerWindow::BUILD
    }

    /// The store of a host that joined a cluster (a host that never joined
    /// keeps its store in `cluster/`, also once it created a cluster).
    fn member_store_dir(&self) -> PathBuf {
        self.data_dir.join("member")
    }

    fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    fn nvram_dir(&self) -> PathBuf {
        self.data_dir.join("nvram")
    }
}

/// The host's name from the kernel (`/proc/sys/kernel/hostname`), made a
/// valid object name.
pub fn system_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() || !name.as_bytes()[0].is_ascii_alphanumeric() {
        "host1".into()
    } else {
        name
    }
}

/// Errors while starting the core.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cluster store: {0}")]
    Store(#[from] nasvisor_cluster::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image library: {0}")]
    Storage(#[from] nasvisor_storage::StorageError),
    #[error("network: {0}")]
    Net(#[from] nasvisor_net::NetError),
    #[error("{0}")]
    Core(#[from] CoreError),
}

pub(crate) struct Inner {
    pub cfg: CoreConfig,
    pub db: Db,
    pub host: HostRecord,
    pub accel: Accel,
    pub policy: Arc<PolicyHost>,
    /// The cluster network (TLS, transport, CA), handed in by the daemon.
    pub cluster_net: Arc<dyn ClusterNet>,
    pub net: Arc<Net>,
    pub library: ImageLibrary,
    /// Carries image downloads (the daemon's HTTP(S) client); the rules of
    /// a download are storage's ([`nasvisor_storage::fetch_url`]).
    pub downloader: Arc<dyn Downloader>,
    /// The QEMU processes of this host.
    pub processes: vms::VmProcesses,
    /// The last findings of this host's health checks.
    pub health: health::HealthChecks,
    /// Recent faults of this host's VMs (HA restart limits).
    pub faults: faults::FaultLog,
    /// The jobs running on this host, with their live progress.
    pub local_jobs: jobs::LocalJobs,
    /// The event log as this host appends to it.
    pub events: events::SeqLog,
    /// The audit log as this host appends to it.
    pub audit: events::SeqLog,
    /// Users' sessions and login throttling on this host.
    pub access: access::AccessState,
    /// Serializes changes that check the whole state (names, resources).
    pub ops: tokio::sync::Mutex<()>,
    /// Cancelled when the core shuts down (background tasks stop).
    pub shutdown: CancellationToken,
    /// Heartbeats, quorum and fencing.
    pub cluster: cluster::ClusterRuntime,
    /// The leader's failover and switchover bookkeeping.
    pub ha: failover::HaRuntime,
    /// Live migrations this host takes part in.
    pub migrations: migrate::Migrations,
    /// Images this host serves to others.
    pub image_exports: image_copy::ImageExports,
    /// The cluster's plugins as this host applied them.
    pub cluster_plugins: plugins::ClusterPlugins,
    /// Plugin faults and states reported to the cluster; quarantine lifts.
    pub plugin_reports: plugin_reports::PluginReports,
    /// The HA VMs whose disk replica a keeper task looks after here.
    pub replicas: replica::ReplicaKeepers,
    /// Told when a service release was staged, or new site settings are
    /// to be applied at once: the daemon restarts in place
    /// ([`NasCore::restart_requested`]).
    pub service_restart: tokio::sync::Notify,
    /// Wakes the rolling update's driver (a rollout started or resumed).
    pub rollout_wake: tokio::sync::Notify,
}

/// The core of `nasvisord`; implements [`nasvisor_api_types::Core`].
#[derive(Clone)]
pub struct NasCore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NasCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasCore")
            .field("host", &self.inner.host.id)
            .finish_non_exhaustive()
    }
}

impl NasCore {
    /// Opens the cluster store, probes the accelerator, registers this host,
    /// creates the default pool on first start, adds bundled images, then
    /// finds the VMs that kept running and cleans up interrupted jobs.
    ///
    /// `cluster_net` is the cluster network (`nasvisor_cluster_net::TlsNet`
    /// in the daemon): the store talks to the other hosts through it.
    /// `downloader` carries the bytes of image imports from URLs
    /// (`nasvisor_download::HttpDownloader` in the daemon), so that the core
    /// compiles no HTTP or TLS stack of its own.
    pub async fn start(
        cfg: CoreConfig,
        policy: Arc<PolicyHost>,
        cluster_net: Arc<dyn ClusterNet>,
        downloader: Arc<dyn Downloader>,
    ) -> Result<NasCore, StartError> {
        // Everything under the data directory is private: the store (job
        // records, install requests with password hashes and keys), seeds,
        // disks, console logs, UEFI variables, keys. What an older release
        // left readable is tightened now.
        for d in [cfg.data_dir.clone(), cfg.run_dir(), cfg.nvram_dir()] {
            nasvisor_storage::private::create_dir(&d)?;
        }
        let tightened = nasvisor_storage::private::tighten_tree(&cfg.data_dir)?;
        if tightened > 0 {
            tracing::info!(data_dir = %cfg.data_dir.display(), modes = tightened, "made the data directory private (files 0600, directories 0700)");
        }
        // A host that joined a cluster keeps its store in `member/`.
        let member = cfg.member_store_dir();
        let net = cluster_net.clone();
        let store = match ClusterStore::member_node_id(&member)? {
            Some(node_id) => {
                ClusterStore::open_with_network(&member, node_id, &cfg.cluster_address, net).await?
            }
            None => {
                if member.exists() {
                    // A join that never finished.
                    if let Err(e) = std::fs::remove_dir_all(&member) {
                        tracing::warn!(dir = %member.display(), error = %e, "cannot remove the leftovers of an unfinished join");
                    }
                }
                let dir = cfg.data_dir.join("cluster");
                ClusterStore::open_with_network(dir, 1, &cfg.cluster_address, net).await?
            }
        };
        store.set_server_limits(cfg.cluster_limits.clone())?;
        if store.cluster_info().is_some() {
            let listen = parse_listen(&cfg.cluster_address)?;
            let addr = store.serve(listen).await?;
            tracing::info!(%addr, "serving the cluster endpoint (mutual TLS)");
        }
        let db = Db::new(store);
        let net = Arc::new(match &cfg.netns {
            Some(ns) => Net::netns(ns)?,
            None => Net::host()?,
        });
        let library = ImageLibrary::open(&cfg.data_dir.join("images"))?;

        let (accel, accel_reason) = match cfg.accel {
            AccelSetting::Tcg => (Accel::Tcg, "configured: accel = \"tcg\"".to_string()),
            AccelSetting::Kvm => (Accel::Kvm, "configured: accel = \"kvm\"".to_string()),
            AccelSetting::Auto => {
                let choice = nasvisor_vm::probe_accel(&nasvisor_vm::ProbeOptions {
                    qemu_binary: cfg.qemu_binary.clone(),
                    timeout: cfg.accel_probe_timeout,
                    ..Default::default()
                })
                .await;
                (choice.accel, choice.reason)
            }
        };
        tracing::info!(accel = accel.qemu_name(), reason = %accel_reason, "accelerator");
        let host = HostRecord {
            id: cfg.host_name.clone(),
            name: cfg.host_name.clone(),
            // An appliance runs its firmware's version: the service release
            // it runs, else its booted slot's; a host without firmware
            // management, this build's.
            version: cfg
                .service_release
                .clone()
                .or_else(|| {
                    cfg.firmware
                        .as_ref()
                        .and_then(|f| f.slot_set().booted_version())
                })
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_mib: host_memory_mib(),
            accel: accel.qemu_name().to_string(),
            accel_reason,
            qemu_version: qemu_version(&cfg.qemu_binary),
            node_id: db.store().node_id(),
            address: cfg.cluster_address.clone(),
            online: true,
            cordoned: false,
            storage_gib: 0,
            free_storage_gib: 0,
            last_seen: None,
            protocol: Some(cfg.peer_window().current),
            protocol_compatible: true,
            offline_since: None,
            removed: false,
            problems: Vec::new(),
            maintenance: None,
            fenced: None,
        };

        let inner = Arc::new(Inner {
            cfg,
            db,
            host,
            accel,
            policy,
            cluster_net,
            net,
            library,
            downloader,
            processes: vms::VmProcesses::default(),
            health: health::HealthChecks::default(),
            faults: faults::FaultLog::default(),
            local_jobs: jobs::LocalJobs::default(),
            events: events::SeqLog::new(model::kind::EVENT, events::MAX_EVENTS),
            audit: events::SeqLog::new(model::kind::AUDIT, access::MAX_AUDIT),
            access: Default::default(),
            ops: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            cluster: Default::default(),
            ha: Default::default(),
            migrations: Default::default(),
            image_exports: Default::default(),
            cluster_plugins: Default::default(),
            plugin_reports: Default::default(),
            replicas: Default::default(),
            service_restart: Default::default(),
            rollout_wake: Default::default(),
        });
        inner.db.store().set_peer_handler(inner.peer_handler());
        inner.events.init(&inner.db);
        inner.audit.init(&inner.db);
        inner.register_host().await?;
        inner.bootstrap_access().await?;

        inner.ensure_default_pool().await?;
        inner.make_pools_private().await;
        inner.recover().await?;
        inner.report_settings_rollback().await;
        if inner.reconcile_firmware().await {
            inner.spawn_firmware_judge();
        }
        inner.start_ha_lease();
        inner.add_bundled_images().await;
        inner.register_library_images().await;
        inner.apply_cluster_plugins().await;
        inner.apply_plugin_resets();
        inner.spawn_plugin_reports();
        inner.check_health_once().await;
        inner.spawn_health_checks();
        inner.spawn_vars_sync();
        inner.spawn_cluster_loop();
        inner.spawn_rollout_loop();
        Ok(NasCore { inner })
    }

    /// This host's record.
    pub fn host(&self) -> &HostRecord {
        &self.inner.host
    }

    /// The admin token the first start created, once (the daemon prints it);
    /// `None` on every later start.
    pub fn take_bootstrap_token(&self) -> Option<String> {
        self.inner.take_bootstrap_token()
    }

    /// Resolves once a `service` firmware release was staged: the daemon
    /// then stops serving and restarts into it (docs/firmware.md, "Service
    /// releases").
    pub async fn restart_requested(&self) {
        self.inner.service_restart.notified().await
    }

    /// Ends the trial of the service release this process runs once the
    /// host is ready: serving, and in a cluster, in touch with a majority
    /// (the release is then `succeeded` and the rollback floor rises).
    /// Without a trial it does nothing.
    pub async fn confirm_service_release(&self) {
        self.inner.confirm_service_release().await
    }

    /// Whether this daemon still works, for the service manager's watchdog:
    /// no write to its store has been running for `longest_write` or more
    /// (reads are served from memory, so a disk that stopped answering
    /// shows only in the writes that do not return), and its store answers
    /// a read of this host's record (on a blocking thread, so that a store
    /// that hangs cannot hold up the caller, which bounds the wait).
    pub async fn alive(&self, longest_write: Duration) -> Result<(), String> {
        if let Some(running) = self.inner.db.oldest_write().filter(|d| *d >= longest_write) {
            return Err(format!(
                "a write to the store has not returned for {:.1} s (its disk hangs?)",
                running.as_secs_f64()
            ));
        }
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || {
            inner
                .db
                .get::<HostRecord>(kind::HOST, &inner.host.id)
                .is_some()
        })
        .await
        .map_err(|e| format!("the store's read failed: {e}"))?;
        if found {
            Ok(())
        } else {
            Err(format!(
                "the store has no record of this host ({})",
                self.inner.host.id
            ))
        }
    }

    /// The accelerator VMs run under.
    pub fn accel(&self) -> Accel {
        self.inner.accel
    }

    /// Stops background work and closes the store. Running VMs keep running.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.inner.shutdown.cancel();
        self.inner.processes.clear();
        // Give cancelled tasks a moment to record their state.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match Arc::try_unwrap(self.inner)
            .ok()
            .and_then(|i| i.db.into_store())
        {
            Some(store) => store.shutdown().await?,
            None => {
                tracing::warn!("core still in use at shutdown; store closes with the process")
            }
        }
        Ok(())
    }
}

impl Inner {
    /// Makes this host's pools private (directories 0700, volumes 0600); a
    /// pool that cannot be reached (or does not answer: a hung disk) is
    /// reported and left.
    async fn make_pools_private(&self) {
        for p in self.local_pools() {
            let r = self
                .on_pool(&p.name, "pool", |pool| {
                    pool.make_private().map_err(|e| errors::storage("pool", e))
                })
                .await;
            match r {
                Ok(0) => {}
                Ok(n) => tracing::info!(pool = %p.name, modes = n, "made the pool private"),
                Err(e) => {
                    tracing::warn!(pool = %p.name, error = %e, "cannot make the pool private")
                }
            }
        }
    }
}

/// The cluster endpoint's listen address.
pub(crate) fn parse_listen(addr: &str) -> Result<std::net::SocketAddr, CoreError> {
    addr.parse().map_err(|e| {
        errors::invalid(
            "cluster.address",
            format!("{addr:?} is not an ip:port ({e})"),
        )
    })
}

fn host_memory_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

fn qemu_version(binary: &std::path::Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split("version ").nth(1))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
