//! The agent in etcd mode, end to end with the real binaries: a real etcd on an underlay
//! namespace, hosts as namespaces with `knit --etcd URL agent` in them, and a scripted
//! controller (the real protocol's types) that holds the leader key.
//!
//! - `full_delta_and_restart`: the leader key names a standby, which answers NotLeader: the
//!   agent follows it to the leader. A Full programs FDB and neighbour entries; a Delta adds
//!   and removes them (metrics count it); a Delta whose base is not the version held makes
//!   the agent reconnect saying what it holds; the agent killed, entries planted by hand and
//!   the cluster changed meanwhile, restarted: after its Full no stale entry is left; a Full
//!   without the network removes its links; SIGTERM revokes the host's lease at once.
//! - `cni_across_hosts`: overlay network created by the CLI; containers ADDed through
//!   `target/cni/bin/knit` on two hosts get addresses from their host's block and endpoint
//!   records naming their host; with both hosts' states pushed, they ping across hosts; DEL
//!   leaves no link, reservation or record; DEL again and DEL with CNI_NETNS empty succeed;
//!   GC removes an attachment not listed valid and keeps the valid one; STATUS fails clearly
//!   with the agent down.
//!
//! Runs `$KNIT_BIN` (default target/release/knit) and `target/cni/bin/knit` (`make build`).
#![cfg(feature = "root-tests")]

#[path = "common/overlay_lab.rs"]
mod overlay_lab;

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use netns_tests::cni::{Runner, Runtime};
use netns_tests::topology::TestNs;
use overlay_lab::{network_id_vni, Host, Lab, CONTROLLER_PORT, PREFIX, UNDERLAY_GW};
use overlay_vxlan::{HostDesired, Mac, Mode, NetworkDesired, RemoteEndpoint, RemoteHost, Subnet};
use sdn_controller::proto::{Change, ControllerMsg};
use serde_json::{json, Value};

const SUBNET: &str = "10.250.0.0/16";

fn net_desired(id: &str, vni: u32, me: &Host) -> NetworkDesired {
    NetworkDesired {
        id: id.into(),
        vni,
        subnets: vec![Subnet {
            cidr: SUBNET.parse().unwrap(),
            gateway: Some("10.250.0.1".parse().unwrap()),
        }],
        mode: Mode::Vxlan,
        underlay_ip: me.underlay,
        endpoints: vec![],
        hosts: vec![],
    }
}

fn remote(ip: &str, host: IpAddr) -> RemoteEndpoint {
    let ip: IpAddr = ip.parse().unwrap();
    RemoteEndpoint {
        ip,
        mac: Mac(overlay_vxlan::endpoint_mac(ip)),
        host,
    }
}

fn mac_of(ip: &str) -> String {
    Mac(overlay_vxlan::endpoint_mac(ip.parse().unwrap())).to_string()
}

fn full(version: u64, nets: Vec<NetworkDesired>) -> ControllerMsg {
    ControllerMsg::Full {
        version,
        state: HostDesired {
            format: overlay_vxlan::FORMAT,
            networks: nets,
        },
    }
}

/// `bridge fdb` of the vxlan device and `ip neigh` of the bridge, as text.
fn tables(h: &Host, vni: u32) -> Result<(String, String)> {
    let fdb = h.sh(&format!(
        "bridge fdb show dev {}",
        overlay_vxlan::vxlan_name(vni)
    ))?;
    let neigh = h.sh(&format!(
        "ip neigh show dev {}",
        overlay_vxlan::bridge_name(vni)
    ))?;
    Ok((fdb, neigh))
}

fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn full_delta_and_restart() -> Result<()> {
    let lab = Lab::new()?;
    let mut h1 = lab.host("ha", 11)?;
    let peer: IpAddr = "192.168.77.12".parse()?;
    h1.knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, "ov",
    ])?;
    let (id, vni) = network_id_vni(&h1, "ov")?;
    let ctl = lab.controller()?;
    // The leader key names a standby first: it answers NotLeader with the real leader.
    let standby = lab.controller_at(7071, Some(format!("{UNDERLAY_GW}:{CONTROLLER_PORT}")))?;
    lab.etcd_put(
        &format!("{PREFIX}/controller/leader"),
        &format!("{UNDERLAY_GW}:7071"),
    )?;
    h1.start_agent()?;
    standby.hello(&h1.name, 1)?;
    assert_eq!(
        ctl.hello(&h1.name, 1)?,
        None,
        "a fresh agent holds no version"
    );
    // The key catches up (a new leader writes it), so the agent stays on this stream.
    lab.etcd_put(
        &format!("{PREFIX}/controller/leader"),
        &format!("{UNDERLAY_GW}:{CONTROLLER_PORT}"),
    )?;

    // Full: one remote endpoint on the peer host.
    let mut n = net_desired(&id, vni, &h1);
    n.endpoints = vec![remote("10.250.1.5", peer)];
    n.hosts = vec![RemoteHost {
        underlay_ip: peer,
        blocks: vec![],
    }];
    ctl.push(&h1.name, &full(1, vec![n.clone()]), 1)?;
    let (fdb, neigh) = tables(&h1, vni)?;
    ensure!(
        fdb.contains(&format!("{} dst {peer}", mac_of("10.250.1.5"))),
        "fdb: {fdb}"
    );
    ensure!(
        fdb.contains(&format!("00:00:00:00:00:00 dst {peer}")),
        "flood entry: {fdb}"
    );
    ensure!(
        neigh.contains(&format!("10.250.1.5 lladdr {}", mac_of("10.250.1.5"))),
        "neigh: {neigh}"
    );

    // Delta: .6 comes, .5 goes.
    let delta = ControllerMsg::Delta {
        base: 1,
        version: 2,
        changes: vec![
            Change::EndpointPut {
                network: id.clone(),
                endpoint: remote("10.250.1.6", peer),
            },
            Change::EndpointDel {
                network: id.clone(),
                ip: "10.250.1.5".parse()?,
            },
        ],
    };
    ctl.push(&h1.name, &delta, 2)?;
    let (fdb, neigh) = tables(&h1, vni)?;
    ensure!(
        fdb.contains(&mac_of("10.250.1.6")) && !fdb.contains(&mac_of("10.250.1.5")),
        "fdb: {fdb}"
    );
    ensure!(
        neigh.contains("10.250.1.6 ") && !neigh.contains("10.250.1.5 "),
        "neigh: {neigh}"
    );
    let page = h1.metrics()?;
    assert_eq!(
        metric(&page, "knit_agent_deltas_applied_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "knit_agent_stream_connected"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "knit_agent_state_version"),
        Some(2.0),
        "{page}"
    );
    // Remote MAC + flood entry.
    assert_eq!(metric(&page, "knit_agent_fdb_entries"), Some(2.0), "{page}");

    // A delta that does not follow the version held: the agent reconnects for a Full,
    // telling the version it holds.
    let gap = ControllerMsg::Delta {
        base: 7,
        version: 8,
        changes: vec![],
    };
    ctl.send(&h1.name, &gap)?;
    assert_eq!(
        ctl.hello(&h1.name, 2)?,
        Some(2),
        "reconnects holding version 2"
    );

    // Crash; stale entries appear by hand; the cluster moves on (.6 gone, .7 added).
    h1.kill_agent();
    let vx = overlay_vxlan::vxlan_name(vni);
    let br = overlay_vxlan::bridge_name(vni);
    h1.sh(&format!(
        "bridge fdb append 02:00:00:00:00:99 dev {vx} dst 192.168.77.99 && \
         ip neigh replace 10.250.1.99 lladdr 02:00:00:00:00:99 dev {br} nud permanent"
    ))?;
    h1.start_agent()?;
    // Its killed run's lease still held the name and address: ended at once (recorded in
    // the state dir), not waited out.
    let log = h1.k.log("agent.log");
    ensure!(
        log.contains("this host's previous run still holds its lease: revoking it")
            && !log.contains("registering the host; retrying"),
        "the restarted agent did not end its previous lease:\n{log}"
    );
    assert_eq!(
        ctl.hello(&h1.name, 3)?,
        None,
        "a restarted agent starts from nothing"
    );
    n.endpoints = vec![remote("10.250.1.7", peer)];
    ctl.push(&h1.name, &full(3, vec![n]), 3)?;
    let (fdb, neigh) = tables(&h1, vni)?;
    for stale in ["02:00:00:00:00:99", "192.168.77.99", &mac_of("10.250.1.6")] {
        ensure!(
            !fdb.contains(stale),
            "stale {stale} survived the restart: {fdb}"
        );
    }
    ensure!(
        !neigh.contains("10.250.1.99") && !neigh.contains("10.250.1.6 "),
        "neigh: {neigh}"
    );
    ensure!(
        fdb.contains(&mac_of("10.250.1.7")) && neigh.contains("10.250.1.7 "),
        "{fdb}\n{neigh}"
    );

    // A Full without the network removes its links.
    ctl.push(&h1.name, &full(4, vec![]), 4)?;
    let links = h1.sh("ip -o link show")?;
    ensure!(
        !links.contains(&vx) && !links.contains(&br),
        "links left: {links}"
    );

    // A clean stop revokes the host's lease at once (a crash leaves it to the TTL).
    let st = h1.stop_agent()?;
    ensure!(st.success(), "agent exit: {st}: {}", h1.k.log("agent.log"));
    let hosts = lab.etcd_get_prefix(&format!("{PREFIX}/hosts/"))?;
    ensure!(
        hosts.is_empty(),
        "host still registered after SIGTERM: {hosts:?}"
    );
    Ok(())
}

