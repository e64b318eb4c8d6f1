//! Virtual link kinds made for containers and the overlay: macvlan, vlan, dummy, vxlan; and
//! the link alias.
//!
//! Each message is built by a pure function (`*_msg`) so that its attributes can be checked
//! without root, which matters for the kinds this kernel lacks (vlan, dummy); the `Handle`
//! methods only send what the builders return.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVlan, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{check_name, Link};
use crate::netlink::{Handle, Result};

/// `ip link add ... type macvlan mode MODE`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    Private,
    Vepa,
    #[default]
    Bridge,
    Passthru,
}

impl MacvlanMode {
    /// The names the reference plugin accepts; empty means bridge.
    pub fn parse(s: &str) -> Option<MacvlanMode> {
        Some(match s {
            "" | "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
        }
    }

    /// MACVLAN_MODE_* as the kernel reports it in [`Link::macvlan_mode`].
    pub fn bits(self) -> u32 {
        u32::from(self.nl())
    }

    fn nl(self) -> MacVlanMode {
        match self {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        }
    }
}

/// The common part of a new link: its name and where it is born.
#[derive(Debug, Clone, Default)]
pub struct NewLink<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Create the link straight into this namespace (`netns NS`): it never shows up in ours.
    pub netns_fd: Option<RawFd>,
}

impl NewLink<'_> {
    fn msg(&self, kind: InfoKind, parent: Option<u32>, data: Option<InfoData>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(self.name.into()));
        if let Some(p) = parent {
            m.attributes.push(LinkAttribute::Link(p));
        }
        if let Some(mtu) = self.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = self.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(fd) = self.netns_fd {
            m.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut info = vec![LinkInfo::Kind(kind)];
        info.extend(data.map(LinkInfo::Data));
        m.attributes.push(LinkAttribute::LinkInfo(info));
        m
    }
}

/// `ip link add NAME link #PARENT [mtu M] [address MAC] [netns NS] type macvlan mode MODE`
pub fn macvlan_msg(l: &NewLink<'_>, parent: u32, mode: MacvlanMode) -> LinkMessage {
    let data = InfoData::MacVlan(vec![InfoMacVlan::Mode(mode.nl())]);
    l.msg(InfoKind::MacVlan, Some(parent), Some(data))
}

/// `ip link add NAME link #PARENT [mtu M] [address MAC] [netns NS] type vlan id ID`
pub fn vlan_msg(l: &NewLink<'_>, parent: u32, id: u16) -> LinkMessage {
    l.msg(
        InfoKind::Vlan,
        Some(parent),
        Some(InfoData::Vlan(vec![InfoVlan::Id(id)])),
    )
}

/// `ip link add NAME [mtu M] [address MAC] [netns NS] type dummy`
pub fn dummy_msg(l: &NewLink<'_>) -> LinkMessage {
    l.msg(InfoKind::Dummy, None, None)
}

/// The settings of a vxlan link: what `ip link add ... type vxlan` takes and what
/// `ip -d link show` reports back (in [`Link::vxlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// `id VNI`
    pub vni: u32,
    /// `local IP`: the source address of the encapsulated packets (this host's VTEP).
    pub local: Option<IpAddr>,
    /// `dstport PORT` (UDP; 4789 is IANA's, the kernel's default is 8472).
    pub port: u16,
    /// `learning` / `nolearning`: an overlay programs every remote itself, so `false`.
    pub learning: bool,
    /// `dev #INDEX`: the underlay link the packets leave through.
    pub link: Option<u32>,
}

/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// `ip link add NAME [mtu M] [address MAC] [netns NS] type vxlan id VNI [local IP]
/// dstport PORT [no]learning [dev #INDEX]`
pub fn vxlan_msg(l: &NewLink<'_>, v: &Vxlan) -> LinkMessage {
    let mut data = vec![InfoVxlan::Id(v.vni)];
    match v.local {
        Some(IpAddr::V4(a)) => data.push(InfoVxlan::Local(a)),
        Some(IpAddr::V6(a)) => data.push(InfoVxlan::Local6(a)),
        None => {}
    }
    if let Some(dev) = v.link {
        data.push(InfoVxlan::Link(dev));
    }
    data.push(InfoVxlan::Port(v.port));
    data.push(InfoVxlan::Learning(v.learning));
    l.msg(InfoKind::Vxlan, None, Some(InfoData::Vxlan(data)))
}

/// Fill the kind-specific fields of [`Link`] from IFLA_INFO_DATA.
pub(super) fn read_info_data(l: &mut Link, d: InfoData) {
    match d {
        InfoData::MacVlan(attrs) => {
            for a in attrs {
                if let InfoMacVlan::Mode(m) = a {
                    l.macvlan_mode = Some(u32::from(m));
                }
            }
        }
        InfoData::Vlan(attrs) => {
            for a in attrs {
                if let InfoVlan::Id(id) = a {
                    l.vlan_id = Some(id);
                }
            }
        }
        InfoData::Vxlan(attrs) => {
            let mut v = Vxlan {
                vni: 0,
                local: None,
                port: 0,
                learning: true,
                link: None,
            };
            for a in attrs {
                match a {
                    InfoVxlan::Id(id) => v.vni = id,
                    InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(a)),
                    InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(a)),
                    InfoVxlan::Port(p) => v.port = p,
                    InfoVxlan::Learning(on) => v.learning = on,
                    InfoVxlan::Link(dev) if dev != 0 => v.link = Some(dev),
                    _ => {}
                }
            }
            l.vxlan = Some(v);
        }
        _ => {}
    }
}

