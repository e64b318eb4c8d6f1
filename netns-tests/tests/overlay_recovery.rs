//! The multi-host overlay recovering from failures, and refusing bad input, with every real
//! part: a real etcd, real `knit controller` replicas, a `knit agent` per host namespace,
//! containers attached through the `knit` CNI plugin (the cluster of `common/cluster.rs`).
//!
//! - `agent_restarted_after_the_cluster_changed_converges`: an agent killed (-9) while
//!   containers are added and removed on the other hosts and an address is handed on to a new
//!   container on a new host (the block of a host that left is claimed by another), then
//!   restarted: its FDB and neighbour entries are exactly what the others' containers need, and
//!   its containers and the new ones reach each other; again with SIGTERM (which revokes the
//!   host's lease at once).
//! - `etcd_restarted_under_traffic_then_changes_converge`: etcd killed and restarted on its
//!   data while two pings run: they lose nothing; a container added after it is reachable from
//!   every host, a removed one's entries leave every host, every host stays registered.
//! - `a_watch_behind_a_compaction_relists_and_converges`: the controller paused (SIGSTOP),
//!   etcd restarted under it, a container added and one removed, the history compacted
//!   (`--physical`) past them, the controller resumed: its watches resume from a compacted
//!   revision, re-list (its log says so, and it did not start a new term), and every host's
//!   entries and reachability converge. (Agents do not watch etcd: they follow the stream.)
//! - `routed_mode_programs_routes_to_the_other_hosts_blocks`: `-o mode=routed` through CNI:
//!   all pairs ping; each host has exactly one route per other host's block, via its
//!   underlay address, and no FDB or neighbour entry; a removed container is unreachable; a
//!   host gone (agent stopped) has its routes leave the others.
//! - `bad_input_is_refused_and_leaves_nothing`: an agent claiming a live host's underlay IP,
//!   then its name, exits non-zero naming the holder, with no link, socket or registration;
//!   an overlapping overlay subnet is refused with nothing written to etcd; on a /29 (one
//!   block, five addresses) the ADD that finds no block (on the host holding the full one, and
//!   on another) fails with the spec's error JSON (code 11), no veth, no link in the
//!   container, nothing in etcd, no reservation; DEL after it succeeds.
//!
//! Runs `$KNIT_BIN` (default target/release/knit) and `target/cni/bin/knit` (`make build`).
#![cfg(feature = "root-tests")]

#[allow(dead_code)]
#[path = "common/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "common/overlay_lab.rs"]
mod overlay_lab;

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use cluster::{converges, pings, vxlan_wanted, within, Cluster};
use netns_tests::topology::TestNs;

/// Containers by name: their namespaces (to ping from) and addresses (to ping).
type Named<'a> = (Vec<(&'a str, &'a TestNs)>, Vec<(&'a str, IpAddr)>);

/// Every pair of `from` × `to` pings (within a few seconds each).
fn reach(from: &[(&str, &TestNs)], to: &[(&str, IpAddr)]) -> Result<()> {
    for (a, ns) in from {
        for (b, ip) in to {
            if a != b {
                within(10, &format!("{a} pings {b} at {ip}"), || Ok(pings(ns, *ip)))?;
            }
        }
    }
    Ok(())
}

