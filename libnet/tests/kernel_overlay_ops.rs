//! Kernel tests of the netlink operations the overlay needs (vxlan links, FDB remotes,
//! neighbour entries, bridge port flags), of one handle shared by threads, and of event
//! subscription; each in fresh namespaces, read back with `ip`/`bridge` as well as our dumps.
//! Run as root with `cargo test -p libnet --features root-tests --test kernel_overlay_ops`.
#![cfg(feature = "root-tests")]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::TestNs;
use libnet::netlink::events::{Event, Groups, Subscription};
use libnet::netlink::link::{format_mac, NewLink, VXLAN_PORT};
use libnet::netlink::neigh::NUD_PERMANENT;
use libnet::netlink::{BrportFlags, FdbEntry, Handle, Link, Neigh, VethPeer, Vxlan};
use libnet::{HasKind, Kind};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const MAC_A: [u8; 6] = [0x02, 0x6b, 0x6e, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x6b, 0x6e, 0, 0, 0x0b];

/// An underlay in `ns`: veth `u0` (10.77.0.1/24, up) with its peer `u1` beside it.
fn underlay(h: &Handle) -> Link {
    let peer = VethPeer {
        name: "u1",
        ..Default::default()
    };
    h.add_veth("u0", None, None, &peer).unwrap();
    let u0 = h.link_by_name("u0").unwrap();
    let u1 = h.link_by_name("u1").unwrap();
    h.add_addr(u0.index, "10.77.0.1/24".parse().unwrap(), false)
        .unwrap();
    h.set_up(u0.index, true).unwrap();
    h.set_up(u1.index, true).unwrap();
    u0
}

fn vxlan_conf(vni: u32, dev: u32) -> Vxlan {
    Vxlan {
        vni,
        local: Some(ip("10.77.0.1")),
        port: VXLAN_PORT,
        learning: false,
        link: Some(dev),
    }
}

/// `vx` with `conf`, mtu 1400: returns the link as our dump reads it.
fn add_vxlan(h: &Handle, name: &str, conf: &Vxlan) -> Link {
    let l = NewLink {
        name,
        mtu: Some(1400),
        mac: Some(MAC_A),
        netns_fd: None,
    };
    h.add_vxlan(&l, conf).unwrap();
    h.link_by_name(name).unwrap()
}

