//! MAC addresses: parsing and validation of user-given addresses, and
//! stable, unique generation for VM NICs.
//!
//! A generated address is QEMU's locally administered unicast prefix
//! `52:54:00` followed by three bytes of SHA-256 over (cluster id, VM id,
//! NIC index, attempt). The same inputs give the same address on every host
//! and every release; `attempt` only moves on when the address is already in
//! the caller's set of used addresses. Generate once when the NIC is created
//! and store the result in the VM's configuration.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::NetError;

/// QEMU's prefix for guest NICs (locally administered, unicast).
pub const QEMU_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

/// QEMU's default guest MAC, which an unconfigured QEMU NIC would take:
/// never handed out.
pub const QEMU_DEFAULT_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// How many derivations are tried before giving up.
pub const MAX_ATTEMPTS: u32 = 4096;

/// A 48-bit Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Wraps six octets.
    pub const fn new(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Unicast: the group bit (lowest bit of the first octet) is clear.
    pub const fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }

    /// Locally administered: the U/L bit of the first octet is set.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// All six octets are zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Parses and checks a user-given address for a NIC: six hex pairs
    /// separated by `:` or `-`, unicast, not all zero. Errors name `field`.
    pub fn parse_nic(field: &'static str, value: &str) -> Result<MacAddr, NetError> {
        let mac: MacAddr = value
            .parse()
            .map_err(|e: MacParseError| NetError::invalid(field, value, e.0))?;
        if mac.is_zero() {
            return Err(NetError::invalid(
                field,
                value,
                "the all-zero address is not usable",
            ));
        }
        if !mac.is_unicast() {
            return Err(NetError::invalid(
                field,
                value,
                "it is a multicast or broadcast address (lowest bit of the first octet is set)",
            ));
        }
        Ok(mac)
    }

    /// The address to give the host side of a VM's tap: the guest address
    /// with the first octet replaced by `fe` (locally administered, unicast,
    /// and higher than any real NIC, so a bridge never adopts it), as
    /// libvirt does.
    pub const fn host_side(&self) -> MacAddr {
        let o = self.0;
        MacAddr([0xfe, o[1], o[2], o[3], o[4], o[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MacParseError(&'static str);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        const SHAPE: &str = "expected six two-digit hex octets separated by ':' or '-'";
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or(MacParseError(SHAPE))?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError(SHAPE));
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| MacParseError(SHAPE))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(SHAPE));
        }
        Ok(MacAddr(octets))
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> String {
        mac.to_string()
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacParseError;

    fn try_from(s: String) -> Result<MacAddr, MacParseError> {
        s.parse()
    }
}

/// The stable MAC for NIC `nic_index` of VM `vm_id` in cluster `cluster_id`
/// that is not in `used`: the first free derivation, trying at most
/// [`MAX_ATTEMPTS`]. The result is a function of the inputs alone.
pub fn generate(
    cluster_id: &str,
    vm_id: &str,
    nic_index: u16,
    used: &HashSet<MacAddr>,
) -> Result<MacAddr, NetError> {
    if cluster_id.is_empty() {
        return Err(NetError::invalid("cluster_id", cluster_id, "it is empty"));
    }
    if vm_id.is_empty() {
        return Err(NetError::invalid("vm_id", vm_id, "it is empty"));
    }
    for attempt in 0..MAX_ATTEMPTS {
        let mac = derive(cluster_id, vm_id, nic_index, attempt);
        if mac != QEMU_DEFAULT_MAC && !used.contains(&mac) {
            return Ok(mac);
        }
    }
    Err(NetError::MacExhausted {
        vm_id: vm_id.to_string(),
        nic_index,
        attempts: MAX_ATTEMPTS,
    })
}

/// One derivation: `52:54:00` + the first three bytes of SHA-256 over a
/// versioned, length-prefixed encoding of the inputs.
fn derive(cluster_id: &str, vm_id: &str, nic_index: u16, attempt: u32) -> MacAddr {
    let mut h = Sha256::new();
    h.update(b"nasvisor-mac-v1\0");
    h.update((cluster_id.len() as u64).to_be_bytes());
    h.update(cluster_id.as_bytes());
    h.update((vm_id.len() as u64).to_be_bytes());
    h.update(vm_id.as_bytes());
    h.update(nic_index.to_be_bytes());
    h.update(attempt.to_be_bytes());
    let d = h.finalize();
    MacAddr([
        QEMU_PREFIX[0],
        QEMU_PREFIX[1],
        QEMU_PREFIX[2],
        d[0],
        d[1],
        d[2],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let mac: MacAddr = "52:54:00:AB:cd:0e".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0e");
        assert_eq!("52-54-00-ab-cd-0e".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0e:ff",
            "5:54:00:ab:cd:0e",
            "zz:54:00:ab:cd:0e",
            "52:54-00:ab:cd:0e",
            "+1:54:00:ab:cd:0e",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn user_mac_rules_name_the_field() {
        MacAddr::parse_nic("nics[0].mac", "02:00:00:00:00:01").unwrap();
        for (bad, why) in [
            ("00:00:00:00:00:00", "all-zero"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("01:00:5e:00:00:01", "multicast"),
            ("nope", "hex"),
        ] {
            let err = MacAddr::parse_nic("nics[0].mac", bad)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("nics[0].mac: "), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn generated_macs_are_stable_local_unicast() {
        let used = HashSet::new();
        let a = generate("c1", "vm-1", 0, &used).unwrap();
        assert_eq!(a, generate("c1", "vm-1", 0, &used).unwrap());
        assert_eq!(&a.octets()[..3], &QEMU_PREFIX);
        assert!(a.is_unicast() && a.is_local() && !a.is_zero());
        // Pinned so that a change of derivation is noticed: existing VMs
        // would otherwise get new addresses.
        assert_eq!(a.to_string(), "52:54:00:55:b2:f9");
        assert_ne!(a, generate("c1", "vm-1", 1, &used).unwrap());
        assert_ne!(a, generate("c1", "vm-2", 0, &used).unwrap());
        assert_ne!(a, generate("c2", "vm-1", 0, &used).unwrap());
    }

    #[test]
    fn collisions_move_to_the_next_derivation() {
        let first = generate("c1", "vm-1", 0, &HashSet::new()).unwrap();
        let used: HashSet<_> = [first].into();
        let second = generate("c1", "vm-1", 0, &used).unwrap();
        assert_ne!(first, second);
        assert_eq!(second, derive("c1", "vm-1", 0, 1));
    }

    #[test]
    fn many_nics_get_distinct_addresses() {
        let mut used = HashSet::new();
        for vm in 0..200 {
            for nic in 0..8 {
                let mac = generate("cluster", &format!("vm-{vm}"), nic, &used).unwrap();
                assert!(used.insert(mac), "duplicate {mac}");
            }
        }
        assert_eq!(used.len(), 1600);
    }

    #[test]
    fn empty_ids_are_refused() {
        let used = HashSet::new();
        let err = generate("", "vm", 0, &used).unwrap_err().to_string();
        assert!(err.starts_with("cluster_id: "), "{err}");
        let err = generate("c", "", 0, &used).unwrap_err().to_string();
        assert!(err.starts_with("vm_id: "), "{err}");
    }

    #[test]
    fn exhaustion_is_reported() {
        let used: HashSet<_> = (0..MAX_ATTEMPTS).map(|a| derive("c", "v", 3, a)).collect();
        let err = generate("c", "v", 3, &used).unwrap_err();
        assert!(
            matches!(err, NetError::MacExhausted { nic_index: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn host_side_and_serde() {
        let mac: MacAddr = "52:54:00:01:02:03".parse().unwrap();
        assert_eq!(mac.host_side().to_string(), "fe:54:00:01:02:03");
        assert!(mac.host_side().is_unicast());
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"52:54:00:01:02:03\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>("\"x\"").is_err());
    }
}
