use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::proto::apply_changes;

fn network(i: u8, overlay: bool, routed: bool, gw: bool) -> Network {
    let mut n = Network::new(
        format!("net{i}"),
        if overlay {
            Driver::Overlay
        } else {
            Driver::Bridge
        },
    );
    n.id = format!("n{i}");
    let mut p = store::Pool::new(format!("10.{i}.0.0/16").parse().unwrap());
    if gw {
        p.gateway = Some(format!("10.{i}.0.1").parse().unwrap());
    }
    n.ipam.push(p);
    if !routed {
        n.ipam
            .push(store::Pool::new(format!("fd00:{i}::/64").parse().unwrap()));
    }
    if routed {
        n.options.insert(MODE_OPTION.into(), "routed".into());
    }
    n
}

fn host(i: u8, alt: bool) -> Host {
    Host {
        name: format!("h{i}"),
        underlay_ip: format!("192.168.{i}.{}", if alt { 2 } else { 1 })
            .parse()
            .unwrap(),
        vtep_mac: "02:00:00:00:00:01".into(),
    }
}

fn endpoint(net: u8, j: u8, host: u8, mac: bool, v6: bool) -> Endpoint {
    let mut e = Endpoint::new(format!("n{net}"));
    e.id = format!("e{j}");
    e.host = format!("h{host}");
    // A MAC that does not parse: such an endpoint is not shown to other hosts.
    e.mac = if mac {
        format!("0a:58:00:00:{net:02x}:{j:02x}")
    } else {
        "bad".into()
    };
    e.ipv4 = Some(format!("10.{net}.1.{}/16", j + 2).parse().unwrap());
    if v6 {
        e.ipv6 = Some(format!("fd00:{net}::{}/64", j + 2).parse().unwrap());
    }
    e
}

fn block(net: u8, j: u8, host: u8) -> Block {
    Block {
        network_id: format!("n{net}"),
        cidr: format!("10.{net}.{}.0/24", j + 10).parse().unwrap(),
        host: format!("h{host}"),
    }
}

/// A record put or deleted; `bool` = whether the model hears of it (else only a resync does).
fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        (
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(i, del, overlay, routed, gw)| Update::Network(
                format!("n{i}"),
                (!del).then(|| network(i, overlay || routed, routed, gw))
            )),
        // The store gives a VNI to one network only.
        (0u8..3, any::<bool>()).prop_map(|(i, del)| Update::Vni(
            format!("n{i}"),
            (!del).then_some(4096 + u32::from(i))
        )),
        (0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(i, del, alt)| Update::Host(format!("h{i}"), (!del).then(|| host(i, alt)))),
        (0u8..3, 0u8..3, 0u8..4, any::<bool>()).prop_map(|(n, j, h, del)| Update::Block(
            format!("n{n}/b{j}"),
            (!del).then(|| block(n, j, h))
        )),
        (
            0u8..3,
            0u8..5,
            0u8..4,
            any::<u8>().prop_map(|m| m > 40),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(n, j, h, mac, v6, del)| Update::Endpoint(
                format!("n{n}/e{j}"),
                (!del).then(|| endpoint(n, j, h, mac, v6))
            )),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// The model hears of it.
    Event(Update),
    /// etcd changes but the model misses it (its watch fell behind a compaction)...
    Missed(Update),
    /// ...until a resync of that kind.
    Resync(RecordKind),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => update().prop_map(Op::Event),
        2 => update().prop_map(Op::Missed),
        1 => prop_oneof![
            Just(RecordKind::Networks),
            Just(RecordKind::Vnis),
            Just(RecordKind::Hosts),
            Just(RecordKind::Blocks),
            Just(RecordKind::Endpoints),
        ]
        .prop_map(Op::Resync),
    ]
}

fn kind_of(u: &Update) -> (RecordKind, &str) {
    match u {
        Update::Network(k, _) => (RecordKind::Networks, k),
        Update::Vni(k, _) => (RecordKind::Vnis, k),
        Update::Host(k, _) => (RecordKind::Hosts, k),
        Update::Block(k, _) => (RecordKind::Blocks, k),
        Update::Endpoint(k, _) => (RecordKind::Endpoints, k),
    }
}

fn is_put(u: &Update) -> bool {
    match u {
        Update::Network(_, v) => v.is_some(),
        Update::Vni(_, v) => v.is_some(),
        Update::Host(_, v) => v.is_some(),
        Update::Block(_, v) => v.is_some(),
        Update::Endpoint(_, v) => v.is_some(),
    }
}

/// What etcd holds: the last put of every key still present.
#[derive(Default)]
struct Etcd(BTreeMap<(u8, String), Update>);

