//! The store's behaviour: round trips, refusals that write nothing, the revision. Each scenario
//! runs on the SQLite store (on a temp dir), on the in-memory fake and on the etcd store (a real
//! etcd per test), so the three agree; what only a database can do (another connection, the
//! file) is tested on SQLite alone, what only etcd can do in tests/etcd.rs.

mod etcd_server;

use std::collections::BTreeMap;

use ipnet::IpNet;
use store::fake::MemStore;
use store::{
    options, Driver, Endpoint, Error, ErrorKind, Network, Pool, PortMap, Proto, Sandbox, Service,
    ServicePort, SqliteStore, Store, ValidationError,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn bridge(name: &str, subnet: &str) -> Network {
    let mut n = Network::new(name, Driver::Bridge);
    n.ipam.push(Pool::new(net(subnet)));
    n
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let st = SqliteStore::open(dir.path()).unwrap();
    (dir, st)
}

/// Runs a scenario `fn(&dyn Store)` as three tests: `NAME::sqlite`, `NAME::mem`, `NAME::etcd`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let (_dir, st) = super::open();
                super::$name(&st);
            }
            #[test]
            fn mem() {
                super::$name(&super::MemStore::new());
            }
            #[test]
            fn etcd() {
                let server = super::etcd_server::EtcdServer::start();
                super::$name(&server.store("/knit-conformance"));
            }
        }
    )*};
}

on_both!(
    network_round_trip_with_every_field,
    lookup_is_dockers_full_id_then_name_then_unique_prefix,
    duplicate_name_and_overlapping_subnet_are_refused_with_nothing_written,
    endpoints_round_trip_and_keep_their_network_busy,
    endpoint_refusals_write_nothing,
    sandboxes,
    revision_moves_once_per_write_and_never_on_reads,
    rename_gives_a_free_valid_name_and_labels,
    services_round_trip_and_hold_their_address,
);

fn rename_gives_a_free_valid_name_and_labels(st: &dyn Store) {
    let a = bridge("docker-0123456789ab", "10.70.0.0/24");
    let b = bridge("taken", "10.71.0.0/24");
    st.create_network(&a).unwrap();
    st.create_network(&b).unwrap();
    let labels: std::collections::BTreeMap<String, String> =
        [("team".to_string(), "web".to_string())].into();
    let before = snapshot(st);
    for bad in ["taken", "a/b", ".."] {
        assert!(st.rename_network(&a.id, bad, &labels).is_err(), "{bad}");
    }
    assert!(st.rename_network("nope", "x", &labels).is_err());
    assert_eq!(snapshot(st), before, "a refused rename changed something");
    let r = st.rename_network(&a.id, "kn1", &labels).unwrap();
    assert_eq!((r.name.as_str(), &r.labels), ("kn1", &labels));
    assert_eq!(st.network("kn1").unwrap().id, a.id);
    assert!(st.network("docker-0123456789ab").is_err());
    assert_eq!(st.revision().unwrap(), before.0 + 1);
}

/// Everything the store holds, to prove a refused write changed nothing.
fn snapshot(st: &dyn Store) -> (u64, Vec<Network>, Vec<Sandbox>, Vec<Endpoint>) {
    let nets = st.list_networks().unwrap();
    let mut eps = Vec::new();
    for n in &nets {
        eps.extend(st.network_endpoints(&n.id).unwrap());
    }
    (
        st.revision().unwrap(),
        nets,
        st.list_sandboxes().unwrap(),
        eps,
    )
}

fn network_round_trip_with_every_field(st: &dyn Store) {
    let mut n = Network::new("isolated_nw", Driver::Bridge);
    n.ipv6 = true;
    n.internal = true;
    n.ipam = vec![
        Pool {
            subnet: net("172.25.0.0/16"),
            gateway: Some("172.25.0.1".parse().unwrap()),
            ip_range: Some(net("172.25.5.0/24")),
        },
        Pool {
            subnet: net("fd00:25::/64"),
            gateway: None,
            ip_range: None,
        },
    ];
    n.options = BTreeMap::from([
        (options::BRIDGE_NAME.to_string(), "knit-iso".to_string()),
        (options::BRIDGE_ENABLE_ICC.to_string(), "false".to_string()),
        (options::DRIVER_MTU.to_string(), "1400".to_string()),
    ]);
    n.labels.insert("team".into(), "net".into());
    st.create_network(&n).unwrap();

    assert_eq!(st.network("isolated_nw").unwrap(), n);
    assert_eq!(st.network(&n.id).unwrap(), n);
    assert_eq!(st.network(&n.id[..12]).unwrap(), n);
    assert_eq!(st.list_networks().unwrap(), vec![n.clone()]);
    assert_eq!(st.delete_network(&n.id[..5]).unwrap(), n);
    assert!(matches!(
        st.network("isolated_nw"),
        Err(Error::NetworkNotFound { .. })
    ));
    assert!(st.list_networks().unwrap().is_empty());
}

