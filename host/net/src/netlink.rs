//! A small synchronous rtnetlink client: just the link requests this crate
//! needs (get, dump, create, change, delete), over one `NETLINK_ROUTE`
//! socket. Message encoding comes from `netlink-packet-route`.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use crate::mac::MacAddr;

/// How long to wait for the kernel's answer before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// `NLM_F_ACK_TLVS`: the error message carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's human-readable reason.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;

/// A failed netlink exchange: the kernel's errno (if it gave one) and a
/// readable reason, including the kernel's extended-ack message.
#[derive(Debug)]
pub(crate) struct NlError {
    pub errno: Option<i32>,
    pub reason: String,
}

impl NlError {
    fn io(e: io::Error) -> NlError {
        NlError {
            errno: e.raw_os_error(),
            reason: e.to_string(),
        }
    }

    fn protocol(reason: impl Into<String>) -> NlError {
        NlError {
            errno: None,
            reason: reason.into(),
        }
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind (`bridge`, `tun`, `vlan`, `veth`, ...), if it has one.
    pub kind: Option<String>,
    /// Index of the bridge (or bond) this link is enslaved to.
    pub master: Option<u32>,
    /// Index of the lower device (the parent NIC of a VLAN link).
    pub parent: Option<u32>,
    /// VLAN id, for a VLAN link.
    pub vlan_id: Option<u16>,
    /// Administratively up.
    pub up: bool,
    /// Has carrier (lower layer up).
    pub carrier: bool,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// Ethernet link layer (a tap, unlike a tun, is one).
    pub ether: bool,
    /// The interface alias (`ip link set ... alias`), if set.
    pub alias: Option<String>,
}

impl Link {
    /// Whether this is a tun/tap device in tap (Ethernet) mode.
    pub fn is_tap(&self) -> bool {
        self.kind.as_deref() == Some("tun") && self.ether
    }

    /// Whether this is a Linux bridge.
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    /// Whether this is an 802.1Q VLAN link.
    pub fn is_vlan(&self) -> bool {
        self.kind.as_deref() == Some("vlan")
    }

    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            master: None,
            parent: None,
            vlan_id: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
            mac: None,
            ether: msg.header.link_layer_type == LinkLayerType::Ether,
            alias: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    link.alias = Some(alias.clone())
                }
                LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
                LinkAttribute::Link(p) if *p != 0 => link.parent = Some(*p),
                LinkAttribute::Address(a) => {
                    link.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr::new)
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::Data(InfoData::Vlan(vlan)) => {
                                for v in vlan {
                                    if let InfoVlan::Id(id) = v {
                                        link.vlan_id = Some(*id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A change to an existing link (`RTM_SETLINK`).
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkChange {
    pub up: Option<bool>,
    /// `Some(0)` detaches from any master.
    pub master: Option<u32>,
    pub mac: Option<MacAddr>,
    /// An empty alias clears it.
    pub alias: Option<String>,
}

/// A new link (`RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL`).
#[derive(Debug, Clone)]
pub(crate) enum NewLink {
    Bridge { name: String, mac: Option<MacAddr> },
    Vlan { name: String, parent: u32, vid: u16 },
}

impl NewLink {
    pub fn message(&self) -> LinkMessage {
        let mut msg = LinkMessage::default();
        match self {
            NewLink::Bridge { name, mac } => {
                msg.attributes.push(LinkAttribute::IfName(name.clone()));
                if let Some(mac) = mac {
                    msg.attributes
                        .push(LinkAttribute::Address(mac.octets().to_vec()));
                }
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                        InfoKind::Bridge,
                    )]));
            }
            NewLink::Vlan { name, parent, vid } => {
                msg.attributes.push(LinkAttribute::IfName(name.clone()));
                msg.attributes.push(LinkAttribute::Link(*parent));
                msg.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(*vid)])),
                ]));
            }
        }
        msg
    }
}

