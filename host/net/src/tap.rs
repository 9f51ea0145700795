//! Taps: one persistent tap device per VM NIC, attached to a vswitch.
//!
//! The tap is created with the `TUNSETIFF` and `TUNSETPERSIST` ioctls on
//! `/dev/net/tun` (the kernel does not create tun/tap devices through
//! netlink), opened inside the target namespace; everything else (attach,
//! up, address, delete) goes through netlink. QEMU then opens it by name:
//! `-netdev tap,id=<id>,ifname=<tap>,script=no,downscript=no`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use serde::Serialize;

use crate::error::NetError;
use crate::handle::{nl_err, Net};
use crate::mac::MacAddr;
use crate::name::{BridgeName, TapName};
use crate::netlink::{Link, LinkChange, Rtnl};
use crate::vswitch::{enslave, get_bridge};

/// The clone device of the tun/tap driver.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// How to create a tap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// User allowed to open the tap (for a QEMU that does not run as root).
    pub owner: Option<u32>,
    /// Group allowed to open the tap.
    pub group: Option<u32>,
    /// Address of the host side of the tap. Use the guest's
    /// [`MacAddr::host_side`] so the bridge never adopts it.
    pub mac: Option<MacAddr>,
    /// Multi-queue tap (QEMU `queues=N`); QEMU must then ask for
    /// multi-queue too.
    pub multi_queue: bool,
}

/// A tap as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tap {
    /// The tap's name.
    pub name: TapName,
    /// Interface index.
    pub index: u32,
    /// Name of the bridge it is attached to, if any.
    pub bridge: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Has carrier: a process (QEMU) has it open.
    pub carrier: bool,
    /// Host-side address.
    pub mac: Option<MacAddr>,
}

impl Tap {
    /// Creates tap `name`, attaches it to vswitch `bridge` and sets it up.
    /// Fails if `name` exists. Nothing is left behind on failure.
    pub fn create(net: &Net, name: &TapName, bridge: &BridgeName) -> Result<Tap, NetError> {
        Tap::create_with(net, name, bridge, &TapOptions::default())
    }

    /// [`Tap::create`] with options.
    pub fn create_with(
        net: &Net,
        name: &TapName,
        bridge: &BridgeName,
        options: &TapOptions,
    ) -> Result<Tap, NetError> {
        let mut rtnl = net.lock();
        let bridge_link = get_bridge(&mut rtnl, bridge)?;
        if rtnl
            .get_link(name.as_str())
            .map_err(nl_err("get", "tap", name.as_str()))?
            .is_some()
        {
            return Err(NetError::Exists {
                what: "tap",
                name: name.to_string(),
            });
        }
        create_tap(&mut rtnl, net, name, &bridge_link, options)
    }

    /// Makes sure tap `name` exists, is attached to `bridge` and is up,
    /// reusing an existing tap (for instance one a running VM holds).
    /// `options` apply only when the tap is created; the address is
    /// set on an existing tap too. A non-tap link of that name is a
    /// conflict, as is a tap attached to another bridge.
    pub fn ensure(
        net: &Net,
        name: &TapName,
        bridge: &BridgeName,
        options: &TapOptions,
    ) -> Result<Tap, NetError> {
        let mut rtnl = net.lock();
        let bridge_link = get_bridge(&mut rtnl, bridge)?;
        let Some(link) =
            rtnl.get_link(name.as_str())
                .map_err(nl_err("get", "tap", name.as_str()))?
        else {
            return create_tap(&mut rtnl, net, name, &bridge_link, options);
        };
        check_is_tap(&link)?;
        if let Some(mac) = options.mac.filter(|m| link.mac != Some(*m)) {
            set_mac(&mut rtnl, &link, mac, name.as_str())?;
        }
        enslave(&mut rtnl, &bridge_link, &link, "tap")?;
        observe(&mut rtnl, name)
    }

    /// The tap called `name`, if it exists. A non-tap link of that name is
    /// a conflict.
    pub fn get(net: &Net, name: &TapName) -> Result<Option<Tap>, NetError> {
        let mut rtnl = net.lock();
        match rtnl
            .get_link(name.as_str())
            .map_err(nl_err("get", "tap", name.as_str()))?
        {
            None => Ok(None),
            Some(link) => {
                check_is_tap(&link)?;
                observe(&mut rtnl, name).map(Some)
            }
        }
    }

    /// Deletes tap `name` (detaching it). Returns whether it existed. A
    /// non-tap link of that name is a conflict and is left alone.
    pub fn delete(net: &Net, name: &TapName) -> Result<bool, NetError> {
        let mut rtnl = net.lock();
        let Some(link) =
            rtnl.get_link(name.as_str())
                .map_err(nl_err("get", "tap", name.as_str()))?
        else {
            return Ok(false);
        };
        check_is_tap(&link)?;
        match rtnl.del_link(link.index) {
            Ok(()) => {}
            Err(e) if e.is(libc::ENODEV) => return Ok(false),
            Err(e) => return Err(nl_err("delete", "tap", name.as_str())(e)),
        }
        tracing::info!(tap = %name, "tap deleted");
        Ok(true)
    }

    /// The QEMU `-netdev` value for this tap: QEMU opens the existing tap
    /// by name and runs no scripts.
    pub fn qemu_netdev(&self, id: &str) -> String {
        format!("tap,id={id},ifname={},script=no,downscript=no", self.name)
    }
}

fn check_is_tap(link: &Link) -> Result<(), NetError> {
    if link.is_tap() {
        return Ok(());
    }
    Err(NetError::Conflict {
        what: "tap",
        name: link.name.clone(),
        reason: format!(
            "is a {} link, not a tap",
            link.kind.as_deref().unwrap_or("plain")
        ),
    })
}

