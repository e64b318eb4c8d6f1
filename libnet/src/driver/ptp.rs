//! The ptp driver: one veth pair per endpoint, routed, no bridge.
//!
//! Veth has no IFF_POINTOPOINT, so as the reference does, the container must reach everything
//! through the gateway, and the gateway is the host end of the pair:
//! 1. `ip link add vethXXXX [mtu M] type veth peer name IFNAME netns CTR`; host end up;
//! 2. in the container: `ip link set IFNAME up`, `ip addr add IP/LEN dev IFNAME` (v6 nodad),
//!    then the subnet's automatic route is replaced by `ip route add GW/32 dev IFNAME scope link
//!    src IP` and `ip route add SUBNET via GW dev IFNAME src IP`, so even neighbours in the same
//!    subnet are reached through the host; then the IPAM routes (e.g. default via GW);
//! 3. on the host: `ip addr add GW/32 dev vethXXXX` (/128 for v6; the same gateway address sits
//!    on every host end, which is fine for a /32), `ip route add IP/32 dev vethXXXX scope host`
//!    and forwarding on.
//!
//! Detach deletes the host end by its derived name: the container end goes with it, and so do
//! the host's /32 routes and gateway addresses (they hang off that link), so nothing needs the
//! container's namespace.

use ipnet::IpNet;

use super::iface::{self, Want};
use super::{host_veth_name, DriverError};
use super::{Driver, Endpoint, IpConf, LinkRef, Wired};
use crate::netlink::{Handle, Link, Route, RouteScope};
use crate::netns::NetNs;
use crate::sysctl;
use crate::undo::Undo;

/// The gateway address as the host end carries it: a host route's length.
fn gw_host_net(ip: &IpConf) -> Result<IpNet, DriverError> {
    let gw = ip.gateway.ok_or_else(|| {
        DriverError::Invalid(format!(
            "ptp needs a gateway for {} (the host end of the pair answers for it)",
            ip.addr
        ))
    })?;
    Ok(IpNet::from(gw))
}

/// The ptp driver over a handle in the host's namespace.
#[derive(Debug)]
pub struct Ptp<'h> {
    pub h: &'h Handle,
    pub mtu: Option<u32>,
}

impl Driver for Ptp<'_> {
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError> {
        attach(self.h, self.mtu, ep, undo)
    }

    fn detach(
        &self,
        container_id: &str,
        ifname: &str,
        netns: Option<&NetNs>,
    ) -> Result<(), DriverError> {
        super::bridge::detach(self.h, container_id, ifname, netns)
    }
}

/// Steps 1–3 of the module note; the pair is registered on `undo` as soon as it exists (the
/// host addresses and routes hang off it and go with it).
fn attach<'h>(
    h: &'h Handle,
    mtu: Option<u32>,
    ep: &Endpoint<'_>,
    undo: &mut Undo<'h>,
) -> Result<Wired, DriverError> {
    if ep.ips.is_empty() {
        return Err(DriverError::Invalid(
            "ptp needs at least one address".into(),
        ));
    }
    for ip in &ep.ips {
        gw_host_net(ip)?;
    }
    let host =
        super::add_endpoint_veth(h, undo, ep.container_id, ep.ifname, ep.netns, ep.mac, mtu)?;
    let host_idx = host.index;
    h.set_up(host_idx, true)?;

    let c = Handle::new_in(ep.netns)?;
    let container = configure_container(&c, ep)?;

    for ip in &ep.ips {
        match h.add_addr(host_idx, gw_host_net(ip)?, true) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
        let mut r = Route::new(IpNet::from(ip.addr.addr()), None, Some(host_idx));
        if ip.addr.addr().is_ipv4() {
            r.scope = RouteScope::Host;
        }
        match h.add_route(&r) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            res => res?,
        }
    }
    if ep.ips.iter().any(|ip| ip.addr.addr().is_ipv4()) {
        sysctl::set("net/ipv4/ip_forward", "1")?;
    }
    if ep.ips.iter().any(|ip| ip.addr.addr().is_ipv6()) {
        sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
    }
    let host = h.link_by_index(host_idx)?;
    Ok(Wired {
        bridge: None,
        host: Some(LinkRef {
            name: host.name.clone(),
            mac: host.mac_string(),
        }),
        container,
    })
}

