//! Kernel tests of the netlink layer, each in fresh namespaces of its own.
//! Run as root with `cargo test -p libnet --features root-tests`; without root they fail.
#![cfg(feature = "root-tests")]

mod common;

use common::TestNs;
use ipnet::IpNet;
use libnet::driver::bridge::{Bridge, BridgeNet, IpConf, RouteConf};
use libnet::driver::Driver;
use libnet::endpoint::{self, Addressing, Attached, EndpointError, Filter, Fixed, Request, Step};
use libnet::netlink::link::IPV4_DEVCONF_ARP_NOTIFY;
use libnet::netlink::{Handle, Route, VethPeer};
use libnet::netns::NetNs;
use libnet::{sysctl, HasKind, Kind};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn veth_into_another_netns_bridge_addr_route() {
    let host = TestNs::new("h");
    let ctr = TestNs::new("c");
    let h = Handle::new_in(&host.ns).unwrap();
    let c = Handle::new_in(&ctr.ns).unwrap();

    h.add_bridge("kbr0", Some(1400), None).unwrap();
    let br = h.link_by_name("kbr0").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    h.set_up(br.index, true).unwrap();

    let peer = VethPeer {
        name: "eth0",
        netns_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&ctr.ns)),
        ..Default::default()
    };
    h.add_veth("veth-k1", Some(1400), None, &peer).unwrap();
    // A second pair with the same host name is refused as Exists.
    let err = h.add_veth("veth-k1", None, None, &peer).unwrap_err();
    assert_eq!(err.kind(), Kind::Exists, "{err}");

    let hv = h.link_by_name("veth-k1").unwrap();
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    h.set_master(hv.index, br.index).unwrap();
    h.set_bridge_port(hv.index, Some(true), None).unwrap();
    h.set_up(hv.index, true).unwrap();
    let hv = h.link_by_index(hv.index).unwrap();
    assert_eq!(hv.master, Some(br.index));
    assert_eq!(hv.hairpin, Some(true));

    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!(eth0.mtu, 1400);
    assert!(
        h.find_link("eth0").unwrap().is_none(),
        "peer must not appear in the host"
    );
    c.set_up(eth0.index, true).unwrap();
    c.add_addr(eth0.index, net("10.244.7.2/24"), false).unwrap();
    c.add_addr(eth0.index, net("fd00:6b6e:7::2/64"), true)
        .unwrap();
    let addrs = c.addrs(eth0.index).unwrap();
    assert!(
        addrs.iter().any(|a| a.net == net("10.244.7.2/24")),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().any(|a| a.net == net("fd00:6b6e:7::2/64")),
        "{addrs:?}"
    );
    assert_eq!(
        c.add_addr(eth0.index, net("10.244.7.2/24"), false)
            .unwrap_err()
            .kind(),
        Kind::Exists
    );

    let gw = "10.244.7.1".parse().unwrap();
    let def = Route::new(net("0.0.0.0/0"), Some(gw), Some(eth0.index));
    c.add_route(&def).unwrap();
    let routes = c.routes(false).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.dst == net("0.0.0.0/0") && r.gw == Some(gw) && r.table == 254),
        "{routes:?}"
    );
    c.del_route(&def).unwrap();
    c.del_route(&def).unwrap(); // tolerant
    assert!(!c.routes(false).unwrap().iter().any(|r| r.gw == Some(gw)));

    c.del_addr(eth0.index, net("10.244.7.2/24")).unwrap();
    c.del_addr(eth0.index, net("10.244.7.2/24")).unwrap(); // tolerant

    h.set_mtu(hv.index, 1300).unwrap();
    h.set_mac(hv.index, [0x0a, 0x58, 1, 2, 3, 4]).unwrap();
    h.set_promisc(hv.index, true).unwrap();
    h.set_txqlen(hv.index, 500).unwrap();
    let hv2 = h.link_by_index(hv.index).unwrap();
    assert_eq!(hv2.mtu, 1300);
    assert_eq!(hv2.mac_string(), "0a:58:01:02:03:04");
    assert!(hv2.is_promisc());
    assert_eq!(hv2.txqlen, 500);
    h.set_up(hv.index, false).unwrap();
    h.rename(hv.index, "veth-k2").unwrap();
    assert!(h.find_link("veth-k1").unwrap().is_none());

    h.del_link_by_name("veth-k2").unwrap();
    h.del_link_by_name("veth-k2").unwrap(); // tolerant
    assert!(
        c.find_link("eth0").unwrap().is_none(),
        "deleting one end removes the pair"
    );
    assert_eq!(h.link_by_name("nope0").unwrap_err().kind(), Kind::NotFound);
}

