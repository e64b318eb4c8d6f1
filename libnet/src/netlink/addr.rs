//! Addresses: `ip addr ...`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Handle, Result};

/// One address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: IpNet,
    /// IFA_F_* flags (tentative, nodad, permanent, ...).
    pub flags: u32,
    pub scope: u8,
}

pub const IFA_F_NODAD: u32 = 0x02;
pub const IFA_F_TENTATIVE: u32 = 0x40;
pub const IFA_F_DADFAILED: u32 = 0x08;

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn msg_for(index: u32, net: &IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.addr());
    m.header.prefix_len = net.prefix_len();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.addr()));
    m.attributes.push(AddressAttribute::Address(net.addr()));
    m
}

/// The broadcast address `ip addr add ... brd +` would set (none for /31 and /32).
pub fn broadcast_of(net: &IpNet) -> Option<Ipv4Addr> {
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => Some(n.broadcast()),
        _ => None,
    }
}

impl Handle {
    /// `ip addr add NET [brd +] dev #INDEX [nodad]`; an address that is already there is
    /// an `Exists` error (callers that want idempotence use [`Handle::replace_addr`]).
    pub fn add_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        self.addr_req(index, net, nodad, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip addr replace NET dev #INDEX`
    pub fn replace_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        self.addr_req(index, net, nodad, NLM_F_CREATE | NLM_F_REPLACE)
    }

    fn addr_req(&self, index: u32, net: IpNet, nodad: bool, flags: u16) -> Result<()> {
        let mut m = msg_for(index, &net);
        if let Some(b) = broadcast_of(&net) {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
        if nodad && net.addr().is_ipv6() {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        m.header.scope = AddressScope::Universe;
        self.exec(
            "add address",
            &|| format!("{net} on link #{index}"),
            RouteNetlinkMessage::NewAddress(m),
            flags,
        )
    }

    /// `ip addr del NET dev #INDEX`; a missing address is success.
    pub fn del_addr(&self, index: u32, net: IpNet) -> Result<()> {
        match self.exec(
            "del address",
            &|| format!("{net} on link #{index}"),
            RouteNetlinkMessage::DelAddress(msg_for(index, &net)),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    /// `ip addr show [dev #INDEX]` (index 0 = every link).
    pub fn addrs(&self, index: u32) -> Result<Vec<Addr>> {
        // With NETLINK_GET_STRICT_CHK the kernel dumps only this link's addresses; the filter
        // below stays for kernels without it.
        let mut req = AddressMessage::default();
        req.header.index = index;
        let msgs = self.dump("dump addresses", RouteNetlinkMessage::GetAddress(req))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => addr_from_msg(a),
                _ => None,
            })
            .filter(|a| index == 0 || a.index == index)
            .collect())
    }
}

/// Decode one RTM_NEWADDR/RTM_DELADDR message.
pub(crate) fn addr_from_msg(a: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(a.header.flags.bits());
    for attr in a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    let net = IpNet::new(local.or(address)?, a.header.prefix_len).ok()?;
    Some(Addr {
        index: a.header.index,
        net,
        flags,
        scope: a.header.scope.into(),
    })
}
