//! The bridge driver: a Linux bridge on the host, one veth pair per endpoint.
//!
//! Attach, in order (each step registered with the undo guard):
//! 1. `ip link add BR type bridge` if missing (promisc, mtu), `accept_ra=0` on it, up;
//! 2. `ip link add vethXXXX mtu M type veth peer name IFNAME netns CTR` (peer made in place);
//! 3. `ip link set vethXXXX master BR up`, hairpin per config;
//! 4. inside the container: the accept_dad sysctl, arp_notify (over netlink), `ip link set
//!    IFNAME up`, addresses, routes;
//! 5. gateway addresses on the bridge (isGateway) and ip forwarding.
//!
//! Detach deletes the host end of the pair by its derived name (which removes both ends) and
//! needs nothing from the container; the bridge itself is shared and stays.

use ipnet::IpNet;

use super::{host_veth_name, Driver, DriverError, Wired};
pub use super::{Endpoint, IpConf, LinkRef, RouteConf};
use crate::netlink::link::IPV4_DEVCONF_ARP_NOTIFY;
use crate::netlink::ops::Netlink;
use crate::netlink::{Handle, Link, Route};
use crate::netns::NetNs;
use crate::sysctl;
use crate::undo::Undo;

/// The network-wide settings of a bridge network.
#[derive(Debug, Clone, Default)]
pub struct BridgeNet {
    pub bridge: String,
    pub mtu: Option<u32>,
    pub promisc: bool,
    pub hairpin: bool,
    /// Put each address's gateway on the bridge and enable forwarding.
    pub is_gateway: bool,
    /// Replace a different address of the same family already on the bridge.
    pub force_address: bool,
    pub enable_dad: bool,
    /// Leave the container's interface down (no addresses then).
    pub disable_container_interface: bool,
    /// The runtime configures the container side itself (Docker's remote driver model): the
    /// peer is made in the namespace given (the runtime's own), left down, without addresses
    /// or routes, for the runtime to move, rename and configure. The gateway still goes on the
    /// bridge.
    pub hand_off: bool,
}

/// Create the bridge if it does not exist; error if the name is taken by another kind of link.
pub fn ensure_bridge(h: &Handle, net: &BridgeNet) -> Result<(Link, bool), DriverError> {
    let mut created = false;
    let br = match h.find_link(&net.bridge)? {
        Some(l) => l,
        None => {
            // An explicit MAC: otherwise the bridge takes the lowest MAC of its ports and changes
            // it as containers come and go, leaving stale gateway entries in their ARP caches.
            match h.add_bridge(&net.bridge, net.mtu, Some(random_mac())) {
                Ok(()) => created = true,
                // Another ADD made it between our look and our create: use theirs.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            h.link_by_name(&net.bridge)?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(DriverError::Exists(format!(
            "{:?} already exists but is not a bridge",
            net.bridge
        )));
    }
    if net.promisc && !br.is_promisc() {
        h.set_promisc(br.index, true)?;
    }
    if created {
        // We own the routes of this interface: no router advertisements.
        let _ = sysctl::set(&format!("net/ipv6/conf/{}/accept_ra", net.bridge), "0");
    }
    if !br.is_up() {
        h.set_up(br.index, true)?;
    }
    Ok((br, created))
}

/// A random locally administered unicast MAC (`x2:xx:xx:xx:xx:xx`).
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: mac is a valid writable buffer of mac.len() bytes.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // No entropy yet (early boot): time and pid are unique enough for a bridge's MAC.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = t ^ (u128::from(std::process::id()) << 64);
        mac.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The bridge driver over a handle in the host's namespace.
#[derive(Debug)]
pub struct Bridge<'h> {
    pub h: &'h Handle,
    pub net: BridgeNet,
}

impl Driver for Bridge<'_> {
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError> {
        attach(self.h, &self.net, ep, undo)
    }

    fn detach(
        &self,
        container_id: &str,
        ifname: &str,
        netns: Option<&NetNs>,
    ) -> Result<(), DriverError> {
        detach(self.h, container_id, ifname, netns)
    }
}

