use serde_json::{json, Value};

use super::*;
use crate::skel::{run, ERR_INVALID_CONFIG};

fn limits(v: Value) -> Result<Limits, CniError> {
    limits_of(&v)
}

fn shape_of(rate: u64, burst: u64) -> Option<Shape> {
    Some(Shape { rate, burst })
}

#[test]
fn zero_or_absent_rates_mean_no_shaping() {
    assert!(limits(json!({})).unwrap().is_empty());
    let zeros = json!({"ingressRate": 0, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0});
    assert!(limits(zeros).unwrap().is_empty());
    let one_way = limits(json!({"ingressRate": 0, "egressRate": 1000, "egressBurst": 800}));
    assert_eq!(
        one_way.unwrap(),
        Limits {
            ingress: None,
            egress: shape_of(1000, 800),
            subnets: None,
        }
    );
}

#[test]
fn bad_limits_are_config_errors() {
    let cases = [
        (json!({"ingressRate": -1, "ingressBurst": 10}), "negative"),
        (json!({"egressRate": 100, "egressBurst": -8}), "negative"),
        (json!({"ingressRate": 1000}), "burst must also be set"),
        (json!({"egressBurst": 1000}), "rate must also be set"),
        (
            json!({"ingressRate": 1000, "ingressBurst": 8u64 * u64::from(u32::MAX)}),
            "4GB",
        ),
        (json!({"ingressRate": 7, "ingressBurst": 800}), "at least 8"),
        (json!({"ingressRate": "fast"}), "invalid configuration"),
    ];
    for (conf, why) in cases {
        let e = limits(conf.clone()).unwrap_err();
        assert_eq!(e.code, ERR_INVALID_CONFIG, "{conf}");
        assert!(e.msg.contains(why), "{conf}: {}", e.msg);
    }
}

#[test]
fn capability_applies_when_the_config_names_no_limit() {
    let rc = json!({"bandwidth": {"ingressRate": 2000, "ingressBurst": 1600}});
    let l = limits(json!({"runtimeConfig": rc})).unwrap();
    assert_eq!(l.ingress, shape_of(2000, 1600));
    // As the reference: any of the four keys in the plugin config shadows the capability.
    let both = json!({"egressRate": 100, "egressBurst": 80, "runtimeConfig": rc});
    let l = limits(both).unwrap();
    assert_eq!(l.ingress, None);
    assert_eq!(l.egress, shape_of(100, 80));
    // The capability is validated like the config.
    let bad = json!({"runtimeConfig": {"bandwidth": {"egressRate": 5}}});
    assert_eq!(limits(bad).unwrap_err().code, ERR_INVALID_CONFIG);
}

#[test]
fn ifb_names_match_the_reference() {
    // Made by /usr/lib/cni/bandwidth for network "knt-net", container "ctr1".
    assert_eq!(ifb_name("knt-net", "ctr1"), "bwpe3bc84e16f91");
    assert_eq!(ifb_name("knt-net", "ctr2").len(), 15);
    assert_ne!(ifb_name("knt-net", "ctr2"), ifb_name("knt-net2", "ctr2"));
}

/// The reference's createTBF with netlink.TickInUsec() = 15.625 (this kernel's psched).
fn reference_tbf(rate_bits: u64, burst_bits: u64) -> (u64, u32, u32) {
    let rate = rate_bits / 8;
    let burst = (burst_bits / 8) as u32;
    let buffer = ((f64::from(burst) * 1e6 / rate as f64) as u32 as f64 * 15.625) as u32;
    let limit = (rate as f64 * 25_000.0 / 1e6) as u32 + burst;
    (rate, limit, buffer)
}

#[test]
fn tbf_parameters_follow_the_reference_formulas() {
    for (rate, burst) in [
        (50_000_000, 400_000),
        (1_000_000, 8_000),
        (10_000_000_000, 80_000_000),
        (123_457, 99_991),
    ] {
        let t = Shape { rate, burst }.tbf(15.625);
        assert_eq!((t.rate, t.limit, t.buffer), reference_tbf(rate, burst));
    }
}

fn run_plugin(cmd: &str, conf: &Value) -> (i32, Value) {
    let env: &[(&str, &str)] = &[
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/nonexistent"),
        ("CNI_IFNAME", "eth0"),
    ];
    let mut out = Vec::new();
    let code = run(&Bandwidth, &env, &mut conf.to_string().as_bytes(), &mut out);
    (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

#[test]
fn add_without_limits_passes_prev_result_on() {
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.244.1.5/24", "interface": 1}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bandwidth",
        "ingressRate": 0, "ingressBurst": 0, "prevResult": prev});
    let (code, out) = run_plugin("ADD", &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["interfaces"], prev["interfaces"]);
    assert_eq!(out["ips"], prev["ips"]);
}

