//! knit-bench: knit's CNI plugins against the reference, side by side in one run, as whole
//! processes through the harness's chain runner, each side in its own namespaces.
//!
//! `knit-bench [--cycles N] [--scale N] [--scale-ref] [--no-scale] [--ref DIR] [--knit DIR]
//! [--cases LIST] [--controller-hosts N,N]`
//! Prints ADD, DEL and whole-cycle medians per side with knit/reference ratios, the kernel's own
//! `ip link del` floor, a 1,000-container scale run, peak RSS, `docker run` on knit's agent
//! against Docker's bridge (`docker`), `knit run` against netavark (`knit-run`), knit's DNS
//! against unbound and aardvark-dns (`dns`), the SDN controller with 1,000 and 10,000 simulated
//! agents (`controller-scale`), and a verdict per target.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netns_tests::cases::{self, Case};
use netns_tests::cni::{ChainOutcome, Runtime};
use netns_tests::median_ms;
use netns_tests::scenario::Side;
use netns_tests::topology::TestNs;
use serde_json::json;

mod controller_scale;
mod convergence;
mod dns;
mod docker;
mod floors;
mod hist;
mod knit_run;
mod overlay;
mod services;
mod sim_agents;
use floors::{
    del_floor, fsync_floor, link_del_floor, DelFloor, BANDWIDTH_FLOOR, MACVLAN_FLOOR, VETH_FLOOR,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Bail out of a loop after Ctrl-C so every namespace is dropped (and deleted) on the way out.
fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

#[derive(Debug)]
struct Args {
    cycles: usize,
    scale: usize,
    scale_ref: bool,
    ref_dir: PathBuf,
    knit_dir: PathBuf,
    /// `--cases a,b`: measure only these (bridge, podman, ptp, macvlan, bandwidth, docker,
    /// knit-run, dns).
    only: Option<Vec<String>>,
    /// `--controller-hosts 1000,10000`: the cluster sizes of `controller-scale`.
    controller_hosts: Vec<usize>,
}

/// The cases that run the CNI plugins; the kernel floors and the scale run go with them.
const CNI_CASES: [&str; 5] = ["bridge", "podman", "ptp", "macvlan", "bandwidth"];

impl Args {
    fn wants(&self, case: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|c| c == case))
    }

    fn wants_cni(&self) -> bool {
        CNI_CASES.iter().any(|c| self.wants(c))
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        cycles: 20,
        scale: 1000,
        scale_ref: false,
        ref_dir: netns_tests::reference_dir(),
        knit_dir: netns_tests::knit_dir(),
        only: None,
        controller_hosts: vec![1000, 10_000],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--cycles" => a.cycles = val()?.parse()?,
            "--scale" => a.scale = val()?.parse()?,
            "--no-scale" => a.scale = 0,
            "--scale-ref" => a.scale_ref = true,
            "--ref" => a.ref_dir = val()?.into(),
            "--knit" => a.knit_dir = val()?.into(),
            "--cases" => a.only = Some(val()?.split(',').map(str::to_string).collect()),
            "--controller-hosts" => {
                a.controller_hosts = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!("knit-bench [--cycles N] [--scale N|--no-scale] [--scale-ref] [--ref DIR] [--knit DIR] [--cases bridge,podman,ptp,macvlan,bandwidth,docker,knit-run,dns,services,overlay,controller-scale] [--controller-hosts 1000,10000]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    Ok(a)
}

/// Samples of one side for one case.
#[derive(Debug, Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    cycle: Vec<Duration>,
    /// Peak RSS (KiB) of any single plugin process seen (wait4 ru_maxrss).
    max_rss_kib: i64,
}

impl Samples {
    fn push(&mut self, add: &ChainOutcome, del: &ChainOutcome) {
        self.add.push(add.elapsed);
        self.del.push(del.elapsed);
        self.cycle.push(add.elapsed + del.elapsed);
        for c in add.calls.iter().chain(&del.calls) {
            self.max_rss_kib = self.max_rss_kib.max(c.max_rss_kib);
        }
    }
}

/// One ADD+DEL of a fresh container on `side`; namespace setup is not timed. The namespace is
/// handed back, not deleted: the kernel tears a netns down asynchronously (under the RTNL), which
/// would land on the next cycle's clock, so callers drop them after measuring.
fn cycle(side: &Side, case: &Case, n: usize, samples: &mut Samples) -> Result<TestNs> {
    check_stop()?;
    let ns = TestNs::new("b")?;
    let mut rt = Runtime::new(&format!("knt-bench-{n}"), Some(&ns.path()), "eth0");
    rt.capability_args = case.capability_args(0);
    let add = side.runner().add(&side.conflist, &rt);
    let result = add
        .ok()
        .with_context(|| format!("{} ADD", side.label))?
        .clone();
    let del = side.runner().del(&side.conflist, &rt, Some(&result));
    del.ok().with_context(|| format!("{} DEL", side.label))?;
    if side.label == "knit" {
        // knit's DEL returns before the kernel's own wait (libnet::linger): it counts only if
        // everything is already gone when it returns.
        gone_after_del(side, &ns).context("knit DEL returned early")?;
    }
    samples.push(&add, &del);
    Ok(ns)
}

/// Nothing of the attachment is visible (untimed, right after DEL): no host veth, only `lo` in
/// the container, no reservation, no nft element.
fn gone_after_del(side: &Side, ns: &TestNs) -> Result<()> {
    let veths = side.host_veths()?;
    let links: Vec<String> = ns.handle()?.links()?.into_iter().map(|l| l.name).collect();
    let ips = side.reserved_ips();
    let elems = side.knit_nft_elements()?.unwrap_or_default();
    if !veths.is_empty() || links != ["lo"] || !ips.is_empty() || !elems.is_empty() {
        bail!(
            "still visible: host veths {veths:?}, container links {links:?}, reservations \
             {ips:?}, nft elements {elems:?}"
        );
    }
    Ok(())
}

/// Interleaved cycles of both sides (order alternating), after one warm-up cycle each.
fn compare(case: &Case, a: &Args) -> Result<[Samples; 2]> {
    let sides = [
        Side::new("ref", &a.ref_dir, &case.conflist)?,
        Side::new("knit", &a.knit_dir, &case.conflist)?,
    ];
    let mut out = [Samples::default(), Samples::default()];
    let mut used = Vec::with_capacity(2 * a.cycles + 2);
    for side in &sides {
        used.push(cycle(side, case, 0, &mut Samples::default())?);
    }
    for i in 0..a.cycles {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            used.push(cycle(&sides[k], case, i + 1, &mut out[k])?);
        }
    }
    drop(used);
    Ok(out)
}

