//! Kernel tests of `sbr` after `bridge`, in-process inside scratch namespaces ("host",
//! "container"). Root only: `cargo test -p cni-plugins --features root-tests --test kernel_sbr`.
#![cfg(feature = "root-tests")]

mod common;

use std::process::Command;

use common::*;
use libnet::netlink::route::RT_TABLE_MAIN;
use libnet::netlink::{Handle, Rule};
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

fn bridge_conf(net: &str, n: u8) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": net, "type": "bridge", "bridge": "kntsbr0",
        "isGateway": true,
        "ipam": {"type": "static",
            "addresses": [
                {"address": format!("10.244.{n}.5/24"), "gateway": format!("10.244.{n}.1")},
                {"address": format!("fd00:6b6e:{n}::5/64"), "gateway": format!("fd00:6b6e:{n}::1")}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    })
}

fn sbr_conf(net: &str, prev: &Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": net, "type": "sbr", "prevResult": prev});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// Rules with a source, as (source, table, pref).
fn src_rules(h: &Handle) -> Vec<(String, u32, u32)> {
    [false, true]
        .iter()
        .flat_map(|v6| h.rules(*v6).unwrap())
        .filter_map(|r: Rule| Some((r.src?.to_string(), r.table, r.priority?)))
        .collect()
}

/// `ping -I SRC DST` from `ns` (the route lookup then carries the source address), retried
/// for a few seconds while IPv6 DAD holds the address tentative.
fn ping_from(ns: &ScratchNs, src: &str, dst: &str) -> bool {
    let argv = [
        "netns",
        "exec",
        ns.name(),
        "ping",
        "-c1",
        "-W1",
        "-I",
        src,
        dst,
    ];
    (0..25).any(|i| {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Command::new("ip")
            .args(argv)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Attached {
    host: ScratchNs,
    ctr: ScratchNs,
    id: String,
    net: String,
    netns: String,
    prev: Value,
}

fn attach(tag: &str, n: u8) -> Attached {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let (id, net) = (cid(tag), format!("knt-sbr-{}", std::process::id()));
    let netns = ctr.path().display().to_string();
    let (code, prev) = call(
        &host,
        "bridge",
        "ADD",
        &id,
        &netns,
        "eth0",
        &bridge_conf(&net, n),
    );
    assert_eq!(code, 0, "{prev}");
    Attached {
        host,
        ctr,
        id,
        net,
        netns,
        prev,
    }
}

impl Attached {
    fn sbr(&self, cmd: &str, netns: &str, extra: Value) -> (i32, Value) {
        let conf = sbr_conf(&self.net, &self.prev, extra);
        call(&self.host, "sbr", cmd, &self.id, netns, "eth0", &conf)
    }
}

#[test]
fn sbr_after_bridge_add_check_drift_del() {
    let a = attach("s", 80);
    let (code, out) = a.sbr("ADD", &a.netns, json!({}));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["ips"], a.prev["ips"], "prevResult passes through");
    assert_eq!(out["interfaces"], a.prev["interfaces"]);

    let c = Handle::new_in(&a.ctr).unwrap();
    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!(
        src_rules(&c),
        vec![
            ("10.244.80.5/32".to_string(), 100, 32765),
            ("fd00:6b6e:80::5/128".to_string(), 101, 32765),
        ]
    );
    let routes: Vec<_> = [false, true]
        .iter()
        .flat_map(|v6| c.routes(*v6).unwrap())
        .filter(|r| r.oif == Some(eth0.index))
        .collect();
    let has = |table: u32, dst: &str, gw: Option<&str>| {
        routes.iter().any(|r| {
            r.table == table
                && r.dst.to_string() == dst
                && r.gw.map(|g| g.to_string()).as_deref() == gw
        })
    };
    assert!(has(100, "0.0.0.0/0", Some("10.244.80.1")), "{routes:?}");
    assert!(has(100, "10.244.80.0/24", None), "{routes:?}");
    assert!(has(101, "::/0", Some("fd00:6b6e:80::1")), "{routes:?}");
    assert!(has(101, "fd00:6b6e:80::/64", None), "{routes:?}");
    assert!(
        !routes.iter().any(|r| r.table == RT_TABLE_MAIN),
        "the interface's main-table routes moved out: {routes:?}"
    );
    assert!(ping_from(&a.ctr, "10.244.80.5", "10.244.80.1"));
    assert!(ping_from(&a.ctr, "fd00:6b6e:80::5", "fd00:6b6e:80::1"));

    let (code, out) = a.sbr("CHECK", &a.netns, json!({}));
    assert_eq!(code, 0, "{out}");
    ip(
        &a.ctr,
        &["rule", "del", "from", "10.244.80.5", "table", "100"],
    );
    let conf = sbr_conf(&a.net, &a.prev, json!({}));
    assert_check_fails(
        &a.host,
        "sbr",
        &a.id,
        &a.netns,
        &conf,
        "no rule from 10.244.80.5",
    );
    ip(
        &a.ctr,
        &["rule", "add", "from", "10.244.80.5", "table", "100"],
    );
    ip(&a.ctr, &["route", "del", "default", "table", "100"]);
    assert_check_fails(
        &a.host,
        "sbr",
        &a.id,
        &a.netns,
        &conf,
        "no default route via 10.244.80.1",
    );

    // DEL removes the rules; again is fine; so is after the link or the netns is gone.
    assert_eq!(a.sbr("DEL", &a.netns, json!({})).0, 0);
    assert!(src_rules(&c).is_empty(), "{:?}", src_rules(&c));
    assert_eq!(a.sbr("DEL", &a.netns, json!({})).0, 0);
    let bconf = with_prev(&bridge_conf(&a.net, 80), &a.prev);
    let (code, out) = call(&a.host, "bridge", "DEL", &a.id, &a.netns, "eth0", &bconf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(a.sbr("DEL", &a.netns, json!({})).0, 0);
    assert_eq!(a.sbr("DEL", "", json!({})).0, 0);
}

#[test]
fn sbr_with_a_table_adds_rules_only_and_del_keeps_other_tables() {
    let a = attach("s", 80);
    let c = Handle::new_in(&a.ctr).unwrap();
    // A rule of someone else for the same source, in another table: DEL with `table` keeps it.
    ip(
        &a.ctr,
        &[
            "rule",
            "add",
            "pref",
            "100",
            "from",
            "10.244.80.5",
            "table",
            "7",
        ],
    );
    let main_before: Vec<_> = c.routes(false).unwrap();
    let (code, out) = a.sbr("ADD", &a.netns, json!({"table": 1000}));
    assert_eq!(code, 0, "{out}");
    let mut rules = src_rules(&c);
    rules.sort();
    assert_eq!(
        rules,
        // No pref given: the kernel puts it just above the first rule after `local`.
        vec![
            ("10.244.80.5/32".to_string(), 7, 100),
            ("10.244.80.5/32".to_string(), 1000, 99),
            ("fd00:6b6e:80::5/128".to_string(), 1000, 32765),
        ]
    );
    assert_eq!(c.routes(false).unwrap(), main_before, "routes untouched");
    let (code, out) = a.sbr("CHECK", &a.netns, json!({"table": 1000}));
    assert_eq!(code, 0, "{out}");
    assert_eq!(a.sbr("DEL", &a.netns, json!({"table": 1000})).0, 0);
    assert_eq!(src_rules(&c), vec![("10.244.80.5/32".to_string(), 7, 100)]);
}

/// Rules and routes of every table out of eth0, as comparable lines.
fn routing_state(ns: &ScratchNs) -> Vec<String> {
    let h = Handle::new_in(ns).unwrap();
    let eth0 = h.link_by_name("eth0").unwrap().index;
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in h.rules(v6).unwrap() {
            out.push(format!("rule {}", libnet::netlink::rule::describe(&r)));
        }
        for r in h.routes(v6).unwrap() {
            if r.oif == Some(eth0) {
                out.push(format!(
                    "route {} via {:?} table {} scope {:?} proto {} metric {:?} src {:?}",
                    r.dst, r.gw, r.table, r.scope, r.protocol, r.metric, r.src
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dual_stack_state_matches_the_reference() {
    let (r, k) = (attach("r", 81), attach("k", 81));
    let conf = sbr_conf(&r.net, &r.prev, json!({}));
    let (ok, out) = reference(&r.host, "sbr", "ADD", &r.id, &r.netns, &conf);
    assert!(ok, "reference sbr ADD: {out}");
    let (code, out) = k.sbr("ADD", &k.netns, json!({}));
    assert_eq!(code, 0, "{out}");
    let (want, got) = (routing_state(&r.ctr), routing_state(&k.ctr));
    assert_eq!(got, want, "knit (left) vs reference (right)");
    assert!(
        want.iter()
            .any(|l| l.contains("from fd00:6b6e:81::5/128 lookup 101")),
        "{want:#?}"
    );
}