#[test]
fn agent_restarted_after_the_cluster_changed_converges() -> Result<()> {
    let t = std::time::Instant::now();
    let mut cl = Cluster::new(
        &[("ra", 41), ("rb", 42), ("rc", 43), ("rd", 44)],
        1,
        &[],
        "ov",
        &["--subnet", "10.252.0.0/16"],
        &[0, 1, 2],
    )?;
    let vni = cl.vni;
    let u: Vec<IpAddr> = cl.hosts.iter().map(|h| h.underlay).collect();
    // One container per host first, so the blocks go ra, rb, rc in order.
    let (a0, ip_a0) = cl.add(0, "a0")?;
    let (b0, ip_b0) = cl.add(1, "b0")?;
    let (c0, ip_c0) = cl.add(2, "c0")?;
    let (b1, ip_b1) = cl.add(1, "b1")?;
    reach(
        &[("a0", &a0), ("b0", &b0), ("c0", &c0)],
        &[("a0", ip_a0), ("b1", ip_b1), ("c0", ip_c0)],
    )?;
    converges(
        &cl.hosts[2],
        vni,
        &vxlan_wanted(
            &[u[0], u[1]],
            &[(ip_a0, u[0]), (ip_b0, u[1]), (ip_b1, u[1])],
        ),
        5,
    )?;

    // rc's agent crashes; its lease expires.
    cl.hosts[2].kill_agent();
    // Meanwhile: a container added on ra; rb's containers removed and rb's agent stopped
    // (its lease and block freed); rd joins and claims that block, so b0's address goes to
    // d0 on another host (its MAC is the address's; its VTEP is rd's now).
    let (a1, ip_a1) = cl.add(0, "a1")?;
    cl.del(1, "b1", &b1)?;
    cl.del(1, "b0", &b0)?;
    let st = cl.hosts[1].stop_agent()?;
    ensure!(st.success(), "rb's agent exited {st} on SIGTERM");
    cl.hosts[3].start_agent()?;
    cl.registered_are(&["ra", "rd"], 10)?;
    let (d0, ip_d0) = cl.add(3, "d0")?;
    ensure!(
        ip_d0 == ip_b0,
        "d0 got {ip_d0}, not b0's {ip_b0}: rb's block was not handed on"
    );
    // While rc is away the others hold nothing of it.
    converges(
        &cl.hosts[0],
        vni,
        &vxlan_wanted(&[u[3]], &[(ip_d0, u[3])]),
        5,
    )?;

    // rc comes back: exactly the others' containers, b0's address towards rd, nothing of rb.
    cl.hosts[2].start_agent()?;
    converges(
        &cl.hosts[2],
        vni,
        &vxlan_wanted(
            &[u[0], u[3]],
            &[(ip_a0, u[0]), (ip_a1, u[0]), (ip_d0, u[3])],
        ),
        10,
    )?;
    converges(
        &cl.hosts[0],
        vni,
        &vxlan_wanted(&[u[2], u[3]], &[(ip_c0, u[2]), (ip_d0, u[3])]),
        5,
    )?;
    converges(
        &cl.hosts[3],
        vni,
        &vxlan_wanted(
            &[u[0], u[2]],
            &[(ip_a0, u[0]), (ip_a1, u[0]), (ip_c0, u[2])],
        ),
        5,
    )?;
    reach(
        &[("c0", &c0)],
        &[("a0", ip_a0), ("a1", ip_a1), ("d0", ip_d0)],
    )?;
    reach(&[("a1", &a1), ("d0", &d0)], &[("c0", ip_c0)])?;

    // SIGTERM ra's agent (its lease goes at once); rc adds, rd removes d0 and adds d1 (which
    // takes b1's old address), ra restarts.
    let st = cl.hosts[0].stop_agent()?;
    ensure!(st.success(), "ra's agent exited {st} on SIGTERM");
    cl.registered_are(&["rc", "rd"], 5)?;
    let (c1, ip_c1) = cl.add(2, "c1")?;
    cl.del(3, "d0", &d0)?;
    let (d1, ip_d1) = cl.add(3, "d1")?;
    cl.hosts[0].start_agent()?;
    converges(
        &cl.hosts[0],
        vni,
        &vxlan_wanted(
            &[u[2], u[3]],
            &[(ip_c0, u[2]), (ip_c1, u[2]), (ip_d1, u[3])],
        ),
        10,
    )?;
    for (i, others) in [(2, [0, 3]), (3, [0, 2])] {
        let mut cs = vec![(ip_a0, u[0]), (ip_a1, u[0])];
        cs.extend(
            [(ip_c0, u[2]), (ip_c1, u[2]), (ip_d1, u[3])]
                .into_iter()
                .filter(|(_, h)| *h != u[i]),
        );
        converges(
            &cl.hosts[i],
            vni,
            &vxlan_wanted(&[u[others[0]], u[others[1]]], &cs),
            5,
        )?;
    }
    reach(&[("a0", &a0), ("a1", &a1)], &[("c1", ip_c1), ("d1", ip_d1)])?;
    reach(&[("c1", &c1), ("d1", &d1)], &[("a0", ip_a0)])?;
    eprintln!(
        "agent_restarted_after_the_cluster_changed_converges: {:?}",
        t.elapsed()
    );
    Ok(())
}

