//! The records and their indexes: an [`Update`] applied, and the membership counts it moves.

use super::*;

impl Model {
    /// Applies `u` to the records and their indexes.
    pub(super) fn mutate(&mut self, u: Update) {
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
    /// One more block or endpoint of `host` in `n`.
    pub(super) fn join(&mut self, n: &str, host: &str) {
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
    pub(super) fn leave(&mut self, n: &str, host: &str) {
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
