//! The links of a network on one host: `ensure_network` creates or corrects them,
//! `remove_network` and `remove_stale_networks` delete them. All idempotent.

use std::net::IpAddr;

use ipnet::IpNet;
use libnet::netlink::link::{NewLink, IPV4_DEVCONF_PROXY_ARP, VXLAN_PORT};
use libnet::netlink::{BrportFlags, Link, Netlink, Vxlan};

use crate::desired::{Mode, NetworkDesired};
use crate::error::{InNetwork, OverlayError};
use crate::names::{bridge_name, gateway_mac, vni_of, vxlan_name, MTU, RTPROT_KNIT_OVERLAY};

/// The links of one network on this host, as [`ensure_network`] left them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLinks {
    /// `knov<vni hex>`: the containers' veths and (vxlan mode) the vxlan device are its ports.
    pub bridge: u32,
    /// `knvx<vni>` in vxlan mode; `None` in routed mode.
    pub vxlan: Option<u32>,
}

/// Create or correct the network's links so that they are exactly what `net` asks:
///
/// - the bridge `knov<vni hex>`, MTU 1450, the anycast gateway MAC ([`gateway_mac`]), up,
///   holding each subnet's gateway (`ip addr add GW/PREFIX dev knovX`) and no other global
///   address; `proxy_arp` on in routed mode (the containers' subnet spans hosts, so the host
///   answers for addresses it routes elsewhere), off otherwise;
/// - vxlan mode: `ip link add knvxN mtu 1450 type vxlan id N local UNDERLAY dstport 4789
///   nolearning dev UNDERLAY_LINK`, port of the bridge with `learning off neigh_suppress on`,
///   up. A vxlan device with other settings is replaced (the kernel cannot change them);
/// - routed mode: no vxlan device (one left by vxlan mode is deleted).
///
/// Validates `net` first; a bad one changes nothing.
pub fn ensure_network(
    nl: &impl Netlink,
    net: &NetworkDesired,
) -> Result<NetworkLinks, OverlayError> {
    net.validate()?;
    let id = net.id.as_str();
    let bridge = ensure_bridge(nl, net)?;
    ensure_gateways(nl, net, bridge.index)?;
    let vx_name = vxlan_name(net.vni);
    let vxlan = match net.mode {
        Mode::Vxlan => Some(ensure_vxlan(nl, net, bridge.index)?),
        Mode::Routed => {
            if let Some(l) = find_ours(nl, id, &vx_name, "vxlan")? {
                nl.del_link(l.index).in_net(id)?;
            }
            None
        }
    };
    let proxy_arp = u32::from(net.mode == Mode::Routed);
    nl.set_ipv4_devconf(bridge.index, IPV4_DEVCONF_PROXY_ARP, proxy_arp)
        .in_net(id)?;
    Ok(NetworkLinks {
        bridge: bridge.index,
        vxlan,
    })
}

/// The link `name` if it is of `kind`; another kind under our name is an error.
fn find_ours(
    nl: &impl Netlink,
    network: &str,
    name: &str,
    kind: &str,
) -> Result<Option<Link>, OverlayError> {
    match nl.find_link(name).in_net(network)? {
        Some(l) if l.kind.as_deref() != Some(kind) => Err(OverlayError::NameTaken {
            network: network.into(),
            name: name.into(),
            kind: l.kind.unwrap_or_else(|| "device".into()),
        }),
        l => Ok(l),
    }
}

/// Find `name` after creating it.
fn created(nl: &impl Netlink, network: &str, name: &str) -> Result<Link, OverlayError> {
    nl.find_link(name)
        .in_net(network)?
        .ok_or_else(|| OverlayError::Vanished {
            network: network.into(),
            name: name.into(),
        })
}

fn ensure_bridge(nl: &impl Netlink, net: &NetworkDesired) -> Result<Link, OverlayError> {
    let id = net.id.as_str();
    let name = bridge_name(net.vni);
    let mac = gateway_mac(net.vni);
    let br = match find_ours(nl, id, &name, "bridge")? {
        Some(l) => l,
        None => {
            // `ip link add knovX mtu 1450 address GWMAC type bridge`: a MAC given by hand
            // stays, whatever ports come and go.
            nl.add_bridge(&name, Some(MTU), Some(mac)).in_net(id)?;
            created(nl, id, &name)?
        }
    };
    if br.mtu != MTU {
        nl.set_mtu(br.index, MTU).in_net(id)?;
    }
    if br.mac != mac {
        nl.set_mac(br.index, mac).in_net(id)?;
    }
    if !br.is_up() {
        nl.set_up(br.index, true).in_net(id)?;
    }
    Ok(br)
}

/// Each subnet's gateway on the bridge, with the subnet's prefix; other global addresses go.
fn ensure_gateways(
    nl: &impl Netlink,
    net: &NetworkDesired,
    bridge: u32,
) -> Result<(), OverlayError> {
    let id = net.id.as_str();
    let want: Vec<IpNet> = net
        .subnets
        .iter()
        .filter_map(|s| IpNet::new(s.gateway?, s.cidr.prefix_len()).ok())
        .collect();
    let have = nl.addrs(bridge).in_net(id)?;
    for w in &want {
        if !have.iter().any(|a| a.net == *w) {
            // nodad: the same gateway is on every host's bridge by design.
            nl.add_addr(bridge, *w, w.addr().is_ipv6()).in_net(id)?;
        }
    }
    // Scope 0 is global; link-local IPv6 addresses (scope 253) are the kernel's.
    for a in have
        .iter()
        .filter(|a| a.scope == 0 && !want.contains(&a.net))
    {
        nl.del_addr(bridge, a.net).in_net(id)?;
    }
    Ok(())
}

