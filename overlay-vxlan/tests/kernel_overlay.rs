//! The overlay on real kernels: three "hosts" (namespaces) on an underlay bridge (a namespace
//! of its own), containers (namespaces) on each host's overlay bridge by a veth, the desired
//! state computed here as a controller would and applied with `sync_host` on every host.
//! Run as root: `cargo test --release -p overlay-vxlan --features root-tests --test
//! kernel_overlay`. Without root it fails (never skips).
#![cfg(feature = "root-tests")]

mod common;

use common::*;
use overlay_vxlan::*;

#[test]
fn kernel_has_vxlan() {
    probe_vxlan();
}

#[test]
fn vxlan_overlay_pings_across_hosts_and_follows_removals_and_address_handovers() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0001;
    lab.nets
        .push(vxlan_net("blue", vni, "10.241.0.0/24", &[0, 1, 2]));
    lab.sync();
    let addrs = ["10.241.0.10", "10.241.0.11", "10.241.0.12", "10.241.0.20"];
    for (i, a) in addrs.iter().enumerate() {
        let host = i % 3;
        lab.add_ctr(host, vni, &format!("{a}/24"), endpoint_mac(ip(a)));
    }
    let applied = lab.sync();
    // Host 0 has containers 10 and 20; it learns 11 (host 1) and 12 (host 2) (the flood
    // entries to hosts 1 and 2 came with the first sync).
    assert_eq!(applied[0].neigh_replaced, 2, "{:?}", applied[0]);
    assert_eq!(applied[0].fdb_added, 2, "{:?}", applied[0]);
    assert_eq!(applied[0].port_added, 2, "{:?}", applied[0]);
    lab.assert_all_pairs_ping(vni);
    // Converged: nothing more to do anywhere.
    assert!(lab.sync().iter().all(|a| a.changes() == 0));

    // The links as asked.
    let h0 = &lab.hosts[0];
    let shown = sh(&h0.ns, &format!("ip -d link show {}", vxlan_name(vni)));
    for want in [
        "vxlan id 7798785",
        "local 10.76.0.1",
        "dev eth0",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
        "master knov770001",
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    let port = sh(
        &h0.ns,
        &format!("bridge -d link show dev {}", vxlan_name(vni)),
    );
    assert!(
        port.contains("learning off") && port.contains("neigh_suppress on"),
        "{port}"
    );
    // The anycast gateway: same IP and MAC on every host.
    for h in &lab.hosts {
        let br = sh(
            &h.ns,
            "ip -br addr show dev knov770001; ip -br link show dev knov770001",
        );
        assert!(br.contains("10.241.0.1/24"), "{br}");
        assert!(br.contains("06:6b:6e:77:00:01"), "{br}");
    }
    // Every container resolves its gateway to that MAC.
    let c = &lab.ctrs[1];
    assert!(ping(&c.ns, ip("10.241.0.1")));
    let n = sh(&c.ns, "ip neigh show 10.241.0.1");
    assert!(n.contains("06:6b:6e:77:00:01"), "{n}");

    // A stale entry planted by hand (a previous run's) goes with the next sync, and a bridge
    // of a network no longer listed too.
    let h1 = &lab.hosts[1];
    sh(
        &h1.ns,
        "bridge fdb append 0a:58:0a:f1:00:63 dev knvx7798785 dst 10.76.0.99 self permanent && \
         bridge fdb add 0a:58:0a:f1:00:63 dev knvx7798785 master static && \
         ip neigh replace 10.241.0.99 lladdr 0a:58:0a:f1:00:63 dev knov770001 nud permanent && \
         bridge fdb append 00:00:00:00:00:00 dev knvx7798785 dst 10.76.0.99 self permanent && \
         ip link add knov99 type bridge",
    );
    let applied = lab.sync();
    assert_eq!(
        (
            applied[1].fdb_removed,
            applied[1].port_removed,
            applied[1].neigh_removed
        ),
        (2, 1, 1),
        "{:?}",
        applied[1]
    );
    let fdb = sh(&h1.ns, "bridge fdb show dev knvx7798785");
    assert!(
        !fdb.contains("10.76.0.99") && !fdb.contains("0a:58:0a:f1:00:63"),
        "{fdb}"
    );
    assert!(!sh(&h1.ns, "ip neigh show dev knov770001").contains("10.241.0.99"));
    assert!(!sh(&h1.ns, "ip link show").contains("knov99"));

    // No ARP crosses the tunnel for a known remote: the bridge answers it. Counted by nft on
    // the frames the bridge forwards out of the vxlan port; a positive control (an address
    // nobody has) shows that the counter does count flooded ARP.
    let h0 = &lab.hosts[0];
    sh(
        &h0.ns,
        "nft add table bridge kntarp && \
         nft add chain bridge kntarp cnt '{ type filter hook forward priority 0; }' && \
         nft add rule bridge kntarp cnt oifname knvx7798785 ether type arp counter",
    );
    let arp_out = || -> u64 {
        let r = sh(&h0.ns, "nft list chain bridge kntarp cnt");
        let p = r.split("packets ").nth(1).unwrap_or_else(|| panic!("{r}"));
        p.split_whitespace().next().unwrap().parse().unwrap()
    };
    let a = &lab.ctrs[0]; // host 0
    sh(&a.ns, "ip neigh flush all");
    assert!(ping(&a.ns, ip("10.241.0.11")) && ping(&a.ns, ip("10.241.0.12")));
    assert_eq!(arp_out(), 0, "ARP for known remotes crossed the tunnel");
    assert!(!ping(&a.ns, ip("10.241.0.250")));
    assert!(arp_out() > 0, "the control ARP was not counted");
    sh(&h0.ns, "nft delete table bridge kntarp");

    // A container removed (10.241.0.12 on host 2): unreachable, its entries gone everywhere.
    let gone = lab
        .ctrs
        .iter()
        .position(|c| c.ip() == ip("10.241.0.12"))
        .unwrap();
    let old = lab.remove_ctr(gone);
    lab.sync();
    assert!(!ping(&lab.ctrs[0].ns, old.ip()));
    for h in [0, 1] {
        assert_eq!(
            entries(&lab, h, vni, old.ip(), old.mac),
            (None, false),
            "host {h}"
        );
    }
    drop(old);

    // The address handed at once to a new container on host 1, with the MAC derived from
    // the address: peers that cached it reach it at once (the FDB entry moved hosts).
    lab.add_ctr(1, vni, "10.241.0.12/24", endpoint_mac(ip("10.241.0.12")));
    let applied = lab.sync();
    assert_eq!(applied[0].fdb_added, 1, "{:?}", applied[0]);
    assert!(ping(&lab.ctrs[0].ns, ip("10.241.0.12")));
    assert_eq!(
        entries(
            &lab,
            0,
            vni,
            ip("10.241.0.12"),
            endpoint_mac(ip("10.241.0.12"))
        ),
        (Some(endpoint_mac(ip("10.241.0.12"))), true)
    );

    // Handed on again, to host 2 and a MAC of its own: the neighbour entry is replaced on
    // every other host, and a container that asks for it now reaches it at once.
    let i = lab
        .ctrs
        .iter()
        .position(|c| c.ip() == ip("10.241.0.12"))
        .unwrap();
    drop(lab.remove_ctr(i));
    let fresh_mac = [0x02, 0x6b, 0x6e, 0x77, 0, 0x12];
    lab.add_ctr(2, vni, "10.241.0.12/24", fresh_mac);
    let applied = lab.sync();
    for h in [0, 1] {
        assert_eq!(applied[h].neigh_replaced, 1, "host {h}: {:?}", applied[h]);
        assert_eq!(
            applied[h].neigh_removed, 0,
            "host {h}: replaced, not deleted"
        );
        assert_eq!(
            entries(&lab, h, vni, ip("10.241.0.12"), fresh_mac),
            (Some(fresh_mac), true),
            "host {h}"
        );
    }
    let newcomer = lab.add_ctr(0, vni, "10.241.0.30/24", endpoint_mac(ip("10.241.0.30")));
    lab.sync();
    assert!(ping(&lab.ctrs[newcomer].ns, ip("10.241.0.12")));
}

