//! Kernel tests of the `bandwidth` plugin, run in-process through the skel inside a scratch
//! "host" namespace after the bridge plugin made the veth pair; what the kernel holds is read
//! back with `tc`, and the shaping is measured with iperf3 between two containers. Root only:
//! `cargo test --release -p cni-plugins --features root-tests --test kernel_bandwidth`.
#![cfg(feature = "root-tests")]

mod common;

use std::time::{Duration, Instant};

use cni_plugins::plugins::bandwidth::{ifb_name, IFB_PREFIX};
use cni_plugins::plugins::by_name;
use cni_plugins::skel::run;
use common::{iperf, iperf_server, links, reference, scratch, sh};
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

const NET: &str = "knt-bw";

/// Run `plugin` for `cmd` on `eth0` inside `host`.
fn call(
    host: &ScratchNs,
    plugin: &str,
    cmd: &str,
    id: &str,
    netns: &str,
    conf: &Value,
) -> (i32, Value) {
    common::call(host, plugin, cmd, id, netns, "eth0", conf)
}
/// 50 Mbit/s with a 50 kB bucket.
const RATE: u64 = 50_000_000;
const BURST: u64 = 400_000;

fn bridge_conf(br: &str, addr: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": br,
        "ipam": {"type": "static", "addresses": [{"address": addr}]}
    })
}

fn bw_conf(ingress: bool, egress: bool, prev: &Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth"});
    let mut limits = json!({});
    if ingress {
        limits["ingressRate"] = json!(RATE);
        limits["ingressBurst"] = json!(BURST);
    }
    if egress {
        limits["egressRate"] = json!(RATE);
        limits["egressBurst"] = json!(BURST);
    }
    for (k, v) in limits.as_object().unwrap() {
        c[k] = v.clone();
    }
    if !prev.is_null() {
        c["prevResult"] = prev.clone();
    }
    c
}

/// The same limits through the `bandwidth` capability, as Kubernetes passes them.
fn bw_capability(ingress: bool, egress: bool, prev: &Value) -> Value {
    let plain = bw_conf(ingress, egress, prev);
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth"});
    let mut limits = json!({});
    for (k, v) in plain.as_object().unwrap() {
        if k.ends_with("Rate") || k.ends_with("Burst") {
            limits[k] = v.clone();
        } else {
            c[k] = v.clone();
        }
    }
    c["runtimeConfig"] = json!({ "bandwidth": limits });
    c
}

/// A container on bridge `br` with address `addr`: the bridge ADD's result.
fn attach(host: &ScratchNs, ctr: &ScratchNs, br: &str, id: &str, addr: &str) -> Value {
    let netns = ctr.path().display().to_string();
    let (code, res) = call(host, "bridge", "ADD", id, &netns, &bridge_conf(br, addr));
    assert_eq!(code, 0, "{res}");
    res
}

fn host_veth(prev: &Value) -> String {
    prev["interfaces"][1]["name"].as_str().unwrap().to_string()
}

