//! Differential test: every conflist of `cases::all()` runs through the reference plugins and
//! knit's, each side in its own namespaces; results, kernel state, reachability, CHECK and DEL
//! (twice, and with the netns already gone) must agree. Plugin dirs: `REF_CNI_BIN` (default
//! /usr/lib/cni) and `KNIT_CNI_BIN` (default target/cni/bin). `KNT_CASES=a,b` runs a subset.
#![cfg(feature = "root-tests")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netns_tests::cases::{self, Case, OUTSIDE_HOST_IP, OUTSIDE_IP};
use netns_tests::cni::Runtime;
use netns_tests::reach::{self, Listener};
use netns_tests::scenario::{lent_devices, normalise_result, Attached, Side};
use netns_tests::snapshot::{self, Container, Options, Snapshot};
use netns_tests::topology::TestNs;

const IFNAME: &str = "eth0";
const PROBE: Duration = Duration::from_secs(2);

/// One side with its two containers attached.
struct World {
    side: Side,
    cs: Vec<Attached>,
    /// Wall time of the chain ADDs of the two containers.
    add_ms: f64,
}

fn attach(side: &Side, case: &Case, i: usize) -> Result<Attached> {
    Ok(attach_timed(side, case, i)?.0)
}

/// Container `i`'s host setup (untimed), then its ADD with its own conflist.
fn attach_timed(side: &Side, case: &Case, i: usize) -> Result<(Attached, f64)> {
    side.setup(&case.host_setup.per_container, Some(i))?;
    let ns = TestNs::new("c")?;
    let mut rt = Runtime::new(&format!("knt-{}-c{i}", case.name), Some(&ns.path()), IFNAME);
    rt.args = "IgnoreUnknown=1".into();
    rt.capability_args = case.capability_args(i);
    let conflist = side.conflist_for(i);
    let out = side.runner().add(&conflist, &rt);
    let result = out
        .ok()
        .with_context(|| format!("{} ADD c{i}", side.label))?
        .clone();
    let ms = out.elapsed.as_secs_f64() * 1e3;
    let c = Attached {
        ns,
        conflist,
        rt,
        result,
    };
    Ok((c, ms))
}

fn world(label: &str, dir: &std::path::Path, case: &Case) -> Result<World> {
    let side = Side::for_case(label, dir, case)?;
    let (mut cs, mut add_ms) = (Vec::new(), 0.0);
    for i in 0..2 {
        let (c, ms) = attach_timed(&side, case, i)?;
        cs.push(c);
        add_ms += ms;
    }
    Ok(World { side, cs, add_ms })
}

fn snap(w: &World, case: &Case) -> Result<Snapshot> {
    let containers: Vec<Container> =
        w.cs.iter()
            .enumerate()
            .map(|(i, c)| Container {
                label: ["c0", "c1"][i.min(1)],
                ns: &c.ns,
                ifname: IFNAME,
            })
            .collect();
    let opts = Options {
        keep_macs: case.macs.iter().map(|m| m.to_string()).collect(),
        container_sysctls: case
            .container_sysctls
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    snapshot::snapshot(&w.side.host, &containers, &opts)
}

fn sock(ip: &str, port: u16) -> Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse::<IpAddr>()?, port))
}

