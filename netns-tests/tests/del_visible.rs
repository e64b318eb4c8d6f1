//! knit's DEL returns before the kernel's own wait (libnet::linger leaves it to a detached
//! helper), so "returned" must still mean "gone": the instant each DEL returns, nothing of the
//! attachment is visible (host veth, container interface, reservations, nft elements); and
//! 1,000 back-to-back ADD/DEL cycles, as whole processes, leave no helper, link, reservation or
//! element behind. Targets `KNIT_CNI_BIN` (default target/cni/bin).
#![cfg(feature = "root-tests")]

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netns_tests::cases::{self, Case};
use netns_tests::cni::Runtime;
use netns_tests::scenario::Side;
use netns_tests::topology::TestNs;

/// The helper's `comm` (libnet::linger::HELPER_NAME).
const HELPER: &str = libnet::linger::HELPER_NAME;

/// Pids of linger helpers still running. An exited one (a zombie) is not counted: orphans
/// belong to init (or the nearest subreaper), and this VM's init reaps them in batches.
fn helpers() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // "PID (COMM) STATE ...": COMM has no ')' here.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.split_once(" (")
                    .and_then(|(_, rest)| rest.split_once(") "))
                    .is_some_and(|(comm, rest)| comm == HELPER && !rest.starts_with('Z'))
            })
        })
        .collect()
}

/// Wait (at most 5 s: each helper lives as long as the kernel's wait) until none is left.
fn helpers_end() -> Result<()> {
    let t = Instant::now();
    loop {
        let left = helpers();
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "linger helpers still alive after 5 s: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing of the side's attachments is visible: no host veth, nothing but `lo` in the
/// container, no reservation, no nft element.
fn nothing_visible(side: &Side, ctr: &TestNs, when: &str) -> Result<()> {
    let veths = side.host_veths()?;
    ensure!(veths.is_empty(), "{when}: host veths {veths:?}");
    let links: Vec<String> = ctr.handle()?.links()?.into_iter().map(|l| l.name).collect();
    ensure!(links == ["lo"], "{when}: container links {links:?}");
    let ips = side.reserved_ips();
    ensure!(ips.is_empty(), "{when}: reservations {ips:?}");
    let elems = side.knit_nft_elements()?.unwrap_or_default();
    ensure!(elems.is_empty(), "{when}: nft elements {elems:?}");
    Ok(())
}

fn check_case(case: &Case) -> Result<()> {
    let side = Side::for_case("knit", &netns_tests::knit_dir(), case)?;
    for i in 0..3 {
        let ctr = TestNs::new("c")?;
        let mut rt = Runtime::new(&format!("knt-vis-{i}"), Some(&ctr.path()), "eth0");
        rt.capability_args = case.capability_args(0);
        let conflist = side.conflist_for(0);
        let add = side.runner().add(&conflist, &rt);
        let result = add
            .ok()
            .with_context(|| format!("{} ADD", case.name))?
            .clone();
        let del = side.runner().del(&conflist, &rt, Some(&result));
        del.ok().with_context(|| format!("{} DEL", case.name))?;
        nothing_visible(&side, &ctr, &format!("{} right after DEL #{i}", case.name))?;
    }
    helpers_end()
}

#[test]
fn nothing_of_the_attachment_is_visible_when_del_returns() -> Result<()> {
    netns_tests::require_root();
    let by_name = |n: &str| cases::by_name(n).with_context(|| format!("case {n}"));
    for case in [
        cases::bridge_gateway(1),
        by_name("bridge-ipmasq")?,
        cases::podman(10),
        by_name("ptp")?,
        by_name("macvlan")?,
    ] {
        check_case(&case).with_context(|| case.name)?;
    }
    Ok(())
}

#[test]
fn a_thousand_add_del_cycles_leave_no_helper_link_reservation_or_element() -> Result<()> {
    netns_tests::require_root();
    let case = cases::by_name("bridge-ipmasq").context("case bridge-ipmasq")?;
    let side = Side::for_case("knit", &netns_tests::knit_dir(), &case)?;
    let ctr = TestNs::new("c")?;
    let conflist = side.conflist_for(0);
    let t = Instant::now();
    let mut most_helpers = 0;
    for i in 0..1000 {
        let rt = Runtime::new(&format!("knt-cyc-{i}"), Some(&ctr.path()), "eth0");
        let add = side.runner().add(&conflist, &rt);
        let result = add.ok().with_context(|| format!("ADD #{i}"))?.clone();
        side.runner()
            .del(&conflist, &rt, Some(&result))
            .ok()
            .with_context(|| format!("DEL #{i}"))?;
        if i % 50 == 0 {
            most_helpers = most_helpers.max(helpers().len());
        }
    }
    println!(
        "1000 cycles in {:.1} s, at most {most_helpers} helpers alive at a sample",
        t.elapsed().as_secs_f64()
    );
    // Each helper lives through one kernel wait (~20 ms): they must not pile up.
    ensure!(most_helpers < 50, "{most_helpers} helpers alive at once");
    helpers_end()?;
    nothing_visible(&side, &ctr, "after 1000 cycles")
}
