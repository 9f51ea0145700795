//! nasvisord's configuration: a TOML file whose every setting has an
//! embedded default, so the daemon starts with no file at all.

use nasvisor_api::ServerLimits;
use nasvisor_plugin_host::RuntimeConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the configuration is unusable; names the file, field and reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Where the daemon keeps its state (cluster store, images, VM runtime
    /// files, journal, compiled-code cache, TLS identity, token hash).
    pub data_dir: PathBuf,
    /// Site settings: a file (on the appliance, on the data partition, so
    /// that it survives every update) whose settings override this file's
    /// ([`Config::load_with_site`]). Only the file given with `--config`
    /// may name it.
    pub site_config: Option<PathBuf>,
    pub host: HostConfig,
    pub api: ApiConfig,
    pub vm: VmConfig,
    pub network: NetworkConfig,
    pub images: ImagesConfig,
    pub cluster: ClusterConfig,
    pub plugins: PluginsConfig,
    pub firmware: FirmwareConfig,
}

/// `[firmware]`: this host's A/B root slots and the install of firmware
/// bundles into them (docs/firmware.md, "Installing"). Off unless the
/// appliance's configuration turns it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct FirmwareConfig {
    /// Manage the firmware slots (`GET /api/v1/host/firmware`, `POST
    /// /api/v1/host/firmware/install`); off: both answer 409.
    pub enabled: bool,
    /// Where the ESP is mounted.
    pub esp: PathBuf,
    /// The device of root slot a.
    pub slot_a: PathBuf,
    /// The device of root slot b.
    pub slot_b: PathBuf,
    /// The kernel command line (`nasvisor.slot=a|b` names the booted slot).
    pub cmdline: PathBuf,
    /// The firmware's EFI variables (efivarfs): Secure Boot's state and
    /// the board's keys, which a slot's boot image must pass.
    pub efivars: PathBuf,
    /// The tries a newly installed slot gets before the boot loader falls
    /// back to the other (1..=10).
    pub tries: u32,
    /// Directory of the vendor public keys (`*.pub`) a bundle must be
    /// signed by: inside the booted, read-only slot.
    pub trusted_keys_dir: PathBuf,
    /// This product (a bundle's `product` must be it); required when enabled.
    pub product: String,
    /// This board (a bundle's `compatible` must name it); required when
    /// enabled.
    pub board: String,
    /// Largest bundle upload, bytes.
    pub max_bundle_bytes: u64,
    /// How long a new service release (a `service` bundle) has to become
    /// healthy after nasvisord restarted into it before the watchdog rolls
    /// it back, s (10..=3600).
    pub service_deadline_s: u64,
    /// The program and its arguments that reboot this host (`POST
    /// /api/v1/host/firmware/reboot`, `nasvisor firmware reboot`): an
    /// absolute path, or a name found on `PATH` when firmware is enabled.
    pub reboot_command: Vec<String>,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        FirmwareConfig {
            enabled: false,
            esp: PathBuf::from("/efi"),
            slot_a: PathBuf::from("/dev/disk/by-partlabel/nasvisor-a"),
            slot_b: PathBuf::from("/dev/disk/by-partlabel/nasvisor-b"),
            cmdline: PathBuf::from("/proc/cmdline"),
            efivars: PathBuf::from(nasvisor_firmware::EFIVARS),
            tries: 3,
            trusted_keys_dir: PathBuf::from("/usr/share/nasvisor/firmware-keys"),
            product: String::new(),
            board: String::new(),
            max_bundle_bytes: 4 << 30,
            service_deadline_s: 120,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This host's cluster endpoint (`ip:port`, mutual TLS with the
    /// cluster's own CA): the other hosts dial it, and the host listens on it
    /// once it belongs to a cluster. Fixed when the host first starts.
    pub address: String,
    /// How often the leader sends heartbeats, ms (50..=10000).
    pub heartbeat_interval_ms: u64,
    /// A host silent this long is recorded offline (and a leader without a
    /// majority this long has lost the quorum), s (1..=3600).
    pub offline_after_s: u64,
    /// How long a host without quorum keeps its VMs running, s (0..=86400).
    pub quorum_stop_delay_s: u64,
    /// How long after `offline-after-s` a host without word from the
    /// majority keeps its HA VMs running, s (0..=3600); the leader fails
    /// them over 1.5 s after that (docs/ha.md).
    pub ha_fence_delay_s: u64,
    /// The fence command: an absolute program path and its arguments
    /// (`{host}` and `{address}` are replaced by the lost host's id and
    /// cluster address). It powers the host off (IPMI, a PDU) and exits 0
    /// once it is off, which lets the leader fail over without waiting for
    /// the host's own deadline. Empty: none.
    pub fence_command: Vec<String>,
    /// How long the fence command may take, s (1..=600).
    pub fence_command_timeout_s: u64,
    /// Where the HA lease and its watchdog's files live (an absolute path,
    /// best on a tmpfs: the lease is written twice a second and means
    /// nothing after a reboot). Unset: `/run/nasvisor/ha-<hash of the data
    /// directory>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha_lease_dir: Option<PathBuf>,
    /// An HA VM that faulted (QEMU crash, guest panic) more often than this
    /// within `ha-restart-period-s` is not restarted in place (0..=100).
    pub ha_max_restarts: u32,
    /// The window in which an HA VM's faults are counted, s (1..=86400).
    pub ha_restart_period_s: u64,
    /// Encrypt migration, disk-copy and image-copy streams with TLS (the
    /// cluster's certificates). Off only on a dedicated, trusted storage
    /// network: it saves CPU and some downtime.
    pub migration_tls: bool,
    /// The cluster endpoint's connection caps and timeouts (the members'
    /// own addresses are not counted against the caps).
    pub limits: LimitsConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            address: "127.0.0.1:8444".into(),
            heartbeat_interval_ms: 500,
            offline_after_s: 3,
            quorum_stop_delay_s: 60,
            ha_fence_delay_s: 2,
            fence_command: Vec::new(),
            fence_command_timeout_s: 30,
            ha_lease_dir: None,
            ha_max_restarts: 3,
            ha_restart_period_s: 600,
            migration_tls: true,
            limits: LimitsConfig::default(),
        }
    }
}