/// Pings and port probes on one side.
fn check_reach(w: &World, case: &Case) -> Result<()> {
    let (c0, c1) = (&w.cs[0], &w.cs[1]);
    // With source-based routing only traffic bound to the container's address is routed.
    let src_for = |to: IpAddr| {
        c0.addrs()
            .into_iter()
            .find(|a| case.ping_from_own_addr && a.is_ipv4() == to.is_ipv4())
    };
    for gw in &case.gateways {
        let gw: IpAddr = gw.parse()?;
        reach::ping_from(&c0.ns, gw, src_for(gw), Duration::from_secs(5))?;
    }
    if case.peers_reachable {
        for addr in c1.addrs() {
            reach::ping_from(&c0.ns, addr, src_for(addr), Duration::from_secs(5))?;
        }
    }
    if case.spoof {
        check_spoof(w, case).context("macspoofchk")?;
    }
    if case.masq {
        reach::ping(&c0.ns, OUTSIDE_IP.parse()?, Duration::from_secs(3))
            .context("ipMasq: container to a host with no route back")?;
    }
    let mut listeners = Vec::new();
    for p in &case.ports {
        let at = sock("0.0.0.0", p.container_port)?;
        listeners.push(match p.proto {
            "udp" => Listener::udp(&c0.ns, at)?,
            _ => Listener::tcp(&c0.ns, at)?,
        });
    }
    let gw = case.gateways.first().map(String::as_str).unwrap_or("");
    for p in &case.ports {
        let probe = |ns: &TestNs, to: SocketAddr| match p.proto {
            "udp" => reach::udp_probe(ns, to, PROBE),
            _ => reach::tcp_probe(ns, to, PROBE),
        };
        let outside_to = sock(p.host_ip.unwrap_or(OUTSIDE_HOST_IP), p.host_port)?;
        probe(&w.side.outside, outside_to).context("port mapping from outside")?;
        let host_to = sock(gw, p.host_port)?;
        match p.host_ip {
            None => probe(&w.side.host, host_to).context("port mapping from the host")?,
            Some(ip) => {
                if probe(&w.side.host, host_to).is_ok() {
                    bail!("mapping bound to hostIP {ip} also answered on {host_to}");
                }
            }
        }
    }
    if case.hairpin {
        if let Some(p) = case.ports.iter().find(|p| p.proto == "tcp") {
            reach::tcp_probe(&c0.ns, sock(gw, p.host_port)?, PROBE)
                .context("hairpin: container to its own mapped port")?;
        }
    }
    Ok(())
}

/// Container 0 takes another MAC (and forgets its neighbours): its frames must be dropped on
/// the way into the bridge; with its own MAC back it reaches the gateway and container 1 again.
fn check_spoof(w: &World, case: &Case) -> Result<()> {
    let (c0, c1) = (&w.cs[0], &w.cs[1]);
    let mac = c0.result["interfaces"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        })
        .and_then(|i| i["mac"].as_str())
        .context("container MAC in the result")?
        .to_string();
    let set_mac = |m: &str| -> Result<()> {
        c0.ns.run(&["ip", "link", "set", IFNAME, "address", m])?;
        c0.ns.run(&["ip", "neigh", "flush", "dev", IFNAME])?;
        Ok(())
    };
    let mut targets: Vec<IpAddr> = case
        .gateways
        .iter()
        .map(|g| g.parse())
        .collect::<Result<_, _>>()?;
    targets.extend(c1.addrs().into_iter().filter(IpAddr::is_ipv4));
    set_mac("0a:58:0a:f4:ee:01")?;
    let leaked: Vec<IpAddr> = targets
        .iter()
        .copied()
        .filter(|t| reach::ping(&c0.ns, *t, Duration::ZERO).is_ok())
        .collect();
    set_mac(&mac)?;
    if !leaked.is_empty() {
        bail!("frames with a spoofed source MAC reached {leaked:?}");
    }
    for t in targets {
        reach::ping(&c0.ns, t, Duration::from_secs(5)).context("own MAC restored")?;
    }
    Ok(())
}

fn check_all(w: &World) -> Result<()> {
    for (i, c) in w.cs.iter().enumerate() {
        w.side
            .runner()
            .check(&c.conflist, &c.rt, &c.result)
            .ok()
            .with_context(|| format!("{} CHECK c{i}", w.side.label))?;
    }
    Ok(())
}

/// ADD a third container, delete its netns, DEL with CNI_NETNS empty: must succeed and free.
fn del_without_netns(w: &World, case: &Case) -> Result<()> {
    let mut c = attach(&w.side, case, 2)?;
    c.ns.delete()?;
    let mut rt = c.rt.clone();
    rt.netns = None;
    let res = w
        .side
        .runner()
        .del(&c.conflist, &rt, Some(&c.result))
        .ok()
        .map(|_| ())
        .with_context(|| format!("{} DEL with the netns gone", w.side.label));
    match res {
        Err(e) if ref_may_fail_del(w, case) => {
            println!("  note {}: {e:#} (reference, not required)", case.name);
            Ok(())
        }
        r => r,
    }
}

