//! `nasvisord`: the nasvisor host service.
//!
//! It loads the configuration (embedded defaults when no file is given), the
//! trusted signer keys, the sandbox runtime with its compiled-code cache, the
//! decision journal and the signed plugins of the plugin directory; then it
//! starts the core (cluster store, accelerator probe, VMs found again,
//! interrupted jobs cleaned up) and serves the HTTPS admin endpoint until
//! SIGTERM or SIGINT. VMs keep running when it stops.
//!
//! `nasvisord watchdog --lease PATH`, which the daemon starts itself, is the
//! HA watchdog instead (docs/ha.md, "The watchdog").

mod config;
mod plugins;
mod service;
mod systemd;

use clap::Parser;
use config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "nasvisord", version, about = "The nasvisor host service")]
struct Args {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(long, short, env = "NASVISOR_CONFIG")]
    config: Option<PathBuf>,
    /// Override `data-dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override `plugins.dir`.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Override `plugins.trusted-keys-dir`.
    #[arg(long)]
    trusted_keys_dir: Option<PathBuf>,
    /// Override `api.listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Start, report what was loaded, and exit (non-zero if a plugin was
    /// refused or the site settings are ignored).
    #[arg(long)]
    check: bool,
    /// Log filter (tracing env-filter syntax). The default shows nasvisor's
    /// own messages from info up and the libraries' (openraft's elections,
    /// hyper, rustls, wasmtime) from warn up; `info` shows everyone's.
    #[arg(long, default_value = DEFAULT_LOG, env = "NASVISOR_LOG")]
    log: String,
    /// Log format: `text` (one line per event) or `json` (one JSON object
    /// per line: timestamp, level, target, fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "NASVISOR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The default log filter: nasvisor's crates (`nasvisord`, `nasvisor_*`)
/// at info, every library at warn.
const DEFAULT_LOG: &str = "warn,nasvisor=info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Text, one line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The log subscriber of `filter` and `format`, writing through
/// [`RedactingWriter`] to `out`.
fn log_subscriber<W>(
    filter: &str,
    format: LogFormat,
    ansi: bool,
    out: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, String>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?}: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(out);
    Ok(match format {
        LogFormat::Text => Box::new(b.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(b.json().flatten_event(true).finish()),
    })
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The HA watchdog (started by the daemon, not by hand): kills the HA
    /// QEMUs listed in the lease when it lapses (docs/ha.md). SIGTERM ends it.
    Watchdog {
        /// The lease file the daemon renews.
        #[arg(long)]
        lease: PathBuf,
        /// How often the lease is checked, ms.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=1000))]
        poll_ms: u64,
    },
    /// The watchdog of a service release on trial (started by the daemon
    /// when it restarts into a release, not by hand): rolls the release
    /// back when it is not healthy by its deadline (docs/firmware.md).
    ServiceWatch(service::WatchArgs),
}

