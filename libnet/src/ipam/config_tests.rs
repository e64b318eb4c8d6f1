use super::*;
use crate::error::{HasKind, Kind};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn one(cfg: &IpamConfig) -> (String, String, String, String) {
    let r = &cfg.ranges[0].0[0];
    (
        r.subnet.to_string(),
        r.range_start.to_string(),
        r.range_end.to_string(),
        r.gateway.to_string(),
    )
}

#[test]
fn canonical_defaults() {
    // (ipam object, subnet, start, end, gateway)
    let table = [
        (
            json!({"subnet": "10.244.1.0/24"}),
            "10.244.1.0/24",
            "10.244.1.1",
            "10.244.1.254",
            "10.244.1.1",
        ),
        (
            json!({"ranges": [[{"subnet": "10.244.0.0/25"}]]}),
            "10.244.0.0/25",
            "10.244.0.1",
            "10.244.0.126",
            "10.244.0.1",
        ),
        (
            json!({"ranges": [[{"subnet": "10.244.2.0/24", "rangeStart": "10.244.2.40",
                   "rangeEnd": "10.244.2.50", "gateway": "10.244.2.254"}]]}),
            "10.244.2.0/24",
            "10.244.2.40",
            "10.244.2.50",
            "10.244.2.254",
        ),
        (
            json!({"subnet": "10.244.3.0/30"}),
            "10.244.3.0/30",
            "10.244.3.1",
            "10.244.3.2",
            "10.244.3.1",
        ),
        (
            json!({"subnet": "fd00:6b6e:1::/64"}),
            "fd00:6b6e:1::/64",
            "fd00:6b6e:1::1",
            "fd00:6b6e:1:0:ffff:ffff:ffff:ffff",
            "fd00:6b6e:1::1",
        ),
        (
            json!({"subnet": "fd00:6b6e::/126"}),
            "fd00:6b6e::/126",
            "fd00:6b6e::1",
            "fd00:6b6e::3",
            "fd00:6b6e::1",
        ),
        // Empty strings are Go's zero value: absent.
        (
            json!({"subnet": "10.244.4.0/24", "gateway": "", "rangeStart": null}),
            "10.244.4.0/24",
            "10.244.4.1",
            "10.244.4.254",
            "10.244.4.1",
        ),
        // IPv4-mapped addresses are IPv4.
        (
            json!({"subnet": "10.244.5.0/24", "gateway": "::ffff:10.244.5.9"}),
            "10.244.5.0/24",
            "10.244.5.1",
            "10.244.5.254",
            "10.244.5.9",
        ),
    ];
    for (v, sn, s, e, g) in table {
        let cfg = IpamConfig::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(one(&cfg), (sn.into(), s.into(), e.into(), g.into()), "{v}");
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }
}

#[test]
fn rejects_bad_config_naming_the_field() {
    // (ipam object, field in the message, fragment of the reason)
    let table = [
        (json!({}), "ranges", "no IP ranges specified"),
        (json!({"ranges": []}), "ranges", "no IP ranges specified"),
        (json!({"ranges": [[]]}), "ranges[0]", "empty range set"),
        (json!("x"), "ipam", "expected an object"),
        (json!({"subnet": "10.244.0.0/31"}), "subnet", "Network 10.244.0.0/31 too small"),
        (json!({"subnet": "10.244.0.1/32"}), "subnet", "too small to allocate from"),
        (json!({"subnet": "fd00:6b6e::/127"}), "subnet", "too small to allocate from"),
        (
            json!({"subnet": "192.0.2.1/24"}),
            "subnet",
            "Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0",
        ),
        (
            json!({"subnet": "2001:db8:24:19ff::/63"}),
            "subnet",
            "the network address is 2001:db8:24:19fe::",
        ),
        (json!({"subnet": "10.244.0.0"}), "subnet", "invalid CIDR address"),
        (json!({"subnet": 7}), "subnet", "expected a string"),
        (json!({"ranges": [[{"rangeStart": "10.0.0.1"}]]}), "ranges[0][0].subnet", "missing"),
        (
            json!({"ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.3.0"}]]}),
            "ranges[0][0].rangeStart",
            "RangeStart 192.0.3.0 not in network 192.0.2.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "192.0.2.0/24", "rangeEnd": "192.0.4.0"}]]}),
            "ranges[0][0].rangeEnd",
            "RangeEnd 192.0.4.0 not in network 192.0.2.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.50",
                   "rangeEnd": "192.0.2.40"}]]}),
            "ranges[0][0].rangeStart",
            "RangeStart 192.0.2.50 not in network",
        ),
        (
            json!({"ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "bogus"}]]}),
            "ranges[0][0].rangeStart",
            "invalid IP address",
        ),
        (
            json!({"ranges": [[{"subnet": "192.0.2.0/24", "gateway": "fd00::1"}]]}),
            "ranges[0][0].gateway",
            "not the same protocol",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "10.1.2.0/24"}]]}),
            "ranges[0][1]",
            "subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00:6b6e::/64"}]]}),
            "ranges[0][1]",
            "mixed address families",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/22"}], [{"subnet": "10.1.2.0/24"}]]}),
            "ranges[1]",
            "range set 0 overlaps with 1",
        ),
        (
            json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/24"}]]}),
            "ranges[0]",
            "range set 0 overlaps with 1",
        ),
        (json!({"subnet": "10.1.0.0/24", "routes": [{"gw": "10.1.0.1"}]}), "routes[0].dst", "missing"),
        (json!({"subnet": "10.1.0.0/24", "routes": {}}), "routes", "expected an array"),
        (json!({"subnet": "10.1.0.0/24", "dataDir": 5}), "dataDir", "expected a string"),
    ];
    for (v, field, reason) in table {
        let e = IpamConfig::from_json(&v).expect_err(&v.to_string());
        assert_eq!(e.kind(), Kind::Invalid, "{v}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(": {field}: ")),
            "{v}: {msg} lacks field {field}"
        );
        assert!(msg.contains(reason), "{v}: {msg} lacks {reason}");
    }
}

