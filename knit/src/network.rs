//! `knit network create|ls|inspect|rm`: the store's networks, and the bridge link a bridge
//! network owns (a macvlan network owns no link: its parent is the host's).
//!
//! The pure parts (the automatic subnet, the network record built from the flags, the bridge
//! name, `inspect`'s JSON) are separate functions, tested without a kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net};
use libnet::driver::bridge::{ensure_bridge, BridgeNet};
use libnet::netlink::Handle;
use serde_json::{json, Map, Value};
use store::{options, Driver, Endpoint, Network, Pool, Sandbox, Store};

use crate::cli::{CreateArgs, Format};
use crate::table;

/// Set (to `true`) on a network whose bridge `network create` made, so `network rm` deletes
/// it; a bridge that existed before (named with `-o com.docker.network.bridge.name=`) stays.
/// Internal bookkeeping: `inspect` does not show `io.knit.*` options.
pub const BRIDGE_CREATED: &str = "io.knit.bridge.created";

/// How many automatic subnets `create` tries when another process takes the one it picked
/// between its look and its insert.
const AUTO_SUBNET_TRIES: usize = 8;

/// The automatic subnets, in the order tried (skipping those that overlap another network or a
/// route of the host): `172.17.0.0/24` … `172.31.255.0/24` (Docker's
/// first default pool, cut into /24s), then `192.168.0.0/24` … `192.168.255.0/24`.
pub fn auto_subnet_candidates() -> impl Iterator<Item = IpNet> {
    let a = (17u8..=31).flat_map(|b| (0u8..=255).map(move |c| [172, b, c, 0]));
    let b = (0u8..=255).map(|c| [192, 168, c, 0]);
    a.chain(b)
        .filter_map(|o| Ipv4Net::new(o.into(), 24).ok().map(IpNet::V4))
}

/// The first automatic subnet overlapping none of `used`.
pub fn pick_subnet(used: &[IpNet]) -> Option<IpNet> {
    auto_subnet_candidates().find(|c| !used.iter().any(|u| store::validate::subnets_overlap(c, u)))
}

/// The first host address of a subnet: the default gateway (as the host-local IPAM's).
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n).wrapping_add(1)).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n).wrapping_add(1)).into()),
    }
}

/// The Linux bridge of a bridge network: `com.docker.network.bridge.name`, else `knit-` and
/// the first 10 hex digits of the id (15 characters, the kernel's limit).
pub fn bridge_name(net: &Network) -> String {
    match net.options.get(options::BRIDGE_NAME) {
        Some(n) => n.clone(),
        None => format!("knit-{}", net.id.get(..10).unwrap_or(&net.id)),
    }
}

