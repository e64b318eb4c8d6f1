//! The planner and the link setup against `FakeNetlink` (libnet's in-memory kernel).

use std::net::IpAddr;

use libnet::netlink::fake::{Call, FakeNetlink};
use libnet::netlink::fdb::FDB_STATIC;
use libnet::netlink::link::{IPV4_DEVCONF_PROXY_ARP, VXLAN_PORT};
use libnet::netlink::neigh::NUD_REACHABLE;
use libnet::netlink::route::RTPROT_BOOT;
use libnet::netlink::{FdbEntry, Link, Neigh, Netlink, Route, Vxlan};
use libnet::{HasKind, Kind};

use crate::plan::block_route;
use crate::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const LOCAL: &str = "192.168.50.1";
const B: &str = "192.168.50.2";
const C: &str = "192.168.50.3";
const MAC1: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 5];
const MAC2: [u8; 6] = [0x0a, 0x58, 10, 244, 2, 7];
const MAC3: [u8; 6] = [0x0a, 0x58, 10, 244, 2, 8];

/// A host with `eth0` holding the underlay address.
fn host() -> (FakeNetlink, u32) {
    let f = FakeNetlink::new();
    let eth0 = f.seed_link(Link {
        name: "eth0".into(),
        mtu: 1500,
        mac: vec![2, 0, 0, 0, 0, 1],
        ..Link::default()
    });
    f.seed_addr(eth0, format!("{LOCAL}/24").parse().unwrap());
    (f, eth0)
}

fn ep(a: &str, mac: [u8; 6], host: &str) -> RemoteEndpoint {
    RemoteEndpoint {
        ip: ip(a),
        mac: Mac(mac),
        host: ip(host),
    }
}

fn rhost(a: &str, blocks: &[&str]) -> RemoteHost {
    RemoteHost {
        underlay_ip: ip(a),
        blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
    }
}

/// Network "blue", VNI 0x1001, 10.244.0.0/16, two remote endpoints on B and C.
fn blue() -> NetworkDesired {
    NetworkDesired {
        id: "blue".into(),
        vni: 0x1001,
        subnets: vec![Subnet {
            cidr: "10.244.0.0/16".parse().unwrap(),
            gateway: Some(ip("10.244.0.1")),
        }],
        mode: Mode::Vxlan,
        underlay_ip: ip(LOCAL),
        endpoints: vec![ep("10.244.1.5", MAC1, B), ep("10.244.2.7", MAC2, C)],
        hosts: vec![rhost(B, &["10.244.1.0/24"]), rhost(C, &["10.244.2.0/24"])],
    }
}