#[test]
fn add_with_limits_needs_prev_result() {
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bandwidth",
        "egressRate": 1000, "egressBurst": 800});
    let (code, out) = run_plugin("ADD", &conf);
    assert_eq!(code, 1);
    assert_eq!(out["code"], 7, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("prevResult"), "{out}");
}

#[test]
fn subnet_lists_are_parsed_and_validated() {
    use subnets::Mode;
    let l = limits(json!({"egressRate": 1000, "egressBurst": 800,
        "unshapedSubnets": ["10.244.7.9/24", "fd00:6b6e:7::/64"]}))
    .unwrap();
    let sn = l.subnets.unwrap();
    assert_eq!(sn.mode, Mode::Unshaped);
    let nets: Vec<String> = sn.nets.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.244.7.0/24", "fd00:6b6e:7::/64"],
        "host bits dropped"
    );
    // An empty list is no list.
    let l = limits(json!({"shapedSubnets": [], "unshapedSubnets": []})).unwrap();
    assert_eq!(l.subnets, None);
    let cases = [
        (
            json!({"shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["10.1.0.0/16"]}),
            "cannot be both specified",
        ),
        (json!({"shapedSubnets": ["10.0.0.0/33"]}), "bad subnet"),
        (json!({"unshapedSubnets": ["10.0.0.1"]}), "bad subnet"),
        (json!({"unshapedSubnets": ["nonsense"]}), "bad subnet"),
        (
            json!({"unshapedSubnets": "10.0.0.0/8"}),
            "invalid configuration",
        ),
    ];
    for (conf, why) in cases {
        let e = limits(conf.clone()).unwrap_err();
        assert_eq!(e.code, ERR_INVALID_CONFIG, "{conf}");
        assert!(e.msg.contains(why), "{conf}: {}", e.msg);
    }
}

#[test]
fn subnet_lists_come_with_their_entry() {
    // As the reference: the entry is taken whole from the config or from the capability.
    let rc = json!({"bandwidth": {"ingressRate": 2000, "ingressBurst": 1600,
        "shapedSubnets": ["fd00:6b6e::/48"]}});
    let l = limits(json!({"runtimeConfig": rc})).unwrap();
    assert_eq!(l.subnets.unwrap().mode, subnets::Mode::Shaped);
    let l = limits(json!({"unshapedSubnets": ["10.0.0.0/8"], "runtimeConfig": rc})).unwrap();
    assert_eq!(l.ingress, None, "the config's lists shadow the capability");
    let bad = json!({"bandwidth": {"shapedSubnets": ["x"]}});
    assert_eq!(
        limits(json!({"runtimeConfig": bad})).unwrap_err().code,
        ERR_INVALID_CONFIG
    );
}

#[test]
fn htb_layout_follows_the_reference_ids() {
    use libnet::netlink::tc::AddrField;
    use subnets::{Mode, Subnets, SHAPED_MINOR, UNSHAPED_MINOR, UNSHAPED_RATE};
    let sn = Subnets {
        mode: Mode::Unshaped,
        nets: vec![
            "10.244.9.0/24".parse().unwrap(),
            "fd00:6b6e::/48".parse().unwrap(),
        ],
    };
    assert_eq!(
        (sn.default_minor(), sn.listed_minor()),
        (SHAPED_MINOR, UNSHAPED_MINOR)
    );
    let fs = sn.filters(AddrField::Src);
    assert_eq!(fs.iter().map(|f| f.priority).collect::<Vec<_>>(), [16, 15]);
    assert!(fs.iter().all(|f| f.class_id == 0x0001_0001));
    let shaped = Subnets {
        mode: Mode::Shaped,
        ..sn
    };
    assert_eq!(shaped.default_minor(), UNSHAPED_MINOR);
    assert!(shaped
        .filters(AddrField::Dst)
        .iter()
        .all(|f| f.class_id == 0x0001_0030));
    let [s, u] = subnets::classes(
        &Shape {
            rate: 8_000_000,
            burst: 80_000,
        },
        1500,
        15.625,
    );
    assert_eq!(
        (s.handle, s.parent, s.rate, s.ceil),
        (0x0001_0030, 0x0001_0000, 1_000_000, 1_000_000)
    );
    assert_eq!(
        s.buffer,
        Shape {
            rate: 8_000_000,
            burst: 80_000
        }
        .tbf(15.625)
        .buffer
    );
    assert_eq!(s.quantum, 1514);
    assert_eq!(
        (u.handle, u.rate, u.ceil),
        (0x0001_0001, UNSHAPED_RATE, UNSHAPED_RATE)
    );
}
