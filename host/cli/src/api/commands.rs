//! The API-backed commands: argument parsing into request bodies that match
//! `openapi.json` (host/api), calls, and human or `--json` output.

use super::client::{enc, query, ApiOpts, CliError, CliResult, Client};
use super::table::{self, cell, mib};
use clap::{ArgAction, ArgGroup, Args, Subcommand};
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Commands that talk to nasvisord.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// This host (identity, version, resources, accelerator), or with a
    /// subcommand the cluster's hosts.
    Host(HostArgs),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Storage pools.
    Pool(PoolArgs),
    /// Volumes of a pool.
    Volume(VolumeArgs),
    /// Snapshots of a volume.
    Snapshot(SnapshotArgs),
    /// System images (installable OS images).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Virtual switches.
    #[command(subcommand)]
    Vswitch(VswitchCmd),
    /// Long operations.
    #[command(subcommand)]
    Job(JobCmd),
    /// The event log.
    #[command(subcommand)]
    Event(EventCmd),
    /// The cluster of hosts.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

/// `nasvisor host`.
#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    cmd: Option<HostCmd>,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Every host of the cluster: online, cordoned, resources.
    List,
    /// Place no new VMs on a host.
    Cordon { host: String },
    /// Place VMs on a host again.
    Uncordon { host: String },
    /// Cordon a host and live-migrate its running VMs away (a job).
    Evacuate {
        host: String,
        /// Follow the job until it ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The cluster this host belongs to and its members.
    Status,
    /// Turn this host into a cluster with its own CA.
    Create {
        /// Most hosts in the cluster (1-7).
        #[arg(long)]
        max_members: Option<u32>,
    },
    /// A one-time, expiring token for a new host to join.
    JoinToken {
        /// Lifetime in seconds (default 3600).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Remove a host from the cluster (by node id).
    Remove { node: u64 },
    /// Join this host (it must have no VMs) to a cluster: ADDRESS is a
    /// member's cluster endpoint (ip:port), TOKEN from `cluster join-token`
    /// there.
    Join {
        address: String,
        #[arg(value_name = "TOKEN")]
        join_token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// All VMs.
    List,
    /// One VM in detail.
    Show { vm: String },
    /// Define a VM (and install it from --image).
    Create(Box<VmCreateArgs>),
    /// Power on.
    Start {
        vm: String,
        /// Host to start on (first power-on); the scheduler picks otherwise.
        #[arg(long)]
        host: Option<String>,
    },
    /// ACPI shutdown, forced off after --timeout seconds.
    Stop {
        vm: String,
        /// Seconds before forcing off (server default 120).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Pull the plug.
    ForceOff { vm: String },
    /// ACPI reboot.
    Reboot { vm: String },
    /// Pause the vCPUs.
    Pause { vm: String },
    /// Resume paused vCPUs.
    Resume { vm: String },
    /// Remove a VM.
    Delete {
        vm: String,
        /// Also delete its volumes.
        #[arg(long)]
        delete_disks: bool,
    },
    /// Change a VM's settings.
    Edit {
        vm: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory, MiB.
        #[arg(long)]
        memory: Option<u64>,
        #[arg(long)]
        description: Option<String>,
        /// true or false.
        #[arg(long, action = ArgAction::Set)]
        autostart: Option<bool>,
    },
    /// Show the serial console; with --follow, keep streaming and send the
    /// lines typed on stdin (Ctrl-] then Enter, or end of input, quits).
    Console {
        vm: String,
        /// Keep streaming new output.
        #[arg(long, short)]
        follow: bool,
        /// Bytes of history to show first (server default 65536, max 1048576).
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Move to another host: live when running (memory and, unless on
    /// shared storage, disks copied while the guest runs); a job.
    Migrate {
        vm: String,
        /// Target host.
        #[arg(long = "to")]
        to: String,
        /// Longest pause of the guest at the switch, ms (server default 300;
        /// the move aims at 25 ms and widens only if memory does not converge).
        #[arg(long)]
        max_downtime_ms: Option<u32>,
        /// Follow the job until it ends; with --json, print the VM then.
        #[arg(long)]
        wait: bool,
    },
    /// Type text into the serial console.
    ConsoleSend {
        vm: String,
        text: String,
        /// Append a newline (Enter).
        #[arg(long, short = 'n')]
        newline: bool,
    },
}

/// `nasvisor vm create`.
#[derive(Debug, Args)]
pub struct VmCreateArgs {
    /// VM name.
    name: String,
    /// Number of vCPUs.
    #[arg(long)]
    vcpus: u32,
    /// Memory, MiB.
    #[arg(long)]
    memory: u64,
    #[arg(long)]
    description: Option<String>,
    /// A disk: POOL:SIZE_MIB (new volume) or POOL:volume=NAME (existing); repeatable, boot order.
    #[arg(long = "disk", value_name = "POOL:SIZE_MIB|POOL:volume=NAME")]
    disks: Vec<String>,
    /// A NIC: VSWITCH[,mac=MAC][,model=virtio|e1000]; repeatable.
    #[arg(long = "nic", value_name = "VSWITCH[,mac=..][,model=..]")]
    nics: Vec<String>,
    /// System image to install from.
    #[arg(long)]
    image: Option<String>,
    /// bios or uefi.
    #[arg(long, value_parser = ["bios", "uefi"])]
    firmware: Option<String>,
    /// Start with the host.
    #[arg(long)]
    autostart: bool,
    /// Protect with HA (needs 3 hosts).
    #[arg(long)]
    ha: bool,
    /// Install: guest host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Install: a user to create.
    #[arg(long)]
    user: Option<String>,
    /// Install: an SSH public key of --user, or @FILE of key lines; repeatable.
    #[arg(long = "ssh-key", value_name = "KEY|@FILE")]
    ssh_keys: Vec<String>,
    /// Install: crypt(3) password hash of --user (e.g. from `openssl passwd -6`).
    #[arg(long)]
    password_hash: Option<String>,
    /// Install: give --user password-less sudo.
    #[arg(long)]
    sudo: bool,
    /// Install: a package to install; repeatable.
    #[arg(long = "package")]
    packages: Vec<String>,
    /// Install: static address of NIC 0, e.g. 192.0.2.10/24; repeatable.
    #[arg(long = "ip", value_name = "CIDR")]
    ips: Vec<String>,
    /// Install: IPv4 gateway of NIC 0.
    #[arg(long)]
    gateway: Option<String>,
    /// Install: DNS server of NIC 0; repeatable.
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// Install: root disk size, GiB.
    #[arg(long = "disk-size", value_name = "GIB")]
    disk_size: Option<u64>,
    /// Install: pool of the root disk.
    #[arg(long)]
    pool: Option<String>,
    /// Install: time zone, e.g. Europe/Berlin.
    #[arg(long)]
    timezone: Option<String>,
    /// Install: keep the disks when the install fails.
    #[arg(long)]
    keep_disks_on_failure: bool,
    /// Host the VM lives on; the scheduler chooses otherwise.
    #[arg(long)]
    host: Option<String>,
    /// Follow the install job until it ends.
    #[arg(long)]
    wait: bool,
}

/// `nasvisor pool`: `--host` names the host whose pools are meant (the host
/// the CLI talks to otherwise); the request is carried out there.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: PoolCmd,
}

/// `nasvisor volume` (`--host` as for `pool`).
#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: VolumeCmd,
}

/// `nasvisor snapshot` (`--host` as for `pool`).
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: SnapshotCmd,
}

/// `?host=` for a storage request on `host` (nothing without one).
fn on_host(host: Option<&str>) -> String {
    host.map(|h| format!("?host={}", enc(h)))
        .unwrap_or_default()
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// All pools.
    List,
    /// Define a pool over a directory of this host (or, with --shared, one
    /// every host reaches at the same path).
    Create {
        name: String,
        path: String,
        #[arg(long)]
        shared: bool,
    },
    /// Remove a pool definition.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// The volumes of a pool.
    List { pool: String },
    /// Create a volume.
    Create {
        pool: String,
        name: String,
        /// Size, MiB.
        size_mib: u64,
        /// qcow2 (default) or raw.
        #[arg(long, value_parser = ["qcow2", "raw"])]
        format: Option<String>,
    },
    /// Delete a volume.
    Delete { pool: String, volume: String },
    /// Grow a volume.
    Resize {
        pool: String,
        volume: String,
        /// New size, MiB.
        size_mib: u64,
    },
    /// Copy a volume.
    Clone {
        pool: String,
        volume: String,
        new: String,
        /// Linked clone (backed by the source) instead of a full copy.
        #[arg(long)]
        linked: bool,
    },
    /// Import a disk image file of the host (raw, qcow2, vmdk, vdi) as a volume.
    Import {
        pool: String,
        name: String,
        /// Absolute path on the host.
        path: String,
        /// Follow the import job until it ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// The snapshots of a volume.
    List { pool: String, volume: String },
    /// Take a snapshot.
    Create {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// Return the volume to a snapshot.
    Revert {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// Delete a snapshot.
    Delete {
        pool: String,
        volume: String,
        snapshot: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// All images.
    List,
    /// Add an image from a host path, a URL or an uploaded file.
    Add(ImageAddArgs),
    /// Delete an image.
    Delete { name: String },
}

/// `nasvisor image add`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["path", "url", "upload"])))]
pub struct ImageAddArgs {
    name: String,
    /// Absolute path of the file on the host.
    #[arg(long)]
    path: Option<String>,
    /// http(s) URL the host downloads (plain http:// only with --sha256).
    #[arg(long)]
    url: Option<String>,
    /// SHA-256 of the file (64 hex digits), checked before the image is
    /// added; required with a plain http:// URL.
    #[arg(long, conflicts_with = "upload")]
    sha256: Option<String>,
    /// A local file to upload (streamed).
    #[arg(long)]
    upload: Option<PathBuf>,
    /// OS family (default linux).
    #[arg(long)]
    os_family: Option<String>,
    /// OS variant, e.g. debian12.
    #[arg(long)]
    os_variant: Option<String>,
    /// Whether the image runs cloud-init: true or false (default true).
    #[arg(long, action = ArgAction::Set)]
    cloud_init: Option<bool>,
    /// bios or uefi (default bios).
    #[arg(long, value_parser = ["bios", "uefi"])]
    firmware: Option<String>,
    /// Console line that means "installed and up".
    #[arg(long)]
    ready_marker: Option<String>,
    /// Follow the import job until it ends.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum VswitchCmd {
    /// All virtual switches.
    List,
    /// Create a virtual switch.
    Create {
        name: String,
        /// Host interface to bridge to; an internal switch without.
        #[arg(long)]
        uplink: Option<String>,
        /// VLAN id 1-4094.
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Delete a virtual switch.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// All jobs.
    List,
    /// One job.
    Show { id: String },
    /// Ask a job to stop.
    Cancel { id: String },
    /// Follow a job until it ends (exit 0 when it succeeded, 1 otherwise).
    Wait { id: String },
}

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Events, oldest first.
    List {
        /// Only events after this sequence number.
        #[arg(long)]
        since: Option<u64>,
        /// At most this many per request (1-1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Keep polling for new events.
        #[arg(long, short)]
        follow: bool,
    },
}

/// Runs an API command; errors print as `error: ...` and exit with 1.
pub fn run(cmd: ApiCommand, opts: &ApiOpts) -> std::process::ExitCode {
    finish(Client::new(opts).and_then(|c| dispatch(&c, cmd, opts.json)))
}

/// `nasvisor plugin list`: the plugins of every host, one row per world
/// and host (quarantine is per host).
pub fn run_plugin_list(opts: &ApiOpts) -> std::process::ExitCode {
    finish(Client::new(opts).and_then(|c| {
        let v = c.get("/api/v1/plugins")?;
        if opts.json {
            print_json(&v);
        } else {
            print!(
                "{}",
                table::objects(
                    &plugin_rows(&v),
                    &[
                        ("world", "world"),
                        ("name", "name"),
                        ("version", "version"),
                        ("vendor", "vendor"),
                        ("host", "host"),
                        ("state", "state"),
                        ("fails_in_row", "consecutive_failures"),
                        ("decisions", "decisions"),
                        ("failures", "failures"),
                        ("fallbacks", "fallbacks"),
                        ("last_failure", "last_failure"),
                    ],
                )
            );
        }
        Ok(())
    }))
}

/// The rows of `plugin list`: each world's state on each host (the
/// plugin's name and version as that host loaded it).
fn plugin_rows(list: &Value) -> Value {
    let mut rows = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        let hosts = p["hosts"].as_array().filter(|h| !h.is_empty());
        let Some(hosts) = hosts else {
            rows.push(p.clone());
            continue;
        };
        for h in hosts {
            let mut row = h.clone();
            let (name, version) = match h["plugin"].as_str() {
                Some(label) => match label.rsplit_once('@') {
                    Some((n, v)) => (json!(n), json!(v)),
                    None => (json!(label), Value::Null),
                },
                None => (json!(format!("builtin-{}", cell(&p["world"]))), Value::Null),
            };
            row["name"] = name;
            row["version"] = version;
            row["vendor"] = p["vendor"].clone();
            rows.push(row);
        }
    }
    Value::Array(rows)
}

/// `nasvisor plugin reset WORLD`: lifts its quarantine on every host.
pub fn run_plugin_reset(opts: &ApiOpts, world: &str) -> std::process::ExitCode {
    finish(Client::new(opts).and_then(|c| {
        let v = c.call("POST", &format!("/api/v1/plugins/{}/reset", enc(world)))?;
        let msg = cell(&v["message"]);
        done(opts.json, &v, msg);
        Ok(())
    }))
}

/// `nasvisor plugin install FILE`: the package goes to every host.
pub fn run_plugin_install(opts: &ApiOpts, package: &std::path::Path) -> std::process::ExitCode {
    finish(Client::new(opts).and_then(|c| {
        use base64::Engine as _;
        let bytes = std::fs::read(package)
            .map_err(|e| CliError::msg(format!("{}: {e}", package.display())))?;
        let body = json!({ "package": base64::engine::general_purpose::STANDARD.encode(bytes) });
        let v = c.send_json("POST", "/api/v1/plugins", &body)?;
        done(
            opts.json,
            &v,
            format!(
                "plugin {}@{} installed for the {} world on every host",
                cell(&v["name"]),
                cell(&v["version"]),
                cell(&v["world"])
            ),
        );
        Ok(())
    }))
}

/// `nasvisor plugin uninstall WORLD`.
pub fn run_plugin_uninstall(opts: &ApiOpts, world: &str) -> std::process::ExitCode {
    finish(Client::new(opts).and_then(|c| {
        let v = c.call("DELETE", &format!("/api/v1/plugins/{}", enc(world)))?;
        done(
            opts.json,
            &v,
            format!("the cluster's {world} plugin removed; the built-in default decides"),
        );
        Ok(())
    }))
}

fn finish(r: CliResult<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            std::process::ExitCode::from(1)
        }
    }
}

fn print_json(v: &Value) {
    if !v.is_null() {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }
}

fn print_list(json: bool, v: &Value, columns: &[(&str, &str)]) {
    if json {
        print_json(v);
    } else {
        print!("{}", table::objects(v, columns));
    }
}

fn job_line(j: &Value) -> String {
    let mut s = format!(
        "job {} ({}) {}",
        cell(&j["id"]),
        cell(&j["kind"]),
        cell(&j["state"])
    );
    if let Some(t) = j["target"].as_str() {
        s.push_str(&format!(" for {t}"));
    }
    s
}

/// Prints a Job answer, and follows it when `wait` (with `--json`, one
/// document: the job as it ended).
fn job_answer(c: &Client, json: bool, j: &Value, wait: bool) -> CliResult<()> {
    if json && !wait {
        print_json(j);
    } else if !json {
        println!("{}", job_line(j));
    }
    if wait {
        let id = j["id"]
            .as_str()
            .ok_or_else(|| CliError::msg("the answer names no job id"))?;
        let end = wait_job(c, id)?;
        if json {
            print_json(&end);
        }
    } else if !json {
        if let Some(id) = j["id"].as_str() {
            if !matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                println!("follow it with: nasvisor job wait {id}");
            }
        }
    }
    Ok(())
}

fn done(json: bool, v: &Value, msg: String) {
    if json {
        print_json(v);
    } else {
        println!("{msg}");
    }
}

fn bar(progress: f64) -> String {
    let p = progress.clamp(0.0, 1.0);
    let filled = (p * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        "-".repeat(20 - filled),
        (p * 100.0).round() as u32
    )
}

/// Polls job `id` every 250 ms, showing a progress line on stderr, until it
/// ends. `Ok(job)` when it succeeded, an error with the job's error otherwise.
pub fn wait_job(c: &Client, id: &str) -> CliResult<Value> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let j = c.get(&format!("/api/v1/jobs/{}", enc(id)))?;
        let state = j["state"].as_str().unwrap_or("unknown").to_string();
        let progress = j["progress"].as_f64().unwrap_or(0.0);
        let mut line = format!("{} {state}", bar(progress));
        if let Some(m) = j["message"].as_str().filter(|m| !m.is_empty()) {
            line.push_str(": ");
            line.push_str(m);
        }
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if line != last {
            eprintln!("{line}");
        }
        last = line;
        match state.as_str() {
            "succeeded" => {
                if tty {
                    eprintln!();
                }
                return Ok(j);
            }
            "failed" | "cancelled" => {
                if tty {
                    eprintln!();
                }
                let why = j["error"].as_str().filter(|e| !e.is_empty()).unwrap_or(
                    if state == "cancelled" {
                        "cancelled"
                    } else {
                        "no reason given"
                    },
                );
                return Err(CliError::msg(format!("job {id} {state}: {why}")));
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn dispatch(c: &Client, cmd: ApiCommand, json: bool) -> CliResult<()> {
    match cmd {
        ApiCommand::Host(HostArgs { cmd: Some(cmd) }) => host(c, cmd, json),
        ApiCommand::Host(HostArgs { cmd: None }) => {
            let h = c.get("/api/v1/host")?;
            if json {
                print_json(&h);
            } else {
                let mut out = table::fields(
                    &h,
                    &[
                        ("id", "id"),
                        ("name", "name"),
                        ("version", "version"),
                        ("cluster role", "cluster_role"),
                        ("cpus", "cpus"),
                    ],
                );
                out.push_str(&format!(
                    "memory:         {} ({} free)\n",
                    mib(&h["memory_mib"]),
                    mib(&h["free_memory_mib"])
                ));
                out.push_str(&format!(
                    "accelerator:    {} ({})\n",
                    cell(&h["accel"]),
                    cell(&h["accel_reason"])
                ));
                out.push_str(&format!("qemu:           {}\n", cell(&h["qemu_version"])));
                print!("{out}");
            }
            Ok(())
        }
        ApiCommand::Vm(v) => vm(c, v, json),
        ApiCommand::Pool(p) => pool(c, p.cmd, p.host.as_deref(), json),
        ApiCommand::Volume(v) => volume(c, v.cmd, &on_host(v.host.as_deref()), json),
        ApiCommand::Snapshot(s) => snapshot(c, s.cmd, &on_host(s.host.as_deref()), json),
        ApiCommand::Image(i) => image(c, i, json),
        ApiCommand::Vswitch(s) => vswitch(c, s, json),
        ApiCommand::Job(j) => job(c, j, json),
        ApiCommand::Event(EventCmd::List {
            since,
            limit,
            follow,
        }) => events(c, since, limit, follow, json),
        ApiCommand::Cluster(cmd) => cluster(c, cmd, json),
    }
}

fn show_cluster(v: &Value) -> String {
    if v["clustered"] != Value::Bool(true) {
        return format!(
            "not in a cluster (single host; node {}, cluster endpoint {} once created)\n",
            cell(&v["this_node"]),
            cell(&v["address"])
        );
    }
    let mut out = format!(
        "cluster:      {}\nCA:           {}\nthis node:    {}\nleader:       {}\nmax members:  {}\n",
        cell(&v["cluster_id"]),
        cell(&v["ca_fingerprint"]),
        cell(&v["this_node"]),
        cell(&v["leader"]),
        cell(&v["max_members"])
    );
    out.push_str(&table::objects(
        &v["members"],
        &[
            ("node", "node_id"),
            ("address", "addr"),
            ("status", "status"),
            ("voter", "voter"),
        ],
    ));
    out
}

fn cluster(c: &Client, cmd: ClusterCmd, json: bool) -> CliResult<()> {
    let v = match cmd {
        ClusterCmd::Status => c.get("/api/v1/cluster")?,
        ClusterCmd::Create { max_members } => {
            let mut body = json!({});
            if let Some(n) = max_members {
                body["max_members"] = n.into();
            }
            c.send_json("POST", "/api/v1/cluster", &body)?
        }
        ClusterCmd::JoinToken { ttl } => {
            let mut body = json!({});
            if let Some(t) = ttl {
                body["ttl_s"] = t.into();
            }
            let v = c.send_json("POST", "/api/v1/cluster/join-tokens", &body)?;
            if !json {
                println!("{}", cell(&v["token"]));
                eprintln!(
                    "one-time join token, valid until {}",
                    cell(&v["expires_at"])
                );
                return Ok(());
            }
            v
        }
        ClusterCmd::Join {
            address,
            join_token,
        } => c.send_json(
            "POST",
            "/api/v1/cluster/join",
            &json!({"address": address, "token": join_token}),
        )?,
        ClusterCmd::Remove { node } => {
            c.call("DELETE", &format!("/api/v1/cluster/members/{node}"))?;
            if !json {
                println!("node {node} removed from the cluster");
            }
            return Ok(());
        }
    };
    if json {
        print_json(&v);
    } else {
        print!("{}", show_cluster(&v));
    }
    Ok(())
}

const HOST_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("node", "node_id"),
    ("address", "address"),
    ("online", "online"),
    ("cordoned", "cordoned"),
    ("role", "cluster_role"),
    ("vms", "vms"),
    ("cpus", "cpus"),
    ("memory_mib", "memory_mib"),
    ("free_mib", "free_memory_mib"),
    ("version", "version"),
];

fn host(c: &Client, cmd: HostCmd, json: bool) -> CliResult<()> {
    match cmd {
        HostCmd::List => {
            let v = c.get("/api/v1/hosts")?;
            print_list(json, &v, HOST_COLUMNS);
        }
        HostCmd::Cordon { host } => {
            let v = c.call("POST", &format!("/api/v1/hosts/{}/cordon", enc(&host)))?;
            done(
                json,
                &v,
                format!("host {host} cordoned: no new VMs are placed on it"),
            );
        }
        HostCmd::Uncordon { host } => {
            let v = c.call("POST", &format!("/api/v1/hosts/{}/uncordon", enc(&host)))?;
            done(json, &v, format!("host {host} uncordoned"));
        }
        HostCmd::Evacuate { host, wait } => {
            let j = c.call("POST", &format!("/api/v1/hosts/{}/evacuate", enc(&host)))?;
            job_answer(c, json, &j, wait)?;
        }
    }
    Ok(())
}

fn vm_path(vm: &str) -> String {
    format!("/api/v1/vms/{}", enc(vm))
}

/// One line about a VM after an operation: name, state, reason.
fn vm_state_line(v: &Value, what: &str) -> String {
    let name = v["name"].as_str().unwrap_or("?");
    let state = v["state"].as_str().unwrap_or("?");
    match v["state_reason"].as_str() {
        Some(r) => format!("vm {name} {what}: {state} ({r})"),
        None => format!("vm {name} {what}: {state}"),
    }
}

fn power(c: &Client, json: bool, vm: &str, op: Value) -> CliResult<()> {
    let what = op["op"].as_str().unwrap_or("power").replace('_', "-");
    let v = c.send_json("POST", &format!("{}/power", vm_path(vm)), &op)?;
    if json {
        print_json(&v);
    } else {
        println!("{}", vm_state_line(&v, &what));
    }
    Ok(())
}

const VM_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "name"),
    ("state", "state"),
    ("host", "host"),
    ("vcpus", "vcpus"),
    ("memory_mib", "memory_mib"),
    ("firmware", "firmware"),
    ("image", "image"),
    ("autostart", "autostart"),
];

fn show_vm(v: &Value) -> String {
    let mut out = table::fields(
        v,
        &[
            ("id", "id"),
            ("name", "name"),
            ("state", "state"),
            ("reason", "state_reason"),
            ("host", "host"),
            ("pid", "pid"),
            ("accel", "accel"),
            ("vcpus", "vcpus"),
        ],
    );
    out.push_str(&format!("memory:       {}\n", mib(&v["memory_mib"])));
    out.push_str(&table::fields(
        v,
        &[
            ("firmware", "firmware"),
            ("image", "image"),
            ("install job", "install_job"),
            ("autostart", "autostart"),
            ("ha", "ha"),
            ("created", "created_at"),
            ("description", "description"),
        ],
    ));
    out.push_str("\ndisks:\n");
    out.push_str(&indent(&table::objects(
        &v["disks"],
        &[
            ("pool", "pool"),
            ("volume", "volume"),
            ("size_mib", "size_mib"),
            ("role", "role"),
        ],
    )));
    out.push_str("\nnics:\n");
    out.push_str(&indent(&table::objects(
        &v["nics"],
        &[
            ("vswitch", "vswitch"),
            ("mac", "mac"),
            ("model", "model"),
            ("tap", "tap"),
        ],
    )));
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

fn vm(c: &Client, cmd: VmCmd, json: bool) -> CliResult<()> {
    match cmd {
        VmCmd::List => {
            let v = c.get("/api/v1/vms")?;
            print_list(json, &v, VM_COLUMNS);
            Ok(())
        }
        VmCmd::Show { vm } => {
            let v = c.get(&vm_path(&vm))?;
            if json {
                print_json(&v);
            } else {
                print!("{}", show_vm(&v));
            }
            Ok(())
        }
        VmCmd::Create(args) => {
            let wait = args.wait;
            let body = vm_create_body(&args)?;
            let v = c.send_json("POST", "/api/v1/vms", &body)?;
            let job = v["install_job"].as_str();
            // With --json --wait, one document: the VM once installed.
            if !(json && wait && job.is_some()) {
                done(
                    json,
                    &v,
                    format!(
                        "vm {} created (id {}, state {})",
                        cell(&v["name"]),
                        cell(&v["id"]),
                        cell(&v["state"])
                    ),
                );
            }
            if !json {
                if let Some(j) = job {
                    println!("install job {j}");
                }
            }
            if wait {
                match job {
                    Some(j) => {
                        wait_job(c, j)?;
                        if json {
                            let id = v["id"].as_str().unwrap_or_default();
                            print_json(&c.get(&vm_path(id))?);
                        } else {
                            println!("install of {} finished", cell(&v["name"]));
                        }
                    }
                    None => eprintln!("note: no install job to wait for"),
                }
            }
            Ok(())
        }
        VmCmd::Start { vm, host } => {
            let mut op = json!({"op": "start"});
            if let Some(h) = host {
                op["host"] = h.into();
            }
            power(c, json, &vm, op)
        }
        VmCmd::Stop { vm, timeout } => {
            let mut op = json!({"op": "shutdown"});
            if let Some(t) = timeout {
                op["timeout_s"] = t.into();
            }
            power(c, json, &vm, op)
        }
        VmCmd::ForceOff { vm } => power(c, json, &vm, json!({"op": "force_off"})),
        VmCmd::Reboot { vm } => power(c, json, &vm, json!({"op": "reboot"})),
        VmCmd::Pause { vm } => power(c, json, &vm, json!({"op": "pause"})),
        VmCmd::Resume { vm } => power(c, json, &vm, json!({"op": "resume"})),
        VmCmd::Delete { vm, delete_disks } => {
            let q = if delete_disks {
                query(&[("delete_disks", "true".into())])
            } else {
                String::new()
            };
            let v = c.call("DELETE", &format!("{}{q}", vm_path(&vm)))?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "vm {} deleted{}",
                    v["name"].as_str().unwrap_or(&vm),
                    if delete_disks { " with its disks" } else { "" }
                );
            }
            Ok(())
        }
        VmCmd::Edit {
            vm,
            name,
            vcpus,
            memory,
            description,
            autostart,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(n) = vcpus {
                body.insert("vcpus".into(), n.into());
            }
            if let Some(m) = memory {
                body.insert("memory_mib".into(), m.into());
            }
            if let Some(d) = description {
                body.insert("description".into(), d.into());
            }
            if let Some(a) = autostart {
                body.insert("autostart".into(), a.into());
            }
            if body.is_empty() {
                return Err(CliError::msg(
                    "nothing to change: give --name, --vcpus, --memory, --description or --autostart",
                ));
            }
            let v = c.send_json("PATCH", &vm_path(&vm), &Value::Object(body))?;
            done(json, &v, format!("vm {} updated", cell(&v["name"])));
            Ok(())
        }
        VmCmd::Console { vm, follow, tail } => super::console::run(c, &vm, follow, tail),
        VmCmd::Migrate {
            vm,
            to,
            max_downtime_ms,
            wait,
        } => {
            let mut body = json!({ "host": to });
            if let Some(d) = max_downtime_ms {
                body["max_downtime_ms"] = d.into();
            }
            let j = c.send_json("POST", &format!("{}/migrate", vm_path(&vm)), &body)?;
            if json && wait {
                // One document: the VM once moved.
                let id = j["id"]
                    .as_str()
                    .ok_or_else(|| CliError::msg("the answer names no job id"))?;
                wait_job(c, id)?;
                print_json(&c.get(&vm_path(&vm))?);
                return Ok(());
            }
            job_answer(c, json, &j, wait)
        }
        VmCmd::ConsoleSend { vm, text, newline } => {
            let mut data = text;
            if newline {
                data.push('\n');
            }
            super::console::send(c, &vm, &data)?;
            Ok(())
        }
    }
}