/// The block of `/26` holding `ip` (the per-host block size of these subnets).
fn block26(ip: IpAddr) -> Result<ipnet::IpNet> {
    Ok(ipnet::IpNet::new(ip, 26)?.trunc())
}

#[test]
fn routed_mode_programs_routes_to_the_other_hosts_blocks() -> Result<()> {
    let t = std::time::Instant::now();
    let mut cl = Cluster::new(
        &[("sa", 51), ("sb", 52), ("sc", 53)],
        1,
        &[],
        "rt",
        &["--subnet", "10.253.0.0/16", "-o", "mode=routed"],
        &[0, 1, 2],
    )?;
    let vni = cl.vni;
    let u: Vec<IpAddr> = cl.hosts.iter().map(|h| h.underlay).collect();
    let mut ctrs = Vec::new();
    for i in 0..3 {
        let tag = format!("r{i}");
        let (ns, ip) = cl.add(i, &tag)?;
        ctrs.push((tag, ns, ip));
    }
    let all = |n: usize| -> Named<'_> {
        let c = &ctrs[..n];
        (
            c.iter().map(|(t, ns, _)| (t.as_str(), ns)).collect(),
            c.iter().map(|(t, _, ip)| (t.as_str(), *ip)).collect(),
        )
    };
    let (from, to) = all(3);
    reach(&from, &to)?;
    // Routes to the other hosts' blocks, via their underlay addresses; no FDB or neighbour.
    let blocks = ctrs
        .iter()
        .map(|c| block26(c.2))
        .collect::<Result<Vec<_>>>()?;
    let routes = |me: usize, hosts: &[usize]| {
        let mut e = cluster::Entries::default();
        for h in hosts.iter().filter(|h| **h != me) {
            e.routes.insert((blocks[*h], u[*h]));
        }
        e
    };
    for me in 0..3 {
        converges(&cl.hosts[me], vni, &routes(me, &[0, 1, 2]), 5)?;
    }

    // A container removed: unreachable (its host keeps its block, so the route stays).
    let (tag, ns, ip) = &ctrs[2];
    cl.del(2, tag, ns)?;
    ensure!(!pings(&ctrs[0].1, *ip), "{ip} still answers after DEL");
    // A host gone (its agent stopped: its lease and blocks go): its routes leave the others.
    let st = cl.hosts[2].stop_agent()?;
    ensure!(st.success(), "sc's agent exited {st} on SIGTERM");
    for me in 0..2 {
        converges(&cl.hosts[me], vni, &routes(me, &[0, 1]), 5)?;
    }
    let (from, to) = all(2);
    reach(&from, &to)?;
    eprintln!(
        "routed_mode_programs_routes_to_the_other_hosts_blocks: {:?}",
        t.elapsed()
    );
    Ok(())
}

