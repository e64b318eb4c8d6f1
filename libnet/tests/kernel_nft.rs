//! Kernel tests of the nft layer, each in fresh namespaces of its own, with real traffic where it
//! matters. Run as root: `cargo test -p libnet --features root-tests --test kernel_nft`.
#![cfg(feature = "root-tests")]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{att, nft, TestNs, TmpDir};
use ipnet::IpNet;
use libnet::nft::{
    Attachment, Feature, IngressPolicy, NftApply, NftCli, PortMapping, RawPortMapping,
};
use libnet::{HasKind, Kind};

fn pm(h: i64, c: i64, host_ip: &str) -> PortMapping {
    RawPortMapping {
        host_port: h,
        container_port: c,
        protocol: "tcp".into(),
        host_ip: host_ip.into(),
    }
    .validate()
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Join `a` and `b` by a veth: `a_addr` on a's end, `b_addr` on b's end (CIDR notation).
fn veth(a: &TestNs, a_if: &str, a_addr: &str, b: &TestNs, b_if: &str, b_addr: &str) {
    a.sh(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {} && ip addr add {a_addr} dev {a_if} && ip link set {a_if} up",
        b.name
    ));
    b.sh(&format!(
        "ip addr add {b_addr} dev {b_if} && ip link set {b_if} up"
    ));
}

/// A TCP listener in `ns` that answers each connection with the peer address it saw.
fn echo_peer_server(ns: &TestNs, addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = ns
        .ns
        .run_in(move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let peer = s.peer_addr().unwrap().ip().to_string();
            let _ = s.write_all(peer.as_bytes());
        }
    });
}

/// Connect from inside `ns` and return what the server said (the peer address it saw).
fn connect_from(ns: &TestNs, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.ns
        .run_in(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
            Ok(buf)
        })
        .unwrap()
}

/// host H between an outside client X (10.244.8.0/24) and a container C (10.244.9.0/24).
struct Topo {
    h: TestNs,
    x: TestNs,
    c: TestNs,
}

fn topo() -> Topo {
    let h = TestNs::new("h");
    let x = TestNs::new("x");
    let c = TestNs::new("c");
    veth(&h, "kn-x", "10.244.8.1/24", &x, "eth0", "10.244.8.2/24");
    veth(&h, "kn-c", "10.244.9.1/24", &c, "eth0", "10.244.9.2/24");
    c.sh("ip route add default via 10.244.9.1");
    h.sh("sysctl -qw net.ipv4.ip_forward=1");
    Topo { h, x, c }
}

#[test]
fn portmap_dnat_real_traffic_and_del() {
    let t = topo();
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let a = att("pm1");
    echo_peer_server(&t.c, "10.244.9.2:8080");
    // X has no route to the container subnet: only DNAT (prerouting) can reach it.
    let maps = [pm(18080, 8080, "")];
    let cips = [ip("10.244.9.2")];
    t.h.ns
        .run_in(|| nft.ensure_portmap(&a, &maps, &cips))
        .unwrap()
        .unwrap();
    t.h.ns
        .run_in(|| nft.check_portmap(&a, &maps, &cips))
        .unwrap()
        .unwrap();
    assert_eq!(
        connect_from(&t.x, "10.244.8.1:18080").unwrap(),
        "10.244.8.2"
    );
    // The host itself through the output chain, and from 127.0.0.1 with route_localnet.
    assert!(connect_from(&t.h, "10.244.8.1:18080").is_ok());
    let key = libnet::nft::route_localnet_key("kn-c");
    t.h.ns
        .run_in(|| libnet::sysctl::set(&key, "1"))
        .unwrap()
        .unwrap();
    assert_eq!(connect_from(&t.h, "127.0.0.1:18080").unwrap(), "10.244.9.1");
    // Hairpin: the container reaches its own mapped port, masqueraded to the host side.
    assert_eq!(
        connect_from(&t.c, "10.244.8.1:18080").unwrap(),
        "10.244.9.1"
    );

    t.h.ns.run_in(|| nft.del_portmap(&a)).unwrap().unwrap();
    assert!(t.h.knit_elems("inet", "pm4_any").is_empty());
    assert!(connect_from(&t.x, "10.244.8.1:18080").is_err());
    let e =
        t.h.ns
            .run_in(|| nft.check_portmap(&a, &maps, &cips))
            .unwrap();
    assert_eq!(e.unwrap_err().kind(), Kind::NotFound);
    // Idempotent DEL.
    t.h.ns.run_in(|| nft.del_portmap(&a)).unwrap().unwrap();
}

