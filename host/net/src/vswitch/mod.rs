//! Virtual switches: a vswitch is a Linux bridge named `nv-<name>`,
//! optionally attached to a host NIC (its uplink), untagged or through an
//! 802.1Q VLAN link `<nic>.<vid>` created on that NIC. VM NICs are taps
//! attached to the bridge (see [`crate::tap`]).
//!
//! The uplink a vswitch was given is recorded in the bridge's interface
//! alias (`nasvisor-vswitch uplink=<nic> vlan=<vid>`), so that the kernel
//! itself holds the state: a restarted daemon can tell which VLAN link
//! belongs to which vswitch, and [`Vswitch::ensure`] can move a vswitch
//! from one uplink to another.

mod spec;

pub use spec::{check_vlan, vlan_link_name, VswitchSpec, ALIAS_TAG, MAX_VLAN, MIN_VLAN};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::NetError;
use crate::handle::{nl_err, Net};
use crate::mac::MacAddr;
use crate::name::BridgeName;
use crate::netlink::{Link, LinkChange, NewLink, Rtnl};
use spec::parse_alias;

/// The uplink of a vswitch as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    /// The host NIC.
    pub nic: String,
    /// The VLAN id, when the vswitch is on a VLAN of the NIC.
    pub vlan: Option<u16>,
    /// The link enslaved to the bridge: the NIC or its VLAN link.
    pub port: String,
    /// Whether `port` exists and is attached to the bridge.
    pub attached: bool,
    /// Whether `port` is up with carrier (a cable, a link partner).
    pub carrier: bool,
}

/// A vswitch as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vswitch {
    /// The bridge's name.
    pub name: BridgeName,
    /// The bridge's interface index.
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    /// The bridge's own address.
    pub mac: Option<MacAddr>,
    /// The uplink it was given, if any.
    pub uplink: Option<Uplink>,
    /// Taps attached (VM NICs).
    pub taps: Vec<String>,
    /// Other attached ports (neither the uplink nor taps).
    pub other_ports: Vec<String>,
}