impl Handle {
    fn add_kind(&self, op: &'static str, name: &str, m: LinkMessage) -> Result<()> {
        check_name(op, name)?;
        self.exec(
            op,
            &|| format!("link {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip link add NAME link #PARENT [netns NS] type macvlan mode MODE` (see [`macvlan_msg`]).
    pub fn add_macvlan(&self, l: &NewLink<'_>, parent: u32, mode: MacvlanMode) -> Result<()> {
        self.add_kind("add macvlan", l.name, macvlan_msg(l, parent, mode))
    }

    /// `ip link add NAME link #PARENT [netns NS] type vlan id ID` (see [`vlan_msg`]).
    pub fn add_vlan(&self, l: &NewLink<'_>, parent: u32, id: u16) -> Result<()> {
        self.add_kind("add vlan", l.name, vlan_msg(l, parent, id))
    }

    /// `ip link add NAME [netns NS] type dummy` (see [`dummy_msg`]).
    pub fn add_dummy(&self, l: &NewLink<'_>) -> Result<()> {
        self.add_kind("add dummy", l.name, dummy_msg(l))
    }

    /// `ip link add NAME type vxlan id VNI local IP dstport PORT nolearning dev #DEV [mtu M]`
    /// (built by `vxlan_msg`, which the unit tests check without root).
    pub fn add_vxlan(&self, l: &NewLink<'_>, v: &Vxlan) -> Result<()> {
        self.add_kind("add vxlan", l.name, vxlan_msg(l, v))
    }

    /// `ip link set #INDEX alias ALIAS` (an empty alias clears it).
    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.set_attr("set alias", index, LinkAttribute::IfAlias(alias.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn round_trip(m: &LinkMessage) -> (Vec<u8>, LinkMessage) {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let back = LinkMessage::parse(buf.as_slice()).unwrap();
        (buf, back)
    }

    fn info_of(m: &LinkMessage) -> Vec<LinkInfo> {
        m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .expect("IFLA_LINKINFO")
    }

    fn nl(name: &str) -> NewLink<'_> {
        NewLink {
            name,
            mtu: Some(1400),
            mac: Some([0x0a, 0x58, 0, 0, 0, 1]),
            netns_fd: Some(7),
        }
    }

    #[test]
    fn vlan_message_carries_kind_parent_id_and_netns() {
        let (buf, back) = round_trip(&vlan_msg(&nl("tmp1"), 4, 100));
        assert!(back
            .attributes
            .contains(&LinkAttribute::IfName("tmp1".into())));
        assert!(back.attributes.contains(&LinkAttribute::Link(4)));
        assert!(back.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(back.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert_eq!(
            info_of(&back),
            vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(100)]))
            ]
        );
        // The raw bytes: IFLA_VLAN_ID (1) as a 2-byte NLA of value 100, and the kind string.
        let id_nla = [6u8, 0, 1, 0, 100, 0];
        assert!(buf.windows(6).any(|w| w == id_nla), "{buf:?}");
        assert!(buf.windows(5).any(|w| w == b"vlan\0"));
    }

    #[test]
    fn macvlan_message_carries_mode() {
        for (mode, bits) in [
            (MacvlanMode::Private, 1),
            (MacvlanMode::Vepa, 2),
            (MacvlanMode::Bridge, 4),
            (MacvlanMode::Passthru, 8),
        ] {
            let (_, back) = round_trip(&macvlan_msg(&nl("tmp2"), 9, mode));
            assert!(back.attributes.contains(&LinkAttribute::Link(9)));
            let mut l = Link::default();
            for i in info_of(&back) {
                match i {
                    LinkInfo::Kind(k) => assert_eq!(k, InfoKind::MacVlan),
                    LinkInfo::Data(d) => read_info_data(&mut l, d),
                    _ => {}
                }
            }
            assert_eq!(l.macvlan_mode, Some(bits));
            assert_eq!(mode.bits(), bits);
            assert_eq!(MacvlanMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(MacvlanMode::parse(""), Some(MacvlanMode::Bridge));
        assert_eq!(MacvlanMode::parse("source"), None);
    }

    #[test]
    fn vxlan_message_reads_back_as_its_settings() {
        let v = Vxlan {
            vni: 4242,
            local: Some("10.99.0.1".parse().unwrap()),
            port: VXLAN_PORT,
            learning: false,
            link: Some(3),
        };
        let (buf, back) = round_trip(&vxlan_msg(&nl("vx0"), &v));
        let mut l = Link::default();
        for i in info_of(&back) {
            match i {
                LinkInfo::Kind(k) => assert_eq!(k, InfoKind::Vxlan),
                LinkInfo::Data(d) => read_info_data(&mut l, d),
                _ => {}
            }
        }
        assert_eq!(l.vxlan, Some(v));
        // IFLA_VXLAN_PORT (15) is big-endian on the wire.
        let port_nla = [6u8, 0, 15, 0, 0x12, 0xb5];
        assert!(buf.windows(6).any(|w| w == port_nla), "{buf:?}");
        assert!(buf.windows(6).any(|w| w == b"vxlan\0"));
    }

    #[test]
    fn dummy_message_has_no_parent() {
        let (buf, back) = round_trip(&dummy_msg(&NewLink {
            name: "dummy0",
            ..Default::default()
        }));
        assert_eq!(info_of(&back), vec![LinkInfo::Kind(InfoKind::Dummy)]);
        assert!(!back
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Link(_) | LinkAttribute::NetNsFd(_))));
        assert!(buf.windows(6).any(|w| w == b"dummy\0"));
    }
}
