//! The Docker plugin's methods over knit's model: each call is translated into the store's
//! records and libnet's endpoint lifecycle (the same attach and detach as `knit run` and the CNI
//! plugins), synchronously; the HTTP layer runs it on a blocking thread.
//!
//! Shape of a Docker endpoint: at CreateEndpoint the record is written first (so a `kill -9`
//! at any later point leaves something the repair pass can see), then the lifecycle attaches a
//! veth pair whose host end is on the network's bridge and whose other end (`kn` + the first
//! 11 hex digits of the endpoint id) stays in the agent's namespace, down, for Docker to move
//! into the container, rename and configure (Join names it and the gateway). DeleteEndpoint
//! detaches by the derived names, so it needs nothing but the ids, then drops the record.
//! A Docker endpoint's nftables elements are keyed by the network's id, not its name: the name
//! changes once, when Docker's is learnt ([`super::names`]).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use libnet::driver::bridge::random_mac;
use libnet::driver::IpConf;
use libnet::endpoint::{self, Addressing, Filter, Fixed, Request};
use libnet::netns::NetNs;
use serde_json::{json, Value};
use store::{Driver, Endpoint, Network, Pool, PortMap, Proto, Store};
use tracing::{info, warn};

use super::pools::{self, PoolId, GLOBAL_SPACE, LOCAL_SPACE};
use super::wire::*;
use crate::attach::{port_mapping, with_wiring, Ports};
use crate::network::{self, bridge_name, DOCKER_OWNED};
use crate::sandbox::Dirs;

/// A failed call: the HTTP status and the message Docker shows the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError {
            status: 500,
            message: format!("{e:#}"),
        }
    }
}

/// What every call needs.
pub struct Ctx {
    pub store: std::sync::Arc<dyn Store>,
    pub dirs: Dirs,
    pub namer: super::names::Namer,
    /// Calls hold it shared, the repair pass exclusively: a repair must never see a call's
    /// half-made work (a record whose veth is being made) as a crash's leftovers.
    pub repair: std::sync::RwLock<()>,
}

/// The methods knit answers, for `Plugin.Activate`'s caller and the unknown-method error.
pub const IMPLEMENTS: [&str; 2] = ["NetworkDriver", "IpamDriver"];

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    method: &str,
    body: &[u8],
) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("{method}: malformed JSON body: {e}")))
}

pub(super) fn need<'a>(method: &str, field: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{method}: {field} is missing"
        )));
    }
    Ok(v)
}

/// Whether knit implements `method` (metrics label only known methods).
pub fn known(method: &str) -> bool {
    matches!(
        method,
        "Plugin.Activate"
            | "NetworkDriver.GetCapabilities"
            | "NetworkDriver.CreateNetwork"
            | "NetworkDriver.DeleteNetwork"
            | "NetworkDriver.CreateEndpoint"
            | "NetworkDriver.EndpointOperInfo"
            | "NetworkDriver.DeleteEndpoint"
            | "NetworkDriver.Join"
            | "NetworkDriver.Leave"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "IpamDriver.GetCapabilities"
            | "IpamDriver.GetDefaultAddressSpaces"
            | "IpamDriver.RequestPool"
            | "IpamDriver.ReleasePool"
            | "IpamDriver.RequestAddress"
            | "IpamDriver.ReleaseAddress"
    )
}

/// One call: `method` is the path without its `/` (`NetworkDriver.CreateNetwork`).
/// The answers that need no state, the same in both modes (`scope`: `local` for a single-host
/// agent, `global` with `--etcd`); `None` for a method that needs the store.
pub(super) fn stateless(method: &str, body: &[u8], scope: &str) -> Option<Result<Value, ApiError>> {
    Some(match method {
        "Plugin.Activate" => Ok(json!({"Implements": IMPLEMENTS})),
        "NetworkDriver.GetCapabilities" => Ok(json!({"Scope": scope, "ConnectivityScope": scope})),
        "NetworkDriver.EndpointOperInfo" => parse::<EndpointRef>(method, body)
            .and_then(|r| need(method, "EndpointID", &r.endpoint_id).map(|_| json!({"Value": {}}))),
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(json!({"RequiresMACAddress": false})),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": LOCAL_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_SPACE,
        })),
        _ if !known(method) => Err(ApiError {
            status: 404,
            message: format!(
                "knit does not implement {method:?}: it serves Plugin.Activate, \
                 NetworkDriver.* and IpamDriver.* (libnetwork's remote API)"
            ),
        }),
        _ => return None,
    })
}