#[test]
fn another_connection_sees_the_same_records() {
    let (dir, st) = open();
    let n = bridge("n", "10.4.0.0/24");
    st.create_network(&n).unwrap();
    // Another process (here: another connection) sees the record, and its deletion.
    let other = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(other.network("n").unwrap(), n);
    other.delete_network("n").unwrap();
    assert_eq!(st.network("n").unwrap_err().kind(), ErrorKind::NotFound);
}

fn lookup_is_dockers_full_id_then_name_then_unique_prefix(st: &dyn Store) {
    let mut a = bridge("a", "10.1.0.0/24");
    a.id = format!("abc1{}", &a.id[4..]);
    let mut b = bridge("b", "10.2.0.0/24");
    b.id = format!("abc2{}", &b.id[4..]);
    // A network whose name is a prefix of another's id: the exact name wins over the prefix.
    let mut c = bridge("abc1", "10.3.0.0/24");
    c.id = format!("ffff{}", &c.id[4..]);
    for n in [&a, &b, &c] {
        st.create_network(n).unwrap();
    }
    assert_eq!(st.network("abc1").unwrap().name, "abc1");
    assert_eq!(st.network("abc2").unwrap().name, "b");
    assert_eq!(st.network(&a.id).unwrap().name, "a");
    let amb = st.network("abc").unwrap_err();
    assert!(matches!(amb, Error::Ambiguous { count: 2, .. }), "{amb}");
    assert_eq!(amb.kind(), ErrorKind::Invalid);
    let nf = st.network("zzz").unwrap_err();
    assert_eq!(nf.kind(), ErrorKind::NotFound);
    assert_eq!(st.network("").unwrap_err().kind(), ErrorKind::NotFound);
    let names: Vec<_> = st
        .list_networks()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["a", "abc1", "b"]);
}