/// Steps 1–5 of the module note; every object made is registered on `undo` as it appears.
fn attach<'h>(
    h: &'h Handle,
    net: &BridgeNet,
    ep: &Endpoint<'_>,
    undo: &mut Undo<'h>,
) -> Result<Wired, DriverError> {
    if net.hairpin && net.promisc {
        return Err(DriverError::Invalid(
            "cannot set hairpin mode and promiscuous mode at the same time".into(),
        ));
    }
    let (br, created) = ensure_bridge(h, net)?;
    if created {
        let idx = br.index;
        undo.push(format!("bridge {}", net.bridge), move || {
            // Only if no other endpoint joined it meanwhile.
            if h.links()?.iter().any(|l| l.master == Some(idx)) {
                return Ok(());
            }
            h.del_link(idx)
        });
    }

    let host = super::add_endpoint_veth(
        h,
        undo,
        ep.container_id,
        ep.ifname,
        ep.netns,
        ep.mac,
        net.mtu,
    )?;
    let host_idx = host.index;
    h.set_master(host_idx, br.index)?;
    if net.hairpin {
        h.set_bridge_port(host_idx, Some(true), None)?;
    }
    h.set_up(host_idx, true)?;

    let container = ep.netns.run_in(|| configure_container(net, ep))??;

    if net.is_gateway {
        ensure_gateways(h, net, &br, &ep.ips)?;
    }

    // The bridge's MAC follows its lowest port until set explicitly; read it now.
    let br = h.link_by_index(br.index)?;
    let host = h.link_by_index(host_idx)?;
    Ok(Wired {
        bridge: Some(LinkRef {
            name: br.name.clone(),
            mac: br.mac_string(),
        }),
        host: Some(LinkRef {
            name: host.name.clone(),
            mac: host.mac_string(),
        }),
        container,
    })
}

/// Runs inside the container's namespace: sysctls, link up, addresses, routes.
fn configure_container(net: &BridgeNet, ep: &Endpoint<'_>) -> Result<LinkRef, DriverError> {
    let c = Handle::new()?;
    let link = c.link_by_name(ep.ifname)?;
    if net.hand_off {
        return Ok(LinkRef {
            name: link.name.clone(),
            mac: link.mac_string(),
        });
    }
    if !ep.ips.is_empty() {
        let ifn = ep.ifname;
        if net.enable_dad {
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifn}/enhanced_dad"), "1");
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifn}/accept_dad"), "1");
        } else {
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifn}/accept_dad"), "0");
        }
        // Over netlink: a /proc/sys lookup of a per-device key costs time proportional to
        // the number of namespaces on the host.
        let _ = c.set_ipv4_devconf(link.index, IPV4_DEVCONF_ARP_NOTIFY, 1);
    }
    if !net.disable_container_interface {
        c.set_up(link.index, true)?;
    }
    for ip in &ep.ips {
        c.add_addr(link.index, ip.addr, !net.enable_dad)?;
    }
    for r in &ep.routes {
        let gw = r.gw.or_else(|| {
            ep.ips
                .iter()
                .find(|ip| ip.addr.addr().is_ipv4() == r.dst.addr().is_ipv4())
                .and_then(|ip| ip.gateway)
        });
        let mut route = Route::new(r.dst, gw, Some(link.index));
        route.scope = crate::netlink::RouteScope::Universe;
        c.add_route(&route)?;
    }
    Ok(LinkRef {
        name: link.name.clone(),
        mac: link.mac_string(),
    })
}