/// `[api.limits]` and `[cluster.limits]`: an endpoint's connection caps and
/// timeouts (see `nasvisor_limits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections at most; beyond, a new one is closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (one /64 for IPv6) at most.
    pub max_connections_per_address: usize,
    /// The longest TLS handshake, ms.
    pub handshake_timeout_ms: u64,
    /// The longest wait for a complete request head, ms.
    pub header_timeout_ms: u64,
    /// How long a connection with no request in progress may stay silent,
    /// ms (at most `header-timeout-ms`).
    pub idle_timeout_ms: u64,
    /// The longest pause inside a request body (an upload included), ms.
    pub body_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = ServerLimits::default();
        let ms = |t: std::time::Duration| t.as_millis() as u64;
        LimitsConfig {
            max_connections: d.max_connections,
            max_connections_per_address: d.max_connections_per_address,
            handshake_timeout_ms: ms(d.handshake_timeout),
            header_timeout_ms: ms(d.header_timeout),
            idle_timeout_ms: ms(d.idle_timeout),
            body_timeout_ms: ms(d.body_timeout),
        }
    }
}

impl LimitsConfig {
    /// The limits these settings give.
    pub fn limits(&self) -> ServerLimits {
        let ms = std::time::Duration::from_millis;
        ServerLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            handshake_timeout: ms(self.handshake_timeout_ms),
            header_timeout: ms(self.header_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            body_timeout: ms(self.body_timeout_ms),
        }
    }
}

/// `[host]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HostConfig {
    /// This host's name and id in the cluster; the system host name when empty.
    pub name: String,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the HTTPS endpoint.
    pub listen: String,
    /// Certificate chain (PEM); a self-signed one is generated when unset.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names / IP addresses for the generated certificate.
    pub extra_names: Vec<String>,
    /// Largest image upload, bytes.
    pub max_upload_bytes: u64,
    /// The admin endpoint's connection caps and timeouts.
    pub limits: LimitsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8443".into(),
            tls_cert: None,
            tls_key: None,
            extra_names: Vec::new(),
            max_upload_bytes: 64 << 30,
            limits: LimitsConfig::default(),
        }
    }
}