#[test]
fn portmap_v6_dnat_real_traffic() {
    let t = topo();
    t.h.sh("ip addr add fd00:6b6e:8::1/64 dev kn-x nodad && ip addr add fd00:6b6e:9::1/64 dev kn-c nodad && sysctl -qw net.ipv6.conf.all.forwarding=1");
    t.x.sh("ip addr add fd00:6b6e:8::2/64 dev eth0 nodad");
    t.c.sh("ip addr add fd00:6b6e:9::2/64 dev eth0 nodad && ip -6 route add default via fd00:6b6e:9::1");
    echo_peer_server(&t.c, "[fd00:6b6e:9::2]:8082");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let cips = [ip("10.244.9.2"), ip("fd00:6b6e:9::2")];
    let maps = [pm(18082, 8082, "")];
    t.h.ns
        .run_in(|| nft.ensure_portmap(&att("v6"), &maps, &cips))
        .unwrap()
        .unwrap();
    // Fresh v6 links are still settling (link-local DAD, neighbour discovery): the very first
    // SYN can be lost, so allow a few attempts.
    let retry = |ns: &TestNs, addr: &str| {
        (0..5)
            .find_map(|_| {
                connect_from(ns, addr)
                    .map_err(|e| eprintln!("v6 connect: {e}"))
                    .ok()
            })
            .expect("connect over v6")
    };
    let got = retry(&t.x, "[fd00:6b6e:8::1]:18082");
    assert_eq!(got, "fd00:6b6e:8::2");
    // Hairpin over v6 too.
    assert_eq!(retry(&t.c, "[fd00:6b6e:8::1]:18082"), "fd00:6b6e:9::1");
}

#[test]
fn many_mappings_in_one_call() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let a = att("many");
    let maps: Vec<PortMapping> = (0..500).map(|i| pm(22000 + i, 80, "")).collect();
    let cips = [ip("10.244.15.2")];
    h.ns.run_in(|| nft.ensure_portmap(&a, &maps, &cips))
        .unwrap()
        .unwrap();
    assert_eq!(h.knit_elems("inet", "pm4_any").len(), 500);
    h.ns.run_in(|| nft.check_portmap(&a, &maps, &cips))
        .unwrap()
        .unwrap();
    h.ns.run_in(|| nft.del_portmap(&a)).unwrap().unwrap();
    assert!(h.knit_elems("inet", "pm4_any").is_empty());
}

#[test]
fn portmap_host_ip_specific_and_conflict() {
    let t = topo();
    let dir = TmpDir::new();
    let nft = nft(&dir);
    echo_peer_server(&t.c, "10.244.9.2:8081");
    let maps = [pm(18081, 8081, "10.244.8.1")];
    let cips = [ip("10.244.9.2"), ip("fd00:6b6e:9::2")];
    let run = |a: &Attachment, m: &[PortMapping]| {
        t.h.ns.run_in(|| nft.ensure_portmap(a, m, &cips)).unwrap()
    };
    run(&att("pm2"), &maps).unwrap();
    assert_eq!(
        connect_from(&t.x, "10.244.8.1:18081").unwrap(),
        "10.244.8.2"
    );
    // The same host port for another container is refused, and leaves nothing behind.
    let other = [pm(18081, 9999, "10.244.8.1")];
    let err = run(&att("pm3"), &other).unwrap_err();
    assert_eq!(err.kind(), Kind::Exists, "{err}");
    assert!(dir_has(&dir, "pm3").is_empty());
    assert_eq!(t.h.knit_elems("inet", "pm4_ip").len(), 1);
    // CHECK notices a mapping whose target was changed behind our back.
    let check = || {
        t.h.ns
            .run_in(|| nft.check_portmap(&att("pm2"), &maps, &cips))
            .unwrap()
    };
    check().unwrap();
    t.h.sh("nft flush map inet knit pm4_ip; nft add element inet knit pm4_ip '{ 10.244.8.1 . tcp . 18081 : 10.244.9.3 . 8081 }'");
    assert_eq!(check().unwrap_err().kind(), Kind::NotFound);
}