/// isGateway: each address's gateway (with the address's prefix) on the bridge, forwarding on.
fn ensure_gateways(
    h: &Handle,
    net: &BridgeNet,
    br: &Link,
    ips: &[IpConf],
) -> Result<(), DriverError> {
    let (v4, v6) = put_gateways(h, net, br, ips)?;
    if v4 {
        sysctl::set("net/ipv4/ip_forward", "1")?;
    }
    if v6 {
        sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// The gateway addresses on the bridge, decided against what it already carries: one IPv4
/// address per bridge, IPv6 several unless their subnets overlap, link-local left alone; a
/// clashing address is replaced only with `forceAddress`, else `Exists`. Returns which
/// families now route through the bridge (forwarding to switch on).
fn put_gateways<N: Netlink + ?Sized>(
    h: &N,
    net: &BridgeNet,
    br: &Link,
    ips: &[IpConf],
) -> Result<(bool, bool), DriverError> {
    let mut v4 = false;
    let mut v6 = false;
    let existing = h.addrs(br.index)?;
    for ip in ips {
        let Some(gw) = ip.gateway else { continue };
        let want = IpNet::new(gw, ip.addr.prefix_len())
            .map_err(|e| DriverError::Invalid(format!("gateway {gw}: {e}")))?;
        let is_v4 = gw.is_ipv4();
        if existing.iter().any(|a| a.net == want) {
            (v4, v6) = (v4 || is_v4, v6 || !is_v4);
            continue;
        }
        for a in existing.iter().filter(|a| a.net.addr().is_ipv4() == is_v4) {
            let clash = is_v4 || a.net.contains(&want.addr()) || want.contains(&a.net.addr());
            if a.net.addr().is_ipv6() && a.net.addr().to_string().starts_with("fe80") {
                continue;
            }
            if clash {
                if net.force_address {
                    h.del_addr(br.index, a.net)?;
                } else {
                    return Err(DriverError::Exists(format!(
                        "{:?} already has an IP address different from {want}",
                        br.name
                    )));
                }
            }
        }
        match h.add_addr(br.index, want, false) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
        (v4, v6) = (v4 || is_v4, v6 || !is_v4);
    }
    Ok((v4, v6))
}

/// Detach an endpoint: delete the host end of its veth pair (both ends go). Tolerant: a
/// missing link is success, and the container's namespace is not needed. When the pair was not
/// made by knit (a node switched from the reference plugins), the container side is deleted by
/// its name in `netns`, if that namespace is still there.
pub fn detach(
    h: &Handle,
    container_id: &str,
    ifname: &str,
    netns: Option<&NetNs>,
) -> Result<(), DriverError> {
    let host_name = host_veth_name(container_id, ifname);
    if let Some(l) = h.find_link(&host_name)? {
        return match crate::linger::del_link(h, &l) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            r => Ok(r?),
        };
    }
    if let Some(ns) = netns {
        ns.run_in(|| -> Result<(), DriverError> {
            Handle::new()?.del_link_by_name(ifname)?;
            Ok(())
        })??;
    }
    Ok(())
}

/// What CHECK expects to find, from the attachment's previous result.
#[derive(Debug)]
pub struct Expected<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mac: Option<String>,
    pub ips: Vec<IpNet>,
    pub routes: Vec<IpNet>,
}