fn duplicate_name_and_overlapping_subnet_are_refused_with_nothing_written(st: &dyn Store) {
    st.create_network(&bridge("one", "10.10.0.0/16")).unwrap();
    let before = snapshot(st);

    let dup = st
        .create_network(&bridge("one", "10.20.0.0/16"))
        .unwrap_err();
    assert!(
        matches!(&dup, Error::NetworkExists { name } if name == "one"),
        "{dup}"
    );
    assert_eq!(dup.kind(), ErrorKind::Exists);
    assert_eq!(snapshot(st), before);

    for sub in ["10.10.0.0/16", "10.10.3.0/24", "10.0.0.0/8"] {
        let e = st.create_network(&bridge("two", sub)).unwrap_err();
        match &e {
            Error::SubnetOverlap {
                subnet,
                other,
                network,
            } => {
                assert_eq!(*subnet, net(sub));
                assert_eq!(*other, net("10.10.0.0/16"));
                assert_eq!(network, "one");
            }
            other => panic!("{sub}: {other}"),
        }
        assert_eq!(e.kind(), ErrorKind::Exists);
        assert!(e.to_string().contains("overlaps"), "{e}");
        assert_eq!(snapshot(st), before);
    }

    let mut same_id = bridge("three", "10.30.0.0/16");
    same_id.id = before.1[0].id.clone();
    assert!(matches!(
        st.create_network(&same_id),
        Err(Error::NetworkIdExists { .. })
    ));

    for bad in ["a/b", "..", "a..b", "-x", ""] {
        let e = st.create_network(&bridge(bad, "10.40.0.0/16")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{bad}: {e}");
    }
    let mut gw = bridge("gw", "10.50.0.0/16");
    gw.ipam[0].gateway = Some("10.51.0.1".parse().unwrap());
    assert!(matches!(
        st.create_network(&gw),
        Err(Error::Invalid(ValidationError::GatewayOutsideSubnet { .. }))
    ));
    assert_eq!(snapshot(st), before);

    // Disjoint subnets, and networks without pools (null, host), are fine side by side.
    st.create_network(&bridge("two", "10.11.0.0/16")).unwrap();
    st.create_network(&Network::new("none", Driver::Null))
        .unwrap();
    st.create_network(&Network::new("host", Driver::Host))
        .unwrap();
    assert_eq!(st.list_networks().unwrap().len(), 4);
}

fn endpoint(n: &Network, name: &str, ip: &str) -> Endpoint {
    let mut e = Endpoint::new(n.id.clone());
    e.name = name.into();
    e.ifname = "eth0".into();
    e.mac = "02:42:ac:11:00:02".into();
    e.ipv4 = Some(net(ip));
    e
}

fn endpoints_round_trip_and_keep_their_network_busy(st: &dyn Store) {
    let n = bridge("n", "10.7.0.0/24");
    st.create_network(&n).unwrap();
    let sb = Sandbox::new("c1", "/run/knit/netns/c1");
    st.create_sandbox(&sb).unwrap();
    assert_eq!(st.sandbox("c1").unwrap(), sb);
    assert_eq!(st.sandbox(&sb.id[..8]).unwrap(), sb);

    let mut e = endpoint(&n, "web", "10.7.0.2/24");
    e.sandbox_id = Some(sb.id.clone());
    e.aliases = vec!["www".into()];
    e.ports = vec![PortMap {
        proto: Proto::Udp,
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_port: 5353,
        container_port: 53,
    }];
    e.labels.insert("k".into(), "v".into());
    e.host = "h1".into();
    st.put_endpoint(&e).unwrap();
    assert_eq!(st.endpoint(&e.id).unwrap(), e);
    assert_eq!(st.network_endpoints(&n.id).unwrap(), vec![e.clone()]);
    assert_eq!(st.sandbox_endpoints(&sb.id).unwrap(), vec![e.clone()]);

    // Put replaces by id (Docker's Join fills in the sandbox after CreateEndpoint).
    let mut moved = e.clone();
    moved.mac = "02:42:ac:11:00:09".into();
    st.put_endpoint(&moved).unwrap();
    assert_eq!(st.endpoint(&e.id).unwrap(), moved);
    assert_eq!(st.network_endpoints(&n.id).unwrap().len(), 1);

    let before = snapshot(st);
    let busy = st.delete_network("n").unwrap_err();
    assert!(
        matches!(&busy, Error::NetworkInUse { endpoints: 1, .. }),
        "{busy}"
    );
    assert_eq!(busy.kind(), ErrorKind::Busy);
    let busy = st.delete_sandbox("c1").unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Busy);
    assert_eq!(snapshot(st), before);

    assert_eq!(st.delete_endpoint(&e.id).unwrap(), moved);
    assert_eq!(st.endpoint(&e.id).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        st.delete_endpoint(&e.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(st.sandbox_endpoints(&sb.id).unwrap().is_empty());
    st.delete_sandbox("c1").unwrap();
    st.delete_network("n").unwrap();
    assert_eq!(snapshot(st).1, vec![]);
}

fn endpoint_refusals_write_nothing(st: &dyn Store) {
    let n = bridge("n", "10.8.0.0/24");
    st.create_network(&n).unwrap();
    let first = endpoint(&n, "a", "10.8.0.2/24");
    st.put_endpoint(&first).unwrap();
    let before = snapshot(st);

    let mut missing = endpoint(&n, "b", "10.8.0.3/24");
    missing.network_id = "0".repeat(64);
    let e = st.put_endpoint(&missing).unwrap_err();
    assert!(matches!(e, Error::NetworkNotFound { .. }), "{e}");

    let e = st
        .put_endpoint(&endpoint(&n, "a", "10.8.0.4/24"))
        .unwrap_err();
    assert!(matches!(e, Error::EndpointNameExists { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Exists);

    let e = st
        .put_endpoint(&endpoint(&n, "c", "10.8.0.2/24"))
        .unwrap_err();
    match &e {
        Error::AddressInUse { addr, endpoint, .. } => {
            assert_eq!(addr.to_string(), "10.8.0.2");
            assert_eq!(endpoint, &first.id);
        }
        other => panic!("{other}"),
    }

    let e = st
        .put_endpoint(&endpoint(&n, "d", "10.9.0.2/24"))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Invalid(ValidationError::AddressOutsidePools { .. })
    ));
    let mut bad_id = endpoint(&n, "e", "10.8.0.5/24");
    bad_id.id = "../x".into();
    assert_eq!(
        st.put_endpoint(&bad_id).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    assert_eq!(snapshot(st), before);

    // The same name and address on another network are fine.
    let m = bridge("m", "10.9.0.0/24");
    st.create_network(&m).unwrap();
    st.put_endpoint(&endpoint(&m, "a", "10.9.0.2/24")).unwrap();
}

fn sandboxes(st: &dyn Store) {
    // Names with a non-hex character: "a" would also be a prefix of one id in 16.
    let a = Sandbox::new("sb-a", "/run/knit/netns/sb-a");
    st.create_sandbox(&a).unwrap();
    let before = snapshot(st);
    let dup = st.create_sandbox(&Sandbox::new("sb-a", "/x")).unwrap_err();
    assert!(matches!(dup, Error::SandboxExists { .. }), "{dup}");
    let bad = st.create_sandbox(&Sandbox::new("sb/a", "/x")).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Invalid);
    assert_eq!(snapshot(st), before);
    let b = Sandbox::new("sb-b", "/run/knit/netns/sb-b");
    st.create_sandbox(&b).unwrap();
    assert_eq!(st.list_sandboxes().unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(st.delete_sandbox(&a.id).unwrap(), a);
    assert_eq!(st.sandbox("sb-a").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(st.list_sandboxes().unwrap(), vec![b]);
}

fn revision_moves_once_per_write_and_never_on_reads(st: &dyn Store) {
    assert_eq!(st.revision().unwrap(), 0);
    let n = bridge("n", "10.6.0.0/24");
    st.create_network(&n).unwrap();
    assert_eq!(st.revision().unwrap(), 1);

    st.network("n").unwrap();
    st.list_networks().unwrap();
    st.network_endpoints(&n.id).unwrap();
    st.list_sandboxes().unwrap();
    let _ = st.network("missing");
    assert_eq!(st.revision().unwrap(), 1);

    // A refused write is no write.
    let _ = st.create_network(&bridge("n", "10.5.0.0/24"));
    assert_eq!(st.revision().unwrap(), 1);

    let e = endpoint(&n, "a", "10.6.0.2/24");
    st.put_endpoint(&e).unwrap();
    st.put_endpoint(&e).unwrap();
    let sb = Sandbox::new("s", "/x");
    st.create_sandbox(&sb).unwrap();
    st.delete_endpoint(&e.id).unwrap();
    st.delete_sandbox("s").unwrap();
    st.delete_network("n").unwrap();
    assert_eq!(st.revision().unwrap(), 7);
}

#[test]
fn revision_is_seen_by_another_connection() {
    let (dir, st) = open();
    st.create_network(&bridge("n", "10.6.0.0/24")).unwrap();
    // As a watcher in another process would see it.
    let other = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(other.revision().unwrap(), 1);
    other.create_network(&bridge("m", "10.7.0.0/24")).unwrap();
    assert_eq!(st.revision().unwrap(), 2);
}

#[test]
fn store_is_one_file_in_wal_mode_and_checks_clean() {
    let (dir, st) = open();
    st.create_network(&bridge("n", "10.6.0.0/24")).unwrap();
    assert_eq!(st.path(), dir.path().join("knit.db"));
    assert!(st.integrity_check().unwrap().is_empty());
    let mode = journal_mode_of(st.path());
    assert_eq!(mode, "wal");
}

fn journal_mode_of(path: &std::path::Path) -> String {
    // Read the journal mode from the file header: bytes 18 and 19 are 2 in WAL mode.
    let bytes = std::fs::read(path).unwrap();
    if bytes.len() > 19 && bytes[18] == 2 && bytes[19] == 2 {
        "wal".into()
    } else {
        format!("header {:?}", &bytes.get(18..20))
    }
}

#[test]
fn open_creates_the_state_dir_and_refuses_a_file_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/state");
    let st = SqliteStore::open(&nested).unwrap();
    assert!(nested.join("knit.db").exists());
    drop(st);
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let e = SqliteStore::open(&file).unwrap_err();
    assert!(matches!(e, Error::StateDir { .. }), "{e}");
}

#[test]
fn threads_with_their_own_connections_lose_no_write_and_never_see_busy() {
    const THREADS: usize = 6;
    const OWN: usize = 15;
    const SHARED: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let barrier = std::sync::Barrier::new(THREADS);
    let won: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (dir, barrier) = (dir.path(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    // All open the fresh store at once: one of them makes the schema.
                    let st = SqliteStore::open(dir).unwrap();
                    let mut won = 0;
                    for j in 0..OWN {
                        let own = bridge(&format!("t{t}-{j}"), &format!("10.{}.{j}.0/24", 100 + t));
                        st.create_network(&own).unwrap();
                        if j < SHARED {
                            // Same name and same subnet in every thread: one wins, the others
                            // are told it exists (by name or by subnet), never "locked".
                            let shared =
                                bridge(&format!("shared-{j}"), &format!("10.200.{j}.0/24"));
                            match st.create_network(&shared) {
                                Ok(()) => won += 1,
                                Err(e) => assert_eq!(e.kind(), ErrorKind::Exists, "{e}"),
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(won, SHARED);
    let st = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(st.list_networks().unwrap().len(), THREADS * OWN + SHARED);
    assert_eq!(st.revision().unwrap(), (THREADS * OWN + SHARED) as u64);
}

#[test]
fn a_newer_schema_and_a_damaged_record_are_reported_not_guessed() {
    let (dir, st) = open();
    let n = bridge("n", "10.6.0.0/24");
    st.create_network(&n).unwrap();
    let path = st.path().to_path_buf();
    drop(st);

    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE networks SET body = '{' WHERE id = ?1", [&n.id])
        .unwrap();
    let st = SqliteStore::open(dir.path()).unwrap();
    let e = st.list_networks().unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { table: "networks", id, .. } if *id == n.id),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Internal);
    drop(st);

    raw.pragma_update(None, "user_version", 99).unwrap();
    let e = SqliteStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SchemaTooNew {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{e}"
    );
}

fn service(n: &Network, name: &str, vip: &str) -> Service {
    let mut s = Service::new(name, n.id.clone(), vip.parse().unwrap());
    s.selector.insert("app".into(), "web".into());
    s.ports.push(ServicePort::parse("80/tcp").unwrap());
    s
}

fn services_round_trip_and_hold_their_address(st: &dyn Store) {
    let mut n = bridge("n", "10.9.0.0/24");
    n.ipam[0].gateway = Some("10.9.0.1".parse().unwrap());
    st.create_network(&n).unwrap();
    let e = endpoint(&n, "a", "10.9.0.2/24");
    st.put_endpoint(&e).unwrap();
    let mut web = service(&n, "web", "10.9.0.250");
    web.ports.push(ServicePort::parse("dns=53/udp").unwrap());
    web.labels.insert("tier".into(), "front".into());
    st.create_service(&web).unwrap();
    assert_eq!(st.service("web").unwrap(), web);
    assert_eq!(st.service(&web.id[..10]).unwrap(), web);
    assert_eq!(st.list_services().unwrap(), vec![web.clone()]);
    assert_eq!(st.network_services(&n.id).unwrap(), vec![web.clone()]);
    assert_eq!(web.ports[0].name.as_deref(), Some("http"));

    let before = snapshot(st);
    let rev = st.revision().unwrap();
    let refused = |svc: Service| {
        let e = st.create_service(&svc).unwrap_err();
        assert_eq!(st.revision().unwrap(), rev, "{e}");
        e
    };
    let e = refused(service(&n, "web", "10.9.0.251"));
    assert!(
        matches!(&e, Error::ServiceExists { name } if name == "web"),
        "{e}"
    );
    let e = refused(service(&n, "other", "10.9.0.250"));
    assert!(
        matches!(&e, Error::AddressIsVip { service, .. } if service == "web"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Exists);
    let e = refused(service(&n, "other", "10.9.0.2"));
    assert!(
        matches!(&e, Error::AddressInUse { endpoint, .. } if *endpoint == e_id(st, "a")),
        "{e}"
    );
    for (name, vip, want) in [
        ("Bad_Name", "10.9.0.3", "DNS label"),
        ("out", "10.10.0.3", "not inside"),
        ("gw", "10.9.0.1", "gateway"),
        ("bcast", "10.9.0.255", "broadcast"),
        ("netaddr", "10.9.0.0", "network address"),
    ] {
        let e = refused(service(&n, name, vip));
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
    let mut twice = service(&n, "twice", "10.9.0.3");
    twice.ports.push(ServicePort::parse("80:8080/tcp").unwrap());
    assert!(matches!(
        refused(twice),
        Error::Invalid(ValidationError::ServicePortTwice { port: 80, .. })
    ));
    let mut none = service(&n, "none", "10.9.0.3");
    none.ports.clear();
    assert!(matches!(
        refused(none),
        Error::Invalid(ValidationError::ServiceNoPorts { .. })
    ));
    let mut missing = service(&n, "missing", "10.9.0.3");
    missing.network_id = "f".repeat(64);
    assert_eq!(refused(missing).kind(), ErrorKind::NotFound);

    // An endpoint may not take the virtual address, and the network stays busy.
    let taker = endpoint(&n, "b", "10.9.0.250/24");
    let e = st.put_endpoint(&taker).unwrap_err();
    assert!(matches!(&e, Error::AddressIsVip { .. }), "{e}");
    st.delete_endpoint(&e_id(st, "a")).unwrap();
    let e = st.delete_network("n").unwrap_err();
    assert!(
        matches!(&e, Error::NetworkHasServices { services: 1, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert_eq!(snapshot(st).1, before.1);

    assert_eq!(st.delete_service("web").unwrap(), web);
    assert_eq!(st.service("web").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        st.delete_service("web").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    st.delete_network("n").unwrap();
}

fn e_id(st: &dyn Store, name: &str) -> String {
    st.list_networks()
        .unwrap()
        .iter()
        .flat_map(|n| st.network_endpoints(&n.id).unwrap())
        .find(|e| e.name == name)
        .map(|e| e.id)
        .unwrap()
}

#[test]
fn a_version_1_store_gains_services_and_keeps_its_records() {
    let (dir, st) = open();
    let n = bridge("n", "10.5.0.0/24");
    st.create_network(&n).unwrap();
    let path = st.path().to_path_buf();
    drop(st);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("DROP TABLE services; PRAGMA user_version = 1;")
        .unwrap();
    drop(raw);
    let st = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(st.network("n").unwrap(), n);
    st.create_service(&service(&n, "web", "10.5.0.9")).unwrap();
    assert_eq!(st.service("web").unwrap().vip.to_string(), "10.5.0.9");
}

#[test]
fn service_ports_parse_with_names_targets_and_protocols() {
    let p = ServicePort::parse("80/tcp").unwrap();
    assert_eq!((p.port, p.target_port, p.proto), (80, 80, Proto::Tcp));
    assert_eq!(p.name.as_deref(), Some("http"));
    assert_eq!(p.to_string(), "http=80/tcp");
    let p = ServicePort::parse("53/udp").unwrap();
    assert_eq!(p.name.as_deref(), Some("domain"));
    let p = ServicePort::parse("metrics=9100:9101").unwrap();
    assert_eq!((p.port, p.target_port, p.proto), (9100, 9101, Proto::Tcp));
    assert_eq!(p.name.as_deref(), Some("metrics"));
    assert_eq!(ServicePort::parse("12345/udp").unwrap().name, None);
    for bad in ["", "0", "80/icmp", "70000", "80:0", "x=", "a:b"] {
        assert!(ServicePort::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_selector_picks_endpoints_carrying_every_label_on_its_network() {
    let n = bridge("n", "10.4.0.0/24");
    let svc = service(&n, "web", "10.4.0.9");
    let mut e = endpoint(&n, "a", "10.4.0.2/24");
    assert!(!svc.selects(&e));
    e.labels.insert("app".into(), "web".into());
    e.labels.insert("other".into(), "x".into());
    assert!(svc.selects(&e));
    e.network_id = "0".repeat(64);
    assert!(!svc.selects(&e));
    let mut empty = svc.clone();
    empty.selector.clear();
    e.network_id = n.id.clone();
    assert!(!empty.selects(&e));
}