impl Vswitch {
    /// Creates the vswitch or brings an existing one in line with `spec`:
    /// the bridge exists and is up, the VLAN link exists, the uplink port is
    /// attached and up. Running it again changes nothing.
    ///
    /// Preconditions: the uplink NIC, if any, exists, is an Ethernet device,
    /// is neither a bridge nor a tap, and (without VLAN) is not attached to
    /// another bridge or bond. An existing link called `<nic>.<vid>` must be
    /// the VLAN `vid` of `nic`.
    ///
    /// If the vswitch had another uplink, that port is detached, and
    /// deleted if it was a VLAN link. If a step fails, what this call created
    /// is deleted again.
    pub fn ensure(net: &Net, spec: &VswitchSpec) -> Result<Vswitch, NetError> {
        let mut rtnl = net.lock();
        let name = spec.name.as_str();
        let links = rtnl
            .links()
            .map_err(nl_err("list", "links for vswitch", name))?;
        let find = |n: &str| links.iter().find(|l| l.name == n);
        let existing = find(name).cloned();
        if let Some(link) = &existing {
            if !link.is_bridge() {
                return Err(NetError::Conflict {
                    what: "vswitch",
                    name: name.to_string(),
                    reason: format!("is a {} link, not a bridge", kind_of(link)),
                });
            }
        }
        let bridge_index = existing.as_ref().map(|l| l.index);
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.index == index)
                .map_or_else(|| format!("#{index}"), |l| l.name.clone())
        };

        // Work out the uplink port before touching anything.
        let mut uplink_mac = None;
        let port = match (&spec.uplink, spec.vlan) {
            (None, _) => None,
            (Some(nic), vlan) => {
                let nic_link = find(nic.as_str()).ok_or_else(|| NetError::NotFound {
                    what: "uplink",
                    name: nic.to_string(),
                })?;
                check_uplink_nic(nic_link)?;
                uplink_mac = nic_link.mac;
                match vlan {
                    None => {
                        check_free_port("uplink", nic_link, bridge_index, &name_of)?;
                        Some(Port::Existing(nic_link.clone()))
                    }
                    Some(vid) => {
                        let port_name = vlan_link_name(nic.as_str(), vid);
                        match find(&port_name) {
                            Some(l) => {
                                if !l.is_vlan()
                                    || l.parent != Some(nic_link.index)
                                    || l.vlan_id != Some(vid)
                                {
                                    return Err(NetError::Conflict {
                                        what: "VLAN link",
                                        name: port_name,
                                        reason: format!(
                                            "is not VLAN {vid} of {nic} (it is a {} link)",
                                            kind_of(l)
                                        ),
                                    });
                                }
                                check_free_port("VLAN link", l, bridge_index, &name_of)?;
                                Some(Port::Existing(l.clone()))
                            }
                            None => Some(Port::CreateVlan {
                                name: port_name,
                                parent: nic_link.index,
                                vid,
                            }),
                        }
                    }
                }
            }
        };
        let previous = existing
            .as_ref()
            .and_then(|b| b.alias.as_deref())
            .and_then(parse_alias)
            .and_then(|(nic, vlan)| {
                nic.map(|nic| match vlan {
                    Some(vid) => (vlan_link_name(&nic, vid), true),
                    None => (nic, false),
                })
            });

        let mut created = Created::default();
        let result = apply(
            &mut rtnl,
            spec,
            existing.as_ref(),
            port,
            uplink_mac,
            previous,
            &mut created,
        );
        if result.is_err() {
            created.undo(&mut rtnl);
        }
        result?;
        let links = rtnl
            .links()
            .map_err(nl_err("list", "links for vswitch", name))?;
        let bridge = links
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| NetError::NotFound {
                what: "vswitch",
                name: name.to_string(),
            })?;
        Ok(observe(spec.name.clone(), bridge, &links))
    }

    /// The vswitch called `name`, if it exists. A link of that name that is
    /// not a bridge is a conflict.
    pub fn get(net: &Net, name: &BridgeName) -> Result<Option<Vswitch>, NetError> {
        let links = net.links()?;
        let Some(bridge) = links.iter().find(|l| l.name == name.as_str()) else {
            return Ok(None);
        };
        if !bridge.is_bridge() {
            return Err(NetError::Conflict {
                what: "vswitch",
                name: name.to_string(),
                reason: format!("is a {} link, not a bridge", kind_of(bridge)),
            });
        }
        Ok(Some(observe(name.clone(), bridge, &links)))
    }

    /// Every vswitch: the bridges whose names start with `nv-`, by name.
    pub fn list(net: &Net) -> Result<Vec<Vswitch>, NetError> {
        let links = net.links()?;
        let mut all: Vec<Vswitch> = links
            .iter()
            .filter(|l| l.is_bridge())
            .filter_map(|l| BridgeName::new(&l.name).ok().map(|n| observe(n, l, &links)))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Deletes the vswitch and the VLAN link made for it. Refuses while taps
    /// are attached unless `force` (the taps are then detached, not
    /// deleted). The uplink NIC itself is only detached. Returns whether
    /// there was a vswitch to delete.
    pub fn delete(net: &Net, name: &BridgeName, force: bool) -> Result<bool, NetError> {
        let mut rtnl = net.lock();
        let links = rtnl
            .links()
            .map_err(nl_err("list", "links for vswitch", name.as_str()))?;
        let Some(bridge) = links.iter().find(|l| l.name == name.as_str()) else {
            return Ok(false);
        };
        if !bridge.is_bridge() {
            return Err(NetError::Conflict {
                what: "vswitch",
                name: name.to_string(),
                reason: format!("is a {} link, not a bridge", kind_of(bridge)),
            });
        }
        let vs = observe(name.clone(), bridge, &links);
        if !vs.taps.is_empty() && !force {
            return Err(NetError::Busy {
                name: name.to_string(),
                taps: vs.taps,
            });
        }
        rtnl.del_link(bridge.index)
            .map_err(nl_err("delete", "vswitch", name.as_str()))?;
        if let Some(Uplink {
            vlan: Some(vid),
            nic,
            port,
            ..
        }) = &vs.uplink
        {
            let nic_index = links.iter().find(|l| l.name == *nic).map(|l| l.index);
            if let Some(l) = links.iter().find(|l| l.name == *port) {
                if l.is_vlan() && l.vlan_id == Some(*vid) && l.parent == nic_index {
                    match rtnl.del_link(l.index) {
                        Ok(()) => {}
                        Err(e) if e.is(libc::ENODEV) => {}
                        Err(e) => return Err(nl_err("delete", "VLAN link", port)(e)),
                    }
                }
            }
        }
        tracing::info!(vswitch = %name, force, "vswitch deleted");
        Ok(true)
    }

    /// Attaches an existing link (a tap, a veth, ...) to vswitch `bridge`
    /// and sets it up. Attaching a port twice is a no-op; a port attached
    /// to another bridge or bond is a conflict.
    pub fn attach_port(net: &Net, bridge: &BridgeName, port: &str) -> Result<(), NetError> {
        let mut rtnl = net.lock();
        let bridge_link = get_bridge(&mut rtnl, bridge)?;
        let port_link = rtnl
            .get_link(port)
            .map_err(nl_err("get", "port", port))?
            .ok_or_else(|| NetError::NotFound {
                what: "port",
                name: port.to_string(),
            })?;
        if port_link.index == bridge_link.index {
            return Err(NetError::invalid(
                "port",
                port,
                "a bridge cannot be its own port",
            ));
        }
        enslave(&mut rtnl, &bridge_link, &port_link, "port")
    }

    /// Detaches `port` from vswitch `bridge`. Returns whether it was
    /// attached there.
    pub fn detach_port(net: &Net, bridge: &BridgeName, port: &str) -> Result<bool, NetError> {
        let mut rtnl = net.lock();
        let bridge_link = get_bridge(&mut rtnl, bridge)?;
        let Some(port_link) = rtnl.get_link(port).map_err(nl_err("get", "port", port))? else {
            return Ok(false);
        };
        if port_link.master != Some(bridge_link.index) {
            return Ok(false);
        }
        rtnl.set_link(
            port_link.index,
            &LinkChange {
                master: Some(0),
                ..LinkChange::default()
            },
        )
        .map_err(nl_err("detach", "port", port))?;
        Ok(true)
    }
}

