//! Kernel test of the bridge plugin's `macspoofchk`: containers on a bridge in a scratch "host"
//! namespace, real pings, a container changing its MAC, CHECK/DEL/GC of the elements in
//! `table bridge knit`. Root only: `cargo test -p cni-plugins --features root-tests --test
//! kernel_spoofchk`.
#![cfg(feature = "root-tests")]

mod common;

use std::process::Command;

use common::{call, ip, ping, scratch, with_prev};
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

/// The elements of `table bridge knit` in `host` as nft prints them in JSON (comments
/// included), or nothing when the table is not there.
fn spoof_elems(host: &ScratchNs) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", host.name(), "nft", "-j"])
        .args(["list", "table", "bridge", "knit"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set"))
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.to_string())
        .collect()
}

/// `nft delete element bridge knit spoof_ports { "PORT" }` in `host`, by hand.
fn nft_del_port(host: &ScratchNs, port: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", host.name(), "nft", "delete", "element"])
        .args([
            "bridge",
            "knit",
            "spoof_ports",
            &format!("{{ \"{port}\" }}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn addr(res: &Value) -> String {
    let a = res["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

#[test]
fn macspoofchk_drops_frames_with_another_source_mac() {
    let host = scratch("h");
    let ctrs: Vec<ScratchNs> = (0..3).map(|_| scratch("c")).collect();
    let paths: Vec<String> = ctrs
        .iter()
        .map(|c| c.path().display().to_string())
        .collect();
    let pid = std::process::id();
    let data = std::env::temp_dir().join(format!("knt-{pid}-spoof-ipam"));
    let name = format!("knt-spoof-{pid}");
    let conf = json!({
        "cniVersion": "1.1.0", "name": name, "type": "bridge", "bridge": "kbr24",
        "isGateway": true, "macspoofchk": true,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.244.24.0/24"}]]}
    });
    let id = |i: usize| format!("knt{pid}spoof{i}");
    let mut res = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let (code, r) = call(&host, "bridge", "ADD", &id(i), p, "eth0", &conf);
        assert_eq!(code, 0, "{r}");
        res.push(r);
    }
    let host_port = res[0]["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = res[0]["interfaces"][2]["mac"].as_str().unwrap().to_string();
    let elems = spoof_elems(&host);
    assert_eq!(elems.len(), 6, "two elements per attachment: {elems:?}");
    assert!(
        elems
            .iter()
            .any(|e| e.contains(&host_port) && e.contains(&mac)),
        "{elems:?}"
    );
    let (ip0, ip1) = (addr(&res[0]), addr(&res[1]));
    assert!(ping(&ctrs[0], &ip1), "container 0 reaches container 1");
    assert!(
        ping(&ctrs[0], "10.244.24.1"),
        "container 0 reaches the gateway"
    );
    let (code, out) = call(
        &host,
        "bridge",
        "CHECK",
        &id(0),
        &paths[0],
        "eth0",
        &with_prev(&conf, &res[0]),
    );
    assert_eq!(code, 0, "{out}");

    // Container 0 takes another MAC: everything it sends into the bridge is dropped.
    ip(
        &ctrs[0],
        &["link", "set", "eth0", "address", "0a:58:0a:f4:18:99"],
    );
    ip(&ctrs[0], &["neigh", "flush", "dev", "eth0"]);
    assert!(
        !ping(&ctrs[0], &ip1),
        "spoofed frames to container 1 dropped"
    );
    assert!(
        !ping(&ctrs[0], "10.244.24.1"),
        "spoofed frames to the gateway dropped"
    );
    assert!(ping(&ctrs[1], "10.244.24.1"), "other ports are untouched");
    // Its own MAC back: traffic flows again.
    ip(&ctrs[0], &["link", "set", "eth0", "address", &mac]);
    ip(&ctrs[0], &["neigh", "flush", "dev", "eth0"]);
    assert!(
        ping(&ctrs[0], &ip1),
        "container 0 reaches container 1 again"
    );
    assert!(ping(&ctrs[0], "10.244.24.1"));
    assert!(ping(&ctrs[1], &ip0));

    // DEL removes its elements only, twice is fine.
    for _ in 0..2 {
        let (code, out) = call(&host, "bridge", "DEL", &id(0), &paths[0], "eth0", &conf);
        assert_eq!(code, 0, "{out}");
        let elems = spoof_elems(&host);
        assert_eq!(elems.len(), 4, "{elems:?}");
        assert!(!elems.iter().any(|e| e.contains(&host_port)), "{elems:?}");
    }
    // CHECK of a deleted attachment's spoof check fails (its veth is gone too).
    let (code, _) = call(
        &host,
        "bridge",
        "CHECK",
        &id(0),
        &paths[0],
        "eth0",
        &with_prev(&conf, &res[0]),
    );
    assert_ne!(code, 0);

    // DEL without the container's namespace.
    let mut ctrs = ctrs;
    drop(ctrs.remove(1));
    let (code, out) = call(&host, "bridge", "DEL", &id(1), "", "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(spoof_elems(&host).len(), 2);

    // The drops are the check's doing: container 2 spoofs, fails, and gets through once its
    // port's element is removed by hand.
    let c2 = &ctrs[1];
    ip(c2, &["link", "set", "eth0", "address", "0a:58:0a:f4:18:98"]);
    ip(c2, &["neigh", "flush", "dev", "eth0"]);
    assert!(!ping(c2, "10.244.24.1"));
    let port2 = res[2]["interfaces"][1]["name"].as_str().unwrap();
    nft_del_port(&host, port2);
    assert!(
        ping(c2, "10.244.24.1"),
        "without the check the new MAC passes"
    );

    // GC with no valid attachment: the forgotten container 2's elements go.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let (code, out) = call(&host, "bridge", "GC", "", "", "", &gc);
    assert_eq!(code, 0, "{out}");
    assert_eq!(spoof_elems(&host), Vec::<String>::new());
    call(&host, "bridge", "DEL", &id(2), &paths[2], "eth0", &conf);
    let _ = std::fs::remove_dir_all(&data);
}

/// CHECK notices a spoof-check element removed behind the plugin's back.
#[test]
fn check_notices_a_missing_spoofchk_element() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let cid = format!("knt{}spoofchk", std::process::id());
    let conf = json!({
        "cniVersion": "1.0.0", "name": format!("knt-spoofc-{}", std::process::id()),
        "type": "bridge", "bridge": "kbr25", "macspoofchk": true,
        "ipam": {"type": "static", "addresses": [{"address": "10.244.25.5/24"}]}
    });
    let (code, res) = call(&host, "bridge", "ADD", &cid, &netns, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    nft_del_port(&host, res["interfaces"][1]["name"].as_str().unwrap());
    common::assert_check_fails(
        &host,
        "bridge",
        &cid,
        &netns,
        &with_prev(&conf, &res),
        "spoof_ports",
    );
    let (code, out) = call(&host, "bridge", "DEL", &cid, &netns, "eth0", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(spoof_elems(&host), Vec::<String>::new());
}

/// The host port is already checked for someone else (a hand-made element): ADD with ipMasq
/// and macspoofchk fails and takes back what it did (veth, masquerade elements, address).
#[test]
fn add_whose_port_is_taken_leaves_nothing() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let pid = std::process::id();
    let cid = format!("knt{pid}spooftaken");
    let data = std::env::temp_dir().join(format!("knt-{pid}-spoof-taken"));
    let name = format!("knt-spooft-{pid}");
    let conf = json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "kbr26",
        "isGateway": true, "ipMasq": true, "macspoofchk": true,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.244.26.0/24"}]]}
    });
    let port = libnet::driver::host_veth_name(&cid, "eth0");
    let skeleton = libnet::nft::plan::render_create_skeleton(libnet::nft::Table::Bridge);
    let script = format!(
        "{skeleton}add element bridge knit spoof_ports {{ \"{port}\" comment \"hand-made\" }}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", host.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let (code, out) = call(&host, "bridge", "ADD", &cid, &netns, "eth0", &conf);
    assert_eq!(code, 1, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("hand-made"), "{out}");
    assert!(
        !common::links(&host).contains(&port),
        "{:?}",
        common::links(&host)
    );
    let masq = common::nft_out(&host, &["list", "set", "inet", "knit", "masq4"]);
    assert!(!masq.contains("10.244.26."), "masquerade taken back");
    let reserved = std::fs::read_dir(data.join(&name))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(reserved, 0, "address released");
    assert_eq!(spoof_elems(&host).len(), 1, "the hand-made element stays");
    let _ = std::fs::remove_dir_all(&data);
}