fn conflist(h: &Host) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "ov",
        "plugins": [{"type": "knit", "network": "ov", "socket": h.socket()}],
    })
}

fn add(h: &Host, c: &TestNs, id: &str) -> Result<(Value, IpAddr)> {
    let r = Runner::new(netns_tests::knit_dir(), h.k.ns.ns());
    let res = r.add(&conflist(h), &Runtime::new(id, Some(&c.path()), "eth0"));
    let v = res
        .ok()
        .with_context(|| format!("ADD {id} on {}", h.name))?
        .clone();
    let addr = v["ips"][0]["address"].as_str().context("address")?;
    let ip: ipnet::IpNet = addr.parse()?;
    Ok((v, ip.addr()))
}

#[test]
fn cni_across_hosts() -> Result<()> {
    let lab = Lab::new()?;
    let mut h1 = lab.host("hc", 21)?;
    let mut h2 = lab.host("hd", 22)?;
    h1.knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, "ov",
    ])?;
    let (id, vni) = network_id_vni(&h2, "ov")?;
    let ctl = lab.controller()?;
    h1.start_agent()?;
    h2.start_agent()?;
    ctl.hello(&h1.name, 1)?;
    ctl.hello(&h2.name, 1)?;

    let c1 = TestNs::new("ca")?;
    let c2 = TestNs::new("cb")?;
    let (r1, ip1) = add(&h1, &c1, "ctr-a")?;
    let (_, ip2) = add(&h2, &c2, "ctr-b")?;
    // Each host's address from its own /26.
    let b1: ipnet::IpNet = format!("{ip1}/26").parse::<ipnet::IpNet>()?.trunc();
    let b2: ipnet::IpNet = format!("{ip2}/26").parse::<ipnet::IpNet>()?.trunc();
    ensure!(b1 != b2, "both hosts allocated from {b1}");
    let blocks = lab.etcd_get_prefix(&format!("{PREFIX}/blocks/{id}/"))?;
    for (host, b) in [(&h1.name, b1), (&h2.name, b2)] {
        ensure!(
            blocks
                .iter()
                .any(|(k, v)| k.ends_with(&format!("{}_26", b.network()))
                    && v.contains(host.as_str())),
            "block {b} of {host} not in etcd: {blocks:?}"
        );
    }
    assert_eq!(r1["interfaces"][2]["mac"], mac_of(&ip1.to_string()), "{r1}");
    let eps = lab.etcd_get_prefix(&format!("{PREFIX}/endpoints/{id}/"))?;
    for (host, ip) in [(&h1.name, ip1), (&h2.name, ip2)] {
        ensure!(
            eps.iter()
                .any(|(_, v)| v.contains(&format!("\"host\":\"{host}\""))
                    && v.contains(&ip.to_string())),
            "no endpoint record of {ip} on {host}: {eps:?}"
        );
    }

    // The scripted controller tells each host about the other.
    let view = |me: &Host, other: &Host, ip: IpAddr, block| {
        let mut n = net_desired(&id, vni, me);
        n.endpoints = vec![remote(&ip.to_string(), other.underlay)];
        n.hosts = vec![RemoteHost {
            underlay_ip: other.underlay,
            blocks: vec![block],
        }];
        n
    };
    ctl.push(&h1.name, &full(1, vec![view(&h1, &h2, ip2, b2)]), 1)?;
    ctl.push(&h2.name, &full(1, vec![view(&h2, &h1, ip1, b1)]), 1)?;
    c1.run(&["ping", "-c", "2", "-W", "2", &ip2.to_string()])
        .context("ping across hosts")?;
    c2.run(&["ping", "-c", "1", "-W", "2", &ip1.to_string()])?;

    // GC on h2 with only ctr-b valid: a third container there goes, ctr-b stays.
    let c3 = TestNs::new("cc")?;
    let (_, ip3) = add(&h2, &c3, "ctr-c")?;
    ensure!(b2.contains(&ip3), "{ip3} not from h2's block {b2}");
    let r2 = Runner::new(netns_tests::knit_dir(), h2.k.ns.ns());
    let gc = json!({"cniVersion": "1.1.0", "name": "ov", "type": "knit", "socket": h2.socket(),
        "cni.dev/valid-attachments": [{"containerID": "ctr-b", "ifname": "eth0"}]});
    r2.call("knit", &r2.env("GC", &Runtime::new("", None, "")), &gc)
        .outcome
        .map_err(|e| anyhow::anyhow!("GC: {} {}", e.msg, e.stderr))?;
    let eps = lab.etcd_get_prefix(&format!("{PREFIX}/endpoints/{id}/"))?;
    ensure!(
        !eps.iter().any(|(_, v)| v.contains(&format!("\"{ip3}/"))),
        "GC left ctr-c's record: {eps:?}"
    );
    ensure!(
        eps.iter().any(|(_, v)| v.contains(&format!("\"{ip2}/"))),
        "GC removed ctr-b's record: {eps:?}"
    );
    ensure!(
        !c3.stdout(&["ip", "-o", "link", "show"])?.contains("eth0"),
        "GC left ctr-c's eth0"
    );
    c1.run(&["ping", "-c", "1", "-W", "2", &ip2.to_string()])
        .context("ping after GC")?;

    // CHECK passes; DEL leaves nothing; DEL again is fine.
    let r = Runner::new(netns_tests::knit_dir(), h1.k.ns.ns());
    let rt1 = Runtime::new("ctr-a", Some(&c1.path()), "eth0");
    r.check(&conflist(&h1), &rt1, &r1).ok().context("CHECK")?;
    r.del(&conflist(&h1), &rt1, Some(&r1)).ok().context("DEL")?;
    let links = h1.sh("ip -o link show")?;
    ensure!(
        links.matches("master ").count() == 1,
        "only the vxlan port should be left on a bridge: {links}"
    );
    let c1links = c1.stdout(&["ip", "-o", "link", "show"])?;
    ensure!(
        !c1links.contains("eth0"),
        "eth0 left in the container: {c1links}"
    );
    let resv =
        h1.k.dir
            .path()
            .join("cni")
            .join(format!("knit-{id}"))
            .join(ip1.to_string());
    ensure!(!resv.exists(), "reservation {} left", resv.display());
    let eps = lab.etcd_get_prefix(&format!("{PREFIX}/endpoints/{id}/"))?;
    ensure!(
        !eps.iter().any(|(_, v)| v.contains(&ip1.to_string())),
        "record left: {eps:?}"
    );
    r.del(&conflist(&h1), &rt1, Some(&r1))
        .ok()
        .context("DEL again")?;

    // DEL with the namespace gone (CNI_NETNS empty).
    let mut c2 = c2;
    c2.delete()?;
    r2.del(&conflist(&h2), &Runtime::new("ctr-b", None, "eth0"), None)
        .ok()
        .context("DEL without netns")?;
    let links = h2.sh("ip -o link show")?;
    ensure!(
        links.matches("master ").count() == 1,
        "veth left on h2: {links}"
    );
    let eps = lab.etcd_get_prefix(&format!("{PREFIX}/endpoints/{id}/"))?;
    ensure!(eps.is_empty(), "records left: {eps:?}");

    // The network can go now; STATUS fails clearly without the agent.
    h1.knit(&["network", "rm", "ov"])?;
    h1.kill_agent();
    let r = Runner::new(netns_tests::knit_dir(), h1.k.ns.ns());
    let status =
        json!({"cniVersion": "1.1.0", "name": "ov", "type": "knit", "socket": h1.socket()});
    let env = r.env("STATUS", &Runtime::new("x", None, "eth0"));
    let call = r.call("knit", &env, &status);
    let e = call
        .outcome
        .err()
        .context("STATUS with the agent down succeeded")?;
    assert_eq!(e.code, 50, "{}", e.msg);
    ensure!(e.msg.contains("agent.sock"), "{}", e.msg);
    drop(h2);
    Ok(())
}