#[test]
fn legacy_range_comes_first_then_ranges_then_runtime_first() {
    let v = json!({
        "subnet": "10.244.1.0/24",
        "ranges": [[{"subnet": "10.244.2.0/24"}], [{"subnet": "fd00:6b6e::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.244.1.5"}],
        "dataDir": "/tmp/x",
        "resolvConf": "/etc/knit-resolv.conf"
    });
    let cfg = IpamConfig::from_json(&v).unwrap();
    let subnets: Vec<String> = cfg
        .ranges
        .iter()
        .map(|s| s.0[0].subnet.to_string())
        .collect();
    assert_eq!(
        subnets,
        ["10.244.1.0/24", "10.244.2.0/24", "fd00:6b6e::/64"]
    );
    assert_eq!(
        cfg.routes[0],
        Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: None
        }
    );
    assert_eq!(cfg.routes[1].gw, Some(ip("10.244.1.5")));
    assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(
        cfg.resolv_conf,
        Some(PathBuf::from("/etc/knit-resolv.conf"))
    );

    let rt = json!([[{"subnet": "10.244.9.0/24"}]]);
    let cfg = IpamConfig::from_json_with_runtime(&v, Some(&rt)).unwrap();
    assert_eq!(cfg.ranges[0].0[0].subnet.to_string(), "10.244.9.0/24");
    assert_eq!(cfg.ranges.len(), 4);
}

#[test]
fn resolv_conf_like_the_reference() {
    let text = "# comment\n; other\nnameserver 10.0.0.1\nnameserver  fd00::53 extra\n\
                domain a.example\ndomain b.example\nsearch x.example y.example\n\
                search z.example\noptions ndots:5 debug\nbogus\n  \nsortlist 1.2.3.4\n";
    let dns = parse_resolv_conf(text);
    assert_eq!(dns.nameservers, ["10.0.0.1", "fd00::53"]);
    assert_eq!(dns.domain, "b.example");
    assert_eq!(dns.search, ["x.example", "y.example", "z.example"]);
    assert_eq!(dns.options, ["ndots:5", "debug"]);
    let j = serde_json::to_value(&dns).unwrap();
    assert_eq!(j["nameservers"][1], "fd00::53");
    assert!(serde_json::to_value(Dns::default())
        .unwrap()
        .as_object()
        .unwrap()
        .is_empty());
    let e = read_resolv_conf(Path::new("/nonexistent/knit-resolv")).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
}

#[test]
fn requested_ips_from_all_sources() {
    let net = json!({
        "args": {"cni": {"ips": ["10.244.0.7", "fd00:6b6e::7"]}},
        "runtimeConfig": {"ips": ["10.244.0.8/24", "10.244.0.7"]}
    });
    let got = requested_ips("K8S_POD_NAME=x;IP=10.244.0.6", &net).unwrap();
    let want: Vec<IpAddr> = ["10.244.0.6", "10.244.0.7", "fd00:6b6e::7", "10.244.0.8"]
        .iter()
        .map(|s| ip(s))
        .collect();
    assert_eq!(got, want);
    let e = requested_ips("IP=nope", &json!({})).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid);
    assert!(requested_ips("", &json!({})).unwrap().is_empty());
}
