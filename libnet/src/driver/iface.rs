//! A container interface's addresses and routes from an IPAM result, shared by the drivers
//! that hand a whole link to the container (ptp, macvlan, vlan, dummy, host-device), and the
//! CHECK of that interface.
//!
//! Like the reference's `ipam.ConfigureIface`: `ip link set IF up`, `ip addr add` each address
//! (IPv6 without DAD, so it is usable at once), `ip route add DST via GW dev IF` for each route,
//! where a route without a gateway takes the first gateway of its family, or is on-link.

use ipnet::IpNet;

use super::bridge::{IpConf, RouteConf};
use super::DriverError;
use crate::netlink::{Handle, Link, Route, RouteScope};

/// `ip link set #INDEX up`, the addresses, then the routes.
pub fn configure(
    c: &Handle,
    index: u32,
    ips: &[IpConf],
    routes: &[RouteConf],
) -> Result<(), DriverError> {
    c.set_up(index, true)?;
    for ip in ips {
        match c.add_addr(index, ip.addr, true) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
    }
    for r in routes {
        c.add_route(&route_for(index, ips, r))?;
    }
    Ok(())
}

/// The kernel route for one IPAM route entry.
pub fn route_for(index: u32, ips: &[IpConf], r: &RouteConf) -> Route {
    let v4 = r.dst.addr().is_ipv4();
    let gw = r.gw.or_else(|| {
        ips.iter()
            .filter(|ip| ip.addr.addr().is_ipv4() == v4)
            .find_map(|ip| ip.gateway)
    });
    let mut route = Route::new(r.dst, gw, Some(index));
    if gw.is_some() {
        route.scope = RouteScope::Universe;
    }
    route
}

/// What CHECK expects of a container's interface.
#[derive(Debug, Default)]
pub struct Want<'a> {
    pub ifname: &'a str,
    /// The link kind (`macvlan`, `veth`, ...), when it is known.
    pub kind: Option<&'a str>,
    pub mac: Option<&'a str>,
    pub mtu: Option<u32>,
    pub ips: &'a [IpNet],
    /// Destinations of routes that must leave through this interface.
    pub routes: &'a [IpNet],
}

fn drift<T>(what: String) -> Result<T, DriverError> {
    Err(DriverError::Invalid(what))
}

/// Verify the interface in the container (through `c`, a handle in its namespace): that it
/// exists with the kind, MAC and MTU expected, is up, and holds the addresses and routes. The
/// first difference is the error, naming what drifted.
pub fn check(c: &Handle, want: &Want<'_>) -> Result<Link, DriverError> {
    let Some(link) = c.find_link(want.ifname)? else {
        return drift(format!("interface {} is missing", want.ifname));
    };
    let name = want.ifname;
    if let Some(kind) = want.kind {
        if link.kind.as_deref() != Some(kind) {
            return drift(format!(
                "interface {name} is of kind {:?}, expected {kind}",
                link.kind.as_deref().unwrap_or("?")
            ));
        }
    }
    if let Some(mac) = want.mac.filter(|m| !m.is_empty()) {
        if !mac.eq_ignore_ascii_case(&link.mac_string()) {
            let have = link.mac_string();
            return drift(format!("interface {name} has MAC {have}, expected {mac}"));
        }
    }
    if let Some(mtu) = want.mtu {
        if link.mtu != mtu {
            return drift(format!(
                "interface {name} has MTU {}, expected {mtu}",
                link.mtu
            ));
        }
    }
    if !link.is_up() {
        return drift(format!("interface {name} is down"));
    }
    let addrs = c.addrs(link.index)?;
    for ip in want.ips {
        if !addrs.iter().any(|a| a.net == *ip) {
            return drift(format!("address {ip} is missing on {name}"));
        }
    }
    check_routes(c, link.index, name, want.routes)?;
    Ok(link)
}

/// Each destination has a route out of link `index`.
pub fn check_routes(c: &Handle, index: u32, name: &str, dsts: &[IpNet]) -> Result<(), DriverError> {
    let (mut v4, mut v6) = (None, None);
    for dst in dsts {
        let cache = if dst.addr().is_ipv4() {
            &mut v4
        } else {
            &mut v6
        };
        if cache.is_none() {
            *cache = Some(c.routes(dst.addr().is_ipv6())?);
        }
        let routes = cache.as_ref().map(Vec::as_slice).unwrap_or_default();
        if !routes
            .iter()
            .any(|r| r.dst == dst.trunc() && r.oif == Some(index))
        {
            return drift(format!("route to {dst} via {name} is missing"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_the_gateway_of_their_family() {
        let ips = vec![
            IpConf {
                addr: "10.244.3.5/24".parse().unwrap(),
                gateway: "10.244.3.1".parse().ok(),
            },
            IpConf {
                addr: "fd00:6b6e:3::5/64".parse().unwrap(),
                gateway: "fd00:6b6e:3::1".parse().ok(),
            },
        ];
        let r = route_for(
            7,
            &ips,
            &RouteConf {
                dst: "::/0".parse().unwrap(),
                gw: None,
            },
        );
        assert_eq!(r.gw, "fd00:6b6e:3::1".parse().ok());
        assert_eq!(r.oif, Some(7));
        let on_link = route_for(
            7,
            &[],
            &RouteConf {
                dst: "10.244.9.0/24".parse().unwrap(),
                gw: None,
            },
        );
        assert_eq!((on_link.gw, on_link.scope), (None, RouteScope::Link));
    }
}