fn create_tap(
    rtnl: &mut Rtnl,
    net: &Net,
    name: &TapName,
    bridge: &Link,
    options: &TapOptions,
) -> Result<Tap, NetError> {
    let tap_name = name.as_str().to_string();
    let opts = options.clone();
    net.run_in(move || make_persistent_tap(&tap_name, &opts))?
        .map_err(|(op, source)| NetError::Io {
            op,
            what: "tap",
            name: name.to_string(),
            source,
        })?;
    tracing::info!(tap = %name, bridge = %bridge.name, "tap created");
    let configured = (|| {
        let link = rtnl
            .get_link(name.as_str())
            .map_err(nl_err("get", "tap", name.as_str()))?
            .ok_or_else(|| NetError::NotFound {
                what: "tap",
                name: name.to_string(),
            })?;
        if let Some(mac) = options.mac {
            set_mac(rtnl, &link, mac, name.as_str())?;
        }
        enslave(rtnl, bridge, &link, "tap")?;
        observe(rtnl, name)
    })();
    if configured.is_err() {
        if let Ok(Some(link)) = rtnl.get_link(name.as_str()) {
            if let Err(e) = rtnl.del_link(link.index) {
                tracing::warn!(tap = %name, error = %e.reason, "rollback: cannot delete tap");
            }
        }
    }
    configured
}

fn observe(rtnl: &mut Rtnl, name: &TapName) -> Result<Tap, NetError> {
    let link = rtnl
        .get_link(name.as_str())
        .map_err(nl_err("get", "tap", name.as_str()))?
        .ok_or_else(|| NetError::NotFound {
            what: "tap",
            name: name.to_string(),
        })?;
    let bridge = match link.master {
        None => None,
        Some(m) => {
            let links = rtnl
                .links()
                .map_err(nl_err("get", "bridge of tap", name.as_str()))?;
            links.into_iter().find(|l| l.index == m).map(|l| l.name)
        }
    };
    Ok(Tap {
        name: name.clone(),
        index: link.index,
        bridge,
        up: link.up,
        carrier: link.carrier,
        mac: link.mac,
    })
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags.
fn ifreq(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (a byte array and a union of
    // integers, arrays and a pointer) for which all-zero bytes are a valid
    // value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is at most 15 bytes (checked by `TapName`), so the last byte
    // stays NUL.
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    req
}

/// Creates persistent tap `name` in the calling thread's namespace, owned by
/// `options.owner`/`group`. On failure, says which step failed.
fn make_persistent_tap(name: &str, options: &TapOptions) -> Result<(), (&'static str, io::Error)> {
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| ("open /dev/net/tun for", e))?;
    let fd = tun.as_raw_fd();
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if options.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    let mut req = ifreq(name, flags as libc::c_short);
    // SAFETY: `fd` is an open /dev/net/tun descriptor owned by `tun`, and
    // `req` is a valid, writable `ifreq` that outlives the call, as
    // TUNSETIFF requires.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut libc::ifreq) } < 0 {
        return Err(("create (TUNSETIFF)", io::Error::last_os_error()));
    }
    // From here on the device exists; if a later step fails, closing `tun`
    // without TUNSETPERSIST removes it again.
    if let Some(uid) = options.owner {
        // SAFETY: TUNSETOWNER takes the uid by value; `fd` is valid.
        if unsafe { libc::ioctl(fd, libc::TUNSETOWNER, uid as libc::c_ulong) } < 0 {
            return Err(("set owner (TUNSETOWNER) of", io::Error::last_os_error()));
        }
    }
    if let Some(gid) = options.group {
        // SAFETY: TUNSETGROUP takes the gid by value; `fd` is valid.
        if unsafe { libc::ioctl(fd, libc::TUNSETGROUP, gid as libc::c_ulong) } < 0 {
            return Err(("set group (TUNSETGROUP) of", io::Error::last_os_error()));
        }
    }
    // SAFETY: TUNSETPERSIST takes a flag by value; `fd` is valid.
    if unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err((
            "make persistent (TUNSETPERSIST)",
            io::Error::last_os_error(),
        ));
    }
    drop(tun);
    Ok(())
}

/// Sets the host-side MAC address of a tap.
fn set_mac(rtnl: &mut Rtnl, link: &Link, mac: MacAddr, name: &str) -> Result<(), NetError> {
    rtnl.set_link(
        link.index,
        &LinkChange {
            mac: Some(mac),
            ..LinkChange::default()
        },
    )
    .map_err(nl_err("set address of", "tap", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_carries_name_and_flags() {
        let req = ifreq("nvt0123456789-1", 0x1002);
        let name: Vec<u8> = req.ifr_name.iter().map(|c| *c as u8).collect();
        assert_eq!(&name[..15], b"nvt0123456789-1");
        assert_eq!(name[15], 0);
        // SAFETY: `ifreq` wrote `ifru_flags`, so reading that field of the
        // union reads initialised memory of the right type.
        assert_eq!(unsafe { req.ifr_ifru.ifru_flags }, 0x1002);
    }

    #[test]
    fn qemu_netdev_uses_the_name_and_no_scripts() {
        let tap = Tap {
            name: TapName::for_vm("vm-1", 0).unwrap(),
            index: 1,
            bridge: None,
            up: true,
            carrier: false,
            mac: None,
        };
        assert_eq!(
            tap.qemu_netdev("net0"),
            format!("tap,id=net0,ifname={},script=no,downscript=no", tap.name)
        );
    }
}