/// Parses `POOL:SIZE_MIB` or `POOL:volume=NAME`.
fn parse_disk(s: &str) -> CliResult<Value> {
    let bad = || {
        CliError::msg(format!(
            "--disk {s:?}: expected POOL:SIZE_MIB (a new volume) or POOL:volume=NAME (an existing one)"
        ))
    };
    let (pool, rest) = s.split_once(':').ok_or_else(bad)?;
    if pool.is_empty() {
        return Err(bad());
    }
    if let Some(vol) = rest.strip_prefix("volume=") {
        if vol.is_empty() {
            return Err(bad());
        }
        return Ok(json!({"pool": pool, "volume": vol}));
    }
    let size: u64 = rest.parse().map_err(|_| bad())?;
    Ok(json!({"pool": pool, "size_mib": size}))
}

/// Parses `VSWITCH[,mac=MAC][,model=MODEL]`.
fn parse_nic(s: &str) -> CliResult<Value> {
    let mut parts = s.split(',');
    let vswitch = parts.next().unwrap_or_default();
    if vswitch.is_empty() || vswitch.contains('=') {
        return Err(CliError::msg(format!(
            "--nic {s:?}: expected VSWITCH[,mac=MAC][,model=virtio|e1000]"
        )));
    }
    let mut nic = json!({"vswitch": vswitch});
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => nic["mac"] = m.into(),
            Some(("model", m)) => nic["model"] = m.into(),
            _ => {
                return Err(CliError::msg(format!(
                    "--nic {s:?}: unknown option {p:?}; use mac=MAC or model=virtio|e1000"
                )))
            }
        }
    }
    Ok(nic)
}

