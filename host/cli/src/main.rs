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
    Api(api::ApiCommand),
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
        Command::Api(cmd) => api::run(cmd, &cli.api),
        Command::Plugin(plugin_cmd::PluginCommand::List) => {
            api::with_client(&cli.api, api::plugin::list)
        }
        Command::Plugin(plugin_cmd::PluginCommand::Install { package }) => {
            api::with_client(&cli.api, |c, out| api::plugin::install(c, out, &package))
        }
        Command::Plugin(plugin_cmd::PluginCommand::Uninstall { world }) => {
            api::with_client(&cli.api, |c, out| api::plugin::uninstall(c, out, &world))
        }
        Command::Plugin(plugin_cmd::PluginCommand::Reset { world }) => {
            api::with_client(&cli.api, |c, out| api::plugin::reset(c, out, &world))
        }
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
    }
}
