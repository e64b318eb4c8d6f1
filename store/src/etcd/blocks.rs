//! IPAM blocks leased per host (flannel#1289).
//!
//! `P/blocks/NETWORK/ADDR_LEN` holds a [`Block`] under the owning host's lease, so a dead host's
//! blocks vanish with its lease. Every claim is a transaction that compares the block key
//! absent, the host key still under *this* lease (an expired host can claim nothing: its key is
//! gone), and the network unchanged. A host that comes back (a new lease) gets its old block
//! back only through [`EtcdStore::reclaim_block`], whose transaction compares the block still
//! absent or still its own: a block handed on to another host meanwhile is refused
//! ([`Error::BlockTaken`]), so two hosts never serve one block. A block without a lease that
//! holds an address of another host's endpoint record is not handed out either: that host's
//! agent stopped while its container kept the address (the agent takes the block back when it
//! registers again). An agent can check a block it served from before a lost lease with
//! [`EtcdStore::owns_block`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::cluster::HostLease;
use super::{decode, decode_all, encode, AsyncEtcdStore, EtcdStore, Get, MAX_ATTEMPTS};
use crate::error::Error;
use crate::model::{Endpoint, Network};

/// An IPAM block of a network, leased to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub network_id: String,
    pub cidr: IpNet,
    pub host: String,
}

/// The `i`th block of `prefix_len` bits in `subnet`, if there is one.
fn nth_block(subnet: &IpNet, prefix_len: u8, i: u128) -> Option<IpNet> {
    let (base, bits) = match subnet.network() {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let size = 1u128.checked_shl(bits.checked_sub(u32::from(prefix_len))?)?;
    let addr = base.checked_add(i.checked_mul(size)?)?;
    let addr = match subnet {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).ok()?)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(addr)),
    };
    let block = IpNet::new(addr, prefix_len).ok()?;
    subnet.contains(&block).then_some(block)
}

/// The addresses (as host-length nets) of endpoints attached by hosts other than `host`. A
/// block holding one is not free even when no lease holds it: its host's lease went (an agent
/// stopped or restarted) while the container kept its address, and handing the block to
/// another host would give that address out twice. Its own host may take it back.
fn used_by_others<'a>(eps: &'a [Endpoint], host: &'a str) -> impl Iterator<Item = IpNet> + 'a {
    eps.iter()
        .filter(move |e| e.host != host)
        .flat_map(|e| [e.ipv4, e.ipv6])
        .flatten()
        .filter_map(|a| IpNet::new(a.addr(), a.max_prefix_len()).ok())
}

/// The first block of `prefix_len` in the network's pools that is not in `taken` and holds
/// nothing of it.
fn free_block(net: &Network, prefix_len: u8, taken: &BTreeSet<IpNet>) -> Result<IpNet, Error> {
    let max = |s: &IpNet| if s.addr().is_ipv4() { 32 } else { 128 };
    let fitting: Vec<IpNet> = net
        .ipam
        .iter()
        .map(|p| p.subnet)
        .filter(|s| s.prefix_len() <= prefix_len && prefix_len <= max(s))
        .collect();
    if fitting.is_empty() {
        return Err(Error::BlockSize {
            network: net.name.clone(),
            subnet: net.ipam.first().map(|p| p.subnet).unwrap_or_default(),
            prefix_len,
        });
    }
    for subnet in &fitting {
        // Every taken block can rule out at most one candidate: taken.len() + 1 tries suffice.
        let mut i = 0u128;
        while let Some(b) = nth_block(subnet, prefix_len, i) {
            if !taken.iter().any(|t| t.contains(&b) || b.contains(t)) {
                return Ok(b);
            }
            i += 1;
            if i > taken.len() as u128 + 1 {
                break;
            }
        }
    }
    Err(Error::BlocksExhausted {
        network: net.name.clone(),
        prefix_len,
    })
}

