//! Kernel tests of `ptp`, in-process inside scratch namespaces ("host", "container"). Root
//! only: `cargo test -p cni-plugins --features root-tests --test kernel_ptp`.
#![cfg(feature = "root-tests")]

mod common;

use common::*;
use libnet::netlink::Handle;
use serde_json::{json, Value};

fn conf(net: &str, n: u8) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": net, "type": "ptp", "mtu": 1400, "ipMasq": true,
        "dns": {"nameservers": ["10.244.0.53"]},
        "ipam": {"type": "static",
            "addresses": [
                {"address": format!("10.244.{n}.5/24"), "gateway": format!("10.244.{n}.1")},
                {"address": format!("fd00:6b6e:{n}::5/64"), "gateway": format!("fd00:6b6e:{n}::1")}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    })
}

fn has_route(h: &Handle, dst: &str, oif: u32) -> bool {
    let dst: ipnet::IpNet = dst.parse().unwrap();
    h.routes(dst.addr().is_ipv6())
        .unwrap()
        .iter()
        .any(|r| r.dst == dst && r.oif == Some(oif))
}

#[test]
fn ptp_add_check_drift_del() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let (id, net) = (cid("p1"), format!("knt-ptp-{}", std::process::id()));
    let conf = conf(&net, 40);
    let netns = ctr.path().display().to_string();
    let (code, res) = call(&host, "ptp", "ADD", &id, &netns, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    let host_if = res["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_if.starts_with("veth"), "{res}");
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["sandbox"], netns.as_str());
    assert_eq!(res["interfaces"][1]["mtu"], 1400);
    assert_eq!(res["ips"][0]["interface"], 1);
    assert_eq!(res["dns"]["nameservers"][0], "10.244.0.53");

    // Host: the gateway addresses on the host end, /32 and /128 routes to the container.
    let h = Handle::new_in(&host).unwrap();
    let hv = h.link_by_name(&host_if).unwrap();
    assert_eq!(hv.mtu, 1400);
    let addrs: Vec<String> = h
        .addrs(hv.index)
        .unwrap()
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert!(addrs.contains(&"10.244.40.1/32".into()), "{addrs:?}");
    assert!(addrs.contains(&"fd00:6b6e:40::1/128".into()), "{addrs:?}");
    assert!(has_route(&h, "10.244.40.5/32", hv.index));
    assert!(has_route(&h, "fd00:6b6e:40::5/128", hv.index));
    // Container: the address, everything via the gateway, including its own subnet.
    let c = Handle::new_in(&ctr).unwrap();
    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!((eth0.mtu, eth0.is_up()), (1400, true));
    assert_eq!(
        eth0.mac_string(),
        res["interfaces"][1]["mac"].as_str().unwrap()
    );
    assert!(has_route(&c, "10.244.40.1/32", eth0.index));
    assert!(has_route(&c, "0.0.0.0/0", eth0.index));
    let via = c.routes(false).unwrap();
    assert!(
        via.iter()
            .any(|r| r.dst.to_string() == "10.244.40.0/24" && r.gw == "10.244.40.1".parse().ok()),
        "the subnet goes via the gateway: {via:?}"
    );
    assert!(ping(&ctr, "10.244.40.1"), "container -> host end over IPv4");
    assert!(
        ping(&ctr, "fd00:6b6e:40::1"),
        "container -> host end over IPv6"
    );

    let checked = with_prev(&conf, &res);
    let (code, out) = call(&host, "ptp", "CHECK", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    // Drift, one thing at a time, each put back after CHECK noticed it.
    c.set_mtu(eth0.index, 1300).unwrap();
    assert_check_fails(&host, "ptp", &id, &netns, &checked, "MTU 1300");
    c.set_mtu(eth0.index, 1400).unwrap();
    ip(&ctr, &["route", "del", "default"]);
    assert_check_fails(&host, "ptp", &id, &netns, &checked, "route to 0.0.0.0/0");
    ip(
        &ctr,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.244.40.1",
            "dev",
            "eth0",
        ],
    );
    h.del_route(&libnet::netlink::Route::new(
        "10.244.40.5/32".parse().unwrap(),
        None,
        Some(hv.index),
    ))
    .unwrap();
    assert_check_fails(&host, "ptp", &id, &netns, &checked, "10.244.40.5/32");
    ip(
        &host,
        &[
            "route",
            "add",
            "10.244.40.5/32",
            "dev",
            &host_if,
            "scope",
            "host",
        ],
    );
    let (code, out) = call(&host, "ptp", "CHECK", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "everything put back: {out}");
    c.del_addr(eth0.index, "10.244.40.5/24".parse().unwrap())
        .unwrap();
    assert_check_fails(&host, "ptp", &id, &netns, &checked, "10.244.40.5/24");

    let (code, out) = call(&host, "ptp", "DEL", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&host), vec!["lo".to_string()]);
    assert_eq!(links(&ctr), vec!["lo".to_string()]);
    assert!(!has_route(&h, "10.244.40.5/32", hv.index));
    assert!(h
        .routes(false)
        .unwrap()
        .iter()
        .all(|r| !r.dst.to_string().starts_with("10.244.40.")));
    let (code, out) = call(&host, "ptp", "CHECK", &id, &netns, "eth0", &checked);
    assert_eq!(code, 1, "CHECK after DEL fails: {out}");
    let (code, out) = call(&host, "ptp", "DEL", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "DEL is idempotent: {out}");
    let (code, out) = call(&host, "ptp", "DEL", &id, "", "eth0", &checked);
    assert_eq!(code, 0, "DEL without a netns: {out}");
}