fn link(f: &FakeNetlink, name: &str) -> Link {
    f.find_link(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The overlay's entries in the fake, sorted, as comparable tuples.
fn remotes(f: &FakeNetlink, vx: u32) -> Vec<([u8; 6], IpAddr)> {
    let mut v: Vec<_> = f
        .model()
        .fdb
        .iter()
        .filter(|e| e.index == vx && e.is_self)
        .map(|e| (e.mac, e.dst.unwrap()))
        .collect();
    v.sort();
    v
}

fn ports(f: &FakeNetlink, vx: u32) -> Vec<[u8; 6]> {
    let mut v: Vec<_> = f
        .model()
        .fdb
        .iter()
        .filter(|e| e.index == vx && !e.is_self && e.state == FDB_STATIC)
        .map(|e| e.mac)
        .collect();
    v.sort();
    v
}

fn neighs(f: &FakeNetlink, br: u32) -> Vec<(IpAddr, [u8; 6])> {
    let mut v: Vec<_> = f
        .model()
        .neighs
        .iter()
        .filter(|n| n.index == br && n.is_permanent())
        .map(|n| (n.ip, n.mac.unwrap()))
        .collect();
    v.sort();
    v
}

fn routes(f: &FakeNetlink) -> Vec<(String, Option<IpAddr>, u8)> {
    let mut v: Vec<_> = f
        .model()
        .routes
        .iter()
        .map(|r| (r.dst.to_string(), r.gw, r.protocol))
        .collect();
    v.sort();
    v
}

#[test]
fn ensure_makes_the_bridge_gateway_and_vxlan_port_and_is_idempotent() {
    let (f, eth0) = host();
    let net = blue();
    let links = ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    assert_eq!(links.bridge, br.index);
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(
        (br.mtu, br.mac.as_slice()),
        (1450, &gateway_mac(0x1001)[..])
    );
    assert!(br.is_up());
    let addrs: Vec<String> = f
        .addrs(br.index)
        .unwrap()
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, ["10.244.0.1/16"]);
    let vx = link(&f, "knvx4097");
    assert_eq!(links.vxlan, Some(vx.index));
    assert_eq!(
        vx.vxlan,
        Some(Vxlan {
            vni: 0x1001,
            local: Some(ip(LOCAL)),
            port: VXLAN_PORT,
            learning: false,
            link: Some(eth0),
        })
    );
    assert_eq!(vx.mtu, 1450);
    assert_eq!(vx.master, Some(br.index));
    assert_eq!((vx.learning, vx.neigh_suppress), (Some(false), Some(true)));
    assert!(vx.is_up());
    assert_eq!(
        f.model().ipv4_devconf(br.index, IPV4_DEVCONF_PROXY_ARP),
        Some(0)
    );

    // Again: the same links, and no change but the (idempotent) proxy_arp write.
    let before = f.calls().len();
    assert_eq!(ensure_network(&f, &net).unwrap(), links);
    let again = &f.calls()[before..];
    assert!(
        again.iter().all(
            |c| matches!(c, Call::SetIpv4Devconf(i, IPV4_DEVCONF_PROXY_ARP, 0) if *i == br.index)
        ),
        "{again:?}"
    );
}

#[test]
fn ensure_corrects_a_bridge_and_replaces_a_vxlan_with_other_settings() {
    let (f, _) = host();
    let mut net = blue();
    ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    f.set_mtu(br.index, 1500).unwrap();
    f.set_mac(br.index, [2, 9, 9, 9, 9, 9]).unwrap();
    f.add_addr(br.index, "10.99.0.1/24".parse().unwrap(), false)
        .unwrap();
    // The host's underlay address changed.
    let eth1 = f.seed_link(Link {
        name: "eth1".into(),
        mtu: 1500,
        ..Link::default()
    });
    f.seed_addr(eth1, "192.168.60.1/24".parse().unwrap());
    net.underlay_ip = ip("192.168.60.1");
    net.endpoints.clear();
    net.hosts.clear();
    let old_vx = link(&f, "knvx4097").index;
    let links = ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    assert_eq!(
        (br.mtu, br.mac.as_slice()),
        (1450, &gateway_mac(0x1001)[..])
    );
    let addrs: Vec<String> = f
        .addrs(br.index)
        .unwrap()
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, ["10.244.0.1/16"], "a stray global address goes");
    let vx = link(&f, "knvx4097");
    assert_ne!(vx.index, old_vx);
    assert_eq!(links.vxlan, Some(vx.index));
    assert_eq!(vx.vxlan.unwrap().local, Some(ip("192.168.60.1")));
    assert_eq!(vx.vxlan.unwrap().link, Some(eth1));
    assert_eq!((vx.master, vx.learning), (Some(br.index), Some(false)));
}

#[test]
fn sync_programs_remotes_flood_entries_bridge_entries_and_neighbours_once() {
    let (f, _) = host();
    let net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    assert_eq!(
        remotes(&f, vx),
        vec![
            ([0; 6], ip(B)),
            ([0; 6], ip(C)),
            (MAC1, ip(B)),
            (MAC2, ip(C)),
        ]
    );
    assert_eq!(ports(&f, vx), vec![MAC1, MAC2]);
    assert_eq!(
        neighs(&f, br),
        vec![(ip("10.244.1.5"), MAC1), (ip("10.244.2.7"), MAC2)]
    );
    assert_eq!(routes(&f), vec![], "no routes in vxlan mode");
    assert_eq!(
        s.applied,
        Applied {
            fdb_added: 4,
            port_added: 2,
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!((s.fdb_entries, s.neighs, s.routes), (4, 2, 0));
    // Converged: a second sync plans nothing and changes nothing.
    let seen = observe(&f, &net, &s.links).unwrap();
    assert!(plan_network(&net, &s.links, &seen).is_empty());
    let s2 = sync_network(&f, &net).unwrap();
    assert_eq!(s2.applied, Applied::default());
}

#[test]
fn a_removed_endpoint_and_host_lose_their_entries() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    net.endpoints.retain(|e| e.mac.0 != MAC2);
    net.hosts.retain(|h| h.underlay_ip != ip(C));
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(remotes(&f, vx), vec![([0; 6], ip(B)), (MAC1, ip(B))]);
    assert_eq!(ports(&f, vx), vec![MAC1]);
    assert_eq!(neighs(&f, br), vec![(ip("10.244.1.5"), MAC1)]);
    assert_eq!(
        s.applied,
        Applied {
            fdb_removed: 2,
            port_removed: 1,
            neigh_removed: 1,
            ..Applied::default()
        }
    );
}

#[test]
fn a_mac_moving_to_another_host_is_replaced_never_deleted() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let vx = s.links.vxlan.unwrap();
    net.endpoints[0].host = ip(C);
    let before = f.calls().len();
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(
        s.applied,
        Applied {
            fdb_moved: 1,
            ..Applied::default()
        }
    );
    assert!(remotes(&f, vx).contains(&(MAC1, ip(C))));
    assert!(!remotes(&f, vx).contains(&(MAC1, ip(B))));
    let calls = &f.calls()[before..];
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::DelFdb(e) if e.mac == MAC1)),
        "{calls:?}"
    );
}

