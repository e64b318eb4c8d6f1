//! Kernel tests of policy routing rules and routes in numbered tables, each in a fresh
//! namespace. Run as root with `cargo test -p libnet --features root-tests --test kernel_rule`.
#![cfg(feature = "root-tests")]

mod common;

use common::TestNs;
use ipnet::IpNet;
use libnet::netlink::{Handle, Route, Rule};
use libnet::{HasKind, Kind};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ours(h: &Handle, v6: bool) -> Vec<Rule> {
    h.rules(v6)
        .unwrap()
        .into_iter()
        .filter(|r| r.src.is_some())
        .collect()
}

#[test]
fn rules_add_list_del_both_families_and_big_tables() {
    let ns = TestNs::new("r");
    let h = Handle::new_in(&ns.ns).unwrap();

    // The defaults: local, main, default (IPv6 has no `default` rule).
    let v4 = h.rules(false).unwrap();
    let prios: Vec<_> = v4.iter().map(|r| (r.priority, r.table)).collect();
    assert_eq!(
        prios,
        vec![(Some(0), 255), (Some(32766), 254), (Some(32767), 253)]
    );
    assert!(v4.iter().all(|r| r.src.is_none() && !r.v6));

    // No pref: the kernel picks one below `main`.
    let r4 = Rule::lookup_from("10.244.30.2".parse().unwrap(), 100);
    h.add_rule(&r4).unwrap();
    let got = ours(&h, false);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].priority, Some(32765));
    assert_eq!(got[0].src, Some(net("10.244.30.2/32")));
    assert_eq!(got[0].table, 100);
    // The same rule at the same pref is refused; without a pref it is a new rule below.
    assert_eq!(h.add_rule(&got[0]).unwrap_err().kind(), Kind::Exists);
    h.add_rule(&r4).unwrap();
    let twice = ours(&h, false);
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0].priority, Some(32764));
    h.del_rule(&twice[0]).unwrap();

    // IPv6, a table above 255 and an explicit priority.
    let r6 = Rule {
        priority: Some(200),
        ..Rule::lookup_from("fd00:6b6e:30::2".parse().unwrap(), 1000)
    };
    h.add_rule(&r6).unwrap();
    let got6 = ours(&h, true);
    assert_eq!(got6, vec![r6.clone()]);
    assert!(ours(&h, false).iter().all(|r| !r.v6));

    // A route in table 1000 and one in table 100, found again by table.
    let lo = h.link_by_name("lo").unwrap();
    let mut big = Route::new(net("10.244.31.0/24"), None, Some(lo.index));
    big.table = 1000;
    h.add_route(&big).unwrap();
    let mut small = Route::new(net("10.244.32.0/24"), None, Some(lo.index));
    small.table = 100;
    h.add_route(&small).unwrap();
    let routes = h.routes(false).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.table == 1000 && r.dst == big.dst && r.oif == Some(lo.index)),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.table == 100 && r.dst == small.dst));
    h.del_route(&big).unwrap();
    h.del_route(&big).unwrap();
    assert!(!h.routes(false).unwrap().iter().any(|r| r.table == 1000));

    // Delete as read back (with the kernel's priority), and again: both succeed.
    h.del_rule(&got[0]).unwrap();
    h.del_rule(&got[0]).unwrap();
    h.del_rule(&r6).unwrap();
    h.del_rule(&r6).unwrap();
    assert!(ours(&h, false).is_empty());
    assert!(ours(&h, true).is_empty());
    assert_eq!(h.rules(false).unwrap().len(), 3, "defaults untouched");
}
