//! The NoCloud seed files: `meta-data`, `user-data` and `network-config`.
//!
//! All inputs are validated (see [`crate::plan`]) before they get here, and
//! every string value is quoted by [`crate::yaml::quote`]; keys are constants.

use std::net::{IpAddr, Ipv4Addr};

use nasvisor_plugin_sdk::prelude::*;

use crate::validate::Cidr;
use crate::yaml::{flow_list, Writer};

/// The sudo rule given to users with `sudo: true`.
pub const SUDO_RULE: &str = "ALL=(ALL) NOPASSWD:ALL";
pub use nasvisor_plugin_sdk::seed::{final_message, instance_id, SERIAL_CONSOLE};
use nasvisor_plugin_sdk::seed::{ready_command, short_hostname};

/// A validated NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The netplan id and interface name: `nic0`, `nic1`, ...
    pub id: String,
    /// The MAC address in lower case.
    pub mac: String,
    /// Use DHCPv4.
    pub dhcp4: bool,
    /// Static addresses.
    pub addresses: Vec<Cidr>,
    /// IPv4 default gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// DNS servers.
    pub nameservers: Vec<IpAddr>,
}

/// `meta-data`: instance id (see [`instance_id`]) and local host name.
pub fn meta_data(vm_name: &str, hostname: &str) -> String {
    let mut w = Writer::default();
    w.str(0, "instance-id", &instance_id(vm_name, hostname));
    w.str(0, "local-hostname", hostname);
    w.finish()
}

/// `user-data`: a `#cloud-config` document.
///
/// - `hostname` (the first label), `fqdn` (when the host name has dots),
///   `preserve_hostname: false`, `manage_etc_hosts: true`;
/// - `users`, when any: `name`, `groups`, `shell`, `sudo` (the
///   [`SUDO_RULE`] when asked), `lock_passwd` (false exactly when a hash is
///   given) with `passwd`, and `ssh_authorized_keys`;
/// - `package_update: true` and `packages` when packages are asked for;
/// - `timezone` when given;
/// - `ssh_pwauth`: true only when some user has a password hash;
/// - `runcmd` printing the ready marker on [`SERIAL_CONSOLE`] (the marker is
///   passed as a positional argument, never parsed by the shell; see
///   [`ready_command`]), and `final_message` (see [`final_message`]).
pub fn user_data(req: &InstallRequest, marker: &str) -> String {
    let mut w = Writer::with_header("#cloud-config\n");
    w.str(0, "hostname", short_hostname(&req.hostname));
    if req.hostname.contains('.') {
        w.str(0, "fqdn", &req.hostname);
    }
    w.bool(0, "preserve_hostname", false);
    w.bool(0, "manage_etc_hosts", true);
    if !req.users.is_empty() {
        w.open(0, "users");
        for u in &req.users {
            w.item_str(1, "name", &u.name);
            if !u.groups.is_empty() {
                w.raw(2, "groups", &flow_list(&u.groups));
            }
            if let Some(sh) = &u.shell {
                w.str(2, "shell", sh);
            }
            if u.sudo {
                w.str(2, "sudo", SUDO_RULE);
            }
            match &u.password_hash {
                Some(h) => {
                    w.bool(2, "lock_passwd", false);
                    w.str(2, "passwd", h);
                }
                None => w.bool(2, "lock_passwd", true),
            }
            if !u.ssh_authorized_keys.is_empty() {
                w.open(2, "ssh_authorized_keys");
                for k in &u.ssh_authorized_keys {
                    w.item(3, k.trim());
                }
            }
        }
    }
    if !req.packages.is_empty() {
        w.bool(0, "package_update", true);
        w.open(0, "packages");
        for p in &req.packages {
            w.item(1, p);
        }
    }
    if let Some(tz) = &req.timezone {
        w.str(0, "timezone", tz);
    }
    let pwauth = req.users.iter().any(|u| u.password_hash.is_some());
    w.bool(0, "ssh_pwauth", pwauth);
    w.open(0, "runcmd");
    w.item_raw(1, &flow_list(&ready_command(marker)));
    w.str(0, "final_message", &final_message(marker));
    w.finish()
}

