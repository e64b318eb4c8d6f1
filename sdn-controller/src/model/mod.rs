//! The cluster as the controller sees it, and each host's desired state computed from it
//! **incrementally**: an [`Update`] (one etcd record put or deleted) yields the [`Change`]s of
//! exactly the hosts it concerns, with work proportional to those changes, not to the cluster.
//!
//! What a registered host H should hold ([`Model::desired`]): every overlay network N that has
//! a VNI, as a [`NetworkDesired`] with N's pools (CIDR + gateway), its `mode` option (`vxlan`
//! by default, `routed`), H's underlay IP, every endpoint address of N on another registered
//! host (IP, MAC, that host's underlay IP) and every other registered host with its blocks in N.
//! A host that is not registered holds nothing.
//!
//! How an update becomes changes: the state is split into *atoms* per host — a network's own
//! settings (`Net`), one endpoint address (`Ep`: network, IP), one remote host (`Host`: network,
//! underlay IP). An update names the atoms it may move (an endpoint: its old and new addresses;
//! a host: its old and new underlay IP and its endpoints, in every network; a block: its host in
//! its network; a network or VNI: that network's settings), for every registered host (and the
//! host itself when it registers or goes). Each atom is evaluated before and after the update
//! and only the ones that differ become changes: a `Net` atom that moved becomes a whole
//! `NetworkPut` (or `NetworkDel`), the others `EndpointPut/Del`, `HostPut/Del`. So an endpoint
//! put costs O(hosts × its addresses), a host put O(hosts × (networks + its endpoints)); the
//! property test checks that the changes applied to each host's previous state always equal the
//! full recomputation.
//!
//! Invariants the store keeps and this model does not rely on: one endpoint per address of a
//! network, one host per underlay IP. If two records claim one address, the later put wins in
//! the index and both paths (incremental and full) see the same winner.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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
/// even when it has no change (the hub resets its stream).
pub type Output = BTreeMap<String, Vec<Change>>;

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

/// An atom's value for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Net(Option<(u32, Net, IpAddr)>),
    Ep(Option<RemoteEndpoint>),
    Host(Option<RemoteHost>),
}