/// The holder of block `b` of network `id` in etcd, if any.
fn block_holder(lab: &Lab, id: &str, b: ipnet::IpNet) -> Result<Option<String>> {
    let key = format!("{}_{}", b.network(), b.prefix_len());
    Ok(lab
        .etcd_get_prefix(&format!("{PREFIX}/blocks/{id}/"))?
        .into_iter()
        .find(|(k, _)| k.ends_with(&key))
        .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok())
        .and_then(|v| v["host"].as_str().map(String::from)))
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = std::time::Instant::now();
    while !f()? {
        ensure!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// A crashed agent's blocks go with its lease, but its containers keep their addresses: the
/// restarted agent takes back the blocks its reservations are in, and while it is away no
/// other host claims a block its recorded endpoints are in.
#[test]
fn blocks_come_back_after_a_restart() -> Result<()> {
    let lab = Lab::new()?;
    let mut h1 = lab.host("hf", 41)?;
    let mut h2 = lab.host("hg", 42)?;
    h1.knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, "ov",
    ])?;
    let (id, _) = network_id_vni(&h1, "ov")?;
    let _ctl = lab.controller()?;
    h1.start_agent()?;
    let c1 = TestNs::new("cf")?;
    let (_, ip1) = add(&h1, &c1, "ctr-f")?;
    let b1: ipnet::IpNet = format!("{ip1}/26").parse::<ipnet::IpNet>()?.trunc();
    ensure!(block_holder(&lab, &id, b1)?.as_deref() == Some("hf"));

    h1.kill_agent();
    wait_for(15, "the crashed host's block leaves with its lease", || {
        Ok(block_holder(&lab, &id, b1)?.is_none())
    })?;
    h1.start_agent()?;
    wait_for(15, "the restarted agent takes its block back", || {
        Ok(block_holder(&lab, &id, b1)?.as_deref() == Some("hf"))
    })?;
    // The next container on h1 draws from the same block (no second block claimed).
    let c2 = TestNs::new("cf2")?;
    let (_, ip2) = add(&h1, &c2, "ctr-f2")?;
    ensure!(b1.contains(&ip2), "{ip2} is not from {b1}");

    // Crash again; while h1 is away h2 needs a block: not h1's, whose containers live on.
    h1.kill_agent();
    wait_for(15, "the block leaves again", || {
        Ok(block_holder(&lab, &id, b1)?.is_none())
    })?;
    h2.start_agent()?;
    let c3 = TestNs::new("cg")?;
    let (_, ip3) = add(&h2, &c3, "ctr-g")?;
    ensure!(!b1.contains(&ip3), "h2 took {ip3} from h1's block {b1}");
    h1.start_agent()?;
    wait_for(15, "h1 takes its block back again", || {
        Ok(block_holder(&lab, &id, b1)?.as_deref() == Some("hf"))
    })?;
    ensure!(
        !h1.k
            .log("agent.log")
            .contains("could not take back a block"),
        "{}",
        h1.k.log("agent.log")
    );
    Ok(())
}