/// `network-config`: netplan version 2, one `ethernets` entry per NIC keyed
/// `nic0`, `nic1`, ... matching the MAC and renaming the interface to that id
/// (`nicN` cannot clash with kernel names). The default route is written as
/// `routes: [{to: 0.0.0.0/0, via: GW}]`: the deprecated `gateway4` is avoided,
/// and `to: default` is not understood by cloud-init 22.x. `None` when the
/// request has no NIC (cloud-init then uses DHCP on the first one).
pub fn network_config(nics: &[Nic]) -> Option<String> {
    if nics.is_empty() {
        return None;
    }
    let mut w = Writer::default();
    w.raw(0, "version", "2");
    w.open(0, "ethernets");
    for n in nics {
        w.open(1, &n.id);
        w.open(2, "match");
        w.str(3, "macaddress", &n.mac);
        w.str(2, "set-name", &n.id);
        w.bool(2, "dhcp4", n.dhcp4);
        if !n.addresses.is_empty() {
            w.open(2, "addresses");
            for a in &n.addresses {
                w.item(3, &a.to_string());
            }
        }
        if let Some(gw) = n.gateway4 {
            w.open(2, "routes");
            w.item_str(3, "to", "0.0.0.0/0");
            w.str(4, "via", &gw.to_string());
        }
        if !n.nameservers.is_empty() {
            w.open(2, "nameservers");
            w.open(3, "addresses");
            for ns in &n.nameservers {
                w.item(4, &ns.to_string());
            }
        }
    }
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::yaml::quote as q;

    #[test]
    fn meta_data_layout() {
        let m = meta_data("vm1", "web01.example.com");
        assert_eq!(
            m,
            format!(
                "instance-id: \"{}\"\nlocal-hostname: \"web01.example.com\"\n",
                instance_id("vm1", "web01.example.com")
            )
        );
    }

    #[test]
    fn user_data_minimal() {
        let r = InstallRequest {
            vm_name: "vm1".into(),
            hostname: "web01".into(),
            ..Default::default()
        };
        assert_eq!(
            user_data(&r, "NASVISOR-READY"),
            "#cloud-config\nhostname: \"web01\"\npreserve_hostname: false\nmanage_etc_hosts: true\nssh_pwauth: false\nruncmd:\n  - [\"sh\", \"-c\", \"printf '%s\\\\n' \\\"$1\\\" > /dev/ttyS0 || true\", \"nasvisor-ready\", \"NASVISOR-READY\"]\nfinal_message: \"NASVISOR-READY\"\n"
        );
    }

    #[test]
    fn user_data_full() {
        let r = full_request();
        let u = user_data(&r, "READY");
        assert!(u.starts_with("#cloud-config\n"));
        for line in [
            "hostname: \"web01\"\n",
            "fqdn: \"web01.example.com\"\n",
            "users:\n  - name: \"alice\"\n    groups: [\"adm\", \"sudo\"]\n    shell: \"/bin/bash\"\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: false\n",
            &format!("    passwd: {}\n", q(SHA512_HASH)),
            &format!("    ssh_authorized_keys:\n      - {}\n", q(ED25519)),
            "  - name: \"bob\"\n    lock_passwd: true\n",
            "package_update: true\npackages:\n  - \"nginx\"\n  - \"qemu-guest-agent\"\n",
            "timezone: \"Europe/Paris\"\n",
            "ssh_pwauth: true\n",
            "final_message: \"READY\"\n",
        ] {
            assert!(u.contains(line), "missing {line:?} in\n{u}");
        }
        assert!(u.is_ascii());
    }

    #[test]
    fn ssh_pwauth_only_with_a_hash() {
        let mut r = full_request();
        for u in &mut r.users {
            u.password_hash = None;
        }
        let u = user_data(&r, "READY");
        assert!(u.contains("ssh_pwauth: false\n"));
        assert!(!u.contains("lock_passwd: false"));
        assert!(!u.contains("\n    passwd: "));
    }

    #[test]
    fn final_message_avoids_template_syntax() {
        assert_eq!(final_message("NASVISOR-READY"), "NASVISOR-READY");
        assert_eq!(
            final_message("ready $UPTIME"),
            "nasvisor: cloud-init finished"
        );
        assert_eq!(
            final_message("## template: jinja"),
            "nasvisor: cloud-init finished"
        );
        let u = user_data(
            &InstallRequest {
                hostname: "h".into(),
                ..Default::default()
            },
            "cost $5",
        );
        assert!(u.contains("\"nasvisor-ready\", \"cost $5\"]"), "{u}");
    }

    #[test]
    fn network_config_layout() {
        let nics = checked_nics();
        assert_eq!(
            network_config(&nics).unwrap(),
            "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    set-name: \"nic0\"\n    dhcp4: false\n    addresses:\n      - \"192.0.2.10/24\"\n      - \"2001:db8::10/64\"\n    routes:\n      - to: \"0.0.0.0/0\"\n        via: \"192.0.2.1\"\n    nameservers:\n      addresses:\n        - \"192.0.2.53\"\n        - \"2001:db8::53\"\n  nic1:\n    match:\n      macaddress: \"52:54:00:ab:cd:ef\"\n    set-name: \"nic1\"\n    dhcp4: true\n"
        );
        assert_eq!(network_config(&[]), None);
    }
}