#[test]
fn add_check_del_del() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let prev = attach(&host, &ctr, "kbw30", "ctr1", "10.244.30.5/24");
    let veth = host_veth(&prev);
    let conf = bw_capability(true, true, &prev);
    let (code, res) = call(&host, "bandwidth", "ADD", "ctr1", &netns, &conf);
    assert_eq!(code, 0, "{res}");
    let ifb = ifb_name(NET, "ctr1");
    let last = res["interfaces"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["name"], ifb.as_str(), "{res}");
    assert_eq!(last["mac"].as_str().unwrap().len(), 17, "{res}");

    let q = sh(&host, &["tc", "qdisc", "show", "dev", &veth]);
    println!("tc qdisc show dev {veth}:\n{q}");
    assert!(
        q.contains("qdisc tbf 1: root") && q.contains("rate 50Mbit burst 50000b lat 25ms"),
        "{q}"
    );
    assert!(q.contains("qdisc ingress ffff: parent ffff:fff1"), "{q}");
    let q = sh(&host, &["tc", "qdisc", "show", "dev", &ifb]);
    println!("tc qdisc show dev {ifb}:\n{q}");
    assert!(
        q.contains("qdisc tbf 1: root") && q.contains("rate 50Mbit burst 50000b lat 25ms"),
        "{q}"
    );
    let f = sh(&host, &["tc", "filter", "show", "dev", &veth, "ingress"]);
    println!("tc filter show dev {veth} ingress:\n{f}");
    assert!(
        f.contains("protocol all pref 1 u32") && f.contains("flowid 1:1"),
        "{f}"
    );
    assert!(f.contains("match 00000000/00000000 at 0"), "{f}");
    assert!(
        f.contains(&format!("mirred (Egress Redirect to device {ifb}) stolen")),
        "{f}"
    );
    let d = sh(&host, &["ip", "-d", "link", "show", &ifb]);
    assert!(
        d.contains("ifb") && d.contains("mtu 1500") && d.contains(",UP"),
        "{d}"
    );

    let checked = bw_capability(true, true, &res);
    let (code, out) = call(&host, "bandwidth", "CHECK", "ctr1", &netns, &checked);
    assert_eq!(code, 0, "{out}");
    // CHECK notices a removed qdisc, in either direction.
    sh(&host, &["tc", "qdisc", "del", "dev", &ifb, "root"]);
    let (code, out) = call(&host, "bandwidth", "CHECK", "ctr1", &netns, &checked);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(out["msg"].as_str().unwrap().contains(&ifb), "{out}");
    sh(&host, &["tc", "qdisc", "del", "dev", &veth, "root"]);
    let (code, out) = call(&host, "bandwidth", "CHECK", "ctr1", &netns, &checked);
    assert_eq!(code, 1, "{out}");
    assert!(out["msg"].as_str().unwrap().contains(&veth), "{out}");

    // Put the tbf back; DEL (without prevResult, which it does not need) removes both.
    sh(
        &host,
        &[
            "tc", "qdisc", "add", "dev", &veth, "root", "handle", "1:", "tbf", "rate", "1mbit",
            "burst", "10k", "latency", "25ms",
        ],
    );
    let del = bw_capability(true, true, &Value::Null);
    let (code, out) = call(&host, "bandwidth", "DEL", "ctr1", &netns, &del);
    assert_eq!(code, 0, "{out}");
    assert!(!links(&host).contains(&ifb), "{:?}", links(&host));
    let q = sh(&host, &["tc", "qdisc", "show", "dev", &veth]);
    assert!(!q.contains("tbf") && !q.contains("ingress"), "{q}");
    let (code, out) = call(&host, "bandwidth", "DEL", "ctr1", &netns, &checked);
    assert_eq!(code, 0, "DEL is idempotent: {out}");
    let (code, out) = call(
        &host,
        "bridge",
        "DEL",
        "ctr1",
        &netns,
        &bridge_conf("kbw30", "10.244.30.5/24"),
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn del_without_netns_removes_the_ifb() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let prev = attach(&host, &ctr, "kbw32", "ctr9", "10.244.32.5/24");
    let (code, res) = call(
        &host,
        "bandwidth",
        "ADD",
        "ctr9",
        &netns,
        &bw_conf(false, true, &prev),
    );
    assert_eq!(code, 0, "{res}");
    let ifb = ifb_name(NET, "ctr9");
    assert!(links(&host).contains(&ifb));
    // The runtime removed the container's namespace, and calls DEL without prevResult.
    drop(ctr);
    let (code, out) = call(
        &host,
        "bandwidth",
        "DEL",
        "ctr9",
        "",
        &bw_conf(false, true, &Value::Null),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !links(&host).iter().any(|l| l.starts_with(IFB_PREFIX)),
        "{:?}",
        links(&host)
    );
}

#[test]
fn add_that_fails_half_way_leaves_nothing() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let prev = attach(&host, &ctr, "kbw33", "ctr3", "10.244.33.5/24");
    let veth = host_veth(&prev);
    // Someone else's ingress qdisc is on the veth: the redirect cannot be set up.
    sh(&host, &["tc", "qdisc", "add", "dev", &veth, "ingress"]);
    let (code, out) = call(
        &host,
        "bandwidth",
        "ADD",
        "ctr3",
        &netns,
        &bw_conf(true, true, &prev),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("ingress qdisc"),
        "{out}"
    );
    assert!(
        !links(&host).iter().any(|l| l.starts_with(IFB_PREFIX)),
        "{:?}",
        links(&host)
    );
    let q = sh(&host, &["tc", "qdisc", "show", "dev", &veth]);
    assert!(
        !q.contains("tbf"),
        "the tbf made by this ADD is gone too: {q}"
    );
    assert!(q.contains("ingress"), "the foreign qdisc stays: {q}");
}

