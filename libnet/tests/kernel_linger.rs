//! Kernel tests of `linger`: a link deleted through it is gone (both veth ends, their addresses
//! and routes) the instant the call returns, errors still reach the caller, and the detached
//! helpers keep nothing of ours and do not outlive the kernel's wait.
//! Run as root with `cargo test -p libnet --features root-tests --test kernel_linger`.
#![cfg(feature = "root-tests")]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::TestNs;
use ipnet::IpNet;
use libnet::linger;
use libnet::netlink::{Handle, Route, VethPeer};
use libnet::{HasKind, Kind};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A veth `lgv0` in `host` with its peer `eth0` in `ctr`, both up, with addresses (v4 and v6)
/// and a route out of each end. Returns the host end's index.
fn pair(h: &Handle, c: &Handle, ctr: &TestNs) -> (u32, u32) {
    let peer = VethPeer {
        name: "eth0",
        netns_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&ctr.ns)),
        ..Default::default()
    };
    h.add_veth("lgv0", None, None, &peer).unwrap();
    let hi = h.link_by_name("lgv0").unwrap().index;
    let ci = c.link_by_name("eth0").unwrap().index;
    h.set_up(hi, true).unwrap();
    c.set_up(ci, true).unwrap();
    h.add_addr(hi, net("10.251.0.1/24"), false).unwrap();
    c.add_addr(ci, net("10.251.0.2/24"), false).unwrap();
    c.add_addr(ci, net("fd00:6b6e:251::2/64"), true).unwrap();
    h.add_route(&Route::new(net("10.252.0.0/16"), None, Some(hi)))
        .unwrap();
    c.add_route(&Route::new(
        net("10.99.0.0/16"),
        Some("10.251.0.1".parse().unwrap()),
        Some(ci),
    ))
    .unwrap();
    (hi, ci)
}

/// Nothing of the pair made by [`pair`] is visible in either namespace.
fn assert_gone(h: &Handle, c: &Handle, hi: u32, ci: u32) {
    assert!(h.find_link("lgv0").unwrap().is_none(), "host end listed");
    assert!(
        c.find_link("eth0").unwrap().is_none(),
        "container end listed"
    );
    for (hd, idx, side) in [(h, hi, "host"), (c, ci, "container")] {
        let addrs: Vec<_> = hd
            .addrs(0)
            .unwrap()
            .into_iter()
            .filter(|a| a.index == idx)
            .collect();
        assert!(addrs.is_empty(), "{side} addresses left: {addrs:?}");
        for v6 in [false, true] {
            let routes: Vec<_> = hd
                .routes(v6)
                .unwrap()
                .into_iter()
                .filter(|r| r.oif == Some(idx))
                .collect();
            assert!(routes.is_empty(), "{side} routes left: {routes:?}");
        }
    }
}

/// Pids of `knit-linger` helpers still running (an exited one waiting for init to reap it,
/// a zombie, is not counted: this VM's init reaps orphans in batches).
fn helpers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // "PID (COMM) STATE ...".
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.split_once(" (")
                    .and_then(|(_, rest)| rest.split_once(") "))
                    .is_some_and(|(comm, rest)| {
                        comm == linger::HELPER_NAME && !rest.starts_with('Z')
                    })
            })
        })
        .collect()
}

