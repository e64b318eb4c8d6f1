//! The cluster as the controller sees it, and each host's desired state computed from it
//! **incrementally**: an [`Update`] (one etcd record put or deleted) yields the [`Change`]s of
//! exactly the hosts it concerns, with work proportional to those changes, not to the cluster.
//!
//! **Membership.** A host is a *member* of network N while it holds an IPAM block or an
//! endpoint of N (the agent claims a block at its first ADD on N). Only members hold N, and a
//! member sees only the other members: a host holds the networks its containers use, not every
//! network of the cluster, so at 10,000 hosts and a million endpoints a host holds its tenants'
//! few thousand endpoints, not all of them (Swarm's overlay is on the nodes with tasks attached;
//! OVN's conditional monitoring does the same for chassis).
//!
//! What a registered host H should hold ([`Model::desired`]): every overlay network N that has
//! a VNI and of which H is a member, as a [`NetworkDesired`] with N's pools (CIDR + gateway),
//! its `mode` option (`vxlan` by default, `routed`), H's underlay IP, every endpoint address of
//! N on another registered host (IP, MAC, that host's underlay IP) and every other registered
//! member with its blocks in N. A host that is not registered holds nothing.
//!
//! How an update becomes changes: the state is split into *atoms* per host — a network's own
//! settings (`Net`), one endpoint address (`Ep`: network, IP), one remote host (`Host`: network,
//! underlay IP). An update names the atoms it may move (an endpoint: its old and new addresses;
//! a host: its old and new underlay IP and its endpoints, in every network; a block: its host in
//! its network; a network or VNI: that network's settings), for every registered host (and the
//! host itself when it registers or goes). Each atom is evaluated before and after the update
//! and only the ones that differ become changes: a `Net` atom that moved becomes a whole
//! `NetworkPut` (or `NetworkDel`), the others `EndpointPut/Del`, `HostPut/Del`. The hosts
//! evaluated are the members of the networks the update is about (plus the host whose
//! membership or registration changes), so an endpoint put costs O(members × its addresses),
//! a block O(members), a host put O(members of its networks × (its networks + its endpoints));
//! a block or endpoint that makes its host join or leave a network also moves that host's
//! `Net` atom and the others' `Host` atom of it. The property test checks that the changes
//! applied to each host's previous state always equal the full recomputation.
//!
//! Invariants the store keeps and this model does not rely on: one endpoint per address of a
//! network, one host per underlay IP. If two records claim one address, the later put wins in
//! the index and both paths (incremental and full) see the same winner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use overlay_vxlan::{HostDesired, Mac, Mode, NetworkDesired, RemoteEndpoint, RemoteHost, Subnet};
use store::etcd::{Block, Host};
use store::{Driver, Endpoint, Network};

use crate::proto::Change;

mod incremental;
mod records;
mod views;

/// The option that picks how an overlay network crosses hosts (`vxlan` | `routed`).
pub const MODE_OPTION: &str = "mode";

/// One record of etcd put (`Some`) or deleted (`None`), by its key relative to its kind's
/// directory (`store::etcd::Kind`): networks `ID`, VNIs `NETWORK_ID`, hosts `NAME`, blocks
/// `NETWORK_ID/ADDR_LEN`, endpoints `NETWORK_ID/ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Network(String, Option<Network>),
    Vni(String, Option<u32>),
    Host(String, Option<Host>),
    Block(String, Option<Block>),
    Endpoint(String, Option<Endpoint>),
}

/// The kinds of records the model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Networks,
    Vnis,
    Hosts,
    Blocks,
    Endpoints,
}

/// The changes of one update or batch, per host; a host whose registration changed is listed
/// even when it has no change (the hub resets its stream). Hosts that get the same changes
/// (every other member, for an endpoint) share one list: the hub serializes each list once.
pub type Output = BTreeMap<String, Arc<Vec<Change>>>;

/// An overlay network's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Net {
    subnets: Vec<Subnet>,
    mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ep {
    network: String,
    host: String,
    /// `None` when the record's MAC does not parse or is not unicast (not shown to other
    /// hosts; nor are addresses outside the network's subnets).
    mac: Option<Mac>,
    ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Blk {
    network: String,
    cidr: IpNet,
    host: String,
}

/// A piece of one host's state: a network's settings, an endpoint address, a remote host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Atom {
    Net(String),
    Ep(String, IpAddr),
    Host(String, IpAddr),
}

impl Atom {
    fn network(&self) -> &str {
        match self {
            Atom::Net(n) | Atom::Ep(n, _) | Atom::Host(n, _) => n,
        }
    }
}