/// DEL every container (twice: the second must succeed too), then the host must be clean.
/// Where the case allows it, the reference's DEL errors are printed, not failed.
fn del_all(w: &World, case: &Case) -> Result<std::time::Duration> {
    let mut total = Duration::ZERO;
    for round in ["DEL", "DEL again"] {
        for (i, c) in w.cs.iter().enumerate() {
            let out = w.side.runner().del(&c.conflist, &c.rt, Some(&c.result));
            let res = out
                .ok()
                .with_context(|| format!("{} {round} c{i}", w.side.label));
            match res {
                Err(e) if ref_may_fail_del(w, case) => {
                    println!("  note {}: {e:#} (reference, not required)", case.name)
                }
                r => {
                    r?;
                }
            }
            if round == "DEL" {
                total += out.elapsed;
            }
        }
    }
    let veths = w.side.host_veths()?;
    let ips = w.side.reserved_ips();
    if !veths.is_empty() || !ips.is_empty() {
        let left = format!(
            "{} left after DEL: veths {veths:?}, reserved ips {ips:?}",
            w.side.label
        );
        // The reference host-device returns from a DEL without CNI_NETNS before releasing
        // its address (v1.1.1 cmdDel): the oracle's leftovers are reported, knit's fail.
        if w.side.label != "ref" {
            bail!(left);
        }
        println!("  note {}: {left} (reference, not required)", case.name);
    }
    let h = w.side.host.handle()?;
    for dev in w.cs.iter().flat_map(|c| lent_devices(&c.conflist)) {
        if h.find_link(&dev)?.is_none() {
            bail!(
                "{}: lent device {dev} is not back on the host",
                w.side.label
            );
        }
    }
    if let Some(elements) = w.side.knit_nft_elements()? {
        if !elements.is_empty() {
            bail!(
                "{} left nft elements in its knit tables: {elements:?}",
                w.side.label
            );
        }
    }
    Ok(total)
}

fn ref_may_fail_del(w: &World, case: &Case) -> bool {
    w.side.label == "ref" && case.ref_del_may_fail
}

fn compare_results(r: &World, k: &World, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (a, b)) in r.cs.iter().zip(&k.cs).enumerate() {
        let (na, nb) = (
            normalise_result(&a.result, &case.macs),
            normalise_result(&b.result, &case.macs),
        );
        if na != nb {
            problems.push(format!("result c{i} differs:\n  ref  {na}\n  knit {nb}"));
        }
    }
    problems
}

fn compare_snapshots(what: &str, a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let d = a.diff(b);
    if d.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{what} kernel state differs (- ref, + knit):\n  {}",
        d.join("\n  ")
    )]
}