/// The link holding `ip` (the underlay the vxlan packets leave through).
fn underlay_link(nl: &impl Netlink, network: &str, ip: IpAddr) -> Result<u32, OverlayError> {
    nl.addrs(0)
        .in_net(network)?
        .iter()
        .find(|a| a.net.addr() == ip)
        .map(|a| a.index)
        .ok_or_else(|| OverlayError::NoUnderlay {
            network: network.into(),
            ip,
        })
}

fn ensure_vxlan(nl: &impl Netlink, net: &NetworkDesired, bridge: u32) -> Result<u32, OverlayError> {
    let id = net.id.as_str();
    let name = vxlan_name(net.vni);
    let want = Vxlan {
        vni: net.vni,
        local: Some(net.underlay_ip),
        port: VXLAN_PORT,
        learning: false,
        link: Some(underlay_link(nl, id, net.underlay_ip)?),
    };
    let mut vx = find_ours(nl, id, &name, "vxlan")?;
    if let Some(l) = vx.as_ref().filter(|l| l.vxlan != Some(want)) {
        // A new underlay IP or device: the kernel keeps a vxlan's settings for life.
        nl.del_link(l.index).in_net(id)?;
        vx = None;
    }
    let vx = match vx {
        Some(l) => l,
        None => {
            let new = NewLink {
                name: &name,
                mtu: Some(MTU),
                ..Default::default()
            };
            nl.add_vxlan(&new, &want).in_net(id)?;
            created(nl, id, &name)?
        }
    };
    if vx.mtu != MTU {
        nl.set_mtu(vx.index, MTU).in_net(id)?;
    }
    if vx.master != Some(bridge) {
        nl.set_master(vx.index, bridge).in_net(id)?;
    }
    let flags = BrportFlags {
        learning: Some(false),
        neigh_suppress: Some(true),
    };
    // A bridge port learns by default, and a bridge learns remote MACs on the vxlan port even
    // when the vxlan device itself has `nolearning` (entries that outlive their container).
    let now = created(nl, id, &name)?;
    if (now.learning, now.neigh_suppress) != (flags.learning, flags.neigh_suppress) {
        nl.set_brport_flags(vx.index, &flags).in_net(id)?;
    }
    if !now.is_up() {
        nl.set_up(vx.index, true).in_net(id)?;
    }
    Ok(vx.index)
}

/// What a removal deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Names of the links deleted (their addresses, neighbour and FDB entries went with them).
    pub links: Vec<String>,
    /// Routes of ours deleted.
    pub routes: usize,
}

/// Delete the network's vxlan device, its bridge (with the gateway addresses, neighbour and
/// FDB entries on them) and the overlay's routes inside its subnets. Tolerant: what is not
/// there is success. Container veths still on the bridge are left, detached.
pub fn remove_network(nl: &impl Netlink, net: &NetworkDesired) -> Result<Removed, OverlayError> {
    let id = net.id.as_str();
    let mut out = Removed::default();
    for (name, kind) in [
        (vxlan_name(net.vni), "vxlan"),
        (bridge_name(net.vni), "bridge"),
    ] {
        if let Some(l) = find_ours(nl, id, &name, kind)? {
            nl.del_link(l.index).in_net(id)?;
            out.links.push(name);
        }
    }
    for v6 in [false, true] {
        for r in nl.routes(v6).in_net(id)? {
            if r.protocol == RTPROT_KNIT_OVERLAY && net.covers(&r.dst) {
                nl.del_route(&r).in_net(id)?;
                out.routes += 1;
            }
        }
    }
    Ok(out)
}

/// Delete every overlay link (`knov*` bridges, `knvx*` vxlan devices) whose VNI no network
/// of `keep` has, and every overlay route (`proto 107`) outside their subnets: what a
/// previous run left for networks that are gone. Returns what it deleted.
pub fn remove_stale_networks(
    nl: &impl Netlink,
    keep: &[NetworkDesired],
) -> Result<Removed, OverlayError> {
    const WHO: &str = "(stale)";
    let mut out = Removed::default();
    for l in nl.links().in_net(WHO)? {
        let kind_ok = matches!(l.kind.as_deref(), Some("bridge") | Some("vxlan"));
        if let Some(vni) = vni_of(&l.name).filter(|_| kind_ok) {
            if !keep.iter().any(|n| n.vni == vni) {
                nl.del_link(l.index).in_net(WHO)?;
                out.links.push(l.name);
            }
        }
    }
    for v6 in [false, true] {
        for r in nl.routes(v6).in_net(WHO)? {
            if r.protocol == RTPROT_KNIT_OVERLAY && !keep.iter().any(|n| n.covers(&r.dst)) {
                nl.del_route(&r).in_net(WHO)?;
                out.routes += 1;
            }
        }
    }
    Ok(out)
}
