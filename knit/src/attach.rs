//! The endpoint lifecycle's pieces for a CLI sandbox on a bridge network: the address source
//! over the host-local IPAM files (one address space with knit's CNI `host-local`), and the
//! filters (isolation from other bridge networks, ipMasq, published ports, `enable_icc=false`),
//! put together by [`with_endpoint`] for attach and detach alike.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use libnet::driver::bridge::{Bridge, BridgeNet};
use libnet::driver::macvlan::{SubKind, SubLink, SubNet};
use libnet::driver::Wired;
use libnet::driver::{IpConf, RouteConf};
use libnet::endpoint::filters::Masq;
use libnet::endpoint::{boxed, AddressSource, Addressing, BoxError, Filter, Request};
use libnet::ipam::{self, FileStore, IpamConfig};
use libnet::netlink::link::MacvlanMode;
use libnet::netlink::Handle;
use libnet::nft::{route_localnet_key, IngressPolicy, Nft, PortMapping, Proto as NftProto};
use libnet::sysctl;
use serde_json::{json, Value};
use store::{Driver, Network, PortMap};

use crate::network::{bridge_name, ipam_dir_name, masquerades};
use crate::sandbox::Dirs;

/// The host-local IPAM configuration of a network: one range set per pool (dual stack), the
/// pool's gateway, its ip-range as rangeStart..rangeEnd, in `data_dir`.
pub fn ipam_config(net: &Network, data_dir: &Path) -> Result<IpamConfig> {
    let sets: Vec<Value> = net
        .ipam
        .iter()
        .map(|p| {
            let mut r = json!({"subnet": p.subnet.to_string()});
            if let Some(g) = p.gateway {
                r["gateway"] = json!(g.to_string());
            }
            if let Some(range) = p.ip_range {
                let (start, end) = range_bounds(&p.subnet, &range);
                r["rangeStart"] = json!(start.to_string());
                r["rangeEnd"] = json!(end.to_string());
            }
            json!([r])
        })
        .collect();
    let v = json!({"type": "host-local", "ranges": sets, "dataDir": data_dir});
    IpamConfig::from_json(&v)
        .with_context(|| format!("the address pools of network {:?}", net.name))
}

/// First and last address of `range`, without the subnet's network and IPv4 broadcast address.
fn range_bounds(subnet: &IpNet, range: &IpNet) -> (IpAddr, IpAddr) {
    let step = |a: IpAddr, up: bool| match a {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            IpAddr::V4(
                if up {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                }
                .into(),
            )
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            IpAddr::V6(
                if up {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                }
                .into(),
            )
        }
    };
    let mut start = range.network();
    if start == subnet.network() {
        start = step(start, true);
    }
    let mut end = range.broadcast();
    if end == subnet.broadcast() && end.is_ipv4() {
        end = step(end, false);
    }
    (start, end)
}

/// libnet's IPAM over the host-local files as the lifecycle's address source; the default
/// routes via the gateways unless the network is internal.
pub struct HostLocal {
    pub cfg: IpamConfig,
    pub network: String,
    pub requested: Vec<IpAddr>,
    pub default_route: bool,
}

impl HostLocal {
    fn store(&self) -> Result<FileStore, BoxError> {
        FileStore::open(&self.cfg.data_dir, &self.network).map_err(boxed)
    }
}

/// A reservation is written whole under its final name (or not at all), and matters only while
/// its sandbox lives, which no power loss outlives (DESIGN.md, "durability of single-host IPAM
/// reservations"): the CLI and the agent do not wait for the disk flush.
pub(crate) fn without_flush(fs: &mut FileStore) {
    fs.defer_sync();
}