/// `--ssh-key KEY` or `--ssh-key @FILE` (each non-empty, non-comment line a key).
fn ssh_keys(specs: &[String]) -> CliResult<Vec<Value>> {
    let mut out = Vec::new();
    for s in specs {
        match s.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::msg(format!("--ssh-key @{path}: {e}")))?;
                let before = out.len();
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| Value::from(l.to_string())),
                );
                if out.len() == before {
                    return Err(CliError::msg(format!(
                        "--ssh-key @{path}: no key in the file"
                    )));
                }
            }
            None => out.push(s.trim().into()),
        }
    }
    Ok(out)
}

/// The `VmCreate` body of `nasvisor vm create` (see openapi.json).
fn vm_create_body(a: &VmCreateArgs) -> CliResult<Value> {
    let mut body = Map::new();
    body.insert("name".into(), a.name.clone().into());
    body.insert("vcpus".into(), a.vcpus.into());
    body.insert("memory_mib".into(), a.memory.into());
    if let Some(h) = &a.host {
        body.insert("host".into(), h.clone().into());
    }
    if let Some(d) = &a.description {
        body.insert("description".into(), d.clone().into());
    }
    if !a.disks.is_empty() {
        let disks: CliResult<Vec<Value>> = a.disks.iter().map(|d| parse_disk(d)).collect();
        body.insert("disks".into(), disks?.into());
    }
    if !a.nics.is_empty() {
        let nics: CliResult<Vec<Value>> = a.nics.iter().map(|n| parse_nic(n)).collect();
        body.insert("nics".into(), nics?.into());
    }
    if let Some(i) = &a.image {
        body.insert("image".into(), i.clone().into());
    }
    if let Some(f) = &a.firmware {
        body.insert("firmware".into(), f.clone().into());
    }
    if a.autostart {
        body.insert("autostart".into(), true.into());
    }
    if a.ha {
        body.insert("ha".into(), true.into());
    }

    let mut install = Map::new();
    let mut used: Vec<&str> = Vec::new();
    if let Some(h) = &a.hostname {
        install.insert("hostname".into(), h.clone().into());
        used.push("--hostname");
    }
    let user_opts = !a.ssh_keys.is_empty() || a.password_hash.is_some() || a.sudo;
    match &a.user {
        Some(name) => {
            let mut u = Map::new();
            u.insert("name".into(), name.clone().into());
            if !a.ssh_keys.is_empty() {
                u.insert("ssh_authorized_keys".into(), ssh_keys(&a.ssh_keys)?.into());
            }
            if let Some(h) = &a.password_hash {
                u.insert("password_hash".into(), h.clone().into());
            }
            if a.sudo {
                u.insert("sudo".into(), true.into());
            }
            install.insert("users".into(), vec![Value::Object(u)].into());
            used.push("--user");
        }
        None if user_opts => {
            return Err(CliError::msg(
                "--ssh-key, --password-hash and --sudo apply to a user: give --user NAME",
            ))
        }
        None => {}
    }
    if !a.packages.is_empty() {
        install.insert("packages".into(), a.packages.clone().into());
        used.push("--package");
    }
    if !a.ips.is_empty() || a.gateway.is_some() || !a.dns.is_empty() {
        let mut n = Map::new();
        n.insert("dhcp4".into(), a.ips.is_empty().into());
        if !a.ips.is_empty() {
            n.insert("addresses".into(), a.ips.clone().into());
        }
        if let Some(g) = &a.gateway {
            n.insert("gateway4".into(), g.clone().into());
        }
        if !a.dns.is_empty() {
            n.insert("nameservers".into(), a.dns.clone().into());
        }
        install.insert("network".into(), vec![Value::Object(n)].into());
        used.push("--ip/--gateway/--dns");
    }
    if let Some(g) = a.disk_size {
        install.insert("disk_size_gib".into(), g.into());
        used.push("--disk-size");
    }
    if let Some(p) = &a.pool {
        install.insert("pool".into(), p.clone().into());
        used.push("--pool");
    }
    if let Some(t) = &a.timezone {
        install.insert("timezone".into(), t.clone().into());
        used.push("--timezone");
    }
    if a.keep_disks_on_failure {
        install.insert("keep_disks_on_failure".into(), true.into());
        used.push("--keep-disks-on-failure");
    }
    if !install.is_empty() {
        if a.image.is_none() {
            return Err(CliError::msg(format!(
                "{} configure the install from a system image: give --image",
                used.join(", ")
            )));
        }
        body.insert("install".into(), Value::Object(install));
    }
    if a.wait && a.image.is_none() {
        return Err(CliError::msg(
            "--wait follows the install job: give --image",
        ));
    }
    Ok(Value::Object(body))
}

