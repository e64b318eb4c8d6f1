//! From an [`Update`] to the changes of the hosts it concerns (see the module's doc): the
//! atoms it may move, their values before and after for each host evaluated, the diff.

use super::*;

impl Model {
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
    pub(super) fn apply_addresses(
        &mut self,
        u: Update,
        atoms: &[Atom],
        scope: &BTreeSet<String>,
    ) -> Output {
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

    /// An atom's value before the receiving host is known.
    pub(super) fn base(&self, a: &Atom) -> Base {
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
    pub(super) fn vals(&self, host: &str, atoms: &[Atom], bases: &[Base]) -> Vec<Val> {
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

    pub(super) fn eval(&self, host: &str, a: &Atom) -> Val {
        let mut v = self.vals(host, std::slice::from_ref(a), &[self.base(a)]);
        v.pop().unwrap_or(Val::Net(None))
    }

    /// The atoms `u` may move, read from the state before it (the old record) and from `u`
    /// (the new one), and the hosts to evaluate them for: the registered members of the
    /// networks concerned, and a host whose membership changes.
    pub(super) fn touched(&self, u: &Update) -> (Vec<Atom>, BTreeSet<String>) {
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
    pub(super) fn diff(
        &self,
        host: &str,
        atoms: &[Atom],
        before: &[Val],
        now: &[Val],
    ) -> Vec<Change> {
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
}