pub fn call(ctx: &Ctx, method: &str, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(r) = stateless(method, body, "local") {
        return r;
    }
    let _calls = ctx.repair.read().unwrap_or_else(|p| p.into_inner());
    let ok = |()| json!({});
    match method {
        "NetworkDriver.CreateNetwork" => create_network(ctx, parse(method, body)?).map(ok),
        "NetworkDriver.DeleteNetwork" => delete_network(ctx, parse(method, body)?).map(ok),
        "NetworkDriver.CreateEndpoint" => create_endpoint(ctx, parse(method, body)?),
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(ctx, parse(method, body)?).map(ok),
        "NetworkDriver.Join" => join(&*ctx.store, &ctx.namer, parse(method, body)?),
        "NetworkDriver.Leave" => leave(&*ctx.store, parse(method, body)?).map(ok),
        "NetworkDriver.ProgramExternalConnectivity" => program(ctx, parse(method, body)?).map(ok),
        "NetworkDriver.RevokeExternalConnectivity" => revoke(ctx, parse(method, body)?).map(ok),
        "IpamDriver.RequestPool" => request_pool(ctx, parse(method, body)?),
        "IpamDriver.ReleasePool" => {
            let r: PoolRef = parse(method, body)?;
            let pool = PoolId::parse(need(method, "PoolID", &r.pool_id)?)?;
            pools::release_pool(&ctx.dirs.cni_data_dir, &pool);
            Ok(json!({}))
        }
        "IpamDriver.RequestAddress" => request_address(ctx, parse(method, body)?),
        "IpamDriver.ReleaseAddress" => {
            let r: PoolRef = parse(method, body)?;
            let pool = PoolId::parse(need(method, "PoolID", &r.pool_id)?)?;
            let a = parse_addr(&r.address)
                .ok_or_else(|| ApiError::bad_request(format!("bad Address {:?}", r.address)))?;
            pools::release_address(&ctx.dirs.cni_data_dir, &pool, a)?;
            Ok(json!({}))
        }
        other => Err(ApiError::from(anyhow!("{other}: not dispatched"))),
    }
}

/// An address with or without a prefix length.
pub(super) fn parse_addr(s: &str) -> Option<IpAddr> {
    s.split_once('/')
        .map_or(s, |(a, _)| a)
        .parse::<IpAddr>()
        .ok()
}

pub(super) fn opt_net(field: &str, s: &str) -> Result<Option<IpNet>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("{field} {s:?} is not a subnet")))
}

fn request_pool(ctx: &Ctx, r: RequestPool) -> Result<Value, ApiError> {
    if r.address_space != LOCAL_SPACE && !r.address_space.is_empty() {
        return Err(ApiError::bad_request(format!(
            "address space {:?}: a single-host agent serves {LOCAL_SPACE:?} (global pools need an agent with --etcd)",
            r.address_space
        )));
    }
    let want = opt_net("Pool", &r.pool)?;
    let sub = opt_net("SubPool", &r.sub_pool)?;
    let h = libnet::netlink::Handle::new().context("opening a netlink socket")?;
    let routed = network::routed_subnets(&h)?;
    let pool = pools::request_pool(
        &*ctx.store,
        &ctx.dirs.cni_data_dir,
        want,
        sub,
        r.v6,
        &routed,
    )
    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    info!(pool = %pool.id(), "pool requested");
    Ok(json!({"PoolID": pool.id(), "Pool": pool.subnet.to_string(), "Data": {}}))
}

fn request_address(ctx: &Ctx, r: PoolRef) -> Result<Value, ApiError> {
    let pool = PoolId::parse(need("RequestAddress", "PoolID", &r.pool_id)?)?;
    let want = if r.address.is_empty() {
        None
    } else {
        Some(
            parse_addr(&r.address)
                .ok_or_else(|| ApiError::bad_request(format!("bad Address {:?}", r.address)))?,
        )
    };
    let gateway = r.options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_REQUEST);
    let a = pools::request_address(&ctx.dirs.cni_data_dir, &pool, want, gateway)?;
    Ok(json!({"Address": a.to_string(), "Data": {}}))
}