#[test]
fn an_address_changing_hands_has_its_neighbour_replaced() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    // 10.244.2.7 leaves C's container (MAC2) for a new container on B (MAC3).
    net.endpoints[1] = ep("10.244.2.7", MAC3, B);
    let before = f.calls().len();
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(neighs(&f, br)[1], (ip("10.244.2.7"), MAC3));
    assert!(remotes(&f, vx).contains(&(MAC3, ip(B))));
    assert!(!remotes(&f, vx).iter().any(|(m, _)| *m == MAC2));
    assert_eq!(ports(&f, vx), vec![MAC1, MAC3]);
    assert_eq!(
        s.applied,
        Applied {
            fdb_added: 1,
            fdb_removed: 1,
            port_added: 1,
            port_removed: 1,
            neigh_replaced: 1,
            ..Applied::default()
        }
    );
    // Replaced in place: never deleted (no window in which the address has no entry).
    let calls = &f.calls()[before..];
    assert!(
        !calls.iter().any(|c| matches!(c, Call::DelNeigh(_))),
        "{calls:?}"
    );
    // The new path exists before the neighbour points at it.
    let pos = |want: &dyn Fn(&Call) -> bool| calls.iter().position(want).unwrap();
    assert!(
        pos(&|c| matches!(c, Call::AppendFdb(e) if e.mac == MAC3 && e.is_self))
            < pos(&|c| matches!(c, Call::ReplaceNeigh(_)))
    );
}

#[test]
fn stale_entries_of_a_previous_run_go_and_entries_not_ours_stay() {
    let (f, eth0) = host();
    let net = blue();
    let links = ensure_network(&f, &net).unwrap();
    let (br, vx) = (links.bridge, links.vxlan.unwrap());
    let old = [0x0a, 0x58, 10, 244, 9, 9];
    // Left by a previous run: a remote, a flood target, a bridge entry, a neighbour, a route.
    let stale_remote = FdbEntry::vxlan_remote(vx, old, ip("192.168.50.9"));
    let stale_flood = FdbEntry::vxlan_remote(vx, [0; 6], ip("192.168.50.9"));
    let stale_port = FdbEntry {
        dst: None,
        is_self: false,
        state: FDB_STATIC,
        ..stale_remote.clone()
    };
    let stale_neigh = Neigh::permanent(br, ip("10.244.9.9"), old);
    let stale_route = block_route("10.244.9.0/24".parse().unwrap(), ip("192.168.50.9"));
    // Not ours: a learned bridge entry, a dynamic neighbour, entries on another link, a
    // route of another protocol inside the subnet.
    let learned = FdbEntry {
        mac: [0x0a, 0x58, 10, 244, 0, 77],
        state: NUD_REACHABLE,
        ..stale_port.clone()
    };
    let dynamic = Neigh {
        state: NUD_REACHABLE,
        ..Neigh::permanent(br, ip("10.244.0.77"), old)
    };
    let elsewhere_neigh = Neigh::permanent(eth0, ip("192.168.50.9"), old);
    let elsewhere_fdb = FdbEntry::vxlan_remote(eth0, old, ip("192.168.50.9"));
    let boot_route = Route::new(
        "10.244.8.0/24".parse().unwrap(),
        Some(ip("192.168.50.8")),
        None,
    );
    for e in [
        &stale_remote,
        &stale_flood,
        &stale_port,
        &learned,
        &elsewhere_fdb,
    ] {
        f.append_fdb(e).unwrap();
    }
    for n in [&stale_neigh, &dynamic, &elsewhere_neigh] {
        f.replace_neigh(n).unwrap();
    }
    f.add_route(&stale_route).unwrap();
    f.add_route(&boot_route).unwrap();

    let s = sync_network(&f, &net).unwrap();
    let m = f.model();
    assert!(!m.fdb.iter().any(|e| e.key() == stale_remote.key()));
    assert!(!m.fdb.iter().any(|e| e.key() == stale_flood.key()));
    assert!(!m.fdb.contains(&stale_port));
    assert!(m.fdb.contains(&learned), "a learned entry is the kernel's");
    assert!(m.fdb.contains(&elsewhere_fdb));
    assert!(!m.neighs.contains(&stale_neigh));
    assert!(m.neighs.contains(&dynamic) && m.neighs.contains(&elsewhere_neigh));
    assert_eq!(
        routes(&f),
        vec![(
            "10.244.8.0/24".into(),
            Some(ip("192.168.50.8")),
            RTPROT_BOOT
        )]
    );
    assert_eq!(
        (
            s.applied.fdb_removed,
            s.applied.port_removed,
            s.applied.neigh_removed,
            s.applied.routes_removed
        ),
        (2, 1, 1, 1)
    );
}