/// Wait until no helper is left (each lives as long as the kernel's wait, ~20 ms).
fn assert_helpers_end() {
    let t = Instant::now();
    while !helpers().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "helpers left: {:?}",
            helpers()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn veth_pair_addresses_and_routes_are_gone_when_del_link_returns() {
    let host = TestNs::new("lh");
    let ctr = TestNs::new("lc");
    let h = Handle::new_in(&host.ns).unwrap();
    let c = Handle::new_in(&ctr.ns).unwrap();
    let mut early = Vec::new();
    let mut full = Vec::new();
    for _ in 0..3 {
        let (hi, ci) = pair(&h, &c, &ctr);
        let link = h.link_by_index(hi).unwrap();
        // From a thread in the link's namespace, as a plugin calls it.
        let t = Instant::now();
        host.ns
            .run_in(|| linger::del_link(&h, &link))
            .unwrap()
            .unwrap();
        early.push(t.elapsed());
        assert_gone(&h, &c, hi, ci);

        // The same deletion the old way, for the time the kernel takes to return.
        let (hi, ci) = pair(&h, &c, &ctr);
        let t = Instant::now();
        h.del_link(hi).unwrap();
        full.push(t.elapsed());
        assert_gone(&h, &c, hi, ci);
    }
    let (early, full) = (early.iter().min().unwrap(), full.iter().min().unwrap());
    eprintln!("del_link returned after {early:?}; a blocking delete after {full:?}");
    assert!(
        *early * 2 < *full,
        "del_link {early:?} is not well under a blocking delete {full:?}"
    );
    assert_helpers_end();
}

#[test]
fn del_link_from_another_namespace_goes_through_the_handle_and_spares_that_namespace() {
    let host = TestNs::new("lh");
    let ctr = TestNs::new("lc");
    let other = TestNs::new("lo");
    let h = Handle::new_in(&host.ns).unwrap();
    let c = Handle::new_in(&ctr.ns).unwrap();
    let (hi, ci) = pair(&h, &c, &ctr);
    let link = h.link_by_index(hi).unwrap();
    // The calling thread's namespace has another link under the same index.
    other.sh(&format!("ip link add decoy index {hi} type bridge"));
    other
        .ns
        .run_in(|| linger::del_link(&h, &link))
        .unwrap()
        .unwrap();
    assert_gone(&h, &c, hi, ci);
    let o = Handle::new_in(&other.ns).unwrap();
    assert_eq!(o.link_by_index(hi).unwrap().name, "decoy");
}

#[test]
fn del_link_by_name_in_the_container_removes_both_ends_and_tolerates_absence() {
    let host = TestNs::new("lh");
    let ctr = TestNs::new("lc");
    let h = Handle::new_in(&host.ns).unwrap();
    let c = Handle::new_in(&ctr.ns).unwrap();
    let (hi, ci) = pair(&h, &c, &ctr);
    linger::del_link_by_name(Some(&ctr.ns), "eth0").unwrap();
    assert_gone(&h, &c, hi, ci);
    // Already gone: success (tolerant DEL).
    linger::del_link_by_name(Some(&ctr.ns), "eth0").unwrap();
    assert_helpers_end();
}

#[test]
fn kernel_refusals_reach_the_caller() {
    let host = TestNs::new("lh");
    let h = Handle::new_in(&host.ns).unwrap();
    // Gone already: ENODEV.
    let ctr = TestNs::new("lc");
    let cc = Handle::new_in(&ctr.ns).unwrap();
    let (hi, _) = pair(&h, &cc, &ctr);
    let link = h.link_by_index(hi).unwrap();
    h.del_link(hi).unwrap();
    let err = host
        .ns
        .run_in(|| linger::del_link(&h, &link))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    assert_eq!(err.kind(), Kind::NotFound);
    // `ip link del lo` is refused: the helper relays the kernel's answer (nothing is
    // unregistered, so no notification comes).
    let lo = h.link_by_name("lo").unwrap();
    let t = Instant::now();
    let err = host
        .ns
        .run_in(|| linger::del_link(&h, &lo))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
    assert_eq!(err.kind(), Kind::Invalid);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(h.find_link("lo").unwrap().is_some());
    assert_helpers_end();
}

/// A pipe whose read end sees EOF once every copy of its write end is closed.
fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (std::fs::File::from(r), w)
}

#[test]
fn close_detached_helper_closes_the_handed_fd_and_keeps_no_other() {
    let (mut handed_r, handed_w) = pipe();
    let (mut other_r, other_w) = pipe();
    linger::close_detached(handed_w);
    drop(other_w);
    // EOF on both: the helper closed the descriptor it was handed, and did not keep ours
    // (a runtime reading our stdout to EOF must not wait for it).
    let mut buf = Vec::new();
    assert_eq!(other_r.read_to_end(&mut buf).unwrap(), 0);
    assert_eq!(handed_r.read_to_end(&mut buf).unwrap(), 0);
    assert_helpers_end();
}
