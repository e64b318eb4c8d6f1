//! Apply a [`Plan`]: the only code of the overlay that writes entries.

use libnet::netlink::Netlink;

use crate::desired::{HostDesired, NetworkDesired};
use crate::error::{DesiredError, InNetwork, OverlayError};
use crate::links::{ensure_network, remove_stale_networks, NetworkLinks, Removed};
use crate::plan::{observe, plan_delta, plan_network, wanted, Plan};

/// What an apply did, for the agent's metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// FDB remotes appended (new MACs, new flood targets).
    pub fdb_added: usize,
    /// Unicast MACs moved to another host (`bridge fdb replace`).
    pub fdb_moved: usize,
    /// FDB remotes deleted.
    pub fdb_removed: usize,
    /// Bridge (master) entries of remote MACs added / deleted.
    pub port_added: usize,
    pub port_removed: usize,
    /// Neighbour entries written (new, or an address that changed hands) / deleted.
    pub neigh_replaced: usize,
    pub neigh_removed: usize,
    /// Routes written / deleted (routed mode).
    pub routes_replaced: usize,
    pub routes_removed: usize,
}

impl Applied {
    /// Number of kernel changes.
    pub fn changes(&self) -> usize {
        self.fdb_added
            + self.fdb_moved
            + self.fdb_removed
            + self.port_added
            + self.port_removed
            + self.neigh_replaced
            + self.neigh_removed
            + self.routes_replaced
            + self.routes_removed
    }

    fn add(&mut self, o: &Applied) {
        self.fdb_added += o.fdb_added;
        self.fdb_moved += o.fdb_moved;
        self.fdb_removed += o.fdb_removed;
        self.port_added += o.port_added;
        self.port_removed += o.port_removed;
        self.neigh_replaced += o.neigh_replaced;
        self.neigh_removed += o.neigh_removed;
        self.routes_replaced += o.routes_replaced;
        self.routes_removed += o.routes_removed;
    }
}

/// Carry out `plan`: paths first (FDB remotes, moves, bridge entries), then the neighbours
/// and routes that use them, then deletions in reverse (neighbours before the FDB entries
/// they point at). Stops at the first failure; the next sync observes and continues from
/// what the kernel then has.
pub fn apply_plan(nl: &impl Netlink, network: &str, plan: &Plan) -> Result<Applied, OverlayError> {
    let mut done = Applied::default();
    for e in &plan.remotes.append {
        nl.append_fdb(e).in_net(network)?;
        done.fdb_added += 1;
    }
    for e in &plan.remotes.replace {
        nl.replace_fdb(e).in_net(network)?;
        done.fdb_moved += 1;
    }
    for e in &plan.port_add {
        nl.append_fdb(e).in_net(network)?;
        done.port_added += 1;
    }
    for n in &plan.neigh_replace {
        nl.replace_neigh(n).in_net(network)?;
        done.neigh_replaced += 1;
    }
    for r in &plan.route_replace {
        nl.replace_route(r).in_net(network)?;
        done.routes_replaced += 1;
    }
    for n in &plan.neigh_del {
        nl.del_neigh(n).in_net(network)?;
        done.neigh_removed += 1;
    }
    for e in &plan.port_del {
        nl.del_fdb(e).in_net(network)?;
        done.port_removed += 1;
    }
    for e in &plan.remotes.del {
        nl.del_fdb(e).in_net(network)?;
        done.fdb_removed += 1;
    }
    for r in &plan.route_del {
        nl.del_route(r).in_net(network)?;
        done.routes_removed += 1;
    }
    Ok(done)
}

/// One network brought to its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub links: NetworkLinks,
    pub applied: Applied,
    /// FDB remotes the network now has on this host (gauge).
    pub fdb_entries: usize,
    /// Neighbour entries it now has (gauge).
    pub neighs: usize,
    /// Routes it now has (gauge).
    pub routes: usize,
}

/// [`ensure_network`], then observe → [`plan_network`] → [`apply_plan`]. Idempotent: a
/// second call with the same `net` changes nothing.
pub fn sync_network(nl: &impl Netlink, net: &NetworkDesired) -> Result<Synced, OverlayError> {
    let links = ensure_network(nl, net)?;
    let seen = observe(nl, net, &links)?;
    let plan = plan_network(net, &links, &seen);
    let applied = apply_plan(nl, &net.id, &plan)?;
    let w = wanted(net, &links);
    Ok(Synced {
        links,
        applied,
        fdb_entries: w.remotes.len(),
        neighs: w.neighs.len(),
        routes: w.routes.len(),
    })
}

/// Apply the change from `old` to `new` (one network, same VNI, mode, underlay IP and
/// subnets, as [`ensure_network`] left `links`) without reading the kernel's tables: see
/// [`plan_delta`]. Anything else about the two states (a different VNI, mode, underlay or
/// subnets) is refused as invalid; `sync_network` handles those.
pub fn apply_delta(
    nl: &impl Netlink,
    links: &NetworkLinks,
    old: &NetworkDesired,
    new: &NetworkDesired,
) -> Result<Applied, OverlayError> {
    new.validate()?;
    let same = (old.vni, old.mode, old.underlay_ip, &old.subnets)
        == (new.vni, new.mode, new.underlay_ip, &new.subnets);
    if !same {
        return Err(DesiredError {
            network: new.id.clone(),
            detail: "a delta changes VNI, mode, underlay or subnets: sync the network".into(),
        }
        .into());
    }
    apply_plan(nl, &new.id, &plan_delta(old, new, links))
}

/// A whole host's reconcile.
#[derive(Debug, Default)]
pub struct HostSynced {
    /// The networks synced, by id.
    pub networks: Vec<(String, Synced)>,
    /// All networks' changes together.
    pub applied: Applied,
    /// Links and routes of networks no longer desired, deleted.
    pub removed: Removed,
    /// Networks that failed (the others were still synced), and a failed clean-up.
    pub errors: Vec<OverlayError>,
}

/// Bring the host to `host`: [`sync_network`] for each network (one failing, or invalid,
/// does not stop the others), then [`remove_stale_networks`] for VNIs no longer listed. A
/// message of an unknown format or giving one VNI to two networks changes nothing at all.
/// For start-up, the periodic pass, and after a lost stream — always with a *complete*
/// state (the controller's full resync): a network missing from `host` is deleted.
pub fn sync_host(nl: &impl Netlink, host: &HostDesired) -> HostSynced {
    let mut out = HostSynced::default();
    if let Err(e) = host.check_host() {
        out.errors.push(e.into());
        return out;
    }
    for net in &host.networks {
        match sync_network(nl, net) {
            Ok(s) => {
                out.applied.add(&s.applied);
                out.networks.push((net.id.clone(), s));
            }
            Err(e) => out.errors.push(e),
        }
    }
    match remove_stale_networks(nl, &host.networks) {
        Ok(r) => out.removed = r,
        Err(e) => out.errors.push(e),
    }
    out
}