/// A port mapping as `docker ps` shows it: `[HOST_IP:]HOST_PORT->CONTAINER_PORT/PROTO`.
pub fn port_string(p: &store::PortMap) -> String {
    let ip = match p.host_ip {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    format!("{ip}{}->{}/{}", p.host_port, p.container_port, p.proto)
}

/// Masquerade what leaves the network: unless internal or turned off by the option.
pub fn masquerades(net: &Network) -> bool {
    !net.internal && net.option_bool(options::BRIDGE_ENABLE_IP_MASQUERADE, true)
}

/// The record the flags describe, for any driver: one pool per `--subnet` with its
/// `--gateway` (default: the first host) and `--ip-range`, the `-o` options (none of knit's own
/// `io.knit.*`), the labels. Checks which flags go together; the caller checks the driver.
pub fn record(a: &CreateArgs, driver: Driver) -> Result<Network> {
    if a.gateway.len() > a.subnet.len() {
        bail!(
            "each --gateway needs a --subnet (got {} gateways for {} subnets)",
            a.gateway.len(),
            a.subnet.len()
        );
    }
    if a.ip_range.len() > a.subnet.len() {
        bail!(
            "each --ip-range needs a --subnet (got {} ranges for {} subnets)",
            a.ip_range.len(),
            a.subnet.len()
        );
    }
    let mut net = Network::new(a.name.clone(), driver);
    net.ipv6 = a.ipv6;
    net.internal = a.internal;
    for (i, subnet) in a.subnet.iter().enumerate() {
        let mut pool = Pool::new(*subnet);
        pool.gateway = Some(
            a.gateway
                .get(i)
                .copied()
                .unwrap_or_else(|| first_host(subnet)),
        );
        pool.ip_range = a.ip_range.get(i).copied();
        net.ipam.push(pool);
    }
    for (k, v) in &a.opt {
        if k.starts_with("io.knit.") {
            bail!("option {k:?} is reserved for knit's own bookkeeping");
        }
        net.options.insert(k.clone(), v.clone());
    }
    net.labels = a.label.iter().cloned().collect();
    Ok(net)
}

/// The network record `create` stores, without an automatic subnet (the caller adds one when
/// `pools` is empty). Checks what the store cannot: the driver, and which flags go together.
pub fn build_network(a: &CreateArgs) -> Result<Network> {
    let driver = Driver::from(a.driver.clone());
    if driver != Driver::Bridge && driver != Driver::Macvlan {
        bail!(
            "network driver {:?} is not supported by knit yet (only \"bridge\" and \"macvlan\")",
            a.driver
        );
    }
    let mut net = record(a, driver)?;
    if a.ipv6 && !net.ipam.iter().any(|p| p.subnet.addr().is_ipv6()) {
        bail!("--ipv6 needs an IPv6 --subnet (knit has no default IPv6 pool)");
    }
    if let Some(v) = net.options.get(options::INTERNAL) {
        // Docker's `-o internal=true` means `--internal`.
        net.internal |= matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True");
    }
    store::validate::validate_network(&net).with_context(|| format!("network {:?}", a.name))?;
    if net.driver == Driver::Macvlan {
        crate::attach::macvlan_net(&net)?;
    }
    Ok(net)
}

/// `docker network inspect`'s shape for one network. `sandbox_name` gives the name of a
/// sandbox id known to the store (Docker's sandboxes are not).
pub fn inspect_json(
    net: &Network,
    endpoints: &[Endpoint],
    sandbox_name: &dyn Fn(&str) -> Option<String>,
) -> Value {
    let config: Vec<Value> = net
        .ipam
        .iter()
        .map(|p| {
            let mut c = Map::new();
            c.insert("Subnet".into(), json!(p.subnet.to_string()));
            if let Some(g) = p.gateway {
                c.insert("Gateway".into(), json!(g.to_string()));
            }
            if let Some(r) = p.ip_range {
                c.insert("IPRange".into(), json!(r.to_string()));
            }
            Value::Object(c)
        })
        .collect();
    let mut containers = Map::new();
    for ep in endpoints {
        let key = ep.sandbox_id.clone().unwrap_or_else(|| ep.id.clone());
        let name = ep
            .sandbox_id
            .as_deref()
            .and_then(sandbox_name)
            .unwrap_or_else(|| ep.name.clone());
        let addr = |a: &Option<IpNet>| a.map(|a| a.to_string()).unwrap_or_default();
        containers.insert(
            key,
            json!({
                "Name": name,
                "EndpointID": ep.id,
                "MacAddress": ep.mac,
                "IPv4Address": addr(&ep.ipv4),
                "IPv6Address": addr(&ep.ipv6),
                "Ports": ep.ports.iter().map(port_string).collect::<Vec<_>>(),
            }),
        );
    }
    let options: BTreeMap<&String, &String> = net
        .options
        .iter()
        .filter(|(k, _)| !k.starts_with("io.knit."))
        .collect();
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": net.driver.as_str(),
        "EnableIPv6": net.ipv6,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": options,
        "Labels": net.labels,
    })
}

/// `knit network create`: the record first (so a duplicate name or an overlapping subnet
/// changes nothing), then the bridge; if the bridge cannot be made the record goes again.
pub fn create(st: &dyn Store, a: &CreateArgs) -> Result<Network> {
    let net = build_network(a)?;
    if net.driver == Driver::Macvlan {
        return create_macvlan(st, net);
    }
    materialize(st, net)
}

