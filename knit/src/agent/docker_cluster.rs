//! The Docker plugin of an agent in etcd mode (`knit --etcd URL agent ... --plugin-dir D`):
//! a **global-scope** network driver and IPAM driver over the cluster's overlay networks, so
//! `docker network create -d knit --ipam-driver knit --subnet S NAME` on one host makes an
//! overlay every host's Docker Engine can run containers on (Docker 20.10 shares global
//! networks through its `--cluster-store`; the plugin answers every host's engine).
//!
//! What Docker 20.10 sends a global-scope remote driver (checked here): `RequestPool`,
//! `RequestAddress` of the gateway and `CreateNetwork` only on the host where the network is
//! created; on every other host the first call naming the network is `RequestAddress` (with
//! the PoolID handed out on the first host) then `CreateEndpoint`; `DeleteNetwork`,
//! `ReleaseAddress` of the gateway and `ReleasePool` only where `docker network rm` runs. So
//! nothing may be kept per host between calls: a PoolID is the subnet itself, and everything
//! else is found in etcd.
//!
//! - **Networks**: CreateNetwork stores an overlay record (the stand-in name `docker-<id>`
//!   until Docker's is learnt from its Engine API, [`super::names`]) and a VNI, as `knit
//!   network create --driver overlay` does; `-o mode=routed` works the same. DeleteNetwork
//!   removes it (refused while another host still has endpoints on it).
//! - **Addresses**: from this host's blocks of the network (claimed under the host's lease),
//!   in the same host-local directory as the `knit` CNI plugin's, so Docker's containers and
//!   CNI ones share one address space; owned by `docker-<random>` and released by address.
//!   The gateway is the overlay's anycast gateway (on every host's bridge), never reserved.
//! - **Endpoints**: the veth is attached to the overlay's bridge through libnet's lifecycle
//!   (its container end stays in the agent's namespace for Docker to move), then the record
//!   is written with this host's name: what the controller tells every other host. A failed
//!   record undoes the attach.

use libnet::endpoint::{self, Fixed, Request as EpRequest};
use libnet::ipam::store::{IpamStore, LockedStore};
use libnet::netns::NetNs;
use serde_json::{json, Value};
use store::{Driver, ErrorKind, Network, Store};
use tracing::info;

use super::cluster::Node;
use super::cni::{desired, driver, overlay_network, CniErr};
use super::cni_ipam::{allocate, file_store};
use super::docker::{
    addressing_of, endpoint_record, join, leave, need, network_of, opt_net, parse, parse_addr,
    peer_name, port_maps, stateless, ApiError,
};
use super::names::{Job, Namer};
use super::pools::{decide_pool, PoolId, GLOBAL_SPACE};
use super::wire::*;
use crate::network::{first_host, DOCKER_OWNED};
use libnet::driver::bridge::random_mac;

/// What the calls share.
pub struct DockerNode {
    pub node: std::sync::Arc<Node>,
    pub namer: Namer,
}

impl From<CniErr> for ApiError {
    fn from(e: CniErr) -> ApiError {
        let status = match e.code {
            super::cni::ERR_INTERNAL | super::cni::ERR_TRY_AGAIN => 500,
            _ => 400,
        };
        ApiError {
            status,
            message: e.msg,
        }
    }
}

fn store_err(e: store::Error, what: &str) -> ApiError {
    let status = match e.kind() {
        ErrorKind::Invalid | ErrorKind::Exists | ErrorKind::NotFound => 400,
        _ => 500,
    };
    ApiError {
        status,
        message: format!("{what}: {e}"),
    }
}