fn pool(c: &Client, cmd: PoolCmd, host: Option<&str>, json: bool) -> CliResult<()> {
    let q = on_host(host);
    match cmd {
        PoolCmd::List => {
            let mut v = c.get(&format!("/api/v1/pools{q}"))?;
            // With --host: that host's pools and the shared ones, measured
            // there.
            if let (Some(host), Value::Array(rows)) = (host, &mut v) {
                rows.retain(|p| p["host"].is_null() || p["host"].as_str() == Some(host));
            }
            print_list(
                json,
                &v,
                &[
                    ("name", "name"),
                    ("host", "host"),
                    ("path", "path"),
                    ("capacity_mib", "capacity_mib"),
                    ("free_mib", "free_mib"),
                ],
            );
        }
        PoolCmd::Create { name, path, shared } => {
            let v = c.send_json(
                "POST",
                &format!("/api/v1/pools{q}"),
                &json!({"name": name, "path": path, "shared": shared}),
            )?;
            done(
                json,
                &v,
                format!("pool {} created at {}", cell(&v["name"]), cell(&v["path"])),
            );
        }
        PoolCmd::Delete { name } => {
            let v = c.call("DELETE", &format!("/api/v1/pools/{}{q}", enc(&name)))?;
            done(json, &v, format!("pool {name} deleted"));
        }
    }
    Ok(())
}

