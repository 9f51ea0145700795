//! `nasvisor vm create`: its options, and the `VmCreate` body they make,
//! with the `InstallSpec` of an install from a system image (`--image`
//! and the guest options: host name, user, keys, packages, network, disk).

use super::client::{CliError, CliResult, Client};
use super::jobs;
use super::render::{cell, Out};
use super::vm::vm_path;
use clap::Args;
use nasvisor_api_types::{
    DiskSpec, FirmwareKind, InstallNetwork, InstallSpec, InstallUser, NicModel, NicSpec, VmCreate,
    VmView,
};

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

/// Runs `nasvisor vm create`: creates the VM and, with `--wait`, follows
/// its install job (with `--output json|yaml`, one document: the VM once
/// installed).
pub fn run(c: &Client, args: &VmCreateArgs, out: Out) -> CliResult<()> {
    let body = body(args)?;
    let v: VmView = c.send("POST", "/api/v1/vms", &body)?;
    let job = v.install_job.as_deref();
    let doc = out.doc();
    if !(doc.is_some() && args.wait && job.is_some()) {
        out.done(&v, |v| {
            format!(
                "vm {} created (id {}, state {})",
                cell(&v.name),
                cell(&v.id),
                cell(&v.state)
            )
        });
    }
    if let Some(j) = job {
        out.note(|| format!("install job {j}"));
    }
    if args.wait {
        match job {
            Some(j) => {
                jobs::wait(c, j)?;
                if let Some(doc) = doc {
                    doc.print(&c.get::<VmView>(&vm_path(&v.id))?);
                } else {
                    println!("install of {} finished", cell(&v.name));
                }
            }
            None => eprintln!("note: no install job to wait for"),
        }
    }
    Ok(())
}

/// Parses `POOL:SIZE_MIB` or `POOL:volume=NAME`.
fn parse_disk(s: &str) -> CliResult<DiskSpec> {
    let bad = || {
        CliError::msg(format!(
            "--disk {s:?}: expected POOL:SIZE_MIB (a new volume) or POOL:volume=NAME (an existing one)"
        ))
    };
    let (pool, rest) = s.split_once(':').ok_or_else(bad)?;
    if pool.is_empty() {
        return Err(bad());
    }
    let pool = pool.to_string();
    if let Some(vol) = rest.strip_prefix("volume=") {
        if vol.is_empty() {
            return Err(bad());
        }
        return Ok(DiskSpec {
            pool,
            size_mib: None,
            volume: Some(vol.into()),
        });
    }
    let size: u64 = rest.parse().map_err(|_| bad())?;
    Ok(DiskSpec {
        pool,
        size_mib: Some(size),
        volume: None,
    })
}