/// Verify an attachment: the bridge, the host veth as its port, the container's interface with
/// its MAC, MTU (the network's, when configured), addresses and routes. The first difference
/// is the error. A missing bridge or host end is drift of the host (`Invalid`), not an unknown
/// container: only the container's own namespace and interface answer `NotFound`.
pub fn check(h: &Handle, net: &BridgeNet, want: &Expected<'_>) -> Result<(), DriverError> {
    let drift = |what: String| Err(DriverError::Invalid(what));
    let Some(br) = h.find_link(&net.bridge)? else {
        return drift(format!("bridge {:?} does not exist", net.bridge));
    };
    if br.kind.as_deref() != Some("bridge") {
        return drift(format!("{:?} is not a bridge", net.bridge));
    }
    let host_name = host_veth_name(want.container_id, want.ifname);
    if let Some(host) = h.find_link(&host_name)? {
        if host.master != Some(br.index) {
            return drift(format!("{host_name} is not a port of {}", net.bridge));
        }
        if let Some(mtu) = net.mtu.filter(|m| *m != host.mtu) {
            return drift(format!("{host_name} has MTU {}, expected {mtu}", host.mtu));
        }
    }
    want.netns.run_in(|| -> Result<(), DriverError> {
        let c = Handle::new()?;
        let link = c.link_by_name(want.ifname)?;
        if let Some(mtu) = net.mtu.filter(|m| *m != link.mtu) {
            return drift(format!(
                "interface {} has MTU {}, expected {mtu}",
                want.ifname, link.mtu
            ));
        }
        if let Some(mac) = &want.mac {
            if !mac.is_empty() && !mac.eq_ignore_ascii_case(&link.mac_string()) {
                return drift(format!(
                    "interface {} has MAC {}, expected {mac}",
                    want.ifname,
                    link.mac_string()
                ));
            }
        }
        let addrs = c.addrs(link.index)?;
        for ip in &want.ips {
            if !addrs.iter().any(|a| a.net == *ip) {
                return drift(format!("address {ip} is missing on {}", want.ifname));
            }
        }
        for dst in &want.routes {
            let routes = c.routes(dst.addr().is_ipv6())?;
            if !routes
                .iter()
                .any(|r| r.dst == dst.trunc() && r.oif == Some(link.index))
            {
                return drift(format!("route to {dst} via {} is missing", want.ifname));
            }
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::fake::FakeNetlink;

    fn gw(addr: &str, gw: &str) -> IpConf {
        IpConf {
            addr: addr.parse().unwrap(),
            gateway: gw.parse().ok(),
        }
    }

    /// A bridge `br0` carrying `addrs`, as the fake kernel has it.
    fn bridge_with(addrs: &[&str]) -> (FakeNetlink, Link) {
        let f = FakeNetlink::new();
        f.add_bridge("br0", None, None).unwrap();
        let br = f.find_link("br0").unwrap().unwrap();
        for a in addrs {
            f.seed_addr(br.index, a.parse().unwrap());
        }
        (f, br)
    }

    fn on_bridge(f: &FakeNetlink, br: &Link) -> Vec<String> {
        let mut a: Vec<String> = f
            .addrs(br.index)
            .unwrap()
            .iter()
            .map(|a| a.net.to_string())
            .collect();
        a.sort();
        a
    }

    #[test]
    fn gateways_go_on_the_bridge_once_and_say_which_families_forward() {
        let (f, br) = bridge_with(&["fe80::1/64"]);
        let net = BridgeNet::default();
        let ips = [gw("10.1.0.5/24", "10.1.0.1"), gw("fd00::5/64", "fd00::1")];
        assert_eq!(put_gateways(&f, &net, &br, &ips).unwrap(), (true, true));
        // A second endpoint of the same network adds nothing.
        assert_eq!(put_gateways(&f, &net, &br, &ips).unwrap(), (true, true));
        assert_eq!(
            on_bridge(&f, &br),
            vec!["10.1.0.1/24", "fd00::1/64", "fe80::1/64"]
        );
        // No gateway, no forwarding.
        let none = [IpConf {
            addr: "10.1.0.6/24".parse().unwrap(),
            gateway: None,
        }];
        assert_eq!(put_gateways(&f, &net, &br, &none).unwrap(), (false, false));
    }

    #[test]
    fn another_ipv4_address_is_refused_unless_forced() {
        let (f, br) = bridge_with(&["10.2.0.1/24"]);
        let ips = [gw("10.1.0.5/24", "10.1.0.1")];
        let e = put_gateways(&f, &BridgeNet::default(), &br, &ips).unwrap_err();
        assert!(matches!(e, DriverError::Exists(_)), "{e}");
        assert_eq!(on_bridge(&f, &br), vec!["10.2.0.1/24"], "nothing changed");

        let forced = BridgeNet {
            force_address: true,
            ..Default::default()
        };
        put_gateways(&f, &forced, &br, &ips).unwrap();
        assert_eq!(on_bridge(&f, &br), vec!["10.1.0.1/24"]);
    }

    #[test]
    fn ipv6_gateways_of_disjoint_subnets_live_side_by_side() {
        let (f, br) = bridge_with(&["fd00:1::1/64"]);
        let ips = [gw("fd00:2::5/64", "fd00:2::1")];
        put_gateways(&f, &BridgeNet::default(), &br, &ips).unwrap();
        assert_eq!(on_bridge(&f, &br), vec!["fd00:1::1/64", "fd00:2::1/64"]);
        // An overlapping one clashes.
        let ips = [gw("fd00:1::5/48", "fd00:1::2")];
        assert!(put_gateways(&f, &BridgeNet::default(), &br, &ips).is_err());
    }

    #[test]
    fn a_kernel_refusal_comes_back_as_the_error() {
        let (f, br) = bridge_with(&[]);
        f.fail_next("add_addr", libc::EACCES);
        let e = put_gateways(
            &f,
            &BridgeNet::default(),
            &br,
            &[gw("10.1.0.5/24", "10.1.0.1")],
        )
        .unwrap_err();
        assert_eq!(crate::HasKind::kind(&e), crate::Kind::Invalid, "{e}");
    }

    #[test]
    fn random_macs_are_local_unicast_and_differ() {
        let (a, b) = (super::random_mac(), super::random_mac());
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(a, b);
    }
}
