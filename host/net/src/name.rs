//! Interface names.
//!
//! - [`IfName`]: any existing kernel interface (an uplink NIC): 1 to 15
//!   bytes, no `/`, `:`, whitespace or control characters, not `.`/`..`.
//! - [`BridgeName`]: a vswitch, created by nasvisor: `nv-` followed by 1 to
//!   12 characters of `a-z 0-9 _ -`.
//! - [`TapName`]: a VM NIC's tap, created by nasvisor: `nvt` + 9 hex digits
//!   of SHA-256(VM id) + `-` + NIC index, derived and stable.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::NetError;

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME: usize = 15;

/// Prefix of every vswitch bridge nasvisor manages.
pub const BRIDGE_PREFIX: &str = "nv-";

/// Prefix of every tap nasvisor creates.
pub const TAP_PREFIX: &str = "nvt";

/// Highest NIC index a tap name can carry.
pub const MAX_NIC_INDEX: u16 = 99;

/// Checks the kernel's rules for an interface name.
fn check_kernel(field: &'static str, value: &str) -> Result<(), NetError> {
    let bad = |reason: &str| Err(NetError::invalid(field, value, reason));
    if value.is_empty() {
        return bad("it is empty");
    }
    if value.len() > MAX_IFNAME {
        return bad("it is longer than 15 bytes");
    }
    if value == "." || value == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("it contains '/', ':', whitespace or a control character");
    }
    Ok(())
}

/// Checks nasvisor's stricter rules for names it creates.
fn check_strict(field: &'static str, value: &str) -> Result<(), NetError> {
    check_kernel(field, value)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(NetError::invalid(
            field,
            value,
            "only 'a'-'z', '0'-'9', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NetError;

            fn try_from(s: String) -> Result<$name, NetError> {
                $name::new(&s)
            }
        }
    };
}

name_type!(
    /// The name of an existing kernel interface, such as an uplink NIC.
    IfName
);

impl IfName {
    /// Checks `value` against the kernel's rules; errors name `ifname`.
    pub fn new(value: &str) -> Result<IfName, NetError> {
        IfName::parse("ifname", value)
    }

    /// Checks `value` against the kernel's rules; errors name `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<IfName, NetError> {
        check_kernel(field, value)?;
        Ok(IfName(value.to_string()))
    }
}

name_type!(
    /// The name of a vswitch bridge: `nv-` and 1 to 12 of `a-z 0-9 _ -`.
    BridgeName
);

impl BridgeName {
    /// Checks a full bridge name (with its `nv-` prefix); errors name
    /// `vswitch`.
    pub fn new(value: &str) -> Result<BridgeName, NetError> {
        BridgeName::parse("vswitch", value)
    }

    /// Checks a full bridge name; errors name `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<BridgeName, NetError> {
        check_strict(field, value)?;
        if !value.starts_with(BRIDGE_PREFIX) || value.len() == BRIDGE_PREFIX.len() {
            return Err(NetError::invalid(
                field,
                value,
                format!("a vswitch name is {BRIDGE_PREFIX:?} followed by 1 to 12 characters"),
            ));
        }
        Ok(BridgeName(value.to_string()))
    }

    /// The bridge for a vswitch called `short` by the administrator:
    /// `nv-<short>`, with `short` 1 to 12 of `a-z 0-9 _ -`.
    pub fn from_short(short: &str) -> Result<BridgeName, NetError> {
        let max = MAX_IFNAME - BRIDGE_PREFIX.len();
        if short.is_empty() || short.len() > max {
            return Err(NetError::invalid(
                "vswitch",
                short,
                format!("a vswitch name has 1 to {max} characters"),
            ));
        }
        check_strict("vswitch", short)?;
        BridgeName::parse("vswitch", &format!("{BRIDGE_PREFIX}{short}"))
    }

    /// The administrator's name: the bridge name without `nv-`.
    pub fn short(&self) -> &str {
        &self.0[BRIDGE_PREFIX.len()..]
    }
}

name_type!(
    /// The name of a VM NIC's tap: `nvt<9 hex>-<nic index>`.
    TapName
);

impl TapName {
    /// Checks a tap name; errors name `tap`.
    pub fn new(value: &str) -> Result<TapName, NetError> {
        check_strict("tap", value)?;
        if !value.starts_with(TAP_PREFIX) {
            return Err(NetError::invalid(
                "tap",
                value,
                format!("a tap name starts with {TAP_PREFIX:?}"),
            ));
        }
        Ok(TapName(value.to_string()))
    }