/// One call: `method` is the path without its `/`.
pub fn call(d: &DockerNode, method: &str, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(r) = stateless(method, body, "global") {
        return r;
    }
    let node = &*d.node;
    let ok = |()| json!({});
    match method {
        "NetworkDriver.CreateNetwork" => create_network(d, parse(method, body)?).map(ok),
        "NetworkDriver.DeleteNetwork" => delete_network(node, parse(method, body)?).map(ok),
        "NetworkDriver.CreateEndpoint" => create_endpoint(node, parse(method, body)?),
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(node, parse(method, body)?).map(ok),
        "NetworkDriver.Join" => join(&node.store, &d.namer, parse(method, body)?),
        "NetworkDriver.Leave" => leave(&node.store, parse(method, body)?).map(ok),
        "NetworkDriver.ProgramExternalConnectivity" => {
            let r: EndpointRef = parse(method, body)?;
            refuse_ports(&r.options)?;
            Ok(json!({}))
        }
        "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
        "IpamDriver.RequestPool" => request_pool(node, parse(method, body)?),
        "IpamDriver.ReleasePool" => {
            let r: PoolRef = parse(method, body)?;
            PoolId::parse(need(method, "PoolID", &r.pool_id)?)?;
            Ok(json!({})) // the network record (and its blocks) go with DeleteNetwork
        }
        "IpamDriver.RequestAddress" => request_address(node, parse(method, body)?),
        "IpamDriver.ReleaseAddress" => release_address(node, parse(method, body)?).map(ok),
        other => Err(ApiError::from(anyhow::anyhow!("{other}: not dispatched"))),
    }
}

/// Port mappings need a host's bridge network: an overlay publishes nothing (yet).
fn refuse_ports(options: &std::collections::BTreeMap<String, Value>) -> Result<(), ApiError> {
    if port_maps(options)?.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "knit overlay networks do not publish ports (-p): publish through a knit bridge \
         network on the host (an agent without --etcd)",
    ))
}

/// The overlay record of Docker's CreateNetwork. Pure.
pub fn overlay_of(r: &CreateNetwork) -> Result<Network, ApiError> {
    let mut net = network_of(r)?;
    net.driver = Driver::Overlay;
    net.options.remove(crate::network::IPAM_DIR);
    if net.ipam.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "a knit overlay network has one subnet (IPv4 or IPv6), not {}",
            net.ipam.len()
        )));
    }
    crate::cluster::check_mode(&net).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    Ok(net)
}

fn create_network(d: &DockerNode, r: CreateNetwork) -> Result<(), ApiError> {
    let net = overlay_of(&r)?;
    let node = &*d.node;
    match node.store.network(&net.id) {
        Ok(old) if old.id == net.id => return Ok(()), // Docker retried a create that landed
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(store_err(e, "reading the networks")),
    }
    crate::cluster::store_overlay(&node.store, &net)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    info!(network = %net.id, "overlay network created for Docker");
    d.namer.queue(Job::Network(net.id.clone()));
    Ok(())
}

/// A network by Docker's full id: `None` when it is gone.
fn network_by_id(node: &Node, id: &str) -> Result<Option<Network>, ApiError> {
    match node.store.network(id) {
        Ok(n) if n.id == id => Ok(Some(n)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_err(e, &format!("network {id}"))),
    }
}

fn delete_network(node: &Node, r: EndpointRef) -> Result<(), ApiError> {
    let id = need("DeleteNetwork", "NetworkID", &r.network_id)?;
    let Some(net) = network_by_id(node, id)? else {
        return Ok(()); // gone already: delete is idempotent
    };
    // Docker deletes every endpoint of a network before the network: a Docker endpoint of
    // this host still recorded is an orphan (its CreateEndpoint answer was lost).
    let eps = node
        .store
        .network_endpoints(&net.id)
        .map_err(|e| store_err(e, "listing the network's endpoints"))?;
    for ep in eps.iter().filter(|e| {
        e.host == node.host.name && e.labels.get(DOCKER_OWNED).is_some_and(|v| v == "true")
    }) {
        remove_endpoint(node, &net, &ep.id)?;
        info!(endpoint = %ep.id, network = %net.id, "orphan endpoint removed with its network");
    }
    match node.store.delete_network(&net.id) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(store_err(e, &format!("removing network {}", net.name))),
    }
    info!(network = %net.id, "overlay network deleted");
    Ok(())
}

fn request_pool(node: &Node, r: RequestPool) -> Result<Value, ApiError> {
    if r.address_space != GLOBAL_SPACE {
        return Err(ApiError::bad_request(format!(
            "address space {:?}: a cluster agent's pools are global ({GLOBAL_SPACE:?}); use \
             --ipam-driver knit with the knit network driver",
            r.address_space
        )));
    }
    if !r.sub_pool.is_empty() {
        return Err(ApiError::bad_request(
            "--ip-range is not supported on overlay networks (hosts take blocks of the subnet)",
        ));
    }
    let want = opt_net("Pool", &r.pool)?;
    let networks = node
        .store
        .list_networks()
        .map_err(|e| store_err(e, "listing networks"))?;
    let pool = decide_pool(want, None, r.v6, &networks, &[], &[])
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    info!(pool = %pool.id(), "global pool requested");
    Ok(json!({"PoolID": pool.id(), "Pool": pool.subnet.to_string(), "Data": {}}))
}

