//! What only the etcd store does, against a real etcd per test: racing writers on separate
//! connections, host registration under leases, IPAM blocks handed on after a lease expires,
//! VNI uniqueness, watches across a compaction, and etcd restarting under a live store.

mod etcd_server;

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use ipnet::IpNet;
use store::etcd::{Host, Kind, WatchEvent, VNI_FIRST};
use store::{Driver, Error, ErrorKind, EtcdStore, Network, Pool, Store};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn network(name: &str, subnet: &str) -> Network {
    let mut n = Network::new(name, Driver::Overlay);
    n.ipam.push(Pool::new(net(subnet)));
    n
}

fn host(name: &str, ip: &str) -> Host {
    Host {
        name: name.into(),
        underlay_ip: ip.parse().unwrap(),
        vtep_mac: "02:00:00:00:00:01".into(),
    }
}

/// Polls `f` until it is true or `secs` pass.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not true after {secs} s");
}

#[test]
fn two_stores_racing_create_network_exactly_one_wins() {
    const ROUNDS: usize = 12;
    let server = EtcdServer::start();
    let stores = [server.store("/knit"), server.store("/knit")];
    let barrier = Barrier::new(2);
    let wins: Vec<(usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(t, st)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let (mut by_name, mut by_subnet) = (0, 0);
                    for r in 0..ROUNDS {
                        // Same name, disjoint subnets: one wins, the other is told the name.
                        barrier.wait();
                        let n = network(&format!("same-{r}"), &format!("10.{}.{r}.0/24", t + 1));
                        match st.create_network(&n) {
                            Ok(()) => by_name += 1,
                            Err(e) => assert!(matches!(e, Error::NetworkExists { .. }), "{e}"),
                        }
                        // Distinct names, overlapping subnets: one wins, the other overlaps.
                        barrier.wait();
                        let sub = if t == 0 {
                            "10.200.0.0/16"
                        } else {
                            "10.200.7.0/24"
                        };
                        let sub = sub.replace("200", &(200 + r).to_string());
                        let n = network(&format!("t{t}-{r}"), &sub);
                        match st.create_network(&n) {
                            Ok(()) => by_subnet += 1,
                            Err(e) => assert!(matches!(e, Error::SubnetOverlap { .. }), "{e}"),
                        }
                    }
                    (by_name, by_subnet)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let by_name: usize = wins.iter().map(|w| w.0).sum();
    let by_subnet: usize = wins.iter().map(|w| w.1).sum();
    assert_eq!((by_name, by_subnet), (ROUNDS, ROUNDS));
    let all = stores[0].list_networks().unwrap();
    assert_eq!(all.len(), 2 * ROUNDS);
    assert_eq!(stores[1].revision().unwrap(), (2 * ROUNDS) as u64);
    // No two stored networks overlap, whoever won.
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(
                store::validate::find_overlap(a, [b]).is_none(),
                "{} and {} overlap",
                a.name,
                b.name
            );
        }
    }
}

#[test]
fn a_live_hosts_name_or_underlay_ip_is_refused() {
    let server = EtcdServer::start();
    let (a, b) = (server.store("/knit"), server.store("/knit"));
    let ttl = Duration::from_secs(10);
    let h1 = a.register_host(&host("h1", "192.0.2.1"), ttl).unwrap();
    assert!(h1.is_live());

    let e = b.register_host(&host("h1", "192.0.2.2"), ttl).unwrap_err();
    assert!(
        matches!(&e, Error::HostExists { name, underlay_ip, lease }
        if name == "h1" && underlay_ip.to_string() == "192.0.2.1" && *lease == h1.id()),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Exists);
    let e = b.register_host(&host("h2", "192.0.2.1"), ttl).unwrap_err();
    assert!(
        matches!(&e, Error::UnderlayIpInUse { host, lease, .. } if host == "h1" && *lease == h1.id()),
        "{e}"
    );
    assert!(e.to_string().contains("192.0.2.1"), "{e}");
    let e = b.register_host(&host("h/2", "192.0.2.3"), ttl).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let mut bad_mac = host("h3", "192.0.2.3");
    bad_mac.vtep_mac = "nope".into();
    assert_eq!(
        b.register_host(&bad_mac, ttl).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    // The refusals wrote nothing.
    assert_eq!(b.hosts().unwrap(), vec![host("h1", "192.0.2.1")]);

    let h2 = b.register_host(&host("h2", "192.0.2.2"), ttl).unwrap();
    assert_eq!(a.hosts().unwrap().len(), 2);
    // Unregistering frees the name and the IP at once.
    a.unregister_host(h1).unwrap();
    let again = b.register_host(&host("h1", "192.0.2.1"), ttl).unwrap();
    let names: Vec<String> = a.hosts().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["h1", "h2"]);
    // A lease revoked by its id alone (a restarted agent ending its killed run's) frees its
    // host at once; revoking it again is no error.
    a.revoke_lease(h2.id()).unwrap();
    let h2_again = a.register_host(&host("h2", "192.0.2.2"), ttl).unwrap();
    a.revoke_lease(h2.id()).unwrap();
    drop((again, h2, h2_again));
}

