//! The agent's side of the `knit` CNI plugin (cni-plugins `plugins/knit.rs`): `POST
//! /v1/cni/{add,del,check,gc,status}` on the local API socket, in etcd mode.
//!
//! - **ADD**: an address from this host's block of the network, allocated locally in the
//!   host-local files under `--cni-data-dir` (directory `knit-NETWORK_ID`), so most ADDs need
//!   no etcd round trip; a /26 (IPv6: /122) block is claimed under the host's lease when the
//!   host has none or they are full. The network's links are ensured (the controller may not
//!   have made them yet), then `libnet::endpoint::attach` with the bridge driver onto
//!   `overlay_vxlan::bridge_name(vni)`: MAC `endpoint_mac(ip)` (an address keeps its MAC, so
//!   peers' caches stay right), MTU 1450, the network's gateway. Last, the endpoint record
//!   in etcd with `host` = this host (what the controller tells the other hosts about); if
//!   that fails everything is undone.
//! - **DEL**: detach (tolerant; works with `CNI_NETNS` empty), release, delete the record;
//!   idempotent.
//! - **CHECK**: the record is there and this host's, the reservation held, the interface in
//!   the namespace. **GC**: releases reservations and detaches endpoints of this host on the
//!   network that are not in `cni.dev/valid-attachments`. **STATUS**: the host's lease is
//!   live and the network exists.
//!
//! Answers: 200 with the CNI result (ADD) or `{}`; otherwise the CNI error object.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::Path as UrlPath;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ipnet::IpNet;
use libnet::driver::bridge::{Bridge, BridgeNet};
use libnet::driver::{IpConf, RouteConf};
use libnet::endpoint::{Addressing, Request as EpRequest};
use libnet::ipam;
use libnet::netlink::Handle;
use libnet::netns::NetNs;
use libnet::{HasKind, Kind};
use overlay_vxlan::{NetworkDesired, Subnet};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{Driver, Endpoint, ErrorKind, Network, Store};

use super::cluster::Node;
pub use super::cni_ipam::Blocks;
use super::cni_ipam::{allocate, file_store, Decided};

// The spec's error codes.
pub(super) const ERR_UNKNOWN_CONTAINER: u32 = 3;
pub(super) const ERR_DECODE: u32 = 6;
pub(super) const ERR_INVALID_CONFIG: u32 = 7;
pub(super) const ERR_TRY_AGAIN: u32 = 11;
pub(super) const ERR_NOT_AVAILABLE: u32 = 50;
pub(super) const ERR_INTERNAL: u32 = 999;

/// One call, as the plugin forwards it.
#[derive(Debug, Deserialize)]
pub struct CniCall {
    pub command: String,
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    pub network: String,
    /// CNI_ARGS as the plugin parsed it: `[[K, V], ...]`.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    #[serde(default)]
    pub config: Value,
}

/// An endpoint's name, aliases and labels.
pub type Identity = (
    String,
    Vec<String>,
    std::collections::BTreeMap<String, String>,
);

