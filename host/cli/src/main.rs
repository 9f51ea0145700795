//! `nasvisor`: the command-line tool. The plugin commands ([`plugin_cmd`])
//! and the firmware bundle commands ([`firmware_cmd`]) work locally; the
//! host, VM, storage, image, network, job and event commands talk to
//! nasvisord's HTTPS admin API (module [`api`]), to the endpoint the
//! connection options or a remote ([`config`], `nasvisor remote`) name.
//! `completion` and `man` describe the tool itself ([`generate`]).

mod api;
mod config;
mod firmware_cmd;
mod generate;
mod plugin_build;
mod plugin_cmd;
mod remote_cmd;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `--token` prints: the flag still works, for old scripts.
const TOKEN_FLAG_WARNING: &str =
    "warning: --token exposes the token in the process list; use a remote, --token-file or NASVISOR_TOKEN";

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
    output: api::render::OutputOpts,
    #[command(flatten)]
    api: api::target::ApiOpts,
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
    /// Build, sign, verify and inspect signed firmware update bundles
    /// (local files); install one on a host and show its slots (over the
    /// API). docs/firmware.md.
    #[command(subcommand)]
    Firmware(firmware_cmd::FirmwareCommand),
    /// Named nasvisords (endpoint, pinned certificate, token) in the CLI's
    /// config file: add, list, show, switch, remove.
    #[command(subcommand)]
    Remote(remote_cmd::RemoteCmd),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell (e.g. `nasvisor completion bash > /etc/bash_completion.d/nasvisor`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or with --dir write one per command
    /// (nasvisor.1, nasvisor-vm.1, nasvisor-vm-create.1, ...).
    Man {
        /// Directory to write every page into (created if missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if matches.value_source("token") == Some(ValueSource::CommandLine) {
        eprintln!("{TOKEN_FLAG_WARNING}");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let out = cli.output.out();
    let opts = &cli.api;
    match cli.command {
        Command::Api(cmd) => api::run(cmd, opts, out),
        Command::Plugin(plugin_cmd::PluginCommand::List) => {
            api::with_client(opts, out, api::plugin::list)
        }
        Command::Plugin(plugin_cmd::PluginCommand::Decisions { world, host, limit }) => {
            api::with_client(opts, out, |c, out| {
                api::plugin::decisions(c, out, world.as_deref(), host.as_deref(), limit)
            })
        }
        Command::Plugin(plugin_cmd::PluginCommand::Install { package }) => {
            api::with_client(opts, out, |c, out| api::plugin::install(c, out, &package))
        }
        Command::Plugin(plugin_cmd::PluginCommand::Uninstall { world }) => {
            api::with_client(opts, out, |c, out| api::plugin::uninstall(c, out, &world))
        }
        Command::Plugin(plugin_cmd::PluginCommand::Reset { world }) => {
            api::with_client(opts, out, |c, out| api::plugin::reset(c, out, &world))
        }
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
        Command::Firmware(firmware_cmd::FirmwareCommand::Status) => {
            api::with_client(opts, out, api::firmware::status)
        }
        Command::Firmware(firmware_cmd::FirmwareCommand::Reboot {
            force,
            shutdown_timeout,
            wait,
        }) => api::with_client(opts, out, |c, out| {
            api::firmware_reboot::reboot(c, out, force, shutdown_timeout, wait)
        }),
        Command::Firmware(firmware_cmd::FirmwareCommand::Install { bundle, wait }) => {
            api::with_client(opts, out, |c, out| {
                api::firmware::install(c, out, &bundle, wait)
            })
        }
        Command::Firmware(cmd) => firmware_cmd::run(cmd, out),
        Command::Remote(cmd) => api::exit(remote_cmd::run(cmd, opts, out)),
        Command::Completion { shell } => api::exit(generate::print(&generate::completion(
            Cli::command(),
            shell,
        ))),
        Command::Man { dir: Some(dir) } => {
            api::exit(generate::man_pages(Cli::command(), &dir).map(|()| {
                println!("manual pages written to {}", dir.display());
            }))
        }
        Command::Man { dir: None } => {
            api::exit(generate::man_page(Cli::command()).and_then(|p| generate::print(&p)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definitions_agree() {
        // Names, short options (`-o` is --output everywhere) and globals
        // that clash would panic at parse time in a debug build.
        Cli::command().debug_assert();
    }
}
