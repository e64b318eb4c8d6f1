//! FileStore in a temp dir: the reference's layout byte for byte, the index, concurrency.

use super::file_store::{FileStore, INDEX_DIR};
use super::store::{IpamStore, LockedStore, Lookup};
use super::*;
use crate::error::Kind;
use serde_json::json;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique temp dir removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "knit-ipam-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Index entry names across the bucket directories.
fn entries(index: &Path) -> BTreeSet<String> {
    names(index)
        .iter()
        .filter(|b| b.len() == 2)
        .flat_map(|b| names(&index.join(b)))
        .collect()
}

fn dual(data: &Path) -> IpamConfig {
    IpamConfig::from_json(&json!({
        "ranges": [[{"subnet": "10.244.0.0/24"}], [{"subnet": "fd00:6b6e::/64"}]],
        "dataDir": data,
    }))
    .unwrap()
}

#[test]
fn layout_is_the_references_byte_for_byte() {
    let t = TempDir::new("layout");
    let c = dual(&t.0);
    let mut s = FileStore::open(&c.data_dir, "net1").unwrap();
    let a = allocate(&mut s, &c, " c1 \n", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.to_string(), "10.244.0.2/24");
    assert_eq!(a[1].address.to_string(), "fd00:6b6e::2/64");
    let net = t.0.join("net1");
    let want: BTreeSet<String> = [
        "10.244.0.2",
        "fd00:6b6e::2",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names(&net), want);
    assert_eq!(fs::read(net.join("10.244.0.2")).unwrap(), b"c1\r\neth0");
    assert_eq!(fs::read(net.join("fd00:6b6e::2")).unwrap(), b"c1\r\neth0");
    assert_eq!(
        fs::read(net.join("last_reserved_ip.0")).unwrap(),
        b"10.244.0.2"
    );
    assert_eq!(
        fs::read(net.join("last_reserved_ip.1")).unwrap(),
        b"fd00:6b6e::2"
    );
    // knit's index sits outside the reference's directory; nothing else is left behind.
    assert_eq!(
        names(&t.0),
        ["net1", INDEX_DIR].iter().map(|s| s.to_string()).collect()
    );
    let idx = t.0.join(INDEX_DIR).join("net1");
    assert_eq!(entries(&idx), ["o.c1@eth0".to_string()].into());
    assert!(idx.join("stamp").exists());

    release(&mut s, "c1", "eth0").unwrap();
    release(&mut s, "c1", "eth0").unwrap();
    let want: BTreeSet<String> = ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names(&net), want);
    assert!(entries(&idx).is_empty());
}

#[test]
fn round_robin_resumes_from_last_reserved_file() {
    let t = TempDir::new("rr");
    let c = dual(&t.0);
    let net = t.0.join("n");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("last_reserved_ip.0"), "10.244.0.200").unwrap();
    fs::write(net.join("last_reserved_ip.1"), "garbage").unwrap();
    let mut s = FileStore::open(&t.0, "n").unwrap();
    let a = allocate(&mut s, &c, "c", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.addr(), ip("10.244.0.201"));
    assert_eq!(a[1].address.addr(), ip("fd00:6b6e::2"));
    // Wrap: .254 is the last, then .2 (.1 is the gateway).
    fs::write(net.join("last_reserved_ip.0"), "10.244.0.254").unwrap();
    let a = allocate(&mut s, &c, "d", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.addr(), ip("10.244.0.2"));
}

#[test]
fn sees_and_releases_reservations_the_reference_made() {
    let t = TempDir::new("foreign");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    let net = t.0.join("n");
    fs::write(net.join("10.244.0.2"), "ref1\r\neth0").unwrap();
    fs::write(net.join("fd00:6b6e::2"), "ref1\r\neth0").unwrap();
    fs::write(net.join("10.244.0.3"), "old1").unwrap(); // pre-ifname format
    let a = allocate(&mut s, &c, "k1", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.addr(), ip("10.244.0.4"));
    assert_eq!(a[1].address.addr(), ip("fd00:6b6e::3"));
    let mut held = held_by(&mut s, "ref1", "eth0").unwrap();
    held.sort();
    assert_eq!(held, [ip("10.244.0.2"), ip("fd00:6b6e::2")]);
    assert_eq!(held_by(&mut s, "old1", "eth9").unwrap(), [ip("10.244.0.3")]);
    release(&mut s, "ref1", "eth0").unwrap();
    release(&mut s, "old1", "eth9").unwrap();
    assert!(!net.join("10.244.0.2").exists());
    assert!(!net.join("fd00:6b6e::2").exists());
    assert!(!net.join("10.244.0.3").exists());
    assert!(net.join("10.244.0.4").exists());
}

