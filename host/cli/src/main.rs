//! `nasvisor`: the command-line tool. The plugin commands work locally; the
//! host, VM, storage, image, network, job and event commands talk to
//! nasvisord's HTTPS admin API (module [`api`]).

mod api;
mod plugin_build;
mod plugin_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "nasvisor",
    version,
    about = "Administer a nasvisor host and its plugins"
)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. "info" or "nasvisor=debug".
    #[arg(long, global = true, default_value = "warn", env = "NASVISOR_LOG")]
    log: String,
    #[command(flatten)]
    api: api::client::ApiOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Api(api::commands::ApiCommand),
    /// Write, build, sign, check and try policy plugins; list the loaded ones.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Api(cmd) => api::commands::run(cmd, &cli.api),
        Command::Plugin(plugin_cmd::PluginCommand::List) => {
            api::commands::run_plugin_list(&cli.api)
        }
        Command::Plugin(plugin_cmd::PluginCommand::Install { package }) => {
            api::commands::run_plugin_install(&cli.api, &package)
        }
        Command::Plugin(plugin_cmd::PluginCommand::Uninstall { world }) => {
            api::commands::run_plugin_uninstall(&cli.api, &world)
        }
        Command::Plugin(plugin_cmd::PluginCommand::Reset { world }) => {
            api::commands::run_plugin_reset(&cli.api, &world)
        }
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
    }
}