impl Etcd {
    fn record(&mut self, u: &Update) {
        let (kind, key) = kind_of(u);
        let k = (kind as u8, key.to_string());
        if is_put(u) {
            self.0.insert(k, u.clone());
        } else {
            self.0.remove(&k);
        }
    }
    fn of(&self, kind: RecordKind) -> Vec<Update> {
        self.0
            .iter()
            .filter(|((k, _), _)| *k == kind as u8)
            .map(|(_, u)| u.clone())
            .collect()
    }
}

fn sorted(mut s: HostDesired) -> HostDesired {
    s.networks.sort_by(|a, b| a.id.cmp(&b.id));
    for n in &mut s.networks {
        n.endpoints.sort_by_key(|e| e.ip);
        n.hosts.sort_by_key(|h| h.underlay_ip);
    }
    s
}

const HOSTS: [&str; 4] = ["h0", "h1", "h2", "h3"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Every host's previous state with the changes the model gave it applied equals the full
    /// recomputation, after every step of a random history (missed events and resyncs too);
    /// after a resync of every kind the model equals one loaded from etcd afresh.
    #[test]
    fn incremental_changes_equal_the_full_recompute(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = Model::new();
        let mut etcd = Etcd::default();
        let mut held: BTreeMap<&str, HostDesired> =
            HOSTS.iter().map(|h| (*h, m.desired(h))).collect();
        for op in ops {
            let out = match op {
                Op::Event(u) => {
                    etcd.record(&u);
                    m.apply(u)
                }
                Op::Missed(u) => {
                    etcd.record(&u);
                    Output::new()
                }
                Op::Resync(kind) => m.resync(kind, etcd.of(kind)),
            };
            for h in HOSTS {
                let s = held.get_mut(h).unwrap();
                if let Some(changes) = out.get(h) {
                    apply_changes(s, changes);
                }
                prop_assert_eq!(sorted(s.clone()), m.desired(h), "host {}", h);
                prop_assert!(m.desired(h).validate().is_ok(), "{:?}", m.desired(h).validate());
            }
        }
        for kind in [RecordKind::Networks, RecordKind::Vnis, RecordKind::Hosts,
                     RecordKind::Blocks, RecordKind::Endpoints] {
            let out = m.resync(kind, etcd.of(kind));
            for h in HOSTS {
                if let Some(changes) = out.get(h) {
                    apply_changes(held.get_mut(h).unwrap(), changes);
                }
            }
        }
        let mut fresh = Model::new();
        for u in etcd.0.values() {
            fresh.load(u.clone());
        }
        for h in HOSTS {
            prop_assert_eq!(m.desired(h), fresh.desired(h));
            prop_assert_eq!(sorted(held[h].clone()), fresh.desired(h));
        }
    }
}

fn loaded(updates: Vec<Update>) -> Model {
    let mut m = Model::new();
    for u in updates {
        m.load(u);
    }
    m
}

#[test]
fn a_host_sees_the_other_hosts_endpoints_blocks_and_its_own_underlay() {
    let m = loaded(vec![
        Update::Network("n1".into(), Some(network(1, true, false, true))),
        Update::Network("n2".into(), Some(network(2, false, false, true))),
        Update::Vni("n1".into(), Some(4096)),
        Update::Vni("n2".into(), Some(4097)),
        Update::Host("h0".into(), Some(host(0, false))),
        Update::Host("h1".into(), Some(host(1, false))),
        Update::Block("n1/b0".into(), Some(block(1, 0, 1))),
        Update::Endpoint("n1/e0".into(), Some(endpoint(1, 0, 0, true, false))),
        Update::Endpoint("n1/e1".into(), Some(endpoint(1, 1, 1, true, true))),
        // On a host that is not registered: nobody sees it.
        Update::Endpoint("n1/e2".into(), Some(endpoint(1, 2, 3, true, false))),
    ]);
    let d = m.desired("h0");
    assert_eq!(d.networks.len(), 1, "the bridge network is not an overlay");
    let n = &d.networks[0];
    assert_eq!((n.id.as_str(), n.vni, n.mode), ("n1", 4096, Mode::Vxlan));
    assert_eq!(n.underlay_ip, "192.168.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(
        n.subnets,
        [
            Subnet {
                cidr: "10.1.0.0/16".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap())
            },
            Subnet {
                cidr: "fd00:1::/64".parse().unwrap(),
                gateway: None
            }
        ]
    );
    let ips: Vec<String> = n.endpoints.iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(
        ips,
        ["10.1.1.3", "fd00:1::3"],
        "h1's endpoint, both addresses"
    );
    assert!(n
        .endpoints
        .iter()
        .all(|e| e.host == "192.168.1.1".parse::<IpAddr>().unwrap()
            && e.mac.to_string() == "0a:58:00:00:01:01"));
    assert_eq!(
        n.hosts,
        [RemoteHost {
            underlay_ip: "192.168.1.1".parse().unwrap(),
            blocks: vec!["10.1.10.0/24".parse().unwrap()]
        }]
    );
    assert!(m.desired("h3").networks.is_empty(), "not registered");
}

