//! `u32` filters that classify by an IPv4 or IPv6 address prefix:
//! `tc filter add dev D parent 1: protocol ip prio 16 u32 match ip dst 10.0.0.0/8 flowid 1:1`
//! (and `protocol ipv6 ... match ip6 dst ...`).

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::tc_msg;
use crate::netlink::{Handle, Result};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Which address of the IP header a prefix filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    Src,
    Dst,
}

/// A prefix filter: packets of `net`'s family whose `field` lies in `net` go to `class_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixFilter {
    pub net: IpNet,
    pub field: AddrField,
    /// The class (`flowid`) matching packets go to.
    pub class_id: u32,
    /// `pref`; u32 keeps one filter list per (priority, protocol), so IPv4 and IPv6 filters
    /// need different priorities.
    pub priority: u16,
}

impl PrefixFilter {
    /// The ethertype the filter is attached for (host order).
    pub fn protocol(&self) -> u16 {
        match self.net {
            IpNet::V4(_) => ETH_P_IP,
            IpNet::V6(_) => ETH_P_IPV6,
        }
    }

    /// The u32 keys (mask, value, offset from the network header) that match the prefix: one
    /// per 32-bit word the mask touches, as `tc ... match ip[6] src|dst` makes them. A /0 gives
    /// the single match-all key.
    pub fn keys(&self) -> Vec<TcU32Key> {
        let (addr, mask, base): (Vec<u8>, Vec<u8>, i32) = match (self.net, self.field) {
            (IpNet::V4(n), f) => (
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
                if f == AddrField::Src { 12 } else { 16 },
            ),
            (IpNet::V6(n), f) => (
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
                if f == AddrField::Src { 8 } else { 24 },
            ),
        };
        let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut keys: Vec<TcU32Key> = (0..addr.len() / 4)
            .filter_map(|i| {
                let m = word(&mask[i * 4..]);
                (m != 0).then(|| {
                    let mut k = TcU32Key::default();
                    k.mask = m;
                    k.val = word(&addr[i * 4..]) & m;
                    k.off = base + 4 * i as i32;
                    k
                })
            })
            .collect();
        if keys.is_empty() {
            keys.push(TcU32Key::default());
        }
        keys
    }

    /// The `RTM_NEWTFILTER` message for this filter under `parent` on link `index`.
    pub(super) fn msg(&self, index: u32, parent: u32) -> TcMessage {
        let mut m = tc_msg(index, parent, 0);
        m.header.info = (u32::from(self.priority) << 16) | u32::from(self.protocol().to_be());
        let keys = self.keys();
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = keys.len() as u8;
        sel.keys = keys;
        m.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(sel)),
                TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(self.class_id))),
            ]),
        ];
        m
    }
}

impl Handle {
    /// `tc filter add dev #INDEX parent PARENT protocol ip|ipv6 prio P u32 match ip|ip6
    /// src|dst NET flowid CLASS`.
    pub fn add_prefix_filter(&self, index: u32, parent: u32, f: &PrefixFilter) -> Result<()> {
        self.exec(
            "add u32 prefix filter",
            &|| {
                format!(
                    "link #{index} ({:?} {} to {:#x})",
                    f.field, f.net, f.class_id
                )
            },
            RouteNetlinkMessage::NewTrafficFilter(f.msg(index, parent)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter_from_msg;
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn key(mask: u32, val: u32, off: i32) -> TcU32Key {
        let mut k = TcU32Key::default();
        (k.mask, k.val, k.off) = (mask, val, off);
        k
    }

    fn filter(net: &str, field: AddrField) -> PrefixFilter {
        PrefixFilter {
            net: net.parse().unwrap(),
            field,
            class_id: 0x0001_0001,
            priority: 16,
        }
    }

    #[test]
    fn ipv4_keys_are_those_of_tc_match_ip() {
        // `tc filter add ... match ip dst 10.244.3.7/24` shows `match 0af40300/ffffff00 at 16`.
        let f = filter("10.244.3.7/24", AddrField::Dst);
        assert_eq!(f.keys(), vec![key(0xffff_ff00, 0x0af4_0300, 16)]);
        let f = filter("10.244.3.7/32", AddrField::Src);
        assert_eq!(f.keys(), vec![key(0xffff_ffff, 0x0af4_0307, 12)]);
        assert_eq!(f.protocol(), 0x0800);
        assert_eq!(
            filter("0.0.0.0/0", AddrField::Dst).keys(),
            vec![key(0, 0, 0)]
        );
    }

    #[test]
    fn ipv6_keys_cover_only_masked_words() {
        let f = filter("fd00:6b6e:1::/52", AddrField::Dst);
        assert_eq!(
            f.keys(),
            vec![
                key(0xffff_ffff, 0xfd00_6b6e, 24),
                key(0xffff_f000, 0x0001_0000, 28)
            ]
        );
        let f = filter("fd00:6b6e::5/128", AddrField::Src);
        let offs: Vec<i32> = f.keys().iter().map(|k| k.off).collect();
        assert_eq!(offs, vec![8, 12, 16, 20]);
        assert_eq!(f.keys()[3].val, 5);
        assert_eq!(f.protocol(), 0x86DD);
    }

    #[test]
    fn message_parses_back() {
        let f = filter("fd00:6b6e::/48", AddrField::Src);
        let m = f.msg(7, 0x0001_0000);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let back = filter_from_msg(TcMessage::parse(&buf).unwrap());
        assert_eq!(back.kind, "u32");
        assert_eq!(back.priority, 16);
        assert_eq!(back.protocol, 0x86DD);
        assert_eq!(back.parent, 0x0001_0000);
        assert_eq!(back.class_id, Some(0x0001_0001));
        assert_eq!(back.keys, f.keys());
        assert_eq!(m.header.info & 0xffff, 0xDD86, "protocol in network order");
    }
}