/// The overlay network whose subnet is the pool's (made by CreateNetwork on some host).
fn network_of_pool(node: &Node, pool: &PoolId) -> Result<Option<Network>, ApiError> {
    let networks = node
        .store
        .list_networks()
        .map_err(|e| store_err(e, "listing networks"))?;
    Ok(networks.into_iter().find(|n| {
        n.driver == Driver::Overlay && n.ipam.first().is_some_and(|p| p.subnet == pool.subnet)
    }))
}

fn request_address(node: &Node, r: PoolRef) -> Result<Value, ApiError> {
    let pool = PoolId::parse(need("RequestAddress", "PoolID", &r.pool_id)?)?;
    let want = match r.address.as_str() {
        "" => None,
        a => {
            Some(parse_addr(a).ok_or_else(|| ApiError::bad_request(format!("bad Address {a:?}")))?)
        }
    };
    if let Some(a) = want {
        if !pool.subnet.contains(&a) {
            return Err(ApiError::bad_request(format!(
                "address {a} is not in pool {}",
                pool.subnet
            )));
        }
    }
    let len = pool.subnet.prefix_len();
    let prefixed = |a| format!("{a}/{len}");
    if r.options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_REQUEST) {
        // The anycast gateway: the same address on every host's bridge, never reserved.
        let gw = want.unwrap_or_else(|| first_host(&pool.subnet));
        return Ok(json!({"Address": prefixed(gw), "Data": {}}));
    }
    if want.is_some() {
        return Err(ApiError::bad_request(
            "a fixed address (--ip) on a knit overlay network is not supported: every host \
             hands out addresses from its own blocks of the subnet",
        ));
    }
    let net = network_of_pool(node, &pool)?.ok_or_else(|| {
        ApiError::bad_request(format!("no knit overlay network has pool {}", pool.subnet))
    })?;
    let owner = format!("docker-{}", &store::new_id()[..16]);
    let got = allocate(node, &net, &owner, "eth0")?;
    Ok(json!({"Address": prefixed(got.address.addr()), "Data": {}}))
}

fn release_address(node: &Node, r: PoolRef) -> Result<(), ApiError> {
    let pool = PoolId::parse(need("ReleaseAddress", "PoolID", &r.pool_id)?)?;
    let a = parse_addr(&r.address)
        .ok_or_else(|| ApiError::bad_request(format!("bad Address {:?}", r.address)))?;
    let Some(net) = network_of_pool(node, &pool)? else {
        return Ok(()); // the network went, and its reservations with it
    };
    if net.ipam.first().and_then(|p| p.gateway) == Some(a) {
        return Ok(());
    }
    let mut fs = file_store(node, &net)?;
    let mut release = || -> Result<(), libnet::ipam::IpamError> {
        let mut l = fs.lock()?;
        l.release_ip(a)?;
        l.unlock()
    };
    release().map_err(|e| ApiError::from(anyhow::anyhow!("releasing {a}: {e}")))
}

fn create_endpoint(node: &Node, r: CreateEndpoint) -> Result<Value, ApiError> {
    let nid = need("CreateEndpoint", "NetworkID", &r.network_id)?;
    let eid = need("CreateEndpoint", "EndpointID", &r.endpoint_id)?;
    refuse_ports(&r.options)?;
    let (net, vni) = overlay_network(node, nid)?;
    let (mut ep, mac, reply) = endpoint_record(&net, eid, r.interface, |a| {
        // An address keeps its MAC on every host (peers' neighbour entries stay right).
        a.map_or_else(random_mac, |a| overlay_vxlan::endpoint_mac(a.addr()))
    })?;
    let Some(addr) = ep.ipv4.or(ep.ipv6) else {
        return Err(ApiError::bad_request(
            "CreateEndpoint: no address (knit overlay networks need an IPAM driver)",
        ));
    };
    ep.host = node.host.name.clone();
    let _adding = node
        .overlay
        .ensure(&desired(node, &net, vni))
        .map_err(|e| anyhow::anyhow!("the links of network {:?}: {e}", net.name))?;
    let here = NetNs::current().map_err(|e| anyhow::anyhow!("the agent's netns: {e}"))?;
    let req = EpRequest {
        network: &net.id,
        container_id: eid,
        ifname: &ep.ifname,
        netns: Some(&here),
        mac: Some(mac),
    };
    let h = node.overlay.netlink();
    let drv = driver(h, vni);
    let mut source = Fixed(addressing_of(&net, &ep));
    endpoint::attach(&req, &mut source, &drv, &[])
        .map_err(|e| anyhow::anyhow!("attaching endpoint {eid} to network {:?}: {e}", net.name))?;
    if let Err(e) = node.store.put_endpoint(&ep) {
        let _ = endpoint::detach(&req, &mut Fixed::default(), &drv, &[]);
        return Err(store_err(e, &format!("recording endpoint {eid}")));
    }
    node.overlay.metrics.endpoints.inc();
    info!(endpoint = %eid, network = %net.id, ip = %addr, "Docker endpoint created");
    Ok(reply)
}