/// The network record of Docker's CreateNetwork. Pure.
pub fn network_of(r: &CreateNetwork) -> Result<Network, ApiError> {
    let id = need("CreateNetwork", "NetworkID", &r.network_id)?;
    store::validate::validate_id("network", id)
        .map_err(|e| ApiError::bad_request(format!("CreateNetwork: {e}")))?;
    // Docker never sends the name; its short id (as `docker network ls` prints it) stands in.
    let mut net = Network::new(
        format!("docker-{}", &id[..12.min(id.len())]),
        Driver::Bridge,
    );
    net.id = id.to_string();
    let truthy = |v: Option<&Value>| match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"),
        _ => false,
    };
    net.ipv6 = truthy(r.options.get(ENABLE_IPV6));
    net.internal = truthy(r.options.get(INTERNAL));
    if let Some(Value::Object(generic)) = r.options.get(GENERIC) {
        for (k, v) in generic {
            if k.starts_with("io.knit.") {
                return Err(ApiError::bad_request(format!(
                    "option {k:?} is reserved for knit's own bookkeeping"
                )));
            }
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if k == store::options::INTERNAL {
                net.internal |= truthy(Some(&Value::String(v.clone())));
            }
            net.options.insert(k.clone(), v);
        }
    }
    net.options.insert(DOCKER_OWNED.into(), "true".into());
    let data = r.ipv4_data.iter().chain(r.ipv6_data.iter()).flatten();
    for d in data {
        let subnet: IpNet = d.pool.parse().map_err(|_| {
            ApiError::bad_request(format!("IPAM pool {:?} is not a subnet", d.pool))
        })?;
        let mut p = Pool::new(subnet);
        p.gateway = parse_addr(&d.gateway);
        if d.address_space == LOCAL_SPACE {
            let (k, v) = pools::network_option(&subnet);
            net.options.insert(k, v);
        }
        net.ipam.push(p);
    }
    store::validate::validate_network(&net)
        .map_err(|e| ApiError::bad_request(format!("network {}: {e}", net.name)))?;
    Ok(net)
}

fn create_network(ctx: &Ctx, r: CreateNetwork) -> Result<(), ApiError> {
    let net = network_of(&r)?;
    if let Ok(old) = ctx.store.network(&net.id) {
        if old.id == net.id {
            return Ok(()); // Docker retried a create that landed
        }
    }
    let net = network::materialize(&*ctx.store, net)?;
    info!(network = %net.id, bridge = %bridge_name(&net), "network created");
    ctx.namer.queue(super::names::Job::Network(net.id.clone()));
    Ok(())
}

fn delete_network(ctx: &Ctx, r: EndpointRef) -> Result<(), ApiError> {
    let id = need("DeleteNetwork", "NetworkID", &r.network_id)?;
    let net = match docker_network(&*ctx.store, id) {
        Ok(n) => n,
        Err(_) => return Ok(()), // gone already: delete is idempotent
    };
    // Docker deletes every endpoint of a network before the network, so a Docker endpoint
    // still recorded here is an orphan: a CreateEndpoint that completed while its answer was
    // lost (the agent killed before replying), which Docker counted as failed and will never
    // delete. Remove it now; a CLI sandbox on the network still keeps the network busy.
    let orphans = ctx
        .store
        .network_endpoints(&net.id)
        .map_err(|e| anyhow!(e).context("listing the network's endpoints"))?;
    for ep in orphans.iter().filter(|e| {
        e.labels
            .get(network::DOCKER_OWNED)
            .is_some_and(|v| v == "true")
    }) {
        detach(ctx, &net, &ep.id)?;
        match ctx.store.delete_endpoint(&ep.id) {
            Ok(_) => {}
            Err(e) if e.kind() == store::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow!(e)
                    .context(format!("removing orphan endpoint {}", ep.id))
                    .into())
            }
        }
        info!(endpoint = %ep.id, network = %net.id, "orphan endpoint removed with its network");
    }
    network::remove(&*ctx.store, &net, &ctx.dirs.cni_data_dir)?;
    info!(network = %net.id, "network deleted");
    Ok(())
}

/// A network by Docker's full id.
fn docker_network(store: &dyn Store, id: &str) -> Result<Network> {
    let net = store
        .network(id)
        .with_context(|| format!("network {id} is not known to knit"))?;
    if net.id != id {
        bail!("network {id} is not known to knit");
    }
    Ok(net)
}

