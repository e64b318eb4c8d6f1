//! What a host should hold, whole ([`Model::desired`]), from per-network views shared by
//! every member; and the lookups the incremental path evaluates atoms with.

use super::*;

impl Model {
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
    pub(super) fn network_view(&self, host: &str, n: &str) -> Option<NetworkDesired> {
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
    pub(super) fn view(&self, n: &str) -> Arc<View> {
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
    pub(super) fn forget_views(&mut self, u: &Update) {
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

    pub(super) fn is_member(&self, n: &str, host: &str) -> bool {
        self.members.get(n).is_some_and(|m| m.contains_key(host))
    }

    /// The blocks and endpoints `host` has in `n`.
    pub(super) fn holdings(&self, n: &str, host: &str) -> usize {
        self.members
            .get(n)
            .and_then(|m| m.get(host))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn net_active(&self, n: &str) -> bool {
        self.networks.contains_key(n) && self.vnis.contains_key(n)
    }

    /// Endpoint address `ip` of `n` as any member sees it, with the host it is on (whose own
    /// view lacks it).
    pub(super) fn ep_base(&self, n: &str, ip: IpAddr) -> Option<(&str, RemoteEndpoint)> {
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
    pub(super) fn host_base(&self, n: &str, ip: IpAddr) -> Option<(&str, RemoteHost)> {
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
}