#[test]
fn two_vnis_are_isolated_in_l2_and_ip() {
    let mut lab = Lab::new(3);
    let (v1, v2) = (0x77_0101, 0x77_0102);
    lab.nets
        .push(vxlan_net("one", v1, "10.241.1.0/24", &[0, 1, 2]));
    lab.nets
        .push(vxlan_net("two", v2, "10.242.1.0/24", &[1, 2]));
    lab.sync();
    let m = |a: &str| endpoint_mac(ip(a));
    let a1 = lab.add_ctr(0, v1, "10.241.1.10/24", m("10.241.1.10"));
    lab.add_ctr(1, v1, "10.241.1.11/24", m("10.241.1.11"));
    let b2 = lab.add_ctr(1, v2, "10.242.1.11/24", m("10.242.1.11"));
    let c2 = lab.add_ctr(2, v2, "10.242.1.12/24", m("10.242.1.12"));
    lab.sync();
    lab.assert_all_pairs_ping(v1);
    lab.assert_all_pairs_ping(v2);

    // c2 (network two) also holds an address of network one's subnet. Over network two's
    // L2 it answers (the positive control: b2 with an on-link route)...
    sh(&lab.ctrs[c2].ns, "ip addr add 10.241.1.200/24 dev eth0");
    sh(&lab.ctrs[b2].ns, "ip route add 10.241.1.0/24 dev eth0");
    assert!(ping(&lab.ctrs[b2].ns, ip("10.241.1.200")));
    // ... but not over network one's, although host 2 has both networks.
    assert!(!ping(&lab.ctrs[a1].ns, ip("10.241.1.200")));
    // Nor does a1 reach network two's addresses on-link.
    sh(&lab.ctrs[a1].ns, "ip route add 10.242.1.0/24 dev eth0");
    assert!(!ping(&lab.ctrs[a1].ns, ip("10.242.1.12")));
    // Network one's tables on host 1 hold nothing of network two.
    let fdb = sh(
        &lab.hosts[1].ns,
        &format!("bridge fdb show dev {}", vxlan_name(v1)),
    );
    assert!(
        !fdb.contains(&libnet::netlink::link::format_mac(&m("10.242.1.12"))),
        "{fdb}"
    );
    assert!(!sh(
        &lab.hosts[1].ns,
        &format!("ip neigh show dev {}", bridge_name(v1))
    )
    .contains("10.242."));
}