/// Step 2 of the module note, through `c`, a handle in the container's namespace.
fn configure_container(c: &Handle, ep: &Endpoint<'_>) -> Result<LinkRef, DriverError> {
    let link = c.link_by_name(ep.ifname)?;
    let idx = link.index;
    iface::configure(c, idx, &ep.ips, &[])?;
    for ip in &ep.ips {
        let gw = gw_host_net(ip)?;
        let subnet = ip.addr.trunc();
        // The route the kernel added for the address's subnet: everything goes via GW instead.
        c.del_route(&Route::new(subnet, None, Some(idx)))?;
        let mut to_gw = Route::new(gw, None, Some(idx));
        to_gw.scope = RouteScope::Link;
        to_gw.src = Some(ip.addr.addr());
        c.add_route(&to_gw)?;
        // A /32 (/128) address has no subnet to route.
        if subnet.prefix_len() < subnet.max_prefix_len() {
            let mut via = Route::new(subnet, Some(gw.addr()), Some(idx));
            via.src = Some(ip.addr.addr());
            c.add_route(&via)?;
        }
    }
    for r in &ep.routes {
        c.add_route(&iface::route_for(idx, &ep.ips, r))?;
    }
    let link = c.link_by_index(idx)?;
    Ok(LinkRef {
        name: link.name.clone(),
        mac: link.mac_string(),
    })
}

/// What CHECK expects, from the previous result.
#[derive(Debug)]
pub struct Expected<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mac: Option<&'a str>,
    pub mtu: Option<u32>,
    pub ips: Vec<IpConf>,
    pub routes: Vec<IpNet>,
}

/// The host end: by its derived name, or (a pair made by the reference plugin, under a random
/// name) as the veth peer of the container's interface.
fn host_end(h: &Handle, c: &Handle, want: &Expected<'_>) -> Result<Option<Link>, DriverError> {
    if let Some(l) = h.find_link(&host_veth_name(want.container_id, want.ifname))? {
        return Ok(Some(l));
    }
    let Some(inner) = c.find_link(want.ifname)? else {
        return Ok(None);
    };
    let Some(peer) = inner.peer_index else {
        return Ok(None);
    };
    match h.link_by_index(peer) {
        Ok(l) if l.kind.as_deref() == Some("veth") && l.peer_index == Some(inner.index) => {
            Ok(Some(l))
        }
        Ok(_) => Ok(None),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Verify an attachment on both sides; the first difference is the error.
pub fn check(h: &Handle, want: &Expected<'_>) -> Result<(), DriverError> {
    let drift = |what: String| Err(DriverError::Invalid(what));
    let c = Handle::new_in(want.netns)?;
    let Some(host) = host_end(h, &c, want)? else {
        let name = host_veth_name(want.container_id, want.ifname);
        return drift(format!("host end {name} of the veth pair is missing"));
    };
    let host_name = host.name.clone();
    if let Some(mtu) = want.mtu {
        if host.mtu != mtu {
            return drift(format!("{host_name} has MTU {}, expected {mtu}", host.mtu));
        }
    }
    let addrs = h.addrs(host.index)?;
    for ip in &want.ips {
        let gw = gw_host_net(ip)?;
        if !addrs.iter().any(|a| a.net == gw) {
            return drift(format!("gateway address {gw} is missing on {host_name}"));
        }
    }
    let host_routes: Vec<IpNet> = want.ips.iter().map(|ip| ip.addr.addr().into()).collect();
    iface::check_routes(h, host.index, &host_name, &host_routes)?;

    let ips: Vec<IpNet> = want.ips.iter().map(|ip| ip.addr).collect();
    iface::check(
        &c,
        &Want {
            ifname: want.ifname,
            kind: Some("veth"),
            mac: want.mac,
            mtu: want.mtu,
            ips: &ips,
            routes: &want.routes,
        },
    )?;
    Ok(())
}