/// Parses `VSWITCH[,mac=MAC][,model=MODEL]`.
fn parse_nic(s: &str) -> CliResult<NicSpec> {
    let mut parts = s.split(',');
    let vswitch = parts.next().unwrap_or_default();
    if vswitch.is_empty() || vswitch.contains('=') {
        return Err(CliError::msg(format!(
            "--nic {s:?}: expected VSWITCH[,mac=MAC][,model=virtio|e1000]"
        )));
    }
    let mut nic = NicSpec {
        vswitch: vswitch.into(),
        mac: None,
        model: None,
    };
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => nic.mac = Some(m.into()),
            Some(("model", m)) => {
                nic.model = Some(super::api_enum::<NicModel>(m).map_err(|_| {
                    CliError::msg(format!(
                        "--nic {s:?}: unknown model {m:?}; use virtio or e1000"
                    ))
                })?)
            }
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
fn ssh_keys(specs: &[String]) -> CliResult<Vec<String>> {
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
                        .map(str::to_string),
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

/// The install options given, as an `InstallSpec` (`None` without any),
/// and their names for the message when `--image` is missing.
fn install_spec(a: &VmCreateArgs) -> CliResult<(Option<InstallSpec>, Vec<&'static str>)> {
    let mut spec = InstallSpec::default();
    let mut used: Vec<&'static str> = Vec::new();
    if let Some(h) = &a.hostname {
        spec.hostname = Some(h.clone());
        used.push("--hostname");
    }
    let user_opts = !a.ssh_keys.is_empty() || a.password_hash.is_some() || a.sudo;
    match &a.user {
        Some(name) => {
            spec.users.push(InstallUser {
                name: name.clone(),
                ssh_authorized_keys: ssh_keys(&a.ssh_keys)?,
                password_hash: a.password_hash.clone(),
                sudo: a.sudo,
                ..InstallUser::default()
            });
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
        spec.packages = a.packages.clone();
        used.push("--package");
    }
    if !a.ips.is_empty() || a.gateway.is_some() || !a.dns.is_empty() {
        spec.network.push(InstallNetwork {
            dhcp4: a.ips.is_empty(),
            addresses: a.ips.clone(),
            gateway4: a.gateway.clone(),
            nameservers: a.dns.clone(),
        });
        used.push("--ip/--gateway/--dns");
    }
    if let Some(g) = a.disk_size {
        spec.disk_size_gib = Some(g);
        used.push("--disk-size");
    }
    if let Some(p) = &a.pool {
        spec.pool = Some(p.clone());
        used.push("--pool");
    }
    if let Some(t) = &a.timezone {
        spec.timezone = Some(t.clone());
        used.push("--timezone");
    }
    if a.keep_disks_on_failure {
        spec.keep_disks_on_failure = true;
        used.push("--keep-disks-on-failure");
    }
    Ok(((!used.is_empty()).then_some(spec), used))
}

/// The `VmCreate` body of `nasvisor vm create`.
fn body(a: &VmCreateArgs) -> CliResult<VmCreate> {
    let disks = a
        .disks
        .iter()
        .map(|d| parse_disk(d))
        .collect::<CliResult<_>>()?;
    let nics = a
        .nics
        .iter()
        .map(|n| parse_nic(n))
        .collect::<CliResult<_>>()?;
    let firmware = match &a.firmware {
        Some(f) => f.parse::<FirmwareKind>().map_err(CliError::msg)?,
        None => FirmwareKind::default(),
    };
    let (install, used) = install_spec(a)?;
    if install.is_some() && a.image.is_none() {
        return Err(CliError::msg(format!(
            "{} configure the install from a system image: give --image",
            used.join(", ")
        )));
    }
    if a.wait && a.image.is_none() {
        return Err(CliError::msg(
            "--wait follows the install job: give --image",
        ));
    }
    Ok(VmCreate {
        name: a.name.clone(),
        vcpus: a.vcpus,
        memory_mib: a.memory,
        description: a.description.clone(),
        disks,
        nics,
        image: a.image.clone(),
        autostart: a.autostart,
        ha: a.ha,
        firmware,
        install,
        host: a.host.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_nics() {
        assert_eq!(
            parse_disk("p1:10240").unwrap(),
            DiskSpec {
                pool: "p1".into(),
                size_mib: Some(10240),
                volume: None
            }
        );
        assert_eq!(
            parse_disk("p1:volume=data").unwrap(),
            DiskSpec {
                pool: "p1".into(),
                size_mib: None,
                volume: Some("data".into())
            }
        );
        for bad in ["p1", ":10", "p1:", "p1:ten", "p1:volume="] {
            assert!(parse_disk(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_nic("sw0,mac=52:54:00:00:00:01,model=e1000").unwrap(),
            NicSpec {
                vswitch: "sw0".into(),
                mac: Some("52:54:00:00:00:01".into()),
                model: Some(NicModel::E1000)
            }
        );
        assert!(parse_nic("sw0,speed=10").is_err());
        assert!(parse_nic("mac=1").is_err());
        let e = parse_nic("sw0,model=rtl8139").unwrap_err().to_string();
        assert!(e.contains("unknown model \"rtl8139\""), "{e}");
    }

    #[test]
    fn ssh_keys_from_arguments_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team\nssh-ed25519 A a@x\n\n  ssh-rsa B b@y  \n").unwrap();
        let keys = ssh_keys(&[" ssh-rsa C c@z ".into(), format!("@{}", file.display())]).unwrap();
        assert_eq!(
            keys,
            ["ssh-rsa C c@z", "ssh-ed25519 A a@x", "ssh-rsa B b@y"]
        );
        std::fs::write(&file, "# only a comment\n").unwrap();
        let e = ssh_keys(&[format!("@{}", file.display())]).unwrap_err();
        assert!(e.to_string().contains("no key in the file"), "{e}");
    }
}
