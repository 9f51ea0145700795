//! How a VM's guest is installed from a system image (`VmCreate::install`).

use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest root disk of an install, GiB (64 TiB).
pub const MAX_INSTALL_DISK_GIB: u64 = 65536;

/// Largest number of users of an install.
pub const MAX_INSTALL_USERS: usize = 32;

/// Largest number of packages of an install.
pub const MAX_INSTALL_PACKAGES: usize = 256;

/// Largest number of network entries of an install (one per NIC).
pub const MAX_INSTALL_NETWORKS: usize = 8;

/// Largest SSH public key line, bytes.
pub const MAX_SSH_KEY_BYTES: usize = 8 * 1024;

/// How a VM's guest is installed from its image (`VmCreate::install`).
/// Every field is optional; the core (and the os-installer plugin) fill in
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallSpec {
    /// Guest host name (RFC 1123); the VM name when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Users to create, at most 32.
    #[serde(default)]
    pub users: Vec<InstallUser>,
    /// Debian-style package names to install, at most 256.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Network settings; entry `i` applies to `nics[i]`.
    #[serde(default)]
    pub network: Vec<InstallNetwork>,
    /// Size of the root disk, GiB (1..=65536); the image's size when absent.
    #[serde(default)]
    pub disk_size_gib: Option<u64>,
    /// Time zone, e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Pool of the root disk (core default `default`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Keep the VM's disks when the install fails (for inspection).
    #[serde(default)]
    pub keep_disks_on_failure: bool,
}

/// A user of an install. Its `Debug` shows neither the password hash nor
/// the SSH keys (only how many): requests are logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallUser {
    /// POSIX user name `^[a-z_][a-z0-9_-]{0,31}$`.
    pub name: String,
    /// OpenSSH public key lines.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// crypt(3) hash (`$6$...`); no password login when absent.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Password-less sudo.
    #[serde(default)]
    pub sudo: bool,
    /// Extra groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell, an absolute path.
    #[serde(default)]
    pub shell: Option<String>,
}

impl std::fmt::Debug for InstallUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallUser")
            .field("name", &self.name)
            .field(
                "ssh_authorized_keys",
                &format_args!("<{} key(s) redacted>", self.ssh_authorized_keys.len()),
            )
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| REDACTED),
            )
            .field("sudo", &self.sudo)
            .field("groups", &self.groups)
            .field("shell", &self.shell)
            .finish()
    }
}

/// Network settings of one NIC of an install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallNetwork {
    /// Configure IPv4 by DHCP.
    #[serde(default)]
    pub dhcp4: bool,
    /// Static addresses with prefix length, e.g. `192.0.2.10/24`, `2001:db8::5/64`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// IPv4 default gateway.
    #[serde(default)]
    pub gateway4: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

impl InstallSpec {
    /// Checks the install settings of a VM with `nics` network interfaces.
    /// Field paths start with `install.`.
    pub fn validate_for(&self, nics: usize) -> Result<(), ApiError> {
        if let Some(h) = &self.hostname {
            check_hostname("install.hostname", h)?;
        }
        if self.users.len() > MAX_INSTALL_USERS {
            return Err(ApiError::field(
                "install.users",
                format!("at most {MAX_INSTALL_USERS} users"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let f = |n: &str| format!("install.users[{i}].{n}");
            check_user_name(&f("name"), &u.name)?;
            if !seen.insert(u.name.as_str()) {
                return Err(ApiError::field(
                    f("name"),
                    format!("duplicate user {}", u.name),
                ));
            }
            if u.ssh_authorized_keys.len() > 64 {
                return Err(ApiError::field(f("ssh_authorized_keys"), "at most 64 keys"));
            }
            for (k, key) in u.ssh_authorized_keys.iter().enumerate() {
                check_ssh_key(&format!("install.users[{i}].ssh_authorized_keys[{k}]"), key)?;
            }
            if let Some(h) = &u.password_hash {
                check_password_hash(&f("password_hash"), h)?;
            }
            if u.groups.len() > 32 {
                return Err(ApiError::field(f("groups"), "at most 32 groups"));
            }
            for (g, group) in u.groups.iter().enumerate() {
                check_user_name(&format!("install.users[{i}].groups[{g}]"), group)?;
            }
            if let Some(sh) = &u.shell {
                check_abs_path(&f("shell"), sh)?;
            }
        }
        if self.packages.len() > MAX_INSTALL_PACKAGES {
            return Err(ApiError::field(
                "install.packages",
                format!("at most {MAX_INSTALL_PACKAGES} packages"),
            ));
        }
        for (i, p) in self.packages.iter().enumerate() {
            check_package(&format!("install.packages[{i}]"), p)?;
        }
        if self.network.len() > MAX_INSTALL_NETWORKS {
            return Err(ApiError::field(
                "install.network",
                format!("at most {MAX_INSTALL_NETWORKS} entries"),
            ));
        }
        if self.network.len() > nics {
            return Err(ApiError::field(
                "install.network",
                format!(
                    "{} entries but the VM has {nics} nics; entry i configures nics[i]",
                    self.network.len()
                ),
            ));
        }
        for (i, n) in self.network.iter().enumerate() {
            if n.addresses.len() > 16 {
                return Err(ApiError::field(
                    format!("install.network[{i}].addresses"),
                    "at most 16 addresses",
                ));
            }
            for (a, addr) in n.addresses.iter().enumerate() {
                check_cidr(&format!("install.network[{i}].addresses[{a}]"), addr)?;
            }
            if let Some(g) = &n.gateway4 {
                if g.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(ApiError::field(
                        format!("install.network[{i}].gateway4"),
                        format!("{g:?} is not an IPv4 address"),
                    ));
                }
            }
            if n.nameservers.len() > 8 {
                return Err(ApiError::field(
                    format!("install.network[{i}].nameservers"),
                    "at most 8 name servers",
                ));
            }
            for (d, ns) in n.nameservers.iter().enumerate() {
                if ns.parse::<std::net::IpAddr>().is_err() {
                    return Err(ApiError::field(
                        format!("install.network[{i}].nameservers[{d}]"),
                        format!("{ns:?} is not an IP address"),
                    ));
                }
            }
        }
        if let Some(g) = self.disk_size_gib {
            if !(1..=MAX_INSTALL_DISK_GIB).contains(&g) {
                return Err(ApiError::field(
                    "install.disk_size_gib",
                    format!("must be 1 to {MAX_INSTALL_DISK_GIB} GiB, got {g}"),
                ));
            }
        }
        if let Some(t) = &self.timezone {
            check_timezone("install.timezone", t)?;
        }
        if let Some(p) = &self.pool {
            check_name("install.pool", p)?;
        }
        Ok(())
    }
}