fn vol_path(pool: &str, vol: &str) -> String {
    format!("/api/v1/pools/{}/volumes/{}", enc(pool), enc(vol))
}

const VOLUME_COLUMNS: &[(&str, &str)] = &[
    ("name", "name"),
    ("pool", "pool"),
    ("size_mib", "size_mib"),
    ("format", "format"),
    ("used_by", "used_by"),
];

fn volume_line(v: &Value) -> String {
    format!(
        "{}/{} ({}, {})",
        cell(&v["pool"]),
        cell(&v["name"]),
        mib(&v["size_mib"]),
        cell(&v["format"])
    )
}

fn volume(c: &Client, cmd: VolumeCmd, q: &str, json: bool) -> CliResult<()> {
    match cmd {
        VolumeCmd::List { pool } => {
            let v = c.get(&format!("/api/v1/pools/{}/volumes{q}", enc(&pool)))?;
            print_list(json, &v, VOLUME_COLUMNS);
        }
        VolumeCmd::Create {
            pool,
            name,
            size_mib,
            format,
        } => {
            let mut body = json!({"name": name, "size_mib": size_mib});
            if let Some(f) = format {
                body["format"] = f.into();
            }
            let v = c.send_json(
                "POST",
                &format!("/api/v1/pools/{}/volumes{q}", enc(&pool)),
                &body,
            )?;
            done(json, &v, format!("volume {} created", volume_line(&v)));
        }
        VolumeCmd::Delete { pool, volume } => {
            let v = c.call("DELETE", &format!("{}{q}", vol_path(&pool, &volume)))?;
            done(json, &v, format!("volume {pool}/{volume} deleted"));
        }
        VolumeCmd::Resize {
            pool,
            volume,
            size_mib,
        } => {
            let v = c.send_json(
                "POST",
                &format!("{}/resize{q}", vol_path(&pool, &volume)),
                &json!({"size_mib": size_mib}),
            )?;
            done(json, &v, format!("volume {} resized", volume_line(&v)));
        }
        VolumeCmd::Clone {
            pool,
            volume,
            new,
            linked,
        } => {
            let v = c.send_json(
                "POST",
                &format!("{}/clone{q}", vol_path(&pool, &volume)),
                &json!({"name": new, "linked": linked}),
            )?;
            done(
                json,
                &v,
                format!(
                    "volume {} created as a {} clone of {volume}",
                    volume_line(&v),
                    if linked { "linked" } else { "full" }
                ),
            );
        }
        VolumeCmd::Import {
            pool,
            name,
            path,
            wait,
        } => {
            let j = c.send_json(
                "POST",
                &format!("/api/v1/pools/{}/imports{q}", enc(&pool)),
                &json!({"name": name, "path": path}),
            )?;
            job_answer(c, json, &j, wait)?;
        }
    }
    Ok(())
}