/// A macvlan network is only a record: its parent must exist in the host, and each sandbox's
/// link is made on it by the attach ([`crate::attach::with_net_endpoint`]).
fn create_macvlan(st: &dyn Store, mut net: Network) -> Result<Network> {
    let sub = crate::attach::macvlan_net(&net)?;
    let parent = sub.master.unwrap_or_default();
    let h = Handle::new().context("opening a netlink socket")?;
    if h.find_link(&parent)
        .with_context(|| format!("looking up link {parent}"))?
        .is_none()
    {
        bail!(
            "macvlan network {:?}: parent link {parent:?} does not exist",
            net.name
        );
    }
    if net.ipam.is_empty() {
        let existing = st.list_networks().context("listing networks")?;
        let routed = routed_subnets(&h)?;
        insert_auto(st, &mut net, existing, &routed)?;
    } else {
        st.create_network(&net)
            .with_context(|| format!("creating network {:?}", net.name))?;
    }
    Ok(net)
}

/// Store a built network (an automatic subnet when it has no pool) and make its bridge: the
/// one path of `knit network create` and of Docker's `CreateNetwork`.
pub fn materialize(st: &dyn Store, mut net: Network) -> Result<Network> {
    let existing = st.list_networks().context("listing networks")?;
    let bridge = bridge_name(&net);
    if let Some(other) = existing
        .iter()
        .find(|o| o.driver == Driver::Bridge && bridge_name(o) == bridge)
    {
        bail!(
            "bridge {bridge:?} is already used by network {:?}",
            other.name
        );
    }
    let h = Handle::new().context("opening a netlink socket")?;
    let existed = h
        .find_link(&bridge)
        .with_context(|| format!("looking up link {bridge}"))?
        .is_some();
    if !existed {
        net.options.insert(BRIDGE_CREATED.into(), "true".into());
    }
    if net.ipam.is_empty() {
        let routed = routed_subnets(&h)?;
        insert_auto(st, &mut net, existing, &routed)?;
    } else {
        st.create_network(&net)
            .with_context(|| format!("creating network {:?}", net.name))?;
    }
    if let Err(e) = ensure_network_bridge(&h, &net) {
        if let Err(u) = st.delete_network(&net.id) {
            eprintln!(
                "knit: rolling back: could not remove network {:?}: {u}",
                net.name
            );
        }
        return Err(e);
    }
    Ok(net)
}

/// The bridge of a stored bridge network, made if missing (create, and the agent's repair).
pub fn ensure_network_bridge(h: &Handle, net: &Network) -> Result<()> {
    let bridge = bridge_name(net);
    let bnet = BridgeNet {
        bridge: bridge.clone(),
        mtu: net.mtu(),
        ..Default::default()
    };
    ensure_bridge(h, &bnet)
        .with_context(|| format!("creating bridge {bridge} of network {:?}", net.name))?;
    Ok(())
}

/// Docker's scope of a network: an overlay spans the cluster.
fn scope(n: &Network) -> &'static str {
    if n.driver == Driver::Overlay {
        "global"
    } else {
        "local"
    }
}

/// The IPv4 destinations of the host's main routing table, but the default route: an automatic
/// subnet must not shadow them (Docker's `docker0` on 172.17.0.0/16, a LAN on 192.168.1.0/24).
pub fn routed_subnets(h: &Handle) -> Result<Vec<IpNet>> {
    Ok(h.routes(false)
        .context("listing the host's routes")?
        .into_iter()
        .filter(|r| r.table == libnet::netlink::route::RT_TABLE_MAIN && r.dst.prefix_len() > 0)
        .map(|r| r.dst)
        .collect())
}

/// Insert `net` with the first automatic subnet free of other networks and of `routed`,
/// trying the next one when another process took it meanwhile.
fn insert_auto(
    st: &dyn Store,
    net: &mut Network,
    mut existing: Vec<Network>,
    routed: &[IpNet],
) -> Result<()> {
    for _ in 0..AUTO_SUBNET_TRIES {
        let used: Vec<IpNet> = existing
            .iter()
            .flat_map(|n| n.ipam.iter().map(|p| p.subnet))
            .chain(routed.iter().copied())
            .collect();
        let Some(subnet) = pick_subnet(&used) else {
            bail!("no free automatic subnet left: give one with --subnet");
        };
        let mut pool = Pool::new(subnet);
        pool.gateway = Some(first_host(&subnet));
        net.ipam = vec![pool];
        match st.create_network(net) {
            Ok(()) => return Ok(()),
            Err(store::Error::SubnetOverlap { .. }) => {
                existing = st.list_networks().context("listing networks")?;
            }
            Err(e) => return Err(e).with_context(|| format!("creating network {:?}", net.name)),
        }
    }
    bail!(
        "creating network {:?}: every automatic subnet tried was taken meanwhile",
        net.name
    )
}