fn run_case(case: &Case) -> Result<Vec<String>> {
    let r = world("ref", &netns_tests::reference_dir(), case)?;
    let k = world("knit", &netns_tests::knit_dir(), case)?;
    let mut problems = compare_results(&r, &k, case);
    let knit_snap = snap(&k, case)?;
    if case.name == "bandwidth" {
        // The comparison below only means something if the shaping is in the snapshot.
        let tbfs = knit_snap.section("host").map_or(0, |l| {
            l.iter()
                .filter(|l| l.starts_with("qdisc") && l.contains(" tbf "))
                .count()
        });
        // Two containers, each shaped both ways: tbf on its host veth and on its ifb.
        if tbfs != 4 {
            problems.push(format!(
                "bandwidth: expected 4 tbf qdiscs in the host, saw {tbfs}"
            ));
        }
    }
    if case.name == "sbr" {
        // Likewise: the rule and the table must be in the snapshot to be compared.
        let c0 = knit_snap.section("c0");
        let has = |p: &dyn Fn(&String) -> bool| c0.is_some_and(|l| l.iter().any(p));
        if !has(&|l| l.starts_with("rule v4 pref 32765 from ") && l.ends_with(" lookup 100"))
            || !has(&|l| l.starts_with("route 0.0.0.0/0 via ") && l.ends_with(" table 100"))
        {
            problems.push(format!("sbr: rule or table 100 missing in c0: {c0:?}"));
        }
    }
    problems.extend(compare_snapshots("after ADD", &snap(&r, case)?, &knit_snap));
    for w in [&r, &k] {
        // The reference fails CHECK in places (portmap looks for IPv6 chains it never made,
        // containernetworking/plugins#819; a gateway-less bridge changes MAC as ports join):
        // the oracle's CHECK is reported, not required. knit's must pass.
        if w.side.label == "ref" {
            if let Err(e) = check_all(w) {
                println!("  note {}: {e:#} (reference, not required)", case.name);
            }
        }
        let steps = [
            check_reach(w, case).context("reachability"),
            if w.side.label == "ref" {
                Ok(())
            } else {
                check_all(w)
            },
            del_without_netns(w, case),
        ];
        problems.extend(
            steps
                .into_iter()
                .filter_map(|s| s.err())
                .map(|e| format!("{}: {e:#}", w.side.label)),
        );
    }
    let mut del_ms = Vec::new();
    for w in [&r, &k] {
        match del_all(w, case) {
            Ok(t) => del_ms.push(t.as_secs_f64() * 1e3),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let host_only = |w: &World| -> Result<Snapshot> {
        snapshot::snapshot(&w.side.host, &[], &Options::default())
    };
    problems.extend(compare_snapshots(
        "after DEL",
        &host_only(&r)?,
        &host_only(&k)?,
    ));
    if del_ms.len() == 2 {
        println!(
            "  {}: 2 containers: ADD ref {:.1} ms, knit {:.1} ms; DEL ref {:.1} ms, knit {:.1} ms",
            case.name, r.add_ms, k.add_ms, del_ms[0], del_ms[1]
        );
    }
    Ok(problems)
}

/// Can this kernel run the case at all? (bridge and veth; nftables for NAT cases.)
fn missing_feature(case: &Case) -> Option<String> {
    let ns = TestNs::new("probe").ok()?;
    if ns
        .run(&["ip", "link", "add", "kntp0", "type", "bridge"])
        .is_err()
    {
        return Some("kernel lacks bridge".into());
    }
    if ns
        .run(&[
            "ip", "link", "add", "kntp1", "type", "veth", "peer", "name", "kntp2",
        ])
        .is_err()
    {
        return Some("kernel lacks veth".into());
    }
    let nat = !case.ports.is_empty() || case.masq || case.spoof;
    if nat
        && ns
            .run(&["nft", "add", "table", "inet", "kntprobe"])
            .is_err()
    {
        return Some("kernel lacks nftables".into());
    }
    // Link kinds this kernel may be built without (CONFIG_VLAN_8021Q, CONFIG_DUMMY).
    let kinds = netns_tests::cni::plugins_of(&case.conflist)
        .iter()
        .filter_map(|p| p["type"].as_str());
    for kind in kinds {
        let (probe, config): (&[&str], &str) = match kind {
            "vlan" => (
                &[
                    "ip", "link", "add", "kntp3", "link", "kntp1", "type", "vlan", "id", "5",
                ],
                "CONFIG_VLAN_8021Q",
            ),
            "dummy" => (
                &["ip", "link", "add", "kntp4", "type", "dummy"],
                "CONFIG_DUMMY",
            ),
            _ => continue,
        };
        if ns.run(probe).is_err() {
            return Some(format!(
                "kernel lacks {config} (the {kind} plugin's link kind)"
            ));
        }
    }
    None
}

#[test]
fn differential_table() {
    netns_tests::require_root();
    let only: Option<Vec<String>> = std::env::var("KNT_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    println!(
        "differential: reference {} vs knit {}",
        netns_tests::reference_dir().display(),
        netns_tests::knit_dir().display()
    );
    let (mut passed, mut failed, mut not_run) = (Vec::new(), Vec::new(), Vec::new());
    for case in cases::all() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == case.name))
        {
            continue;
        }
        if let Some(reason) = missing_feature(&case) {
            println!("NOT RUN {}: {reason}", case.name);
            not_run.push(format!("{}: {reason}", case.name));
            continue;
        }
        let started = std::time::Instant::now();
        match run_case(&case) {
            Ok(p) if p.is_empty() => {
                println!(
                    "PASS {} ({:.1} s)",
                    case.name,
                    started.elapsed().as_secs_f64()
                );
                passed.push(case.name);
            }
            Ok(p) => {
                println!("FAIL {}:\n  {}", case.name, p.join("\n  "));
                failed.push(case.name);
            }
            Err(e) => {
                println!("FAIL {}: {e:#}", case.name);
                failed.push(case.name);
            }
        }
    }
    println!(
        "differential summary: passed {}, failed {} {:?}, not run: {} ({})",
        passed.len(),
        failed.len(),
        failed,
        not_run.len(),
        not_run.join("; ")
    );
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