fn main() -> ExitCode {
    // Everything the daemon and its children (QEMU, qemu-img, mkfs.vfat...)
    // create holds secrets or guest data (the store, the journal, seeds,
    // disks, console logs, keys): private from the first byte.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match log_subscriber(&args.log, args.log_format, ansi, || {
        RedactingWriter(std::io::stderr())
    }) {
        Ok(s) => {
            if let Err(e) = tracing::subscriber::set_global_default(s) {
                eprintln!("nasvisord: logging: {e}");
                return ExitCode::from(2);
            }
        }
        Err(e) => {
            eprintln!("nasvisord: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(Command::Watchdog { lease, poll_ms }) = &args.command {
        return watchdog(lease, std::time::Duration::from_millis(*poll_ms));
    }
    let mut loaded = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nasvisord: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::ServiceWatch(w)) = &args.command {
        let cfg = &loaded.config;
        return match cfg.firmware.settings(&cfg.data_dir) {
            Some(fw) => service::watch(&fw, w),
            None => {
                eprintln!("nasvisord service-watch: firmware is not enabled in this configuration");
                ExitCode::from(2)
            }
        };
    }
    // Before anything else is opened: the service release to run instead
    // of this binary, if any (the call does not return then).
    let serving = !args.print_config && !args.check;
    if serving {
        if let Some(fw) = loaded.config.firmware.settings(&loaded.config.data_dir) {
            service::launch(&fw);
        }
    }
    // This process serves: it counts a start with site settings on trial,
    // or puts the previous ones back when such a start never got to serve.
    let mut rolled_back = None;
    if let (true, Some(check)) = (serving, &loaded.check) {
        match nasvisor_core::SiteTrial::new(check.path()).start() {
            Ok(nasvisor_core::TrialStart::RolledBack(why)) => {
                tracing::error!(%why, "site settings put back");
                loaded = match load_config(&args) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("nasvisord: {e}");
                        return ExitCode::from(2);
                    }
                };
                rolled_back = Some(why);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot keep the trial of the site settings")
            }
        }
    }
    let config::Loaded {
        config: cfg,
        site,
        check: site_check,
        site_text,
    } = loaded;
    match &site {
        config::Site::Ignored { path, reason } => {
            tracing::error!(site = %path.display(), %reason, "site settings ignored; running on the image's settings alone")
        }
        config::Site::Applied { path, keys } => {
            tracing::info!(site = %path.display(), ?keys, "site settings applied")
        }
        config::Site::None | config::Site::Absent(_) => {}
    }
    if args.print_config {
        match toml::to_string_pretty(&cfg) {
            Ok(s) => {
                print!("{s}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("nasvisord: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (host, loads) = match plugins::start(&cfg) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("nasvisord: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let status = serde_json::json!({
        "data-dir": cfg.data_dir,
        "site-settings": site.line(),
        "plugin-dir": cfg.plugins.dir,
        "slots": host.status(),
        "loaded": loads.iter().filter_map(|l| l.result.as_ref().ok()).collect::<Vec<_>>(),
        "refused": loads.iter().filter_map(|l| l.result.as_ref().err().map(|e| serde_json::json!({
            "path": l.path, "error": e
        }))).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&status).unwrap_or_default()
    );
    if args.check {
        if let config::Site::Ignored { .. } = site {
            eprintln!("nasvisord: {}", site.line().unwrap_or_default());
            return ExitCode::FAILURE;
        }
        return if loads.iter().all(|l| l.result.is_ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nasvisord: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let firmware = cfg.firmware.settings(&cfg.data_dir);
    let notifier = systemd::Notifier::from_env();
    let site_settings = site_check.map(|check| site_settings(&site, check, site_text, rolled_back));
    match rt.block_on(serve(cfg, host, notifier, site_settings)) {
        Ok(Stopped::Signal) => ExitCode::SUCCESS,
        Ok(Stopped::Restart) => {
            // Every thread of the runtime ends before the exec.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            let e = match firmware {
                Some(fw) => {
                    // A release on trial has until its own deadline to
                    // serve (its watchdog rolls it back then); systemd's
                    // waits longer.
                    notifier.allow_gap(fw.service_deadline + std::time::Duration::from_secs(30));
                    service::restart(&fw)
                }
                None => {
                    notifier.allow_gap(std::time::Duration::from_secs(120));
                    service::reexec()
                }
            };
            eprintln!("nasvisord: cannot restart in place: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nasvisord: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The core's view of the site settings: the file, the check of a new
/// text (as the next start will make it), and what this start made of it.
fn site_settings(
    site: &config::Site,
    check: config::SiteCheck,
    text: Option<String>,
    rolled_back: Option<String>,
) -> nasvisor_core::SiteSettings {
    use nasvisor_api::types::SiteSettingsState as S;
    let (state, keys, reason) = match site {
        config::Site::None => (S::None, Vec::new(), None),
        config::Site::Absent(_) => (S::Absent, Vec::new(), None),
        config::Site::Applied { keys, .. } => (S::Applied, keys.clone(), None),
        config::Site::Ignored { reason, .. } => (S::Ignored, Vec::new(), Some(reason.clone())),
    };
    let path = check.path().to_path_buf();
    nasvisor_core::SiteSettings {
        path,
        check: std::sync::Arc::new(move |t: &str| check.check(t).map_err(|e| e.to_string())),
        at_start: nasvisor_core::SiteAtStart {
            state,
            keys,
            reason,
            text,
            rolled_back,
        },
    }
}

/// The configuration (`--config`, with its site settings), with the
/// command line's overrides.
fn load_config(args: &Args) -> Result<config::Loaded, config::ConfigError> {
    let mut loaded = Config::load_with_site(args.config.as_deref())?;
    let cfg = &mut loaded.config;
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(d) = &args.plugin_dir {
        cfg.plugins.dir = d.clone();
    }
    if let Some(d) = &args.trusted_keys_dir {
        cfg.plugins.trusted_keys_dir = d.clone();
    }
    if let Some(l) = &args.listen {
        cfg.api.listen = l.clone();
    }
    if let Some(root) = service::release_plugins() {
        // A service release carries its plugins.
        cfg.plugins.dir = root;
    }
    Ok(loaded)
}

/// Why [`serve`] returned.
enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
    /// A service release was staged, or new site settings are to be
    /// applied at once: restart in place.
    Restart,
}

/// `nasvisord watchdog`: [`nasvisor_watchdog::run`] until SIGTERM or
/// SIGINT, then exit 0. The signals are received by a small runtime on a
/// thread of its own (no handler of ours runs in signal context); when it
/// cannot be set up the watchdog watches anyway, and a signal ends it the
/// default way.
fn watchdog(lease: &std::path::Path, poll: std::time::Duration) -> ExitCode {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            // Registered here, before the first round: a signal from now on
            // ends the watchdog cleanly.
            let _in_rt = rt.enter();
            Ok((
                rt,
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        });
    match signals {
        Ok((rt, mut term, mut int)) => {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let which = rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    }
                });
                tracing::info!(signal = which, "the HA watchdog stops");
                stop.store(true, Ordering::Relaxed);
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM and SIGINT; the watchdog watches anyway")
        }
    }
    nasvisor_watchdog::run(&nasvisor_watchdog::LeaseFile::new(lease), poll, &stop);
    ExitCode::SUCCESS
}

/// The log's writer: every line goes out with password hashes and SSH key
/// blobs replaced ([`nasvisor_plugin_host::redact`]), whichever message
/// (a plugin's log record, an error quoting a request) carried them. The
/// types that hold secrets already hide them in their `Debug`; this is the
/// last line of defence.
struct RedactingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One formatted event per call.
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(nasvisor_plugin_host::redact::redact_secrets(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn core_config(
    cfg: &Config,
    notifier: &systemd::Notifier,
    site_settings: Option<nasvisor_core::SiteSettings>,
) -> nasvisor_core::CoreConfig {
    let mut c = nasvisor_core::CoreConfig::new(&cfg.data_dir);
    c.service_watchdog = notifier.watchdog();
    c.site_settings = site_settings;
    if !cfg.host.name.is_empty() {
        c.host_name = cfg.host.name.clone();
    }
    c.qemu_binary = cfg.vm.qemu_binary.clone();
    c.accel = cfg.vm.accel;
    c.accel_probe_timeout = std::time::Duration::from_millis(cfg.vm.accel_probe_timeout_ms);
    c.reserved_memory_mib = cfg.vm.reserved_memory_mib;
    c.console_log_bytes = cfg.vm.console_log_bytes;
    c.netns = cfg.network.netns.clone();
    c.cluster_address = cfg.cluster.address.clone();
    c.heartbeat_interval = std::time::Duration::from_millis(cfg.cluster.heartbeat_interval_ms);
    c.offline_after = std::time::Duration::from_secs(cfg.cluster.offline_after_s);
    c.quorum_stop_delay = std::time::Duration::from_secs(cfg.cluster.quorum_stop_delay_s);
    c.ha_fence_delay = std::time::Duration::from_secs(cfg.cluster.ha_fence_delay_s);
    c.fence_command = cfg.cluster.fence_command.clone();
    c.fence_command_timeout = std::time::Duration::from_secs(cfg.cluster.fence_command_timeout_s);
    c.watchdog_exe = std::env::current_exe().ok();
    c.ha_lease_dir = cfg.cluster.ha_lease_dir.clone();
    c.ha_max_restarts = cfg.cluster.ha_max_restarts;
    c.ha_restart_period = std::time::Duration::from_secs(cfg.cluster.ha_restart_period_s);
    c.migration_tls = cfg.cluster.migration_tls;
    c.cluster_limits = cfg.cluster.limits.limits();
    c.firmware = cfg.firmware.settings(&cfg.data_dir);
    c.service_release = service::running_release();
    c.reboot_command = cfg.firmware.reboot_command.clone();
    c.bundled_images = cfg
        .images
        .bundled
        .iter()
        .filter(|b| {
            let ok = b.path.is_file();
            if !ok {
                tracing::info!(image = %b.name, path = %b.path.display(), "bundled image not installed; skipped");
            }
            ok
        })
        .map(|b| nasvisor_core::BundledImage {
            name: b.name.clone(),
            path: b.path.clone(),
            metadata: b.metadata.clone(),
        })
        .collect();
    c
}

async fn serve(
    cfg: Config,
    policy: std::sync::Arc<nasvisor_plugin_host::PolicyHost>,
    notifier: systemd::Notifier,
    site_settings: Option<nasvisor_core::SiteSettings>,
) -> anyhow::Result<Stopped> {
    use anyhow::Context;
    let trial = site_settings
        .as_ref()
        .map(|s| nasvisor_core::SiteTrial::new(&s.path));
    // systemd's watchdog is fed from now on: while the core starts, the
    // runtime answering is enough; once it serves, its store must answer.
    let started = std::sync::Arc::new(std::sync::OnceLock::<nasvisor_core::NasCore>::new());
    notifier.keep_alive(
        started.clone(),
        |core: &nasvisor_core::NasCore, longest_write| {
            let core = core.clone();
            async move { core.alive(longest_write).await }
        },
    );
    // The composition root: the cluster network (CA, mutual TLS, the
    // cluster endpoint) is chosen here and handed to the core's store, and
    // the HTTP(S) client that carries image downloads to the core.
    let cluster_net = nasvisor_cluster_net::TlsNet::shared();
    let downloader =
        std::sync::Arc::new(nasvisor_download::HttpDownloader::new().context("image downloader")?);
    let core = nasvisor_core::NasCore::start(
        core_config(&cfg, &notifier, site_settings),
        policy,
        cluster_net,
        downloader,
    )
    .await
    .context("starting the core")?;
    let listen: std::net::SocketAddr = cfg
        .api
        .listen
        .parse()
        .with_context(|| format!("api.listen {:?}", cfg.api.listen))?;
    let mut settings = nasvisor_api::ServerSettings::new(listen, &cfg.data_dir);
    settings.tls.cert = cfg.api.tls_cert.clone();
    settings.tls.key = cfg.api.tls_key.clone();
    settings.tls.extra_names = cfg.api.extra_names.clone();
    settings.max_upload = cfg.api.max_upload_bytes;
    settings.max_firmware = cfg.firmware.max_bundle_bytes;
    settings.limits = cfg.api.limits.limits();
    let server = nasvisor_api::Server::bind(settings, std::sync::Arc::new(core.clone()))
        .await
        .context("starting the HTTPS endpoint")?;
    // The banner carries the bootstrap admin token on the first start only.
    println!("{}", server.startup_banner(core.take_bootstrap_token()));
    let addr = server.local_addr()?;
    tracing::info!(
        host = %core.host().id,
        accel = core.accel().qemu_name(),
        %addr,
        "nasvisord running; stop it with SIGTERM or Ctrl-C (VMs keep running)"
    );
    // Who runs this host's service now: supervisors and tests find the
    // daemon here after a service release was rolled back.
    let pid_file = cfg.data_dir.join("nasvisord.pid");
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %pid_file.display(), error = %e, "cannot write the pid file");
    }
    let _ = started.set(core.clone());
    notifier.ready(&format!("serving on {addr}"));
    if let Some(t) = trial {
        // A start with the site settings changed last serves: they are good.
        if let Err(e) = t.confirm() {
            tracing::warn!(error = %e, "cannot end the trial of the site settings");
        }
    }
    if service::running_release().is_some() {
        let c = core.clone();
        tokio::spawn(async move { c.confirm_service_release().await });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let restart = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let core = core.clone();
        let restart = restart.clone();
        async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
                _ = core.restart_requested() => {
                    restart.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!("restarting in place (a service release was staged, or new site settings are applied); running VMs keep running");
                    notifier.status("restarting in place");
                    return;
                },
            }
            tracing::info!("stopping; running VMs keep running");
            notifier.stopping("stopping; running VMs keep running");
        }
    };
    server.serve(stop).await?;
    core.shutdown().await.context("closing the cluster store")?;
    Ok(if restart.load(std::sync::atomic::Ordering::SeqCst) {
        Stopped::Restart
    } else {
        Stopped::Signal
    })
}

#[cfg(test)]
mod tests {
    use super::{log_subscriber, LogFormat, RedactingWriter, DEFAULT_LOG};
    use std::sync::{Arc, Mutex};

    /// A log sink for tests.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(filter: &str, format: LogFormat) -> String {
        let sink = Sink::default();
        let out = sink.clone();
        let sub =
            log_subscriber(filter, format, false, move || RedactingWriter(out.clone())).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "openraft::engine", "election chatter");
            tracing::warn!(target: "openraft::engine", "a library's warning");
            tracing::info!(target: "nasvisor_core::vms", vm = "web1", "started");
            tracing::info!(target: "nasvisord", "running");
        });
        let b = sink.0.lock().unwrap().clone();
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn by_default_only_nasvisors_messages_and_the_libraries_warnings_show() {
        let text = logged(DEFAULT_LOG, LogFormat::Text);
        assert!(
            text.contains("started") && text.contains("running"),
            "{text}"
        );
        assert!(text.contains("a library's warning"), "{text}");
        assert!(!text.contains("election chatter"), "{text}");
        let all = logged("info", LogFormat::Text);
        assert!(all.contains("election chatter"), "{all}");
        assert!(log_subscriber("nasvisor=loud", LogFormat::Text, false, std::io::sink).is_err());
    }

    #[test]
    fn json_logs_are_one_object_per_line() {
        let text = logged(DEFAULT_LOG, LogFormat::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let started = lines.iter().find(|l| l["message"] == "started").unwrap();
        assert_eq!(started["vm"], "web1");
        assert_eq!(started["level"], "INFO");
        assert_eq!(started["target"], "nasvisor_core::vms");
    }
    use std::io::Write;

    #[test]
    fn the_log_writer_never_lets_a_hash_or_a_key_through() {
        let mut out = Vec::new();
        let line = "2026-01-01T00:00:00Z  INFO plugin: user-data users: [{passwd: \
                    $6$salt$aGFzaGhhc2hoYXNoaGFzaA, keys: [ssh-ed25519 \
                    AAAAC3NzaC1lZDI1NTE5AAAAIE5hc3Zpc29yS2V5VGhhdE11c3ROZXZlckJlTG9nZ2Vk]}]\n";
        let n = RedactingWriter(&mut out).write(line.as_bytes()).unwrap();
        assert_eq!(n, line.len(), "the whole line counts as written");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("aGFzaGhhc2hoYXNoaGFzaA"), "{text}");
        assert!(!text.contains("E5hc3Zpc29yS2V5"), "{text}");
        assert!(
            text.contains("passwd: <redacted>, keys: [ssh-ed25519 <redacted>]"),
            "{text}"
        );
    }
}
