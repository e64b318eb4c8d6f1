//! Kernel tests of the `bandwidth` plugin's `shapedSubnets` / `unshapedSubnets`: a container
//! behind bridge+bandwidth talks with two peers on the same bridge in different subnets, one
//! listed and one not; iperf3 shows which traffic is shaped, in both directions. Root only:
//! `cargo test --release -p cni-plugins --features root-tests --test kernel_bandwidth_subnets`.
#![cfg(feature = "root-tests")]

mod common;

use std::sync::Mutex;

use cni_plugins::plugins::bandwidth::{ifb_name, IFB_PREFIX};
use common::{iperf, iperf_server, links, scratch, sh};
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

const NET: &str = "knt-bws";
/// 40 Mbit/s with a 50 kB bucket.
const RATE: u64 = 40_000_000;
const BURST: u64 = 400_000;
/// The shaped container, the peer in a listed subnet and the peer in another one, on one
/// bridge (a /16 and a /48, so no routing is needed between the /24s and /64s).
const ME: (&str, &str) = ("10.244.44.5", "fd00:6b6e:0:44::5");
const PEER_B: (&str, &str) = ("10.244.45.6", "fd00:6b6e:0:45::6");
const PEER_C: (&str, &str) = ("10.244.46.7", "fd00:6b6e:0:46::7");

/// iperf3 runs of the two tests must not share the CPU.
static IPERF: Mutex<()> = Mutex::new(());

fn call(host: &ScratchNs, plugin: &str, cmd: &str, id: &str, ctr: &str, c: &Value) -> (i32, Value) {
    common::call(host, plugin, cmd, id, ctr, "eth0", c)
}

fn bridge_conf((v4, v6): (&str, &str)) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "kbw44",
        "ipam": {"type": "static", "addresses": [
            {"address": format!("{v4}/16")}, {"address": format!("{v6}/48")}]}
    })
}

fn attach(host: &ScratchNs, ctr: &ScratchNs, id: &str, addr: (&str, &str)) -> Value {
    let netns = ctr.path().display().to_string();
    let (code, res) = call(host, "bridge", "ADD", id, &netns, &bridge_conf(addr));
    assert_eq!(code, 0, "{res}");
    res
}

/// Shape both directions; `lists` holds `shapedSubnets` and/or `unshapedSubnets`.
fn bw_conf(lists: &Value, prev: &Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth",
        "ingressRate": RATE, "ingressBurst": BURST, "egressRate": RATE, "egressBurst": BURST});
    for (k, v) in lists.as_object().unwrap() {
        c[k] = v.clone();
    }
    if !prev.is_null() {
        c["prevResult"] = prev.clone();
    }
    c
}

/// The shaped container and its two peers, attached; the bridge result of the first.
struct Setup {
    host: ScratchNs,
    me: ScratchNs,
    b: ScratchNs,
    c: ScratchNs,
    prev: Value,
}

impl Setup {
    fn new() -> Setup {
        let (host, me, b, c) = (scratch("h"), scratch("m"), scratch("b"), scratch("c"));
        let prev = attach(&host, &me, "me", ME);
        attach(&host, &b, "pb", PEER_B);
        attach(&host, &c, "pc", PEER_C);
        Setup {
            host,
            me,
            b,
            c,
            prev,
        }
    }

    fn netns(&self) -> String {
        self.me.path().display().to_string()
    }