fn routed() -> NetworkDesired {
    NetworkDesired {
        mode: Mode::Routed,
        endpoints: vec![],
        ..blue()
    }
}

#[test]
fn routed_mode_routes_the_other_hosts_blocks_via_their_underlay_and_has_no_vxlan() {
    let (f, _) = host();
    // Start in vxlan mode: switching to routed deletes the vxlan device.
    sync_network(&f, &blue()).unwrap();
    let mut net = routed();
    net.hosts.push(rhost(LOCAL, &["10.244.0.0/24"])); // our own block: skipped
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(s.links.vxlan, None);
    assert!(f.find_link("knvx4097").unwrap().is_none());
    assert_eq!(
        f.model()
            .ipv4_devconf(s.links.bridge, IPV4_DEVCONF_PROXY_ARP),
        Some(1)
    );
    let p = RTPROT_KNIT_OVERLAY;
    assert_eq!(
        routes(&f),
        vec![
            ("10.244.1.0/24".into(), Some(ip(B)), p),
            ("10.244.2.0/24".into(), Some(ip(C)), p),
        ]
    );
    assert_eq!(s.applied.routes_replaced, 2);
    assert_eq!(sync_network(&f, &net).unwrap().applied, Applied::default());

    // C's block moves to a new host D, and B goes away.
    net.hosts = vec![rhost("192.168.50.4", &["10.244.2.0/24", "10.244.3.0/24"])];
    let s = sync_network(&f, &net).unwrap();
    let d = Some(ip("192.168.50.4"));
    assert_eq!(
        routes(&f),
        vec![
            ("10.244.2.0/24".into(), d, p),
            ("10.244.3.0/24".into(), d, p)
        ]
    );
    assert_eq!(
        (s.applied.routes_replaced, s.applied.routes_removed),
        (2, 1)
    );
}

