use libnet::netlink::route::{RouteScope, RTPROT_BOOT, RTPROT_KERNEL};
use serde_json::json;

use super::*;
use crate::plugins::shared::tests::call;
use crate::types::Interface;

const ETH0: u32 = 2;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(addr: &str, gw: Option<&str>, interface: Option<usize>) -> IpConfig {
    IpConfig {
        interface,
        address: net(addr),
        gateway: gw.map(ip),
    }
}

/// The rules of a fresh namespace (both families).
fn default_rules() -> Vec<Rule> {
    let r = |v6, prio, table| Rule {
        v6,
        priority: Some(prio),
        table,
        ..Rule::default()
    };
    vec![
        r(false, 0, 255),
        r(false, 32766, 254),
        r(false, 32767, 253),
        r(true, 0, 255),
        r(true, 32766, 254),
    ]
}

fn main_route(
    dst: &str,
    gw: Option<&str>,
    src: Option<&str>,
    proto: u8,
    metric: Option<u32>,
) -> Route {
    Route {
        src: src.map(ip),
        protocol: proto,
        metric,
        ..Route::new(net(dst), gw.map(ip), Some(ETH0))
    }
}

/// What a dual-stack bridge ADD (isGateway, default routes) leaves in the container.
fn dual_stack_ns() -> Observed {
    Observed {
        rules: default_rules(),
        routes: vec![
            main_route("0.0.0.0/0", Some("10.244.15.1"), None, RTPROT_BOOT, None),
            main_route(
                "10.244.15.0/24",
                None,
                Some("10.244.15.2"),
                RTPROT_KERNEL,
                None,
            ),
            main_route("fd00:6b6e:15::/64", None, None, RTPROT_KERNEL, Some(256)),
            main_route("fe80::/64", None, None, RTPROT_KERNEL, Some(256)),
            main_route(
                "::/0",
                Some("fd00:6b6e:15::1"),
                None,
                RTPROT_BOOT,
                Some(1024),
            ),
            // Someone else's route on another link stays where it is.
            Route::new(net("10.244.99.0/24"), None, Some(7)),
        ],
        link: ETH0,
    }
}

fn in_table(r: &Route, t: u32) -> Step {
    Step::ReplaceRoute(Route {
        table: t,
        ..r.clone()
    })
}

#[test]
fn addresses_of_the_interface_only() {
    let prev = CniResult {
        interfaces: vec![
            Interface {
                name: "br0".into(),
                ..Default::default()
            },
            Interface {
                name: "eth0".into(),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            },
        ],
        ips: vec![
            cfg("10.244.15.2/24", None, Some(1)),
            cfg("10.244.16.2/24", None, Some(0)),
            cfg("10.244.17.2/24", None, None),
            cfg("10.244.18.2/24", None, Some(9)),
        ],
        ..Default::default()
    };
    let got: Vec<_> = ips_of(&prev, "eth0")
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    assert_eq!(got, ["10.244.15.2/24", "10.244.17.2/24", "10.244.18.2/24"]);
}

#[test]
fn first_free_table_skips_tables_with_rules_or_routes() {
    let mut o = dual_stack_ns();
    assert_eq!(o.first_free_table(FIRST_TABLE), 100);
    o.rules.push(Rule::lookup_from(ip("10.244.1.1"), 100));
    let mut r = Route::new(net("10.244.2.0/24"), None, Some(9));
    r.table = 101;
    o.routes.push(r);
    assert_eq!(o.first_free_table(FIRST_TABLE), 102);
    assert_eq!(o.first_free_table(103), 103);
}

#[test]
fn dual_stack_plan_is_the_references() {
    let obs = dual_stack_ns();
    let v4 = cfg("10.244.15.2/24", Some("10.244.15.1"), Some(2));
    let v6 = cfg("fd00:6b6e:15::2/64", Some("fd00:6b6e:15::1"), Some(2));
    let steps = plan_add(&[&v4, &v6], None, &obs);
    let r = &obs.routes;
    let mut def4 = Route::new(net("0.0.0.0/0"), Some(ip("10.244.15.1")), Some(ETH0));
    def4.table = 100;
    let mut def6 = Route::new(net("::/0"), Some(ip("fd00:6b6e:15::1")), Some(ETH0));
    def6.table = 101;
    let want = vec![
        Step::AddRule(Rule::lookup_from(ip("10.244.15.2"), 100)),
        Step::AddRoute(def4),
        // default via the gateway, subnet (source inside), and the two IPv6 routes with
        // neither source nor gateway.
        in_table(&r[0], 100),
        in_table(&r[1], 100),
        in_table(&r[2], 100),
        in_table(&r[3], 100),
        Step::AddRule(Rule::lookup_from(ip("fd00:6b6e:15::2"), 101)),
        Step::AddRoute(def6),
        in_table(&r[2], 101),
        in_table(&r[3], 101),
        in_table(&r[4], 101),
        Step::DelRoute(r[0].clone()),
        Step::DelRoute(r[1].clone()),
        Step::DelRoute(r[2].clone()),
        Step::DelRoute(r[3].clone()),
        Step::DelRoute(r[4].clone()),
    ];
    assert_eq!(steps, want);
    let Step::AddRule(rule) = &steps[0] else {
        unreachable!()
    };
    assert_eq!(rule.src, Some(net("10.244.15.2/32")));
    assert_eq!(
        rule.priority, None,
        "the kernel picks the pref, as for the reference"
    );
    let Step::ReplaceRoute(subnet) = &steps[3] else {
        unreachable!()
    };
    assert_eq!(
        (subnet.scope, subnet.protocol, subnet.src),
        (RouteScope::Link, RTPROT_KERNEL, Some(ip("10.244.15.2")))
    );
}

