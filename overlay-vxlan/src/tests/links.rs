//! Links, removal and the desired state's checks and wire format.

use super::*;

#[test]
fn ensure_makes_the_bridge_gateway_and_vxlan_port_and_is_idempotent() {
    let (f, eth0) = host();
    let net = blue();
    let links = ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    assert_eq!(links.bridge, br.index);
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(
        (br.mtu, br.mac.as_slice()),
        (1450, &gateway_mac(0x1001)[..])
    );
    assert!(br.is_up());
    let addrs: Vec<String> = f
        .addrs(br.index)
        .unwrap()
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, ["10.244.0.1/16"]);
    let vx = link(&f, "knvx4097");
    assert_eq!(links.vxlan, Some(vx.index));
    assert_eq!(
        vx.vxlan,
        Some(Vxlan {
            vni: 0x1001,
            local: Some(ip(LOCAL)),
            port: VXLAN_PORT,
            learning: false,
            link: Some(eth0),
        })
    );
    assert_eq!(vx.mtu, 1450);
    assert_eq!(vx.master, Some(br.index));
    assert_eq!((vx.learning, vx.neigh_suppress), (Some(false), Some(true)));
    assert!(vx.is_up());
    assert_eq!(
        f.model().ipv4_devconf(br.index, IPV4_DEVCONF_PROXY_ARP),
        Some(0)
    );

    // Again: the same links, and no change but the (idempotent) proxy_arp write.
    let before = f.calls().len();
    assert_eq!(ensure_network(&f, &net).unwrap(), links);
    let again = &f.calls()[before..];
    assert!(
        again.iter().all(
            |c| matches!(c, Call::SetIpv4Devconf(i, IPV4_DEVCONF_PROXY_ARP, 0) if *i == br.index)
        ),
        "{again:?}"
    );
}

#[test]
fn ensure_corrects_a_bridge_and_replaces_a_vxlan_with_other_settings() {
    let (f, _) = host();
    let mut net = blue();
    ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    f.set_mtu(br.index, 1500).unwrap();
    f.set_mac(br.index, [2, 9, 9, 9, 9, 9]).unwrap();
    f.add_addr(br.index, "10.99.0.1/24".parse().unwrap(), false)
        .unwrap();
    // The host's underlay address changed.
    let eth1 = f.seed_link(Link {
        name: "eth1".into(),
        mtu: 1500,
        ..Link::default()
    });
    f.seed_addr(eth1, "192.168.60.1/24".parse().unwrap());
    net.underlay_ip = ip("192.168.60.1");
    net.endpoints.clear();
    net.hosts.clear();
    let old_vx = link(&f, "knvx4097").index;
    let links = ensure_network(&f, &net).unwrap();
    let br = link(&f, "knov1001");
    assert_eq!(
        (br.mtu, br.mac.as_slice()),
        (1450, &gateway_mac(0x1001)[..])
    );
    let addrs: Vec<String> = f
        .addrs(br.index)
        .unwrap()
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, ["10.244.0.1/16"], "a stray global address goes");
    let vx = link(&f, "knvx4097");
    assert_ne!(vx.index, old_vx);
    assert_eq!(links.vxlan, Some(vx.index));
    assert_eq!(vx.vxlan.unwrap().local, Some(ip("192.168.60.1")));
    assert_eq!(vx.vxlan.unwrap().link, Some(eth1));
    assert_eq!((vx.master, vx.learning), (Some(br.index), Some(false)));
}