#[test]
fn bad_desired_states_are_refused_before_any_change() {
    let (f, _) = host();
    type Change = Box<dyn Fn(&mut NetworkDesired)>;
    let cases: Vec<(&str, Change)> = vec![
        ("VNI 0", Box::new(|n| n.vni = 0)),
        ("VNI", Box::new(|n| n.vni = 1 << 24)),
        ("no subnet", Box::new(|n| n.subnets.clear())),
        ("empty network id", Box::new(|n| n.id.clear())),
        (
            "gateway 10.9.0.1 outside",
            Box::new(|n| n.subnets[0].gateway = Some(ip("10.9.0.1"))),
        ),
        (
            "endpoint 10.9.0.5 outside",
            Box::new(|n| n.endpoints.push(ep("10.9.0.5", MAC3, B))),
        ),
        (
            "not unicast",
            Box::new(|n| n.endpoints[0].mac = Mac([1, 0, 0x5e, 0, 0, 1])),
        ),
        (
            "given to two MACs",
            Box::new(|n| n.endpoints.push(ep("10.244.1.5", MAC3, B))),
        ),
        (
            "on two hosts",
            Box::new(|n| n.endpoints.push(ep("10.244.1.6", MAC1, C))),
        ),
        ("family", Box::new(|n| n.endpoints[0].host = ip("fd00::2"))),
        (
            "block 10.9.0.0/24",
            Box::new(|n| n.hosts[0].blocks.push("10.9.0.0/24".parse().unwrap())),
        ),
        (
            "routed mode is IPv4 only",
            Box::new(|n| {
                n.mode = Mode::Routed;
                n.subnets[0].cidr = "fd00:6b6e::/48".parse().unwrap();
                n.subnets[0].gateway = None;
                n.endpoints.clear();
                n.hosts.clear();
            }),
        ),
    ];
    for (want, change) in cases {
        let mut net = blue();
        change(&mut net);
        let err = sync_network(&f, &net).unwrap_err();
        assert_eq!(err.kind(), Kind::Invalid, "{want}: {err}");
        assert!(err.to_string().contains(want), "{want:?} not in {err}");
        assert!(f.calls().is_empty(), "{want}: {:?}", f.calls());
    }
}

#[test]
fn a_foreign_link_under_our_name_or_a_missing_underlay_is_a_clear_error() {
    let (f, _) = host();
    f.seed_link(Link {
        name: "knov1001".into(),
        kind: Some("dummy".into()),
        ..Link::default()
    });
    let err = ensure_network(&f, &blue()).unwrap_err();
    assert_eq!(err.kind(), Kind::Exists);
    assert!(err.to_string().contains("knov1001"), "{err}");
    assert!(f.calls().is_empty(), "{:?}", f.calls());

    let (f, _) = host();
    let net = NetworkDesired {
        underlay_ip: ip("192.168.70.1"),
        endpoints: vec![],
        hosts: vec![],
        ..blue()
    };
    let err = ensure_network(&f, &net).unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound);
    assert!(err.to_string().contains("192.168.70.1"), "{err}");
}