#[test]
fn routed_mode_pings_across_hosts_without_vxlan() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0201;
    lab.nets.push(Net {
        id: "routed",
        vni,
        cidrs: vec!["10.243.0.0/16".parse().unwrap()],
        mode: Mode::Routed,
        members: (0..3)
            .map(|h| (h, vec![format!("10.243.{}.0/24", h + 1).parse().unwrap()]))
            .collect(),
    });
    for h in &lab.hosts {
        sh(&h.ns, "sysctl -qw net.ipv4.ip_forward=1");
    }
    let applied = lab.sync();
    assert!(
        applied.iter().all(|a| a.routes_replaced == 2),
        "{applied:?}"
    );
    for h in 0..3 {
        let a = format!("10.243.{}.5", h + 1);
        lab.add_ctr(h, vni, &format!("{a}/16"), endpoint_mac(ip(&a)));
    }
    lab.sync();
    lab.assert_all_pairs_ping(vni);
    let h0 = &lab.hosts[0].ns;
    let routes = sh(h0, "ip route show proto 107");
    assert!(
        routes.contains("10.243.2.0/24 via 10.76.0.2 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.243.3.0/24 via 10.76.0.3 dev eth0"),
        "{routes}"
    );
    assert!(!sh(h0, "ip link show").contains("knvx"));
    // The host answers its containers' ARP for addresses it routes to other hosts.
    let proxy = sh(
        h0,
        &format!("sysctl -n net.ipv4.conf.{}.proxy_arp", bridge_name(vni)),
    );
    assert_eq!(proxy.trim(), "1");

    // Host 2 leaves the network: its block's route goes everywhere, nothing else does.
    lab.ctrs.retain(|c| c.host != 2);
    lab.nets[0].members.retain(|(h, _)| *h != 2);
    lab.sync();
    let routes = sh(h0, "ip route show proto 107");
    assert!(!routes.contains("10.243.3.0/24"), "{routes}");
    assert!(routes.contains("10.243.2.0/24"), "{routes}");
    lab.assert_all_pairs_ping(vni);
}