fn dir_has(dir: &TmpDir, cid: &str) -> Vec<PathBuf> {
    let id = att(cid).id();
    std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(&id))
        .collect()
}

#[test]
fn masquerade_real_traffic() {
    let t = topo();
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let a = att("mq1");
    echo_peer_server(&t.x, "10.244.8.2:9090");
    let ips: Vec<IpNet> = vec!["10.244.9.2/24".parse().unwrap()];
    // Without masquerade X cannot answer (no route back to 10.244.9.0/24).
    assert!(connect_from(&t.c, "10.244.8.2:9090").is_err());
    t.h.ns
        .run_in(|| nft.ensure_masq(&a, &ips))
        .unwrap()
        .unwrap();
    t.h.ns.run_in(|| nft.check_masq(&a, &ips)).unwrap().unwrap();
    assert_eq!(connect_from(&t.c, "10.244.8.2:9090").unwrap(), "10.244.8.1");
    // Traffic inside its own subnet keeps its source.
    echo_peer_server(&t.h, "10.244.9.1:9091");
    assert_eq!(connect_from(&t.c, "10.244.9.1:9091").unwrap(), "10.244.9.2");
    let comment = t.h.knit_elems("inet", "masq4")[0]["elem"]["comment"].clone();
    assert!(comment
        .as_str()
        .unwrap()
        .starts_with(&format!("knit:{}", a.id())));
    t.h.ns.run_in(|| nft.del_masq(&a)).unwrap().unwrap();
    assert!(
        t.h.knit_elems("inet", "masq4").is_empty()
            && t.h.knit_elems("inet", "masq_skip4").is_empty()
    );
}

#[test]
fn del_tolerates_elements_or_table_already_gone() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let (a, b) = (att("gone1"), att("gone2"));
    let ips: Vec<IpNet> = vec![
        "10.244.9.2/24".parse().unwrap(),
        "fd00:6b6e:9::2/64".parse().unwrap(),
    ];
    let run = |f: &(dyn Fn() -> Result<(), libnet::nft::NftError> + Sync)| h.ns.run_in(f).unwrap();
    run(&|| nft.ensure_masq(&a, &ips)).unwrap();
    run(&|| nft.ensure_firewall(&b, "knbr0", &[ip("10.244.9.3")], IngressPolicy::SameBridge))
        .unwrap();
    // Another attachment cannot take a's elements, and its DEL leaves them alone.
    let thief = att("thief");
    let e = run(&|| nft.ensure_masq(&thief, &ips)).unwrap_err();
    assert_eq!(e.kind(), Kind::Exists, "{e}");
    run(&|| nft.del_masq(&thief)).unwrap();
    run(&|| nft.check_masq(&a, &ips)).unwrap();
    // Someone removed a's elements behind our back: DEL still succeeds and clears its state.
    h.sh("nft flush set inet knit masq4; nft flush set inet knit masq_skip6");
    run(&|| nft.del_masq(&a)).unwrap();
    assert!(nft.state().read(&a, Feature::Masq).unwrap().is_none());
    assert!(
        h.knit_elems("inet", "masq_skip4").is_empty() && h.knit_elems("inet", "masq6").is_empty()
    );
    // The whole table is gone (e.g. a reboot without the state dir being cleared).
    h.sh("nft delete table inet knit");
    run(&|| nft.del_firewall(&b)).unwrap();
    run(&|| nft.del_firewall(&b)).unwrap();
}

