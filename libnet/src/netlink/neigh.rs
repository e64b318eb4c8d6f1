//! Neighbour (ARP/NDP) entries: `ip neigh ...`.
//!
//! The overlay pins the MAC of each remote gateway with a permanent entry on the vxlan device
//! (`ip neigh replace IP lladdr MAC dev vxlan0 nud permanent`), so no ARP ever crosses the
//! tunnel. FDB entries travel in the same message type with family AF_BRIDGE; they are in
//! [`super::fdb`].

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::fdb::{fdb_from_msg, FdbEntry};
use super::link::format_mac;
use super::{Handle, NetlinkError, Result};

/// `NUD_PERMANENT`: never expires, never re-resolved.
pub const NUD_PERMANENT: u16 = 0x80;
/// `NUD_NOARP`
pub const NUD_NOARP: u16 = 0x40;
/// `NUD_REACHABLE`
pub const NUD_REACHABLE: u16 = 0x02;

/// One neighbour entry of an IPv4 or IPv6 neighbour table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neigh {
    pub index: u32,
    pub ip: IpAddr,
    /// The link-layer address; `None` for an entry still resolving or failed.
    pub mac: Option<[u8; 6]>,
    /// NUD_* state bits ([`NUD_PERMANENT`], ...).
    pub state: u16,
}

impl Neigh {
    /// A permanent entry `IP lladdr MAC dev #INDEX nud permanent`.
    pub fn permanent(index: u32, ip: IpAddr, mac: [u8; 6]) -> Neigh {
        Neigh {
            index,
            ip,
            mac: Some(mac),
            state: NUD_PERMANENT,
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }

    fn describe(&self) -> String {
        match self.mac {
            Some(m) => format!(
                "neigh {} lladdr {} dev #{}",
                self.ip,
                format_mac(&m),
                self.index
            ),
            None => format!("neigh {} dev #{}", self.ip, self.index),
        }
    }

    fn to_msg(&self) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = match self.ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.ifindex = self.index;
        m.header.state = NeighbourState::from(self.state);
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                self.ip,
            )));
        if let Some(mac) = self.mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        m
    }
}

/// A neighbour message decoded: an IP neighbour, an FDB entry (family AF_BRIDGE), or neither
/// (a proxy entry, another family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighMsg {
    Neigh(Neigh),
    Fdb(FdbEntry),
}

pub(crate) fn mac_of(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

pub(crate) fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // An AF_BRIDGE message carries its `dst` as raw bytes: the length tells the family.
        NeighbourAddress::Other(v) => match v.len() {
            4 => <[u8; 4]>::try_from(v.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(v.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

/// Decode one RTM_NEWNEIGH/RTM_DELNEIGH message.
pub fn neigh_msg(m: &NeighbourMessage) -> Option<NeighMsg> {
    if m.header.family == AddressFamily::Bridge {
        return fdb_from_msg(m).map(NeighMsg::Fdb);
    }
    if m.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = ip_of(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    Some(NeighMsg::Neigh(Neigh {
        index: m.header.ifindex,
        ip: ip?,
        mac,
        state: u16::from(m.header.state),
    }))
}

impl Handle {
    /// `ip neigh add IP lladdr MAC dev #INDEX nud STATE`; an existing entry is `Exists`.
    pub fn add_neigh(&self, n: &Neigh) -> Result<()> {
        self.neigh_req("add neigh", n, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip neigh replace IP lladdr MAC dev #INDEX nud STATE` (e.g. `nud permanent`).
    pub fn replace_neigh(&self, n: &Neigh) -> Result<()> {
        self.neigh_req("replace neigh", n, NLM_F_CREATE | NLM_F_REPLACE)
    }

    fn neigh_req(&self, op: &'static str, n: &Neigh, flags: u16) -> Result<()> {
        if n.mac.is_none() {
            return Err(NetlinkError::Invalid {
                op,
                object: n.describe(),
                detail: "a neighbour entry needs a link-layer address".into(),
            });
        }
        self.exec(
            op,
            &|| n.describe(),
            RouteNetlinkMessage::NewNeighbour(n.to_msg()),
            flags,
        )
    }

    /// `ip neigh del IP dev #INDEX`; a missing entry (or link) is success.
    pub fn del_neigh(&self, n: &Neigh) -> Result<()> {
        let mut m = n.to_msg();
        m.header.state = NeighbourState::None;
        m.attributes
            .retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
        match self.exec(
            "del neigh",
            &|| n.describe(),
            RouteNetlinkMessage::DelNeighbour(m),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    /// `ip neigh show [dev #INDEX]` (index 0 = every link), IPv4 and IPv6.
    pub fn neighs(&self, index: u32) -> Result<Vec<Neigh>> {
        // Strict checking wants the link filter as NDA_IFINDEX, not in the header; the filter
        // below stays for kernels that ignore it.
        let mut req = NeighbourMessage::default();
        if index != 0 {
            req.attributes.push(NeighbourAttribute::IfIndex(index));
        }
        Ok(self
            .dump("dump neighbours", RouteNetlinkMessage::GetNeighbour(req))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(m) => match neigh_msg(&m) {
                    Some(NeighMsg::Neigh(n)) => Some(n),
                    _ => None,
                },
                _ => None,
            })
            .filter(|n| index == 0 || n.index == index)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn permanent_neigh_round_trips_through_the_wire_format() {
        let n = Neigh::permanent(7, "10.244.3.1".parse().unwrap(), [0x0a, 0x58, 0, 0, 0, 9]);
        let m = n.to_msg();
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // struct ndmsg: family AF_INET, ifindex 7, state NUD_PERMANENT.
        assert_eq!(buf[0], libc::AF_INET as u8);
        assert_eq!(&buf[4..8], &7u32.to_ne_bytes());
        assert_eq!(&buf[8..10], &NUD_PERMANENT.to_ne_bytes());
        let back = NeighbourMessage::parse(buf.as_slice()).unwrap();
        assert_eq!(neigh_msg(&back), Some(NeighMsg::Neigh(n.clone())));
        assert!(n.is_permanent());
    }
}
