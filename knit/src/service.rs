//! `knit service create|ls|inspect|rm`: a stable virtual address and DNS name in front of the
//! endpoints of a network whose labels match a selector, balanced in knit's nftables table.
//!
//! A service is a store record ([`store::Service`]), its VIP reserved in the network's
//! host-local IPAM (so no container ever gets it), the VIP as a /32 (/128) address of the
//! network's bridge (so containers' ARP for it is answered by the host), and the elements of
//! [`libnet::nft::Nft::ensure_service`]: new connections to `VIP:PORT` are spread at random
//! over the selected endpoints' addresses. Clients are masqueraded, so a backend on the
//! client's own bridge replies through the host (backends see the bridge's address as the
//! client).
//!
//! Backends follow endpoints: every attach and detach by the CLI ([`crate::connect`]) and every
//! `knit endpoint add|rm` calls [`sync_network`], which recomputes the network's services and
//! changes only the elements that differ (nothing for services whose backends did not change).

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use libnet::ipam::{store::IpamStore, store::LockedStore, FileStore};
use libnet::netlink::Handle;
use libnet::nft::{Attachment, Proto as NftProto, ServicePort as NftPort};
use serde_json::{json, Value};
use store::{Driver, Endpoint, Network, Service, ServicePort, Store};

use crate::cli::Format;
use crate::connect::ATTACHING;
use crate::network::{bridge_name, ensure_network_bridge, ipam_dir_name};
use crate::sandbox::Dirs;
use crate::table;

/// The interface name a VIP's host-local reservation is held under (its id is the service's).
const VIP_IFNAME: &str = "vip";
/// The `ifname` of a service's nftables attachment.
const NFT_IFNAME: &str = "svc";
/// How many candidate addresses an automatic VIP tries before giving up.
const VIP_TRIES: usize = 4096;

pub struct CreateArgs<'a> {
    pub name: &'a str,
    pub network: &'a str,
    pub selector: &'a [(String, String)],
    pub ports: &'a [ServicePort],
    pub vip: Option<IpAddr>,
    pub labels: &'a [(String, String)],
}

/// The nftables identity of a service's elements.
fn attachment(svc: &Service) -> Attachment {
    Attachment::new(&svc.network_id, &svc.id, NFT_IFNAME)
}

fn nft_ports(svc: &Service) -> Vec<NftPort> {
    svc.ports
        .iter()
        .map(|p| NftPort {
            protocol: match p.proto {
                store::Proto::Tcp => NftProto::Tcp,
                store::Proto::Udp => NftProto::Udp,
                store::Proto::Sctp => NftProto::Sctp,
            },
            port: p.port,
            target: p.target_port,
        })
        .collect()
}

/// The service's backends among `eps`: selected, attached (not half-way), with an address of
/// the VIP's family.
pub fn backends<'a>(svc: &Service, eps: &'a [Endpoint]) -> Vec<&'a Endpoint> {
    eps.iter()
        .filter(|e| svc.selects(e) && !e.labels.contains_key(ATTACHING))
        .filter(|e| backend_addr(svc, e).is_some())
        .collect()
}

fn backend_addr(svc: &Service, e: &Endpoint) -> Option<IpAddr> {
    let a = if svc.vip.is_ipv4() { e.ipv4 } else { e.ipv6 };
    a.map(|a| a.addr())
}

/// Candidate VIPs of a pool, best first: addresses outside the pool's ip-range (Docker leaves
/// them for fixed addresses), from the top of the subnet down, never the network, broadcast or
/// gateway address.
fn vip_candidates(pool: &store::Pool) -> impl Iterator<Item = IpAddr> + '_ {
    let subnet = pool.subnet;
    let (last, first): (u128, u128) = match subnet {
        IpNet::V4(n) => (
            u128::from(u32::from(n.broadcast())).saturating_sub(1),
            u128::from(u32::from(n.network())) + 1,
        ),
        IpNet::V6(n) => (
            u128::from(n.broadcast()).saturating_sub(1),
            u128::from(n.network()).saturating_add(1),
        ),
    };
    let to_ip = move |v: u128| -> IpAddr {
        match subnet {
            IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
            IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
        }
    };
    let in_range = move |ip: &IpAddr| pool.ip_range.is_some_and(|r| r.contains(ip));
    let all = move || (first..=last).rev().take(VIP_TRIES * 4).map(to_ip);
    all()
        .filter(move |ip| !in_range(ip))
        .chain(all().filter(move |ip| in_range(ip)))
        .filter(move |ip| Some(*ip) != pool.gateway)
        .take(VIP_TRIES)
}