/// A `NETLINK_ROUTE` socket, bound in the namespace it was opened in.
#[derive(Debug)]
pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these, and only the error text
        // suffers.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(&socket, RECV_TIMEOUT)?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// The link called `name`, or `None`.
    pub fn get_link(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a link; fails with `EEXIST` if the name is taken.
    pub fn new_link(&mut self, new: &NewLink) -> Result<(), NlError> {
        self.request(
            RouteNetlinkMessage::NewLink(new.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Changes flags, master or address of the link at `index`.
    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = change.up {
            msg.header.change_mask |= LinkFlags::Up;
            if up {
                msg.header.flags |= LinkFlags::Up;
            }
        }
        if let Some(master) = change.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(mac) = change.mac {
            msg.attributes
                .push(LinkAttribute::Address(mac.octets().to_vec()));
        }
        if let Some(alias) = &change.alias {
            msg.attributes.push(LinkAttribute::IfAlias(alias.clone()));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
    }

    /// Deletes the link at `index`.
    pub fn del_link(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
    }

    /// Sends one request and collects the replies up to its ack, its error
    /// or the end of its dump.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NlError::io)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(NlError::io)?;
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| NlError::protocol(format!("bad netlink reply: {e}")))?
                    .length() as usize;
                if len < NLMSG_HDR_LEN || len > bytes.len() {
                    return Err(NlError::protocol("truncated netlink reply"));
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| NlError::protocol(format!("bad netlink reply: {e}")))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a stale answer to an abandoned request
                }
                let reply_flags = msg.header.flags;
                match msg.payload {
                    NetlinkPayload::Error(err) => match err.code {
                        None => return Ok(replies),
                        Some(code) => {
                            let errno = code.get().abs();
                            let mut reason = io::Error::from_raw_os_error(errno).to_string();
                            if reply_flags & NLM_F_ACK_TLVS != 0 {
                                if let Some(extack) = extack_message(&err.header) {
                                    reason = format!("{reason}: {extack}");
                                }
                            }
                            return Err(NlError {
                                errno: Some(errno),
                                reason,
                            });
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump && !ack {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Overrun(_) => return Err(NlError::protocol("netlink overrun")),
                    _ => {}
                }
            }
        }
    }
}

/// The kernel's extended-ack text: `NLMSGERR_ATTR_MSG` after the (capped)
/// original header.
fn extack_message(after_code: &[u8]) -> Option<String> {
    let tlvs = after_code.get(NLMSG_HDR_LEN..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla: NlaBuffer<&[u8]> = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let text = nla.value().split(|b| *b == 0).next()?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the socket descriptor is valid for the duration of the call,
    // and `tv` is a properly initialised `timeval` whose exact size is passed
    // as the option length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn roundtrip(msg: &LinkMessage) -> LinkMessage {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        LinkMessage::parse(&buf[..]).unwrap()
    }

    #[test]
    fn vlan_message_carries_parent_and_id() {
        let msg = NewLink::Vlan {
            name: "eth0.42".into(),
            parent: 7,
            vid: 42,
        }
        .message();
        let link = Link::from_message(&roundtrip(&msg));
        assert_eq!(link.name, "eth0.42");
        assert_eq!(link.parent, Some(7));
        assert_eq!(link.vlan_id, Some(42));
        assert!(link.is_vlan());
    }

    #[test]
    fn bridge_message_carries_kind_and_mac() {
        let mac: MacAddr = "52:54:00:aa:bb:cc".parse().unwrap();
        let msg = NewLink::Bridge {
            name: "nv-lan0".into(),
            mac: Some(mac),
        }
        .message();
        let link = Link::from_message(&roundtrip(&msg));
        assert_eq!(link.name, "nv-lan0");
        assert_eq!(link.mac, Some(mac));
        assert!(link.is_bridge());
    }

    #[test]
    fn extack_text_is_extracted() {
        let mut buf = vec![0u8; NLMSG_HDR_LEN];
        let text = b"Unknown device type\0";
        let len = 4 + text.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        buf.extend_from_slice(text);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
        assert_eq!(extack_message(&buf).as_deref(), Some("Unknown device type"));
    }
}
