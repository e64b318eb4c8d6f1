//! Kernel tests of `macvlan`, in-process inside scratch namespaces. This kernel makes macvlans
//! only on a parent link, so the master is a veth end inside the test's "host". Root only:
//! `cargo test -p cni-plugins --features root-tests --test kernel_macvlan`.
#![cfg(feature = "root-tests")]

mod common;

use common::*;
use libnet::netlink::link::MacvlanMode;
use libnet::netlink::Handle;
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

/// A host with a veth pair `kmv0`/`kmv0p`, both up: a master with carrier.
fn host_with_master() -> ScratchNs {
    let host = scratch("h");
    ip(
        &host,
        &[
            "link", "add", "kmv0", "type", "veth", "peer", "name", "kmv0p",
        ],
    );
    ip(&host, &["link", "set", "kmv0", "up"]);
    ip(&host, &["link", "set", "kmv0p", "up"]);
    host
}

fn conf(extra: Value, addr: &str) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0", "name": "knt-mv", "type": "macvlan", "master": "kmv0",
        "mode": "bridge", "mtu": 1400,
        "ipam": {"type": "static", "addresses": [{"address": addr, "gateway": "10.244.50.1"}],
            "routes": [{"dst": "10.244.99.0/24"}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn macvlan_two_containers_add_ping_check_drift_del() {
    let host = host_with_master();
    let (c1, c2) = (scratch("c"), scratch("c"));
    let (n1, n2) = (
        c1.path().display().to_string(),
        c2.path().display().to_string(),
    );
    let (id1, id2) = (cid("m1"), cid("m2"));
    let conf1 = conf(json!({}), "10.244.50.2/24");
    let conf2 = conf(json!({}), "10.244.50.3/24");
    let (code, r1) = call(&host, "macvlan", "ADD", &id1, &n1, "eth0", &conf1);
    assert_eq!(code, 0, "{r1}");
    let (code, r2) = call(&host, "macvlan", "ADD", &id2, &n2, "eth0", &conf2);
    assert_eq!(code, 0, "{r2}");
    assert_eq!(r1["interfaces"].as_array().unwrap().len(), 1, "{r1}");
    assert_eq!(r1["interfaces"][0]["sandbox"], n1.as_str());
    assert_eq!(r1["ips"][0]["interface"], 0);
    assert_eq!(
        links(&host),
        vec!["kmv0", "kmv0p", "lo"],
        "nothing left in the host"
    );

    let c = Handle::new_in(&c1).unwrap();
    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!(eth0.kind.as_deref(), Some("macvlan"));
    assert_eq!(eth0.macvlan_mode, Some(MacvlanMode::Bridge.bits()));
    assert_eq!((eth0.mtu, eth0.is_up()), (1400, true));
    assert_eq!(
        eth0.mac_string(),
        r1["interfaces"][0]["mac"].as_str().unwrap()
    );
    assert!(
        ping(&c1, "10.244.50.3"),
        "two macvlans on one master reach each other"
    );

    let checked = with_prev(&conf1, &r1);
    let (code, out) = call(&host, "macvlan", "CHECK", &id1, &n1, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    c.set_mtu(eth0.index, 1300).unwrap();
    assert_check_fails(&host, "macvlan", &id1, &n1, &checked, "MTU 1300");
    c.set_mtu(eth0.index, 1400).unwrap();
    ip(&c1, &["route", "del", "10.244.99.0/24"]);
    assert_check_fails(
        &host,
        "macvlan",
        &id1,
        &n1,
        &checked,
        "route to 10.244.99.0/24",
    );
    ip(
        &c1,
        &["route", "add", "10.244.99.0/24", "via", "10.244.50.1"],
    );
    let mut private = checked.clone();
    private["mode"] = json!("private");
    assert_check_fails(&host, "macvlan", &id1, &n1, &private, "mode");
    c.del_addr(eth0.index, "10.244.50.2/24".parse().unwrap())
        .unwrap();
    assert_check_fails(&host, "macvlan", &id1, &n1, &checked, "10.244.50.2/24");

    for (id, ns, n) in [(&id1, &c1, &n1), (&id2, &c2, &n2)] {
        let (code, out) = call(&host, "macvlan", "DEL", id, n, "eth0", &checked);
        assert_eq!(code, 0, "{out}");
        assert_eq!(links(ns), vec!["lo".to_string()]);
        let (code, out) = call(&host, "macvlan", "DEL", id, n, "eth0", &checked);
        assert_eq!(code, 0, "DEL is idempotent: {out}");
        let (code, out) = call(&host, "macvlan", "DEL", id, "", "eth0", &checked);
        assert_eq!(code, 0, "DEL without a netns: {out}");
    }
    assert_eq!(links(&host), vec!["kmv0", "kmv0p", "lo"]);
}

#[test]
fn macvlan_layer2_default_master_and_modes() {
    let host = host_with_master();
    // The master defaults to the link of the host's default route.
    ip(&host, &["addr", "add", "10.244.51.1/24", "dev", "kmv0"]);
    ip(
        &host,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.244.51.254",
            "dev",
            "kmv0",
        ],
    );
    for mode in ["private", "vepa", "passthru"] {
        let ctr = scratch("c");
        let n = ctr.path().display().to_string();
        let conf = json!({"cniVersion": "1.0.0", "name": "knt-mv2", "type": "macvlan",
            "mode": mode, "mac": "0a:58:0a:f4:33:07"});
        let id = cid(&format!("m3{mode}"));
        let (code, res) = call(&host, "macvlan", "ADD", &id, &n, "eth0", &conf);
        assert_eq!(code, 0, "{mode}: {res}");
        assert!(res.get("ips").is_none(), "layer 2 only: {res}");
        let eth0 = Handle::new_in(&ctr).unwrap().link_by_name("eth0").unwrap();
        assert_eq!(
            eth0.macvlan_mode,
            MacvlanMode::parse(mode).map(|m| m.bits())
        );
        assert_eq!(
            eth0.mac_string(),
            res["interfaces"][0]["mac"].as_str().unwrap()
        );
        if mode != "passthru" {
            // (A passthru macvlan is the master's one MAC: the kernel keeps the master's.)
            assert_eq!(eth0.mac_string(), "0a:58:0a:f4:33:07", "{mode}");
        }
        assert!(eth0.is_up());
        let (code, out) = call(
            &host,
            "macvlan",
            "CHECK",
            &id,
            &n,
            "eth0",
            &with_prev(&conf, &res),
        );
        assert_eq!(code, 0, "{mode}: {out}");
        let (code, out) = call(&host, "macvlan", "DEL", &id, &n, "eth0", &conf);
        assert_eq!(code, 0, "{out}");
        assert_eq!(links(&ctr), vec!["lo".to_string()]);
    }
}

#[test]
fn macvlan_link_in_container() {
    let host = scratch("h");
    let ctr = scratch("c");
    ip(
        &ctr,
        &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
    );
    ip(&ctr, &["link", "set", "up0", "up"]);
    let n = ctr.path().display().to_string();
    let conf = json!({"cniVersion": "1.0.0", "name": "knt-mv3", "type": "macvlan",
        "master": "up0", "linkInContainer": true});
    let id = cid("m4");
    let (code, res) = call(&host, "macvlan", "ADD", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    let c = Handle::new_in(&ctr).unwrap();
    let (eth0, up0) = (
        c.link_by_name("eth0").unwrap(),
        c.link_by_name("up0").unwrap(),
    );
    assert_eq!(
        eth0.peer_index,
        Some(up0.index),
        "made on the container's master"
    );
    let (code, out) = call(
        &host,
        "macvlan",
        "CHECK",
        &id,
        &n,
        "eth0",
        &with_prev(&conf, &res),
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = call(&host, "macvlan", "DEL", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&ctr), vec!["lo", "up0", "up0p"]);
    assert_eq!(links(&host), vec!["lo".to_string()]);
}

#[test]
fn macvlan_bad_input_and_half_way_failure_leave_nothing() {
    let host = host_with_master();
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let id = cid("m5");
    for (extra, what) in [
        (json!({"master": "knt-nope0"}), "does not exist"),
        (json!({"mode": "sideways"}), "unknown macvlan mode"),
        (json!({"mtu": 9000}), "invalid MTU 9000"),
    ] {
        let (code, out) = call(
            &host,
            "macvlan",
            "ADD",
            &id,
            &n,
            "eth0",
            &conf(extra, "10.244.52.2/24"),
        );
        assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
        assert!(out["msg"].as_str().unwrap().contains(what), "{out}");
        assert_eq!(links(&ctr), vec!["lo".to_string()]);
    }
    // The container already has eth0: the kernel refuses the name there and nothing is made.
    ip(
        &ctr,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let (code, out) = call(
        &host,
        "macvlan",
        "ADD",
        &id,
        &n,
        "eth0",
        &conf(json!({}), "10.244.52.2/24"),
    );
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert_eq!(links(&ctr), vec!["eth0", "lo", "other0"]);
    assert_eq!(links(&host), vec!["kmv0", "kmv0p", "lo"]);
}

/// The link is born in the container under its final name: a host link of that very name
/// (here the master itself is `eth0`) neither blocks it nor is touched.
#[test]
fn macvlan_named_like_a_host_link() {
    let host = scratch("h");
    ip(
        &host,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    );
    ip(&host, &["link", "set", "eth0", "up"]);
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let id = cid("m6");
    let c = conf(json!({"master": "eth0"}), "10.244.50.9/24");
    let (code, out) = call(&host, "macvlan", "ADD", &id, &n, "eth0", &c);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&ctr), vec!["eth0", "lo"]);
    assert_eq!(links(&host), vec!["eth0", "eth0p", "lo"]);
    let (code, out) = call(&host, "macvlan", "DEL", &id, &n, "eth0", &c);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&ctr), vec!["lo"]);
    assert_eq!(links(&host), vec!["eth0", "eth0p", "lo"]);
}