fn ratio(knit: f64, reference: f64) -> f64 {
    knit / reference
}

fn print_case(label: &str, s: &[Samples; 2]) {
    let m = |v: &[Duration]| median_ms(v);
    for (side, x) in ["ref", "knit"].iter().zip(s) {
        println!(
            "{label:<24} {side:<6} {:>9.2} {:>9.2} {:>9.2}",
            m(&x.add),
            m(&x.del),
            m(&x.cycle)
        );
    }
    println!(
        "{:<24} {:<6} {:>9.3} {:>9.3} {:>9.3}",
        "",
        "ratio",
        ratio(m(&s[1].add), m(&s[0].add)),
        ratio(m(&s[1].del), m(&s[0].del)),
        ratio(m(&s[1].cycle), m(&s[0].cycle))
    );
}

/// One scale run: ADD times in order, DEL times, and the cost of a bare plugin process start
/// (`loopback` VERSION through the same runner) before and after, to tell harness/exec growth
/// from the plugin's own.
struct ScaleRun {
    adds: Vec<Duration>,
    dels: Vec<Duration>,
    start_before: f64,
    start_after: f64,
    ipam_before: f64,
    ipam_after: f64,
}

/// Median ADD time of the side's `host-local` alone (each followed by an untimed DEL): the
/// IPAM share of an ADD, before and after the scale run.
fn ipam_cost(side: &Side, tag: &str) -> Result<f64> {
    let runner = side.runner();
    let plugin = &side.conflist["plugins"][0];
    let mut t = Vec::new();
    for i in 0..10 {
        // host-local never enters the netns but insists on CNI_NETNS.
        let rt = Runtime::new(
            &format!("knt-ipam-{tag}-{i}"),
            Some(&side.host.path()),
            "eth0",
        );
        let conf = netns_tests::cni::build_one(&side.conflist, plugin, None, &rt);
        let add = runner.call("host-local", &runner.env("ADD", &rt), &conf);
        add.outcome
            .map_err(|e| anyhow::anyhow!("host-local ADD: {e}"))?;
        t.push(add.elapsed);
        let del = runner.call("host-local", &runner.env("DEL", &rt), &conf);
        del.outcome
            .map_err(|e| anyhow::anyhow!("host-local DEL: {e}"))?;
    }
    Ok(median_ms(&t))
}