#[test]
fn ensure_again_replaces_the_attachments_elements() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let a = att("re1");
    let cips = [ip("10.244.14.2"), ip("fd00:6b6e:14::2")];
    let run = |m: &[PortMapping]| h.ns.run_in(|| nft.ensure_portmap(&a, m, &cips)).unwrap();
    run(&[pm(21000, 80, ""), pm(21001, 81, "")]).unwrap();
    assert_eq!(h.knit_elems("inet", "pm4_any").len(), 2);
    assert_eq!(h.knit_elems("inet", "pm6_any").len(), 2);
    run(&[pm(21001, 81, "")]).unwrap();
    assert_eq!(h.knit_elems("inet", "pm4_any").len(), 1);
    assert_eq!(h.knit_elems("inet", "pm6_any").len(), 1);
    run(&[]).unwrap();
    assert!(
        h.knit_elems("inet", "pm4_any").is_empty() && h.knit_elems("inet", "hairpin6").is_empty()
    );
    assert!(nft.state().read(&a, Feature::Portmap).unwrap().is_none());
}

#[test]
fn concurrent_adds_make_one_skeleton() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    std::thread::scope(|s| {
        for i in 0..8 {
            let (h, dir) = (&h, &dir);
            s.spawn(move || {
                let nft = nft(dir);
                let a = att(&format!("conc{i}"));
                let ips: Vec<IpNet> = vec![format!("10.244.10.{}/24", i + 2).parse().unwrap()];
                h.ns.run_in(|| nft.ensure_masq(&a, &ips)).unwrap().unwrap();
            });
        }
    });
    assert_eq!(h.knit_elems("inet", "masq4").len(), 8);
    let skeleton_rules = libnet::nft::plan::SKELETON
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty()
                && !l.starts_with("type ")
                && !l.starts_with("typeof ")
                && !l.starts_with("flags ")
                && !l.starts_with("comment ")
                && !l.ends_with('{')
                && l != "}"
        })
        .count();
    assert_eq!(
        h.knit_objects("inet")
            .iter()
            .filter(|o| o.get("rule").is_some())
            .count(),
        skeleton_rules,
        "fixed rules made exactly once"
    );
}

#[test]
fn gc_removes_invalid_attachments_and_leaked_elements() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let (keep, stale, leaked) = (att("gc-keep"), att("gc-stale"), att("gc-leak"));
    let other = Attachment::new("knt-other", "gc-other", "eth0");
    let cips = |n: u8| [IpAddr::from([10, 244, 11, n])];
    h.ns.run_in(|| {
        nft.ensure_portmap(&keep, &[pm(20001, 80, "")], &cips(2))
            .unwrap();
        nft.ensure_portmap(&stale, &[pm(20002, 80, "")], &cips(3))
            .unwrap();
        nft.ensure_portmap(&leaked, &[pm(20003, 80, "")], &cips(4))
            .unwrap();
        nft.ensure_portmap(&other, &[pm(20004, 80, "")], &cips(5))
            .unwrap();
    })
    .unwrap();
    // Lose the state file of `leaked`: only its element comments remain.
    for p in dir_has(&dir, "gc-leak") {
        std::fs::remove_file(p).unwrap();
    }
    h.ns.run_in(|| nft.gc("knt-net", std::slice::from_ref(&keep)))
        .unwrap()
        .unwrap();
    let left = h.knit_elems("inet", "pm4_any");
    assert_eq!(left.len(), 2, "keep's and the other network's: {left:?}");
    assert_eq!(h.knit_elems("inet", "hairpin4").len(), 2);
    assert!(nft
        .state()
        .read(&other, Feature::Portmap)
        .unwrap()
        .is_some());
    assert!(nft
        .state()
        .read(&stale, Feature::Portmap)
        .unwrap()
        .is_none());
    assert!(nft.state().read(&keep, Feature::Portmap).unwrap().is_some());
}

