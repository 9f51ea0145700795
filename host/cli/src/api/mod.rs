//! The commands that talk to nasvisord's HTTPS admin API, one file per
//! resource group, each with its clap types and a `run`:
//!
//! - [`host`], [`cluster`]: this host, the cluster's hosts and membership;
//! - [`vm`]: VMs (power, edit, migrate, console); [`install`]: `vm create`
//!   and its install options;
//! - [`storage`]: pools, volumes, snapshots; [`image`]: system images;
//!   [`vswitch`]: virtual switches;
//! - [`jobs`]: `job` and following a job; [`event`]: the event log;
//!   [`plugin`]: the plugins of the cluster; [`firmware`]: this host's
//!   firmware slots (`firmware install|status`); [`access`]: users, API
//!   tokens, passwords and the audit log.
//!
//! Request bodies are the `nasvisor-api-types` structs; answers are read
//! into its views, and printed through [`render`] (tables, `show`, or the
//! view re-serialized with `--output json|yaml`). [`target`] resolves the
//! connection options and remotes into an endpoint, a trust and a token,
//! [`client`] is the HTTPS client, [`console`] the streamed console and
//! image upload, [`table`] the layout of tables.

pub mod access;
pub mod client;
mod cluster;
mod cluster_update;
mod console;
mod event;
pub mod firmware;
pub mod firmware_reboot;
mod ha;
mod host;
mod image;
mod install;
mod jobs;
pub mod plugin;
pub mod render;
mod storage;
pub mod table;
pub mod target;
mod vm;
mod vswitch;

use clap::Subcommand;
use client::{CliResult, Client};
use render::Out;
use serde::de::{DeserializeOwned, IntoDeserializer};
use std::io::Write;
use std::process::ExitCode;
use target::ApiOpts;

/// Commands that talk to nasvisord.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// This host (identity, version, resources, accelerator), or with a
    /// subcommand the cluster's hosts.
    Host(host::HostArgs),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Storage pools.
    Pool(storage::PoolArgs),
    /// Volumes of a pool.
    Volume(storage::VolumeArgs),
    /// Snapshots of a volume.
    Snapshot(storage::SnapshotArgs),
    /// System images (installable OS images).
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Virtual switches.
    #[command(subcommand)]
    Vswitch(vswitch::VswitchCmd),
    /// Long operations.
    #[command(subcommand)]
    Job(jobs::JobCmd),
    /// The event log.
    #[command(subcommand)]
    Event(event::EventCmd),
    /// The cluster of hosts.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// High availability: the protection of HA VMs.
    #[command(subcommand)]
    Ha(ha::HaCmd),
    /// Who the server takes you for: user, role and credential.
    Whoami,
    /// Change your own password (your sessions end).
    Passwd {
        /// Read the current and the new password from the first two lines
        /// of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Users and their roles (admins only).
    #[command(subcommand)]
    User(access::UserCmd),
    /// API tokens for scripts and the CLI.
    #[command(subcommand)]
    Token(access::TokenCmd),
    /// The audit log: every change and every login (admins only).
    #[command(subcommand)]
    Audit(access::AuditCmd),
}

/// Runs an API command; errors print as `error: ...` and exit with 1.
pub fn run(cmd: ApiCommand, opts: &ApiOpts, out: Out) -> ExitCode {
    with_client(opts, out, |c, out| match cmd {
        ApiCommand::Host(a) => host::run(c, a, out),
        ApiCommand::Vm(v) => vm::run(c, v, out),
        ApiCommand::Pool(p) => storage::run_pool(c, p, out),
        ApiCommand::Volume(v) => storage::run_volume(c, v, out),
        ApiCommand::Snapshot(s) => storage::run_snapshot(c, s, out),
        ApiCommand::Image(i) => image::run(c, i, out),
        ApiCommand::Vswitch(s) => vswitch::run(c, s, out),
        ApiCommand::Job(j) => jobs::run(c, j, out),
        ApiCommand::Event(e) => event::run(c, e, out),
        ApiCommand::Cluster(cmd) => cluster::run(c, cmd, out),
        ApiCommand::Ha(cmd) => ha::run(c, cmd, out),
        ApiCommand::Whoami => access::whoami(c, out),
        ApiCommand::Passwd { password_stdin } => access::passwd(c, password_stdin, out),
        ApiCommand::User(cmd) => access::run_user(c, cmd, out),
        ApiCommand::Token(cmd) => access::run_token(c, cmd, out),
        ApiCommand::Audit(cmd) => access::run_audit(c, cmd, out),
    })
}

/// Runs `f` with a client of the target `opts` select; errors print as
/// `error: ...` on one line and exit with 1.
pub fn with_client(
    opts: &ApiOpts,
    out: Out,
    f: impl FnOnce(&Client, Out) -> CliResult<()>,
) -> ExitCode {
    exit(
        opts.target()
            .and_then(|t| Client::new(&t))
            .and_then(|c| f(&c, out)),
    )
}

/// The end of a command: success, or its error printed as `error: ...` on
/// one line and exit code 1.
pub fn exit(result: CliResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A stdout that cannot be flushed (a closed pipe) has no reader to tell.
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// A value of one of the API's enums by its API name, e.g. `e1000`.
fn api_enum<T: DeserializeOwned>(name: &str) -> Result<T, serde::de::value::Error> {
    T::deserialize(name.into_deserializer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasvisor_api_types::{NicModel, VolumeFormat};

    #[test]
    fn api_enums_by_their_names() {
        assert_eq!(api_enum::<NicModel>("e1000").unwrap(), NicModel::E1000);
        assert_eq!(api_enum::<VolumeFormat>("raw").unwrap(), VolumeFormat::Raw);
        let e = api_enum::<NicModel>("rtl").unwrap_err().to_string();
        assert!(e.contains("rtl"), "{e}");
    }
}
