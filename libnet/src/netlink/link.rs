//! Links: `ip link ...`.

mod kinds;

pub use kinds::{MacvlanMode, NewLink, Vxlan, VXLAN_PORT};

use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Handle, NetlinkError, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// `IPV4_DEVCONF_ARP_NOTIFY` (linux/ip.h): `net.ipv4.conf.IF.arp_notify`.
pub const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
/// `IPV4_DEVCONF_PROXY_ARP` (linux/ip.h): `net.ipv4.conf.IF.proxy_arp`.
pub const IPV4_DEVCONF_PROXY_ARP: u16 = 3;

/// `IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { id: value } } }`: one IPv4 per-device setting,
/// and only that one (the kernel marks each id it is given as set by hand).
fn inet_devconf_attr(id: u16, value: u32) -> LinkAttribute {
    const IFLA_AF_SPEC: u16 = 26;
    const IFLA_INET_CONF: u16 = 1;
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut v = Vec::with_capacity(len.next_multiple_of(4));
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(len.next_multiple_of(4), 0);
        v
    }
    let conf = nla(IFLA_INET_CONF, &nla(id, &value.to_ne_bytes()));
    let inet = nla(libc::AF_INET as u16, &conf);
    LinkAttribute::Other(DefaultNla::new(IFLA_AF_SPEC, inet))
}

/// The kinds of link knit creates or inspects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Veth,
    Bridge,
    Other(String),
}