/// etcd's current revision (nothing written between two reads ⇔ equal).
fn revision(lab: &overlay_lab::Lab) -> Result<u64> {
    let out = lab.ul.stdout(&[
        "etcdctl",
        "--endpoints",
        &lab.etcd.url,
        "endpoint",
        "status",
        "-w",
        "json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["Status"]["header"]["revision"]
        .as_u64()
        .context("no revision in etcdctl's status")
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() -> Result<()> {
    let t = std::time::Instant::now();
    let cl = Cluster::new(
        &[("ba", 61), ("bb", 62), ("bx", 63)],
        1,
        &[],
        "ov",
        &["--subnet", "10.254.0.0/16"],
        &[0, 1],
    )?;
    let (lab, x) = (&cl.lab, &cl.hosts[2]);

    // A third agent claiming ba's underlay IP, then ba's name: refused, nothing made.
    for (name, ip, holder) in [
        ("bx", "192.168.77.61", "\"ba\""),
        ("ba", "192.168.77.63", "\"ba\""),
    ] {
        let (code, _, err) = x.knit_status(&[
            "agent",
            "--host",
            name,
            "--underlay-ip",
            ip,
            "--lease-ttl",
            "2",
        ])?;
        ensure!(code != 0, "the agent claiming {name} {ip} exited 0: {err}");
        let last = err.lines().last().unwrap_or_default();
        ensure!(
            last.contains(holder)
                && last.contains("live host")
                && (last.contains(ip) || last.contains(&format!("\"{name}\""))),
            "the error does not name the conflict: {last}"
        );
        let links = x.sh("ip -o link show")?;
        ensure!(
            links.lines().count() == 2,
            "the refused agent made links: {links}"
        );
        ensure!(!x.socket().exists(), "the refused agent left its socket");
        cl.registered_are(&["ba", "bb"], 1)?;
    }

    // An overlay subnet overlapping ov's: refused, nothing written.
    let before = revision(lab)?;
    let (code, _, err) = x.knit_status(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.254.128.0/17",
        "ov2",
    ])?;
    ensure!(code != 0 && err.contains("overlap"), "{code}: {err}");
    ensure!(revision(lab)? == before, "the refused create wrote to etcd");

    // A /29: one block (the whole subnet), which ba claims; bb gets none, ba's is full after
    // five containers. The failing ADD is the spec's error and leaves nothing behind.
    x.knit(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.99.0.0/29",
        "tiny",
    ])?;
    let (id, vni) = overlay_lab::network_id_vni(x, "tiny")?;
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(cluster::add(&cl.hosts[0], "tiny", &format!("t{i}"))?);
    }
    let ips: Vec<IpAddr> = held.iter().map(|(_, ip)| *ip).collect();
    ensure!(
        ips.iter()
            .all(|ip| ipnet::IpNet::new(*ip, 29)
                .is_ok_and(|b| b.trunc().to_string() == "10.99.0.0/29")),
        "{ips:?}"
    );
    for (i, h) in [(0usize, "ba"), (1, "bb")] {
        let host = &cl.hosts[i];
        let veths = || host.sh("ip -o link show type veth | wc -l");
        let (v0, before) = (veths()?, revision(lab)?);
        let c = TestNs::new("tfull")?;
        let r = netns_tests::cni::Runner::new(netns_tests::knit_dir(), host.k.ns.ns());
        let rt = netns_tests::cni::Runtime::new("tfull", Some(&c.path()), "eth0");
        let conf = cluster::conflist(host, "tiny", "tfull");
        let out = r.add(&conf, &rt);
        let e = out
            .result
            .as_ref()
            .err()
            .with_context(|| format!("ADD on a full /29 succeeded on {h}"))?;
        ensure!(e.code == 11, "ADD on {h}: {e}");
        ensure!(e.msg.contains("no free /29 block"), "ADD on {h}: {e}");
        let json: serde_json::Value = serde_json::from_str(&e.stdout)?;
        ensure!(
            json["code"] == 11 && json["msg"].is_string() && json["cniVersion"].is_string(),
            "not the spec's error JSON: {}",
            e.stdout
        );
        ensure!(veths()? == v0, "a veth was left on {h}");
        // bb holds no block of tiny, so the controller never sent it tiny: the links the
        // ADD made for it go with the failed ADD (ba's stay: its containers use them).
        let links = host.sh("ip -o link show")?;
        let ours = [
            overlay_vxlan::bridge_name(vni),
            overlay_vxlan::vxlan_name(vni),
        ];
        let left: Vec<&String> = ours
            .iter()
            .filter(|l| links.contains(&format!(" {l}:")) || links.contains(&format!(" {l}@")))
            .collect();
        ensure!(
            left.len() == if i == 0 { 2 } else { 0 },
            "tiny's links on {h} after the failed ADD: {left:?}"
        );
        let links = c.stdout(&["ip", "-o", "link", "show"])?;
        ensure!(
            !links.contains("eth0"),
            "eth0 left in the container: {links}"
        );
        ensure!(
            revision(lab)? == before,
            "the failed ADD on {h} wrote to etcd"
        );
        let resv = host.k.dir.path().join("cni").join(format!("knit-{id}"));
        let files = std::fs::read_dir(&resv)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0);
        ensure!(
            files == if i == 0 { 5 } else { 0 },
            "{files} reservations on {h}"
        );
        r.del(&conf, &rt, None)
            .ok()
            .with_context(|| format!("DEL after the failed ADD on {h}"))?;
    }
    let eps = lab.etcd_get_prefix(&format!("{}/endpoints/{id}/", overlay_lab::PREFIX))?;
    ensure!(eps.len() == 5, "{} endpoint records of tiny", eps.len());
    eprintln!("bad_input_is_refused_and_leaves_nothing: {:?}", t.elapsed());
    Ok(())
}