#[test]
fn vxlan_link_round_trip() {
    let ns = TestNs::new("vx");
    let h = Handle::new_in(&ns.ns).unwrap();
    let u0 = underlay(&h);
    let conf = vxlan_conf(4242, u0.index);
    let vx = add_vxlan(&h, "vx0", &conf);
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    assert_eq!(vx.vxlan, Some(conf));
    assert_eq!(vx.mtu, 1400);
    assert_eq!(vx.mac, MAC_A.to_vec());
    let shown = ns.sh("ip -d link show vx0");
    for want in [
        "vxlan id 4242",
        "local 10.77.0.1",
        "dev u0",
        "dstport 4789",
        "nolearning",
        "mtu 1400",
        &format_mac(&MAC_A),
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    // The same name again is Exists; a learning vxlan reads back as learning.
    let l = NewLink {
        name: "vx0",
        ..Default::default()
    };
    assert_eq!(h.add_vxlan(&l, &conf).unwrap_err().kind(), Kind::Exists);
    let learning = Vxlan {
        learning: true,
        local: None,
        link: None,
        port: 8472,
        ..conf
    };
    let vx1 = add_vxlan(&h, "vx1", &learning);
    assert_eq!(vx1.vxlan, Some(learning));
    let shown = ns.sh("ip -d link show vx1");
    assert!(!shown.contains("nolearning"), "{shown}");
    assert!(shown.contains("dstport 8472"), "{shown}");
}

/// Our dump of `index`'s remotes (entries with a `dst`).
fn remotes(h: &Handle, index: u32) -> Vec<FdbEntry> {
    let mut v: Vec<FdbEntry> = h
        .fdb(index)
        .unwrap()
        .into_iter()
        .filter(|e| e.dst.is_some())
        .collect();
    v.sort();
    v
}

#[test]
fn fdb_append_replace_del_read_back_by_bridge_and_our_dump() {
    let ns = TestNs::new("fdb");
    let h = Handle::new_in(&ns.ns).unwrap();
    let u0 = underlay(&h);
    let vx = add_vxlan(&h, "vx0", &vxlan_conf(10, u0.index));
    let other = add_vxlan(&h, "vx9", &vxlan_conf(11, u0.index));
    let b2 = FdbEntry::vxlan_remote(vx.index, MAC_B, ip("10.77.0.2"));
    let b3 = FdbEntry::vxlan_remote(vx.index, MAC_B, ip("10.77.0.3"));
    let flood2 = FdbEntry::vxlan_remote(vx.index, [0; 6], ip("10.77.0.2"));
    let flood3 = FdbEntry::vxlan_remote(vx.index, [0; 6], ip("10.77.0.3"));
    let elsewhere = FdbEntry::vxlan_remote(other.index, MAC_B, ip("10.77.0.4"));
    for e in [&b2, &flood2, &flood3, &elsewhere] {
        h.append_fdb(e).unwrap();
    }
    // The same remote again is success and adds nothing; so is a second remote for a unicast
    // MAC (the kernel keeps the first).
    h.append_fdb(&b2).unwrap();
    h.append_fdb(&b3).unwrap();

    let shown = ns.sh("bridge fdb show dev vx0");
    let b = format_mac(&MAC_B);
    for want in [
        format!("{b} dst 10.77.0.2 self permanent"),
        "00:00:00:00:00:00 dst 10.77.0.2 self permanent".to_string(),
        "00:00:00:00:00:00 dst 10.77.0.3 self permanent".to_string(),
    ] {
        assert_eq!(shown.matches(&want).count(), 1, "{want:?} in {shown}");
    }
    assert!(!shown.contains(&format!("{b} dst 10.77.0.3")), "{shown}");
    assert!(!shown.contains("10.77.0.4"), "{shown}");

    let ours = remotes(&h, vx.index);
    let mut want = [b2.clone(), flood2.clone(), flood3.clone()];
    want.sort();
    assert_eq!(
        ours.iter().map(FdbEntry::key).collect::<Vec<_>>(),
        want.iter().map(FdbEntry::key).collect::<Vec<_>>()
    );
    assert!(
        ours.iter().all(|e| e.is_self && e.is_permanent()),
        "{ours:?}"
    );
    assert!(h.fdb(vx.index).unwrap().iter().all(|e| e.index == vx.index));
    assert_eq!(
        remotes(&h, other.index)
            .iter()
            .map(FdbEntry::key)
            .collect::<Vec<_>>(),
        vec![elsewhere.key()]
    );

    // replace moves the unicast MAC; a flood entry's remotes cannot be replaced.
    h.replace_fdb(&b3).unwrap();
    let shown = ns.sh("bridge fdb show dev vx0");
    assert!(
        shown.contains(&format!("{b} dst 10.77.0.3 self permanent")),
        "{shown}"
    );
    assert!(!shown.contains(&format!("{b} dst 10.77.0.2")), "{shown}");
    let err = h.replace_fdb(&flood2).unwrap_err();
    // The kernel's own reason comes with the error (extended ack).
    assert!(
        err.to_string()
            .contains("Cannot replace non-unicast fdb entries"),
        "{err}"
    );

    // del of one flood remote keeps the other.
    h.del_fdb(&flood3).unwrap();
    let shown = ns.sh("bridge fdb show dev vx0");
    assert!(
        !shown.contains("00:00:00:00:00:00 dst 10.77.0.3"),
        "{shown}"
    );
    assert!(shown.contains("00:00:00:00:00:00 dst 10.77.0.2"), "{shown}");
    let keys: Vec<_> = remotes(&h, vx.index).iter().map(FdbEntry::key).collect();
    assert!(
        !keys.contains(&flood3.key()) && keys.contains(&b3.key()),
        "{keys:?}"
    );
    // Tolerant: deleting it again, or on a link that is gone.
    h.del_fdb(&flood3).unwrap();
    h.del_link(other.index).unwrap();
    h.del_fdb(&elsewhere).unwrap();
}

#[test]
fn sync_fdb_on_the_kernel_reaches_the_desired_remotes() {
    use libnet::netlink::ops::sync_fdb;
    let ns = TestNs::new("sfdb");
    let h = Handle::new_in(&ns.ns).unwrap();
    let u0 = underlay(&h);
    let vx = add_vxlan(&h, "vx0", &vxlan_conf(12, u0.index));
    for e in [
        FdbEntry::vxlan_remote(vx.index, MAC_A, ip("10.77.0.9")),
        FdbEntry::vxlan_remote(vx.index, MAC_B, ip("10.77.0.9")),
        FdbEntry::vxlan_remote(vx.index, [0; 6], ip("10.77.0.9")),
    ] {
        h.append_fdb(&e).unwrap();
    }
    let mut want = vec![
        FdbEntry::vxlan_remote(vx.index, MAC_A, ip("10.77.0.2")),
        FdbEntry::vxlan_remote(vx.index, [0; 6], ip("10.77.0.2")),
        FdbEntry::vxlan_remote(vx.index, [0; 6], ip("10.77.0.3")),
    ];
    want.sort();
    let plan = sync_fdb(&h, vx.index, &want).unwrap();
    assert_eq!(
        (plan.append.len(), plan.replace.len(), plan.del.len()),
        (2, 1, 2)
    );
    let got: Vec<_> = remotes(&h, vx.index).iter().map(FdbEntry::key).collect();
    assert_eq!(got, want.iter().map(FdbEntry::key).collect::<Vec<_>>());
    assert!(!ns.sh("bridge fdb show dev vx0").contains("10.77.0.9"));
    // Converged: nothing more to do.
    let again = sync_fdb(&h, vx.index, &want).unwrap();
    assert_eq!(again, Default::default());
}

#[test]
fn neigh_add_replace_del_read_back_by_ip_and_our_dump() {
    let ns = TestNs::new("ngh");
    let h = Handle::new_in(&ns.ns).unwrap();
    let u0 = underlay(&h);
    let u1 = h.link_by_name("u1").unwrap();
    let v4 = Neigh::permanent(u0.index, ip("10.77.0.9"), MAC_A);
    let v6 = Neigh::permanent(u0.index, ip("fd00:77::9"), MAC_A);
    let on_u1 = Neigh::permanent(u1.index, ip("10.77.0.8"), MAC_A);
    h.add_neigh(&v4).unwrap();
    h.add_neigh(&v6).unwrap();
    h.add_neigh(&on_u1).unwrap();
    assert_eq!(h.add_neigh(&v4).unwrap_err().kind(), Kind::Exists);

    let replaced = Neigh {
        mac: Some(MAC_B),
        ..v4.clone()
    };
    h.replace_neigh(&replaced).unwrap();
    h.replace_neigh(&replaced).unwrap(); // idempotent
    let shown = ns.sh("ip neigh show dev u0");
    let b = format_mac(&MAC_B);
    assert!(
        shown.contains(&format!("10.77.0.9 lladdr {b} PERMANENT")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "fd00:77::9 lladdr {} PERMANENT",
            format_mac(&MAC_A)
        )),
        "{shown}"
    );
    assert!(!shown.contains("10.77.0.8"), "{shown}");

    // The kernel adds entries of its own (NOARP ones for multicast groups): compare ours.
    let permanent = |i: u32| -> Vec<Neigh> {
        let mut v: Vec<Neigh> = h
            .neighs(i)
            .unwrap()
            .into_iter()
            .filter(|n| n.state & NUD_PERMANENT != 0)
            .collect();
        v.sort();
        v
    };
    let ours = permanent(u0.index);
    let mut want = vec![replaced.clone(), v6.clone()];
    want.sort();
    assert_eq!(ours, want);
    assert!(h
        .neighs(u0.index)
        .unwrap()
        .iter()
        .all(|n| n.index == u0.index));
    assert_eq!(permanent(u1.index), vec![on_u1]);

    h.del_neigh(&replaced).unwrap();
    h.del_neigh(&replaced).unwrap(); // tolerant
    let shown = ns.sh("ip neigh show dev u0");
    assert!(!shown.contains("10.77.0.9"), "{shown}");
    assert_eq!(permanent(u0.index), vec![v6]);
    // A neighbour without a link-layer address is refused before the kernel sees it.
    let bad = Neigh {
        mac: None,
        ..replaced
    };
    assert_eq!(h.replace_neigh(&bad).unwrap_err().kind(), Kind::Invalid);
}