/// The names and labels an ADD registers for DNS and services: the name from CNI_ARGS
/// `K8S_POD_NAME` or the config's `args.cni.name`; aliases from `args.cni.aliases` and the
/// `aliases` capability (`runtimeConfig.aliases.NETWORK`, as podman passes them); labels from
/// `args.cni.labels`, plus `K8S_POD_NAMESPACE` as `io.kubernetes.pod.namespace`.
pub fn identity(call: &CniCall) -> Result<Identity, CniErr> {
    let mut name = String::new();
    let mut labels = std::collections::BTreeMap::new();
    for (k, v) in &call.args {
        match k.as_str() {
            "K8S_POD_NAME" => name = v.clone(),
            "K8S_POD_NAMESPACE" => {
                labels.insert("io.kubernetes.pod.namespace".to_string(), v.clone());
            }
            _ => {}
        }
    }
    let cni = &call.config["args"]["cni"];
    if let Some(n) = cni["name"].as_str() {
        name = n.to_string();
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut aliases = strings(&cni["aliases"]);
    aliases.extend(strings(
        &call.config["runtimeConfig"]["aliases"][&call.network],
    ));
    let mut seen = std::collections::BTreeSet::new();
    aliases.retain(|a| *a != name && seen.insert(a.clone()));
    if let Some(m) = cni["labels"].as_object() {
        for (k, v) in m {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            labels.insert(k.clone(), v);
        }
    }
    for n in std::iter::once(&name)
        .filter(|n| !n.is_empty())
        .chain(&aliases)
    {
        store::validate::validate_name("endpoint", n)
            .map_err(|e| CniErr::new(ERR_INVALID_CONFIG, e.to_string()))?;
    }
    Ok((name, aliases, labels))
}

/// A CNI error object.
#[derive(Debug)]
pub struct CniErr {
    pub code: u32,
    pub msg: String,
}

impl CniErr {
    pub(super) fn new(code: u32, msg: impl Into<String>) -> CniErr {
        CniErr {
            code,
            msg: msg.into(),
        }
    }
    pub(super) fn kind(kind: Kind, msg: impl Into<String>) -> CniErr {
        let code = match kind {
            Kind::Invalid | Kind::Exists => ERR_INVALID_CONFIG,
            Kind::NotFound => ERR_UNKNOWN_CONTAINER,
            Kind::Busy | Kind::Transient => ERR_TRY_AGAIN,
            Kind::Internal => ERR_INTERNAL,
        };
        CniErr::new(code, msg)
    }
    pub(super) fn store(e: &store::Error, what: &str) -> CniErr {
        let code = match e.kind() {
            ErrorKind::Invalid | ErrorKind::Exists => ERR_INVALID_CONFIG,
            ErrorKind::NotFound => ERR_INVALID_CONFIG,
            ErrorKind::Busy | ErrorKind::Transient => ERR_TRY_AGAIN,
            ErrorKind::Internal => ERR_INTERNAL,
        };
        CniErr::new(code, format!("{what}: {e}"))
    }
}

pub fn routes(node: Arc<Node>) -> Router {
    Router::new().route(
        "/v1/cni/{verb}",
        post(move |UrlPath(verb): UrlPath<String>, req: Request<Body>| {
            let node = node.clone();
            async move { handle(node, verb, req).await }
        }),
    )
}

async fn handle(node: Arc<Node>, verb: String, req: Request<Body>) -> Response {
    let body = match to_bytes(req.into_body(), super::MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return answer(
                Err(CniErr::new(ERR_DECODE, format!("request body: {e}"))),
                "",
            )
        }
    };
    let call: CniCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return answer(
                Err(CniErr::new(
                    ERR_DECODE,
                    format!("decoding the CNI call: {e}"),
                )),
                "",
            )
        }
    };
    let version = call
        .config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    tracing::debug!(command = %call.command, container = %call.container_id, "CNI call");
    let r = tokio::task::spawn_blocking(move || dispatch(&node, &verb, &call))
        .await
        .unwrap_or_else(|e| {
            Err(CniErr::new(
                ERR_INTERNAL,
                format!("the handler panicked: {e}"),
            ))
        });
    if let Err(e) = &r {
        tracing::warn!(code = e.code, error = %e.msg, "CNI call failed");
    }
    answer(r, &version)
}