/// An atom's value for any host, before the receiver is known: the network's VNI and
/// settings; an endpoint address and the host it is on; a remote host and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    Net(Option<(u32, Net)>),
    Ep(Option<(String, RemoteEndpoint)>),
    Host(Option<(String, RemoteHost)>),
}

/// An atom's value for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Net(Option<(u32, Net, IpAddr)>),
    Ep(Option<RemoteEndpoint>),
    Host(Option<RemoteHost>),
}

/// The controller's view of the cluster (see the module note).
#[derive(Debug, Default)]
pub struct Model {
    /// Overlay networks only, by id.
    networks: BTreeMap<String, Net>,
    vnis: BTreeMap<String, u32>,
    /// Registered hosts: name → underlay IP.
    hosts: BTreeMap<String, IpAddr>,
    host_by_ip: BTreeMap<IpAddr, String>,
    blocks: BTreeMap<String, Blk>,
    /// network → host → its blocks there.
    blocks_by: BTreeMap<String, BTreeMap<String, BTreeSet<IpNet>>>,
    endpoints: BTreeMap<String, Ep>,
    /// network → address → endpoint key.
    addrs: BTreeMap<String, BTreeMap<IpAddr, String>>,
    /// host name → keys of its endpoints.
    eps_by_host: BTreeMap<String, BTreeSet<String>>,
    /// network → member host → its blocks and endpoints there (see the module note).
    members: BTreeMap<String, BTreeMap<String, usize>>,
    /// host → the networks it is a member of.
    member_of: BTreeMap<String, BTreeSet<String>>,
    /// Per network, its endpoints and members as any member sees them, built on first use
    /// after the network changed: the full states of many hosts (every agent at a leader's
    /// start) share one build, each dropping only its own entries.
    views: Mutex<HashMap<String, Arc<View>>>,
}

/// A network's endpoint addresses and member hosts, each with the host it belongs to.
#[derive(Debug, Default)]
struct View {
    endpoints: Vec<(String, RemoteEndpoint)>,
    hosts: Vec<(String, RemoteHost)>,
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // Unicast and not all zeros: what the agent accepts.
    let unicast = out != [0; 6] && out[0] & 1 == 0;
    (parts.next().is_none() && unicast).then_some(Mac(out))
}

fn net_of(n: &Network) -> Option<Net> {
    if n.driver != Driver::Overlay {
        return None;
    }
    let mode = match n.options.get(MODE_OPTION).map(String::as_str) {
        Some("routed") => Mode::Routed,
        _ => Mode::Vxlan,
    };
    Some(Net {
        subnets: n
            .ipam
            .iter()
            .map(|p| Subnet {
                cidr: p.subnet,
                gateway: p.gateway,
            })
            .collect(),
        mode,
    })
}

fn ep_of(e: &Endpoint) -> Ep {
    Ep {
        network: e.network_id.clone(),
        host: e.host.clone(),
        mac: parse_mac(&e.mac),
        ips: [e.ipv4, e.ipv6]
            .iter()
            .flatten()
            .map(|n| n.addr())
            .collect(),
    }
}

fn blk_of(b: &Block) -> Blk {
    Blk {
        network: b.network_id.clone(),
        cidr: b.cidr,
        host: b.host.clone(),
    }
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// The registered hosts' names.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    pub fn is_registered(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// Whether each of `names` (sorted, `n` of them) is a registered host, in order: one walk
    /// along the host list when the names are a good part of it (a wide network's members),
    /// else a lookup each.
    pub fn registered<'a>(&self, names: impl Iterator<Item = &'a String>, n: usize) -> Vec<bool> {
        if n.saturating_mul(8) < self.hosts.len() {
            return names.map(|h| self.hosts.contains_key(h)).collect();
        }
        let mut hosts = self.hosts.keys().peekable();
        names
            .map(|h| {
                while hosts.next_if(|x| *x < h).is_some() {}
                hosts.peek() == Some(&h)
            })
            .collect()
    }

    /// Counts for logs and metrics: (overlay networks, hosts, endpoints).
    pub fn size(&self) -> (usize, usize, usize) {
        (self.networks.len(), self.hosts.len(), self.endpoints.len())
    }

    /// Takes in an update without computing changes (the first load: every stream starts with
    /// a full state anyway).
    pub fn load(&mut self, u: Update) {
        self.mutate(u);
    }
}

/// Appends `more`'s changes to `out`'s, host by host.
pub fn merge(out: &mut Output, more: Output) {
    if out.is_empty() {
        // The one update of a batch (the common case): nothing to merge with.
        *out = more;
        return;
    }
    for (h, c) in more {
        Arc::make_mut(out.entry(h).or_default()).extend(c.iter().cloned());
    }
}

#[cfg(test)]
mod tests;
