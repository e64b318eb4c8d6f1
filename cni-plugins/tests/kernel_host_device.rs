//! Kernel tests of `host-device`, in-process inside scratch namespaces; the lent device is a
//! veth end made in the test's "host". Root only:
//! `cargo test -p cni-plugins --features root-tests --test kernel_host_device`.
#![cfg(feature = "root-tests")]

mod common;

use std::path::Path;

use common::*;
use libnet::netlink::Handle;
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

fn host_with_device(up: bool) -> ScratchNs {
    let host = scratch("h");
    ip(
        &host,
        &[
            "link", "add", "khd0", "type", "veth", "peer", "name", "khd0p",
        ],
    );
    if up {
        ip(&host, &["link", "set", "khd0", "up"]);
    }
    host
}

fn conf(select: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0", "name": "knt-hd", "type": "host-device",
        "ipam": {"type": "static", "addresses": [{"address": "10.244.60.2/24", "gateway": "10.244.60.1"}],
            "routes": [{"dst": "10.244.98.0/24"}]}
    });
    for (k, v) in select.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn state_file(id: &str) -> std::path::PathBuf {
    Path::new("/run/cni/knit/host-device").join(format!("{id}-eth0"))
}

#[test]
fn host_device_add_check_drift_del_restores_the_name_like_the_reference() {
    for (select, up) in [
        (json!({"device": "khd0"}), true),
        (json!({"hwaddr": "HWADDR"}), false),
    ] {
        let host = host_with_device(up);
        let ctr = scratch("c");
        let n = ctr.path().display().to_string();
        let h = Handle::new_in(&host).unwrap();
        let dev = h.link_by_name("khd0").unwrap();
        let mut select = select;
        if select.get("hwaddr").is_some() {
            select["hwaddr"] = json!(dev.mac_string());
        }
        let conf = conf(select);
        let id = cid(if up { "d1" } else { "d2" });
        let (code, res) = call(&host, "host-device", "ADD", &id, &n, "eth0", &conf);
        assert_eq!(code, 0, "{res}");
        assert!(state_file(&id).exists());
        assert_eq!(
            links(&host),
            vec!["khd0p", "lo"],
            "the device left the host"
        );
        let c = Handle::new_in(&ctr).unwrap();
        let eth0 = c.link_by_name("eth0").unwrap();
        assert_eq!(eth0.mac, dev.mac, "the same device");
        assert!(eth0.is_up());
        assert_eq!(
            eth0.alias.as_deref(),
            Some("khd0"),
            "the reference's record of the name"
        );
        assert_eq!(res["interfaces"][0]["mac"], dev.mac_string());
        assert_eq!(res["ips"][0]["interface"], 0);

        let checked = with_prev(&conf, &res);
        let (code, out) = call(&host, "host-device", "CHECK", &id, &n, "eth0", &checked);
        assert_eq!(code, 0, "{out}");
        ip(&ctr, &["route", "del", "10.244.98.0/24"]);
        assert_check_fails(
            &host,
            "host-device",
            &id,
            &n,
            &checked,
            "route to 10.244.98.0/24",
        );
        c.del_addr(eth0.index, "10.244.60.2/24".parse().unwrap())
            .unwrap();
        assert_check_fails(&host, "host-device", &id, &n, &checked, "10.244.60.2/24");

        let (code, out) = call(&host, "host-device", "DEL", &id, &n, "eth0", &checked);
        assert_eq!(code, 0, "{out}");
        assert_eq!(links(&ctr), vec!["lo".to_string()]);
        let back = h.link_by_name("khd0").unwrap();
        assert_eq!(back.mac, dev.mac);
        assert!(!back.is_up(), "left down, as the reference leaves it");
        assert_eq!(
            back.alias.as_deref(),
            Some("khd0"),
            "the name stays in the alias, as the reference leaves it"
        );
        assert!(!state_file(&id).exists());
        let (code, out) = call(&host, "host-device", "DEL", &id, &n, "eth0", &checked);
        assert_eq!(code, 0, "DEL is idempotent: {out}");
        let (code, out) = call(&host, "host-device", "DEL", &id, "", "eth0", &checked);
        assert_eq!(code, 0, "DEL without a netns: {out}");
        assert_eq!(links(&host), vec!["khd0", "khd0p", "lo"]);
    }
}

#[test]
fn host_device_half_way_failure_gives_the_device_back() {
    let host = host_with_device(true);
    ip(&host, &["link", "set", "khd0", "alias", "uplink"]);
    let ctr = scratch("c");
    ip(
        &ctr,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let n = ctr.path().display().to_string();
    let id = cid("d3");
    let (code, out) = call(
        &host,
        "host-device",
        "ADD",
        &id,
        &n,
        "eth0",
        &conf(json!({"device": "khd0"})),
    );
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert_eq!(links(&ctr), vec!["eth0", "lo", "other0"]);
    let back = Handle::new_in(&host).unwrap().link_by_name("khd0").unwrap();
    assert!(back.is_up());
    assert_eq!(back.alias.as_deref(), Some("uplink"));
    assert!(!state_file(&id).exists());
    // The runtime's DEL after the failed ADD leaves the container's own eth0 alone.
    let (code, out) = call(
        &host,
        "host-device",
        "DEL",
        &id,
        &n,
        "eth0",
        &conf(json!({"device": "khd0"})),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&ctr), vec!["eth0", "lo", "other0"]);
    // A device that does not exist: invalid configuration, nothing made.
    let (code, out) = call(
        &host,
        "host-device",
        "ADD",
        &id,
        &n,
        "eth0",
        &conf(json!({"device": "knt-nope0"})),
    );
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(!state_file(&id).exists());
}

#[test]
fn host_device_del_without_netns_forgets_the_state() {
    let host = host_with_device(true);
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let id = cid("d4");
    let conf = conf(json!({"device": "khd0"}));
    let (code, res) = call(&host, "host-device", "ADD", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    drop(ctr); // a veth end dies with its namespace (a physical device would go to init_net)
    let (code, out) = call(&host, "host-device", "DEL", &id, "", "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert!(!state_file(&id).exists());
}

/// Either plugin set gives back a device the other lent: the original name travels in the
/// link's alias.
#[test]
fn host_device_interop_with_the_reference() {
    let host = host_with_device(true);
    let conf =
        json!({"cniVersion": "1.0.0", "name": "knt-hd2", "type": "host-device", "device": "khd0"});
    // The reference lends, knit takes back.
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let id = cid("d5");
    let (ok, res) = reference(&host, "host-device", "ADD", &id, &n, &conf);
    assert!(ok, "{res}");
    assert_eq!(links(&host), vec!["khd0p", "lo"]);
    let (code, out) = call(&host, "host-device", "DEL", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&host), vec!["khd0", "khd0p", "lo"]);
    assert_eq!(links(&ctr), vec!["lo".to_string()]);
    // knit lends, the reference takes back.
    let (code, out) = call(&host, "host-device", "ADD", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    let (ok, out) = reference(&host, "host-device", "DEL", &id, &n, &conf);
    assert!(ok, "{out}");
    assert_eq!(links(&host), vec!["khd0", "khd0p", "lo"]);
    // knit's DEL afterwards only forgets its state.
    let (code, out) = call(&host, "host-device", "DEL", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert!(!state_file(&id).exists());
}