fn snapshot(c: &Client, cmd: SnapshotCmd, q: &str, json: bool) -> CliResult<()> {
    match cmd {
        SnapshotCmd::List { pool, volume } => {
            let v = c.get(&format!("{}/snapshots{q}", vol_path(&pool, &volume)))?;
            print_list(
                json,
                &v,
                &[
                    ("name", "name"),
                    ("pool", "pool"),
                    ("volume", "volume"),
                    ("created_at", "created_at"),
                ],
            );
        }
        SnapshotCmd::Create {
            pool,
            volume,
            snapshot,
        } => {
            let v = c.send_json(
                "POST",
                &format!("{}/snapshots{q}", vol_path(&pool, &volume)),
                &json!({"name": snapshot}),
            )?;
            done(
                json,
                &v,
                format!("snapshot {snapshot} of {pool}/{volume} created"),
            );
        }
        SnapshotCmd::Revert {
            pool,
            volume,
            snapshot,
        } => {
            let v = c.call(
                "POST",
                &format!(
                    "{}/snapshots/{}/revert{q}",
                    vol_path(&pool, &volume),
                    enc(&snapshot)
                ),
            )?;
            done(
                json,
                &v,
                format!("{pool}/{volume} reverted to snapshot {snapshot}"),
            );
        }
        SnapshotCmd::Delete {
            pool,
            volume,
            snapshot,
        } => {
            let v = c.call(
                "DELETE",
                &format!(
                    "{}/snapshots/{}{q}",
                    vol_path(&pool, &volume),
                    enc(&snapshot)
                ),
            )?;
            done(
                json,
                &v,
                format!("snapshot {snapshot} of {pool}/{volume} deleted"),
            );
        }
    }
    Ok(())
}