#[test]
fn sysctls_are_per_namespace() {
    let a = TestNs::new("s");
    a.ns.run_in(|| sysctl::set("net.ipv4.ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        a.ns.run_in(|| sysctl::get("net.ipv4.ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    let b = TestNs::new("s");
    assert_eq!(
        b.ns.run_in(|| sysctl::get("net.ipv4.ip_forward"))
            .unwrap()
            .unwrap(),
        "0"
    );
}

#[test]
fn ipv4_devconf_over_netlink_is_the_sysctl() {
    let a = TestNs::new("d");
    let h = Handle::new_in(&a.ns).unwrap();
    let peer = VethPeer {
        name: "kntdc1",
        ..Default::default()
    };
    h.add_veth("kntdc0", None, None, &peer).unwrap();
    let idx = h.link_by_name("kntdc0").unwrap().index;
    let get = |k: &'static str| a.ns.run_in(move || sysctl::get(k)).unwrap().unwrap();
    assert_eq!(get("net.ipv4.conf.kntdc0.arp_notify"), "0");
    h.set_ipv4_devconf(idx, IPV4_DEVCONF_ARP_NOTIFY, 1).unwrap();
    assert_eq!(get("net.ipv4.conf.kntdc0.arp_notify"), "1");
    // Only that setting: the peer and the neighbours' other settings are untouched.
    assert_eq!(get("net.ipv4.conf.kntdc1.arp_notify"), "0");
    assert_eq!(get("net.ipv4.conf.kntdc0.forwarding"), "0");
}

#[test]
fn move_link_between_namespaces() {
    let a = TestNs::new("m");
    let b = TestNs::new("m");
    let ha = Handle::new_in(&a.ns).unwrap();
    let hb = Handle::new_in(&b.ns).unwrap();
    ha.add_veth(
        "kva",
        None,
        None,
        &VethPeer {
            name: "kvb",
            ..Default::default()
        },
    )
    .unwrap();
    let l = ha.link_by_name("kvb").unwrap();
    ha.set_netns(l.index, &b.ns).unwrap();
    assert!(ha.find_link("kvb").unwrap().is_none());
    assert!(hb.find_link("kvb").unwrap().is_some());
}

/// Attach (container id, eth0) in `netns` with fixed addresses through the lifecycle.
fn attach_fixed(
    driver: &dyn Driver,
    id: &str,
    netns: &NetNs,
    ips: &[IpConf],
    routes: &[RouteConf],
    filters: &[&dyn Filter],
) -> Result<Attached, EndpointError> {
    let req = Request {
        network: "knit-test",
        container_id: id,
        ifname: "eth0",
        netns: Some(netns),
        mac: None,
    };
    let mut source = Fixed(Addressing {
        ips: ips.to_vec(),
        routes: routes.to_vec(),
    });
    endpoint::attach(&req, &mut source, driver, filters)
}

#[test]
fn bridge_driver_attach_detach_and_rollback() {
    let host = TestNs::new("bh");
    let c1 = TestNs::new("bc");
    let c2 = TestNs::new("bc");
    let h = Handle::new_in(&host.ns).unwrap();
    let net_conf = BridgeNet {
        bridge: "kbr1".into(),
        mtu: Some(1450),
        is_gateway: true,
        ..Default::default()
    };
    let gw: std::net::IpAddr = "10.244.9.1".parse().unwrap();
    let ips1 = vec![IpConf {
        addr: net("10.244.9.2/24"),
        gateway: Some(gw),
    }];
    let ips2 = vec![IpConf {
        addr: net("10.244.9.3/24"),
        gateway: Some(gw),
    }];
    let routes = vec![RouteConf {
        dst: net("0.0.0.0/0"),
        gw: None,
    }];
    // The driver runs in the plugin's own namespace: here, the test "host" namespace.
    let driver = Bridge {
        h: &h,
        net: net_conf.clone(),
    };
    let a1 = host
        .ns
        .run_in(|| attach_fixed(&driver, "ctr1", &c1.ns, &ips1, &routes, &[]))
        .unwrap()
        .unwrap()
        .wired;
    assert_eq!(a1.bridge.unwrap().name, "kbr1");
    assert_eq!(a1.container.name, "eth0");
    let br = h.link_by_name("kbr1").unwrap();
    assert!(h
        .addrs(br.index)
        .unwrap()
        .iter()
        .any(|a| a.net == net("10.244.9.1/24")));
    assert_eq!(
        host.ns
            .run_in(|| sysctl::get("net.ipv4.ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    let c = Handle::new_in(&c1.ns).unwrap();
    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!(eth0.mtu, 1450);
    assert!(c
        .routes(false)
        .unwrap()
        .iter()
        .any(|r| r.dst == net("0.0.0.0/0") && r.gw == Some("10.244.9.1".parse().unwrap())));

    // A second endpoint whose route cannot be added (gateway outside its subnet) fails half way
    // and must leave no veth behind.
    let bad_route = [RouteConf {
        dst: net("10.9.0.0/16"),
        gw: Some("192.0.2.1".parse().unwrap()),
    }];
    let bad = host
        .ns
        .run_in(|| attach_fixed(&driver, "ctr2", &c2.ns, &ips2, &bad_route, &[]))
        .unwrap()
        .unwrap_err();
    assert_eq!(bad.step, Step::Wire);
    assert!(bad.undo_failures.is_empty(), "{bad}");
    assert!(h
        .find_link(&libnet::driver::host_veth_name("ctr2", "eth0"))
        .unwrap()
        .is_none());
    assert!(Handle::new_in(&c2.ns)
        .unwrap()
        .find_link("eth0")
        .unwrap()
        .is_none());
    assert!(
        h.find_link("kbr1").unwrap().is_some(),
        "the bridge in use by ctr1 stays"
    );

    driver.detach("ctr1", "eth0", None).unwrap();
    driver.detach("ctr1", "eth0", None).unwrap();
    assert!(c.find_link("eth0").unwrap().is_none());
}

/// A filter whose nftables work always fails: the step after the links were made.
struct Refusing;

#[derive(Debug, thiserror::Error)]
#[error("refused on purpose")]
struct Refused;

impl HasKind for Refused {
    fn kind(&self) -> Kind {
        Kind::Busy
    }
}

impl Filter for Refusing {
    fn name(&self) -> &'static str {
        "refusing"
    }
    fn ensure(
        &self,
        _: &Request<'_>,
        _: &Addressing,
        _: &libnet::driver::Wired,
    ) -> Result<(), endpoint::BoxError> {
        Err(endpoint::boxed(Refused))
    }
    fn del(&self, _: &Request<'_>) -> Result<(), endpoint::BoxError> {
        Ok(())
    }
}

#[test]
fn lifecycle_failure_after_the_links_exist_removes_them_and_the_new_bridge() {
    let host = TestNs::new("lh");
    let ctr = TestNs::new("lc");
    let h = Handle::new_in(&host.ns).unwrap();
    let driver = Bridge {
        h: &h,
        net: BridgeNet {
            bridge: "kbr2".into(),
            is_gateway: true,
            ..Default::default()
        },
    };
    let ips = [IpConf {
        addr: net("10.244.8.2/24"),
        gateway: "10.244.8.1".parse().ok(),
    }];
    let e = host
        .ns
        .run_in(|| attach_fixed(&driver, "ctrf", &ctr.ns, &ips, &[], &[&Refusing]))
        .unwrap()
        .unwrap_err();
    assert_eq!((e.step, e.kind()), (Step::Filter("refusing"), Kind::Busy));
    assert!(e.undo_failures.is_empty(), "{e}");
    assert!(
        e.to_string().starts_with("refusing: refused on purpose"),
        "{e}"
    );
    let left: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, vec!["lo".to_string()], "host namespace keeps nothing");
    let c = Handle::new_in(&ctr.ns).unwrap();
    assert!(c.find_link("eth0").unwrap().is_none());
}
