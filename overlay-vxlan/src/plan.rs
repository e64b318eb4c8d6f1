//! Observe → plan (pure) → apply over the entries the overlay owns on one host.
//!
//! Owned entries, found again by where they live and how they look:
//! - FDB remotes: `self` entries with a `dst` on the network's vxlan device (`bridge fdb
//!   append MAC dev knvxN dst VTEP self permanent`), one per remote MAC and one all-zeros
//!   flood entry per remote host;
//! - bridge entries: `static` `master` entries for the remote MACs on the vxlan port
//!   (`bridge fdb add MAC dev knvxN master static`), so the bridge neither floods unicast to
//!   remote MACs out of every local port nor lacks what `neigh_suppress` needs to answer ARP;
//! - neighbours: `permanent` entries on the bridge (`ip neigh replace IP lladdr MAC dev knovX
//!   nud permanent`): with `neigh_suppress` on the vxlan port, the bridge answers the local
//!   containers' ARP and ND for remote addresses itself, so no ARP crosses the tunnel; the
//!   host's own traffic to remote endpoints uses them too;
//! - routes (routed mode): `proto 107` routes inside the network's subnets (`ip route replace
//!   BLOCK via HOST_UNDERLAY proto 107`).
//!
//! Anything else (learned or local FDB entries, dynamic neighbours, other protocols' routes,
//! other links) is not ours and is left alone. The state is proportional to the network's
//! remote endpoints plus its hosts; one sync costs three dumps of it.

use std::collections::{BTreeMap, BTreeSet};

use libnet::netlink::fdb::FDB_STATIC;
use libnet::netlink::ops::{plan_fdb, FdbPlan};
use libnet::netlink::route::RouteScope;
use libnet::netlink::{FdbEntry, Neigh, Netlink, Route};

use crate::desired::{Mode, NetworkDesired};
use crate::error::{InNetwork, OverlayError};
use crate::links::NetworkLinks;
use crate::names::RTPROT_KNIT_OVERLAY;

/// What the kernel has of a network's entries (everything on its links; the planner picks
/// out what is ours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `bridge fdb show dev knvxN` (self and master entries of the vxlan port).
    pub fdb: Vec<FdbEntry>,
    /// `ip neigh show dev knovX`
    pub neighs: Vec<Neigh>,
    /// `ip route show table all proto 107` (both families)
    pub routes: Vec<Route>,
}

/// Read the network's entries (only reads).
pub fn observe(
    nl: &impl Netlink,
    net: &NetworkDesired,
    links: &NetworkLinks,
) -> Result<Observed, OverlayError> {
    let id = net.id.as_str();
    let fdb = match links.vxlan {
        Some(vx) => nl.fdb(vx).in_net(id)?,
        None => Vec::new(),
    };
    let mut routes = nl.routes(false).in_net(id)?;
    routes.extend(nl.routes(true).in_net(id)?);
    routes.retain(|r| r.protocol == RTPROT_KNIT_OVERLAY);
    Ok(Observed {
        fdb,
        neighs: nl.neighs(links.bridge).in_net(id)?,
        routes,
    })
}

/// The entries a network should have on this host (pure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub remotes: Vec<FdbEntry>,
    pub ports: Vec<FdbEntry>,
    pub neighs: Vec<Neigh>,
    pub routes: Vec<Route>,
}

/// `MAC dev #PORT master static`
fn port_entry(port: u32, mac: [u8; 6]) -> FdbEntry {
    FdbEntry {
        index: port,
        mac,
        dst: None,
        vlan: None,
        is_self: false,
        state: FDB_STATIC,
        master: None,
    }
}

/// The routed-mode route to a remote block.
pub fn block_route(block: ipnet::IpNet, via: std::net::IpAddr) -> Route {
    Route {
        scope: RouteScope::Universe,
        protocol: RTPROT_KNIT_OVERLAY,
        ..Route::new(block, Some(via), None)
    }
}

/// What `net` wants on `links` (pure; duplicates removed).
pub fn wanted(net: &NetworkDesired, links: &NetworkLinks) -> Wanted {
    let mut w = Wanted::default();
    match (net.mode, links.vxlan) {
        (Mode::Vxlan, Some(vx)) => {
            for h in net.remote_hosts() {
                w.remotes
                    .push(FdbEntry::vxlan_remote(vx, [0; 6], h.underlay_ip));
            }
            for e in net.remote_endpoints() {
                w.remotes.push(FdbEntry::vxlan_remote(vx, e.mac.0, e.host));
                w.ports.push(port_entry(vx, e.mac.0));
                w.neighs.push(Neigh::permanent(links.bridge, e.ip, e.mac.0));
            }
        }
        (Mode::Routed, _) => {
            for h in net.remote_hosts() {
                for b in &h.blocks {
                    w.routes.push(block_route(*b, h.underlay_ip));
                }
            }
        }
        (Mode::Vxlan, None) => {}
    }
    w.remotes.sort();
    w.remotes.dedup();
    w.ports.sort();
    w.ports.dedup();
    w.neighs.sort();
    w.neighs.dedup();
    w.routes.sort_by_key(|r| (r.dst, r.gw));
    w.routes.dedup_by_key(|r| (r.dst, r.gw));
    w
}

