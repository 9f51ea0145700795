//! What a vswitch should be ([`VswitchSpec`]), checked field by field, and
//! the bridge alias that records its uplink in the kernel.

use serde::Serialize;

use crate::error::NetError;
use crate::name::{BridgeName, IfName, BRIDGE_PREFIX, MAX_IFNAME};

/// Lowest usable VLAN id.
pub const MIN_VLAN: u16 = 1;
/// Highest usable VLAN id (4095 is reserved).
pub const MAX_VLAN: u16 = 4094;

/// First word of the alias of every bridge nasvisor manages.
pub const ALIAS_TAG: &str = "nasvisor-vswitch";

/// Checks a VLAN id: 1 to 4094. Errors name `vlan`.
pub fn check_vlan(vid: u16) -> Result<(), NetError> {
    if !(MIN_VLAN..=MAX_VLAN).contains(&vid) {
        return Err(NetError::invalid(
            "vlan",
            vid.to_string(),
            format!("a VLAN id is between {MIN_VLAN} and {MAX_VLAN}"),
        ));
    }
    Ok(())
}

/// The name of the VLAN link for `vid` on `nic`: `<nic>.<vid>`.
pub fn vlan_link_name(nic: &str, vid: u16) -> String {
    format!("{nic}.{vid}")
}

/// What a vswitch should be: its bridge, and optionally its uplink NIC and
/// VLAN. Every part is checked when the spec is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VswitchSpec {
    pub(super) name: BridgeName,
    pub(super) uplink: Option<IfName>,
    pub(super) vlan: Option<u16>,
}

impl VswitchSpec {
    /// An isolated vswitch (no uplink).
    pub fn new(name: BridgeName) -> VswitchSpec {
        VswitchSpec {
            name,
            uplink: None,
            vlan: None,
        }
    }

    /// Checks and builds a spec from raw values. Errors name the field:
    /// `vswitch`, `uplink` or `vlan`.
    pub fn parse(
        name: &str,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> Result<VswitchSpec, NetError> {
        let spec = VswitchSpec::new(BridgeName::new(name)?);
        match uplink {
            Some(nic) => spec.with_uplink(IfName::parse("uplink", nic)?, vlan),
            None => match vlan {
                Some(vid) => Err(NetError::invalid(
                    "vlan",
                    vid.to_string(),
                    "a VLAN needs an uplink NIC",
                )),
                None => Ok(spec),
            },
        }
    }

    /// Attaches the vswitch to `nic`, tagged with `vlan` if given.
    pub fn with_uplink(mut self, nic: IfName, vlan: Option<u16>) -> Result<VswitchSpec, NetError> {
        if let Some(vid) = vlan {
            check_vlan(vid)?;
            let port = vlan_link_name(nic.as_str(), vid);
            if port.len() > MAX_IFNAME {
                return Err(NetError::invalid(
                    "vlan",
                    vid.to_string(),
                    format!(
                        "the VLAN link {port:?} would be longer than {MAX_IFNAME} bytes; \
                         use a NIC with a shorter name"
                    ),
                ));
            }
        }
        if nic.as_str().starts_with(BRIDGE_PREFIX) {
            return Err(NetError::invalid(
                "uplink",
                nic.as_str(),
                "a vswitch cannot be the uplink of another",
            ));
        }
        self.uplink = Some(nic);
        self.vlan = vlan;
        Ok(self)
    }

    /// The bridge name.
    pub fn name(&self) -> &BridgeName {
        &self.name
    }

    /// The uplink NIC, if any.
    pub fn uplink(&self) -> Option<&IfName> {
        self.uplink.as_ref()
    }

    /// The VLAN id, if any.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan
    }

    /// The link enslaved to the bridge for the uplink: the NIC itself or
    /// its VLAN link.
    pub fn port_name(&self) -> Option<String> {
        let nic = self.uplink.as_ref()?;
        Some(match self.vlan {
            Some(vid) => vlan_link_name(nic.as_str(), vid),
            None => nic.to_string(),
        })
    }

    pub(super) fn alias(&self) -> String {
        alias_for(self.uplink.as_ref().map(IfName::as_str), self.vlan)
    }
}

pub(super) fn alias_for(nic: Option<&str>, vlan: Option<u16>) -> String {
    let mut alias = ALIAS_TAG.to_string();
    if let Some(nic) = nic {
        alias.push_str(&format!(" uplink={nic}"));
        if let Some(vid) = vlan {
            alias.push_str(&format!(" vlan={vid}"));
        }
    }
    alias
}

/// Parses an alias written by [`alias_for`]: `Some((uplink, vlan))` for a
/// nasvisor bridge, `None` for any other alias.
pub(super) fn parse_alias(alias: &str) -> Option<(Option<String>, Option<u16>)> {
    let mut words = alias.split_whitespace();
    if words.next()? != ALIAS_TAG {
        return None;
    }
    let (mut nic, mut vlan) = (None, None);
    for word in words {
        if let Some(v) = word.strip_prefix("uplink=") {
            nic = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("vlan=") {
            vlan = v.parse().ok();
        }
    }
    Some((nic, vlan))
}