/// The controller's view of the cluster (see the module note).
#[derive(Debug, Default, Clone)]
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
        let atoms = self.touched(&u);
        let mut scope: BTreeSet<String> = self.hosts.keys().cloned().collect();
        let registering = match &u {
            Update::Host(name, _) => {
                scope.insert(name.clone());
                Some(name.clone())
            }
            _ => None,
        };
        let was = registering.as_ref().map(|h| self.is_registered(h));
        let before: Vec<Vec<Val>> = scope
            .iter()
            .map(|h| atoms.iter().map(|a| self.eval(h, a)).collect())
            .collect();
        self.mutate(u);
        let mut out = Output::new();
        for (h, before) in scope.iter().zip(before) {
            let changes = self.diff(h, &atoms, &before);
            if !changes.is_empty() {
                out.insert(h.clone(), changes);
            }
        }
        if let (Some(h), Some(was)) = (registering, was) {
            if was != self.is_registered(&h) {
                out.entry(h).or_default();
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
            .networks
            .keys()
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
        let endpoints = self
            .addrs
            .get(n)
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(|ip| self.ep_val(host, n, *ip))
            .collect();
        let hosts = self
            .host_by_ip
            .keys()
            .filter_map(|ip| self.host_val(host, n, *ip))
            .collect();
        Some(NetworkDesired {
            id: n.to_string(),
            vni,
            subnets: net.subnets,
            mode: net.mode,
            underlay_ip,
            endpoints,
            hosts,
        })
    }

    fn active(&self, host: &str, n: &str) -> bool {
        self.hosts.contains_key(host) && self.networks.contains_key(n) && self.vnis.contains_key(n)
    }

    fn eval(&self, host: &str, a: &Atom) -> Val {
        match a {
            Atom::Net(n) => Val::Net((|| {
                Some((
                    *self.vnis.get(n)?,
                    self.networks.get(n)?.clone(),
                    *self.hosts.get(host)?,
                ))
            })()),
            Atom::Ep(n, ip) => Val::Ep(self.ep_val(host, n, *ip)),
            Atom::Host(n, ip) => Val::Host(self.host_val(host, n, *ip)),
        }
    }

    fn ep_val(&self, host: &str, n: &str, ip: IpAddr) -> Option<RemoteEndpoint> {
        if !self.active(host, n) {
            return None;
        }
        let ep = self.endpoints.get(self.addrs.get(n)?.get(&ip)?)?;
        if ep.host == host
            || !self
                .networks
                .get(n)?
                .subnets
                .iter()
                .any(|s| s.cidr.contains(&ip))
        {
            return None;
        }
        Some(RemoteEndpoint {
            ip,
            mac: ep.mac?,
            host: *self.hosts.get(&ep.host)?,
        })
    }

    fn host_val(&self, host: &str, n: &str, ip: IpAddr) -> Option<RemoteHost> {
        if !self.active(host, n) {
            return None;
        }
        let other = self.host_by_ip.get(&ip)?;
        if other == host {
            return None;
        }
        let blocks = self
            .blocks_by
            .get(n)
            .and_then(|m| m.get(other))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        Some(RemoteHost {
            underlay_ip: ip,
            blocks,
        })
    }

    /// The atoms `u` may move, read from the state before it (the old record) and from `u`
    /// (the new one).
    fn touched(&self, u: &Update) -> Vec<Atom> {
        let mut atoms = BTreeSet::new();
        match u {
            Update::Network(id, _) | Update::Vni(id, _) => {
                atoms.insert(Atom::Net(id.clone()));
            }
            Update::Endpoint(key, new) => {
                let new = new.as_ref().map(ep_of);
                for e in self.endpoints.get(key).into_iter().chain(new.as_ref()) {
                    for ip in &e.ips {
                        atoms.insert(Atom::Ep(e.network.clone(), *ip));
                    }
                }
            }
            Update::Block(key, new) => {
                let new = new.as_ref().map(blk_of);
                for b in self.blocks.get(key).into_iter().chain(new.as_ref()) {
                    if let Some(ip) = self.hosts.get(&b.host) {
                        atoms.insert(Atom::Host(b.network.clone(), *ip));
                    }
                }
            }
            Update::Host(name, new) => {
                let ips = self
                    .hosts
                    .get(name)
                    .into_iter()
                    .chain(new.as_ref().map(|h| &h.underlay_ip));
                let ips: Vec<IpAddr> = ips.copied().collect();
                for n in self.networks.keys() {
                    atoms.insert(Atom::Net(n.clone()));
                    for ip in &ips {
                        atoms.insert(Atom::Host(n.clone(), *ip));
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
        atoms.into_iter().collect()
    }

    /// The changes for `host` between `before` (the atoms' values before the update) and now.
    fn diff(&self, host: &str, atoms: &[Atom], before: &[Val]) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        for (a, b) in atoms.iter().zip(before) {
            let Atom::Net(n) = a else { continue };
            if self.eval(host, a) == *b {
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
        for (a, b) in atoms.iter().zip(before) {
            match a {
                Atom::Net(_) => {}
                Atom::Ep(n, ip) if !whole.contains(n.as_str()) => {
                    let now = self.ep_val(host, n, *ip);
                    match (now, b) {
                        (Some(e), Val::Ep(old)) if old.as_ref() != Some(&e) => {
                            changes.push(Change::EndpointPut {
                                network: n.clone(),
                                endpoint: e,
                            })
                        }
                        (None, Val::Ep(Some(_))) => changes.push(Change::EndpointDel {
                            network: n.clone(),
                            ip: *ip,
                        }),
                        _ => {}
                    }
                }
                Atom::Host(n, ip) if !whole.contains(n.as_str()) => {
                    let now = self.host_val(host, n, *ip);
                    match (now, b) {
                        (Some(h), Val::Host(old)) if old.as_ref() != Some(&h) => {
                            changes.push(Change::HostPut {
                                network: n.clone(),
                                host: h,
                            })
                        }
                        (None, Val::Host(Some(_))) => changes.push(Change::HostDel {
                            network: n.clone(),
                            underlay_ip: *ip,
                        }),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        changes
    }

    /// Applies `u` to the records and their indexes.
    fn mutate(&mut self, u: Update) {
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

/// Appends `more`'s changes to `out`'s, host by host.
pub fn merge(out: &mut Output, more: Output) {
    for (h, c) in more {
        out.entry(h).or_default().extend(c);
    }
}

#[cfg(test)]
mod tests;