#[test]
fn bad_desired_states_are_refused_before_any_change() {
    let (f, _) = host();
    type Change = Box<dyn Fn(&mut NetworkDesired)>;
    let cases: Vec<(&str, Change)> = vec![
        ("VNI 0", Box::new(|n| n.vni = 0)),
        ("VNI", Box::new(|n| n.vni = 1 << 24)),
        ("no subnet", Box::new(|n| n.subnets.clear())),
        ("empty network id", Box::new(|n| n.id.clear())),
        (
            "endpoint 10.244.0.1 is the gateway",
            Box::new(|n| n.endpoints[0].ip = ip("10.244.0.1")),
        ),
        (
            "block 10.244.1.0/24 on two hosts",
            Box::new(|n| n.hosts[1].blocks.push("10.244.1.0/24".parse().unwrap())),
        ),
        (
            "gateway 10.9.0.1 outside",
            Box::new(|n| n.subnets[0].gateway = Some(ip("10.9.0.1"))),
        ),
        (
            "endpoint 10.9.0.5 outside",
            Box::new(|n| n.endpoints.push(ep("10.9.0.5", MAC3, B))),
        ),
        (
            "not unicast",
            Box::new(|n| n.endpoints[0].mac = Mac([1, 0, 0x5e, 0, 0, 1])),
        ),
        (
            "given to two MACs",
            Box::new(|n| n.endpoints.push(ep("10.244.1.5", MAC3, B))),
        ),
        (
            "on two hosts",
            Box::new(|n| n.endpoints.push(ep("10.244.1.6", MAC1, C))),
        ),
        ("family", Box::new(|n| n.endpoints[0].host = ip("fd00::2"))),
        (
            "block 10.9.0.0/24",
            Box::new(|n| n.hosts[0].blocks.push("10.9.0.0/24".parse().unwrap())),
        ),
        (
            "routed mode is IPv4 only",
            Box::new(|n| {
                n.mode = Mode::Routed;
                n.subnets[0].cidr = "fd00:6b6e::/48".parse().unwrap();
                n.subnets[0].gateway = None;
                n.endpoints.clear();
                n.hosts.clear();
            }),
        ),
    ];
    for (want, change) in cases {
        let mut net = blue();
        change(&mut net);
        let err = sync_network(&f, &net).unwrap_err();
        assert_eq!(err.kind(), Kind::Invalid, "{want}: {err}");
        assert!(err.to_string().contains(want), "{want:?} not in {err}");
        assert!(f.calls().is_empty(), "{want}: {:?}", f.calls());
    }
}

#[test]
fn a_foreign_link_under_our_name_or_a_missing_underlay_is_a_clear_error() {
    let (f, _) = host();
    f.seed_link(Link {
        name: "knov1001".into(),
        kind: Some("dummy".into()),
        ..Link::default()
    });
    let err = ensure_network(&f, &blue()).unwrap_err();
    assert_eq!(err.kind(), Kind::Exists);
    assert!(err.to_string().contains("knov1001"), "{err}");
    assert!(f.calls().is_empty(), "{:?}", f.calls());

    let (f, _) = host();
    let net = NetworkDesired {
        underlay_ip: ip("192.168.70.1"),
        endpoints: vec![],
        hosts: vec![],
        ..blue()
    };
    let err = ensure_network(&f, &net).unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound);
    assert!(err.to_string().contains("192.168.70.1"), "{err}");
}

#[test]
fn remove_network_deletes_its_links_and_routes_and_is_tolerant() {
    let (f, _) = host();
    let net = routed();
    sync_network(&f, &net).unwrap();
    sync_network(&f, &blue_as(0x2002, "10.245.0.0/16")).unwrap();
    let r = remove_network(&f, &net).unwrap();
    assert_eq!((r.links, r.routes), (vec!["knov1001".to_string()], 2));
    assert!(f.find_link("knov1001").unwrap().is_none());
    assert!(f.find_link("knov2002").unwrap().is_some());
    assert_eq!(remove_network(&f, &net).unwrap(), Removed::default());
}

#[test]
fn the_payload_is_plain_json_with_defaults_and_ignores_unknown_fields() {
    let text = r#"{"networks": [{"id": "blue", "vni": 4097,
        "subnets": [{"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}],
        "underlay_ip": "192.168.50.1",
        "endpoints": [{"ip": "10.244.1.5", "mac": "0a:58:0a:f4:01:05", "host": "192.168.50.2",
                       "name": "added later"}],
        "hosts": [{"underlay_ip": "192.168.50.2"}], "labels": {"x": 1}}]}"#;
    let h: HostDesired = serde_json::from_str(text).unwrap();
    assert_eq!(h.format, FORMAT);
    let n = &h.networks[0];
    assert_eq!(n.mode, Mode::Vxlan);
    assert_eq!(n.endpoints[0].mac, Mac(MAC1));
    assert!(n.hosts[0].blocks.is_empty());
    h.validate().unwrap();
    let back: HostDesired = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    assert_eq!(back, h);
    let json = serde_json::to_value(routed()).unwrap();
    assert_eq!(json["mode"], "routed");
    assert_eq!(json["endpoints"], serde_json::json!([]));
    let e = serde_json::to_value(ep("10.244.1.5", MAC1, B)).unwrap();
    assert_eq!(e["mac"], "0a:58:0a:f4:01:05");
    let err = serde_json::from_str::<Mac>(r#""0a:58:0a""#).unwrap_err();
    assert!(err.to_string().contains("not a MAC"), "{err}");
}