/// Reserve `vip` for the service in the network's host-local directory, leaving the round
/// robin where it was; `Ok(false)` if taken.
fn reserve_vip(fs: &mut FileStore, svc_id: &str, vip: IpAddr) -> Result<bool> {
    let mut l = fs.lock()?;
    let ok = l.reserve_fixed(svc_id, VIP_IFNAME, vip)?;
    l.unlock()?;
    Ok(ok)
}

fn release_vip(dirs: &Dirs, net: &Network, svc: &Service) -> Result<()> {
    let mut fs = FileStore::open(&dirs.cni_data_dir, ipam_dir_name(net))?;
    let mut l = fs.lock()?;
    l.release_owner(&svc.id, VIP_IFNAME)?;
    l.unlock()?;
    Ok(())
}

/// `knit service create`: reserve the VIP, record the service, then program it; a failure at
/// any step takes back the ones before.
pub fn create(st: &dyn Store, dirs: &Dirs, a: &CreateArgs<'_>) -> Result<Service> {
    let net = st.network(a.network)?;
    if net.driver != Driver::Bridge {
        bail!(
            "network {:?} is a {} network: services need a bridge network",
            net.name,
            net.driver
        );
    }
    if a.ports.is_empty() {
        bail!(
            "service {:?} needs at least one --port (e.g. --port 80/tcp)",
            a.name
        );
    }
    let mut fs = FileStore::open(&dirs.cni_data_dir, ipam_dir_name(&net))?;
    crate::attach::without_flush(&mut fs);
    let mut svc = Service::new(
        a.name,
        net.id.clone(),
        std::net::Ipv4Addr::UNSPECIFIED.into(),
    );
    svc.selector = a.selector.iter().cloned().collect();
    svc.ports = a.ports.to_vec();
    svc.labels = a.labels.iter().cloned().collect();
    let eps = st.network_endpoints(&net.id)?;
    let services = st.network_services(&net.id)?;
    let used = |ip: IpAddr| {
        eps.iter()
            .any(|e| [e.ipv4, e.ipv6].iter().flatten().any(|a| a.addr() == ip))
            || services.iter().any(|s| s.vip == ip)
    };
    let vip = match a.vip {
        Some(ip) => {
            if !net.ipam.iter().any(|p| p.subnet.contains(&ip)) {
                bail!("--vip {ip} is in no subnet of network {:?}", net.name);
            }
            svc.vip = ip;
            store::validate::validate_service(&svc, &net)
                .with_context(|| format!("service {:?}", a.name))?;
            if used(ip) || !reserve_vip(&mut fs, &svc.id, ip)? {
                bail!("--vip {ip} is already in use on network {:?}", net.name);
            }
            ip
        }
        None => {
            let i = net
                .ipam
                .iter()
                .position(|p| p.subnet.addr().is_ipv4())
                .unwrap_or(0);
            let Some(pool) = net.ipam.get(i) else {
                bail!("network {:?} has no subnet for a virtual address", net.name);
            };
            let mut found = None;
            for ip in vip_candidates(pool) {
                if !used(ip) && reserve_vip(&mut fs, &svc.id, ip)? {
                    found = Some(ip);
                    break;
                }
            }
            found.with_context(|| {
                format!("no free address in {} for a virtual address", pool.subnet)
            })?
        }
    };
    svc.vip = vip;
    if let Err(e) = st.create_service(&svc) {
        if let Err(u) = release_vip(dirs, &net, &svc) {
            eprintln!("knit: rolling back: could not release {vip}: {u:#}");
        }
        return Err(e).with_context(|| format!("recording service {:?}", a.name));
    }
    if let Err(e) = program(dirs, &net, &svc, &eps) {
        if let Err(u) = unprogram(dirs, &net, &svc) {
            eprintln!("knit: rolling back: {u:#}");
        }
        if let Err(u) = st.delete_service(&svc.id) {
            eprintln!(
                "knit: rolling back: could not remove service {}: {u}",
                svc.id
            );
        }
        if let Err(u) = release_vip(dirs, &net, &svc) {
            eprintln!("knit: rolling back: could not release {vip}: {u:#}");
        }
        return Err(e);
    }
    Ok(svc)
}