/// Detach by the ids alone (tolerant: gone is success), then drop the record.
fn remove_endpoint(node: &Node, net: &Network, eid: &str) -> Result<(), ApiError> {
    let vni = node
        .store
        .vni(&net.id)
        .map_err(|e| store_err(e, &format!("the VNI of network {}", net.name)))?;
    if let Some(vni) = vni {
        let ifname = peer_name(eid);
        let req = EpRequest {
            network: &net.id,
            container_id: eid,
            ifname: &ifname,
            netns: None,
            mac: None,
        };
        endpoint::detach(
            &req,
            &mut Fixed::default(),
            &driver(node.overlay.netlink(), vni),
            &[],
        )
        .map_err(|e| anyhow::anyhow!("detaching endpoint {eid}: {e}"))?;
    }
    match node.store.delete_endpoint(eid) {
        Ok(_) => node.overlay.metrics.endpoints.dec(),
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(store_err(e, &format!("removing endpoint {eid}"))),
    };
    Ok(())
}

fn delete_endpoint(node: &Node, r: EndpointRef) -> Result<(), ApiError> {
    let nid = need("DeleteEndpoint", "NetworkID", &r.network_id)?;
    let eid = need("DeleteEndpoint", "EndpointID", &r.endpoint_id)?;
    let Some(net) = network_by_id(node, nid)? else {
        return Ok(());
    };
    remove_endpoint(node, &net, eid)?;
    info!(endpoint = %eid, "Docker endpoint deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(pool: &str, generic: Value) -> CreateNetwork {
        let mut options = std::collections::BTreeMap::new();
        options.insert(GENERIC.to_string(), generic);
        CreateNetwork {
            network_id: "0123456789abcdef".repeat(4),
            options,
            ipv4_data: Some(vec![IpamData {
                address_space: GLOBAL_SPACE.into(),
                pool: pool.into(),
                gateway: "10.77.0.1/16".into(),
            }]),
            ipv6_data: None,
        }
    }

    #[test]
    fn docker_networks_become_overlays() {
        let n = overlay_of(&create("10.77.0.0/16", json!({"mode": "routed"}))).unwrap();
        assert_eq!(n.driver, Driver::Overlay);
        assert_eq!(n.name, "docker-0123456789ab");
        assert_eq!(n.ipam[0].gateway, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(n.options.get("mode").map(String::as_str), Some("routed"));
        assert!(!n.options.contains_key(crate::network::IPAM_DIR));
        let e = overlay_of(&create("10.77.0.0/16", json!({"mode": "flood"}))).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("vxlan"), "{}", e.message);
        let mut two = create("10.77.0.0/16", json!({}));
        two.options
            .insert(ENABLE_IPV6.to_string(), Value::Bool(true));
        two.ipv6_data = Some(vec![IpamData {
            address_space: GLOBAL_SPACE.into(),
            pool: "fd00:77::/64".into(),
            gateway: String::new(),
        }]);
        let e = overlay_of(&two).unwrap_err();
        assert!(e.message.contains("one subnet"), "{}", e.message);
    }

    #[test]
    fn published_ports_are_refused_with_a_reason() {
        let mut o = std::collections::BTreeMap::new();
        assert!(refuse_ports(&o).is_ok());
        o.insert(
            PORTMAP.to_string(),
            json!([{"Proto": 6, "Port": 80, "HostPort": 8080}]),
        );
        let e = refuse_ports(&o).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("publish"), "{}", e.message);
    }
}