#[test]
fn a_lease_is_kept_alive_past_its_ttl() {
    let server = EtcdServer::start();
    let st = server.store("/knit");
    let lease = st
        .register_host(&host("h1", "192.0.2.1"), Duration::from_secs(2))
        .unwrap();
    std::thread::sleep(lease.ttl() * 3);
    assert!(lease.is_live());
    assert_eq!(st.hosts().unwrap().len(), 1);
    // A dropped lease is revoked: the host is gone without waiting for the TTL.
    drop(lease);
    eventually(2, "host gone after drop", || st.hosts().unwrap().is_empty());
}

#[test]
fn an_expired_hosts_block_is_handed_on_and_never_reused_by_it() {
    let server = EtcdServer::start();
    let (sa, sb) = (server.store("/knit"), server.store("/knit"));
    let n = network("ov", "10.100.0.0/24");
    sa.create_network(&n).unwrap();
    let ttl = Duration::from_secs(2);

    let a = sa.register_host(&host("a", "192.0.2.1"), ttl).unwrap();
    let first = sa.claim_block(&a, &n.id, 26).unwrap();
    assert_eq!(first, net("10.100.0.0/26"));
    assert!(sa.owns_block(&a, &n.id, first).unwrap());
    let blocks = sa.blocks(&n.id).unwrap();
    assert_eq!((blocks.len(), blocks[0].host.as_str()), (1, "a"));

    // Host a dies (stops renewing, like a crash or a partition): its lease and blocks expire.
    let mut a = a;
    a.abandon();
    assert!(!a.is_live());
    eventually(10, "a's block expired", || {
        sb.blocks(&n.id).unwrap().is_empty()
    });
    assert!(sb.hosts().unwrap().is_empty());
    // With its lease gone, a can claim nothing, even where blocks are free.
    let e = sa.claim_block(&a, &n.id, 26).unwrap_err();
    assert!(matches!(e, Error::LeaseExpired { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(!sa.owns_block(&a, &n.id, first).unwrap());

    // The block is handed on to b.
    let b = sb.register_host(&host("b", "192.0.2.2"), ttl).unwrap();
    assert_eq!(sb.claim_block(&b, &n.id, 26).unwrap(), first);

    // a comes back under a new lease: its old block is refused, a fresh one is fine.
    let a2 = sa.register_host(&host("a", "192.0.2.1"), ttl).unwrap();
    assert_ne!(a2.id(), a.id());
    let e = sa.reclaim_block(&a2, &n.id, first).unwrap_err();
    assert!(
        matches!(&e, Error::BlockTaken { host, .. } if host == "b"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Exists);
    assert!(!sa.owns_block(&a2, &n.id, first).unwrap());
    let second = sa.claim_block(&a2, &n.id, 26).unwrap();
    assert_eq!(second, net("10.100.0.64/26"));
    // Re-claiming its own live block is fine (an agent restart with the lease still live).
    sa.reclaim_block(&a2, &n.id, second).unwrap();

    // A block given back is free: a may take the first one back now, b may not release it.
    sb.release_block(&b, &n.id, first).unwrap();
    sa.reclaim_block(&a2, &n.id, first).unwrap();
    let e = sb.release_block(&b, &n.id, first).unwrap_err();
    assert!(matches!(e, Error::BlockTaken { .. }), "{e}");

    // An unregistered host holds nothing any more; registered again it starts afresh.
    sb.unregister_host(b).unwrap();
    let b_back = sb.register_host(&host("b", "192.0.2.2"), ttl).unwrap();
    let e = sa.claim_block(&a2, &n.id, 20).unwrap_err();
    assert!(matches!(e, Error::BlockSize { .. }), "{e}");

    // Exhaustion: four /26 in a /24.
    sb.claim_block(&b_back, &n.id, 26).unwrap();
    sb.claim_block(&b_back, &n.id, 26).unwrap();
    let e = sb.claim_block(&b_back, &n.id, 26).unwrap_err();
    assert!(matches!(e, Error::BlocksExhausted { .. }), "{e}");
    let holders: BTreeSet<String> = sa
        .blocks(&n.id)
        .unwrap()
        .into_iter()
        .map(|b| b.host)
        .collect();
    assert_eq!(holders, BTreeSet::from(["a".to_string(), "b".to_string()]));
}

#[test]
fn vnis_are_unique_under_concurrency() {
    const NETS: usize = 12;
    const THREADS: usize = 4;
    let server = EtcdServer::start();
    let setup = server.store("/knit");
    let nets: Vec<Network> = (0..NETS)
        .map(|i| network(&format!("n{i}"), &format!("10.{}.0.0/16", 50 + i)))
        .collect();
    for n in &nets {
        setup.create_network(n).unwrap();
    }
    let barrier = Barrier::new(THREADS);
    let got: Vec<Vec<(String, u32)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (nets, barrier, url) = (&nets, &barrier, &server.url);
                s.spawn(move || {
                    let st = EtcdStore::connect(std::slice::from_ref(url), "/knit").unwrap();
                    barrier.wait();
                    // Each thread walks the networks from a different start.
                    (0..NETS)
                        .map(|i| &nets[(i + t * 3) % NETS])
                        .map(|n| (n.id.clone(), st.allocate_vni(&n.id).unwrap()))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut by_net = std::collections::BTreeMap::new();
    for (id, vni) in got.into_iter().flatten() {
        let prev = by_net.insert(id.clone(), vni);
        assert!(
            prev.is_none_or(|p| p == vni),
            "network {id} got {prev:?} and {vni}"
        );
    }
    let vnis: BTreeSet<u32> = by_net.values().copied().collect();
    assert_eq!(vnis.len(), NETS, "two networks share a VNI: {by_net:?}");
    assert_eq!(
        vnis,
        (VNI_FIRST..VNI_FIRST + NETS as u32).collect::<BTreeSet<_>>()
    );
    for n in &nets {
        assert_eq!(setup.vni(&n.id).unwrap(), by_net.get(&n.id).copied());
    }
    // Deleting a network frees its VNI for the next one.
    let freed = setup.vni(&nets[0].id).unwrap().unwrap();
    setup.delete_network(&nets[0].id).unwrap();
    assert_eq!(setup.vni(&nets[0].id).unwrap(), None);
    let late = network("late", "10.99.0.0/16");
    setup.create_network(&late).unwrap();
    assert_eq!(setup.allocate_vni(&late.id).unwrap(), freed);
    let e = setup.allocate_vni(&"f".repeat(64)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

fn expect_event(w: &mut store::etcd::BlockingWatcher) -> WatchEvent {
    w.next_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("an event within 5 s")
}

#[test]
fn a_list_of_several_pages_reads_every_record_in_order_and_nothing_beside() {
    let server = EtcdServer::start();
    let st = server.store("/knit");
    let n = store::etcd::watch::LIST_PAGE as usize * 2 + 345;
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("n1/e{i:06}"), i.to_string().into_bytes()))
        .collect();
    st.put_records(Kind::Endpoints, &records).unwrap();
    // Keys beside the directory: another kind, a longer directory name.
    st.put_records(Kind::Networks, &[("x".into(), b"{}".to_vec())])
        .unwrap();
    st.put_records(Kind::Sandboxes, &[("y".into(), b"{}".to_vec())])
        .unwrap();
    let (got, rev) = st.list(Kind::Endpoints).unwrap();
    assert_eq!(got.len(), n);
    assert!(got == records, "every page, in key order");
    st.delete_records(Kind::Endpoints, &["n1/e000000".to_string()])
        .unwrap();
    let (after, rev2) = st.list(Kind::Endpoints).unwrap();
    assert_eq!(after[..], records[1..]);
    assert!(rev2 > rev);
}

#[test]
fn watch_delivers_in_order_and_recovers_after_a_compaction() {
    let server = EtcdServer::start();
    let st = server.store("/knit");
    let (records, rev) = st.list(Kind::Networks).unwrap();
    assert!(records.is_empty());
    let mut w = st.watch(Kind::Networks, rev + 1);

    let (a, b) = (network("a", "10.1.0.0/24"), network("b", "10.2.0.0/24"));
    st.create_network(&a).unwrap();
    st.create_network(&b).unwrap();
    st.delete_network("a").unwrap();
    let mut revs = Vec::new();
    for (want_key, put) in [(&a.id, true), (&b.id, true), (&a.id, false)] {
        match expect_event(&mut w) {
            WatchEvent::Put {
                key,
                value,
                revision,
            } if put => {
                assert_eq!(&key, want_key);
                let n: Network = serde_json::from_slice(&value).unwrap();
                assert_eq!(&n.id, want_key);
                revs.push(revision);
            }
            WatchEvent::Delete { key, revision } if !put => {
                assert_eq!(&key, want_key);
                revs.push(revision);
            }
            other => panic!(
                "expected {} of {want_key}, got {other:?}",
                if put { "put" } else { "delete" }
            ),
        }
    }
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
    assert_eq!(w.next_timeout(Duration::from_millis(300)).unwrap(), None);

    // A watcher that starts behind a real compaction: etcd 3.4 cancels it with only
    // compact_revision set; it lists again and goes on.
    let c = network("c", "10.3.0.0/24");
    st.create_network(&c).unwrap();
    let (_, now) = st.list(Kind::Networks).unwrap();
    st.compact(now).unwrap();
    let mut behind = st.watch(Kind::Networks, rev + 1);
    match expect_event(&mut behind) {
        WatchEvent::Resync { records, revision } => {
            assert!(revision >= now, "{revision} < {now}");
            let keys: BTreeSet<String> = records.into_iter().map(|r| r.0).collect();
            assert_eq!(keys, BTreeSet::from([b.id.clone(), c.id.clone()]));
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let d = network("d", "10.4.0.0/24");
    st.create_network(&d).unwrap();
    match expect_event(&mut behind) {
        WatchEvent::Put { key, revision, .. } => {
            assert_eq!(key, d.id);
            assert!(revision > now);
        }
        other => panic!("expected the put of d, got {other:?}"),
    }
    // The first watcher, live all along, saw c and d without a resync.
    let keys: Vec<String> = (0..2)
        .map(|_| match expect_event(&mut w) {
            WatchEvent::Put { key, .. } => key,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keys, [c.id.clone(), d.id.clone()]);
}

#[test]
fn etcd_restarted_under_a_live_store_fails_clearly_then_works_again() {
    let mut server = EtcdServer::start();
    let st = server.store("/knit");
    let n = network("before", "10.1.0.0/24");
    st.create_network(&n).unwrap();
    let (_, rev) = st.list(Kind::Networks).unwrap();
    let mut w = st.watch(Kind::Networks, rev + 1);

    server.stop();
    let start = Instant::now();
    let e = st.list_networks().unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains(&server.url), "{e}");
    let e = st
        .create_network(&network("during", "10.2.0.0/24"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    // The watcher reports the broken stream (at once, or once the reconnect times out).
    let start = Instant::now();
    while w.next_timeout(Duration::from_secs(2)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the watch never failed"
        );
    }

    server.restart();
    eventually(30, "the store works again", || st.list_networks().is_ok());
    assert_eq!(st.list_networks().unwrap(), vec![n.clone()]);
    let after = network("after", "10.3.0.0/24");
    st.create_network(&after).unwrap();
    assert_eq!(
        st.revision().unwrap(),
        2,
        "the refused write while down wrote nothing"
    );
    // The watcher resumes where it stopped and sees the write made after the restart.
    let start = Instant::now();
    loop {
        match w.next_timeout(Duration::from_secs(2)) {
            Ok(Some(WatchEvent::Put { key, .. })) => {
                assert_eq!(key, after.id);
                break;
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "watch never resumed: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[test]
fn unreachable_etcd_is_a_clear_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let st = match EtcdStore::connect(std::slice::from_ref(&url), "/knit") {
        Ok(st) => st,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
            assert!(e.to_string().contains(&url), "{e}");
            return;
        }
    };
    let e = st.list_networks().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(EtcdStore::connect(&[], "/knit").is_err());
    assert!(EtcdStore::connect(std::slice::from_ref(&url), "").is_err());
}

#[test]
fn sync_calls_work_from_plain_threads_spawn_blocking_and_async_tasks() {
    let server = EtcdServer::start();
    let st = std::sync::Arc::new(server.store("/knit"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s2 = st.clone();
    rt.block_on(async move {
        let s3 = s2.clone();
        tokio::task::spawn_blocking(move || s3.create_network(&network("a", "10.1.0.0/24")))
            .await
            .unwrap()
            .unwrap();
        // Straight from a worker (blocking it, as a sync store does): no runtime panic.
        assert_eq!(s2.list_networks().unwrap().len(), 1);
        // The async API from another runtime.
        assert_eq!(s2.asynchronous().network("a").await.unwrap().name, "a");
    });
    let s4 = st.clone();
    std::thread::spawn(move || s4.create_network(&network("b", "10.2.0.0/24")).unwrap())
        .join()
        .unwrap();
    assert_eq!(st.revision().unwrap(), 2);
    // Dropping the store inside a task neither blocks nor panics.
    let last = std::sync::Arc::try_unwrap(st).unwrap();
    rt.block_on(async move { drop(last) });
}

#[test]
fn a_host_lease_survives_a_short_etcd_restart() {
    let mut server = EtcdServer::start();
    let st = server.store("/knit");
    let ttl = Duration::from_secs(6);
    let lease = st.register_host(&host("h1", "192.0.2.1"), ttl).unwrap();
    server.stop();
    std::thread::sleep(Duration::from_secs(1));
    server.restart();
    // etcd refreshes every lease when it comes back; the keepalive must reconnect and renew
    // before that refreshed TTL runs out, or the host would vanish.
    std::thread::sleep(ttl + Duration::from_secs(3));
    assert!(lease.is_live());
    eventually(10, "h1 still registered", || {
        st.hosts().is_ok_and(|h| h == vec![host("h1", "192.0.2.1")])
    });
}

fn endpoint_on(n: &Network, name: &str, ip: &str) -> store::Endpoint {
    let mut e = store::Endpoint::new(n.id.clone());
    e.name = name.into();
    e.ipv4 = Some(net(ip));
    e.host = "h1".into();
    e
}

#[test]
fn endpoints_racing_for_a_name_or_an_address_exactly_one_wins() {
    const ROUNDS: usize = 10;
    let server = EtcdServer::start();
    let stores = [server.store("/knit"), server.store("/knit")];
    let n = network("n", "10.60.0.0/16");
    stores[0].create_network(&n).unwrap();
    let barrier = Barrier::new(2);
    let wins: Vec<(usize, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(t, st)| {
                let (barrier, n) = (&barrier, &n);
                s.spawn(move || {
                    let (mut name, mut addr, mut deleted) = (0, 0, 0);
                    for r in 0..ROUNDS {
                        barrier.wait();
                        let e = endpoint_on(
                            n,
                            &format!("same-{r}"),
                            &format!("10.60.{}.{r}/16", t + 1),
                        );
                        match st.put_endpoint(&e) {
                            Ok(()) => name += 1,
                            Err(e) => assert!(matches!(e, Error::EndpointNameExists { .. }), "{e}"),
                        }
                        barrier.wait();
                        let e = endpoint_on(n, &format!("t{t}-{r}"), &format!("10.60.9.{r}/16"));
                        match st.put_endpoint(&e) {
                            Ok(()) => addr += 1,
                            Err(e) => assert!(matches!(e, Error::AddressInUse { .. }), "{e}"),
                        }
                        // A network deleted while an endpoint is put on it: never both.
                        let m = network(&format!("m{r}"), &format!("10.{}.0.0/24", 100 + r));
                        barrier.wait();
                        if t == 0 {
                            let _ = st.create_network(&m);
                        }
                        barrier.wait();
                        let raced = st.network(&format!("m{r}")).unwrap();
                        barrier.wait();
                        if t == 0 {
                            let e = endpoint_on(&raced, "x", &format!("10.{}.0.2/24", 100 + r));
                            match st.put_endpoint(&e) {
                                Ok(()) => {}
                                Err(e) => {
                                    assert!(matches!(e, Error::NetworkNotFound { .. }), "{e}")
                                }
                            }
                        } else {
                            match st.delete_network(&raced.id) {
                                Ok(_) => deleted += 1,
                                Err(e) => assert!(matches!(e, Error::NetworkInUse { .. }), "{e}"),
                            }
                        }
                    }
                    (name, addr, deleted)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().map(|w| w.0).sum::<usize>(), ROUNDS);
    assert_eq!(wins.iter().map(|w| w.1).sum::<usize>(), ROUNDS);
    assert_eq!(
        stores[0].network_endpoints(&n.id).unwrap().len(),
        2 * ROUNDS
    );
    // Every raced network is either gone with no endpoint left behind, or kept with its one.
    let deleted = wins[1].2;
    let left = stores[1].list_networks().unwrap().len() - 1;
    assert_eq!(deleted + left, ROUNDS);
    for m in stores[1]
        .list_networks()
        .unwrap()
        .iter()
        .filter(|m| m.id != n.id)
    {
        assert_eq!(
            stores[1].network_endpoints(&m.id).unwrap().len(),
            1,
            "{}",
            m.name
        );
    }
    let (records, _) = stores[0].list(Kind::Endpoints).unwrap();
    assert_eq!(
        records.len(),
        2 * ROUNDS + left,
        "no endpoint body outlives its network"
    );
}

#[test]
fn a_replaced_or_deleted_endpoint_frees_its_old_name_and_address() {
    let server = EtcdServer::start();
    let st = server.store("/knit");
    let (n, m) = (network("n", "10.61.0.0/24"), network("m", "10.62.0.0/24"));
    st.create_network(&n).unwrap();
    st.create_network(&m).unwrap();
    let mut e = endpoint_on(&n, "x", "10.61.0.9/24");
    e.sandbox_id = Some("sb1".into());
    st.put_endpoint(&e).unwrap();
    let mut renamed = e.clone();
    renamed.name = "y".into();
    renamed.ipv4 = Some(net("10.61.0.10/24"));
    renamed.sandbox_id = Some("sb2".into());
    st.put_endpoint(&renamed).unwrap();
    assert!(st.sandbox_endpoints("sb1").unwrap().is_empty());
    assert_eq!(st.sandbox_endpoints("sb2").unwrap(), vec![renamed.clone()]);
    // The old name and address are free again; the new ones are not.
    st.put_endpoint(&endpoint_on(&n, "x", "10.61.0.9/24"))
        .unwrap();
    let e2 = st
        .put_endpoint(&endpoint_on(&n, "y", "10.61.0.11/24"))
        .unwrap_err();
    assert!(matches!(e2, Error::EndpointNameExists { .. }), "{e2}");
    // Moved to another network: the first network's claims go with it.
    let mut moved = renamed.clone();
    moved.network_id = m.id.clone();
    moved.ipv4 = Some(net("10.62.0.10/24"));
    st.put_endpoint(&moved).unwrap();
    assert_eq!(st.network_endpoints(&m.id).unwrap(), vec![moved.clone()]);
    assert_eq!(st.network_endpoints(&n.id).unwrap().len(), 1);
    st.put_endpoint(&endpoint_on(&n, "y", "10.61.0.10/24"))
        .unwrap();
    assert_eq!(st.delete_endpoint(&moved.id).unwrap(), moved);
    st.put_endpoint(&endpoint_on(&m, "y", "10.62.0.10/24"))
        .unwrap();
    assert_eq!(st.revision().unwrap(), 2 + 7);
}
