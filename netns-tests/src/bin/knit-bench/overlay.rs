//! Cross-host TCP over knit's overlay against the same topology built by hand, in one run.
//!
//! One underlay bridge (its own namespace, with a real etcd on it) joins four "hosts": k1 and
//! k2 run knit (a controller on k1, an agent on each; two containers attached through the
//! `knit` CNI plugin, one per host), m1 and m2 are built by hand as the issue says (`ip link add
//! ... type vxlan`, a bridge, static FDB entries, veths with knit's MTU). iperf3 (5 s) runs
//! container to container across hosts, the two sides alternating over 3 rounds each; the
//! ratio of medians is knit / by hand (target ≥ 0.97: knit must add nothing to the data path).

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netns_tests::cni::{Runner, Runtime};
use netns_tests::etcd::EtcdServer;
use netns_tests::knit::KnitHost;
use netns_tests::topology::TestNs;
use serde_json::{json, Value};

use crate::{check_stop, Verdict};

const UL_IP: &str = "192.168.78.1";
const ROUNDS: usize = 3;
const SECS: u32 = 5;

pub fn report(verdict: &mut Verdict) -> Result<()> {
    println!(
        "\noverlay: cross-host TCP (iperf3, {SECS} s), knit's VXLAN vs the same built by hand:"
    );
    let ratio = match measure() {
        Ok(r) => r,
        Err(e) => {
            check_stop()?;
            println!("  overlay: FAILED: {e:#}");
            f64::NAN
        }
    };
    // Target: knit ≥ 0.97x the hand-built path, i.e. by hand / knit ≤ 1/0.97 = 1.031.
    verdict.target(
        "overlay TCP by hand / knit (knit >= 0.97x)",
        1.0 / ratio,
        1.031,
    );
    Ok(())
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sh(ns: &TestNs, cmd: &str) -> Result<()> {
    let o = ns.run(&["sh", "-c", cmd])?;
    ensure!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// A host namespace with eth0 on the underlay bridge of `ul`.
fn plug(ul: &TestNs, ns: &TestNs, tag: &str, ip: &str) -> Result<()> {
    sh(
        ns,
        &format!(
            "ip link add eth0 type veth peer name ul-{tag} netns {} && ip addr add {ip}/24 dev eth0 \
             && ip link set eth0 up && ip link set lo up",
            ul.name()
        ),
    )?;
    sh(ul, &format!("ip link set ul-{tag} master ulbr up"))
}

/// Throughput in Gbit/s of `secs` of iperf3 from `client` to `server_ip` (an iperf3 server
/// running in the server's namespace).
fn iperf(client: &TestNs, server: &TestNs, server_ip: IpAddr) -> Result<f64> {
    let mut srv = Procs(vec![server
        .command("iperf3")
        .args(["-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("iperf3 -s")?]);
    let t = Instant::now();
    loop {
        let o = client
            .command("iperf3")
            .args(["-c", &server_ip.to_string(), "-t", &SECS.to_string(), "-J"])
            .output()?;
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout)?;
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .context("iperf3 JSON without sum_received")?;
            srv.0.clear();
            return Ok(bps / 1e9);
        }
        if t.elapsed() > Duration::from_secs(5) {
            bail!(
                "iperf3 -c {server_ip}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure() -> Result<f64> {
    let ul = TestNs::new("oul")?;
    sh(
        &ul,
        &format!("ip link add ulbr type bridge && ip addr add {UL_IP}/24 dev ulbr && ip link set ulbr up"),
    )?;
    let etcd = EtcdServer::start_in(&ul, UL_IP.parse()?)?;

    // knit's side.
    let k: Vec<KnitHost> = vec![KnitHost::new("ok1")?, KnitHost::new("ok2")?];
    let mut procs = Procs(Vec::new());
    for (i, h) in k.iter().enumerate() {
        plug(
            &ul,
            &h.ns,
            &format!("k{i}"),
            &format!("192.168.78.1{}", i + 1),
        )?;
    }
    k[0].knit(&[
        "--etcd",
        &etcd.url,
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.249.0.0/16",
        "bench",
    ])?;
    procs.0.push(k[0].spawn(
        &[
            "--etcd",
            &etcd.url,
            "controller",
            "--listen",
            "192.168.78.11:7472",
        ],
        "controller.log",
    )?);
    for (i, h) in k.iter().enumerate() {
        procs.0.push(h.spawn(
            &[
                "--etcd",
                &etcd.url,
                "agent",
                "--host",
                &format!("bench{i}"),
                "--underlay-ip",
                &format!("192.168.78.1{}", i + 1),
            ],
            "agent.log",
        )?);
    }
    let mut kc = Vec::new();
    for (i, h) in k.iter().enumerate() {
        let sock = h.dir.path().join("run/agent.sock");
        let t = Instant::now();
        while !sock.exists() {
            ensure!(
                t.elapsed() < Duration::from_secs(20),
                "agent {i}: {}",
                h.log("agent.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = TestNs::new(&format!("okc{i}"))?;
        let conf = json!({"cniVersion": "1.0.0", "name": "bench",
            "plugins": [{"type": "knit", "network": "bench", "socket": sock}]});
        let r = Runner::new(netns_tests::knit_dir(), h.ns.ns());
        let res = r.add(
            &conf,
            &Runtime::new(&format!("okc{i}"), Some(&c.path()), "eth0"),
        );
        let v = res.ok().with_context(|| format!("ADD on k{i}"))?.clone();
        let addr = v["ips"][0]["address"].as_str().context("address")?;
        let ip: IpAddr = addr.split('/').next().unwrap_or(addr).parse()?;
        kc.push((c, ip));
    }

    // The same by hand: vxlan 42 on a bridge per host, static FDB, containers on veths.
    let m: Vec<TestNs> = vec![TestNs::new("om1")?, TestNs::new("om2")?];
    let mut mc = Vec::new();
    for (i, h) in m.iter().enumerate() {
        let me = format!("192.168.78.2{}", i + 1);
        plug(&ul, h, &format!("m{i}"), &me)?;
        let c = TestNs::new(&format!("omc{i}"))?;
        let ip = format!("10.248.0.{}", i + 2);
        let mac = format!("0a:58:0a:f8:00:0{}", i + 2);
        sh(
            h,
            &format!(
                "ip link add br0 type bridge && ip link set br0 up && \
                 ip link add vx0 type vxlan id 42 local {me} dstport 4789 nolearning dev eth0 && \
                 ip link set vx0 master br0 && bridge link set dev vx0 learning off && \
                 ip link set vx0 up && \
                 ip link add h-c type veth peer name eth0 netns {} && ip link set h-c mtu 1450 \
                 master br0 up",
                c.name()
            ),
        )?;
        sh(
            &c,
            &format!(
                "ip link set eth0 mtu 1450 address {mac} && ip addr add {ip}/24 dev eth0 && \
                 ip link set eth0 up && ip link set lo up"
            ),
        )?;
        mc.push((c, ip.parse::<IpAddr>()?, mac));
    }
    for (i, h) in m.iter().enumerate() {
        let other = 1 - i;
        let (_, oip, omac) = &mc[other];
        sh(
            h,
            &format!(
                "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.168.78.2{} && \
                 bridge fdb add {omac} dev vx0 dst 192.168.78.2{} self permanent",
                other + 1,
                other + 1
            ),
        )?;
        sh(
            &mc[i].0,
            &format!("ip neigh replace {oip} lladdr {omac} dev eth0 nud permanent"),
        )?;
    }
    let reach = |a: &TestNs, ip: IpAddr| -> Result<()> {
        let t = Instant::now();
        while !a
            .run(&["ping", "-c1", "-W1", &ip.to_string()])
            .is_ok_and(|o| o.status.success())
        {
            ensure!(t.elapsed() < Duration::from_secs(15), "{ip} unreachable");
        }
        Ok(())
    };
    reach(&kc[0].0, kc[1].1).context("knit's overlay")?;
    reach(&mc[0].0, mc[1].1).context("the hand-built vxlan")?;

    let (mut knit, mut hand) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        check_stop()?;
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_knit in order {
            if is_knit {
                knit.push(iperf(&kc[0].0, &kc[1].0, kc[1].1)?);
            } else {
                hand.push(iperf(&mc[0].0, &mc[1].0, mc[1].1)?);
            }
        }
    }
    let (k50, h50) = (median(knit.clone()), median(hand.clone()));
    println!(
        "  knit {k50:.2} Gbit/s (rounds {knit:.2?}), by hand {h50:.2} Gbit/s (rounds {hand:.2?}): \
         knit/hand {:.3}",
        k50 / h50
    );
    for (i, (c, _)) in kc.iter().enumerate() {
        let sock = k[i].dir.path().join("run/agent.sock");
        let conf = json!({"cniVersion": "1.0.0", "name": "bench",
            "plugins": [{"type": "knit", "network": "bench", "socket": sock}]});
        let rk = Runner::new(netns_tests::knit_dir(), k[i].ns.ns());
        let _ = rk.del(
            &conf,
            &Runtime::new(&format!("okc{i}"), Some(&c.path()), "eth0"),
            None,
        );
    }
    drop(procs);
    Ok(k50 / h50)
}