#[test]
fn a_failed_apply_stops_and_the_next_sync_converges() {
    let (f, _) = host();
    let net = blue();
    f.fail_next("replace_neigh", libc::ENOBUFS);
    let err = sync_network(&f, &net).unwrap_err();
    assert_eq!(err.kind(), Kind::Transient);
    assert!(err.to_string().contains("blue"), "{err}");
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(
        s.applied,
        Applied {
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!(neighs(&f, s.links.bridge).len(), 2);
}

#[test]
fn remove_network_deletes_its_links_and_routes_and_is_tolerant() {
    let (f, _) = host();
    let net = routed();
    sync_network(&f, &net).unwrap();
    sync_network(&f, &blue_as(0x2002, "10.245.0.0/16")).unwrap();
    let r = remove_network(&f, &net).unwrap();
    assert_eq!((r.links, r.routes), (vec!["knov1001".to_string()], 2));
    assert!(f.find_link("knov1001").unwrap().is_none());
    assert!(f.find_link("knov2002").unwrap().is_some());
    assert_eq!(remove_network(&f, &net).unwrap(), Removed::default());
}

/// `blue` under another VNI and subnet, without remotes.
fn blue_as(vni: u32, cidr: &str) -> NetworkDesired {
    let cidr: ipnet::IpNet = cidr.parse().unwrap();
    NetworkDesired {
        id: format!("net{vni}"),
        vni,
        subnets: vec![Subnet {
            cidr,
            gateway: Some(cidr.hosts().next().unwrap()),
        }],
        endpoints: vec![],
        hosts: vec![],
        ..blue()
    }
}

#[test]
fn sync_host_syncs_every_network_and_removes_those_no_longer_listed() {
    let (f, _) = host();
    let mut desired = HostDesired {
        format: FORMAT,
        networks: vec![blue(), {
            let mut r = routed();
            r.vni = 7;
            r.id = "red".into();
            r.subnets[0].cidr = "10.246.0.0/16".parse().unwrap();
            r.subnets[0].gateway = Some(ip("10.246.0.1"));
            r.hosts = vec![rhost(B, &["10.246.1.0/24"])];
            r
        }],
    };
    // Not ours although it looks close: a bridge named like ours with a non-canonical VNI.
    f.add_bridge("knov01", None, None).unwrap();
    let s = sync_host(&f, &desired);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.networks.len(), 2);
    assert_eq!(s.applied.fdb_added, 4);
    assert_eq!(s.applied.routes_replaced, 1);
    assert_eq!(s.removed, Removed::default());

    // "red" goes; a bad network is reported and does not stop "blue".
    desired.networks.pop();
    let mut bad = blue_as(9, "10.247.0.0/16");
    bad.subnets[0].gateway = Some(ip("10.1.0.1"));
    desired.networks.push(bad);
    let s = sync_host(&f, &desired);
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(s.networks.len(), 1);
    assert_eq!(s.removed.links, vec!["knov7".to_string()]);
    assert_eq!(s.removed.routes, 1);
    assert!(f.find_link("knov01").unwrap().is_some());
    assert!(f.find_link("knov1001").unwrap().is_some());

    // One VNI for two networks: nothing is touched at all.
    desired.networks.push(NetworkDesired {
        id: "dup".into(),
        ..blue()
    });
    let before = f.calls().len();
    let s = sync_host(&f, &desired);
    assert!(
        s.errors[0].to_string().contains("VNI 4097 also used"),
        "{:?}",
        s.errors
    );
    assert_eq!(f.calls().len(), before);
}

#[test]
fn the_payload_is_plain_json_with_defaults_and_ignores_unknown_fields() {
    let text = r#"{"networks": [{"id": "blue", "vni": 4097,
        "subnets": [{"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}],
        "underlay_ip": "192.168.50.1",
        "endpoints": [{"ip": "10.244.1.5", "mac": "0a:58:0a:f4:01:05", "host": "192.168.50.2",
                       "name": "added later"}],
        "hosts": [{"underlay_ip": "192.168.50.2"}], "labels": {"x": 1}}]}"#;
    let h: HostDesired = serde_json::from_str(text).unwrap();
    assert_eq!(h.format, FORMAT);
    let n = &h.networks[0];
    assert_eq!(n.mode, Mode::Vxlan);
    assert_eq!(n.endpoints[0].mac, Mac(MAC1));
    assert!(n.hosts[0].blocks.is_empty());
    h.validate().unwrap();
    let back: HostDesired = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    assert_eq!(back, h);
    let json = serde_json::to_value(routed()).unwrap();
    assert_eq!(json["mode"], "routed");
    assert_eq!(json["endpoints"], serde_json::json!([]));
    let e = serde_json::to_value(ep("10.244.1.5", MAC1, B)).unwrap();
    assert_eq!(e["mac"], "0a:58:0a:f4:01:05");
    let err = serde_json::from_str::<Mac>(r#""0a:58:0a""#).unwrap_err();
    assert!(err.to_string().contains("not a MAC"), "{err}");
}

#[test]
fn a_delta_is_planned_from_the_previous_state_and_converges_like_a_sync() {
    let (f, _) = host();
    let old = blue();
    let s = sync_network(&f, &old).unwrap();
    let mut new = old.clone();
    new.endpoints[0].host = ip(C); // MAC1 moves
    new.endpoints[1] = ep("10.244.2.7", MAC3, B); // the address changes hands
    new.endpoints
        .push(ep("10.244.3.3", [0x0a, 0x58, 10, 244, 3, 3], C));
    let seen = observe(&f, &old, &s.links).unwrap();
    assert_eq!(
        plan_delta(&old, &new, &s.links),
        plan_network(&new, &s.links, &seen)
    );
    let done = apply_delta(&f, &s.links, &old, &new).unwrap();
    assert_eq!(
        done,
        Applied {
            fdb_added: 2,
            fdb_moved: 1,
            fdb_removed: 1,
            port_added: 2,
            port_removed: 1,
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!(sync_network(&f, &new).unwrap().applied, Applied::default());

    // A delta that is not one: refused, nothing changed.
    let before = f.calls().len();
    let other = NetworkDesired {
        mode: Mode::Routed,
        ..new.clone()
    };
    let err = apply_delta(&f, &s.links, &new, &other).unwrap_err();
    assert_eq!(err.kind(), Kind::Invalid);
    assert_eq!(f.calls().len(), before);
}