    /// The tap of NIC `nic_index` (0 to 99) of VM `vm_id`: the same on
    /// every host and every release. Different VMs collide only if the first
    /// 36 bits of SHA-256 of their ids do.
    pub fn for_vm(vm_id: &str, nic_index: u16) -> Result<TapName, NetError> {
        if vm_id.is_empty() {
            return Err(NetError::invalid("vm_id", vm_id, "it is empty"));
        }
        if nic_index > MAX_NIC_INDEX {
            return Err(NetError::invalid(
                "nic_index",
                nic_index.to_string(),
                format!("at most {MAX_NIC_INDEX}"),
            ));
        }
        let digest = Sha256::digest(vm_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        TapName::new(&format!("{TAP_PREFIX}{}-{nic_index}", &hex[..9]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: NetError) -> &'static str {
        match err {
            NetError::Invalid { field, .. } => field,
            other => panic!("not an Invalid error: {other}"),
        }
    }

    #[test]
    fn ifnames() {
        for ok in [
            "eth0",
            "enp3s0f1",
            "br-lan.10",
            "A",
            "veth_x-1",
            &"x".repeat(15),
        ] {
            IfName::new(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "tab\t", &"x".repeat(16)] {
            assert_eq!(
                field_of(IfName::parse("uplink", bad).unwrap_err()),
                "uplink"
            );
        }
    }

    #[test]
    fn bridge_names() {
        for ok in ["nv-a", "nv-lan0", "nv-vlan_10", "nv-123456789012"] {
            BridgeName::new(ok).unwrap();
        }
        for bad in [
            "",
            "nv-",
            "lan0",
            "nv-LAN",
            "nv-a.b",
            "nv-1234567890123",
            "br0",
            "nv-a b",
        ] {
            let err = BridgeName::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("vswitch: "), "{err}");
        }
        let b = BridgeName::from_short("lan0").unwrap();
        assert_eq!(b.as_str(), "nv-lan0");
        assert_eq!(b.short(), "lan0");
        for bad in ["", "Lan", "123456789012x", "a/b"] {
            assert_eq!(
                field_of(BridgeName::from_short(bad).unwrap_err()),
                "vswitch"
            );
        }
    }

    #[test]
    fn tap_names_are_stable_and_short() {
        let t = TapName::for_vm("0b6f1c1e-4a7e-4f57-9b1c-7d1a8f3e2c10", 3).unwrap();
        assert_eq!(
            t,
            TapName::for_vm("0b6f1c1e-4a7e-4f57-9b1c-7d1a8f3e2c10", 3).unwrap()
        );
        assert!(t.as_str().starts_with(TAP_PREFIX));
        // Pinned: a running VM's tap must keep its name across releases.
        assert_eq!(
            TapName::for_vm("vm-1", 0).unwrap().as_str(),
            "nvt2d62b0035-0"
        );
        assert!(t.as_str().ends_with("-3"));
        assert!(t.as_str().len() <= MAX_IFNAME);
        assert_eq!(
            TapName::for_vm("vm", 99).unwrap().as_str().len(),
            MAX_IFNAME
        );
        assert_ne!(
            TapName::for_vm("vm-a", 0).unwrap(),
            TapName::for_vm("vm-b", 0).unwrap()
        );
        assert_ne!(
            TapName::for_vm("vm-a", 0).unwrap(),
            TapName::for_vm("vm-a", 1).unwrap()
        );
        assert_eq!(field_of(TapName::for_vm("", 0).unwrap_err()), "vm_id");
        assert_eq!(
            field_of(TapName::for_vm("vm", 100).unwrap_err()),
            "nic_index"
        );
        assert_eq!(field_of(TapName::new("eth0").unwrap_err()), "tap");
    }

    #[test]
    fn names_deserialize_with_checks() {
        let b: BridgeName = serde_json::from_str("\"nv-lan0\"").unwrap();
        assert_eq!(b.as_str(), "nv-lan0");
        let err = serde_json::from_str::<BridgeName>("\"lan0\"").unwrap_err();
        assert!(err.to_string().contains("vswitch"), "{err}");
    }
}