#[test]
fn ptp_del_without_netns_removes_the_host_side() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let (id, net) = (cid("p2"), format!("knt-ptp2-{}", std::process::id()));
    let conf = conf(&net, 41);
    let netns = ctr.path().display().to_string();
    let (code, res) = call(&host, "ptp", "ADD", &id, &netns, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    drop(ctr);
    let (code, out) = call(&host, "ptp", "DEL", &id, "", "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&host), vec!["lo".to_string()]);
    let h = Handle::new_in(&host).unwrap();
    assert!(h
        .routes(false)
        .unwrap()
        .iter()
        .all(|r| !r.dst.to_string().starts_with("10.244.41.")));
}

#[test]
fn ptp_add_that_fails_half_way_leaves_nothing() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let data = std::env::temp_dir().join(format!("knt-ptp-ipam-{}", std::process::id()));
    let net = format!("knt-ptp3-{}", std::process::id());
    let conf = json!({
        "cniVersion": "1.0.0", "name": net, "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": data, "subnet": "10.244.42.0/24"}
    });
    ip(
        &ctr,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let netns = ctr.path().display().to_string();
    let (code, out) = call(&host, "ptp", "ADD", &cid("p3"), &netns, "eth0", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert_eq!(links(&host), vec!["lo".to_string()]);
    assert_eq!(links(&ctr), vec!["eth0", "lo", "other0"]);
    let leases: Vec<_> = std::fs::read_dir(data.join(&net))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "the address was given back: {leases:?}");
    let _ = std::fs::remove_dir_all(&data);
}

/// A crashed runtime: three ADDs, then GC knowing only the first. The other two lose their
/// addresses and masquerade rules; the valid one keeps both.
#[test]
fn ptp_gc_recovers_what_a_crashed_runtime_leaked() {
    let host = scratch("h");
    let ctrs: Vec<_> = (0..3).map(|_| scratch("c")).collect();
    let pid = std::process::id();
    let data = std::env::temp_dir().join(format!("knt-ptp-gc-{pid}"));
    let net = format!("knt-ptpgc-{pid}");
    let conf = json!({
        "cniVersion": "1.1.0", "name": net, "type": "ptp", "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data, "subnet": "10.244.43.0/24"}
    });
    let mut ips = Vec::new();
    for (i, ctr) in ctrs.iter().enumerate() {
        let n = ctr.path().display().to_string();
        let (code, res) = call(
            &host,
            "ptp",
            "ADD",
            &cid(&format!("g{i}")),
            &n,
            "eth0",
            &conf,
        );
        assert_eq!(code, 0, "{res}");
        ips.push(first_ip(&res));
    }
    let ruleset = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", host.name(), "nft", "list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = ruleset();
    assert!(
        ips.iter().all(|ip| before.contains(ip.as_str())),
        "{before}"
    );
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": cid("g0"), "ifname": "eth0"}]);
    let (code, out) = call(&host, "ptp", "GC", "", "", "", &gc);
    assert_eq!(code, 0, "{out}");
    let leases: Vec<String> = std::fs::read_dir(data.join(&net))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert_eq!(
        leases,
        vec![ips[0].clone()],
        "only the valid attachment keeps its address"
    );
    let after = ruleset();
    assert!(after.contains(ips[0].as_str()), "{after}");
    assert!(
        !after.contains(ips[1].as_str()) && !after.contains(ips[2].as_str()),
        "{after}"
    );
    let n0 = ctrs[0].path().display().to_string();
    let (code, out) = call(&host, "ptp", "DEL", &cid("g0"), &n0, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    let _ = std::fs::remove_dir_all(&data);
}

/// A node switched from the reference plugins: knit's CHECK and DEL take over an attachment
/// that the reference ptp (1.1.1, /usr/lib/cni) made under a random host veth name.
#[test]
fn ptp_check_and_del_of_a_reference_attachment() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let conf = json!({
        "cniVersion": "1.0.0", "name": format!("knt-ptpref-{}", std::process::id()), "type": "ptp",
        "ipam": {"type": "static", "addresses": [{"address": "10.244.44.5/24", "gateway": "10.244.44.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]}
    });
    let netns = ctr.path().display().to_string();
    let id = cid("pref");
    let (ok, res) = reference(&host, "ptp", "ADD", &id, &netns, &conf);
    assert!(ok, "{res}");
    let checked = with_prev(&conf, &res);
    let (code, out) = call(&host, "ptp", "CHECK", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    let (code, out) = call(&host, "ptp", "DEL", &id, &netns, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&host), vec!["lo".to_string()]);
    assert_eq!(links(&ctr), vec!["lo".to_string()]);
}