/// The container side of a Docker endpoint's veth pair, in the agent's namespace until Docker
/// moves it.
pub fn peer_name(endpoint_id: &str) -> String {
    format!("kn{}", endpoint_id.get(..11).unwrap_or(endpoint_id))
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub(super) fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The addressing the lifecycle gets for a Docker endpoint: Docker's addresses, each with the
/// gateway of its pool; no routes (Docker sets them from Join's answer).
pub fn addressing_of(net: &Network, ep: &Endpoint) -> Addressing {
    let ips = [ep.ipv4, ep.ipv6]
        .into_iter()
        .flatten()
        .map(|addr| IpConf {
            addr,
            gateway: net
                .ipam
                .iter()
                .find(|p| p.subnet.contains(&addr.addr()))
                .and_then(|p| p.gateway),
        })
        .collect();
    Addressing {
        ips,
        routes: Vec::new(),
    }
}

fn create_endpoint(ctx: &Ctx, r: CreateEndpoint) -> Result<Value, ApiError> {
    let nid = need("CreateEndpoint", "NetworkID", &r.network_id)?;
    let eid = need("CreateEndpoint", "EndpointID", &r.endpoint_id)?;
    let net =
        docker_network(&*ctx.store, nid).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let (mut ep, mac, reply) = endpoint_record(&net, eid, r.interface, |_| random_mac())?;
    ep.ports = port_maps(&r.options)?;
    // The record first: after a crash the repair pass finds it and finishes or undoes.
    ctx.store
        .put_endpoint(&ep)
        .with_context(|| format!("recording endpoint {eid}"))?;
    if let Err(e) = attach(ctx, &net, &ep, mac) {
        if let Err(u) = ctx.store.delete_endpoint(&ep.id) {
            warn!(endpoint = %ep.id, error = %u, "rolling back: could not remove the record");
        }
        return Err(e.into());
    }
    info!(endpoint = %ep.id, network = %net.id, ip = ?ep.ipv4, "endpoint created");
    Ok(reply)
}

/// A Docker endpoint's record from CreateEndpoint, in either mode: the ids, the veth end's
/// name, Docker's addresses and MAC, labelled Docker's. When Docker gave no MAC, `mac` picks
/// one (from the first address) and the answer names it. Returns the record, its MAC and
/// CreateEndpoint's answer.
pub(super) fn endpoint_record(
    net: &Network,
    eid: &str,
    iface: Option<Interface>,
    mac: impl FnOnce(Option<IpNet>) -> [u8; 6],
) -> Result<(Endpoint, [u8; 6], Value), ApiError> {
    let iface = iface.unwrap_or_default();
    let mut ep = Endpoint::new(net.id.clone());
    ep.id = eid.to_string();
    ep.ifname = peer_name(eid);
    ep.ipv4 = opt_net("Interface.Address", &iface.address)?;
    ep.ipv6 = opt_net("Interface.AddressIPv6", &iface.address_ipv6)?;
    let (m, reply) = if iface.mac_address.is_empty() {
        let m = mac(ep.ipv4.or(ep.ipv6));
        (m, json!({"Interface": {"MacAddress": mac_string(m)}}))
    } else {
        let m = parse_mac(&iface.mac_address).ok_or_else(|| {
            ApiError::bad_request(format!("bad Interface.MacAddress {:?}", iface.mac_address))
        })?;
        (m, json!({}))
    };
    ep.mac = mac_string(m);
    ep.labels.insert(DOCKER_OWNED.into(), "true".into());
    Ok((ep, m, reply))
}

fn attach(ctx: &Ctx, net: &Network, ep: &Endpoint, mac: [u8; 6]) -> Result<()> {
    let host = NetNs::current().context("opening the agent's network namespace")?;
    let req = Request {
        netns: Some(&host),
        mac: Some(mac),
        ..request_of(net, ep)
    };
    let mut source = Fixed(addressing_of(net, ep));
    with_wiring(net, &ctx.dirs, true, &[], |driver, filters| {
        endpoint::attach(&req, &mut source, driver, filters)
            .with_context(|| format!("attaching endpoint {} to network {}", ep.id, net.name))?;
        Ok(())
    })
}

/// A Docker endpoint's identity in the lifecycle: keyed by the network's id (its name changes
/// once, when Docker's is learnt), the endpoint's id and its veth peer's name.
pub fn request_of<'a>(net: &'a Network, ep: &'a Endpoint) -> Request<'a> {
    Request {
        network: &net.id,
        container_id: &ep.id,
        ifname: &ep.ifname,
        netns: None,
        mac: None,
    }
}

/// Detach a Docker endpoint by its ids alone (tolerant: gone is success).
pub fn detach(ctx: &Ctx, net: &Network, endpoint_id: &str) -> Result<()> {
    let ifname = peer_name(endpoint_id);
    let req = Request {
        network: &net.id,
        container_id: endpoint_id,
        ifname: &ifname,
        netns: None,
        mac: None,
    };
    with_wiring(net, &ctx.dirs, true, &[], |driver, filters| {
        endpoint::detach(&req, &mut Fixed::default(), driver, filters)
            .with_context(|| format!("detaching endpoint {endpoint_id}"))?;
        Ok(())
    })
}

fn delete_endpoint(ctx: &Ctx, r: EndpointRef) -> Result<(), ApiError> {
    let nid = need("DeleteEndpoint", "NetworkID", &r.network_id)?;
    let eid = need("DeleteEndpoint", "EndpointID", &r.endpoint_id)?;
    let Ok(net) = docker_network(&*ctx.store, nid) else {
        return Ok(());
    };
    detach(ctx, &net, eid)?;
    match ctx.store.delete_endpoint(eid) {
        Ok(_) => {}
        Err(e) if e.kind() == store::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!("removing endpoint {eid}"))
                .into())
        }
    }
    info!(endpoint = %eid, "endpoint deleted");
    Ok(())
}