/// Make the kernel hold the service: the VIP on the bridge, the balancing elements over the
/// backends among `eps`. Idempotent; only what differs changes.
pub fn program(dirs: &Dirs, net: &Network, svc: &Service, eps: &[Endpoint]) -> Result<()> {
    let h = Handle::new().context("opening a netlink socket")?;
    ensure_network_bridge(&h, net)?;
    let bridge = bridge_name(net);
    let link = h
        .link_by_name(&bridge)
        .with_context(|| format!("looking up bridge {bridge}"))?;
    let host = IpNet::new(svc.vip, if svc.vip.is_ipv4() { 32 } else { 128 })?;
    match h.add_addr(link.index, host, true) {
        Err(e) if libnet::HasKind::kind(&e) == libnet::Kind::Exists => {}
        r => r.with_context(|| format!("adding {host} to bridge {bridge}"))?,
    }
    let addrs: Vec<IpAddr> = backends(svc, eps)
        .iter()
        .filter_map(|e| backend_addr(svc, e))
        .collect();
    dirs.nft()
        .ensure_service(&attachment(svc), svc.vip, &nft_ports(svc), &addrs)
        .with_context(|| format!("programming service {:?}", svc.name))
}

/// Take the service out of the kernel (tolerant: what is gone is fine).
fn unprogram(dirs: &Dirs, net: &Network, svc: &Service) -> Result<()> {
    dirs.nft()
        .del_service(&attachment(svc))
        .with_context(|| format!("removing the rules of service {:?}", svc.name))?;
    let h = Handle::new().context("opening a netlink socket")?;
    let bridge = bridge_name(net);
    if let Some(link) = h.find_link(&bridge)? {
        let host = IpNet::new(svc.vip, if svc.vip.is_ipv4() { 32 } else { 128 })?;
        match h.del_addr(link.index, host) {
            Err(e) if libnet::HasKind::kind(&e) != libnet::Kind::NotFound => {
                return Err(e).with_context(|| format!("removing {host} from bridge {bridge}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bring every service of a network up to date with its endpoints (after an attach or a
/// detach). A network without services costs one store read.
pub fn sync_network(st: &dyn Store, dirs: &Dirs, network_id: &str) -> Result<()> {
    let services = st.network_services(network_id)?;
    if services.is_empty() {
        return Ok(());
    }
    let net = st.network(network_id)?;
    let eps = st.network_endpoints(network_id)?;
    for svc in &services {
        program(dirs, &net, svc, &eps)?;
    }
    Ok(())
}

/// [`sync_network`] after a change that already succeeded: a failure is reported, not
/// returned (the next change, `knit service create` or `sandbox prune` syncs again).
pub fn sync_after_change(st: &dyn Store, dirs: &Dirs, network_id: &str) {
    if let Err(e) = sync_network(st, dirs, network_id) {
        eprintln!("knit: warning: updating the services of network {network_id}: {e:#}");
    }
}

/// `knit service rm`: the kernel's part, then the reservation, then the record (a removal
/// interrupted half-way is finished by running it again).
pub fn rm(st: &dyn Store, dirs: &Dirs, names: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for n in names {
        let svc = st.service(n)?;
        let net = st.network(&svc.network_id)?;
        unprogram(dirs, &net, &svc)?;
        release_vip(dirs, &net, &svc)
            .with_context(|| format!("releasing {} of service {:?}", svc.vip, svc.name))?;
        st.delete_service(&svc.id)?;
        out.push(svc.name);
    }
    Ok(out)
}

/// `knit service ls`.
pub fn ls(st: &dyn Store, network: Option<&str>, format: Format) -> Result<String> {
    let services = match network {
        Some(n) => st.network_services(&st.network(n)?.id)?,
        None => st.list_services()?,
    };
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for svc in &services {
        let net = st.network(&svc.network_id)?;
        let eps = st.network_endpoints(&svc.network_id)?;
        let n = backends(svc, &eps).len();
        if format == Format::Json {
            json_rows.push(inspect_json(svc, &net, &eps));
            continue;
        }
        let ports: Vec<String> = svc.ports.iter().map(ToString::to_string).collect();
        let sel: Vec<String> = svc
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rows.push(vec![
            svc.name.clone(),
            net.name.clone(),
            svc.vip.to_string(),
            ports.join(","),
            sel.join(","),
            n.to_string(),
        ]);
    }
    Ok(match format {
        Format::Json => format!("{}\n", Value::Array(json_rows)),
        Format::Table => table::render(
            &["NAME", "NETWORK", "VIP", "PORTS", "SELECTOR", "BACKENDS"],
            rows,
        ),
    })
}

fn inspect_json(svc: &Service, net: &Network, eps: &[Endpoint]) -> Value {
    let backends: Vec<Value> = backends(svc, eps)
        .iter()
        .map(|e| {
            json!({
                "Name": e.name,
                "EndpointID": e.id,
                "Address": backend_addr(svc, e).map(|a| a.to_string()),
            })
        })
        .collect();
    let ports: Vec<Value> = svc
        .ports
        .iter()
        .map(|p| {
            json!({
                "Name": p.name,
                "Port": p.port,
                "TargetPort": p.target_port,
                "Protocol": p.proto.to_string(),
            })
        })
        .collect();
    json!({
        "Name": svc.name,
        "Id": svc.id,
        "Network": net.name,
        "NetworkID": net.id,
        "VirtualIP": svc.vip.to_string(),
        "Ports": ports,
        "Selector": svc.selector,
        "Labels": svc.labels,
        "Created": svc.created,
        "Backends": backends,
    })
}

/// `knit service inspect`: a JSON array, one object per service, with its current backends.
pub fn inspect(st: &dyn Store, names: &[String]) -> Result<String> {
    let mut out = Vec::new();
    for n in names {
        let svc = st.service(n)?;
        let net = st.network(&svc.network_id)?;
        let eps = st.network_endpoints(&svc.network_id)?;
        out.push(inspect_json(&svc, &net, &eps));
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&out)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, range: Option<&str>) -> store::Pool {
        let mut p = store::Pool::new(subnet.parse().unwrap());
        p.gateway = Some(crate::network::first_host(&p.subnet));
        p.ip_range = range.map(|r| r.parse().unwrap());
        p
    }

    #[test]
    fn vips_come_from_the_top_and_outside_the_ip_range_first() {
        let p = pool("10.1.0.0/24", None);
        let v: Vec<String> = vip_candidates(&p).take(2).map(|a| a.to_string()).collect();
        assert_eq!(v, ["10.1.0.254", "10.1.0.253"]);
        let p = pool("10.1.0.0/24", Some("10.1.0.128/25"));
        let v: Vec<IpAddr> = vip_candidates(&p).collect();
        assert_eq!(v[0].to_string(), "10.1.0.127");
        assert!(
            !v.contains(&"10.1.0.1".parse().unwrap()),
            "never the gateway"
        );
        let outside = v
            .iter()
            .take_while(|a| !p.ip_range.unwrap().contains(*a))
            .count();
        assert_eq!(
            outside, 126,
            "every address below the range, then the range"
        );
        let p = pool("10.1.0.0/30", None);
        let v: Vec<String> = vip_candidates(&p).map(|a| a.to_string()).collect();
        assert_eq!(v, ["10.1.0.2"]);
        let p = pool("fd00:1::/64", None);
        assert_eq!(
            vip_candidates(&p).next().unwrap().to_string(),
            "fd00:1::ffff:ffff:ffff:fffe"
        );
    }

    #[test]
    fn backends_are_selected_attached_and_of_the_vips_family() {
        let net_id = "n".repeat(64);
        let mut svc = Service::new("web", net_id.clone(), "10.1.0.250".parse().unwrap());
        svc.selector.insert("app".into(), "web".into());
        let ep = |name: &str, v4: Option<&str>, labels: &[(&str, &str)]| {
            let mut e = Endpoint::new(net_id.clone());
            e.name = name.into();
            e.ipv4 = v4.map(|a| a.parse().unwrap());
            e.ipv6 = Some("fd00::5/64".parse().unwrap());
            e.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            e
        };
        let eps = vec![
            ep("a", Some("10.1.0.2/24"), &[("app", "web")]),
            ep("b", Some("10.1.0.3/24"), &[("app", "db")]),
            ep(
                "c",
                Some("10.1.0.4/24"),
                &[("app", "web"), (ATTACHING, "true")],
            ),
            ep("d", None, &[("app", "web")]),
        ];
        let names: Vec<&str> = backends(&svc, &eps)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
        svc.vip = "fd00::fa".parse().unwrap();
        let names: Vec<&str> = backends(&svc, &eps)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["a", "d"]);
    }
}
