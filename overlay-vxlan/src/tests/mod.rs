//! The planner and the link setup against `FakeNetlink` (libnet's in-memory kernel).

mod links;
mod plan;

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

fn routed() -> NetworkDesired {
    NetworkDesired {
        mode: Mode::Routed,
        endpoints: vec![],
        ..blue()
    }
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