/// What the kernel says about one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mtu: u32,
    pub mac: Vec<u8>,
    pub flags: u32,
    /// Index of the bridge (or other controller) this link is a port of.
    pub master: Option<u32>,
    /// For a veth: the peer's index (in the namespace named by `link_netnsid`).
    pub peer_index: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub txqlen: u32,
    pub promiscuity: u32,
    pub allmulti: u32,
    /// For a bridge port: hairpin mode, when the kernel reported it.
    pub hairpin: Option<bool>,
    /// `ip link set ... alias A` (IFLA_IFALIAS), when set and not empty.
    pub alias: Option<String>,
    /// For a macvlan: its mode (MACVLAN_MODE_*).
    pub macvlan_mode: Option<u32>,
    /// For a vlan: its id.
    pub vlan_id: Option<u16>,
    /// For a vxlan: its settings, as [`Handle::add_vxlan`] takes them.
    pub vxlan: Option<Vxlan>,
    /// For a bridge port: `learning on|off`, when the kernel reported it.
    pub learning: Option<bool>,
    /// For a bridge port: `neigh_suppress on|off`, when the kernel reported it.
    pub neigh_suppress: Option<bool>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & LinkFlags::Up.bits() != 0
    }
    pub fn is_promisc(&self) -> bool {
        self.flags & LinkFlags::Promisc.bits() != 0
    }
    /// `aa:bb:cc:dd:ee:ff`
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff` (also `-` separated).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

/// Flags of a bridge port, set with `bridge link set dev PORT ...`; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrportFlags {
    /// `learning on|off`: whether the bridge learns source MACs seen on this port.
    pub learning: Option<bool>,
    /// `neigh_suppress on|off`: the bridge answers ARP/ND for this port from its neighbour
    /// entries instead of flooding the request through it.
    pub neigh_suppress: Option<bool>,
}

/// IFLA_BRPORT_LEARNING (linux/if_link.h)
const IFLA_BRPORT_LEARNING: u16 = 8;
/// IFLA_BRPORT_NEIGH_SUPPRESS
const IFLA_BRPORT_NEIGH_SUPPRESS: u16 = 32;

/// `RTM_SETLINK` family AF_BRIDGE with `IFLA_PROTINFO { IFLA_BRPORT_* }`, as `bridge link set`
/// sends it.
fn brport_flags_msg(index: u32, f: &BrportFlags) -> LinkMessage {
    let mut attrs = Vec::new();
    for (kind, v) in [
        (IFLA_BRPORT_LEARNING, f.learning),
        (IFLA_BRPORT_NEIGH_SUPPRESS, f.neigh_suppress),
    ] {
        if let Some(on) = v {
            attrs.push(LinkProtoInfoBridge::Other(DefaultNla::new(
                kind,
                vec![u8::from(on)],
            )));
        }
    }
    let mut m = by_index(index);
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes.push(LinkAttribute::ProtoInfoBridge(attrs));
    m
}

/// The other end of a new veth pair.
#[derive(Debug, Clone, Default)]
pub struct VethPeer<'a> {
    pub name: &'a str,
    /// Create the peer straight into this namespace (an fd), so it never appears in ours.
    pub netns_fd: Option<RawFd>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

pub(crate) fn link_from_msg(msg: LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        flags: msg.header.flags.bits(),
        ..Link::default()
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::Mtu(m) => l.mtu = m,
            LinkAttribute::Address(a) => l.mac = a,
            LinkAttribute::Controller(m) => l.master = Some(m),
            LinkAttribute::Link(p) => l.peer_index = Some(p),
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(id),
            LinkAttribute::TxQueueLen(q) => l.txqlen = q,
            LinkAttribute::Promiscuity(p) => l.promiscuity = p,
            LinkAttribute::AllMulticast(a) => l.allmulti = a,
            LinkAttribute::IfAlias(a) if !a.is_empty() => l.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(d) => kinds::read_info_data(&mut l, d),
                        LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                            for a in attrs {
                                match a {
                                    InfoBridgePort::HairpinMode(h) => l.hairpin = Some(h),
                                    InfoBridgePort::Learning(on) => l.learning = Some(on),
                                    InfoBridgePort::NeighSupress(on) => l.neigh_suppress = Some(on),
                                    _ => {}
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
    l
}

fn by_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn check_name(op: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', ':', ' ', '\0']) {
        return Err(NetlinkError::Invalid {
            op,
            object: format!("link {name:?}"),
            detail: format!(
                "interface names are 1 to {IFNAME_MAX} bytes without '/', ':' or spaces"
            ),
        });
    }
    Ok(())
}

impl Handle {
    /// `ip link show NAME`
    pub fn link_by_name(&self, name: &str) -> Result<Link> {
        check_name("get link", name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        self.one_link("get link", &|| format!("link {name}"), m)
    }

    /// `ip link show NAME` that answers `None` when there is no such link.
    pub fn find_link(&self, name: &str) -> Result<Option<Link>> {
        match self.link_by_name(name) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link show` for one index.
    pub fn link_by_index(&self, index: u32) -> Result<Link> {
        self.one_link("get link", &|| format!("link #{index}"), by_index(index))
    }

    fn one_link(&self, op: &'static str, obj: &dyn Fn() -> String, m: LinkMessage) -> Result<Link> {
        self.get(op, obj, RouteNetlinkMessage::GetLink(m))?
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from_msg(l)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NotFound { op, object: obj() })
    }

    /// `ip link show` (all links of this namespace).
    pub fn links(&self) -> Result<Vec<Link>> {
        Ok(self
            .dump(
                "dump links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from_msg(l)),
                _ => None,
            })
            .collect())
    }

    /// `ip link add NAME [mtu M] [address MAC] type veth peer name PEER [netns NS] ...`
    ///
    /// Creating the peer directly in the target namespace avoids a window in which a half-made
    /// pair is visible (and must be cleaned up) in ours.
    pub fn add_veth(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        peer: &VethPeer<'_>,
    ) -> Result<()> {
        check_name("add veth", name)?;
        check_name("add veth", peer.name)?;
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.name.into()));
        if let Some(fd) = peer.netns_fd {
            p.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        if let Some(m) = peer.mtu.or(mtu) {
            p.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(mac) = peer.mac {
            p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.exec(
            "add veth",
            &|| format!("link {name} (peer {})", peer.name),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip link add NAME [mtu M] [address MAC] type bridge`
    pub fn add_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Result<()> {
        check_name("add bridge", name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.exec(
            "add bridge",
            &|| format!("link {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip link add NAME [mtu M] txqueuelen 0 up type ifb`: an intermediate functional block,
    /// the queue that traffic redirected by a tc filter is shaped on. Created up in one message,
    /// with `txqueuelen 0` as the reference bandwidth plugin makes it.
    pub fn add_ifb(&self, name: &str, mtu: Option<u32>) -> Result<()> {
        check_name("add ifb", name)?;
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::TxQueueLen(0));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.exec(
            "add ifb",
            &|| format!("link {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip link del dev #INDEX`
    pub fn del_link(&self, index: u32) -> Result<()> {
        self.exec(
            "del link",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::DelLink(by_index(index)),
            0,
        )
    }

    /// `ip link del NAME`, where a missing link is success (tolerant teardown).
    pub fn del_link_by_name(&self, name: &str) -> Result<()> {
        check_name("del link", name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self.exec(
            "del link",
            &|| format!("link {name}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        ) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            r => r,
        }
    }

    fn set(&self, op: &'static str, index: u32, m: LinkMessage) -> Result<()> {
        self.exec(
            op,
            &|| format!("link #{index}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    fn set_flag(&self, op: &'static str, index: u32, flag: LinkFlags, on: bool) -> Result<()> {
        let mut m = by_index(index);
        m.header.change_mask = flag;
        if on {
            m.header.flags = flag;
        }
        self.set(op, index, m)
    }

    /// `ip link set #INDEX up|down`
    pub fn set_up(&self, index: u32, up: bool) -> Result<()> {
        self.set_flag("set link up/down", index, LinkFlags::Up, up)
    }

    /// `ip link set #INDEX promisc on|off`
    pub fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.set_flag("set promisc", index, LinkFlags::Promisc, on)
    }

    /// `ip link set #INDEX allmulticast on|off`
    pub fn set_allmulti(&self, index: u32, on: bool) -> Result<()> {
        self.set_flag("set allmulticast", index, LinkFlags::Allmulti, on)
    }

    fn set_attr(&self, op: &'static str, index: u32, attr: LinkAttribute) -> Result<()> {
        let mut m = by_index(index);
        m.attributes.push(attr);
        self.set(op, index, m)
    }

    /// `ip link set #INDEX mtu M`
    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set_attr("set mtu", index, LinkAttribute::Mtu(mtu))
    }

    /// `ip link set #INDEX address MAC`
    pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set_attr("set address", index, LinkAttribute::Address(mac.to_vec()))
    }

    /// One IPv4 per-device setting over netlink (`sysctl net.ipv4.conf.IF.KEY=V` without a
    /// lookup in /proc/sys, whose per-device entries of every namespace share one dcache
    /// chain: a first lookup there costs time proportional to the number of namespaces).
    pub fn set_ipv4_devconf(&self, index: u32, id: u16, value: u32) -> Result<()> {
        self.set_attr("set ipv4 devconf", index, inet_devconf_attr(id, value))
    }

    /// `ip link set #INDEX txqueuelen N`
    pub fn set_txqlen(&self, index: u32, len: u32) -> Result<()> {
        self.set_attr("set txqueuelen", index, LinkAttribute::TxQueueLen(len))
    }

    /// `ip link set #INDEX name NAME`
    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        check_name("rename link", name)?;
        self.set_attr("rename link", index, LinkAttribute::IfName(name.into()))
    }

    /// `ip link set #INDEX master #MASTER` (0 = nomaster)
    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set_attr("set master", index, LinkAttribute::Controller(master))
    }

    /// `ip link set #INDEX netns NS`
    pub fn set_netns(&self, index: u32, ns: &impl AsRawFd) -> Result<()> {
        self.set_attr(
            "move link to netns",
            index,
            LinkAttribute::NetNsFd(ns.as_raw_fd()),
        )
    }

    /// `ip link set #INDEX type bridge_slave isolated on|off`: an isolated port forwards only
    /// to non-isolated ports and the bridge itself (Docker's `enable_icc=false` on one bridge).
    pub fn set_bridge_port_isolated(&self, index: u32, on: bool) -> Result<()> {
        let mut m = by_index(index);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(on)])),
        ]));
        self.exec(
            "set bridge port isolated",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
    }

    /// `ip link set #INDEX type bridge_slave hairpin on|off [learning on|off]`
    pub fn set_bridge_port(
        &self,
        index: u32,
        hairpin: Option<bool>,
        learning: Option<bool>,
    ) -> Result<()> {
        let mut attrs = Vec::new();
        if let Some(h) = hairpin {
            attrs.push(InfoBridgePort::HairpinMode(h));
        }
        if let Some(l) = learning {
            attrs.push(InfoBridgePort::Learning(l));
        }
        if attrs.is_empty() {
            return Ok(());
        }
        let mut m = by_index(index);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(attrs)),
        ]));
        // Port attributes go through NEWLINK on an existing link, as iproute2 sends them.
        self.exec(
            "set bridge port",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::NewLink(m),
            0,
        )
    }

    /// `bridge link set dev #INDEX [learning on|off] [neigh_suppress on|off]`; read back in
    /// [`Link::learning`] and [`Link::neigh_suppress`]. The link must be a bridge port.
    pub fn set_brport_flags(&self, index: u32, flags: &BrportFlags) -> Result<()> {
        if *flags == BrportFlags::default() {
            return Ok(());
        }
        self.set(
            "set bridge port flags",
            index,
            brport_flags_msg(index, flags),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_format() {
        let m = parse_mac("0A:58:0a:f4:00:02").unwrap();
        assert_eq!(format_mac(&m), "0a:58:0a:f4:00:02");
        assert!(parse_mac("0a:58:0a:f4:00").is_none());
        assert!(parse_mac("0a:58:0a:f4:00:02:03").is_none());
        assert!(parse_mac("zz:58:0a:f4:00:02").is_none());
    }

    #[test]
    fn inet_devconf_is_one_nested_setting() {
        use netlink_packet_core::Nla;
        let LinkAttribute::Other(a) = inet_devconf_attr(IPV4_DEVCONF_ARP_NOTIFY, 1) else {
            panic!("raw attribute expected");
        };
        assert_eq!(a.kind(), 26);
        let mut v = vec![0u8; a.value_len()];
        a.emit_value(&mut v);
        let n = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let mut want = n(16, 2);
        want.extend(n(12, 1));
        want.extend(n(8, 22));
        want.extend(1u32.to_ne_bytes());
        assert_eq!(v, want);
    }

    #[test]
    fn brport_flags_are_nested_protinfo_of_family_bridge() {
        use netlink_packet_core::Emitable;
        let m = brport_flags_msg(
            5,
            &BrportFlags {
                learning: Some(false),
                neigh_suppress: Some(true),
            },
        );
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        assert_eq!(buf[0], libc::AF_BRIDGE as u8);
        assert_eq!(&buf[4..8], &5u32.to_ne_bytes());
        // IFLA_PROTINFO | NLA_F_NESTED holding IFLA_BRPORT_LEARNING=0, NEIGH_SUPPRESS=1.
        let n = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let mut want = n(20, 12 | 0x8000);
        want.extend(n(5, 8));
        want.extend([0, 0, 0, 0]);
        want.extend(n(5, 32));
        want.extend([1, 0, 0, 0]);
        assert_eq!(&buf[16..], &want[..]);
    }

    #[test]
    fn bad_names_are_invalid_before_any_syscall() {
        assert!(check_name("t", "a-name-longer-than-15").is_err());
        assert!(check_name("t", "").is_err());
        assert!(check_name("t", "../x").is_err());
        check_name("t", "eth0").unwrap();
    }
}
