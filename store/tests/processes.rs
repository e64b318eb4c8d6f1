//! Several processes on one store, and kill -9 at random moments.
//!
//! A custom harness (`harness = false`): the binary is both the parent that runs the checks and,
//! re-executed with `KNIT_STORE_CHILD` set, the child processes that write.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::{Driver, Endpoint, Error, ErrorKind, Network, Pool, SqliteStore, Store};

const ROLE: &str = "KNIT_STORE_CHILD";
const DIR: &str = "KNIT_STORE_DIR";
const INDEX: &str = "KNIT_STORE_INDEX";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let dir = std::env::var(DIR).expect("KNIT_STORE_DIR");
        let code = match role.as_str() {
            "writer" => writer(Path::new(&dir)),
            "creator" => creator(Path::new(&dir)),
            _ => 2,
        };
        std::process::exit(code);
    }
    // `cargo test -p store -- NAME` passes a filter; run what matches (everything by default).
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 2] = [
        (
            "processes_create_concurrently_without_lost_writes_or_busy_errors",
            concurrent_processes,
        ),
        (
            "kill_9_at_random_moments_leaves_only_whole_committed_writes",
            crash,
        ),
    ];
    let mut ran = 0;
    for (name, f) in tests {
        if filter.is_empty() || filter.iter().any(|p| name.contains(p.as_str())) {
            let start = Instant::now();
            f();
            println!("test {name} ... ok ({:.1}s)", start.elapsed().as_secs_f64());
            ran += 1;
        }
    }
    println!("test result: ok. {ran} passed");
}

fn spawn(role: &str, dir: &Path, index: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env(DIR, dir)
        .env(INDEX, index.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A random number below `n` from the kernel's pool (via the store's id generator).
fn random_below(n: u64) -> u64 {
    u64::from_str_radix(&store::new_id()[..12], 16).unwrap() % n
}

// ---- concurrent processes -------------------------------------------------------------------

const CREATORS: usize = 4;
const OWN: usize = 25;
const SHARED: usize = 10;

/// Child: creates its own networks and races the others for the shared ones. Prints how many
/// shared names it won; any error other than losing a race fails the child.
fn creator(dir: &Path) -> i32 {
    let c: usize = std::env::var(INDEX).unwrap().parse().unwrap();
    let st = match SqliteStore::open(dir) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("open: {e}");
            return 1;
        }
    };
    let mut won = 0;
    for j in 0..OWN.max(SHARED) {
        if j < OWN {
            let mut n = Network::new(format!("p{c}-{j}"), Driver::Bridge);
            n.ipam.push(Pool::new(
                format!("10.{}.{j}.0/24", 100 + c).parse().unwrap(),
            ));
            if let Err(e) = st.create_network(&n) {
                eprintln!("own network {}: {e}", n.name);
                return 1;
            }
        }
        if j < SHARED {
            let mut n = Network::new(format!("shared-{j}"), Driver::Bridge);
            n.ipam
                .push(Pool::new(format!("10.200.{j}.0/24").parse().unwrap()));
            match st.create_network(&n) {
                Ok(()) => won += 1,
                Err(Error::NetworkExists { .. }) => {}
                Err(e) => {
                    eprintln!("shared network {} ({:?}): {e}", n.name, e.kind());
                    return 1;
                }
            }
        }
    }
    println!("won={won}");
    0
}

fn concurrent_processes() {
    let dir = tempfile::tempdir().unwrap();
    // Every child opens the fresh store at the same moment: the schema is made once.
    let children: Vec<Child> = (0..CREATORS)
        .map(|c| spawn("creator", dir.path(), c))
        .collect();
    let mut won = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "creator failed: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        won += stdout
            .trim()
            .strip_prefix("won=")
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("creator said {stdout:?}"));
    }
    assert_eq!(
        won, SHARED,
        "each shared name is won by exactly one process"
    );
    let st = SqliteStore::open(dir.path()).unwrap();
    let nets = st.list_networks().unwrap();
    assert_eq!(nets.len(), CREATORS * OWN + SHARED);
    for c in 0..CREATORS {
        for j in 0..OWN {
            st.network(&format!("p{c}-{j}")).unwrap();
        }
    }
    assert_eq!(st.revision().unwrap(), (CREATORS * OWN + SHARED) as u64);
    assert!(st.integrity_check().unwrap().is_empty());
}

// ---- kill -9 ----------------------------------------------------------------------------------
//
// The writer applies a fixed sequence of operations, op k being the store's k-th write, so after
// any kill the store must equal the first `revision()` operations replayed in memory: a write is
// committed whole (its record, and its revision bump) or absent. Even-numbered networks stay,
// odd ones are created, given an endpoint, updated and removed again.

