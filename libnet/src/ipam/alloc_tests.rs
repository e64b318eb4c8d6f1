use super::*;
use crate::error::{HasKind, Kind};
use crate::ipam::store::fake::FakeStore;
use ipnet::IpNet;
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(v: serde_json::Value) -> IpamConfig {
    IpamConfig::from_json(&v).unwrap()
}

fn small() -> IpamConfig {
    // Allocatable: .2 .. .6 (.1 gateway, .7 broadcast).
    cfg(json!({"subnet": "10.244.0.0/29"}))
}

fn addrs(a: &[Allocation]) -> Vec<String> {
    a.iter().map(|a| a.address.to_string()).collect()
}

#[test]
fn round_robin_skips_gateway_and_wraps() {
    let c = small();
    let mut s = FakeStore::default();
    let mut got = Vec::new();
    for i in 0..5 {
        let a = allocate(&mut s, &c, &format!("c{i}"), "eth0", &[]).unwrap();
        assert_eq!(a[0].gateway, Some(ip("10.244.0.1")));
        assert_eq!(a[0].range_set, 0);
        got.extend(addrs(&a));
    }
    assert_eq!(
        got,
        [
            "10.244.0.2/29",
            "10.244.0.3/29",
            "10.244.0.4/29",
            "10.244.0.5/29",
            "10.244.0.6/29"
        ]
    );
    assert!(!s.locked);
    assert_eq!(s.lock_count, 5);

    // Exhausted: Busy, with the reference's message.
    let e = allocate(&mut s, &c, "c9", "eth0", &[]).unwrap_err();
    assert_eq!(e.kind(), Kind::Busy);
    assert_eq!(
        e.to_string(),
        "no IP addresses available in range set: 10.244.0.1-10.244.0.6"
    );
    assert!(!s.locked, "lock released on error");

    // Free .3 and .5: the walk continues after the last reserved (.6), wraps, finds .3 first.
    release(&mut s, "c1", "eth0").unwrap();
    release(&mut s, "c3", "eth0").unwrap();
    let a = allocate(&mut s, &c, "n1", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.3/29"]);
    let a = allocate(&mut s, &c, "n2", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.5/29"]);
}

#[test]
fn round_robin_does_not_reuse_a_just_freed_address() {
    let c = small();
    let mut s = FakeStore::default();
    allocate(&mut s, &c, "a", "eth0", &[]).unwrap();
    release(&mut s, "a", "eth0").unwrap();
    let a = allocate(&mut s, &c, "b", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.3/29"]);
}

#[test]
fn duplicate_allocation_is_refused() {
    let c = small();
    let mut s = FakeStore::default();
    allocate(&mut s, &c, "a", "eth0", &[]).unwrap();
    let e = allocate(&mut s, &c, "a", "eth0", &[]).unwrap_err();
    assert_eq!(e.kind(), Kind::Exists);
    assert_eq!(
        e.to_string(),
        "10.244.0.2 has been allocated to a, duplicate allocation is not allowed"
    );
    // Another interface of the same container is another attachment.
    allocate(&mut s, &c, "a", "eth1", &[]).unwrap();
}

#[test]
fn requested_addresses() {
    let c = small();
    let mut s = FakeStore::default();
    let a = allocate(&mut s, &c, "a", "eth0", &[ip("10.244.0.5")]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.5/29"]);
    // Taken: Exists, reference message.
    let e = allocate(&mut s, &c, "b", "eth0", &[ip("10.244.0.5")]).unwrap_err();
    assert_eq!(e.kind(), Kind::Exists);
    assert_eq!(
        e.to_string(),
        "requested IP address 10.244.0.5 is not available in range set 10.244.0.1-10.244.0.6"
    );
    let table = [
        (
            vec![ip("10.244.0.1")],
            "requested ip 10.244.0.1 is subnet's gateway",
        ),
        (
            vec![ip("10.244.0.7")],
            "failed to allocate all requested IPs: 10.244.0.7",
        ),
        (
            vec![ip("10.9.0.1")],
            "failed to allocate all requested IPs: 10.9.0.1",
        ),
        (
            vec![ip("10.244.0.3"), ip("10.244.0.4")],
            "failed to allocate all requested IPs: 10.244.0.4",
        ),
    ];
    for (req, msg) in table {
        let e = allocate(&mut s, &c, "b", "eth0", &req).unwrap_err();
        assert_eq!(e.kind(), Kind::Invalid, "{req:?}");
        assert_eq!(e.to_string(), msg);
    }
    assert_eq!(s.ips.len(), 1, "failed requests reserve nothing");
    // The round robin continues after the requested address.
    let a = allocate(&mut s, &c, "c", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.6/29"]);
}

#[test]
fn ipv4_mapped_requests_are_ipv4() {
    let c = small();
    let mut s = FakeStore::default();
    let a = allocate(&mut s, &c, "a", "eth0", &[ip("::ffff:10.244.0.4")]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.4/29"]);
}

#[test]
fn explicit_network_address_cannot_be_requested() {
    let c = cfg(
        json!({"ranges": [[{"subnet": "10.244.0.0/29", "rangeStart": "10.244.0.0",
                                    "rangeEnd": "10.244.0.7"}]]}),
    );
    let mut s = FakeStore::default();
    for req in ["10.244.0.0", "10.244.0.7"] {
        let e = allocate(&mut s, &c, "a", "eth0", &[ip(req)]).unwrap_err();
        assert_eq!(e.kind(), Kind::Invalid);
    }
}

#[test]
fn dual_stack_one_address_per_set_and_rollback() {
    let c = cfg(json!({"ranges": [
        [{"subnet": "10.244.0.0/30"}],
        [{"subnet": "fd00:6b6e::/64", "rangeStart": "fd00:6b6e::10", "rangeEnd": "fd00:6b6e::11"}]
    ]}));
    let mut s = FakeStore::default();
    let a = allocate(&mut s, &c, "a", "eth0", &[ip("fd00:6b6e::11")]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.2/30", "fd00:6b6e::11/64"]);
    assert_eq!(a[1].range_set, 1);
    assert_eq!(a[1].gateway, Some(ip("fd00:6b6e::1")));
    assert_eq!(s.last[&1], ip("fd00:6b6e::11"));
    // v4 exhausted (only .2 in a /30): nothing of the v6 set stays reserved.
    let e = allocate(&mut s, &c, "b", "eth0", &[]).unwrap_err();
    assert_eq!(e.kind(), Kind::Busy);
    assert_eq!(s.ips.len(), 2);
    release(&mut s, "a", "eth0").unwrap();
    // v6 set fails (the only remaining .10 requested... taken by c) after v4 succeeded: rollback.
    allocate(&mut s, &c, "c", "eth1", &[ip("fd00:6b6e::10")]).unwrap();
    release(&mut s, "c", "eth1").unwrap();
    let mut s2 = FakeStore::default();
    allocate(&mut s2, &c, "x", "eth0", &[ip("fd00:6b6e::10")]).unwrap();
    s2.ips.retain(|ip, _| ip.is_ipv6());
    let e = allocate(&mut s2, &c, "y", "eth0", &[ip("fd00:6b6e::10")]).unwrap_err();
    assert_eq!(e.kind(), Kind::Exists);
    assert!(
        s2.ips.keys().all(|i| i.is_ipv6()),
        "v4 address rolled back: {:?}",
        s2.ips
    );
}

#[test]
fn release_is_idempotent_and_held_by_reports() {
    let c = small();
    let mut s = FakeStore::default();
    allocate(&mut s, &c, "a", "eth0", &[]).unwrap();
    assert_eq!(held_by(&mut s, "a", "eth0").unwrap(), [ip("10.244.0.2")]);
    release(&mut s, "a", "eth0").unwrap();
    release(&mut s, "a", "eth0").unwrap();
    release(&mut s, "never", "eth0").unwrap();
    assert!(held_by(&mut s, "a", "eth0").unwrap().is_empty());
}

#[test]
fn gc_releases_what_is_not_valid() {
    let c = small();
    let mut s = FakeStore::default();
    for (id, ifn) in [("a", "eth0"), ("a", "eth1"), ("b", "eth0"), ("c", "eth0")] {
        allocate(&mut s, &c, id, ifn, &[]).unwrap();
    }
    let valid = vec![
        ("a".to_string(), "eth0".to_string()),
        ("c".into(), "eth0".into()),
    ];
    let gone = gc(&mut s, &valid).unwrap();
    assert_eq!(gone, [ip("10.244.0.3"), ip("10.244.0.4")]);
    assert_eq!(s.ips.len(), 2);
    assert!(gc(&mut s, &valid).unwrap().is_empty());
    assert!(!s.locked);
}

#[test]
fn gc_spares_the_owners_it_is_told_to() {
    let c = small();
    let mut s = FakeStore::default();
    for (id, ifn) in [("a", "eth0"), ("docker-1", "eth0"), ("b", "eth0")] {
        allocate(&mut s, &c, id, ifn, &[]).unwrap();
    }
    let valid = vec![("a".to_string(), "eth0".to_string())];
    let gone = gc_sparing(&mut s, &valid, &|o| o.starts_with("docker-")).unwrap();
    assert_eq!(gone, [ip("10.244.0.4")]);
    assert_eq!(
        held_by(&mut s, "docker-1", "eth0").unwrap(),
        [ip("10.244.0.3")]
    );
    assert!(!s.locked);
}

#[test]
fn n_allocations_fill_a_range_of_n_then_fail() {
    // 10.244.0.0/26 from .10 to .40 with gateway .20: 30 allocatable addresses.
    let c = cfg(
        json!({"ranges": [[{"subnet": "10.244.0.0/26", "rangeStart": "10.244.0.10",
                                    "rangeEnd": "10.244.0.40", "gateway": "10.244.0.20"}]]}),
    );
    let mut s = FakeStore::default();
    let mut seen = std::collections::HashSet::new();
    for i in 0..30 {
        let a = allocate(&mut s, &c, &format!("c{i}"), "eth0", &[]).unwrap();
        let addr = a[0].address.addr();
        assert!(c.ranges[0].0[0].is_allocatable(addr));
        assert!(seen.insert(addr));
    }
    assert_eq!(
        allocate(&mut s, &c, "z", "eth0", &[]).unwrap_err().kind(),
        Kind::Busy
    );
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn a_block_fills_with_the_networks_prefix_then_reports_itself_exhausted() {
    let c = cfg(json!({"ranges": [[{"subnet": "10.244.0.0/16"}]]}));
    let block = [net("10.244.3.64/26")];
    let mut s = FakeStore::default();
    let mut got = std::collections::BTreeSet::new();
    for i in 0..64 {
        let a = allocate_in_blocks(&mut s, &c, &block, &format!("c{i}"), "eth0", &[]).unwrap();
        assert_eq!(a[0].address.prefix_len(), 16, "the network's prefix");
        assert_eq!(
            a[0].gateway,
            Some(ip("10.244.0.1")),
            "the network's gateway"
        );
        assert!(block[0].contains(&a[0].address.addr()));
        assert!(got.insert(a[0].address.addr()));
    }
    // The block's own first and last addresses are ordinary hosts of the /16.
    assert!(got.contains(&ip("10.244.3.64")) && got.contains(&ip("10.244.3.127")));
    assert_eq!(
        s.attempts, 64,
        "one reservation attempt each: the walk stays in the block"
    );
    let e = allocate_in_blocks(&mut s, &c, &block, "full", "eth0", &[]).unwrap_err();
    assert!(
        matches!(e, IpamError::BlockExhausted { index: 0, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), Kind::Busy);
    assert_eq!(
        e.to_string(),
        "no IP addresses available in block 10.244.3.64/26 of range set 10.244.0.1-10.244.255.254"
    );
    assert!(!s.locked);
    // The set itself is far from full: the next block, or no block, still allocates.
    let a = allocate_in_blocks(&mut s, &c, &[net("10.244.3.128/26")], "full", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.3.128/16"]);
    let a = allocate(&mut s, &c, "anywhere", "eth0", &[]).unwrap();
    assert!(!block[0].contains(&a[0].address.addr()));
}

#[test]
fn the_first_and_last_blocks_skip_the_networks_reserved_addresses() {
    let c = cfg(json!({"subnet": "10.244.0.0/24"}));
    let mut s = FakeStore::default();
    let first = [net("10.244.0.0/30")];
    let a = allocate_in_blocks(&mut s, &c, &first, "a", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.2/24"]);
    allocate_in_blocks(&mut s, &c, &first, "b", "eth0", &[]).unwrap();
    let e = allocate_in_blocks(&mut s, &c, &first, "c", "eth0", &[]).unwrap_err();
    assert!(matches!(e, IpamError::BlockExhausted { .. }), "{e}");
    // .255 is the network's broadcast: .252 (the block's own network address) to .254.
    let last = [net("10.244.0.252/30")];
    let mut got = Vec::new();
    for id in ["d", "e", "e2"] {
        got.extend(addrs(
            &allocate_in_blocks(&mut s, &c, &last, id, "eth0", &[]).unwrap(),
        ));
    }
    assert_eq!(
        got,
        ["10.244.0.252/24", "10.244.0.253/24", "10.244.0.254/24"]
    );
    let e = allocate_in_blocks(&mut s, &c, &last, "f", "eth0", &[]).unwrap_err();
    assert!(matches!(e, IpamError::BlockExhausted { .. }), "{e}");
    // Requests: inside the block fine, the gateway refused, outside the block unassigned.
    let mid = [net("10.244.0.0/25")];
    let a = allocate_in_blocks(&mut s, &c, &mid, "g", "eth0", &[ip("10.244.0.100")]).unwrap();
    assert_eq!(addrs(&a), ["10.244.0.100/24"]);
    let e = allocate_in_blocks(&mut s, &c, &mid, "h", "eth0", &[ip("10.244.0.1")]).unwrap_err();
    assert!(matches!(e, IpamError::RequestedGateway { .. }), "{e}");
    let e = allocate_in_blocks(&mut s, &c, &mid, "h", "eth0", &[ip("10.244.0.200")]).unwrap_err();
    assert!(matches!(e, IpamError::RequestedUnassigned { .. }), "{e}");
}

#[test]
fn blocks_restrict_only_their_own_set_and_must_fit_one() {
    let c = cfg(json!({"ranges": [
        [{"subnet": "10.244.0.0/16"}],
        [{"subnet": "fd00:6b6e::/64"}]
    ]}));
    let mut s = FakeStore::default();
    let a = allocate_in_blocks(&mut s, &c, &[net("10.244.7.0/24")], "a", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.7.0/16", "fd00:6b6e::2/64"]);
    let both = [net("10.244.7.0/24"), net("fd00:6b6e::1:0/112")];
    let a = allocate_in_blocks(&mut s, &c, &both, "b", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.244.7.1/16", "fd00:6b6e::1:0/64"]);
    // Holding an address anywhere in the set is a duplicate, whatever the block.
    let e = allocate_in_blocks(&mut s, &c, &[net("10.244.9.0/24")], "a", "eth0", &[]).unwrap_err();
    assert!(matches!(e, IpamError::Duplicate { .. }), "{e}");
    let before = s.lock_count;
    for bad in [
        vec![net("10.9.0.0/24")],
        vec![net("10.244.1.0/24"), net("10.244.2.0/24")],
    ] {
        let e = allocate_in_blocks(&mut s, &c, &bad, "z", "eth0", &[]).unwrap_err();
        assert!(matches!(e, IpamError::Block { .. }), "{e}");
        assert_eq!(e.kind(), Kind::Invalid);
    }
    assert_eq!(
        s.lock_count, before,
        "a bad block is refused before locking"
    );
}

#[test]
fn attachment_must_fit_the_reservation_format() {
    let c = small();
    let mut s = FakeStore::default();
    for (id, ifn) in [
        ("", "eth0"),
        ("  ", "eth0"),
        ("a", ""),
        ("a\r\nb", "eth0"),
        ("a", "et h0"),
        ("a", "a/b"),
    ] {
        let e = allocate(&mut s, &c, id, ifn, &[]).unwrap_err();
        assert_eq!(e.kind(), Kind::Invalid, "{id:?} {ifn:?}");
    }
    assert!(s.ips.is_empty() && s.lock_count == 0);
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u8),
        AddRequested(u8, u8, u8),
        Del(u8, u8),
        Gc(Vec<(u8, u8)>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..10, 0u8..2).prop_map(|(i, n)| Op::Add(i, n)),
            1 => (0u8..10, 0u8..2, 0u8..16).prop_map(|(i, n, o)| Op::AddRequested(i, n, o)),
            3 => (0u8..10, 0u8..2).prop_map(|(i, n)| Op::Del(i, n)),
            1 => proptest::collection::vec((0u8..10, 0u8..2), 0..6).prop_map(Op::Gc),
        ]
    }

    fn owner(i: u8, n: u8) -> (String, String) {
        (format!("c{i}"), format!("eth{n}"))
    }

    proptest! {
        /// Random ADD/DEL/GC sequences against a model: every address is allocatable in its set,
        /// held by exactly one attachment, one per set; failures change nothing.
        #[test]
        fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let c = cfg(json!({"ranges": [
                [{"subnet": "10.244.0.0/28", "rangeStart": "10.244.0.2", "gateway": "10.244.0.5"}],
                [{"subnet": "fd00:6b6e::/120", "rangeStart": "fd00:6b6e::10", "rangeEnd": "fd00:6b6e::14"}]
            ]}));
            let mut s = FakeStore::default();
            let mut model: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
            for op in ops {
                let before = s.ips.clone();
                match op {
                    Op::Add(i, n) | Op::AddRequested(i, n, _) => {
                        let (id, ifn) = owner(i, n);
                        let req: Vec<IpAddr> = match op {
                            Op::AddRequested(_, _, o) => vec![from_u128_v4(o)],
                            _ => vec![],
                        };
                        match allocate(&mut s, &c, &id, &ifn, &req) {
                            Ok(a) => {
                                prop_assert!(!model.contains_key(&(id.clone(), ifn.clone())));
                                prop_assert_eq!(a.len(), 2);
                                for (k, al) in a.iter().enumerate() {
                                    prop_assert_eq!(al.range_set, k);
                                    prop_assert!(c.ranges[k].0[0].is_allocatable(al.address.addr()));
                                    prop_assert!(!before.contains_key(&al.address.addr()));
                                }
                                if let Some(r) = req.first() {
                                    prop_assert_eq!(a[0].address.addr(), *r);
                                }
                                model.insert((id, ifn), a.iter().map(|a| a.address.addr()).collect());
                            }
                            Err(_) => prop_assert_eq!(&s.ips, &before),
                        }
                    }
                    Op::Del(i, n) => {
                        let (id, ifn) = owner(i, n);
                        release(&mut s, &id, &ifn).unwrap();
                        model.remove(&(id, ifn));
                    }
                    Op::Gc(valid) => {
                        let valid: Vec<(String, String)> = valid.iter().map(|(i, n)| owner(*i, *n)).collect();
                        gc(&mut s, &valid).unwrap();
                        model.retain(|k, _| valid.contains(k));
                    }
                }
                prop_assert!(!s.locked);
                let mut want: Vec<IpAddr> = model.values().flatten().copied().collect();
                want.sort();
                let got: Vec<IpAddr> = s.ips.keys().copied().collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        /// Any block of a /22: allocation fills exactly the network-allocatable addresses of
        /// the block, each once, then reports the block exhausted.
        #[test]
        fn a_block_yields_its_allocatable_addresses_once(plen in 22u8..=30, off in 0u32..1024) {
            let c = cfg(json!({"subnet": "10.244.0.0/22"}));
            let base = u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0));
            let block = IpNet::new(IpAddr::from(std::net::Ipv4Addr::from(base + off)), plen)
                .unwrap()
                .trunc();
            let want: Vec<IpAddr> = block
                .hosts()
                .chain([block.network(), block.broadcast()])
                .filter(|a| c.ranges[0].0[0].is_allocatable(*a))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut s = FakeStore::default();
            let mut got = Vec::new();
            loop {
                match allocate_in_blocks(&mut s, &c, &[block], &format!("c{}", got.len()), "eth0", &[]) {
                    Ok(a) => got.push(a[0].address.addr()),
                    Err(e) => {
                        prop_assert!(matches!(e, IpamError::BlockExhausted { .. }), "{}", e);
                        break;
                    }
                }
                prop_assert!(got.len() <= want.len());
            }
            got.sort();
            prop_assert_eq!(got, want);
        }
    }

    fn from_u128_v4(o: u8) -> IpAddr {
        IpAddr::from([10, 244, 0, o])
    }
}