#[test]
fn firewall_same_bridge_isolation_traffic() {
    // Two bridges in H, one container on each, both same-bridge: they cannot reach each other;
    // the host still reaches both; with `open` they can.
    let h = TestNs::new("h");
    let (c1, c2) = (TestNs::new("c"), TestNs::new("c"));
    h.sh("ip link add knbr1 type bridge && ip link add knbr2 type bridge && ip addr add 10.244.12.1/24 dev knbr1 && ip addr add 10.244.13.1/24 dev knbr2 && ip link set knbr1 up && ip link set knbr2 up && sysctl -qw net.ipv4.ip_forward=1");
    veth(&h, "kn-c1", "10.244.99.1/32", &c1, "eth0", "10.244.12.2/24");
    veth(&h, "kn-c2", "10.244.99.2/32", &c2, "eth0", "10.244.13.2/24");
    h.sh("ip link set kn-c1 master knbr1 && ip link set kn-c2 master knbr2");
    c1.sh("ip route add default via 10.244.12.1");
    c2.sh("ip route add default via 10.244.13.1");
    echo_peer_server(&c2, "10.244.13.2:7070");
    assert!(
        connect_from(&c1, "10.244.13.2:7070").is_ok(),
        "routed before isolation"
    );
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let (a1, a2) = (att("fw1"), att("fw2"));
    let same = IngressPolicy::SameBridge;
    h.ns.run_in(|| {
        nft.ensure_firewall(&a1, "knbr1", &[ip("10.244.12.2")], same)
            .unwrap();
        nft.ensure_firewall(&a2, "knbr2", &[ip("10.244.13.2")], same)
            .unwrap();
        nft.check_firewall(&a2, "knbr2", &[ip("10.244.13.2")], same)
            .unwrap();
    })
    .unwrap();
    assert!(connect_from(&c1, "10.244.13.2:7070").is_err(), "isolated");
    assert!(
        connect_from(&h, "10.244.13.2:7070").is_ok(),
        "host still reaches"
    );
    h.ns.run_in(|| nft.ensure_firewall(&a2, "knbr2", &[ip("10.244.13.2")], IngressPolicy::Open))
        .unwrap()
        .unwrap();
    assert_eq!(
        h.knit_elems("inet", "iso4").len(),
        1,
        "open replaced a2's isolation element"
    );
    assert!(connect_from(&c1, "10.244.13.2:7070").is_ok(), "open again");
}

/// Cost of one ensure, first vs 1,000th (printed, not asserted), and fork vs in-process.
#[test]
fn thousand_mappings_cost_the_same() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let times =
        h.ns.run_in(|| {
            let mut times = Vec::new();
            for i in 0..1000u32 {
                let a = att(&format!("k{i}"));
                let cip = IpAddr::from([10, 244, 20 + (i / 250) as u8, (i % 250) as u8 + 2]);
                let t0 = Instant::now();
                nft.ensure_portmap(&a, &[pm(30000 + i64::from(i), 80, "")], &[cip])
                    .unwrap();
                times.push(t0.elapsed());
            }
            times
        })
        .unwrap();
    let avg = |s: &[Duration]| s.iter().sum::<Duration>() / s.len() as u32;
    eprintln!(
        "nft ensure_portmap: 1st {:?} (incl. skeleton), 2nd..11th avg {:?}, 991st..1000th avg {:?}",
        times[0],
        avg(&times[1..11]),
        avg(&times[990..])
    );
    assert_eq!(h.knit_elems("inet", "pm4_any").len(), 1000);
    let del =
        h.ns.run_in(|| {
            let t0 = Instant::now();
            nft.del_portmap(&att("k500")).unwrap();
            t0.elapsed()
        })
        .unwrap();
    eprintln!("nft del_portmap with 1000 present: {del:?}");
    // The same element op through a forked `nft -f -`.
    let cli =
        h.ns.run_in(|| {
            let t0 = Instant::now();
            NftCli
                .run("add", "add element inet knit masq4 { 10.244.30.2 }\n")
                .unwrap();
            t0.elapsed()
        })
        .unwrap();
    eprintln!("forked nft -f - for one element: {cli:?}");
}