#[test]
fn dual_stack_vxlan_pings_over_ipv4_and_ipv6_across_hosts() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0301;
    let mut net = vxlan_net("dual", vni, "10.241.3.0/24", &[0, 1, 2]);
    net.cidrs.push("fd00:6b6e:77::/64".parse().unwrap());
    lab.nets.push(net);
    lab.sync();
    for h in 0..3 {
        let v4 = format!("10.241.3.{}", h + 10);
        let v6 = format!("fd00:6b6e:77::{}/64", h + 10);
        lab.add_ctr_with(h, vni, &[&format!("{v4}/24"), &v6], endpoint_mac(ip(&v4)));
    }
    let applied = lab.sync();
    // Per remote container: one MAC (one remote, one bridge entry), two neighbours.
    assert_eq!(
        (
            applied[0].fdb_added,
            applied[0].port_added,
            applied[0].neigh_replaced
        ),
        (2, 2, 4),
        "{:?}",
        applied[0]
    );
    lab.assert_all_pairs_ping(vni);
    let gw = sh(
        &lab.hosts[1].ns,
        &format!("ip -br addr show dev {}", bridge_name(vni)),
    );
    assert!(
        gw.contains("fd00:6b6e:77::1/64") && gw.contains("10.241.3.1/24"),
        "{gw}"
    );
    let n = sh(
        &lab.hosts[1].ns,
        &format!("ip -6 neigh show dev {}", bridge_name(vni)),
    );
    assert!(
        n.contains("fd00:6b6e:77::10 lladdr 0a:58:0a:f1:03:0a PERMANENT"),
        "{n}"
    );
}

#[test]
fn a_thousand_remote_endpoints_sync_in_milliseconds() {
    use std::time::Instant;
    let lab = Lab::new(1);
    let me = &lab.hosts[0];
    let mut net = NetworkDesired {
        id: "big".into(),
        vni: 0x77_0401,
        subnets: vec![Subnet {
            cidr: "10.240.0.0/16".parse().unwrap(),
            gateway: Some(ip("10.240.0.1")),
        }],
        mode: Mode::Vxlan,
        underlay_ip: me.underlay,
        endpoints: Vec::new(),
        hosts: (0..20)
            .map(|h| RemoteHost {
                underlay_ip: ip(&format!("10.76.1.{}", h + 1)),
                blocks: vec![],
            })
            .collect(),
    };
    for i in 0..1000u32 {
        let a = ip(&format!("10.240.{}.{}", 1 + i / 200, 10 + i % 200));
        net.endpoints.push(RemoteEndpoint {
            ip: a,
            mac: Mac(endpoint_mac(a)),
            host: ip(&format!("10.76.1.{}", 1 + i % 20)),
        });
    }
    let t = Instant::now();
    let first = sync_network(&me.h, &net).unwrap();
    let full = t.elapsed();
    assert_eq!(
        (first.applied.fdb_added, first.applied.neigh_replaced),
        (1020, 1000)
    );
    let t = Instant::now();
    let idle = sync_network(&me.h, &net).unwrap();
    let converged = t.elapsed();
    assert_eq!(idle.applied, Applied::default());
    // One endpoint more: the work of a delta, plus the three dumps of the whole network.
    let a = ip("10.240.9.9");
    net.endpoints.push(RemoteEndpoint {
        ip: a,
        mac: Mac(endpoint_mac(a)),
        host: ip("10.76.1.1"),
    });
    let t = Instant::now();
    let one = sync_network(&me.h, &net).unwrap();
    let delta = t.elapsed();
    assert_eq!(one.applied.changes(), 3);
    // The same as a delta: no dump.
    let old = net.clone();
    let b = ip("10.240.9.10");
    net.endpoints.push(RemoteEndpoint {
        ip: b,
        mac: Mac(endpoint_mac(b)),
        host: ip("10.76.1.2"),
    });
    let t = Instant::now();
    let plan = plan_delta(&old, &net, &one.links);
    let planning = t.elapsed();
    assert_eq!(plan.neigh_replace.len(), 1);
    let t = Instant::now();
    let d = apply_delta(&me.h, &one.links, &old, &net).unwrap();
    let by_delta = t.elapsed();
    assert_eq!(d.changes(), 3);
    assert_eq!(
        sync_network(&me.h, &net).unwrap().applied,
        Applied::default()
    );
    eprintln!(
        "1,000 remote endpoints on 20 hosts: first sync {full:?}, converged sync \
         {converged:?}, one endpoint more by sync {delta:?}, by apply_delta {by_delta:?} (planning \
         {planning:?})"
    );
    assert!(converged.as_millis() < 200, "{converged:?}");
    assert!(delta.as_millis() < 200, "{delta:?}");
    assert!(by_delta.as_millis() < 50, "{by_delta:?}");
}