#[test]
fn an_endpoint_put_concerns_every_other_member_and_only_its_addresses() {
    let mut m = loaded(vec![
        Update::Network("n1".into(), Some(network(1, true, true, false))),
        Update::Vni("n1".into(), Some(4096)),
        Update::Host("h0".into(), Some(host(0, false))),
        Update::Host("h1".into(), Some(host(1, false))),
        Update::Host("h2".into(), Some(host(2, false))),
        // Members: each holds a block.
        Update::Block("n1/b0".into(), Some(block(1, 0, 0))),
        Update::Block("n1/b1".into(), Some(block(1, 1, 1))),
        Update::Block("n1/b2".into(), Some(block(1, 2, 2))),
    ]);
    let out = m.apply(Update::Endpoint(
        "n1/e0".into(),
        Some(endpoint(1, 0, 0, true, false)),
    ));
    assert_eq!(out.keys().collect::<Vec<_>>(), ["h1", "h2"]);
    assert_eq!(
        out["h1"][..],
        [Change::EndpointPut {
            network: "n1".into(),
            endpoint: RemoteEndpoint {
                ip: "10.1.1.2".parse().unwrap(),
                mac: Mac([0x0a, 0x58, 0, 0, 1, 0]),
                host: "192.168.0.1".parse().unwrap()
            }
        }]
    );
    // The endpoint moves to h1: h1 drops it, h0 gains it, h2 sees the new host.
    let out = m.apply(Update::Endpoint(
        "n1/e0".into(),
        Some(endpoint(1, 0, 1, true, false)),
    ));
    assert!(matches!(&out["h1"][..], [Change::EndpointDel { .. }]));
    assert!(matches!(&out["h0"][..], [Change::EndpointPut { .. }]));
    assert!(
        matches!(&out["h2"][..], [Change::EndpointPut { endpoint, .. }]
        if endpoint.host == "192.168.1.1".parse::<IpAddr>().unwrap())
    );
    // The same record again changes nothing.
    assert!(m
        .apply(Update::Endpoint(
            "n1/e0".into(),
            Some(endpoint(1, 0, 1, true, false))
        ))
        .is_empty());
    assert_eq!(m.desired("h0").networks[0].mode, Mode::Routed);
}

#[test]
fn a_host_that_registers_or_goes_is_listed_even_without_networks() {
    let mut m = Model::new();
    let out = m.apply(Update::Host("h0".into(), Some(host(0, false))));
    assert_eq!(out.get("h0").map(|c| c.len()), Some(0));
    assert!(m
        .apply(Update::Host("h0".into(), Some(host(0, false))))
        .is_empty());
    let out = m.apply(Update::Host("h0".into(), None));
    assert_eq!(out.get("h0").map(|c| c.len()), Some(0));
    assert!(!m.is_registered("h0"));
}

#[test]
fn only_members_hold_a_network_and_joining_or_leaving_moves_it_whole() {
    let mut m = loaded(vec![
        Update::Network("n1".into(), Some(network(1, true, true, false))),
        Update::Vni("n1".into(), Some(4096)),
        Update::Host("h0".into(), Some(host(0, false))),
        Update::Host("h1".into(), Some(host(1, false))),
        Update::Host("h2".into(), Some(host(2, false))),
        Update::Block("n1/b0".into(), Some(block(1, 0, 0))),
        Update::Endpoint("n1/e0".into(), Some(endpoint(1, 0, 0, true, false))),
    ]);
    assert!(m.desired("h1").networks.is_empty(), "no block, no endpoint");
    assert!(m.desired("h0").networks[0].hosts.is_empty(), "alone in n1");
    // h1 claims a block: it gets the whole network, h0 gets h1; h2 (not a member) nothing.
    let out = m.apply(Update::Block("n1/b1".into(), Some(block(1, 1, 1))));
    assert_eq!(out.keys().collect::<Vec<_>>(), ["h0", "h1"]);
    assert!(
        matches!(&out["h1"][..], [Change::NetworkPut { network }] if network.endpoints.len() == 1)
    );
    assert!(matches!(&out["h0"][..], [Change::HostPut { .. }]));
    // An endpoint of h0's concerns h1 only.
    let out = m.apply(Update::Endpoint(
        "n1/e1".into(),
        Some(endpoint(1, 1, 0, true, false)),
    ));
    assert_eq!(out.keys().collect::<Vec<_>>(), ["h1"]);
    // h1's last block goes: the network leaves h1, h0 loses h1.
    let out = m.apply(Update::Block("n1/b1".into(), None));
    assert_eq!(out["h1"][..], [Change::NetworkDel { id: "n1".into() }]);
    assert!(matches!(&out["h0"][..], [Change::HostDel { .. }]));
    assert!(!out.contains_key("h2"));
}