/// What [`apply_plan`](crate::apply::apply_plan) changes, in the order it does it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// vxlan remotes (libnet's FDB plan: append, replace moved MACs, delete).
    pub remotes: FdbPlan,
    /// Bridge entries of remote MACs on the vxlan port to add / delete.
    pub port_add: Vec<FdbEntry>,
    pub port_del: Vec<FdbEntry>,
    /// Neighbours to write (new, or an address that changed hands) / delete.
    pub neigh_replace: Vec<Neigh>,
    pub neigh_del: Vec<Neigh>,
    /// Routes to write (new, or a block that moved) / delete.
    pub route_replace: Vec<Route>,
    pub route_del: Vec<Route>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self == &Plan::default()
    }
}

fn is_our_port_entry(e: &FdbEntry) -> bool {
    !e.is_self && e.dst.is_none() && e.state == FDB_STATIC
}

/// Diff what `net` wants against what was observed (pure; O(n log n) in the entries).
pub fn plan_network(net: &NetworkDesired, links: &NetworkLinks, seen: &Observed) -> Plan {
    let w = wanted(net, links);
    let mut p = Plan {
        remotes: plan_fdb(&seen.fdb, &w.remotes),
        ..Plan::default()
    };

    let have: BTreeSet<_> = seen
        .fdb
        .iter()
        .filter(|e| is_our_port_entry(e))
        .map(FdbEntry::key)
        .collect();
    let want: BTreeSet<_> = w.ports.iter().map(FdbEntry::key).collect();
    p.port_add = w
        .ports
        .iter()
        .filter(|e| !have.contains(&e.key()))
        .cloned()
        .collect();
    p.port_del = seen
        .fdb
        .iter()
        .filter(|c| is_our_port_entry(c) && !want.contains(&c.key()))
        .cloned()
        .collect();

    let have: BTreeMap<_, _> = seen
        .neighs
        .iter()
        .filter(|n| n.is_permanent())
        .map(|n| (n.ip, n.mac))
        .collect();
    let want: BTreeSet<_> = w.neighs.iter().map(|n| n.ip).collect();
    p.neigh_replace = w
        .neighs
        .iter()
        .filter(|n| have.get(&n.ip) != Some(&n.mac))
        .cloned()
        .collect();
    p.neigh_del = seen
        .neighs
        .iter()
        .filter(|c| c.is_permanent() && !want.contains(&c.ip))
        .cloned()
        .collect();

    // Only this network's routes: those inside its subnets.
    let ours = |r: &&Route| r.protocol == RTPROT_KNIT_OVERLAY && net.covers(&r.dst);
    let have: BTreeSet<_> = seen
        .routes
        .iter()
        .filter(ours)
        .map(|r| (r.dst, r.gw))
        .collect();
    let want: BTreeSet<_> = w.routes.iter().map(|r| r.dst).collect();
    p.route_replace = w
        .routes
        .iter()
        .filter(|r| !have.contains(&(r.dst, r.gw)))
        .cloned()
        .collect();
    p.route_del = seen
        .routes
        .iter()
        .filter(|c| ours(c) && !want.contains(&c.dst))
        .cloned()
        .collect();
    p
}

/// The plan from `old` to `new` without reading the kernel: [`plan_network`] against a kernel
/// holding exactly what `old` wants (pure). For the agent's deltas, so their cost follows the
/// delta and not the network's size; the periodic [`sync_network`](crate::sync_network)
/// catches whatever drifted meanwhile. Only for the same VNI, mode, underlay IP and subnets:
/// a change of those goes through `sync_network`.
pub fn plan_delta(old: &NetworkDesired, new: &NetworkDesired, links: &NetworkLinks) -> Plan {
    let w = wanted(old, links);
    let mut fdb = w.remotes;
    fdb.extend(w.ports);
    let seen = Observed {
        fdb,
        neighs: w.neighs,
        routes: w.routes,
    };
    plan_network(new, links, &seen)
}
