//! The multi-host overlay end to end with every real part: a real etcd on an underlay
//! namespace, three "hosts" (namespaces on the underlay bridge), two `knit controller`
//! replicas (one leads by etcd election), a `knit agent` per host, containers attached through
//! the `knit` CNI plugin.
//!
//! - `containers_on_three_hosts_reach_each_other`: all pairs ping across hosts; `knit dns`
//!   on one host answers the names of containers registered on the others; a container
//!   removed on one host is unreachable, its name gone, and its FDB and neighbour entries
//!   are gone on every other host.
//! - The leader is killed (-9) while containers are being added: the standby leads, a ping
//!   between existing containers running meanwhile loses nothing (the kernel state stays),
//!   and the container added during the failover is reachable within seconds.
//!
//! Runs `$KNIT_BIN` (default target/release/knit) and `target/cni/bin/knit` (`make build`).
#![cfg(feature = "root-tests")]

// The scripted controller of the agent tests is not used here: the real one runs.
#[allow(dead_code)]
#[path = "common/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "common/overlay_lab.rs"]
mod overlay_lab;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cluster::{controller, leader, pings, tables, within, Procs};
use netns_tests::topology::TestNs;
use overlay_lab::{network_id_vni, Host, Lab};

const SUBNET: &str = "10.251.0.0/16";

fn add(h: &Host, tag: &str) -> Result<(TestNs, IpAddr)> {
    cluster::add(h, "ov", tag)
}

fn del(h: &Host, tag: &str, c: &TestNs) -> Result<()> {
    cluster::del(h, "ov", tag, c)
}

/// `dig +short` from `from` to knit's DNS on the overlay's gateway address.
fn dig(from: &TestNs, name: &str) -> Result<String> {
    let o = from.run(&["dig", "+short", "+time=1", "+tries=1", "@10.251.0.1", name])?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn containers_on_three_hosts_reach_each_other() -> Result<()> {
    let lab = Lab::new()?;
    let mut hosts = vec![
        lab.host("ha", 31)?,
        lab.host("hb", 32)?,
        lab.host("hc", 33)?,
    ];
    hosts[0].knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, "ov",
    ])?;
    let (_, vni) = network_id_vni(&hosts[0], "ov")?;
    let mut ctls = Procs(vec![
        controller(&hosts[0], &lab.etcd.url)?,
        controller(&hosts[1], &lab.etcd.url)?,
    ]);
    within(10, "a controller leads", || Ok(leader(&lab)?.is_some()))?;
    let first = leader(&lab)?.context("leader")?;
    for h in &mut hosts {
        h.start_agent()?;
    }

    let mut ctrs = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let (ns, ip) = add(h, &format!("c{i}"))?;
        ctrs.push((i, ns, ip));
    }
    for (i, a, _) in &ctrs {
        for (j, _, ip) in &ctrs {
            if i != j {
                within(10, &format!("c{i} pings c{j} at {ip}"), || {
                    Ok(pings(a, *ip))
                })?;
            }
        }
    }

    // Names across hosts: knit's DNS on host a (on the overlay's gateway address, which every
    // host's bridge holds) answers the names of containers registered on b and c.
    let dns = hosts[0].k.spawn(
        &[
            "--etcd",
            &lab.etcd.url,
            "dns",
            "--no-forward",
            "--listen",
            "10.251.0.1",
        ],
        "dns.log",
    )?;
    ctls.0.push(dns);
    for (j, _, ip) in &ctrs[1..] {
        within(10, &format!("c{j} resolves from host a"), || {
            // No answer yet (dig exits 9) while `knit dns` starts: try again.
            Ok(dig(&ctrs[0].1, &format!("c{j}")).is_ok_and(|a| a == ip.to_string()))
        })?;
        ensure!(dig(&ctrs[0].1, &format!("c{j}.ov.knit.internal"))? == ip.to_string());
    }

    // A container removed on host c: unreachable, its entries gone on a and b.
    let (_, c2, ip2) = ctrs.pop().context("c2")?;
    del(&hosts[2], "c2", &c2)?;
    let mac = overlay_vxlan::Mac(overlay_vxlan::endpoint_mac(ip2)).to_string();
    for h in &hosts[..2] {
        within(5, &format!("{ip2}'s entries gone on {}", h.name), || {
            let t = tables(h, vni)?;
            Ok(!t.contains(&mac) && !t.contains(&format!("{ip2} ")))
        })?;
    }
    ensure!(!pings(&ctrs[0].1, ip2), "{ip2} still answers after DEL");
    within(6, "c2's name gone after DEL", || {
        Ok(dig(&ctrs[0].1, "c2")?.is_empty())
    })?;

    // Leader killed while a container is added; a ping between existing containers runs
    // across the failover.
    let (a0, ip1) = (&ctrs[0].1, ctrs[1].2);
    let ping = a0
        .command("ping")
        .args(["-i", "0.05", "-c", "160", "-W", "1", &ip1.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let killed = if first.starts_with(&format!("{}:", hosts[0].underlay)) {
        0
    } else {
        1
    };
    ctls.0[killed].kill()?;
    ctls.0[killed].wait()?;
    let (c3, ip3) = add(&hosts[2], "c3")?;
    within(15, "the standby leads", || {
        Ok(leader(&lab)?.is_some_and(|l| l != first))
    })?;
    within(
        15,
        &format!("c0 reaches c3 ({ip3}) added during the failover"),
        || Ok(pings(a0, ip3)),
    )?;
    let out = ping.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(" 0% packet loss"),
        "the ping across the failover lost packets:\n{text}"
    );
    del(&hosts[2], "c3", &c3)?;
    for (i, ns, _) in &ctrs {
        del(&hosts[*i], &format!("c{i}"), ns)?;
    }
    Ok(())
}