fn start_cost(side: &Side) -> f64 {
    let runner = side.runner();
    let t: Vec<Duration> = (0..10)
        .map(|_| runner.version("loopback", "1.0.0").elapsed)
        .collect();
    median_ms(&t)
}

/// `n` containers attached one after another to one bridge network.
fn scale(dir: &std::path::Path, label: &str, n: usize) -> Result<ScaleRun> {
    let mut case = cases::bridge_gateway(128);
    case.conflist["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.244.128.0/20"}]]);
    let side = Side::new(label, dir, &case.conflist)?;
    let start_before = start_cost(&side);
    let ipam_before = ipam_cost(&side, "before")?;
    let mut attached = Vec::with_capacity(n);
    let mut adds = Vec::with_capacity(n);
    for i in 0..n {
        check_stop()?;
        let ns = TestNs::new("s")?;
        let rt = Runtime::new(&format!("knt-scale-{i}"), Some(&ns.path()), "eth0");
        let add = side.runner().add(&side.conflist, &rt);
        let result = add
            .ok()
            .with_context(|| format!("{label} ADD #{i}"))?
            .clone();
        adds.push(add.elapsed);
        attached.push((ns, rt, result));
    }
    let start_after = start_cost(&side);
    let ipam_after = ipam_cost(&side, "after")?;
    let mut dels = Vec::with_capacity(n);
    for (ns, rt, result) in attached.iter().rev() {
        check_stop()?;
        let del = side.runner().del(&side.conflist, rt, Some(result));
        del.ok()
            .with_context(|| format!("{label} DEL {}", ns.name()))?;
        dels.push(del.elapsed);
    }
    Ok(ScaleRun {
        adds,
        dels,
        start_before,
        start_after,
        ipam_before,
        ipam_after,
    })
}

/// The kernel's share of an ADD at scale: a veth into a fresh netns, attached to one bridge and
/// set up over netlink, `n` times; what a plugin cannot do faster than. Times in order.
fn kernel_scale(n: usize) -> Result<Vec<Duration>> {
    use std::os::fd::AsRawFd;
    let host = TestNs::new("k")?;
    let h = host.handle()?;
    h.add_bridge(cases::BRIDGE, None, None)?;
    let br = h.link_by_name(cases::BRIDGE)?.index;
    h.set_up(br, true)?;
    let mut nss = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        check_stop()?;
        let ns = TestNs::new("ks")?;
        let name = format!("kntv{i}");
        let t = Instant::now();
        let peer = libnet::netlink::VethPeer {
            name: "eth0",
            netns_fd: Some(ns.ns().as_raw_fd()),
            mac: None,
            mtu: None,
        };
        h.add_veth(&name, None, None, &peer)?;
        let idx = h.link_by_name(&name)?.index;
        h.set_master(idx, br)?;
        h.set_up(idx, true)?;
        times.push(t.elapsed());
        nss.push(ns);
    }
    Ok(times)
}

/// One target: met when any of its (value, max) pairs is within bounds.
struct Verdict {
    lines: Vec<(String, Vec<(f64, f64)>)>,
}

impl Verdict {
    fn target(&mut self, what: &str, got: f64, max: f64) {
        self.lines.push((what.to_string(), vec![(got, max)]));
    }

    fn target_either(&mut self, what: &str, a: (f64, f64), b: (f64, f64)) {
        self.lines.push((what.to_string(), vec![a, b]));
    }

    fn print(&self) {
        println!("\nverdict:");
        let mut met = 0;
        for (what, pairs) in &self.lines {
            // NaN (a case that failed) is never within bounds.
            let ok = pairs.iter().any(|(got, max)| got <= max);
            met += usize::from(ok);
            let mark = if ok { "PASS" } else { "FAIL" };
            let show = |(got, max): &(f64, f64)| {
                let got = if got.is_nan() {
                    "n/a".into()
                } else {
                    format!("{got:.3}")
                };
                format!("{got:>7} (<= {max})")
            };
            let shown: Vec<String> = pairs.iter().map(show).collect();
            println!("  {mark} {what:<46} {}", shown.join(" | "));
        }
        println!("  {met}/{} targets met", self.lines.len());
    }
}