/// Sends `sig` to a child we own (not reaped yet).
fn signal(c: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped.
    unsafe { libc::kill(c.id() as i32, sig) };
}

/// A ping every 50 ms from `from` to `to`, until [`ping_lost_nothing`].
fn ping_on(from: &TestNs, to: IpAddr) -> Result<std::process::Child> {
    Ok(from
        .command("ping")
        .args(["-i", "0.05", "-W", "1", &to.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?)
}

/// Stops a [`ping_on`] (SIGINT: it prints its statistics) and checks that it lost nothing.
fn ping_lost_nothing(p: std::process::Child, what: &str) -> Result<()> {
    signal(&p, libc::SIGINT);
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let sent: u32 = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure!(
        sent >= 20 && text.contains(" 0% packet loss"),
        "{what}: the ping lost packets (or hardly ran):\n{text}"
    );
    Ok(())
}

/// The containers `cs` (address, host index) each host of `u` must see: those on other hosts.
fn wanted_on(me: usize, u: &[IpAddr], live: &[usize], cs: &[(IpAddr, usize)]) -> cluster::Entries {
    let hosts: Vec<IpAddr> = live.iter().filter(|h| **h != me).map(|h| u[*h]).collect();
    let remote: Vec<(IpAddr, IpAddr)> = cs
        .iter()
        .filter(|(_, h)| *h != me)
        .map(|(ip, h)| (*ip, u[*h]))
        .collect();
    vxlan_wanted(&hosts, &remote)
}

#[test]
fn etcd_restarted_under_traffic_then_changes_converge() -> Result<()> {
    let t = std::time::Instant::now();
    let mut cl = Cluster::new(
        &[("ea", 71), ("eb", 72), ("ec", 73)],
        1,
        &[],
        "ov",
        &["--subnet", "10.248.0.0/16"],
        &[0, 1, 2],
    )?;
    let vni = cl.vni;
    let u: Vec<IpAddr> = cl.hosts.iter().map(|h| h.underlay).collect();
    let (e0, ip0) = cl.add(0, "e0")?;
    let (e1, ip1) = cl.add(1, "e1")?;
    let (e2, ip2) = cl.add(2, "e2")?;
    let (e3, ip3) = cl.add(2, "e3")?;
    reach(
        &[("e0", &e0), ("e1", &e1), ("e2", &e2)],
        &[("e0", ip0), ("e1", ip1), ("e2", ip2), ("e3", ip3)],
    )?;
    // Killed on every way out (a failure below would leave them pinging forever).
    let mut pings = cluster::Procs(vec![ping_on(&e0, ip1)?, ping_on(&e1, ip2)?]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let down = std::time::Instant::now();
    cl.lab.etcd.stop();
    cl.lab.etcd.restart()?;
    eprintln!("etcd down for {:?}", down.elapsed());

    // After the restart: a new container through CNI, reachable from every host; a removed
    // one's entries leave every host; the hosts stayed registered.
    let (n0, ipn) = cl.add(1, "n0")?;
    cl.del(2, "e3", &e3)?;
    let cs = [(ip0, 0), (ip1, 1), (ip2, 2), (ipn, 1)];
    for me in 0..3 {
        converges(&cl.hosts[me], vni, &wanted_on(me, &u, &[0, 1, 2], &cs), 10)?;
    }
    reach(&[("e0", &e0), ("e1", &e1), ("e2", &e2)], &[("n0", ipn)])?;
    reach(&[("n0", &n0)], &[("e0", ip0), ("e2", ip2)])?;
    // Past the hosts' lease TTL after the restart: a lease lost meanwhile would have cut the
    // pings (its host's endpoints leave the others).
    std::thread::sleep(std::time::Duration::from_secs(5).saturating_sub(down.elapsed()));
    cl.registered_are(&["ea", "eb", "ec"], 1)?;
    let mut each = pings.0.drain(..);
    let (p01, p12) = (each.next().context("ping")?, each.next().context("ping")?);
    let r01 = ping_lost_nothing(p01, "e0 -> e1 across the etcd restart");
    ping_lost_nothing(p12, "e1 -> e2 across the etcd restart")?;
    r01?;
    eprintln!(
        "etcd_restarted_under_traffic_then_changes_converge: {:?}",
        t.elapsed()
    );
    Ok(())
}

#[test]
fn a_watch_behind_a_compaction_relists_and_converges() -> Result<()> {
    let t = std::time::Instant::now();
    // A leader lease longer than the controller's pause below, so it stays the leader and
    // resumes its watches (rather than loading everything again in a new term).
    let mut cl = Cluster::new(
        &[("ka", 81), ("kb", 82), ("kc", 83)],
        1,
        &["--lease-ttl", "20"],
        "ov",
        &["--subnet", "10.247.0.0/16"],
        &[0, 1, 2],
    )?;
    let vni = cl.vni;
    let u: Vec<IpAddr> = cl.hosts.iter().map(|h| h.underlay).collect();
    let (k0, ip0) = cl.add(0, "k0")?;
    let (k1, ip1) = cl.add(1, "k1")?;
    let (k2, ip2) = cl.add(2, "k2")?;
    let (k3, ip3) = cl.add(2, "k3")?;
    reach(
        &[("k0", &k0), ("k1", &k1)],
        &[("k0", ip0), ("k1", ip1), ("k2", ip2), ("k3", ip3)],
    )?;

    // The controller paused; etcd restarted under it (its watch streams die); a container
    // added and one removed; etcd's history compacted past them; the controller resumed.
    signal(&cl.ctls.0[0], libc::SIGSTOP);
    cl.lab.etcd.stop();
    cl.lab.etcd.restart()?;
    let (k4, ip4) = cl.add(1, "k4")?;
    cl.del(2, "k3", &k3)?;
    let rev = revision(&cl.lab)?;
    cl.lab.ul.run(&[
        "etcdctl",
        "--endpoints",
        &cl.lab.etcd.url,
        "compact",
        &rev.to_string(),
        "--physical",
    ])?;
    signal(&cl.ctls.0[0], libc::SIGCONT);

    let cs = [(ip0, 0), (ip1, 1), (ip2, 2), (ip4, 1)];
    for me in 0..3 {
        converges(&cl.hosts[me], vni, &wanted_on(me, &u, &[0, 1, 2], &cs), 10)?;
    }
    reach(&[("k0", &k0), ("k2", &k2)], &[("k4", ip4)])?;
    reach(&[("k4", &k4)], &[("k0", ip0), ("k2", ip2)])?;
    let log = cl.hosts[0].k.log("controller.log");
    ensure!(
        log.lines()
            .any(|l| l.contains("resynced after a compaction") && l.contains("Endpoints")),
        "the controller did not re-list the endpoints after the compaction:\n{log}"
    );
    ensure!(
        log.matches("model loaded").count() == 1,
        "the controller loaded the model again (a new term) instead of resuming:\n{log}"
    );
    eprintln!(
        "a_watch_behind_a_compaction_relists_and_converges: {:?}",
        t.elapsed()
    );
    Ok(())
}
