//! The addresses of the `knit` CNI plugin's endpoints: this host's blocks of an overlay
//! network (claimed in etcd under the host's lease, cached), allocated locally in host-local
//! files under `--cni-data-dir/knit-NETWORK_ID`, so most ADDs need no etcd round trip.

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;
use libnet::endpoint::{boxed, AddressSource, Addressing, BoxError, Request as EpRequest};
use libnet::ipam::{self, FileStore, IpamConfig, IpamError};
use libnet::HasKind;
use serde_json::json;
use store::{Driver, Endpoint, Network, Store};

use super::cluster::Node;
use super::cni::{CniCall, CniErr, ERR_INVALID_CONFIG, ERR_TRY_AGAIN};

/// The host-local directory of a network's reservations on this host.
pub(super) fn ipam_dir(net: &Network) -> String {
    format!("knit-{}", net.id)
}

/// The block size a host claims: /26, or /122 for IPv6 (never larger than the subnet).
pub fn block_len(subnet: &IpNet) -> u8 {
    let max = if subnet.addr().is_ipv4() { 32 } else { 128 };
    (max - 6).max(subnet.prefix_len())
}

/// The blocks of `/len` holding the addresses of `host`'s endpoints.
fn endpoint_blocks(eps: &[Endpoint], host: &str, len: u8) -> BTreeSet<IpNet> {
    eps.iter()
        .filter(|e| e.host == host)
        .flat_map(|e| [e.ipv4, e.ipv6])
        .flatten()
        .filter_map(|a| IpNet::new(a.addr(), len).ok().map(|b| b.trunc()))
        .collect()
}

/// After the host (re)registered: takes back the blocks holding its endpoints' addresses, which
/// went with the old lease while its containers kept them (a restarted agent; routed mode
/// routes to the blocks a host holds). A block handed on meanwhile stays with its new host.
pub(super) fn reclaim_blocks(node: &Node) {
    let nets = match node.store.list_networks() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "listing networks to take back this host's blocks");
            return;
        }
    };
    for net in nets.iter().filter(|n| n.driver == Driver::Overlay) {
        let Some(pool) = net.ipam.first() else {
            continue;
        };
        let eps = match node.store.network_endpoints(&net.id) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(network = %net.name, error = %e, "listing endpoints to take back blocks");
                continue;
            }
        };
        for block in endpoint_blocks(&eps, &node.host.name, block_len(&pool.subnet)) {
            match node.with_lease(|l| node.store.reclaim_block(l, &net.id, block)) {
                Ok(()) => {
                    tracing::info!(network = %net.name, %block, "took back a block of this host's endpoints")
                }
                Err(e) => {
                    tracing::warn!(network = %net.name, %block, error = %e, "could not take back a block")
                }
            }
        }
        node.blocks().remove(&net.id);
    }
}

pub(super) fn ipam_config(node: &Node, net: &Network) -> Result<IpamConfig, CniErr> {
    let p = &net.ipam[0];
    let mut r = json!({"subnet": p.subnet.to_string()});
    if let Some(g) = p.gateway {
        r["gateway"] = json!(g.to_string());
    }
    let v = json!({"type": "host-local", "ranges": [[r]], "dataDir": node.dirs.cni_data_dir});
    IpamConfig::from_json(&v).map_err(|e| {
        CniErr::new(
            ERR_INVALID_CONFIG,
            format!("the subnet of network {:?}: {e}", net.name),
        )
    })
}

pub(super) fn file_store(node: &Node, net: &Network) -> Result<FileStore, CniErr> {
    FileStore::open(&node.dirs.cni_data_dir, &ipam_dir(net)).map_err(|e| {
        CniErr::kind(
            e.kind(),
            format!("the reservations of network {:?}: {e}", net.name),
        )
    })
}

/// This host's blocks of the network: cached; read from etcd the first time.
fn my_blocks(node: &Node, net: &Network) -> Result<Vec<IpNet>, CniErr> {
    if let Some(b) = node.blocks().get(&net.id) {
        return Ok(b.clone());
    }
    let mine: Vec<IpNet> = node
        .store
        .blocks(&net.id)
        .map_err(|e| CniErr::store(&e, &format!("the blocks of network {:?}", net.name)))?
        .into_iter()
        .filter(|b| b.host == node.host.name)
        .map(|b| b.cidr)
        .collect();
    node.blocks().insert(net.id.clone(), mine.clone());
    Ok(mine)
}

/// An address for (container, ifname) from one of this host's blocks, claiming a new block
/// when they are all full.
pub(super) fn allocate(
    node: &Node,
    net: &Network,
    call: &CniCall,
) -> Result<ipam::Allocation, CniErr> {
    let cfg = ipam_config(node, net)?;
    let mut fs = file_store(node, net)?;
    let mut try_block = |block: IpNet| -> Result<Option<ipam::Allocation>, CniErr> {
        match ipam::allocate_in_blocks(
            &mut fs,
            &cfg,
            &[block],
            &call.container_id,
            &call.ifname,
            &[],
        ) {
            Ok(mut a) if !a.is_empty() => Ok(Some(a.remove(0))),
            Ok(_) => Ok(None),
            Err(IpamError::BlockExhausted { .. }) => Ok(None),
            Err(e) => Err(CniErr::kind(
                e.kind(),
                format!("network {:?}: {e}", net.name),
            )),
        }
    };
    for block in my_blocks(node, net)? {
        if let Some(a) = try_block(block)? {
            return Ok(a);
        }
    }
    let len = block_len(&net.ipam[0].subnet);
    let block = node
        .with_lease(|l| node.store.claim_block(l, &net.id, len))
        .map_err(|e| CniErr::store(&e, &format!("claiming a block of network {:?}", net.name)))?;
    tracing::info!(network = %net.name, %block, "claimed a block");
    node.blocks().entry(net.id.clone()).or_default().push(block);
    try_block(block)?.ok_or_else(|| {
        CniErr::new(
            ERR_TRY_AGAIN,
            format!("network {:?}: the new block {block} is full", net.name),
        )
    })
}

/// The address decided before the attach (the MAC follows from it); released by the
/// lifecycle's rollback and by DEL.
pub(super) struct Decided {
    pub addressing: Addressing,
    pub store: Option<FileStore>,
}

impl AddressSource for Decided {
    fn allocate(&mut self, _: &EpRequest<'_>) -> Result<Addressing, BoxError> {
        Ok(self.addressing.clone())
    }
    fn release(&mut self, req: &EpRequest<'_>) -> Result<(), BoxError> {
        match &mut self.store {
            Some(fs) => ipam::release(fs, req.container_id, req.ifname).map_err(boxed),
            None => Ok(()),
        }
    }
}

/// This host's blocks per network id.
pub type Blocks = HashMap<String, Vec<IpNet>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocks_to_take_back_are_those_of_this_hosts_endpoints() {
        let ep = |host: &str, ip: &str| {
            let mut e = Endpoint::new("n");
            e.host = host.into();
            e.ipv4 = Some(ip.parse().unwrap());
            e
        };
        let eps = [
            ep("h1", "10.0.0.2/16"),
            ep("h1", "10.0.0.3/16"),
            ep("h1", "10.0.1.70/16"),
            ep("h2", "10.0.0.66/16"),
        ];
        let want: BTreeSet<IpNet> = [
            "10.0.0.0/26".parse().unwrap(),
            "10.0.1.64/26".parse().unwrap(),
        ]
        .into();
        assert_eq!(endpoint_blocks(&eps, "h1", 26), want);
        assert!(endpoint_blocks(&eps, "h3", 26).is_empty());
    }
}