/// Compare both sides on one case and print its rows; a failing side is reported, not fatal
/// (its targets then count as not met). Only Ctrl-C aborts.
fn measure(label: &str, case: &Case, a: &Args) -> Result<Option<[Samples; 2]>> {
    match compare(case, a) {
        Ok(s) => {
            print_case(label, &s);
            Ok(Some(s))
        }
        Err(e) => {
            check_stop()?;
            println!("{label:<24} FAILED: {e:#}");
            Ok(None)
        }
    }
}

/// knit/ref ratio of one statistic; NaN (target not met) when the case did not run.
fn ratio_of(s: &Option<[Samples; 2]>, f: fn(&Samples) -> &Vec<Duration>) -> f64 {
    s.as_ref()
        .map_or(f64::NAN, |s| median_ms(f(&s[1])) / median_ms(f(&s[0])))
}

/// The kernel's scale floor, then `n` containers on one bridge for knit (and the reference).
fn scale_report(a: &Args, verdict: &mut Verdict) -> Result<()> {
    let t = Instant::now();
    let k = kernel_scale(a.scale)?;
    let n = 100.min(k.len());
    let (first, last) = (median_ms(&k[..n]), median_ms(&k[k.len() - n..]));
    println!(
        "\nkernel floor at scale: veth into a netns + attach + up over netlink, {} times in \
         {:.1} s: first {n} {first:.2} ms, last {n} {last:.2} ms (x{:.3})",
        a.scale,
        t.elapsed().as_secs_f64(),
        last / first
    );
    let mut sides = vec![("knit", &a.knit_dir)];
    if a.scale_ref {
        sides.push(("ref", &a.ref_dir));
    }
    for (label, dir) in sides {
        let t = Instant::now();
        let growth = match scale(dir, label, a.scale) {
            Ok(r) => {
                let (adds, k) = (&r.adds, 100.min(r.adds.len()));
                let (first, last) = (median_ms(&adds[..k]), median_ms(&adds[adds.len() - k..]));
                println!(
                    "\nscale {label}: {} containers on one bridge in {:.1} s: ADD median first \
                     {k} {first:.2} ms, last {k} {last:.2} ms (x{:.3}); DEL median {:.2} ms; \
                     bare plugin start (VERSION) {:.2} ms before, {:.2} ms after; \
                     host-local ADD alone {:.2} ms before, {:.2} ms after",
                    a.scale,
                    t.elapsed().as_secs_f64(),
                    last / first,
                    median_ms(&r.dels),
                    r.start_before,
                    r.start_after,
                    r.ipam_before,
                    r.ipam_after
                );
                last / first
            }
            Err(e) => {
                check_stop()?;
                println!("\nscale {label}: FAILED: {e:#}");
                f64::NAN
            }
        };
        if label == "knit" {
            let what = format!("{} containers: ADD last 100 / first 100", a.scale);
            verdict.target(&what, growth, 1.2);
        }
    }
    Ok(())
}