fn image(c: &Client, cmd: ImageCmd, json: bool) -> CliResult<()> {
    match cmd {
        ImageCmd::List => {
            let v = c.get("/api/v1/images")?;
            print_list(
                json,
                &v,
                &[
                    ("name", "name"),
                    ("state", "state"),
                    ("format", "format"),
                    ("size_mib", "size_mib"),
                    ("virtual_mib", "virtual_size_mib"),
                    ("os", "os_family"),
                    ("variant", "os_variant"),
                    ("firmware", "firmware"),
                    ("cloud_init", "cloud_init"),
                    ("hosts", "hosts"),
                    ("error", "error"),
                ],
            );
        }
        ImageCmd::Delete { name } => {
            let v = c.call("DELETE", &format!("/api/v1/images/{}", enc(&name)))?;
            done(json, &v, format!("image {name} deleted"));
        }
        ImageCmd::Add(a) => {
            let mut meta: Vec<(&str, Value)> = Vec::new();
            if let Some(f) = &a.os_family {
                meta.push(("os_family", f.clone().into()));
            }
            if let Some(v) = &a.os_variant {
                meta.push(("os_variant", v.clone().into()));
            }
            if let Some(ci) = a.cloud_init {
                meta.push(("cloud_init", ci.into()));
            }
            if let Some(f) = &a.firmware {
                meta.push(("firmware", f.clone().into()));
            }
            if let Some(m) = &a.ready_marker {
                meta.push(("ready_marker", m.clone().into()));
            }
            let j = if let Some(file) = &a.upload {
                check_upload(&a)?;
                let q: Vec<(&str, String)> = meta
                    .iter()
                    .map(|(k, v)| {
                        (
                            *k,
                            match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            },
                        )
                    })
                    .collect();
                super::console::upload(
                    c,
                    &format!("/api/v1/images/{}/upload{}", enc(&a.name), query(&q)),
                    file,
                )?
            } else {
                let mut body = Map::new();
                body.insert("name".into(), a.name.clone().into());
                if let Some(p) = &a.path {
                    body.insert("path".into(), p.clone().into());
                }
                if let Some(u) = &a.url {
                    body.insert("url".into(), u.clone().into());
                }
                if let Some(h) = &a.sha256 {
                    body.insert("sha256".into(), h.clone().into());
                }
                for (k, v) in meta {
                    body.insert(k.into(), v);
                }
                c.send_json("POST", "/api/v1/images", &Value::Object(body))?
            };
            job_answer(c, json, &j, a.wait)?;
        }
    }
    Ok(())
}