impl AsyncEtcdStore {
    /// [`EtcdStore::claim_block`].
    pub async fn claim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        prefix_len: u8,
    ) -> Result<IpNet, Error> {
        crate::validate::validate_id("network", network_id)?;
        let (nkey, hkey) = (
            self.keys.network(network_id),
            self.keys.host(&lease.host.name),
        );
        for _ in 0..MAX_ATTEMPTS {
            let r = self
                .read(
                    "claim block",
                    vec![
                        Get::Key(nkey.clone()),
                        Get::Prefix(self.keys.network_blocks(network_id)),
                        Get::Key(hkey.clone()),
                        Get::Prefix(self.keys.network_endpoints(network_id)),
                    ],
                )
                .await?;
            let Some(nkv) = r.one(0) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: network_id.to_string(),
                });
            };
            self.check_lease(lease, r.one(2))?;
            let net: Network = decode("networks", nkv)?;
            let taken: Vec<Block> = decode_all("blocks", r.all(1))?;
            let mut taken: BTreeSet<IpNet> = taken.into_iter().map(|b| b.cidr).collect();
            let eps: Vec<Endpoint> = decode_all("endpoints", r.all(3))?;
            taken.extend(used_by_others(&eps, &lease.host.name));
            let cidr = free_block(&net, prefix_len, &taken)?;
            if self
                .put_block(lease, network_id, nkv.create_revision(), cidr, None)
                .await?
            {
                return Ok(cidr);
            }
        }
        Err(Error::Contention {
            op: "claim block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// [`EtcdStore::reclaim_block`].
    pub async fn reclaim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        crate::validate::validate_id("network", network_id)?;
        let bkey = self.keys.block(network_id, &cidr);
        let (nkey, hkey) = (
            self.keys.network(network_id),
            self.keys.host(&lease.host.name),
        );
        for _ in 0..MAX_ATTEMPTS {
            let r = self
                .read(
                    "reclaim block",
                    vec![
                        Get::Key(nkey.clone()),
                        Get::Key(bkey.clone()),
                        Get::Key(hkey.clone()),
                    ],
                )
                .await?;
            let Some(nkv) = r.one(0) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: network_id.to_string(),
                });
            };
            self.check_lease(lease, r.one(2))?;
            let net: Network = decode("networks", nkv)?;
            if cidr.trunc() != cidr || !net.ipam.iter().any(|p| p.subnet.contains(&cidr)) {
                return Err(Error::BlockSize {
                    network: net.name,
                    subnet: net.ipam.first().map(|p| p.subnet).unwrap_or_default(),
                    prefix_len: cidr.prefix_len(),
                });
            }
            // Absent: nobody holds it, take it back. Present: only if it is still ours.
            let seen = match r.one(1) {
                None => None,
                Some(kv) => {
                    let b: Block = decode("blocks", kv)?;
                    if b.host != lease.host.name || kv.lease() != lease.id {
                        return Err(Error::BlockTaken {
                            block: cidr,
                            network: net.name,
                            host: b.host,
                        });
                    }
                    Some(kv.mod_revision())
                }
            };
            if self
                .put_block(lease, network_id, nkv.create_revision(), cidr, seen)
                .await?
            {
                return Ok(());
            }
        }
        Err(Error::Contention {
            op: "reclaim block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Puts the block under the lease if the network is the one read, the host key is still
    /// under this lease, and the block key is absent (`seen` None) or unchanged since `seen`.
    async fn put_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        network_created: i64,
        cidr: IpNet,
        seen: Option<i64>,
    ) -> Result<bool, Error> {
        let bkey = self.keys.block(network_id, &cidr);
        let block = Block {
            network_id: network_id.to_string(),
            cidr,
            host: lease.host.name.clone(),
        };
        let body = encode("blocks", &bkey, &block)?;
        let compares = vec![
            match seen {
                None => Compare::create_revision(bkey.clone(), CompareOp::Equal, 0),
                Some(m) => Compare::mod_revision(bkey.clone(), CompareOp::Equal, m),
            },
            Compare::lease(self.keys.host(&lease.host.name), CompareOp::Equal, lease.id),
            Compare::create_revision(
                self.keys.network(network_id),
                CompareOp::Equal,
                network_created,
            ),
        ];
        let put = TxnOp::put(bkey, body, Some(PutOptions::new().with_lease(lease.id)));
        self.commit("claim block", compares, vec![put]).await
    }

    /// Gives a block back (tolerant: a block already gone is fine; one held by another host is
    /// [`Error::BlockTaken`]).
    pub async fn release_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        crate::validate::validate_id("network", network_id)?;
        let bkey = self.keys.block(network_id, &cidr);
        let compares = vec![Compare::lease(bkey.clone(), CompareOp::Equal, lease.id)];
        if self
            .commit(
                "release block",
                compares,
                vec![TxnOp::delete(bkey.clone(), None)],
            )
            .await?
        {
            return Ok(());
        }
        let r = self.read("release block", vec![Get::Key(bkey)]).await?;
        match r.one(0) {
            None => Ok(()),
            Some(kv) => {
                let b: Block = decode("blocks", kv)?;
                Err(Error::BlockTaken {
                    block: cidr,
                    network: network_id.to_string(),
                    host: b.host,
                })
            }
        }
    }

    /// Is this block held by this very lease right now? An agent asks before serving
    /// addresses from a block it held before a lost lease.
    pub async fn owns_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<bool, Error> {
        let r = self
            .read(
                "get block",
                vec![Get::Key(self.keys.block(network_id, &cidr))],
            )
            .await?;
        Ok(r.one(0).is_some_and(|kv| kv.lease() == lease.id))
    }

    /// The network's blocks and who holds them, ordered by address.
    pub async fn blocks(&self, network_id: &str) -> Result<Vec<Block>, Error> {
        let r = self
            .read(
                "list blocks",
                vec![Get::Prefix(self.keys.network_blocks(network_id))],
            )
            .await?;
        let mut all: Vec<Block> = decode_all("blocks", r.all(0))?;
        all.sort_by_key(|a| a.cidr);
        Ok(all)
    }

    /// The host key read must be under this lease, else the lease is gone.
    fn check_lease(
        &self,
        lease: &HostLease,
        host_kv: Option<&etcd_client::KeyValue>,
    ) -> Result<(), Error> {
        if host_kv.is_some_and(|kv| kv.lease() == lease.id) {
            return Ok(());
        }
        Err(Error::LeaseExpired {
            host: lease.host.name.clone(),
            lease: lease.id,
        })
    }
}