fn endpoint_of(
    store: &dyn Store,
    method: &str,
    r: &EndpointRef,
) -> Result<(Network, Endpoint), ApiError> {
    let nid = need(method, "NetworkID", &r.network_id)?;
    let eid = need(method, "EndpointID", &r.endpoint_id)?;
    let net = docker_network(store, nid).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let ep = store
        .endpoint(eid)
        .map_err(|e| ApiError::bad_request(format!("endpoint {eid}: {e}")))?;
    Ok((net, ep))
}

/// Join, in either mode: the sandbox recorded, the container's names asked of Docker, and the
/// answer (the veth end's name and the pool's gateway).
pub(super) fn join(
    store: &dyn Store,
    namer: &super::names::Namer,
    r: EndpointRef,
) -> Result<Value, ApiError> {
    let (net, mut ep) = endpoint_of(store, "Join", &r)?;
    let sandbox = Path::new(&r.sandbox_key)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty());
    if ep.sandbox_id.is_none() {
        ep.sandbox_id = sandbox;
        store
            .put_endpoint(&ep)
            .with_context(|| format!("recording the sandbox of endpoint {}", ep.id))?;
    }
    namer.queue(super::names::Job::Endpoints(net.id.clone()));
    let gw = |a: Option<IpNet>| {
        a.and_then(|a| {
            net.ipam
                .iter()
                .find(|p| p.subnet.contains(&a.addr()))
                .and_then(|p| p.gateway)
        })
        .map(|g| g.to_string())
        .unwrap_or_default()
    };
    let reply = JoinReply {
        interface_name: InterfaceName {
            src_name: ep.ifname.clone(),
            dst_prefix: "eth".into(),
        },
        gateway: if net.internal {
            String::new()
        } else {
            gw(ep.ipv4)
        },
        gateway_ipv6: if net.internal {
            String::new()
        } else {
            gw(ep.ipv6)
        },
        // An internal network has no way out, and no docker_gwbridge either.
        disable_gateway_service: true,
    };
    Ok(serde_json::to_value(reply).map_err(anyhow::Error::from)?)
}

/// Leave, in either mode: the sandbox forgotten.
pub(super) fn leave(store: &dyn Store, r: EndpointRef) -> Result<(), ApiError> {
    let (_, mut ep) = endpoint_of(store, "Leave", &r)?;
    if ep.sandbox_id.take().is_some() {
        store
            .put_endpoint(&ep)
            .with_context(|| format!("recording that endpoint {} left", ep.id))?;
    }
    Ok(())
}

/// `com.docker.network.portmap` as knit's port maps; a range or a missing host port is refused.
pub fn port_maps(
    options: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<PortMap>, ApiError> {
    let Some(v) = options.get(PORTMAP) else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let bindings: Vec<PortBinding> = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::bad_request(format!("{PORTMAP}: {e}")))?;
    bindings
        .iter()
        .map(|b| {
            let proto = match b.proto {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                132 => Proto::Sctp,
                p => {
                    return Err(ApiError::bad_request(format!(
                        "port protocol {p} is not tcp, udp or sctp"
                    )))
                }
            };
            if b.host_port == 0 {
                return Err(ApiError::bad_request(format!(
                    "port {}/{proto}: knit needs a host port (-p HOST:{})",
                    b.port, b.port
                )));
            }
            if b.host_port_end != 0 && b.host_port_end != b.host_port {
                return Err(ApiError::bad_request(format!(
                    "host port range {}-{}: knit maps one host port per container port",
                    b.host_port, b.host_port_end
                )));
            }
            let host_ip = parse_addr(&b.host_ip).filter(|a| !a.is_unspecified());
            Ok(PortMap {
                proto,
                host_ip,
                host_port: b.host_port,
                container_port: b.port,
            })
        })
        .collect()
}