#[test]
fn add_without_limits_changes_nothing() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let prev = attach(&host, &ctr, "kbw34", "ctr4", "10.244.34.5/24");
    let mut conf = bw_conf(false, false, &prev);
    conf["runtimeConfig"] = json!({"bandwidth": {"ingressRate": 0, "ingressBurst": 0}});
    let (code, res) = call(&host, "bandwidth", "ADD", "ctr4", &netns, &conf);
    assert_eq!(code, 0, "{res}");
    assert_eq!(res["interfaces"], prev["interfaces"]);
    let q = sh(&host, &["tc", "qdisc", "show", "dev", &host_veth(&prev)]);
    assert!(!q.contains("tbf") && !q.contains("ingress"), "{q}");
}

#[test]
fn shaped_throughput_is_the_configured_rate() {
    let (host, a, b) = (scratch("h"), scratch("a"), scratch("b"));
    let prev = attach(&host, &a, "kbw31", "ctra", "10.244.31.5/24");
    attach(&host, &b, "kbw31", "ctrb", "10.244.31.6/24");
    let unshaped = {
        let _srv = iperf_server(&a, Some("10.244.31.5"));
        iperf(&b, "10.244.31.5", false)
    };
    let netns = a.path().display().to_string();
    let (code, res) = call(
        &host,
        "bandwidth",
        "ADD",
        "ctra",
        &netns,
        &bw_conf(true, true, &prev),
    );
    assert_eq!(code, 0, "{res}");
    let _srv = iperf_server(&a, Some("10.244.31.5"));
    // b → a: into the container (tbf on the veth); a → b: out of it (through the ifb).
    let ingress = iperf(&b, "10.244.31.5", false);
    let egress = iperf(&b, "10.244.31.5", true);
    let mbit = |v: f64| v / 1e6;
    println!(
        "configured {} Mbit/s; unshaped {:.0} Mbit/s; ingress {:.2} Mbit/s; egress {:.2} Mbit/s",
        RATE / 1_000_000,
        mbit(unshaped),
        mbit(ingress),
        mbit(egress)
    );
    for (dir, v) in [("ingress", ingress), ("egress", egress)] {
        let off = (v - RATE as f64).abs() / RATE as f64;
        assert!(
            off <= 0.10,
            "{dir}: {:.2} Mbit/s is {:.1} % off",
            mbit(v),
            off * 100.0
        );
    }
}