impl EtcdStore {
    /// Leases the lowest free block of `/prefix_len` of the network's subnets to the host, by
    /// a transaction that compares the block absent and the host's lease still live.
    pub fn claim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        prefix_len: u8,
    ) -> Result<IpNet, Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.claim_block(&lease, &id, prefix_len).await })
    }

    /// Takes back a block this host held before (a restart): only if it is still absent or
    /// still its own; a block handed on to another host is [`Error::BlockTaken`].
    pub fn reclaim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.reclaim_block(&lease, &id, cidr).await })
    }

    /// Gives a block back; see [`AsyncEtcdStore::release_block`].
    pub fn release_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.release_block(&lease, &id, cidr).await })
    }

    /// Is this block held by this very lease right now?
    pub fn owns_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<bool, Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.owns_block(&lease, &id, cidr).await })
    }

    /// The network's blocks and who holds them.
    pub fn blocks(&self, network_id: &str) -> Result<Vec<Block>, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.blocks(&id).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Driver, Pool};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_are_handed_out_in_order_around_taken_ones() {
        let mut n = Network::new("n", Driver::Overlay);
        n.ipam.push(Pool::new(net("10.0.0.0/24")));
        let mut taken = BTreeSet::new();
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.0/26"));
        taken.insert(net("10.0.0.0/26"));
        taken.insert(net("10.0.0.128/26"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.64/26"));
        taken.insert(net("10.0.0.64/26"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.192/26"));
        taken.insert(net("10.0.0.192/26"));
        assert!(matches!(
            free_block(&n, 26, &taken),
            Err(Error::BlocksExhausted { prefix_len: 26, .. })
        ));
        assert!(matches!(
            free_block(&n, 20, &taken),
            Err(Error::BlockSize { .. })
        ));
        assert_eq!(
            nth_block(&net("fd00::/64"), 80, 1),
            Some(net("fd00::1:0:0:0/80"))
        );
    }

    #[test]
    fn a_block_with_another_hosts_endpoint_is_not_free_but_its_own_host_may_take_it() {
        let mut n = Network::new("n", Driver::Overlay);
        n.ipam.push(Pool::new(net("10.0.0.0/24")));
        let ep = |host: &str, ip: &str| {
            let mut e = Endpoint::new(n.id.clone());
            e.host = host.into();
            e.ipv4 = Some(net(ip));
            e
        };
        // h1's lease went with its block 10.0.0.0/26; its container kept 10.0.0.2.
        let eps = vec![ep("h1", "10.0.0.2/24"), ep("h2", "10.0.0.70/24")];
        let mut taken: BTreeSet<IpNet> = [net("10.0.0.64/26")].into();
        taken.extend(used_by_others(&eps, "h3"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.128/26"));
        let mut taken: BTreeSet<IpNet> = [net("10.0.0.64/26")].into();
        taken.extend(used_by_others(&eps, "h1"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.0/26"));
    }
}