/// `knit network ls`.
pub fn ls(st: &dyn Store, format: Format) -> Result<String> {
    let nets = st.list_networks().context("listing networks")?;
    Ok(match format {
        Format::Json => {
            let v: Vec<Value> = nets
                .iter()
                .map(|n| {
                    json!({
                        "Name": n.name, "Id": n.id, "Driver": n.driver.as_str(), "Scope": scope(n),
                        "Subnets": n.ipam.iter().map(|p| p.subnet.to_string()).collect::<Vec<_>>(),
                        "Internal": n.internal, "Created": n.created,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Table => {
            let rows = nets
                .iter()
                .map(|n| {
                    vec![
                        n.id.get(..12).unwrap_or(&n.id).to_string(),
                        n.name.clone(),
                        n.driver.to_string(),
                        scope(n).to_string(),
                        n.ipam
                            .iter()
                            .map(|p| p.subnet.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table::render(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], rows)
        }
    })
}

/// `knit network inspect NAME...`: every name is looked up first, so a missing one prints
/// nothing.
pub fn inspect(st: &dyn Store, names: &[String]) -> Result<String> {
    let mut out = Vec::new();
    let sandboxes: Vec<Sandbox> = st.list_sandboxes().context("listing sandboxes")?;
    let name_of = |id: &str| {
        sandboxes
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.name.clone())
    };
    for n in names {
        let net = st.network(n)?;
        let eps = st
            .network_endpoints(&net.id)
            .with_context(|| format!("listing the endpoints of network {:?}", net.name))?;
        out.push(inspect_json(&net, &eps, &name_of));
    }
    Ok(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n")
}

/// `knit network rm NAME...`: each in turn; the first failure stops (those before it are gone).
/// A network Docker made is Docker's to remove. Each removal is journaled in the run dir, so
/// a `knit` killed between the record and the bridge leaves the repair pass what to delete.
pub fn rm(st: &dyn Store, names: &[String], dirs: &crate::sandbox::Dirs) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for n in names {
        let net = st.network(n)?;
        if is_dockers(&net) {
            bail!(
                "network {:?} was created through Docker: remove it with `docker network rm {}`",
                net.name,
                &net.id[..12.min(net.id.len())]
            );
        }
        // Journaled: a kill from here on leaves the repair pass a removal to finish. A removal
        // that fails (endpoints, a foreign port on the bridge) reports it and is not retried.
        let journal = crate::repair::journal_network_rm(dirs, &net)?;
        let result = remove(st, &net, &dirs.cni_data_dir);
        journal.remove();
        result?;
        removed.push(net.name);
    }
    Ok(removed)
}

/// Set (to `true`) on a network that Docker made through the agent.
pub const DOCKER_OWNED: &str = "io.knit.docker";

/// The host-local IPAM directory of a network's reservations, when not its own name (a
/// Docker network on knit's IPAM driver keeps them in its pool's directory).
pub const IPAM_DIR: &str = "io.knit.ipam.dir";

/// Made by Docker through the agent.
pub fn is_dockers(net: &Network) -> bool {
    net.options.get(DOCKER_OWNED).is_some_and(|v| v == "true")
}

/// The name of the host-local IPAM directory holding a network's reservations.
pub fn ipam_dir_name(net: &Network) -> &str {
    net.options.get(IPAM_DIR).map_or(&net.name, |d| d.as_str())
}

/// Remove one network without endpoints: the bridge knit made for it, then the record, then
/// its IPAM directories if nothing is reserved there.
pub fn remove(st: &dyn Store, net: &Network, cni_data_dir: &std::path::Path) -> Result<()> {
    let eps = st
        .network_endpoints(&net.id)
        .with_context(|| format!("listing the endpoints of network {:?}", net.name))?;
    if !eps.is_empty() {
        bail!(
            "network {:?} has {} endpoint(s): remove their sandboxes first (knit sandbox rm)",
            net.name,
            eps.len()
        );
    }
    let services = st
        .network_services(&net.id)
        .with_context(|| format!("listing the services of network {:?}", net.name))?;
    if !services.is_empty() {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "network {:?} has {} service(s) ({}): remove them first (knit service rm)",
            net.name,
            services.len(),
            names.join(", ")
        );
    }
    let bridge = bridge_name(net);
    let owned = net.options.get(BRIDGE_CREATED).is_some_and(|v| v == "true");
    let h = Handle::new().context("opening a netlink socket")?;
    let link = if owned {
        h.find_link(&bridge)
            .with_context(|| format!("looking up link {bridge}"))?
            .filter(|l| l.kind.as_deref() == Some("bridge"))
    } else {
        None
    };
    if let Some(br) = &link {
        let ports: Vec<String> = h
            .links()
            .context("listing links")?
            .into_iter()
            .filter(|l| l.master == Some(br.index))
            .map(|l| l.name)
            .collect();
        if !ports.is_empty() {
            bail!(
                "network {:?}: bridge {bridge} still has ports ({}) that knit does not know",
                net.name,
                ports.join(", ")
            );
        }
    }
    // The bridge first, then the record: a crash in between leaves the record, so the same
    // command (or Docker's retry of DeleteNetwork) finds it and finishes; the other order
    // would leave a bridge nothing knows about.
    if let Some(br) = link {
        match h.del_link(br.index) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("removing bridge {bridge} of network {:?}", net.name))
            }
        }
    }
    st.delete_network(&net.id)
        .with_context(|| format!("removing network {:?}", net.name))?;
    remove_ipam_dirs(cni_data_dir, ipam_dir_name(net));
    if ipam_dir_name(net) != net.name {
        remove_pool_alias(cni_data_dir, net);
    }
    Ok(())
}

/// The name under which a Docker network's pool directory is shared with CNI networks (a
/// symlink made by the agent), and the CNI index kept under that name.
fn remove_pool_alias(data_dir: &std::path::Path, net: &Network) {
    let link = data_dir.join(&net.name);
    let ours = std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == ipam_dir_name(net));
    if ours {
        let _ = std::fs::remove_file(&link);
        let index = data_dir.join(libnet::ipam::file_store::INDEX_DIR);
        let _ = std::fs::remove_dir_all(index.join(&net.name));
        let _ = std::fs::remove_dir(&index);
    }
}

/// The host-local IPAM directories of a removed network, if nothing is reserved there any more
/// (a CNI container on a network of the same name keeps them).
pub fn remove_ipam_dirs(data_dir: &std::path::Path, name: &str) {
    let dir = data_dir.join(name);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let bookkeeping = |f: &str| {
        f == libnet::ipam::file_store::LOCK_FILE
            || f.starts_with(libnet::ipam::file_store::LAST_RESERVED_PREFIX)
    };
    let names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().all(|f| bookkeeping(f)) {
        let _ = std::fs::remove_dir_all(&dir);
        let index = data_dir.join(libnet::ipam::file_store::INDEX_DIR);
        let _ = std::fs::remove_dir_all(index.join(name));
        // Only if no other network has an index there (remove_dir refuses a non-empty one).
        let _ = std::fs::remove_dir(&index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, NetworkCmd};
    use clap::Parser;

    fn create_args(args: &[&str]) -> CreateArgs {
        let all = ["knit", "network", "create"].iter().chain(args).copied();
        match Cli::try_parse_from(all).unwrap().command {
            Command::Network(NetworkCmd::Create(a)) => a,
            c => panic!("{c:?}"),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn auto_subnet_skips_every_overlap() {
        assert_eq!(pick_subnet(&[]), Some(net("172.17.0.0/24")));
        assert_eq!(
            pick_subnet(&[net("172.17.0.0/24")]),
            Some(net("172.17.1.0/24"))
        );
        // A wider network covers many candidates; a narrower one inside a candidate blocks it.
        assert_eq!(
            pick_subnet(&[net("172.17.0.0/16")]),
            Some(net("172.18.0.0/24"))
        );
        assert_eq!(
            pick_subnet(&[net("172.16.0.0/12"), net("192.168.0.128/25")]),
            Some(net("192.168.1.0/24"))
        );
        assert_eq!(pick_subnet(&[net("0.0.0.0/0")]), None);
        assert_eq!(auto_subnet_candidates().count(), 15 * 256 + 256);
    }

    #[test]
    fn build_fills_gateways_and_checks_flags() {
        let n = build_network(&create_args(&["--subnet", "10.7.0.0/24", "n7"])).unwrap();
        assert_eq!(n.ipam.len(), 1);
        assert_eq!(n.ipam[0].gateway, Some("10.7.0.1".parse().unwrap()));
        assert!(!n.internal && masquerades(&n));
        assert_eq!(bridge_name(&n), format!("knit-{}", &n.id[..10]));
        assert_eq!(bridge_name(&n).len(), 15);

        let n = build_network(&create_args(&[
            "--internal",
            "-o",
            "com.docker.network.bridge.name=kbr0",
            "n",
        ]))
        .unwrap();
        assert!(
            n.ipam.is_empty(),
            "the automatic subnet is chosen against the store"
        );
        assert!(n.internal && !masquerades(&n));
        assert_eq!(bridge_name(&n), "kbr0");

        let n = build_network(&create_args(&[
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            "n",
        ]))
        .unwrap();
        assert!(!masquerades(&n));

        let err = |args: &[&str]| format!("{:#}", build_network(&create_args(args)).unwrap_err());
        assert!(err(&["--driver", "overlay", "n"]).contains("not supported"));
        assert!(err(&["--driver", "macvlan", "n"]).contains("parent"));
        assert!(err(&[
            "--driver",
            "macvlan",
            "-o",
            "parent=v0",
            "-o",
            "macvlan_mode=x",
            "n"
        ])
        .contains("macvlan_mode"));
        let m = build_network(&create_args(&["-d", "macvlan", "-o", "parent=v0", "n"])).unwrap();
        assert_eq!(m.driver, Driver::Macvlan);
        assert!(err(&["--gateway", "10.0.0.1", "n"]).contains("--subnet"));
        assert!(err(&["--ipv6", "n"]).contains("IPv6"));
        assert!(err(&["a/b"]).contains("invalid"));
        assert!(
            err(&["--subnet", "10.0.0.0/24", "--gateway", "10.1.0.1", "n"]).contains("not inside")
        );
        assert!(err(&["-o", "io.knit.bridge.created=true", "n"]).contains("reserved"));
        assert!(err(&[
            "-o",
            "com.docker.network.bridge.name=waytoolongbridgename",
            "n"
        ])
        .contains("invalid"));
    }

    #[test]
    fn inspect_is_shaped_like_docker() {
        let mut n = build_network(&create_args(&[
            "--subnet",
            "10.7.0.0/24",
            "--ip-range",
            "10.7.0.128/25",
            "--label",
            "a=b",
            "n7",
        ]))
        .unwrap();
        n.options.insert(BRIDGE_CREATED.into(), "true".into());
        let mut ep = Endpoint::new(n.id.clone());
        ep.sandbox_id = Some("sb1".into());
        ep.mac = "02:00:00:00:00:01".into();
        ep.ipv4 = Some(net("10.7.0.130/24"));
        let mut docker_ep = Endpoint::new(n.id.clone());
        docker_ep.name = "web".into();
        let v = inspect_json(&n, &[ep.clone(), docker_ep.clone()], &|id| {
            (id == "sb1").then(|| "s1".to_string())
        });
        assert_eq!(v["Name"], "n7");
        assert_eq!(v["Id"], n.id.as_str());
        assert_eq!(v["Scope"], "local");
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["EnableIPv6"], false);
        assert_eq!(v["Internal"], false);
        assert_eq!(v["IPAM"]["Driver"], "default");
        assert_eq!(
            v["IPAM"]["Config"],
            json!([{"Subnet": "10.7.0.0/24", "Gateway": "10.7.0.1", "IPRange": "10.7.0.128/25"}])
        );
        let c = &v["Containers"]["sb1"];
        assert_eq!(c["Name"], "s1");
        assert_eq!(c["EndpointID"], ep.id.as_str());
        assert_eq!(c["MacAddress"], "02:00:00:00:00:01");
        assert_eq!(c["IPv4Address"], "10.7.0.130/24");
        assert_eq!(c["IPv6Address"], "");
        // An endpoint of a sandbox knit does not know is keyed by its own id, under its name.
        assert_eq!(v["Containers"][&docker_ep.id]["Name"], "web");
        assert_eq!(v["Options"], json!({}), "knit's bookkeeping is not shown");
        assert_eq!(v["Labels"], json!({"a": "b"}));
    }
}