fn answer(r: Result<Value, CniErr>, version: &str) -> Response {
    let version = if version.is_empty() { "1.0.0" } else { version };
    match r {
        Ok(v) => (StatusCode::OK, v.to_string()).into_response(),
        Err(e) => {
            let status = match e.code {
                ERR_TRY_AGAIN | ERR_NOT_AVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                ERR_INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            let body = json!({"cniVersion": version, "code": e.code, "msg": e.msg});
            (status, body.to_string()).into_response()
        }
    }
}

fn dispatch(node: &Node, verb: &str, call: &CniCall) -> Result<Value, CniErr> {
    match verb {
        "add" => add(node, call),
        "del" => del(node, call).map(|()| json!({})),
        "check" => check(node, call).map(|()| json!({})),
        "gc" => gc(node, call).map(|()| json!({})),
        "status" => status(node, call).map(|()| json!({})),
        other => Err(CniErr::new(
            ERR_INVALID_CONFIG,
            format!("unknown CNI verb {other:?}"),
        )),
    }
}

/// The endpoint record's id: found again by DEL with nothing but the call.
pub fn endpoint_id(container_id: &str, ifname: &str) -> String {
    let mut id = format!("cni-{container_id}-{ifname}");
    id.truncate(store::validate::MAX_ID_LEN);
    id
}

pub(super) fn overlay_network(node: &Node, name: &str) -> Result<(Network, u32), CniErr> {
    let net = node
        .store
        .network(name)
        .map_err(|e| CniErr::store(&e, &format!("network {name:?}")))?;
    if net.driver != Driver::Overlay {
        return Err(CniErr::new(
            ERR_INVALID_CONFIG,
            format!(
                "network {name:?} is a {} network, not an overlay",
                net.driver
            ),
        ));
    }
    if net.ipam.len() != 1 {
        return Err(CniErr::new(
            ERR_INVALID_CONFIG,
            format!(
                "network {name:?}: the knit plugin attaches to overlay networks with one subnet"
            ),
        ));
    }
    let vni = node
        .store
        .vni(&net.id)
        .map_err(|e| CniErr::store(&e, &format!("the VNI of network {name:?}")))?
        .ok_or_else(|| CniErr::new(ERR_TRY_AGAIN, format!("network {name:?} has no VNI yet")))?;
    Ok((net, vni))
}

/// The network as the controller described it, else from its record (no remotes yet).
pub(super) fn desired(node: &Node, net: &Network, vni: u32) -> NetworkDesired {
    node.overlay
        .network(&net.id)
        .unwrap_or_else(|| NetworkDesired {
            id: net.id.clone(),
            vni,
            subnets: net
                .ipam
                .iter()
                .map(|p| Subnet {
                    cidr: p.subnet,
                    gateway: p.gateway,
                })
                .collect(),
            mode: match net.options.get(crate::cluster::MODE).map(String::as_str) {
                Some("routed") => overlay_vxlan::Mode::Routed,
                _ => overlay_vxlan::Mode::Vxlan,
            },
            underlay_ip: node.host.underlay_ip,
            endpoints: Vec::new(),
            hosts: Vec::new(),
        })
}

pub(super) fn driver<'h>(h: &'h Handle, vni: u32) -> Bridge<'h> {
    Bridge {
        h,
        net: BridgeNet {
            bridge: overlay_vxlan::bridge_name(vni),
            mtu: Some(overlay_vxlan::MTU),
            ..Default::default()
        },
    }
}

fn check_call(call: &CniCall) -> Result<(), CniErr> {
    if call.container_id.is_empty() || call.ifname.is_empty() {
        return Err(CniErr::new(
            ERR_INVALID_CONFIG,
            "CNI_CONTAINERID and CNI_IFNAME are required",
        ));
    }
    store::validate::validate_id("container", &call.container_id)
        .map_err(|e| CniErr::new(ERR_INVALID_CONFIG, e.to_string()))
}

fn add(node: &Node, call: &CniCall) -> Result<Value, CniErr> {
    check_call(call)?;
    let (name, aliases, labels) = identity(call)?;
    let (net, vni) = overlay_network(node, &call.network)?;
    let netns = NetNs::open(&call.netns).map_err(|e| {
        CniErr::kind(
            e.kind(),
            format!("the container's netns {:?}: {e}", call.netns),
        )
    })?;
    let _adding = node
        .overlay
        .ensure(&desired(node, &net, vni))
        .map_err(|e| {
            CniErr::kind(
                e.kind(),
                format!("the links of network {:?}: {e}", net.name),
            )
        })?;
    let got = allocate(node, &net, &call.container_id, &call.ifname)?;
    let ip = got.address;
    let mac = overlay_vxlan::endpoint_mac(ip.addr());
    let mut a = Addressing::default();
    a.ips.push(IpConf {
        addr: ip,
        gateway: got.gateway,
    });
    if !net.internal && got.gateway.is_some() {
        let any = if ip.addr().is_ipv4() {
            IpNet::V4(Default::default())
        } else {
            IpNet::V6(Default::default())
        };
        a.routes.push(RouteConf { dst: any, gw: None });
    }
    let mut source = Decided {
        addressing: a.clone(),
        store: Some(file_store(node, &net)?),
    };
    let req = EpRequest {
        network: &net.id,
        container_id: &call.container_id,
        ifname: &call.ifname,
        netns: Some(&netns),
        mac: Some(mac),
    };
    let h = node.overlay.netlink();
    let drv = driver(h, vni);
    let attached = libnet::endpoint::attach(&req, &mut source, &drv, &[]).map_err(|e| {
        CniErr::kind(
            e.kind(),
            format!(
                "attaching {} to network {:?}: {e}",
                call.container_id, net.name
            ),
        )
    })?;
    let mut ep = Endpoint::new(net.id.clone());
    ep.id = endpoint_id(&call.container_id, &call.ifname);
    ep.sandbox_id = Some(call.container_id.clone());
    ep.ifname = call.ifname.clone();
    ep.name = name;
    ep.aliases = aliases;
    ep.labels = labels;
    ep.mac = libnet::netlink::link::format_mac(&mac);
    match ip {
        IpNet::V4(_) => ep.ipv4 = Some(ip),
        IpNet::V6(_) => ep.ipv6 = Some(ip),
    }
    ep.host = node.host.name.clone();
    if let Err(e) = node.store.put_endpoint(&ep) {
        let _ = libnet::endpoint::detach(&req, &mut source, &drv, &[]);
        return Err(CniErr::store(&e, &format!("recording endpoint {}", ep.id)));
    }
    node.overlay.metrics.endpoints.inc();
    let w = attached.wired;
    let mut interfaces = Vec::new();
    for l in [w.bridge, w.host].into_iter().flatten() {
        interfaces.push(json!({"name": l.name, "mac": l.mac}));
    }
    let container = interfaces.len();
    interfaces
        .push(json!({"name": w.container.name, "mac": w.container.mac, "sandbox": call.netns}));
    let mut ipj = json!({"address": ip.to_string(), "interface": container});
    if let Some(g) = got.gateway {
        ipj["gateway"] = json!(g.to_string());
    }
    let routes: Vec<Value> = a
        .routes
        .iter()
        .map(|r| json!({"dst": r.dst.to_string(), "gw": got.gateway.map(|g| g.to_string())}))
        .collect();
    let version = call
        .config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0");
    Ok(
        json!({"cniVersion": version, "interfaces": interfaces, "ips": [ipj], "routes": routes, "dns": {}}),
    )
}