#[test]
fn cli_refuses_bad_overlays_and_leaves_nothing() -> Result<()> {
    let lab = Lab::new()?;
    let h = lab.host("he", 31)?;
    h.knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, "ov",
    ])?;
    let (code, _, err) = h.knit_status(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.250.128.0/17",
        "ov2",
    ])?;
    assert_eq!(code, 1);
    ensure!(err.contains("overlap"), "{err}");
    let (code, _, err) = h.knit_status(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.9.0.0/24",
        "br",
    ])?;
    assert_eq!(code, 1);
    ensure!(err.contains("overlay"), "{err}");
    let ls = h.knit(&["network", "ls"])?;
    ensure!(
        ls.contains("ov") && !ls.contains("ov2") && !ls.contains(" br "),
        "{ls}"
    );
    let vnis = lab.etcd_get_prefix(&format!("{PREFIX}/vnis/"))?;
    assert_eq!(vnis.len(), 1, "{vnis:?}");
    h.knit(&["network", "rm", "ov"])?;
    let vnis = lab.etcd_get_prefix(&format!("{PREFIX}/vnis/"))?;
    ensure!(vnis.is_empty(), "the VNI was not freed: {vnis:?}");
    ensure!(
        h.knit(&["network", "ls"])?.lines().count() <= 1,
        "networks left"
    );
    Ok(())
}