/// The uplink port to attach.
enum Port {
    Existing(Link),
    CreateVlan { name: String, parent: u32, vid: u16 },
}

/// What one [`Vswitch::ensure`] call created, to delete again on failure.
#[derive(Default)]
struct Created {
    bridge: Option<(u32, String)>,
    vlan: Option<(u32, String)>,
}

impl Created {
    fn undo(&self, rtnl: &mut Rtnl) {
        for (index, name) in self.vlan.iter().chain(self.bridge.iter()) {
            if let Err(e) = rtnl.del_link(*index) {
                tracing::warn!(link = %name, error = %e.reason, "rollback: cannot delete link");
            }
        }
    }
}

fn apply(
    rtnl: &mut Rtnl,
    spec: &VswitchSpec,
    existing: Option<&Link>,
    port: Option<Port>,
    uplink_mac: Option<MacAddr>,
    previous: Option<(String, bool)>,
    created: &mut Created,
) -> Result<(), NetError> {
    let name = spec.name.as_str();
    let bridge = match existing {
        Some(link) => link.clone(),
        None => {
            let mac = uplink_mac.unwrap_or_else(|| bridge_mac(name));
            rtnl.new_link(&NewLink::Bridge {
                name: name.to_string(),
                mac: Some(mac),
            })
            .map_err(nl_err("create", "vswitch", name))?;
            let link = must_get(rtnl, "vswitch", name)?;
            created.bridge = Some((link.index, name.to_string()));
            tracing::info!(vswitch = %name, "bridge created");
            link
        }
    };

    let port = match port {
        None => None,
        Some(Port::Existing(link)) => Some(link),
        Some(Port::CreateVlan {
            name: vname,
            parent,
            vid,
        }) => {
            rtnl.new_link(&NewLink::Vlan {
                name: vname.clone(),
                parent,
                vid,
            })
            .map_err(|e| {
                if e.is(libc::EOPNOTSUPP) {
                    NetError::Unsupported {
                        what: "VLAN link",
                        name: vname.clone(),
                        feature: "802.1Q VLAN links (CONFIG_VLAN_8021Q)",
                    }
                } else {
                    nl_err("create", "VLAN link", &vname)(e)
                }
            })?;
            let link = must_get(rtnl, "VLAN link", &vname)?;
            created.vlan = Some((link.index, vname.clone()));
            tracing::info!(vswitch = %name, vlan_link = %vname, "VLAN link created");
            Some(link)
        }
    };
    if let Some(port) = &port {
        enslave(rtnl, &bridge, port, "uplink")?;
    }

    // Drop the previous uplink once the new one is in place.
    if let Some((old, was_vlan)) = previous {
        if port.as_ref().map(|p| p.name.as_str()) != Some(old.as_str()) {
            if let Some(old_link) = rtnl.get_link(&old).map_err(nl_err("get", "link", &old))? {
                if old_link.master == Some(bridge.index) {
                    if was_vlan && old_link.is_vlan() {
                        rtnl.del_link(old_link.index).map_err(nl_err(
                            "delete",
                            "VLAN link",
                            &old,
                        ))?;
                    } else {
                        rtnl.set_link(
                            old_link.index,
                            &LinkChange {
                                master: Some(0),
                                ..LinkChange::default()
                            },
                        )
                        .map_err(nl_err("detach", "uplink", &old))?;
                    }
                    tracing::info!(vswitch = %name, old_uplink = %old, "previous uplink removed");
                }
            }
        }
    }

    let alias = spec.alias();
    let mut change = LinkChange::default();
    if bridge.alias.as_deref() != Some(alias.as_str()) {
        change.alias = Some(alias);
    }
    if !bridge.up {
        change.up = Some(true);
    }
    // With an uplink, the bridge carries the NIC's address, so that it
    // never changes as ports come and go and is unique on the LAN.
    if let Some(mac) = uplink_mac {
        if bridge.mac != Some(mac) {
            change.mac = Some(mac);
        }
    }
    if change.alias.is_some() || change.up.is_some() || change.mac.is_some() {
        rtnl.set_link(bridge.index, &change)
            .map_err(nl_err("configure", "vswitch", name))?;
    }
    Ok(())
}

