//! Routes: `ip route ...`. Only unicast routes in a given table are modelled; that is all knit
//! programs.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope as NlScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Handle, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteScope {
    #[default]
    Universe,
    Link,
    Host,
}

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    pub table: u32,
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub src: Option<IpAddr>,
    /// rtm_protocol; knit marks the routes it owns so it can find them again.
    pub protocol: u8,
}

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// `proto boot`: what `ip route add` uses by default, and what the reference plugins leave.
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_KERNEL: u8 = 2;

impl Route {
    /// A route to `dst` via `gw` (or on-link when `gw` is None) out of `oif`, in the main table.
    pub fn new(dst: IpNet, gw: Option<IpAddr>, oif: Option<u32>) -> Route {
        Route {
            dst: dst.trunc(),
            gw,
            oif,
            scope: if gw.is_none() && dst.addr().is_ipv4() {
                RouteScope::Link
            } else {
                RouteScope::Universe
            },
            table: RT_TABLE_MAIN,
            metric: None,
            mtu: None,
            advmss: None,
            src: None,
            protocol: RTPROT_BOOT,
        }
    }

    fn to_msg(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = match self.dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.destination_prefix_length = self.dst.prefix_len();
        m.header.table = if self.table < 256 {
            self.table as u8
        } else {
            0
        };
        m.header.protocol = RouteProtocol::from(self.protocol);
        m.header.scope = match self.scope {
            RouteScope::Universe => NlScope::Universe,
            RouteScope::Link => NlScope::Link,
            RouteScope::Host => NlScope::Host,
        };
        m.header.kind = RouteType::Unicast;
        if self.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.dst.addr(),
                )));
        }
        if self.table >= 256 {
            m.attributes.push(RouteAttribute::Table(self.table));
        }
        if let Some(gw) = self.gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(p) = self.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(src) = self.src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = self.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(a) = self.advmss {
            metrics.push(RouteMetric::Advmss(a));
        }
        if !metrics.is_empty() {
            m.attributes.push(RouteAttribute::Metrics(metrics));
        }
        m
    }
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn route_from_msg(m: RouteMessage) -> Option<Route> {
    let h: &RouteHeader = &m.header;
    if h.kind != RouteType::Unicast {
        return None;
    }
    let v6 = h.address_family == AddressFamily::Inet6;
    let mut r = Route {
        dst: if v6 {
            "::/0".parse().ok()?
        } else {
            "0.0.0.0/0".parse().ok()?
        },
        gw: None,
        oif: None,
        scope: match h.scope {
            NlScope::Link => RouteScope::Link,
            NlScope::Host => RouteScope::Host,
            _ => RouteScope::Universe,
        },
        table: u32::from(h.table),
        metric: None,
        mtu: None,
        advmss: None,
        src: None,
        protocol: u8::from(h.protocol),
    };
    let plen = h.destination_prefix_length;
    for attr in m.attributes {
        match attr {
            RouteAttribute::Destination(a) => {
                r.dst = IpNet::new(ip_of(a)?, plen).ok()?;
            }
            RouteAttribute::Gateway(a) => r.gw = ip_of(a),
            RouteAttribute::Oif(i) => r.oif = Some(i),
            RouteAttribute::Priority(p) => r.metric = Some(p),
            RouteAttribute::Table(t) => r.table = t,
            RouteAttribute::PrefSource(a) => r.src = ip_of(a),
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    match x {
                        RouteMetric::Mtu(v) => r.mtu = Some(v),
                        RouteMetric::Advmss(v) => r.advmss = Some(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

impl Handle {
    /// `ip route add DST [via GW] [dev #OIF] [metric M] [mtu M] [table T]`
    pub fn add_route(&self, r: &Route) -> Result<()> {
        self.exec(
            "add route",
            &|| describe(r),
            RouteNetlinkMessage::NewRoute(r.to_msg()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip route replace ...`
    pub fn replace_route(&self, r: &Route) -> Result<()> {
        self.exec(
            "replace route",
            &|| describe(r),
            RouteNetlinkMessage::NewRoute(r.to_msg()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// `ip route del ...`; a missing route is success.
    pub fn del_route(&self, r: &Route) -> Result<()> {
        let mut m = r.to_msg();
        m.header.scope = NlScope::NoWhere;
        m.header.protocol = RouteProtocol::Unspec;
        match self.exec(
            "del route",
            &|| describe(r),
            RouteNetlinkMessage::DelRoute(m),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ESRCH) | Some(libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    /// `ip [-6] route show table all` filtered to unicast routes.
    pub fn routes(&self, v6: bool) -> Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        Ok(self
            .dump("dump routes", RouteNetlinkMessage::GetRoute(m))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_from_msg(r),
                _ => None,
            })
            .collect())
    }
}

fn describe(r: &Route) -> String {
    let mut s = format!("route {}", r.dst);
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    s
}