fn run(a: &Args) -> Result<()> {
    println!(
        "knit-bench: reference {} vs knit {}, {} cycles per side (medians, ms)",
        a.ref_dir.display(),
        a.knit_dir.display(),
        a.cycles
    );
    let mut verdict = Verdict { lines: Vec::new() };
    if a.wants_cni() {
        println!(
            "\n{:<24} {:<6} {:>9} {:>9} {:>9}",
            "case", "side", "ADD", "DEL", "cycle"
        );
    }
    let case = |n: &str| cases::by_name(n).expect("a case of the table");
    let pick = |key: &str, label: &str, c: Case| -> Result<Option<[Samples; 2]>> {
        if a.wants(key) {
            measure(label, &c, a)
        } else {
            Ok(None)
        }
    };
    let bridge = pick("bridge", "bridge+host-local", cases::bridge_gateway(1))?;
    let podman = pick("podman", "podman chain (0.4.0)", cases::podman(10))?;
    let ptp = pick("ptp", "ptp+host-local", case("ptp"))?;
    let macvlan = pick("macvlan", "macvlan+host-local", case("macvlan"))?;
    let bandwidth = pick("bandwidth", "bridge+bandwidth", case("bandwidth"))?;
    if a.wants("knit-run") {
        knit_run::report(a, &mut verdict)?;
    }
    if a.wants("docker") {
        docker::report(a, &mut verdict)?;
    }
    if a.wants("dns") {
        dns::report(&mut verdict)?;
    }
    if a.wants("services") {
        services::report(&mut verdict)?;
    }
    if a.wants("overlay") {
        overlay::report(&mut verdict)?;
    }
    if a.wants("convergence") {
        convergence::report(&mut verdict)?;
    }
    if a.wants("controller-scale") {
        controller_scale::report(&a.controller_hosts, &mut verdict)?;
    }
    if !a.wants_cni() {
        verdict.print();
        return Ok(());
    }
    println!("\nkernel and disk floors (medians of {} each):", a.cycles);
    let nl_del = link_del_floor(a.cycles)?;
    let fsync = fsync_floor(a.cycles)?;
    println!(
        "  veth delete over netlink alone {nl_del:.2} ms; one reservation fsync (knit pays it \
         before answering ADD, the reference never syncs) {fsync:.2} ms"
    );
    let floor = |label: &str, f: &DelFloor| -> Result<f64> {
        let ms = del_floor(a.cycles, f)?;
        println!("  {label:<22} {ms:.2} ms  ({})", f.del.join("; "));
        Ok(ms)
    };
    let veth_floor = floor("DEL floor veth", &VETH_FLOOR)?;
    let del_med = |s: &Option<[Samples; 2]>| s.as_ref().map_or(f64::NAN, |s| median_ms(&s[1].del));
    // DESIGN: ADD <= 0.25x the reference. DEL (issue 12): knit returns once everything is gone
    // from the kernel's view and leaves the kernel's RCU wait to a detached helper, so it is
    // held to <= 0.3x the reference for links it deletes (bridge, ptp, macvlan); `del_max`
    // None keeps the older target, <= 0.6x or within 10 % of the kernel's deletion by `ip`.
    let mut targets =
        |name: &str, s: &Option<[Samples; 2]>, add_max: f64, del_max: Option<f64>, floor: f64| {
            verdict.target(
                &format!("{name} ADD knit/ref"),
                ratio_of(s, |s| &s.add),
                add_max,
            );
            let del = ratio_of(s, |s| &s.del);
            match del_max {
                Some(max) => {
                    println!(
                        "  {name}: knit DEL {:.2} ms = {:.3}x the `ip` floor",
                        del_med(s),
                        del_med(s) / floor
                    );
                    verdict.target(&format!("{name} DEL knit/ref"), del, max);
                }
                None => verdict.target_either(
                    &format!("{name} DEL knit/ref | knit/floor"),
                    (del, 0.6),
                    (del_med(s) / floor, 1.1),
                ),
            }
        };
    if a.wants("bridge") {
        targets("bridge+host-local", &bridge, 0.25, Some(0.3), veth_floor);
    }
    if a.wants("ptp") {
        targets("ptp", &ptp, 0.25, Some(0.3), veth_floor);
    }
    if a.wants("macvlan") {
        let f = floor("DEL floor macvlan", &MACVLAN_FLOOR)?;
        targets("macvlan", &macvlan, 0.25, Some(0.3), f);
    }
    if a.wants("bandwidth") {
        let f = floor("DEL floor veth+ifb", &BANDWIDTH_FLOOR)?;
        targets("bridge+bandwidth", &bandwidth, 0.5, None, f);
        let cycle = ratio_of(&bandwidth, |s| &s.cycle);
        if let Some(s) = &bandwidth {
            // The best whole cycle the kernel allows: knit's ADD plus the floor's deletions.
            let best = (median_ms(&s[1].add) + f) / median_ms(&s[0].cycle);
            println!(
                "  bridge+bandwidth: the floor bounds the whole cycle at {best:.3}x the reference"
            );
        }
        verdict.target("bridge+bandwidth whole cycle knit/ref", cycle, 0.5);
    }
    if a.wants("podman") {
        verdict.target(
            "podman chain DEL knit/ref",
            ratio_of(&podman, |s| &s.del),
            0.2,
        );
        verdict.target(
            "podman chain whole cycle knit/ref",
            ratio_of(&podman, |s| &s.cycle),
            0.25,
        );
    }
    let rss = |k: usize| {
        let max = [&bridge, &podman, &ptp, &macvlan, &bandwidth]
            .iter()
            .filter_map(|s| s.as_ref().map(|s| s[k].max_rss_kib))
            .max();
        max.map_or("n/a".to_string(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        })
    };
    println!(
        "peak RSS of one plugin process (incl. its IPAM child): ref {}, knit {}",
        rss(0),
        rss(1)
    );
    if a.scale > 0 {
        scale_report(a, &mut verdict)?;
    }
    verdict.print();
    Ok(())
}

fn main() -> Result<()> {
    netns_tests::require_root();
    let args = parse_args()?;
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigint),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &action)?;
        nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &action)?;
    }
    run(&args)
}