fn program(ctx: &Ctx, r: EndpointRef) -> Result<(), ApiError> {
    let (net, mut ep) = endpoint_of(&*ctx.store, "ProgramExternalConnectivity", &r)?;
    let maps = port_maps(&r.options)?;
    publish(ctx, &net, &ep, &maps)?;
    if ep.ports != maps {
        ep.ports = maps;
        ctx.store
            .put_endpoint(&ep)
            .with_context(|| format!("recording the ports of endpoint {}", ep.id))?;
    }
    Ok(())
}

/// The endpoint's port mappings in knit's nftables table (replacing what it had).
pub fn publish(ctx: &Ctx, net: &Network, ep: &Endpoint, maps: &[PortMap]) -> Result<()> {
    let req = request_of(net, ep);
    let ports = Ports {
        nft: &ctx.dirs.nft(),
        bridge: bridge_name(net),
        maps: maps.iter().map(|p| port_mapping(net, p)).collect(),
    };
    if maps.is_empty() {
        return ports
            .del(&req)
            .map_err(|e| anyhow!("{e}"))
            .context("removing port mappings");
    }
    let wired = libnet::driver::Wired {
        bridge: None,
        host: None,
        container: libnet::driver::LinkRef {
            name: ep.ifname.clone(),
            mac: ep.mac.clone(),
        },
    };
    ports
        .ensure(&req, &addressing_of(net, ep), &wired)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("publishing ports of endpoint {}", ep.id))
}

fn revoke(ctx: &Ctx, r: EndpointRef) -> Result<(), ApiError> {
    let (net, mut ep) = match endpoint_of(&*ctx.store, "RevokeExternalConnectivity", &r) {
        Ok(x) => x,
        Err(e) if e.status == 400 => return Ok(()), // gone: nothing published
        Err(e) => return Err(e),
    };
    publish(ctx, &net, &ep, &[])?;
    if !ep.ports.is_empty() {
        ep.ports.clear();
        ctx.store
            .put_endpoint(&ep)
            .with_context(|| format!("recording the ports of endpoint {}", ep.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ids_and_options_from_docker() {
        let bad = CreateNetwork {
            network_id: "ééééééééééééé".into(),
            ..Default::default()
        };
        assert_eq!(network_of(&bad).unwrap_err().status, 400);
        let mut generic = serde_json::Map::new();
        generic.insert("com.docker.network.bridge.name".into(), json!("kbr0"));
        let mut options = std::collections::BTreeMap::new();
        options.insert(GENERIC.to_string(), Value::Object(generic));
        options.insert(INTERNAL.to_string(), json!(true));
        let r = CreateNetwork {
            network_id: "0123456789abcdef".repeat(4),
            options,
            ipv4_data: Some(vec![IpamData {
                address_space: LOCAL_SPACE.into(),
                pool: "10.9.0.0/24".into(),
                gateway: "10.9.0.1/24".into(),
            }]),
            ipv6_data: None,
        };
        let n = network_of(&r).unwrap();
        assert_eq!(n.name, "docker-0123456789ab");
        assert!(n.internal);
        assert_eq!(n.ipam[0].gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(
            n.options.get(crate::network::IPAM_DIR).map(String::as_str),
            Some("knit-pool-10.9.0.0-24")
        );
        assert_eq!(bridge_name(&n), "kbr0");
    }

    #[test]
    fn port_bindings_from_docker() {
        let mut o = std::collections::BTreeMap::new();
        o.insert(
            PORTMAP.to_string(),
            json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8080, "HostPortEnd": 8080}]),
        );
        let m = port_maps(&o).unwrap();
        assert_eq!(
            (m[0].host_port, m[0].container_port, m[0].proto),
            (8080, 80, Proto::Tcp)
        );
        assert_eq!(m[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        o.insert(
            PORTMAP.to_string(),
            json!([{"Proto": 6, "Port": 80, "HostPort": 0}]),
        );
        assert!(port_maps(&o)
            .unwrap_err()
            .message
            .contains("needs a host port"));
        o.insert(
            PORTMAP.to_string(),
            json!([{"Proto": 1, "Port": 80, "HostPort": 9}]),
        );
        assert_eq!(port_maps(&o).unwrap_err().status, 400);
    }
}