/// Checks an upload's name and metadata with the API's own rules before
/// streaming the file: a server that refuses the request early cannot
/// always tell the client why while the client is still sending.
fn check_upload(a: &ImageAddArgs) -> CliResult<()> {
    let local = |e: nasvisor_api_types::ApiError| CliError::Api {
        status: 0,
        field: e.field,
        reason: e.reason,
    };
    nasvisor_api_types::check_name("name", &a.name).map_err(local)?;
    nasvisor_api_types::ImageMetaSpec::from_parts(
        a.os_family.clone(),
        a.os_variant.clone(),
        a.cloud_init,
        a.firmware.as_deref().map(|f| {
            f.parse::<nasvisor_api_types::FirmwareKind>()
                .unwrap_or(nasvisor_api_types::FirmwareKind::Bios)
        }),
        a.ready_marker.clone(),
    )
    .map_err(local)?;
    Ok(())
}

fn vswitch(c: &Client, cmd: VswitchCmd, json: bool) -> CliResult<()> {
    match cmd {
        VswitchCmd::List => {
            let v = c.get("/api/v1/vswitches")?;
            print_list(
                json,
                &v,
                &[("name", "name"), ("uplink", "uplink"), ("vlan", "vlan")],
            );
        }
        VswitchCmd::Create { name, uplink, vlan } => {
            let mut body = json!({"name": name});
            if let Some(u) = uplink {
                body["uplink"] = u.into();
            }
            if let Some(v) = vlan {
                body["vlan"] = v.into();
            }
            let v = c.send_json("POST", "/api/v1/vswitches", &body)?;
            done(json, &v, format!("vswitch {} created", cell(&v["name"])));
        }
        VswitchCmd::Delete { name } => {
            let v = c.call("DELETE", &format!("/api/v1/vswitches/{}", enc(&name)))?;
            done(json, &v, format!("vswitch {name} deleted"));
        }
    }
    Ok(())
}

const JOB_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("kind", "kind"),
    ("state", "state"),
    ("progress", "progress"),
    ("target", "target"),
    ("message", "message"),
    ("created_at", "created_at"),
];

fn job(c: &Client, cmd: JobCmd, json: bool) -> CliResult<()> {
    match cmd {
        JobCmd::List => {
            let v = c.get("/api/v1/jobs")?;
            let mut shown = v.clone();
            if let Some(list) = shown.as_array_mut() {
                for j in list {
                    let p = j["progress"].as_f64().unwrap_or(0.0);
                    j["progress"] = format!("{}%", (p * 100.0).round() as u32).into();
                }
            }
            if json {
                print_json(&v);
            } else {
                print!("{}", table::objects(&shown, JOB_COLUMNS));
            }
        }
        JobCmd::Show { id } => {
            let j = c.get(&format!("/api/v1/jobs/{}", enc(&id)))?;
            if json {
                print_json(&j);
            } else {
                let mut out = table::fields(
                    &j,
                    &[
                        ("id", "id"),
                        ("kind", "kind"),
                        ("state", "state"),
                        ("target", "target"),
                    ],
                );
                out.push_str(&format!(
                    "progress:  {}\n",
                    bar(j["progress"].as_f64().unwrap_or(0.0))
                ));
                out.push_str(&table::fields(
                    &j,
                    &[
                        ("message", "message"),
                        ("error", "error"),
                        ("created", "created_at"),
                        ("finished", "finished_at"),
                    ],
                ));
                print!("{out}");
            }
        }
        JobCmd::Cancel { id } => {
            let j = c.call("POST", &format!("/api/v1/jobs/{}/cancel", enc(&id)))?;
            done(json, &j, job_line(&j));
        }
        JobCmd::Wait { id } => {
            let j = wait_job(c, &id)?;
            done(json, &j, job_line(&j));
        }
    }
    Ok(())
}

const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("seq", "seq"),
    ("time", "time"),
    ("severity", "severity"),
    ("kind", "kind"),
    ("target", "target"),
    ("message", "message"),
];

fn events(
    c: &Client,
    since: Option<u64>,
    limit: Option<u32>,
    follow: bool,
    json: bool,
) -> CliResult<()> {
    let fetch = |since: Option<u64>| {
        let mut q = Vec::new();
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        c.get(&format!("/api/v1/events{}", query(&q)))
    };
    let first = fetch(since)?;
    if !follow {
        print_list(json, &first, EVENT_COLUMNS);
        return Ok(());
    }
    // Following: a header once, then one line (or one JSON object) per event.
    let mut last = since;
    let mut header = !json;
    let mut batch = first;
    loop {
        let list = batch.as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            if json {
                for e in &list {
                    println!("{e}");
                }
            } else {
                let t = table::objects(&Value::Array(list.clone()), EVENT_COLUMNS);
                let skip = usize::from(!header);
                for l in t.lines().skip(skip) {
                    println!("{l}");
                }
                header = false;
            }
            let _ = std::io::stdout().flush();
            last = list.iter().filter_map(|e| e["seq"].as_u64()).max().or(last);
        }
        if list.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
        batch = fetch(last)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_nics() {
        assert_eq!(
            parse_disk("p1:10240").unwrap(),
            json!({"pool": "p1", "size_mib": 10240})
        );
        assert_eq!(
            parse_disk("p1:volume=data").unwrap(),
            json!({"pool": "p1", "volume": "data"})
        );
        for bad in ["p1", ":10", "p1:", "p1:ten", "p1:volume="] {
            assert!(parse_disk(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_nic("sw0,mac=52:54:00:00:00:01,model=e1000").unwrap(),
            json!({"vswitch": "sw0", "mac": "52:54:00:00:00:01", "model": "e1000"})
        );
        assert!(parse_nic("sw0,speed=10").is_err());
        assert!(parse_nic("mac=1").is_err());
        assert_eq!(bar(0.5), "[##########----------]  50%");
        assert_eq!(bar(2.0), "[####################] 100%");
    }
}