/// Attaches `port` to `bridge` and sets it up; a no-op if already done.
pub(crate) fn enslave(
    rtnl: &mut Rtnl,
    bridge: &Link,
    port: &Link,
    what: &'static str,
) -> Result<(), NetError> {
    let mut change = LinkChange::default();
    match port.master {
        Some(m) if m == bridge.index => {}
        Some(m) => {
            return Err(NetError::Conflict {
                what,
                name: port.name.clone(),
                reason: format!(
                    "is attached to another bridge or bond (index {m}), not to {}",
                    bridge.name
                ),
            })
        }
        None => change.master = Some(bridge.index),
    }
    if !port.up {
        change.up = Some(true);
    }
    if change.master.is_some() || change.up.is_some() {
        rtnl.set_link(port.index, &change)
            .map_err(nl_err("attach", what, &port.name))?;
        tracing::debug!(bridge = %bridge.name, port = %port.name, "port attached");
    }
    Ok(())
}

/// The bridge called `name`, which must exist and be a bridge.
pub(crate) fn get_bridge(rtnl: &mut Rtnl, name: &BridgeName) -> Result<Link, NetError> {
    let link = rtnl
        .get_link(name.as_str())
        .map_err(nl_err("get", "vswitch", name.as_str()))?
        .ok_or_else(|| NetError::NotFound {
            what: "vswitch",
            name: name.to_string(),
        })?;
    if !link.is_bridge() {
        return Err(NetError::Conflict {
            what: "vswitch",
            name: name.to_string(),
            reason: format!("is a {} link, not a bridge", kind_of(&link)),
        });
    }
    Ok(link)
}

fn must_get(rtnl: &mut Rtnl, what: &'static str, name: &str) -> Result<Link, NetError> {
    rtnl.get_link(name)
        .map_err(nl_err("get", what, name))?
        .ok_or_else(|| NetError::NotFound {
            what,
            name: name.to_string(),
        })
}

fn check_uplink_nic(nic: &Link) -> Result<(), NetError> {
    let reason = if nic.is_bridge() {
        Some("is a bridge; give a physical NIC (or bond) as uplink".to_string())
    } else if nic.is_tap() {
        Some("is a tap".to_string())
    } else if !nic.ether {
        Some(format!(
            "is not an Ethernet device (a {} link)",
            kind_of(nic)
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::Conflict {
            what: "uplink",
            name: nic.name.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_free_port(
    what: &'static str,
    port: &Link,
    bridge_index: Option<u32>,
    name_of: &dyn Fn(u32) -> String,
) -> Result<(), NetError> {
    match port.master {
        Some(m) if Some(m) != bridge_index => Err(NetError::Conflict {
            what,
            name: port.name.clone(),
            reason: format!("is already attached to {}", name_of(m)),
        }),
        _ => Ok(()),
    }
}

fn kind_of(link: &Link) -> &str {
    link.kind.as_deref().unwrap_or("plain")
}

/// A stable, locally administered address for a bridge without uplink:
/// `02:6e:76` ("nv") + 3 bytes of SHA-256 of its name.
fn bridge_mac(name: &str) -> MacAddr {
    let d = Sha256::digest(format!("nasvisor-bridge-mac-v1\0{name}").as_bytes());
    MacAddr::new([0x02, 0x6e, 0x76, d[0], d[1], d[2]])
}

fn observe(name: BridgeName, bridge: &Link, links: &[Link]) -> Vswitch {
    let recorded = bridge.alias.as_deref().and_then(parse_alias);
    let uplink = recorded.and_then(|(nic, vlan)| {
        let nic = nic?;
        let port = match vlan {
            Some(vid) => vlan_link_name(&nic, vid),
            None => nic.clone(),
        };
        let attached = links
            .iter()
            .any(|l| l.name == port && l.master == Some(bridge.index));
        let carrier = links.iter().any(|l| l.name == port && l.up && l.carrier);
        Some(Uplink {
            nic,
            vlan,
            port,
            attached,
            carrier,
        })
    });
    let mut taps = Vec::new();
    let mut other_ports = Vec::new();
    for l in links.iter().filter(|l| l.master == Some(bridge.index)) {
        if l.is_tap() {
            taps.push(l.name.clone());
        } else if uplink.as_ref().map(|u| u.port.as_str()) != Some(l.name.as_str()) {
            other_ports.push(l.name.clone());
        }
    }
    taps.sort();
    other_ports.sort();
    Vswitch {
        name,
        index: bridge.index,
        up: bridge.up,
        mac: bridge.mac,
        uplink,
        taps,
        other_ports,
    }
}

#[cfg(test)]
mod tests;