#[test]
fn del_with_a_record_cut_short_sweeps_by_comment() {
    // Records are not fsynced; after a crash one may be empty. DEL must still find the
    // attachment's elements (by their comments) and leave nothing.
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let (cut, other) = (att("cut-short"), att("bystander"));
    h.ns.run_in(|| {
        nft.ensure_portmap(
            &cut,
            &[pm(20011, 80, "")],
            &[IpAddr::from([10, 244, 14, 2])],
        )
        .unwrap();
        nft.ensure_portmap(
            &other,
            &[pm(20012, 80, "")],
            &[IpAddr::from([10, 244, 14, 3])],
        )
        .unwrap();
    })
    .unwrap();
    let files = dir_has(&dir, "cut-short");
    assert!(!files.is_empty());
    for p in &files {
        std::fs::write(p, b"").unwrap();
    }
    h.ns.run_in(|| nft.del_portmap(&cut)).unwrap().unwrap();
    let left = h.knit_elems("inet", "pm4_any");
    assert_eq!(
        left.len(),
        1,
        "only the bystander's mapping stays: {left:?}"
    );
    assert!(
        dir_has(&dir, "cut-short").is_empty(),
        "the broken record is gone"
    );
}

/// A service VIP on the host balances new connections over its backends (each reply names the
/// backend by the masqueraded peer address it saw), follows a backend's removal at once, and
/// is gone after del.
#[test]
fn service_vip_balances_and_follows_backends() {
    use libnet::nft::ServicePort;
    let h = TestNs::new("h");
    let x = TestNs::new("x");
    let c1 = TestNs::new("c1");
    let c2 = TestNs::new("c2");
    veth(&h, "kn-x", "10.244.8.1/24", &x, "eth0", "10.244.8.2/24");
    veth(&h, "kn-c1", "10.244.9.1/24", &c1, "eth0", "10.244.9.2/24");
    veth(&h, "kn-c2", "10.244.10.1/24", &c2, "eth0", "10.244.10.2/24");
    c1.sh("ip route add default via 10.244.9.1");
    c2.sh("ip route add default via 10.244.10.1");
    // The VIP is an address of the host on the client's link, so the client's ARP is answered.
    h.sh("sysctl -qw net.ipv4.ip_forward=1 && ip addr add 10.244.8.100/32 dev kn-x");
    echo_peer_server(&c1, "10.244.9.2:8080");
    echo_peer_server(&c2, "10.244.10.2:8080");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let a = Attachment::new("knt-net", "svc-web", "svc");
    let vip = ip("10.244.8.100");
    let ports = [ServicePort {
        protocol: libnet::nft::Proto::Tcp,
        port: 80,
        target: 8080,
    }];
    let both = [ip("10.244.9.2"), ip("10.244.10.2")];
    h.ns.run_in(|| nft.ensure_service(&a, vip, &ports, &both))
        .unwrap()
        .unwrap();
    h.ns.run_in(|| nft.check_service(&a, vip, &ports, &both))
        .unwrap()
        .unwrap();
    assert_eq!(h.knit_elems("inet", "svc_slot4").len(), 2);
    let tally = |n: usize| {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..n {
            let who = connect_from(&x, "10.244.8.100:80").unwrap();
            *seen.entry(who).or_default() += 1;
        }
        seen
    };
    let seen = tally(200);
    assert_eq!(seen.len(), 2, "both backends answer: {seen:?}");
    assert!(seen.values().all(|&n| n >= 50), "spread: {seen:?}");
    // The host itself reaches the VIP through the output chain.
    assert!(connect_from(&h, "10.244.8.100:80").is_ok());

    // One backend gone: every new connection goes to the other.
    h.ns.run_in(|| nft.ensure_service(&a, vip, &ports, &both[..1]))
        .unwrap()
        .unwrap();
    assert_eq!(h.knit_elems("inet", "svc_slot4").len(), 1);
    let seen = tally(40);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["10.244.9.1"], "{seen:?}");

    h.ns.run_in(|| nft.del_service(&a)).unwrap().unwrap();
    assert!(h.knit_elems("inet", "svc_slot4").is_empty());
    assert!(h.knit_elems("inet", "svc_vips4").is_empty());
    assert!(connect_from(&x, "10.244.8.100:80").is_err());
    assert!(h
        .ns
        .run_in(|| nft.state().read(&a, Feature::Service))
        .unwrap()
        .unwrap()
        .is_none());
    h.ns.run_in(|| nft.del_service(&a)).unwrap().unwrap();
}