    fn veth(&self) -> String {
        self.prev["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn bw(&self, cmd: &str, conf: &Value) -> (i32, Value) {
        call(&self.host, "bandwidth", cmd, "me", &self.netns(), conf)
    }

    /// Megabits per second to and from peer B, then to and from peer C, over IPv4 and then
    /// over IPv6.
    fn measure(&self) -> [f64; 8] {
        let _one = IPERF.lock().unwrap_or_else(|e| e.into_inner());
        let _srv = iperf_server(&self.me, None);
        [
            iperf(&self.b, ME.0, false),
            iperf(&self.b, ME.0, true),
            iperf(&self.c, ME.0, false),
            iperf(&self.c, ME.0, true),
            iperf(&self.b, ME.1, false),
            iperf(&self.b, ME.1, true),
            iperf(&self.c, ME.1, false),
            iperf(&self.c, ME.1, true),
        ]
        .map(|v| v / 1e6)
    }

    /// Nothing of ours on the veth, no ifb.
    fn assert_clean(&self) {
        let q = sh(&self.host, &["tc", "qdisc", "show", "dev", &self.veth()]);
        assert!(
            !q.contains("htb") && !q.contains("tbf") && !q.contains("ingress"),
            "{q}"
        );
        let ls = links(&self.host);
        assert!(!ls.iter().any(|l| l.starts_with(IFB_PREFIX)), "{ls:?}");
    }
}

/// Peer B's subnet is listed (unshaped) in `lists`, peer C's is not; check shaping by iperf3,
/// CHECK, and DEL twice.
fn shaping_follows_the_lists(lists: Value, setup: &Setup) {
    let conf = bw_conf(&lists, &setup.prev);
    let (code, res) = setup.bw("ADD", &conf);
    assert_eq!(code, 0, "{res}");
    let (veth, ifb) = (setup.veth(), ifb_name(NET, "me"));
    for (dev, at) in [(&veth, "at 12"), (&ifb, "at 16")] {
        let q = sh(&setup.host, &["tc", "qdisc", "show", "dev", dev]);
        let cl = sh(&setup.host, &["tc", "class", "show", "dev", dev]);
        let f = sh(
            &setup.host,
            &["tc", "filter", "show", "dev", dev, "parent", "1:"],
        );
        println!("{dev}:\n{q}{cl}{f}");
        assert!(q.contains("qdisc htb 1: root"), "{q}");
        assert!(
            cl.contains("class htb 1:30 root") && cl.contains("rate 40Mbit"),
            "{cl}"
        );
        assert!(cl.contains("class htb 1:1 root"), "{cl}");
        // The peer's address: the source into the container, the destination out of it.
        let listed = if lists.get("shapedSubnets").is_some() {
            "0af42e00"
        } else {
            "0af42d00"
        };
        assert!(f.contains(&format!("match {listed}/ffffff00 {at}")), "{f}");
        assert!(
            f.contains("protocol ipv6 pref 15 u32") && f.contains("protocol ip pref 16 u32"),
            "{f}"
        );
    }

    let m = setup.measure();
    let rate = RATE as f64 / 1e6;
    for (family, m) in [("IPv4", &m[..4]), ("IPv6", &m[4..])] {
        let [b_in, b_out, c_in, c_out] = [m[0], m[1], m[2], m[3]];
        println!(
            "{lists} {family}: configured {rate} Mbit/s; peer B (unshaped) in {b_in:.1} \
             out {b_out:.1}; peer C (shaped) in {c_in:.2} out {c_out:.2} Mbit/s"
        );
        for (what, v) in [("B in", b_in), ("B out", b_out)] {
            assert!(
                v > 4.0 * rate,
                "{family} {what}: {v:.1} Mbit/s should be far above {rate}"
            );
        }
        for (what, v) in [("C in", c_in), ("C out", c_out)] {
            let off = (v - rate).abs() / rate;
            assert!(
                off <= 0.10,
                "{family} {what}: {v:.2} Mbit/s is {:.1} % off",
                off * 100.0
            );
        }
    }

    let checked = bw_conf(&lists, &res);
    let (code, out) = setup.bw("CHECK", &checked);
    assert_eq!(code, 0, "{out}");
    // A filter too many on the ifb is drift.
    let extra = [
        "tc",
        "filter",
        "add",
        "dev",
        &ifb,
        "parent",
        "1:",
        "protocol",
        "ip",
        "prio",
        "17",
        "u32",
        "match",
        "ip",
        "dst",
        "10.244.99.0/24",
        "flowid",
        "1:1",
    ];
    sh(&setup.host, &extra);
    let (code, out) = setup.bw("CHECK", &checked);
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("3 u32 filters under 1:, expected 2") && msg.contains(&ifb),
        "{out}"
    );
    sh(
        &setup.host,
        &[
            "tc", "filter", "del", "dev", &ifb, "parent", "1:", "prio", "17",
        ],
    );
    let (code, out) = setup.bw("CHECK", &checked);
    assert_eq!(code, 0, "{out}");
    // A filter gone from the ifb is drift.
    sh(
        &setup.host,
        &[
            "tc", "filter", "del", "dev", &ifb, "parent", "1:", "prio", "15",
        ],
    );
    let (code, out) = setup.bw("CHECK", &checked);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.contains("fd00:6b6e") && msg.contains(&ifb), "{out}");
}