#[test]
fn stale_index_entries_are_harmless() {
    let t = TempDir::new("stale");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    let net = t.0.join("n");
    allocate(&mut s, &c, "c1", "eth0", &[]).unwrap();
    // The reference released c1 and gave its v4 address to someone else.
    fs::remove_file(net.join("fd00:6b6e::2")).unwrap();
    fs::write(net.join("10.244.0.2"), "other\r\neth0").unwrap();
    assert!(held_by(&mut s, "c1", "eth0").unwrap().is_empty());
    // No false duplicate; DEL leaves the other owner's reservation alone.
    let a = allocate(&mut s, &c, "c1", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.addr(), ip("10.244.0.3"));
    release(&mut s, "c1", "eth0").unwrap();
    assert_eq!(fs::read(net.join("10.244.0.2")).unwrap(), b"other\r\neth0");
    assert!(!net.join("10.244.0.3").exists());
}

#[test]
fn duplicate_and_requested_taken_on_disk() {
    let t = TempDir::new("dup");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    allocate(&mut s, &c, "c1", "eth0", &[ip("10.244.0.9")]).unwrap();
    let e = allocate(&mut s, &c, "c1", "eth0", &[]).unwrap_err();
    assert_eq!(HasKind::kind(&e), Kind::Exists);
    let e = allocate(&mut s, &c, "c2", "eth0", &[ip("10.244.0.9")]).unwrap_err();
    assert_eq!(HasKind::kind(&e), Kind::Exists);
    // The failed ADD of c2 left nothing behind (its v6 address was never reserved).
    assert_eq!(names(&t.0.join("n")).len(), 5);
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let t = TempDir::new("gc");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    for (id, ifn) in [("a", "eth0"), ("b", "eth0"), ("b", "eth1")] {
        allocate(&mut s, &c, id, ifn, &[]).unwrap();
    }
    fs::write(t.0.join("n").join("10.244.0.100"), "old1").unwrap();
    fs::write(t.0.join("n").join("10.244.0.101"), "old2").unwrap();
    let valid = vec![
        ("b".to_string(), "eth1".to_string()),
        ("old2".into(), "eth0".into()),
    ];
    let gone = gc(&mut s, &valid).unwrap();
    let want: Vec<IpAddr> = [
        "10.244.0.2",
        "10.244.0.3",
        "10.244.0.100",
        "fd00:6b6e::2",
        "fd00:6b6e::3",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    assert_eq!(gone, want);
    assert_eq!(
        entries(&t.0.join(INDEX_DIR).join("n")),
        ["o.b@eth1".to_string()].into()
    );
    let mut held = held_by(&mut s, "b", "eth1").unwrap();
    held.sort();
    assert_eq!(held, [ip("10.244.0.4"), ip("fd00:6b6e::4")]);
}

#[test]
fn network_names_that_escape_are_invalid() {
    let t = TempDir::new("names");
    for bad in ["", ".", "..", "../x", "a/b", "/abs", ".knit-ipam", "a\0b"] {
        let e = FileStore::open(&t.0, bad).unwrap_err();
        assert_eq!(HasKind::kind(&e), Kind::Invalid, "{bad:?}");
    }
    assert!(names(&t.0).is_empty(), "nothing created");
    FileStore::open(&t.0, "ok-net_1.x").unwrap();
}

#[test]
fn odd_container_ids_get_distinct_index_entries() {
    let t = TempDir::new("ids");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    let long = "x".repeat(300);
    for id in ["a@b", "a%40b", "a/b", &long] {
        allocate(&mut s, &c, id, "eth0", &[]).unwrap();
    }
    for id in ["a@b", "a%40b", "a/b", &long] {
        assert_eq!(held_by(&mut s, id, "eth0").unwrap().len(), 2, "{id}");
        release(&mut s, id, "eth0").unwrap();
    }
    assert_eq!(names(&t.0.join("n")).len(), 3);
}

#[test]
fn knit_only_traffic_never_scans_after_the_first_lock() {
    let t = TempDir::new("noscan");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    allocate(&mut s, &c, "c0", "eth0", &[]).unwrap();
    assert_eq!(
        s.scans, 1,
        "the first lock indexes the (empty) directory once"
    );
    for i in 1..20 {
        allocate(&mut s, &c, &format!("c{i}"), "eth0", &[]).unwrap();
    }
    release(&mut s, "c3", "eth0").unwrap();
    release(&mut s, "c3", "eth0").unwrap();
    release(&mut s, "never", "eth0").unwrap();
    assert!(held_by(&mut s, "never", "eth0").unwrap().is_empty());
    // Another handle (another process) trusts the same stamp.
    let mut s2 = FileStore::open(&t.0, "n").unwrap();
    allocate(&mut s2, &c, "x", "eth0", &[]).unwrap();
    release(&mut s, "x", "eth0").unwrap();
    assert_eq!((s.scans, s2.scans), (1, 0));
}

/// Whether another open file description can take `<dir>/lock` right now (LOCK_NB probe).
fn lock_is_free(net_dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(net_dir.join("lock")).unwrap();
    // SAFETY: flock on a file we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc == 0
}

#[test]
fn the_guard_holds_the_flock_until_dropped_and_stamps_on_the_way_out() {
    let t = TempDir::new("guard");
    let net = t.0.join("n");
    let mut a = FileStore::open(&t.0, "n").unwrap();
    {
        let mut g = a.lock().unwrap();
        assert!(!lock_is_free(&net), "held while the guard lives");
        assert!(g.reserve("c1", "eth0", ip("10.244.0.2"), 0).unwrap());
        assert!(!g.reserve("c2", "eth0", ip("10.244.0.2"), 0).unwrap());
        // Dropped without unlock(), as on an early return or a panic.
    }
    assert!(lock_is_free(&net), "dropping the guard released the flock");
    // The drop wrote the stamp: another handle trusts the index and never scans.
    let mut b = FileStore::open(&t.0, "n").unwrap();
    let mut g = b.lock().unwrap();
    assert_eq!(
        g.held_by("c1", "eth0", Lookup::Fast).unwrap(),
        [ip("10.244.0.2")]
    );
    assert_eq!(g.last_reserved(0).unwrap(), Some(ip("10.244.0.2")));
    assert_eq!(g.release_owner("c1", "eth0").unwrap(), [ip("10.244.0.2")]);
    g.unlock().unwrap();
    assert!(lock_is_free(&net));
    assert_eq!(b.scans, 0, "stamp matched: no rebuild");
    // The explicit unlock stamped too: the first handle trusts b's release.
    let mut g = a.lock().unwrap();
    assert!(g
        .held_by("c1", "eth0", Lookup::Thorough)
        .unwrap()
        .is_empty());
    g.unlock().unwrap();
    assert_eq!(a.scans, 1, "only a's very first lock scanned");
}

#[test]
fn a_foreign_reservation_is_indexed_at_the_next_lock() {
    let t = TempDir::new("foreign-dup");
    let c = dual(&t.0);
    let mut s = FileStore::open(&t.0, "n").unwrap();
    allocate(&mut s, &c, "k1", "eth0", &[]).unwrap();
    // What the reference does on ADD for r1: reservation files and last_reserved_ip.
    let net = t.0.join("n");
    fs::write(net.join("10.244.0.3"), "r1\r\neth0").unwrap();
    fs::write(net.join("last_reserved_ip.0"), "10.244.0.3").unwrap();
    let e = allocate(&mut s, &c, "r1", "eth0", &[]).unwrap_err();
    assert!(matches!(e, IpamError::Duplicate { .. }), "{e}");
    assert_eq!(s.scans, 2);
    release(&mut s, "r1", "eth0").unwrap();
    assert!(!net.join("10.244.0.3").exists());
    assert_eq!(s.scans, 2, "released through the rebuilt index");
    // A crashed knit (reservation without stamp update) is healed the same way.
    fs::write(net.join("10.244.0.9"), "k9\r\neth0").unwrap();
    assert_eq!(held_by(&mut s, "k9", "eth0").unwrap(), [ip("10.244.0.9")]);
    // Old-format reservations cannot be indexed: lookups keep scanning and still work.
    fs::write(net.join("10.244.0.10"), "old").unwrap();
    assert_eq!(held_by(&mut s, "old", "eth1").unwrap(), [ip("10.244.0.10")]);
    release(&mut s, "old", "eth1").unwrap();
    assert!(!net.join("10.244.0.10").exists());
}

#[test]
fn concurrent_allocations_get_distinct_addresses() {
    let t = TempDir::new("conc");
    let c = IpamConfig::from_json(&json!({"subnet": "10.244.0.0/24", "dataDir": t.0})).unwrap();
    let got: Vec<IpAddr> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64)
            .map(|i| {
                let c = &c;
                sc.spawn(move || {
                    let mut s = FileStore::open(&c.data_dir, "conc").unwrap();
                    allocate(&mut s, c, &format!("c{i}"), "eth0", &[]).unwrap()[0]
                        .address
                        .addr()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let uniq: HashSet<_> = got.iter().collect();
    assert_eq!(uniq.len(), 64);
    assert_eq!(names(&t.0.join("conc")).len(), 64 + 2);
}

/// The ADD cost must not grow with the number of reservations (run with --ignored; timing).
#[test]
#[ignore]
fn add_cost_is_flat_over_1000_reservations() {
    let t = TempDir::new("scale");
    let c = IpamConfig::from_json(&json!({"subnet": "10.244.0.0/16", "dataDir": t.0})).unwrap();
    let mut times = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t0 = std::time::Instant::now();
        let mut s = FileStore::open(&c.data_dir, "scale").unwrap();
        allocate(&mut s, &c, &format!("{i:064x}"), "eth0", &[]).unwrap();
        times.push(t0.elapsed());
    }
    let median = |v: &[std::time::Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let (first, last) = (median(&times[..100]), median(&times[900..]));
    let ratio = last.as_secs_f64() / first.as_secs_f64();
    eprintln!("median ADD first 100: {first:?}, last 100: {last:?}, ratio {ratio:.3}");
    assert!(ratio <= 1.2, "ratio {ratio}");
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Del(u8),
        /// The reference plugin reserves the lowest free address of each set for `r<i>`.
        ForeignAdd(u8),
        /// The reference plugin releases `c<i>` (knit's) or `r<i>` by content.
        ForeignDel(bool, u8),
        Gc(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..8).prop_map(Op::Add),
            2 => (0u8..8).prop_map(Op::Del),
            2 => (0u8..8).prop_map(Op::ForeignAdd),
            1 => (any::<bool>(), 0u8..8).prop_map(|(k, i)| Op::ForeignDel(k, i)),
            1 => proptest::collection::vec(0u8..16, 0..8).prop_map(Op::Gc),
        ]
    }

    /// Owners 0..8 are knit's `c<i>`, 8..16 the reference's `r<i>` (for GC lists).
    fn name(i: u8) -> String {
        if i < 8 {
            format!("c{i}")
        } else {
            format!("r{}", i - 8)
        }
    }

    fn foreign_add(dir: &Path, c: &IpamConfig, id: &str) -> Vec<IpAddr> {
        c.ranges
            .iter()
            .filter_map(|set| {
                let free = set
                    .candidates(None)
                    .map(|x| x.1)
                    .find(|ip| !dir.join(ip.to_string()).exists())?;
                fs::write(dir.join(free.to_string()), format!("{id}\r\neth0")).unwrap();
                let last = format!("last_reserved_ip.{}", usize::from(free.is_ipv6()));
                fs::write(dir.join(last), free.to_string()).unwrap();
                Some(free)
            })
            .collect()
    }

    fn foreign_del(dir: &Path, id: &str) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if fs::read_to_string(&p).is_ok_and(|t| t.trim() == format!("{id}\r\neth0")) {
                fs::remove_file(p).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Random knit and reference operations on one data dir keep the files and a model in
        /// step: no address is ever handed out twice, DEL and GC release what they should.
        #[test]
        fn file_store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let t = TempDir::new("model");
            let c = IpamConfig::from_json(&json!({"ranges": [
                [{"subnet": "10.244.0.0/29"}],
                [{"subnet": "fd00:6b6e::/64", "rangeStart": "fd00:6b6e::2", "rangeEnd": "fd00:6b6e::7"}]
            ]})).unwrap();
            let mut s = FileStore::open(&t.0, "m").unwrap();
            let dir = t.0.join("m");
            let mut model: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(i) => match allocate(&mut s, &c, &name(i), "eth0", &[]) {
                        Ok(a) => {
                            prop_assert!(!model.contains_key(&name(i)));
                            model.insert(name(i), a.iter().map(|a| a.address.addr()).collect());
                        }
                        Err(e) => prop_assert!(
                            model.contains_key(&name(i)) || matches!(e, IpamError::Exhausted { .. }),
                            "{}", e
                        ),
                    },
                    Op::Del(i) => {
                        release(&mut s, &name(i), "eth0").unwrap();
                        model.remove(&name(i));
                    }
                    Op::ForeignAdd(i) => {
                        let id = name(i + 8);
                        if let std::collections::btree_map::Entry::Vacant(v) = model.entry(id) {
                            let got = foreign_add(&dir, &c, v.key());
                            if !got.is_empty() {
                                v.insert(got);
                            }
                        }
                    }
                    Op::ForeignDel(knits, i) => {
                        let id = name(if knits { i } else { i + 8 });
                        foreign_del(&dir, &id);
                        model.remove(&id);
                    }
                    Op::Gc(valid) => {
                        let valid: Vec<(String, String)> =
                            valid.iter().map(|i| (name(*i), "eth0".to_string())).collect();
                        gc(&mut s, &valid).unwrap();
                        model.retain(|k, _| valid.iter().any(|v| &v.0 == k));
                    }
                }
                let mut want: Vec<IpAddr> = model.values().flatten().copied().collect();
                want.sort();
                let mut on_disk: Vec<IpAddr> = fs::read_dir(&dir)
                    .unwrap()
                    .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
                    .collect();
                on_disk.sort();
                prop_assert_eq!(on_disk, want);
                for (id, ips) in &model {
                    let mut held = held_by(&mut s, id, "eth0").unwrap();
                    held.sort();
                    let mut ips = ips.clone();
                    ips.sort();
                    prop_assert_eq!(held, ips);
                }
            }
        }
    }
}