#[test]
fn bridge_port_flags_read_back_by_bridge_and_our_dump() {
    let ns = TestNs::new("bp");
    let h = Handle::new_in(&ns.ns).unwrap();
    let u0 = underlay(&h);
    let vx = add_vxlan(&h, "vx0", &vxlan_conf(20, u0.index));
    // Not a bridge port yet: the kernel refuses.
    let off = BrportFlags {
        learning: Some(false),
        neigh_suppress: Some(true),
    };
    assert!(h.set_brport_flags(vx.index, &off).is_err());

    h.add_bridge("br0", None, None).unwrap();
    let br = h.link_by_name("br0").unwrap();
    h.set_master(vx.index, br.index).unwrap();
    let vx = h.link_by_index(vx.index).unwrap();
    assert_eq!((vx.learning, vx.neigh_suppress), (Some(true), Some(false)));

    h.set_brport_flags(vx.index, &off).unwrap();
    let shown = ns.sh("bridge -d link show dev vx0");
    assert!(shown.contains("learning off"), "{shown}");
    assert!(shown.contains("neigh_suppress on"), "{shown}");
    let l = h.link_by_index(vx.index).unwrap();
    assert_eq!((l.learning, l.neigh_suppress), (Some(false), Some(true)));

    // One flag at a time leaves the other alone.
    h.set_brport_flags(
        vx.index,
        &BrportFlags {
            learning: Some(true),
            neigh_suppress: None,
        },
    )
    .unwrap();
    let shown = ns.sh("bridge -d link show dev vx0");
    assert!(shown.contains("learning on"), "{shown}");
    assert!(shown.contains("neigh_suppress on"), "{shown}");
    let l = h.link_by_index(vx.index).unwrap();
    assert_eq!((l.learning, l.neigh_suppress), (Some(true), Some(true)));
}