fn del(node: &Node, call: &CniCall) -> Result<(), CniErr> {
    check_call(call)?;
    let (net, vni) = match overlay_network(node, &call.network) {
        Ok(n) => n,
        // The network is gone: so is everything of it (DEL must not fail on what is gone).
        Err(_)
            if node
                .store
                .network(&call.network)
                .is_err_and(|e| e.kind() == ErrorKind::NotFound) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let netns = if call.netns.is_empty() {
        None
    } else {
        NetNs::open(&call.netns).ok()
    };
    let mut source = Decided {
        addressing: Addressing::default(),
        store: Some(file_store(node, &net)?),
    };
    let req = EpRequest {
        network: &net.id,
        container_id: &call.container_id,
        ifname: &call.ifname,
        netns: netns.as_ref(),
        mac: None,
    };
    let h = node.overlay.netlink();
    libnet::endpoint::detach(&req, &mut source, &driver(h, vni), &[]).map_err(|e| {
        CniErr::kind(
            e.kind(),
            format!(
                "detaching {} from network {:?}: {e}",
                call.container_id, net.name
            ),
        )
    })?;
    match node
        .store
        .delete_endpoint(&endpoint_id(&call.container_id, &call.ifname))
    {
        Ok(_) => node.overlay.metrics.endpoints.dec(),
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(CniErr::store(&e, "deleting the endpoint record")),
    };
    Ok(())
}

fn check(node: &Node, call: &CniCall) -> Result<(), CniErr> {
    check_call(call)?;
    let (net, _) = overlay_network(node, &call.network)?;
    let id = endpoint_id(&call.container_id, &call.ifname);
    let ep = node
        .store
        .endpoint(&id)
        .map_err(|e| CniErr::new(ERR_UNKNOWN_CONTAINER, format!("endpoint {id}: {e}")))?;
    if ep.host != node.host.name || ep.network_id != net.id {
        return Err(CniErr::new(
            ERR_UNKNOWN_CONTAINER,
            format!(
                "endpoint {id} is on host {:?}, network {}",
                ep.host, ep.network_id
            ),
        ));
    }
    let mut fs = file_store(node, &net)?;
    let held = ipam::held_by(&mut fs, &call.container_id, &call.ifname)
        .map_err(|e| CniErr::kind(e.kind(), e.to_string()))?;
    let want: Vec<IpAddr> = [ep.ipv4, ep.ipv6]
        .iter()
        .flatten()
        .map(|n| n.addr())
        .collect();
    if want.iter().any(|ip| !held.contains(ip)) {
        return Err(CniErr::new(
            ERR_INVALID_CONFIG,
            format!("endpoint {id}: addresses {want:?} are not all reserved on this host (held: {held:?})"),
        ));
    }
    let netns = NetNs::open(&call.netns).map_err(|e| {
        CniErr::kind(
            e.kind(),
            format!("the container's netns {:?}: {e}", call.netns),
        )
    })?;
    let found = netns
        .run_in(|| Handle::new().and_then(|h| h.find_link(&call.ifname)))
        .map_err(|e| CniErr::kind(e.kind(), e.to_string()))?
        .map_err(|e| CniErr::new(ERR_INTERNAL, e.to_string()))?;
    if found.is_none() {
        return Err(CniErr::new(
            ERR_INVALID_CONFIG,
            format!("interface {} is missing in {}", call.ifname, call.netns),
        ));
    }
    Ok(())
}

fn gc(node: &Node, call: &CniCall) -> Result<(), CniErr> {
    let (net, _) = overlay_network(node, &call.network)?;
    let valid: Vec<(String, String)> = call
        .config
        .get("cni.dev/valid-attachments")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| {
                    Some((
                        v.get("containerID")?.as_str()?.to_string(),
                        v.get("ifname")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let eps = node
        .store
        .network_endpoints(&net.id)
        .map_err(|e| CniErr::store(&e, "listing endpoints"))?;
    for ep in eps
        .iter()
        .filter(|e| e.host == node.host.name && e.id.starts_with("cni-"))
    {
        let sb = ep.sandbox_id.clone().unwrap_or_default();
        if valid.iter().any(|(c, i)| *c == sb && *i == ep.ifname) {
            continue;
        }
        let gone = CniCall {
            command: "DEL".into(),
            container_id: sb,
            netns: String::new(),
            ifname: ep.ifname.clone(),
            network: call.network.clone(),
            args: Vec::new(),
            config: Value::Null,
        };
        if let Err(e) = del(node, &gone) {
            tracing::warn!(endpoint = %ep.id, error = %e.msg, "GC: removing a stale endpoint");
        }
    }
    let mut fs = file_store(node, &net)?;
    // Docker's addresses share the directory (owned `docker-…`, released by Docker's
    // ReleaseAddress): the runtime's list does not name them, and they stay.
    ipam::gc_sparing(&mut fs, &valid, &|owner| owner.starts_with("docker-"))
        .map_err(|e| CniErr::kind(e.kind(), e.to_string()))?;
    Ok(())
}

fn status(node: &Node, call: &CniCall) -> Result<(), CniErr> {
    if !node.with_lease(|l| l.is_live()) {
        return Err(CniErr::new(
            ERR_NOT_AVAILABLE,
            format!(
                "host {:?} is not registered in etcd (its lease was lost)",
                node.host.name
            ),
        ));
    }
    overlay_network(node, &call.network).map_err(|e| CniErr::new(ERR_NOT_AVAILABLE, e.msg))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cni_ipam::block_len;

    #[test]
    fn blocks_are_a_26_or_the_subnet_and_ids_are_stable() {
        assert_eq!(block_len(&"10.244.0.0/16".parse().unwrap()), 26);
        assert_eq!(block_len(&"10.244.0.0/28".parse().unwrap()), 28);
        assert_eq!(block_len(&"fd00::/64".parse().unwrap()), 122);
        assert_eq!(endpoint_id("abc", "eth0"), "cni-abc-eth0");
        assert!(endpoint_id(&"a".repeat(200), "eth0").len() <= store::validate::MAX_ID_LEN);
    }

    fn call(args: &str, config: Value) -> CniCall {
        CniCall {
            command: "ADD".into(),
            container_id: "c1".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            network: "ov".into(),
            args: args
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config,
        }
    }

    #[test]
    fn names_aliases_and_labels_come_from_args_and_runtime_config() {
        let c = call(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0",
            serde_json::json!({
                "args": {"cni": {"aliases": ["www"], "labels": {"app": "web", "n": 1}}},
                "runtimeConfig": {"aliases": {"ov": ["front", "www"], "other": ["no"]}},
            }),
        );
        let (name, aliases, labels) = identity(&c).unwrap();
        assert_eq!(name, "web-0");
        assert_eq!(aliases, ["www", "front"]);
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["n"], "1");
        assert_eq!(labels["io.kubernetes.pod.namespace"], "prod");
        let named = call(
            "K8S_POD_NAME=x",
            serde_json::json!({"args": {"cni": {"name": "db"}}}),
        );
        assert_eq!(identity(&named).unwrap().0, "db");
        assert_eq!(
            identity(&call("", Value::Null)).unwrap(),
            (String::new(), vec![], Default::default())
        );
        let bad = call("K8S_POD_NAME=a/b", Value::Null);
        assert_eq!(identity(&bad).unwrap_err().code, ERR_INVALID_CONFIG);
    }
}
