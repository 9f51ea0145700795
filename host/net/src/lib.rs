//! # nasvisor network
//!
//! Virtual switches and VM NICs, through netlink:
//!
//! - [`vswitch`]: a vswitch is a Linux bridge `nv-<name>`, optionally
//!   attached to a host NIC, untagged or on a VLAN (`<nic>.<vid>`);
//!   [`Vswitch::ensure`] is idempotent, [`Vswitch::delete`] refuses while
//!   taps are attached unless forced.
//! - [`tap`]: one persistent tap per VM NIC, named from the VM id and NIC
//!   index ([`TapName::for_vm`]), attached to a vswitch; QEMU opens it with
//!   `-netdev tap,ifname=<tap>,script=no,downscript=no`.
//! - [`mac`]: stable, unique guest MAC addresses, and checks of user-given
//!   ones.
//!
//! Everything runs in a [`Net`]: the host's network namespace or a named
//! one (`/var/run/netns/<name>`), which the tests use to stay off the host.

pub mod error;
pub mod handle;
pub mod mac;
pub mod name;
pub mod netlink;
pub mod netns;
pub mod tap;
pub mod vswitch;

pub use error::NetError;
pub use handle::Net;
pub use mac::MacAddr;
pub use name::{BridgeName, IfName, TapName};
pub use netlink::Link;
pub use tap::{Tap, TapOptions};
pub use vswitch::{Uplink, Vswitch, VswitchSpec};