#[test]
fn each_address_gets_its_own_free_table() {
    let mut obs = dual_stack_ns();
    obs.rules.push(Rule::lookup_from(ip("10.244.1.1"), 101));
    let a = cfg("10.244.15.2/24", None, None);
    let b = cfg("10.244.15.3/24", None, None);
    let tables: Vec<u32> = plan_add(&[&a, &b], None, &obs)
        .iter()
        .filter_map(|s| match s {
            Step::AddRule(r) => Some(r.table),
            _ => None,
        })
        .collect();
    assert_eq!(tables, [100, 102]);
}

#[test]
fn configured_table_only_adds_rules() {
    let obs = dual_stack_ns();
    let v4 = cfg("10.244.15.2/24", Some("10.244.15.1"), None);
    let v6 = cfg("fd00:6b6e:15::2/64", None, None);
    assert_eq!(
        plan_add(&[&v4, &v6], Some(1000), &obs),
        vec![
            Step::AddRule(Rule::lookup_from(ip("10.244.15.2"), 1000)),
            Step::AddRule(Rule::lookup_from(ip("fd00:6b6e:15::2"), 1000)),
        ]
    );
}

#[test]
fn del_takes_rules_from_the_addresses_only() {
    let mut rules = default_rules();
    rules.push(Rule::lookup_from(ip("10.244.15.2"), 100));
    rules.push(Rule::lookup_from(ip("fd00:6b6e:15::2"), 101));
    rules.push(Rule::lookup_from(ip("10.244.99.9"), 102));
    let addrs = [ip("10.244.15.2"), ip("fd00:6b6e:15::2")];
    let got = plan_del(&rules, &addrs, None);
    assert_eq!(got, rules[5..7].to_vec());
    assert_eq!(plan_del(&rules, &addrs, Some(101)), rules[6..7].to_vec());
    assert!(plan_del(&rules, &[], None).is_empty());
}

/// The namespace after the dual-stack plan ran.
fn after_add() -> Observed {
    let obs = dual_stack_ns();
    let mut after = obs.clone();
    let v4 = cfg("10.244.15.2/24", Some("10.244.15.1"), None);
    let v6 = cfg("fd00:6b6e:15::2/64", Some("fd00:6b6e:15::1"), None);
    for s in plan_add(&[&v4, &v6], None, &obs) {
        match s {
            Step::AddRule(r) => after.rules.push(Rule {
                priority: Some(32765),
                ..r
            }),
            Step::AddRoute(r) | Step::ReplaceRoute(r) => after.routes.push(r),
            Step::DelRoute(r) => after.routes.retain(|x| *x != r),
        }
    }
    after
}

#[test]
fn check_finds_rules_tables_and_drift() {
    let v4 = cfg("10.244.15.2/24", Some("10.244.15.1"), None);
    let v6 = cfg("fd00:6b6e:15::2/64", Some("fd00:6b6e:15::1"), None);
    let ips = [&v4, &v6];
    let ok = after_add();
    check_state(&ips, None, &ok).unwrap();
    assert!(check_state(&ips, None, &dual_stack_ns())
        .unwrap_err()
        .contains("no rule from 10.244.15.2"));

    let mut no_default = ok.clone();
    no_default
        .routes
        .retain(|r| !(r.table == 101 && r.dst.prefix_len() == 0));
    let e = check_state(&ips, None, &no_default).unwrap_err();
    assert!(
        e.contains("table 101 has no default route via fd00:6b6e:15::1"),
        "{e}"
    );

    let e = check_state(&ips, Some(1000), &ok).unwrap_err();
    assert!(e.contains("no rule from 10.244.15.2 lookup 1000"), "{e}");
}

fn conf(extra: serde_json::Value) -> String {
    let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c.to_string()
}

#[test]
fn config_and_input_errors_come_before_the_kernel() {
    let (code, v) = call(&Sbr, "ADD", &conf(json!({})));
    assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{v}");
    let prev = json!({"cniVersion": "1.0.0", "ips": []});
    let (code, v) = call(&Sbr, "ADD", &conf(json!({"prevResult": prev})));
    assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("eth0"), "{v}");
    let (code, v) = call(&Sbr, "ADD", &conf(json!({"table": -1})));
    assert_eq!((code, v["code"].as_u64()), (1, Some(6)), "{v}");
    // DEL of a namespace that is gone succeeds; STATUS and GC only read the config.
    let (code, v) = call(&Sbr, "DEL", &conf(json!({"table": 1000})));
    assert_eq!(code, 0, "{v}");
    let status = json!({"cniVersion": "1.1.0", "name": "n", "type": "sbr"}).to_string();
    assert_eq!(call(&Sbr, "STATUS", &status).0, 0);
    assert_eq!(call(&Sbr, "GC", &status).0, 0);
}

#[test]
fn default_destinations_are_the_whole_family() {
    assert_eq!(default_dst(ip("10.1.2.3")).to_string(), "0.0.0.0/0");
    assert_eq!(default_dst(ip("fd00::1")).to_string(), "::/0");
}