fn del_twice(setup: &Setup, lists: &Value) {
    let (code, out) = setup.bw("DEL", &bw_conf(lists, &Value::Null));
    assert_eq!(code, 0, "{out}");
    setup.assert_clean();
    let (code, out) = setup.bw("DEL", &bw_conf(lists, &setup.prev));
    assert_eq!(code, 0, "DEL is idempotent: {out}");
}

#[test]
fn unshaped_subnets_bypass_the_limit() {
    let setup = Setup::new();
    let lists = json!({"unshapedSubnets": ["10.244.45.0/24", "fd00:6b6e:0:45::/64"]});
    shaping_follows_the_lists(lists.clone(), &setup);
    // The shaped class (the default here, no filter bound to it) deleted from the veth.
    let veth = setup.veth();
    sh(
        &setup.host,
        &["tc", "class", "del", "dev", &veth, "classid", "1:30"],
    );
    let (code, out) = setup.bw("CHECK", &bw_conf(&lists, &setup.prev));
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("1:30 is missing") && msg.contains(&veth),
        "{out}"
    );
    del_twice(&setup, &lists);
}

#[test]
fn shaped_subnets_are_the_only_ones_limited() {
    let setup = Setup::new();
    let lists = json!({"shapedSubnets": ["10.244.46.0/24", "fd00:6b6e:0:46::/64"]});
    shaping_follows_the_lists(lists.clone(), &setup);
    // The shaped class's rate changed on the veth.
    let veth = setup.veth();
    sh(
        &setup.host,
        &[
            "tc", "class", "change", "dev", &veth, "parent", "1:", "classid", "1:30", "htb",
            "rate", "1mbit",
        ],
    );
    let (code, out) = setup.bw("CHECK", &bw_conf(&lists, &setup.prev));
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.contains("rate 125000") && msg.contains(&veth), "{out}");
    del_twice(&setup, &lists);
}

#[test]
fn bad_lists_are_config_errors_and_leave_nothing() {
    let setup = Setup::new();
    for lists in [
        json!({"shapedSubnets": ["10.244.46.0/24"], "unshapedSubnets": ["10.244.45.0/24"]}),
        json!({"unshapedSubnets": ["10.244.45.0/24", "10.244.300.0/24"]}),
        json!({"shapedSubnets": ["fd00:6b6e::/129"]}),
    ] {
        let (code, out) = setup.bw("ADD", &bw_conf(&lists, &setup.prev));
        assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{lists}: {out}");
        setup.assert_clean();
    }
    // A class that cannot be made (someone else's ingress qdisc blocks the redirect after the
    // veth's htb is in place): the ADD fails and takes its htb back.
    let veth = setup.veth();
    sh(
        &setup.host,
        &["tc", "qdisc", "add", "dev", &veth, "ingress"],
    );
    let lists = json!({"unshapedSubnets": ["10.244.45.0/24"]});
    let (code, out) = setup.bw("ADD", &bw_conf(&lists, &setup.prev));
    assert_eq!(code, 1, "{out}");
    let q = sh(&setup.host, &["tc", "qdisc", "show", "dev", &veth]);
    assert!(!q.contains("htb") && q.contains("ingress"), "{q}");
    assert!(!links(&setup.host).iter().any(|l| l.starts_with(IFB_PREFIX)));
    sh(
        &setup.host,
        &["tc", "qdisc", "del", "dev", &veth, "ingress"],
    );
    // A /0 is a valid subnet: everything goes to the listed class.
    let lists = json!({"shapedSubnets": ["0.0.0.0/0"]});
    let (code, res) = setup.bw("ADD", &bw_conf(&lists, &setup.prev));
    assert_eq!(code, 0, "{res}");
    let (code, out) = setup.bw("CHECK", &bw_conf(&lists, &res));
    assert_eq!(code, 0, "{out}");
    del_twice(&setup, &lists);
}
