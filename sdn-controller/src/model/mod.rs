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

    /// Takes in an update and returns the changes of every host it concerns.
    pub fn apply(&mut self, u: Update) -> Output {
        let (atoms, mut scope) = self.touched(&u);
        let registering = match &u {
            Update::Host(name, _) => {
                scope.insert(name.clone());
                Some(name.clone())
            }
            _ => None,
        };
        let one_network = atoms
            .iter()
            .all(|a| Some(a.network()) == atoms.first().map(Atom::network));
        if matches!(u, Update::Endpoint(..))
            && one_network
            && atoms.iter().all(|a| matches!(a, Atom::Ep(..)))
        {
            return self.apply_addresses(u, &atoms, &scope);
        }
        let was = registering.as_ref().map(|h| self.is_registered(h));
        let bases: Vec<Base> = atoms.iter().map(|a| self.base(a)).collect();
        let before: Vec<Vec<Val>> = scope.iter().map(|h| self.vals(h, &atoms, &bases)).collect();
        self.mutate(u);
        let bases: Vec<Base> = atoms.iter().map(|a| self.base(a)).collect();
        let mut out = Output::new();
        for (h, before) in scope.iter().zip(before) {
            let now = self.vals(h, &atoms, &bases);
            if now == before {
                continue;
            }
            let changes = self.diff(h, &atoms, &before, &now);
            if !changes.is_empty() {
                out.insert(h.clone(), Arc::new(changes));
            }
        }
        if let (Some(h), Some(was)) = (registering, was) {
            if was != self.is_registered(&h) {
                out.entry(h).or_default();
            }
        }
        out
    }

    /// An endpoint update within one network that moves no host in or out of it (only `Ep`
    /// atoms, so `scope` is that network's registered members): every member sees the same
    /// addresses, so the changes are computed once and given to every
    /// member but the hosts the addresses are on (before or after), which are diffed one by
    /// one. The common case, and the one that reaches every host of a wide network.
    fn apply_addresses(&mut self, u: Update, atoms: &[Atom], scope: &BTreeSet<String>) -> Output {
        let before: Vec<Base> = atoms.iter().map(|a| self.base(a)).collect();
        let mut own: BTreeSet<String> = BTreeSet::new();
        if let Update::Endpoint(key, new) = &u {
            own.extend(self.endpoints.get(key).map(|e| e.host.clone()));
            own.extend(new.as_ref().map(|e| e.host.clone()));
        }
        for b in &before {
            if let Base::Ep(Some((o, _))) = b {
                own.insert(o.clone());
            }
        }
        let own: Vec<(String, Vec<Val>)> = own
            .into_iter()
            .filter(|h| scope.contains(h))
            .map(|h| {
                let v = self.vals(&h, atoms, &before);
                (h, v)
            })
            .collect();
        self.mutate(u);
        let after: Vec<Base> = atoms.iter().map(|a| self.base(a)).collect();
        let mut common = Vec::new();
        for ((a, b), n) in atoms.iter().zip(&before).zip(&after) {
            let (Atom::Ep(net, ip), Base::Ep(b), Base::Ep(n)) = (a, b, n) else {
                continue;
            };
            let (b, n) = (b.as_ref().map(|x| &x.1), n.as_ref().map(|x| &x.1));
            match n {
                _ if b == n => {}
                Some(e) => common.push(Change::EndpointPut {
                    network: net.clone(),
                    endpoint: e.clone(),
                }),
                None => common.push(Change::EndpointDel {
                    network: net.clone(),
                    ip: *ip,
                }),
            }
        }
        // `scope` is sorted: the map is built in one pass, not searched per host.
        let mut out: Output = if common.is_empty() {
            Output::new()
        } else {
            let common = Arc::new(common);
            scope
                .iter()
                .filter(|h| !own.iter().any(|(o, _)| o == *h))
                .map(|h| (h.clone(), common.clone()))
                .collect()
        };
        for (h, before) in &own {
            let now = self.vals(h, atoms, &after);
            if now != *before {
                let changes = self.diff(h, atoms, before, &now);
                if !changes.is_empty() {
                    out.insert(h.clone(), Arc::new(changes));
                }
            }
        }
        out
    }

    /// Replaces every record of `kind` with `records` (puts), as after a watch that fell behind
    /// a compaction: deletes what is gone, puts what differs, and returns the changes.
    pub fn resync(&mut self, kind: RecordKind, records: Vec<Update>) -> Output {
        let mut present = BTreeSet::new();
        let mut updates = Vec::new();
        for u in records {
            let (key, same) = match &u {
                Update::Network(k, v) => (
                    k,
                    v.as_ref().and_then(net_of) == self.networks.get(k).cloned(),
                ),
                Update::Vni(k, v) => (k, v.as_ref() == self.vnis.get(k)),
                Update::Host(k, v) => (
                    k,
                    v.as_ref().map(|h| h.underlay_ip) == self.hosts.get(k).copied(),
                ),
                Update::Block(k, v) => (k, v.as_ref().map(blk_of).as_ref() == self.blocks.get(k)),
                Update::Endpoint(k, v) => {
                    (k, v.as_ref().map(ep_of).as_ref() == self.endpoints.get(k))
                }
            };
            present.insert(key.clone());
            if !same {
                updates.push(u);
            }
        }
        let keys: Vec<String> = match kind {
            RecordKind::Networks => self.networks.keys().cloned().collect(),
            RecordKind::Vnis => self.vnis.keys().cloned().collect(),
            RecordKind::Hosts => self.hosts.keys().cloned().collect(),
            RecordKind::Blocks => self.blocks.keys().cloned().collect(),
            RecordKind::Endpoints => self.endpoints.keys().cloned().collect(),
        };
        for k in keys.into_iter().filter(|k| !present.contains(k)) {
            updates.push(match kind {
                RecordKind::Networks => Update::Network(k, None),
                RecordKind::Vnis => Update::Vni(k, None),
                RecordKind::Hosts => Update::Host(k, None),
                RecordKind::Blocks => Update::Block(k, None),
                RecordKind::Endpoints => Update::Endpoint(k, None),
            });
        }
        let mut out = Output::new();
        for u in updates {
            merge(&mut out, self.apply(u));
        }
        out
    }

    /// Everything `host` should hold now (empty when it is not registered), sorted by network
    /// id, endpoint IP and host IP.
    pub fn desired(&self, host: &str) -> HostDesired {
        let networks = self
            .member_of
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|n| self.network_view(host, n))
            .collect();
        HostDesired {
            format: overlay_vxlan::FORMAT,
            networks,
        }
    }

    /// Network `n` as `host` should see it, if it should see it.
    fn network_view(&self, host: &str, n: &str) -> Option<NetworkDesired> {
        let Val::Net(Some((vni, net, underlay_ip))) = self.eval(host, &Atom::Net(n.to_string()))
        else {
            return None;
        };
        let view = self.view(n);
        Some(NetworkDesired {
            id: n.to_string(),
            vni,
            subnets: net.subnets,
            mode: net.mode,
            underlay_ip,
            endpoints: view
                .endpoints
                .iter()
                .filter(|(o, _)| o != host)
                .map(|(_, e)| e.clone())
                .collect(),
            hosts: view
                .hosts
                .iter()
                .filter(|(o, _)| o != host)
                .map(|(_, h)| h.clone())
                .collect(),
        })
    }

    /// Network `n`'s [`View`], built now if it changed since the last one.
    fn view(&self, n: &str) -> Arc<View> {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = views.get(n) {
            return v.clone();
        }
        let endpoints = self
            .addrs
            .get(n)
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(|ip| self.ep_base(n, *ip))
            .map(|(o, e)| (o.to_string(), e))
            .collect();
        // By underlay IP, each once (two members claiming one IP: the index's winner).
        let hosts: BTreeMap<IpAddr, (String, RemoteHost)> = self
            .members
            .get(n)
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(|m| self.hosts.get(m))
            .filter_map(|ip| self.host_base(n, *ip))
            .map(|(o, h)| (h.underlay_ip, (o.to_string(), h)))
            .collect();
        let v = Arc::new(View {
            endpoints,
            hosts: hosts.into_values().collect(),
        });
        views.insert(n.to_string(), v.clone());
        v
    }

    /// Drops the views `u` makes stale (before it is applied: its old record's network too).
    fn forget_views(&mut self, u: &Update) {
        let views = self.views.get_mut().unwrap_or_else(|p| p.into_inner());
        match u {
            Update::Network(id, _) | Update::Vni(id, _) => {
                views.remove(id);
            }
            // A host's address is in every view it appears in: rare enough to drop them all.
            Update::Host(..) => views.clear(),
            Update::Block(key, new) => {
                for n in self
                    .blocks
                    .get(key)
                    .map(|b| &b.network)
                    .into_iter()
                    .chain(new.as_ref().map(|b| &b.network_id))
                {
                    views.remove(n);
                }
            }
            Update::Endpoint(key, new) => {
                for n in self
                    .endpoints
                    .get(key)
                    .map(|e| &e.network)
                    .into_iter()
                    .chain(new.as_ref().map(|e| &e.network_id))
                {
                    views.remove(n);
                }
            }
        }
    }

    fn is_member(&self, n: &str, host: &str) -> bool {
        self.members.get(n).is_some_and(|m| m.contains_key(host))
    }

    /// The blocks and endpoints `host` has in `n`.
    fn holdings(&self, n: &str, host: &str) -> usize {
        self.members
            .get(n)
            .and_then(|m| m.get(host))
            .copied()
            .unwrap_or(0)
    }

    fn net_active(&self, n: &str) -> bool {
        self.networks.contains_key(n) && self.vnis.contains_key(n)
    }

    /// Endpoint address `ip` of `n` as any member sees it, with the host it is on (whose own
    /// view lacks it).
    fn ep_base(&self, n: &str, ip: IpAddr) -> Option<(&str, RemoteEndpoint)> {
        if !self.net_active(n) {
            return None;
        }
        let ep = self.endpoints.get(self.addrs.get(n)?.get(&ip)?)?;
        if !self
            .networks
            .get(n)?
            .subnets
            .iter()
            .any(|s| s.cidr.contains(&ip))
        {
            return None;
        }
        let e = RemoteEndpoint {
            ip,
            mac: ep.mac?,
            host: *self.hosts.get(&ep.host)?,
        };
        Some((ep.host.as_str(), e))
    }

    /// The host at underlay `ip` as any member of `n` sees it (itself excepted), if it is a
    /// member.
    fn host_base(&self, n: &str, ip: IpAddr) -> Option<(&str, RemoteHost)> {
        if !self.net_active(n) {
            return None;
        }
        let other = self.host_by_ip.get(&ip)?;
        if !self.is_member(n, other) {
            return None;
        }
        let blocks = self
            .blocks_by
            .get(n)
            .and_then(|m| m.get(other))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        Some((
            other.as_str(),
            RemoteHost {
                underlay_ip: ip,
                blocks,
            },
        ))
    }

    /// An atom's value before the receiving host is known.
    fn base(&self, a: &Atom) -> Base {
        match a {
            Atom::Net(n) => Base::Net((|| {
                Some((*self.vnis.get(n)?, self.networks.get(n)?.clone()))
            })()),
            Atom::Ep(n, ip) => Base::Ep(self.ep_base(n, *ip).map(|(h, v)| (h.to_string(), v))),
            Atom::Host(n, ip) => {
                Base::Host(self.host_base(n, *ip).map(|(h, v)| (h.to_string(), v)))
            }
        }
    }

    /// The atoms' values for `host`, from their [`Base`]s: nothing unless it is registered
    /// and a member of the atom's network; never its own endpoints or itself.
    fn vals(&self, host: &str, atoms: &[Atom], bases: &[Base]) -> Vec<Val> {
        let ip = self.hosts.get(host).copied();
        // Atoms come sorted: one membership lookup per network.
        let mut member: Option<(&str, bool)> = None;
        atoms
            .iter()
            .zip(bases)
            .map(|(a, b)| {
                let n = a.network();
                let m = match member {
                    Some((m, v)) if m == n => v,
                    _ => {
                        let v = self.is_member(n, host);
                        member = Some((n, v));
                        v
                    }
                };
                let on = ip.filter(|_| m);
                match b {
                    Base::Net(v) => Val::Net(
                        on.and_then(|ip| v.as_ref().map(|(vni, net)| (*vni, net.clone(), ip))),
                    ),
                    Base::Ep(v) => Val::Ep(
                        v.as_ref()
                            .filter(|(o, _)| on.is_some() && o != host)
                            .map(|(_, e)| e.clone()),
                    ),
                    Base::Host(v) => Val::Host(
                        v.as_ref()
                            .filter(|(o, _)| on.is_some() && o != host)
                            .map(|(_, h)| h.clone()),
                    ),
                }
            })
            .collect()
    }

    fn eval(&self, host: &str, a: &Atom) -> Val {
        let mut v = self.vals(host, std::slice::from_ref(a), &[self.base(a)]);
        v.pop().unwrap_or(Val::Net(None))
    }

    /// The atoms `u` may move, read from the state before it (the old record) and from `u`
    /// (the new one), and the hosts to evaluate them for: the registered members of the
    /// networks concerned, and a host whose membership changes.
    fn touched(&self, u: &Update) -> (Vec<Atom>, BTreeSet<String>) {
        let mut atoms = BTreeSet::new();
        let mut nets: BTreeSet<String> = BTreeSet::new();
        let mut scope = BTreeSet::new();
        // (network, host) of the old record and of the new: a host that joins or leaves.
        let flips = |atoms: &mut BTreeSet<Atom>,
                     scope: &mut BTreeSet<String>,
                     old: Option<(&str, &str)>,
                     new: Option<(&str, &str)>| {
            for (n, h) in old.iter().chain(new.iter()) {
                let had = self.holdings(n, h);
                let has = had + usize::from(new == Some((n, h))) - usize::from(old == Some((n, h)));
                if (had > 0) != (has > 0) {
                    atoms.insert(Atom::Net(n.to_string()));
                    if let Some(ip) = self.hosts.get(*h) {
                        atoms.insert(Atom::Host(n.to_string(), *ip));
                    }
                    scope.insert(h.to_string());
                }
            }
        };
        match u {
            Update::Network(id, _) | Update::Vni(id, _) => {
                atoms.insert(Atom::Net(id.clone()));
                nets.insert(id.clone());
            }
            Update::Endpoint(key, new) => {
                let new = new.as_ref().map(ep_of);
                let old = self.endpoints.get(key);
                for e in old.into_iter().chain(new.as_ref()) {
                    nets.insert(e.network.clone());
                    for ip in &e.ips {
                        atoms.insert(Atom::Ep(e.network.clone(), *ip));
                    }
                }
                fn pair(e: &Ep) -> (&str, &str) {
                    (e.network.as_str(), e.host.as_str())
                }
                flips(
                    &mut atoms,
                    &mut scope,
                    old.map(pair),
                    new.as_ref().map(pair),
                );
            }
            Update::Block(key, new) => {
                let new = new.as_ref().map(blk_of);
                let old = self.blocks.get(key);
                for b in old.into_iter().chain(new.as_ref()) {
                    nets.insert(b.network.clone());
                    if let Some(ip) = self.hosts.get(&b.host) {
                        atoms.insert(Atom::Host(b.network.clone(), *ip));
                    }
                }
                fn pair(b: &Blk) -> (&str, &str) {
                    (b.network.as_str(), b.host.as_str())
                }
                flips(
                    &mut atoms,
                    &mut scope,
                    old.map(pair),
                    new.as_ref().map(pair),
                );
            }
            Update::Host(name, new) => {
                let ips: Vec<IpAddr> = self
                    .hosts
                    .get(name)
                    .into_iter()
                    .chain(new.as_ref().map(|h| &h.underlay_ip))
                    .copied()
                    .collect();
                // The host itself, and any other claiming one of its addresses (the index's
                // winner may change): their networks' remote host at those addresses.
                let mut names: BTreeSet<&str> = BTreeSet::from([name.as_str()]);
                if ips.iter().any(|ip| self.host_by_ip.contains_key(ip)) {
                    names.extend(
                        self.hosts
                            .iter()
                            .filter(|(_, ip)| ips.contains(ip))
                            .map(|(h, _)| h.as_str()),
                    );
                }
                for h in names {
                    for n in self.member_of.get(h).into_iter().flatten() {
                        nets.insert(n.clone());
                        if h == name {
                            atoms.insert(Atom::Net(n.clone()));
                        }
                        for ip in &ips {
                            atoms.insert(Atom::Host(n.clone(), *ip));
                        }
                    }
                }
                for key in self.eps_by_host.get(name).into_iter().flatten() {
                    if let Some(e) = self.endpoints.get(key) {
                        for ip in &e.ips {
                            atoms.insert(Atom::Ep(e.network.clone(), *ip));
                        }
                    }
                }
            }
        }
        for m in nets.iter().filter_map(|n| self.members.get(n)) {
            let registered = self.registered(m.keys(), m.len());
            let members = m
                .keys()
                .zip(registered)
                .filter(|(_, r)| *r)
                .map(|(h, _)| h.clone());
            if scope.is_empty() {
                // Sorted: built in one pass, not searched per member.
                scope = members.collect();
            } else {
                scope.extend(members);
            }
        }
        (atoms.into_iter().collect(), scope)
    }

    /// The changes for `host` from `before` (the atoms' values before the update) to `now`.
    fn diff(&self, host: &str, atoms: &[Atom], before: &[Val], now: &[Val]) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        for ((a, b), v) in atoms.iter().zip(before).zip(now) {
            let Atom::Net(n) = a else { continue };
            if v == b {
                continue;
            }
            whole.insert(n);
            match self.network_view(host, n) {
                Some(network) => changes.push(Change::NetworkPut { network }),
                None if matches!(b, Val::Net(Some(_))) => {
                    changes.push(Change::NetworkDel { id: n.clone() })
                }
                None => {}
            }
        }
        for ((a, b), v) in atoms.iter().zip(before).zip(now) {
            if whole.contains(a.network()) || v == b {
                continue;
            }
            match (a, v) {
                (Atom::Ep(n, _), Val::Ep(Some(e))) => changes.push(Change::EndpointPut {
                    network: n.clone(),
                    endpoint: e.clone(),
                }),
                (Atom::Ep(n, ip), Val::Ep(None)) => changes.push(Change::EndpointDel {
                    network: n.clone(),
                    ip: *ip,
                }),
                (Atom::Host(n, _), Val::Host(Some(h))) => changes.push(Change::HostPut {
                    network: n.clone(),
                    host: h.clone(),
                }),
                (Atom::Host(n, ip), Val::Host(None)) => changes.push(Change::HostDel {
                    network: n.clone(),
                    underlay_ip: *ip,
                }),
                _ => {}
            }
        }
        changes
    }

    /// Applies `u` to the records and their indexes.
    fn mutate(&mut self, u: Update) {
        self.forget_views(&u);
        match u {
            Update::Network(id, v) => match v.as_ref().and_then(net_of) {
                Some(n) => {
                    self.networks.insert(id, n);
                }
                None => {
                    self.networks.remove(&id);
                }
            },
            Update::Vni(id, v) => match v {
                Some(v) => {
                    self.vnis.insert(id, v);
                }
                None => {
                    self.vnis.remove(&id);
                }
            },
            Update::Host(name, v) => {
                if let Some(old) = self.hosts.remove(&name) {
                    if self.host_by_ip.get(&old) == Some(&name) {
                        self.host_by_ip.remove(&old);
                    }
                }
                if let Some(h) = v {
                    self.hosts.insert(name.clone(), h.underlay_ip);
                    self.host_by_ip.insert(h.underlay_ip, name);
                }
            }
            Update::Block(key, v) => {
                if let Some(old) = self.blocks.remove(&key) {
                    self.leave(&old.network, &old.host);
                    if let Some(m) = self.blocks_by.get_mut(&old.network) {
                        if let Some(s) = m.get_mut(&old.host) {
                            s.remove(&old.cidr);
                            if s.is_empty() {
                                m.remove(&old.host);
                            }
                        }
                        if m.is_empty() {
                            self.blocks_by.remove(&old.network);
                        }
                    }
                }
                if let Some(b) = v.as_ref().map(blk_of) {
                    self.join(&b.network, &b.host);
                    self.blocks_by
                        .entry(b.network.clone())
                        .or_default()
                        .entry(b.host.clone())
                        .or_default()
                        .insert(b.cidr);
                    self.blocks.insert(key, b);
                }
            }
            Update::Endpoint(key, v) => {
                if let Some(old) = self.endpoints.remove(&key) {
                    self.leave(&old.network, &old.host);
                    if let Some(m) = self.addrs.get_mut(&old.network) {
                        for ip in &old.ips {
                            if m.get(ip) == Some(&key) {
                                m.remove(ip);
                            }
                        }
                        if m.is_empty() {
                            self.addrs.remove(&old.network);
                        }
                    }
                    if let Some(s) = self.eps_by_host.get_mut(&old.host) {
                        s.remove(&key);
                        if s.is_empty() {
                            self.eps_by_host.remove(&old.host);
                        }
                    }
                }
                if let Some(e) = v.as_ref().map(ep_of) {
                    self.join(&e.network, &e.host);
                    let m = self.addrs.entry(e.network.clone()).or_default();
                    for ip in &e.ips {
                        m.insert(*ip, key.clone());
                    }
                    self.eps_by_host
                        .entry(e.host.clone())
                        .or_default()
                        .insert(key.clone());
                    self.endpoints.insert(key, e);
                }
            }
        }
    }
}

impl Model {
    /// One more block or endpoint of `host` in `n`.
    fn join(&mut self, n: &str, host: &str) {
        *self
            .members
            .entry(n.to_string())
            .or_default()
            .entry(host.to_string())
            .or_default() += 1;
        self.member_of
            .entry(host.to_string())
            .or_default()
            .insert(n.to_string());
    }

    /// One block or endpoint of `host` in `n` less.
    fn leave(&mut self, n: &str, host: &str) {
        let Some(m) = self.members.get_mut(n) else {
            return;
        };
        let Some(c) = m.get_mut(host) else { return };
        *c -= 1;
        if *c > 0 {
            return;
        }
        m.remove(host);
        if m.is_empty() {
            self.members.remove(n);
        }
        if let Some(s) = self.member_of.get_mut(host) {
            s.remove(n);
            if s.is_empty() {
                self.member_of.remove(host);
            }
        }
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