/// Interleaved ADDs into a nearly empty network and one already holding 1000 reservations, so
/// that machine load hits both alike (run with --ignored; timing).
#[test]
#[ignore]
fn add_cost_interleaved_small_vs_full() {
    let t = TempDir::new("inter");
    let c = IpamConfig::from_json(&json!({"subnet": "10.244.0.0/16", "dataDir": t.0})).unwrap();
    let mut full = FileStore::open(&c.data_dir, "full").unwrap();
    for i in 0..1000 {
        allocate(&mut full, &c, &format!("f{i:063x}"), "eth0", &[]).unwrap();
    }
    let (mut small_t, mut full_t) = (Vec::new(), Vec::new());
    let mut scans = 0;
    for i in 0..200 {
        for (net, times) in [("small", &mut small_t), ("full", &mut full_t)] {
            let t0 = std::time::Instant::now();
            let mut s = FileStore::open(&c.data_dir, net).unwrap();
            allocate(&mut s, &c, &format!("{i:064x}"), "eth0", &[]).unwrap();
            times.push(t0.elapsed());
            scans += s.scans;
        }
    }
    eprintln!("scans after the fill: {scans}");
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut small_t), median(&mut full_t));
    eprintln!(
        "median ADD small: {a:?}, with 1000 reservations: {b:?}, ratio {:.3}",
        b.as_secs_f64() / a.as_secs_f64()
    );
}