/// What `tc` and `ip` show of the shaping of one attachment, minus MACs.
fn tc_state(host: &ScratchNs, veth: &str, ifb: &str) -> String {
    let mut s = sh(host, &["tc", "qdisc", "show", "dev", veth]);
    s += &sh(host, &["tc", "qdisc", "show", "dev", ifb]);
    s += &sh(host, &["tc", "filter", "show", "dev", veth, "ingress"]);
    let link = sh(host, &["ip", "-d", "link", "show", ifb]);
    s + &link
        .split_whitespace()
        .filter(|w| !w.contains(':') || w.ends_with(':') && !w.starts_with(char::is_numeric))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn reference_and_knit_read_each_other() {
    let (host, ctr) = (scratch("h"), scratch("c"));
    let netns = ctr.path().display().to_string();
    let prev = attach(&host, &ctr, "kbw35", "ctr5", "10.244.35.5/24");
    let (veth, ifb) = (host_veth(&prev), ifb_name(NET, "ctr5"));
    let conf = bw_conf(true, true, &prev);

    // The reference's ADD, checked and deleted by knit.
    let (ok, ref_result) = reference(&host, "bandwidth", "ADD", "ctr5", &netns, &conf);
    assert!(ok, "reference ADD: {ref_result}");
    let by_reference = tc_state(&host, &veth, &ifb);
    let checked = bw_conf(true, true, &ref_result);
    let (code, out) = call(&host, "bandwidth", "CHECK", "ctr5", &netns, &checked);
    assert_eq!(code, 0, "knit CHECK of the reference's ADD: {out}");
    let (code, out) = call(&host, "bandwidth", "DEL", "ctr5", &netns, &checked);
    assert_eq!(code, 0, "{out}");
    let q = sh(&host, &["tc", "qdisc", "show", "dev", &veth]);
    assert!(!q.contains("tbf") && !links(&host).contains(&ifb), "{q}");

    // knit's ADD: the same kernel state, checked and deleted by the reference.
    let (code, res) = call(&host, "bandwidth", "ADD", "ctr5", &netns, &conf);
    assert_eq!(code, 0, "{res}");
    let by_knit = tc_state(&host, &veth, &ifb);
    println!("reference:\n{by_reference}\nknit:\n{by_knit}");
    assert_eq!(by_knit, by_reference);
    assert_eq!(
        res["interfaces"][3]["name"],
        ref_result["interfaces"][3]["name"]
    );
    let checked = bw_conf(true, true, &res);
    let (ok, out) = reference(&host, "bandwidth", "CHECK", "ctr5", &netns, &checked);
    assert!(ok, "reference CHECK of knit's ADD: {out}");
    let (ok, out) = reference(&host, "bandwidth", "DEL", "ctr5", &netns, &checked);
    assert!(ok, "reference DEL of knit's ADD: {out}");
    assert!(!links(&host).contains(&ifb));
}

fn call_gc(host: &ScratchNs, net: &str, valid: &[&str]) -> (i32, Value) {
    let valid: Vec<Value> = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    let conf = json!({"cniVersion": "1.1.0", "name": net, "type": "bandwidth",
        "cni.dev/valid-attachments": valid});
    let env: Vec<(&str, &str)> = vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/nonexistent")];
    let stdin = conf.to_string();
    let p = by_name("bandwidth").unwrap();
    host.run_in(|| {
        let mut out = Vec::new();
        let code = run(p, &env.as_slice(), &mut stdin.as_bytes(), &mut out);
        (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
    })
    .unwrap()
}

#[test]
fn gc_removes_the_ifbs_of_forgotten_attachments_only() {
    let host = scratch("h");
    let ctrs: Vec<ScratchNs> = (0..3).map(|_| scratch("c")).collect();
    let mut ifbs = Vec::new();
    for (i, ctr) in ctrs.iter().enumerate() {
        let id = format!("gc{i}");
        let addr = format!("10.244.36.{}/24", 5 + i);
        let prev = attach(&host, ctr, "kbw36", &id, &addr);
        let netns = ctr.path().display().to_string();
        let (code, res) = call(
            &host,
            "bandwidth",
            "ADD",
            &id,
            &netns,
            &bw_conf(false, true, &prev),
        );
        assert_eq!(code, 0, "{res}");
        ifbs.push(ifb_name(NET, &id));
    }
    // Another network's attachment, alive: GC of this network must leave it alone.
    let other = scratch("o");
    let prev = attach(&host, &other, "kbw36", "gcother", "10.244.36.20/24");
    let mut conf = bw_conf(false, true, &prev);
    conf["name"] = json!("knt-bw-other");
    let netns = other.path().display().to_string();
    let (code, res) = call(&host, "bandwidth", "ADD", "gcother", &netns, &conf);
    assert_eq!(code, 0, "{res}");
    let other_ifb = ifb_name("knt-bw-other", "gcother");

    // The runtime crashed: two containers died without a DEL (their veths went with them).
    let mut ctrs = ctrs.into_iter();
    let kept = ctrs.next().unwrap();
    drop(ctrs);
    // A namespace is torn down asynchronously: wait until its veth is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while links(&host)
        .iter()
        .filter(|l| l.starts_with("veth"))
        .count()
        > 2
    {
        assert!(Instant::now() < deadline, "{:?}", links(&host));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out) = call_gc(&host, NET, &["gc0"]);
    assert_eq!(code, 0, "{out}");
    let now = links(&host);
    assert!(
        now.contains(&ifbs[0]),
        "the valid attachment keeps its ifb: {now:?}"
    );
    assert!(
        !now.contains(&ifbs[1]) && !now.contains(&ifbs[2]),
        "{now:?}"
    );
    assert!(
        now.contains(&other_ifb),
        "another network's live ifb stays: {now:?}"
    );
    drop(kept);
}