#[test]
fn two_threads_hammering_one_handle_get_their_own_answers() {
    const ROUNDS: u32 = 2_000;
    let ns = TestNs::new("ham");
    let h = Handle::new_in(&ns.ns).unwrap();
    // One link per thread, each with one address of its own.
    let mut mine = Vec::new();
    for (t, name) in ["ta0", "tb0"].iter().enumerate() {
        let peer_name = format!("{}1", &name[..2]);
        let peer = VethPeer {
            name: &peer_name,
            ..Default::default()
        };
        h.add_veth(name, None, None, &peer).unwrap();
        let l = h.link_by_name(name).unwrap();
        let net: ipnet::IpNet = format!("10.78.{t}.1/24").parse().unwrap();
        h.add_addr(l.index, net, false).unwrap();
        mine.push((l, net));
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, (link, net)) in mine.iter().enumerate() {
            let h = &h;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    // exec: each thread writes its own MTU series ...
                    let mtu = 1300 + (i % 97) + 100 * t as u32;
                    h.set_mtu(link.index, mtu).unwrap();
                    // get: ... and must read back exactly its own link and value.
                    let got = h.link_by_name(&link.name).unwrap();
                    assert_eq!(
                        (got.index, got.mtu),
                        (link.index, mtu),
                        "thread {t} round {i}"
                    );
                    // dump: only this link's address.
                    let addrs = h.addrs(link.index).unwrap();
                    assert_eq!(addrs.len(), 1, "thread {t} round {i}: {addrs:?}");
                    assert_eq!((addrs[0].index, addrs[0].net), (link.index, *net));
                }
            });
        }
    });
    // 12,000 requests; a hang would have hit the handle's 5 s timeout as an error instead.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    for (link, _) in &mine {
        let mtu = h.link_by_index(link.index).unwrap().mtu;
        assert!((1300..1600).contains(&mtu), "{mtu}");
    }
}

#[test]
fn a_short_timeout_is_accepted_and_requests_still_answer() {
    let ns = TestNs::new("to");
    let h = Handle::new_in(&ns.ns).unwrap();
    h.set_timeout(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(h.link_by_name("lo").unwrap().name, "lo");
    h.set_timeout(None).unwrap();
    assert!(!h.links().unwrap().is_empty());
}

/// The first event matching `want` within 5 s; panics (listing what came) otherwise.
fn wait_for(sub: &mut Subscription, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match sub.recv(Some(left)).unwrap() {
            Some(e) if want(&e) => return e,
            Some(e) => seen.push(e),
            None => break,
        }
    }
    panic!("no {what} within 5 s; saw {seen:#?}");
}