impl AddressSource for HostLocal {
    fn allocate(&mut self, req: &Request<'_>) -> Result<Addressing, BoxError> {
        let mut fs = self.store()?;
        without_flush(&mut fs);
        let got = ipam::allocate(
            &mut fs,
            &self.cfg,
            req.container_id,
            req.ifname,
            &self.requested,
        )
        .map_err(boxed)?;
        let mut a = Addressing::default();
        for al in got {
            a.ips.push(IpConf {
                addr: al.address,
                gateway: al.gateway,
            });
            if self.default_route && al.gateway.is_some() {
                let any: IpNet = if al.address.addr().is_ipv4() {
                    IpNet::V4(Default::default())
                } else {
                    IpNet::V6(Default::default())
                };
                a.routes.push(RouteConf { dst: any, gw: None });
            }
        }
        Ok(a)
    }

    fn release(&mut self, req: &Request<'_>) -> Result<(), BoxError> {
        let mut fs = self.store()?;
        ipam::release(&mut fs, req.container_id, req.ifname).map_err(boxed)
    }
}

/// Docker's isolation between bridge networks: the endpoint's addresses are "same-bridge"
/// isolated in libnet's forward chain (the firewall feature's `iso` set), so traffic between
/// two isolated endpoints is dropped unless both are on the same bridge. Traffic to the host
/// and beyond it is not affected.
pub struct Isolation<'n> {
    pub nft: &'n Nft,
    pub bridge: String,
}

impl Filter for Isolation<'_> {
    fn name(&self) -> &'static str {
        "isolation"
    }

    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, _: &Wired) -> Result<(), BoxError> {
        let ips: Vec<IpAddr> = addrs.ips.iter().map(|ip| ip.addr.addr()).collect();
        self.nft
            .ensure_firewall(
                &req.attachment(),
                &self.bridge,
                &ips,
                IngressPolicy::SameBridge,
            )
            .map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_firewall(&req.attachment()).map_err(boxed)
    }
}

/// Published ports (`knit run -p`): DNAT elements in knit's nftables table to the endpoint's
/// first address of each family, and `route_localnet` on the bridge so 127.0.0.1 works too
/// (the `portmap` CNI plugin's way). `del` needs no mappings: it reads the elements' record.
pub struct Ports<'n> {
    pub nft: &'n Nft,
    pub bridge: String,
    pub maps: Vec<PortMapping>,
}

impl Filter for Ports<'_> {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, _: &Wired) -> Result<(), BoxError> {
        if self.maps.is_empty() {
            return Ok(());
        }
        let ips: Vec<IpAddr> = addrs.ips.iter().map(|ip| ip.addr.addr()).collect();
        if ips.iter().any(IpAddr::is_ipv4) {
            sysctl::set(&route_localnet_key(&self.bridge), "1").map_err(boxed)?;
        }
        self.nft
            .ensure_portmap(&req.attachment(), &self.maps, &ips)
            .map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_portmap(&req.attachment()).map_err(boxed)
    }
}

/// `com.docker.network.bridge.enable_icc=false`: the endpoint's bridge port is isolated, so
/// the bridge forwards nothing between two endpoints of the network while each still reaches
/// the bridge (its gateway, the host and beyond). Nothing to undo: the port goes with its veth.
pub struct NoIcc<'h> {
    pub h: &'h Handle,
}