fn net_of(i: u64) -> Network {
    Network {
        id: format!("{:064x}", i + 1),
        name: format!("n{i}"),
        driver: Driver::Bridge,
        ipam: vec![Pool {
            subnet: format!("10.{}.{}.0/24", i >> 8, i & 255).parse().unwrap(),
            gateway: Some(format!("10.{}.{}.1", i >> 8, i & 255).parse().unwrap()),
            ip_range: None,
        }],
        ipv6: false,
        internal: false,
        options: BTreeMap::from([("com.docker.network.driver.mtu".into(), "1400".into())]),
        labels: BTreeMap::from([("seq".into(), i.to_string())]),
        created: "2026-12-05T00:00:00.000000000Z".into(),
    }
}

fn ep_of(i: u64, version: u32) -> Endpoint {
    let mut e = Endpoint::new(net_of(i).id);
    e.id = format!("e{:063x}", i);
    e.name = format!("c{i}");
    e.ifname = "eth0".into();
    e.mac = format!("02:00:00:00:00:{:02x}", version);
    e.ipv4 = Some(format!("10.{}.{}.2/24", i >> 8, i & 255).parse().unwrap());
    e.aliases = vec![format!("alias{i}"); version as usize];
    e.labels.insert("version".into(), version.to_string());
    e
}

enum Op {
    CreateNet(Network),
    PutEp(Endpoint),
    DelEp(String),
    DelNet(String),
}

fn op(k: u64) -> Op {
    let (pair, j) = (k / 8, k % 8);
    let (i, step) = if j < 3 {
        (2 * pair, j)
    } else {
        (2 * pair + 1, j - 3)
    };
    match step {
        0 => Op::CreateNet(net_of(i)),
        1 => Op::PutEp(ep_of(i, 1)),
        2 => Op::PutEp(ep_of(i, 2)),
        3 => Op::DelEp(ep_of(i, 0).id),
        _ => Op::DelNet(net_of(i).name),
    }
}

fn writer(dir: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = match SqliteStore::open(dir) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("open: {e}");
            return 1;
        }
    };
    let mut k = match st.revision() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("revision: {e}");
            return 1;
        }
    };
    // Bounded so an orphan cannot run forever; the parent kills long before.
    while Instant::now() < deadline && k < 8 * 10_000 {
        let res = match op(k) {
            Op::CreateNet(n) => st.create_network(&n),
            Op::PutEp(e) => st.put_endpoint(&e),
            Op::DelEp(id) => st.delete_endpoint(&id).map(|_| ()),
            Op::DelNet(name) => st.delete_network(&name).map(|_| ()),
        };
        if let Err(e) = res {
            eprintln!("op {k}: {e}");
            return 1;
        }
        k += 1;
    }
    0
}

/// The state after the first `r` operations.
fn replay(r: u64) -> (BTreeMap<String, Network>, BTreeMap<String, Endpoint>) {
    let (mut nets, mut eps) = (BTreeMap::new(), BTreeMap::new());
    for k in 0..r {
        match op(k) {
            Op::CreateNet(n) => {
                nets.insert(n.name.clone(), n);
            }
            Op::PutEp(e) => {
                eps.insert(e.id.clone(), e);
            }
            Op::DelEp(id) => {
                eps.remove(&id);
            }
            Op::DelNet(name) => {
                nets.remove(&name);
            }
        }
    }
    (nets, eps)
}

fn check_whole(dir: &Path) -> u64 {
    let st = SqliteStore::open(dir).unwrap();
    assert_eq!(st.integrity_check().unwrap(), Vec::<String>::new());
    let r = st.revision().unwrap();
    let (want_nets, want_eps) = replay(r);
    let nets: BTreeMap<_, _> = st
        .list_networks()
        .unwrap()
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    assert_eq!(nets, want_nets, "networks after revision {r}");
    let mut eps = BTreeMap::new();
    for n in nets.values() {
        for e in st.network_endpoints(&n.id).unwrap() {
            eps.insert(e.id.clone(), e);
        }
    }
    assert_eq!(eps, want_eps, "endpoints after revision {r}");
    r
}

fn crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut revisions = Vec::new();
    let mut last = 0;
    for round in 0..16 {
        let mut child = spawn("writer", dir.path(), round);
        // Early rounds include kills during open and the schema's creation.
        let ms = if round < 3 {
            random_below(8)
        } else {
            5 + random_below(150)
        };
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc_sigkill()),
            "writer ended by itself: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let r = check_whole(dir.path());
        assert!(r >= last, "revision went back from {last} to {r}");
        last = r;
        revisions.push(r);
    }
    assert!(
        last > 20,
        "the writer made too little progress to test anything: {revisions:?}"
    );
    // A store that survived the kills keeps working.
    let st = SqliteStore::open(dir.path()).unwrap();
    let e = st.create_network(&net_of(0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);
    println!("  revisions after each kill: {revisions:?}");
}

fn libc_sigkill() -> i32 {
    9
}