#[test]
fn subscription_sees_links_addresses_fdb_and_neighbours_come_and_go() {
    let ns = TestNs::new("ev");
    let h = Handle::new_in(&ns.ns).unwrap();
    let mut sub = Subscription::new_in(&ns.ns, Groups::ALL).unwrap();
    // Nothing happens: the wait ends empty, in about the time asked.
    let t = Instant::now();
    assert_eq!(sub.recv(Some(Duration::from_millis(50))).unwrap(), None);
    assert!(
        t.elapsed() >= Duration::from_millis(45),
        "{:?}",
        t.elapsed()
    );

    let u0 = underlay(&h);
    let e = wait_for(
        &mut sub,
        "u0 appearing",
        |e| matches!(e, Event::LinkNew(l) if l.name == "u0"),
    );
    let Event::LinkNew(l) = e else { unreachable!() };
    assert_eq!(l.index, u0.index);
    wait_for(
        &mut sub,
        "u0's address",
        |e| matches!(e, Event::AddrNew(a) if a.index == u0.index && a.net.to_string() == "10.77.0.1/24"),
    );

    let vx = add_vxlan(&h, "vx0", &vxlan_conf(30, u0.index));
    let remote = FdbEntry::vxlan_remote(vx.index, MAC_B, ip("10.77.0.2"));
    h.append_fdb(&remote).unwrap();
    let Event::FdbNew(f) = wait_for(
        &mut sub,
        "the fdb remote",
        |e| matches!(e, Event::FdbNew(f) if f.index == vx.index && f.mac == MAC_B),
    ) else {
        unreachable!()
    };
    assert_eq!(f.dst, Some(ip("10.77.0.2")));
    assert!(f.is_self && f.is_permanent(), "{f:?}");
    h.del_fdb(&remote).unwrap();
    wait_for(
        &mut sub,
        "the fdb remote going",
        |e| matches!(e, Event::FdbDel(f) if f.key() == remote.key()),
    );

    let n = Neigh::permanent(vx.index, ip("10.244.9.0"), MAC_B);
    h.replace_neigh(&n).unwrap();
    wait_for(
        &mut sub,
        "the neighbour",
        |e| matches!(e, Event::NeighNew(x) if *x == n),
    );
    h.del_neigh(&n).unwrap();
    wait_for(
        &mut sub,
        "the neighbour going",
        |e| matches!(e, Event::NeighDel(x) if x.ip == n.ip && x.index == n.index),
    );

    h.del_link(vx.index).unwrap();
    let Event::LinkDel(l) = wait_for(
        &mut sub,
        "vx0 going",
        |e| matches!(e, Event::LinkDel(l) if l.index == vx.index),
    ) else {
        unreachable!()
    };
    assert_eq!(l.name, "vx0");
}

#[test]
fn an_overrun_subscription_says_events_were_lost() {
    let ns = TestNs::new("lost");
    let h = Handle::new_in(&ns.ns).unwrap();
    let mut sub = Subscription::new_in(&ns.ns, Groups::ALL).unwrap();
    sub.set_rx_buf(1024).unwrap();
    // Far more notifications than a few KiB hold, none read meanwhile.
    for i in 0..40 {
        let (a, b) = (format!("lo{i}a"), format!("lo{i}b"));
        let peer = VethPeer {
            name: &b,
            ..Default::default()
        };
        h.add_veth(&a, None, None, &peer).unwrap();
    }
    wait_for(&mut sub, "the overrun", |e| *e == Event::Lost);
    // Until the queue is read empty the kernel keeps dropping without saying so again: drain
    // it, then the subscription goes on (with room again for what follows).
    sub.set_rx_buf(1 << 20).unwrap();
    while sub.recv(Some(Duration::from_millis(20))).unwrap().is_some() {}
    let l = h.link_by_name("lo0a").unwrap();
    h.del_link(l.index).unwrap();
    wait_for(
        &mut sub,
        "lo0a going",
        |e| matches!(e, Event::LinkDel(x) if x.index == l.index),
    );
}