impl Filter for NoIcc<'_> {
    fn name(&self) -> &'static str {
        "icc"
    }

    fn ensure(&self, _: &Request<'_>, _: &Addressing, wired: &Wired) -> Result<(), BoxError> {
        let host = wired.host.as_ref().ok_or_else(|| boxed(NoHostLink))?;
        let link = self.h.link_by_name(&host.name).map_err(boxed)?;
        self.h
            .set_bridge_port_isolated(link.index, true)
            .map_err(boxed)
    }

    fn del(&self, _: &Request<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The driver reported no host-side link whose bridge port could be isolated (a bug).
#[derive(Debug, thiserror::Error)]
#[error("enable_icc=false: the bridge driver reported no host-side link to isolate")]
pub struct NoHostLink;

impl libnet::HasKind for NoHostLink {
    fn kind(&self) -> libnet::Kind {
        libnet::Kind::Internal
    }
}

/// libnet's form of a `-p` mapping; no host address means the network's `host_binding_ipv4`
/// when it has one, else every local address.
pub(crate) fn port_mapping(net: &Network, p: &PortMap) -> PortMapping {
    let binding = net
        .options
        .get(store::options::BRIDGE_HOST_BINDING_IPV4)
        .and_then(|v| v.parse::<IpAddr>().ok());
    PortMapping {
        host_port: p.host_port,
        container_port: p.container_port,
        protocol: match p.proto {
            store::Proto::Tcp => NftProto::Tcp,
            store::Proto::Udp => NftProto::Udp,
            store::Proto::Sctp => NftProto::Sctp,
        },
        host_ip: p.host_ip.or(binding),
    }
}

/// Run `f` with the lifecycle's pieces for a sandbox on `net`: the address source over the
/// network's host-local reservations, then [`with_wiring`]'s driver and filters.
pub(crate) fn with_endpoint<T>(
    net: &Network,
    dirs: &Dirs,
    requested: Vec<IpAddr>,
    ports: &[PortMap],
    f: impl FnOnce(&mut HostLocal, &Bridge<'_>, &[&dyn Filter]) -> Result<T>,
) -> Result<T> {
    let mut source = HostLocal {
        cfg: ipam_config(net, &dirs.cni_data_dir)?,
        network: ipam_dir_name(net).to_string(),
        requested,
        default_route: !net.internal,
    };
    with_wiring(net, dirs, false, ports, |driver, filters| {
        f(&mut source, driver, filters)
    })
}

/// Run `f` with the lifecycle's pieces for a sandbox on `net`, whatever its driver: a bridge
/// network's are [`with_endpoint`]'s; a macvlan network's are the sub-link driver on its
/// parent, without filters (its traffic never crosses the host's forward chain, and it has no
/// published ports), over the same host-local reservations.
pub(crate) fn with_net_endpoint<T>(
    net: &Network,
    dirs: &Dirs,
    requested: Vec<IpAddr>,
    ports: &[PortMap],
    f: impl FnOnce(&mut HostLocal, &dyn libnet::driver::Driver, &[&dyn Filter]) -> Result<T>,
) -> Result<T> {
    if net.driver != Driver::Macvlan {
        return with_endpoint(net, dirs, requested, ports, |source, driver, filters| {
            f(source, driver, filters)
        });
    }
    if !ports.is_empty() {
        bail!(
            "network {:?} is a macvlan network: -p needs a bridge network",
            net.name
        );
    }
    let mut source = HostLocal {
        cfg: ipam_config(net, &dirs.cni_data_dir)?,
        network: ipam_dir_name(net).to_string(),
        requested,
        default_route: !net.internal,
    };
    let h = Handle::new().context("opening a netlink socket")?;
    let driver = SubLink::new(&h, macvlan_net(net)?);
    f(&mut source, &driver, &[])
}

/// The sub-link settings of a macvlan network: `-o parent=LINK` (Docker's option), `-o
/// macvlan_mode=bridge|private|vepa|passthru` (default bridge), the MTU option.
pub fn macvlan_net(net: &Network) -> Result<SubNet> {
    let parent = net
        .options
        .get(MACVLAN_PARENT)
        .filter(|p| !p.is_empty())
        .with_context(|| {
            format!(
                "macvlan network {:?} has no -o {MACVLAN_PARENT}=LINK",
                net.name
            )
        })?;
    let mode = net.options.get(MACVLAN_MODE).map_or("", |m| m.as_str());
    let mode = MacvlanMode::parse(mode).with_context(|| {
        format!(
            "macvlan network {:?}: {MACVLAN_MODE} {mode:?} is not bridge, private, vepa or passthru",
            net.name
        )
    })?;
    Ok(SubNet {
        kind: SubKind::Macvlan(mode),
        master: Some(parent.clone()),
        master_in_container: false,
        mtu: net.mtu(),
    })
}

/// Docker's macvlan options: the host link the sandboxes' links hang off, and their mode.
pub const MACVLAN_PARENT: &str = "parent";
pub const MACVLAN_MODE: &str = "macvlan_mode";

/// Run `f` with the bridge driver and the filters for an endpoint on `net`: isolation from
/// other networks; ipMasq unless internal or turned off; the published `ports`, always present
/// so that detach removes whatever was recorded; isolated bridge ports when `enable_icc` is
/// false. `hand_off`: the runtime configures the container side (Docker).
pub(crate) fn with_wiring<T>(
    net: &Network,
    dirs: &Dirs,
    hand_off: bool,
    ports: &[PortMap],
    f: impl FnOnce(&Bridge<'_>, &[&dyn Filter]) -> Result<T>,
) -> Result<T> {
    if net.driver != Driver::Bridge {
        bail!(
            "network {:?} has driver {:?}: knit attaches to bridge networks only",
            net.name,
            net.driver.as_str()
        );
    }
    let h = Handle::new().context("opening a netlink socket")?;
    let driver = Bridge {
        h: &h,
        net: BridgeNet {
            bridge: bridge_name(net),
            mtu: net.mtu(),
            is_gateway: true,
            hand_off,
            ..Default::default()
        },
    };
    let nft = dirs.nft();
    let masq = Masq { nft: &nft };
    let isolation = Isolation {
        nft: &nft,
        bridge: bridge_name(net),
    };
    let published = Ports {
        nft: &nft,
        bridge: bridge_name(net),
        maps: ports.iter().map(|p| port_mapping(net, p)).collect(),
    };
    let mut filters: Vec<&dyn Filter> = vec![&isolation];
    if masquerades(net) {
        filters.push(&masq);
    }
    filters.push(&published);
    let no_icc = NoIcc { h: &h };
    if !net.option_bool(store::options::BRIDGE_ENABLE_ICC, true) {
        filters.push(&no_icc);
    }
    f(&driver, &filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use store::Pool;

    #[test]
    fn ipam_config_follows_the_pools() {
        let mut n = Network::new("n1", Driver::Bridge);
        let mut p = Pool::new("10.5.0.0/24".parse().unwrap());
        p.gateway = Some("10.5.0.1".parse().unwrap());
        p.ip_range = Some("10.5.0.0/25".parse().unwrap());
        n.ipam.push(p);
        let c = ipam_config(&n, Path::new("/tmp/x")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.ranges.len(), 1);
        let r = &c.ranges[0].0[0];
        assert_eq!(r.range_start, "10.5.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.range_end, "10.5.0.127".parse::<IpAddr>().unwrap());
        assert_eq!(r.gateway, "10.5.0.1".parse::<IpAddr>().unwrap());
        let (s, e) = range_bounds(
            &"10.5.0.0/24".parse().unwrap(),
            &"10.5.0.128/25".parse().unwrap(),
        );
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("10.5.0.128".into(), "10.5.0.254".into())
        );
    }

    #[test]
    fn ports_without_an_address_take_the_networks_host_binding() {
        let p = PortMap {
            proto: store::Proto::Udp,
            host_ip: None,
            host_port: 53,
            container_port: 5353,
        };
        let mut n = Network::new("n1", Driver::Bridge);
        let m = port_mapping(&n, &p);
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.protocol),
            (None, 53, 5353, NftProto::Udp)
        );
        n.options.insert(
            store::options::BRIDGE_HOST_BINDING_IPV4.into(),
            "127.0.0.1".into(),
        );
        assert_eq!(
            port_mapping(&n, &p).host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        let pinned = PortMap {
            host_ip: Some("10.0.0.1".parse().unwrap()),
            ..p
        };
        assert_eq!(
            port_mapping(&n, &pinned).host_ip,
            Some("10.0.0.1".parse().unwrap())
        );
    }
}