#[test]
fn deferred_sync_hands_the_new_reservations_to_the_caller() {
    let t = TempDir::new("defer");
    let cfg = dual(&t.0);
    let mut st = FileStore::open(&t.0, "net").unwrap();
    st.defer_sync();
    let got = allocate(&mut st, &cfg, "c1", "eth0", &[]).unwrap();
    // Visible at once (to other allocators and the reference), durable once synced.
    for al in &got {
        assert!(t.0.join("net").join(al.address.addr().to_string()).exists());
    }
    let pending = st.take_unsynced();
    assert_eq!(pending.len(), 2, "one file per range set");
    pending.sync().unwrap();
    assert_eq!(st.take_unsynced().len(), 0, "taken once");
}

#[test]
fn a_fixed_reservation_leaves_the_round_robin_where_it_was() {
    let t = TempDir::new("fixed");
    let mut a = FileStore::open(&t.0, "n").unwrap();
    let mut g = a.lock().unwrap();
    assert!(g.reserve("c1", "eth0", ip("10.244.0.5"), 0).unwrap());
    assert!(g.reserve_fixed("svc", "vip", ip("10.244.0.254")).unwrap());
    assert!(!g.reserve_fixed("svc2", "vip", ip("10.244.0.254")).unwrap());
    assert!(!g.reserve_fixed("svc2", "vip", ip("10.244.0.5")).unwrap());
    assert_eq!(g.last_reserved(0).unwrap(), Some(ip("10.244.0.5")));
    assert_eq!(
        g.held_by("svc", "vip", Lookup::Thorough).unwrap(),
        vec![ip("10.244.0.254")]
    );
    g.unlock().unwrap();
}
