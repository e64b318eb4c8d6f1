//! Forwarding database entries: `bridge fdb ...`.
//!
//! On a vxlan device an entry `MAC dst IP` tells the kernel which remote VTEP a MAC lives
//! behind; with `nolearning` these entries are the only way traffic finds a remote. A unicast
//! MAC has one remote: `replace` moves it, and `append` of a second `dst` is silently ignored
//! by the kernel. The all-zeros MAC (and multicast MACs) hold a list of remotes, the flood
//! targets: `append` adds to it, and `replace` is refused. The entries are neighbour messages
//! of family AF_BRIDGE.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::format_mac;
use super::neigh::{ip_of, mac_of, NUD_NOARP, NUD_PERMANENT};
use super::{Handle, Result};

/// One FDB entry of a device (a bridge port, or the vxlan device itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: [u8; 6],
    /// The remote VTEP (`dst IP`), for an entry of a vxlan device.
    pub dst: Option<IpAddr>,
    /// `vlan ID`
    pub vlan: Option<u16>,
    /// `self`: the entry lives in the device's own table (a vxlan device's remotes), not in
    /// the table of the bridge it is a port of (`master`).
    pub is_self: bool,
    /// NUD_* state: [`NUD_PERMANENT`] for `permanent`, `NUD_NOARP` for `static`, other
    /// values for learned entries.
    pub state: u16,
    /// The bridge the entry belongs to (NDA_MASTER), when the kernel says.
    pub master: Option<u32>,
}

impl FdbEntry {
    /// `MAC dev #INDEX dst DST self permanent`: a vxlan device's remote for `mac`.
    pub fn vxlan_remote(index: u32, mac: [u8; 6], dst: IpAddr) -> FdbEntry {
        FdbEntry {
            index,
            mac,
            dst: Some(dst),
            vlan: None,
            is_self: true,
            state: NUD_PERMANENT,
            master: None,
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }

    /// The all-zeros MAC or a multicast MAC: an entry holding a list of remotes.
    pub fn is_flood(&self) -> bool {
        self.mac == [0; 6] || self.mac[0] & 1 == 1
    }

    /// What identifies the entry in its device's table: two entries with the same key are the
    /// same entry to the kernel.
    pub fn key(&self) -> (u32, [u8; 6], Option<IpAddr>, Option<u16>) {
        (self.index, self.mac, self.dst, self.vlan)
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = format!("fdb {} dev #{}", format_mac(&self.mac), self.index);
        if let Some(d) = self.dst {
            s.push_str(&format!(" dst {d}"));
        }
        if let Some(v) = self.vlan {
            s.push_str(&format!(" vlan {v}"));
        }
        s
    }

    fn to_msg(&self) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = self.index;
        m.header.state = NeighbourState::from(self.state);
        m.header.flags = if self.is_self {
            NeighbourFlags::Own
        } else {
            NeighbourFlags::Controller
        };
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(self.mac.to_vec()));
        if let Some(dst) = self.dst {
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::from(dst)));
        }
        if let Some(v) = self.vlan {
            m.attributes.push(NeighbourAttribute::Vlan(v));
        }
        m
    }
}

/// Decode an AF_BRIDGE neighbour message.
pub(crate) fn fdb_from_msg(m: &NeighbourMessage) -> Option<FdbEntry> {
    let mut e = FdbEntry {
        index: m.header.ifindex,
        mac: [0; 6],
        dst: None,
        vlan: None,
        is_self: m.header.flags.contains(NeighbourFlags::Own),
        state: u16::from(m.header.state),
        master: None,
    };
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            NeighbourAttribute::Destination(d) => e.dst = ip_of(d),
            NeighbourAttribute::Vlan(v) => e.vlan = Some(*v),
            NeighbourAttribute::Controller(c) => e.master = Some(*c),
            _ => {}
        }
    }
    e.mac = mac?;
    Some(e)
}

/// `static` in `bridge fdb` words.
pub const FDB_STATIC: u16 = NUD_NOARP;

impl Handle {
    /// `bridge fdb append MAC dev #INDEX [dst IP] [vlan V] self|master permanent|static`:
    /// creates the entry; for the all-zeros or a multicast MAC adds one more remote to the
    /// list. The same entry again is success, and so (by the kernel's rule) is a second `dst`
    /// for a unicast MAC that already has one, which changes nothing: use
    /// [`Handle::replace_fdb`] to move a unicast MAC.
    pub fn append_fdb(&self, e: &FdbEntry) -> Result<()> {
        self.exec(
            "append fdb",
            &|| e.describe(),
            RouteNetlinkMessage::NewNeighbour(e.to_msg()),
            NLM_F_CREATE | NLM_F_APPEND,
        )
    }

    /// `bridge fdb replace MAC dev #INDEX dst IP [vlan V] self permanent`: creates the entry
    /// or points the unicast MAC at a new remote. Refused (`EOPNOTSUPP`) for an existing
    /// flood entry ([`FdbEntry::is_flood`]), whose remotes are appended and deleted one by one.
    pub fn replace_fdb(&self, e: &FdbEntry) -> Result<()> {
        self.exec(
            "replace fdb",
            &|| e.describe(),
            RouteNetlinkMessage::NewNeighbour(e.to_msg()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// `bridge fdb del MAC dev #INDEX [dst IP] [vlan V] self|master`; a missing entry (or
    /// device) is success. Without `dst`, a vxlan device drops every remote of the MAC.
    pub fn del_fdb(&self, e: &FdbEntry) -> Result<()> {
        match self.exec(
            "del fdb",
            &|| e.describe(),
            RouteNetlinkMessage::DelNeighbour(e.to_msg()),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    /// `bridge fdb show dev #INDEX`: the entries of one device (its own and, for a bridge
    /// port, the bridge's entries that point at it). Index 0 lists every device's entries.
    pub fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        // The kernel filters by the header's index (the bridge port) under strict checking.
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        req.header.ifindex = index;
        Ok(self
            .dump("dump fdb", RouteNetlinkMessage::GetNeighbour(req))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(m) => fdb_from_msg(&m),
                _ => None,
            })
            .filter(|e| index == 0 || e.index == index)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::neigh::{neigh_msg, NeighMsg};
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn vxlan_remote_is_a_self_permanent_bridge_entry_with_dst() {
        let e = FdbEntry::vxlan_remote(
            12,
            [0x0a, 0x58, 1, 2, 3, 4],
            "192.168.50.2".parse().unwrap(),
        );
        let m = e.to_msg();
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        assert_eq!(buf[0], libc::AF_BRIDGE as u8);
        assert_eq!(&buf[4..8], &12u32.to_ne_bytes());
        assert_eq!(&buf[8..10], &NUD_PERMANENT.to_ne_bytes());
        assert_eq!(buf[10], 0x02, "NTF_SELF");
        let back = NeighbourMessage::parse(buf.as_slice()).unwrap();
        assert_eq!(neigh_msg(&back), Some(NeighMsg::Fdb(e.clone())));
        assert!(e.is_permanent());
        assert_eq!(
            e.describe(),
            "fdb 0a:58:01:02:03:04 dev #12 dst 192.168.50.2"
        );
    }
}