/// `[vm]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct VmConfig {
    pub qemu_binary: PathBuf,
    /// `auto` (KVM if a probe guest runs under it, else TCG), `kvm` or `tcg`.
    pub accel: nasvisor_core::AccelSetting,
    /// How long the KVM probe guest may take, ms.
    pub accel_probe_timeout_ms: u64,
    /// Memory kept for the host itself, MiB.
    pub reserved_memory_mib: u64,
    /// Bound of each VM's console log, bytes.
    pub console_log_bytes: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            accel: nasvisor_core::AccelSetting::Auto,
            accel_probe_timeout_ms: 5000,
            reserved_memory_mib: 512,
            console_log_bytes: 1024 * 1024,
        }
    }
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Keep bridges, taps and QEMU in this network namespace
    /// (`/var/run/netns/<name>`) instead of the host's (tests, labs).
    pub netns: Option<String>,
}

/// `[images]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Images added to the library on first start (skipped when missing).
    pub bundled: Vec<BundledImageConfig>,
}

/// `[[images.bundled]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BundledImageConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub metadata: Option<PathBuf>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            bundled: vec![BundledImageConfig {
                name: "nasvisor-mini".into(),
                path: PathBuf::from("/usr/share/nasvisor/images/nasvisor-mini.qcow2"),
                metadata: Some(PathBuf::from("/usr/share/nasvisor/images/guest-image.json")),
            }],
        }
    }
}

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory of plugin packages; `<world>.nvplugin` or any
    /// `*.nvplugin` whose manifest names the world is installed for it.
    pub dir: PathBuf,
    /// Directory of trusted signer public keys (`*.pub`, SPKI PEM).
    pub trusted_keys_dir: PathBuf,
    /// Size bound of the decision journal, in bytes (0 disables it).
    pub journal_max_bytes: u64,
    /// Sandbox limits.
    pub runtime: RuntimeConfig,
    /// Per-world plugin settings: `[plugins.settings.scheduler] strategy = "pack"`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/nasvisor"),
            site_config: None,
            host: HostConfig::default(),
            api: ApiConfig::default(),
            vm: VmConfig::default(),
            network: NetworkConfig::default(),
            images: ImagesConfig::default(),
            cluster: ClusterConfig::default(),
            plugins: PluginsConfig::default(),
            firmware: FirmwareConfig::default(),
        }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("/usr/lib/nasvisor/plugins"),
            trusted_keys_dir: PathBuf::from("/etc/nasvisor/trusted-keys"),
            journal_max_bytes: 16 * 1024 * 1024,
            runtime: RuntimeConfig::default(),
            settings: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses and checks a configuration text. `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.plugins
            .runtime
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "plugins.runtime".into(),
                reason,
            })?;
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        cfg.api
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                invalid(
                    "api.listen",
                    format!("{:?} is not an address:port ({e})", cfg.api.listen),
                )
            })?;
        cfg.cluster
            .address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                invalid(
                    "cluster.address",
                    format!("{:?} is not an ip:port ({e})", cfg.cluster.address),
                )
            })?;
        let range = |field: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("must be {lo} to {hi}, got {v}")))
            }
        };
        range(
            "cluster.heartbeat-interval-ms",
            cfg.cluster.heartbeat_interval_ms,
            50,
            10_000,
        )?;
        range(
            "cluster.offline-after-s",
            cfg.cluster.offline_after_s,
            1,
            3600,
        )?;
        range(
            "cluster.quorum-stop-delay-s",
            cfg.cluster.quorum_stop_delay_s,
            0,
            86_400,
        )?;
        range(
            "cluster.ha-fence-delay-s",
            cfg.cluster.ha_fence_delay_s,
            0,
            3600,
        )?;
        range(
            "cluster.fence-command-timeout-s",
            cfg.cluster.fence_command_timeout_s,
            1,
            600,
        )?;
        if let Some(d) = &cfg.cluster.ha_lease_dir {
            if !d.is_absolute() {
                return Err(invalid(
                    "cluster.ha-lease-dir",
                    format!(
                        "must be an absolute path, got {:?}",
                        d.display().to_string()
                    ),
                ));
            }
        }
        if let Some(program) = cfg.cluster.fence_command.first() {
            if !std::path::Path::new(program).is_absolute() {
                return Err(invalid(
                    "cluster.fence-command",
                    format!("the program must be an absolute path, got {program:?}"),
                ));
            }
        }
        range(
            "cluster.ha-max-restarts",
            cfg.cluster.ha_max_restarts.into(),
            0,
            100,
        )?;
        range(
            "cluster.ha-restart-period-s",
            cfg.cluster.ha_restart_period_s,
            1,
            86_400,
        )?;
        for (section, limits) in [("api", &cfg.api.limits), ("cluster", &cfg.cluster.limits)] {
            limits
                .limits()
                .check()
                .map_err(|e| invalid(&format!("{section}.limits.{}", e.field), e.reason))?;
        }
        if cfg.api.tls_cert.is_some() != cfg.api.tls_key.is_some() {
            return Err(invalid(
                "api.tls-cert",
                "set both tls-cert and tls-key, or neither".into(),
            ));
        }
        if !cfg.host.name.is_empty() {
            nasvisor_api::types::check_name("host.name", &cfg.host.name)
                .map_err(|e| invalid("host.name", e.reason))?;
        }
        if let Some(ns) = &cfg.network.netns {
            nasvisor_net::netns::check_netns_name(ns)
                .map_err(|e| invalid("network.netns", e.to_string()))?;
        }
        if cfg.vm.console_log_bytes < 4096 {
            return Err(invalid(
                "vm.console-log-bytes",
                "must be at least 4096".into(),
            ));
        }
        if cfg.vm.accel_probe_timeout_ms == 0 {
            return Err(invalid(
                "vm.accel-probe-timeout-ms",
                "must be at least 1".into(),
            ));
        }
        for (i, b) in cfg.images.bundled.iter().enumerate() {
            nasvisor_api::types::check_name("name", &b.name)
                .map_err(|e| invalid(&format!("images.bundled[{i}].name"), e.reason))?;
        }
        for world in cfg.plugins.settings.keys() {
            world
                .parse::<nasvisor_plugin_sdk::World>()
                .map_err(|reason| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("plugins.settings.{world}"),
                    reason,
                })?;
        }
        let fw = &cfg.firmware;
        if fw.enabled {
            for (field, v) in [
                ("firmware.product", &fw.product),
                ("firmware.board", &fw.board),
            ] {
                if v.is_empty() {
                    return Err(invalid(
                        field,
                        "required when firmware.enabled is true".into(),
                    ));
                }
            }
        }
        range("firmware.tries", fw.tries.into(), 1, 10)?;
        range(
            "firmware.service-deadline-s",
            fw.service_deadline_s,
            10,
            3600,
        )?;
        check_reboot_command(&fw.reboot_command, fw.enabled)
            .map_err(|reason| invalid("firmware.reboot-command", reason))?;
        for (field, p) in [
            ("firmware.esp", &fw.esp),
            ("firmware.slot-a", &fw.slot_a),
            ("firmware.slot-b", &fw.slot_b),
            ("firmware.cmdline", &fw.cmdline),
            ("firmware.efivars", &fw.efivars),
        ] {
            if !p.is_absolute() {
                return Err(invalid(
                    field,
                    format!(
                        "must be an absolute path, got {:?}",
                        p.display().to_string()
                    ),
                ));
            }
        }
        if fw.slot_a == fw.slot_b {
            return Err(invalid(
                "firmware.slot-b",
                "is slot a's device: the slots must be two devices".into(),
            ));
        }
        let policy_max = cfg
            .plugins
            .settings
            .get("ha-policy")
            .and_then(|m| m.get(crate::plugins::HA_MAX_RESTARTS_KEY));
        if let Some(v) = policy_max {
            if v.trim()
                .parse::<u32>()
                .is_ok_and(|n| n > cfg.cluster.ha_max_restarts)
            {
                return Err(invalid(
                    "plugins.settings.ha-policy.max-restarts",
                    format!(
                        "{v} is more than cluster.ha-max-restarts ({}): the host stops \
                         restarting the VM first, so the policy's failover would never come",
                        cfg.cluster.ha_max_restarts
                    ),
                ));
            }
        }
        Ok(cfg)
    }

    /// Loads `path` (or the embedded defaults when `None`), then the site
    /// settings it names (`site-config`), if that file exists: its keys
    /// override `path`'s, table by table. What the firmware image sets
    /// ([`LOCKED_KEYS`]) cannot be overridden.
    ///
    /// `path` itself must be right (else the error). A site file that
    /// cannot be used (unreadable, not TOML, a locked key, a wrong value)
    /// is ignored as a whole: the daemon starts on `path` alone, so that
    /// bad site settings, which survive every update, cannot keep every
    /// slot from booting. [`Site::Ignored`] says why, naming the field;
    /// `--check` fails on it.
    pub fn load_with_site(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let base_text = path.map(read_config).transpose()?;
        let base = match (path, &base_text) {
            (Some(p), Some(text)) => Config::parse(text, p)?,
            _ => Config::default(),
        };
        let Some(site_path) = base.site_config.clone() else {
            return Ok(Loaded {
                config: base,
                site: Site::None,
                check: None,
                site_text: None,
            });
        };
        let check = SiteCheck {
            base: path.map(Path::to_path_buf).zip(base_text),
            path: site_path.clone(),
        };
        let read = std::fs::read_to_string(&site_path);
        let (config, site) = match &read {
            Ok(text) => match check.merged(text) {
                Ok((cfg, keys)) => (
                    cfg,
                    Site::Applied {
                        path: site_path,
                        keys,
                    },
                ),
                Err(e) => (base, Site::ignored(site_path, e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (base, Site::Absent(site_path)),
            Err(e) => {
                let e = ConfigError::Read {
                    path: site_path.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                };
                (base, Site::ignored(site_path, e))
            }
        };
        Ok(Loaded {
            config,
            site,
            check: Some(check),
            site_text: read.ok(),
        })
    }
}

fn read_config(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// The settings site settings may not change: where the daemon's data (and
/// the site file itself) lives, the firmware slots and their trust, and
/// the signed plugins of the slot with their keys.
pub const LOCKED_KEYS: &[&str] = &[
    "data-dir",
    "site-config",
    "firmware",
    "plugins.dir",
    "plugins.trusted-keys-dir",
];

/// What [`Config::load_with_site`] loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration the daemon runs with.
    pub config: Config,
    /// What became of the site settings.
    pub site: Site,
    /// How a site settings text is judged (when the configuration names a
    /// site file): the API checks a new file with it before writing it.
    pub check: Option<SiteCheck>,
    /// The site settings file's text as read (`None`: none, or unreadable).
    pub site_text: Option<String>,
}

/// The check the daemon's start makes of its site settings file: the
/// image's file (path and text, as read at this start) with the text laid
/// over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCheck {
    base: Option<(PathBuf, String)>,
    path: PathBuf,
}

impl SiteCheck {
    /// The site settings file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dotted keys `text` sets, or why the next start would ignore it
    /// (naming the file and the key).
    pub fn check(&self, text: &str) -> Result<Vec<String>, ConfigError> {
        self.merged(text).map(|(_, keys)| keys)
    }

    fn merged(&self, text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let base = self.base.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
        merged(base, text, &self.path)
    }
}

/// What became of the site settings ([`Config::load_with_site`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// The configuration names none.
    None,
    /// It names this file, which does not exist.
    Absent(PathBuf),
    /// This file's settings override the configuration's; the keys it set
    /// (dotted, sorted).
    Applied { path: PathBuf, keys: Vec<String> },
    /// This file was ignored, for this reason (naming the file and field).
    Ignored { path: PathBuf, reason: String },
}

impl Site {
    fn ignored(path: PathBuf, e: ConfigError) -> Site {
        Site::Ignored {
            path,
            reason: e.to_string(),
        }
    }

    /// One line for the start-up banner; `None` when there are no site
    /// settings to speak of.
    pub fn line(&self) -> Option<String> {
        match self {
            Site::None => None,
            Site::Absent(p) => Some(format!(
                "site settings: none ({} does not exist)",
                p.display()
            )),
            Site::Applied { path, keys } => Some(format!(
                "site settings: {} applied ({})",
                path.display(),
                if keys.is_empty() {
                    "no keys".to_string()
                } else {
                    keys.join(", ")
                }
            )),
            Site::Ignored { path, reason } => Some(format!(
                "site settings: {} IGNORED, running on the image's settings alone: {reason}",
                path.display()
            )),
        }
    }
}

/// `site_text` laid over the image's file (its path and text), or over
/// the embedded defaults when there is none; with the keys it set.
fn merged(
    base: Option<(&Path, &str)>,
    site_text: &str,
    site_path: &Path,
) -> Result<(Config, Vec<String>), ConfigError> {
    let parse_err = |path: &Path, e: toml::de::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    };
    let site: toml::Table = site_text.parse().map_err(|e| parse_err(site_path, e))?;
    let mut keys = Vec::new();
    leaf_keys(&site, "", &mut keys);
    keys.sort();
    let locked = keys.iter().find_map(|k| {
        LOCKED_KEYS
            .iter()
            .find(|l| k == *l || k.starts_with(&format!("{l}.")))
    });
    if let Some(field) = locked {
        return Err(ConfigError::Invalid {
            path: site_path.to_path_buf(),
            field: field.to_string(),
            reason: "set by the firmware image; site settings cannot change it".into(),
        });
    }
    let mut table: toml::Table = match base {
        None => toml::Table::new(),
        Some((p, text)) => text.parse().map_err(|e| parse_err(p, e))?,
    };
    overlay(&mut table, site);
    let text = toml::to_string(&table).map_err(|e| ConfigError::Parse {
        path: site_path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Errors name the site file: the image's own file alone was right.
    let cfg = Config::parse(&text, site_path)?;
    Ok((cfg, keys))
}

/// The dotted keys of the values (not tables) under `t`.
fn leaf_keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => leaf_keys(sub, &key, out),
            _ => out.push(key),
        }
    }
}

/// Lays `top` over `base`: tables are merged key by key, any other value
/// replaces the one below.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `[firmware] reboot-command`: not empty, no empty program; when firmware
/// is enabled (the command will run), its program an executable file, by
/// absolute path or found on `PATH`.
fn check_reboot_command(argv: &[String], enabled: bool) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("must name a program, e.g. [\"systemctl\", \"reboot\"]".into());
    };
    if program.is_empty() {
        return Err("the program is an empty string".into());
    }
    if !enabled {
        return Ok(());
    }
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        if !p.is_absolute() {
            return Err(format!(
                "the program must be an absolute path or a name on PATH, got {program:?}"
            ));
        }
        if !executable(p) {
            return Err(format!("{program:?} is not an executable file"));
        }
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "{program:?} is not found on PATH ({})",
            path.to_string_lossy()
        ))
    }
}

impl FirmwareConfig {
    /// The core's firmware settings, when enabled; the state lives under
    /// `data_dir/firmware`.
    pub fn settings(&self, data_dir: &Path) -> Option<nasvisor_core::FirmwareSettings> {
        self.enabled.then(|| nasvisor_core::FirmwareSettings {
            slots: nasvisor_firmware::SlotConfig {
                esp: self.esp.clone(),
                devices: [self.slot_a.clone(), self.slot_b.clone()],
                cmdline: self.cmdline.clone(),
                state_dir: data_dir.join("firmware"),
                tries: self.tries,
                efivars: self.efivars.clone(),
            },
            trusted_keys_dir: self.trusted_keys_dir.clone(),
            product: self.product.clone(),
            board: self.board.clone(),
            service_deadline: std::time::Duration::from_secs(self.service_deadline_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_is_off_by_default_and_needs_its_product_and_board_when_on() {
        let cfg = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(!cfg.firmware.enabled);
        assert!(cfg.firmware.settings(&cfg.data_dir).is_none());
        let e = Config::parse(
            "[firmware]\nenabled = true\nproduct = \"acme-nas\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("firmware.board: required"), "{e}");
        let e = Config::parse("[firmware]\ntries = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("firmware.tries"), "{e}");
        let e = Config::parse("[firmware]\nesp = \"efi\"\n", Path::new("c.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("firmware.esp: must be an absolute path"),
            "{e}"
        );
        let cfg = Config::parse(
            "data-dir = \"/data\"\n[firmware]\nenabled = true\nproduct = \"acme-nas\"\nboard = \"acme-nas4\"\ntries = 5\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let s = cfg.firmware.settings(&cfg.data_dir).unwrap();
        assert_eq!(s.slots.state_dir, PathBuf::from("/data/firmware"));
        assert_eq!(s.slots.tries, 5);
        assert_eq!(s.slots.esp, PathBuf::from("/efi"));
        assert_eq!(s.board, "acme-nas4");
        assert_eq!(cfg.firmware.reboot_command, ["systemctl", "reboot"]);
    }

    #[test]
    fn the_reboot_command_must_name_a_program_that_exists_when_firmware_is_on() {
        let on = "[firmware]\nenabled = true\nproduct = \"p\"\nboard = \"b\"\n";
        let e =
            Config::parse(&format!("{on}reboot-command = []\n"), Path::new("c.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("firmware.reboot-command: must name a program"),
            "{e}"
        );
        let e = Config::parse(
            &format!("{on}reboot-command = [\"bin/reboot\"]\n"),
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = Config::parse(
            &format!("{on}reboot-command = [\"/nonexistent/reboot\"]\n"),
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "firmware.reboot-command: \"/nonexistent/reboot\" is not an executable file"
            ),
            "{e}"
        );
        let e = Config::parse(
            &format!("{on}reboot-command = [\"no-such-reboot-tool\"]\n"),
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not found on PATH"), "{e}");
        let cfg = Config::parse(
            &format!("{on}reboot-command = [\"sh\", \"-c\", \"reboot\"]\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.firmware.reboot_command, ["sh", "-c", "reboot"]);
        // Off, the program is not looked up (the command never runs).
        Config::parse(
            "[firmware]\nreboot-command = [\"no-such-reboot-tool\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse(
            "[plugins]\njournal-max-bytes = \"big\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("journal-max-bytes"), "{e}");
        let e =
            Config::parse("[plugins.runtime]\ndeadline-ms = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("deadline-ms"), "{e}");
        let e = Config::parse(
            "[plugins.settings.schedular]\nx = \"1\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("plugins.settings.schedular"), "{e}");
        // The policy's restart limit may not exceed the host's.
        let e = Config::parse(
            "[cluster]\nha-max-restarts = 2\n[plugins.settings.ha-policy]\nmax-restarts = \"5\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("plugins.settings.ha-policy.max-restarts")
                && msg.contains("cluster.ha-max-restarts (2)"),
            "{e}"
        );
        assert!(Config::parse(
            "[cluster]\nha-max-restarts = 5\n[plugins.settings.ha-policy]\nmax-restarts = \"5\"\n",
            Path::new("c.toml"),
        )
        .is_ok());
        let e = Config::parse("data-dri = \"/x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("data-dri"), "{e}");
        let e = Config::parse("[api]\nlisten = \"localhost\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("api.listen"), "{e}");
        let e = Config::parse("[vm]\naccel = \"fast\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("accel"), "{e}");
        let e = Config::parse("[host]\nname = \"a/b\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("host.name"), "{e}");
        let e = Config::parse("[network]\nnetns = \"../x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("network.netns"), "{e}");
    }

    #[test]
    fn server_limits_are_checked_naming_the_key() {
        let c = Config::parse(
            "[api.limits]\nbody-timeout-ms = 500\n[cluster.limits]\nmax-connections = 64\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.api.limits.limits().body_timeout.as_millis(), 500);
        assert_eq!(c.api.limits.max_connections, 256, "the rest: defaults");
        assert_eq!(c.cluster.limits.max_connections, 64);
        for (text, field) in [
            (
                "[api.limits]\nmax-connections = 0\n",
                "api.limits.max-connections",
            ),
            (
                "[cluster.limits]\nmax-connections-per-address = 1000\n",
                "cluster.limits.max-connections-per-address",
            ),
            (
                "[api.limits]\nheader-timeout-ms = 10\n",
                "api.limits.header-timeout-ms",
            ),
            (
                "[cluster.limits]\nidle-timeout-ms = 60000\n",
                "cluster.limits.idle-timeout-ms",
            ),
            ("[api.limits]\nbody-timeout = 5\n", "body-timeout"),
        ] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err();
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn settings_parse() {
        let c = Config::parse(
            "data-dir = \"/tmp/nv\"\n[plugins.settings.scheduler]\nstrategy = \"pack\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.plugins.settings["scheduler"]["strategy"], "pack");
    }

    #[test]
    fn site_settings_override_the_images_unless_they_touch_what_the_image_sets() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("nasvisord.toml");
        let site = dir.path().join("site.toml");
        std::fs::write(
            &base,
            format!(
                "site-config = \"{}\"\n[api]\nlisten = \"0.0.0.0:8443\"\n\
                 [cluster]\nheartbeat-interval-ms = 500\noffline-after-s = 20\n",
                site.display()
            ),
        )
        .unwrap();
        let load = || Config::load_with_site(Some(&base)).unwrap();

        // No site file yet: the image's settings, and the banner says so.
        let Loaded {
            config: cfg,
            site: s,
            check,
            site_text,
        } = load();
        assert_eq!(site_text, None);
        let check = check.expect("a site file is named: its check");
        assert_eq!(check.path(), site);
        assert_eq!(s, Site::Absent(site.clone()));
        assert_eq!(cfg.api.listen, "0.0.0.0:8443");
        assert!(s.line().unwrap().contains("does not exist"));

        // Its keys win, table by table; the image's others stay.
        std::fs::write(
            &site,
            "[host]\nname = \"nas7\"\n[cluster]\nheartbeat-interval-ms = 250\n",
        )
        .unwrap();
        let Loaded {
            config: cfg,
            site: s,
            site_text,
            ..
        } = load();
        assert_eq!(
            site_text.as_deref(),
            Some("[host]\nname = \"nas7\"\n[cluster]\nheartbeat-interval-ms = 250\n")
        );
        assert_eq!(
            check.check("[host]\nname = \"nas7\"\n").unwrap(),
            ["host.name"]
        );
        assert_eq!(
            s,
            Site::Applied {
                path: site.clone(),
                keys: vec!["cluster.heartbeat-interval-ms".into(), "host.name".into()],
            }
        );
        assert_eq!(cfg.host.name, "nas7");
        assert_eq!(cfg.cluster.heartbeat_interval_ms, 250);
        assert_eq!(cfg.cluster.offline_after_s, 20);
        assert_eq!(cfg.api.listen, "0.0.0.0:8443");

        // Bad site settings are ignored as a whole, naming the file and the
        // field: the daemon runs on the image's settings.
        for (text, field) in [
            (
                "[firmware]\nboard = \"other\"\n",
                "firmware: set by the firmware image",
            ),
            (
                "data-dir = \"/tmp/x\"\n",
                "data-dir: set by the firmware image",
            ),
            (
                "[plugins]\ntrusted-keys-dir = \"/tmp\"\n",
                "plugins.trusted-keys-dir: set by",
            ),
            ("site-config = \"/tmp/y.toml\"\n", "site-config: set by"),
            (
                "[cluster]\nheartbeat-interval-ms = 5\n",
                "cluster.heartbeat-interval-ms: must be 50 to 10000",
            ),
            ("[host]\nnmae = \"x\"\n", "unknown field `nmae`"),
            ("[host\n", "site.toml"),
        ] {
            std::fs::write(&site, text).unwrap();
            let e = check.check(text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("site.toml"), "{text}: {e}");
            let Loaded {
                config: cfg,
                site: s,
                ..
            } = load();
            let Site::Ignored { path, reason } = &s else {
                panic!("{text}: {s:?}");
            };
            assert_eq!(path, &site);
            assert!(reason.contains(field), "{text}: {reason}");
            assert!(reason.contains("site.toml"), "{text}: {reason}");
            assert_eq!(cfg.host.name, "", "{text}");
            assert_eq!(cfg.cluster.heartbeat_interval_ms, 500, "{text}");
            assert!(s.line().unwrap().contains("IGNORED"), "{text}");
        }

        // The image's own file must be right, site settings or not.
        std::fs::write(&base, "[api]\nlisten = \"nowhere\"\n").unwrap();
        assert!(Config::load_with_site(Some(&base)).is_err());
        // Without a file, the defaults, and no site settings.
        assert_eq!(
            Config::load_with_site(None).unwrap(),
            Loaded {
                config: Config::default(),
                site: Site::None,
                check: None,
                site_text: None,
            }
        );
    }
}
