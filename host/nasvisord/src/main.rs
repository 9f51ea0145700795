//! `nasvisord`: the nasvisor host service.
//!
//! This first cut brings up the policy layer: it loads the configuration
//! (embedded defaults when no file is given), the trusted signer keys, the
//! sandbox runtime with its compiled-code cache, the decision journal and the
//! signed plugins of the plugin directory, reports what it loaded, and keeps
//! running. VMs, storage, networking and the HTTPS API come with the
//! single-host work (issue 3).

mod config;
mod plugins;

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
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Start, report what was loaded, and exit (non-zero if a plugin was refused).
    #[arg(long)]
    check: bool,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, default_value = "info", env = "NASVISOR_LOG")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nasvisord: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(d) = args.plugin_dir {
        cfg.plugins.dir = d;
    }
    if let Some(d) = args.trusted_keys_dir {
        cfg.plugins.trusted_keys_dir = d;
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
        return if loads.iter().all(|l| l.result.is_ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    tracing::info!("nasvisord running; stop it with SIGTERM or Ctrl-C");
    loop {
        std::thread::park();
    }
}
