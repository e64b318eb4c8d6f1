//! The controller at scale, simulated: a real etcd loaded with a cluster, a real `knit
//! controller` reading it through its list + watch, and N simulated agents (one TCP connection
//! each, speaking `sdn_controller::proto` as the real agent does, no kernel: see
//! [`crate::sim_agents`], which also checks at the end that no delta was lost or misapplied).
//!
//! The cluster (see [`Shape`]): H hosts, 1,000,000 endpoints. Tenant networks of [`SPAN`]
//! hosts each (network t on hosts 4t .. 4t+19, so every host is in 5 of them and no host holds
//! more than its neighbours' endpoints), every host holding one IPAM block in each of its
//! networks; plus one wide network where every host holds a block and one host in ten runs an
//! endpoint (a cluster-wide service network): one change there fans out to every agent.
//!
//! Measured per H: (a) the controller's own compute time per change (its
//! `knit_controller_compute_seconds` histogram, over the measured changes); (b) from an etcd
//! put (an endpoint put or delete, paced, half of them on the wide network) to every interested
//! agent holding the delta; (c) the controller's peak RSS (VmHWM); (d) how long all agents
//! take to be synced (every Full received) after the controller leads.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netns_tests::etcd::EtcdServer;
use netns_tests::scenario::TempDir;
use store::etcd::{Block, Host, Kind, Records};
use store::{Driver, Endpoint, EtcdStore, Network, Pool};

use crate::sim_agents::Agents;
use crate::{check_stop, Verdict};

pub const ENDPOINTS: usize = 1_000_000;
/// Hosts per tenant network.
const SPAN: usize = 20;
/// A tenant network starts every STRIDE hosts: each host is in SPAN / STRIDE of them.
const STRIDE: usize = 4;
/// One host in WIDE_EVERY runs an endpoint on the wide network.
const WIDE_EVERY: usize = 10;
/// Measured changes (puts and deletes alternating, half of them on the wide network).
const CHANGES: usize = 200;
/// Pause between measured changes.
const PACE: Duration = Duration::from_millis(20);
const PREFIX: &str = "/knit-scale";
/// Target: put → every interested agent, p99.
const P99_MAX_MS: f64 = 100.0;
const RSS_MAX_GIB: f64 = 2.0;

/// The cluster's shape for `hosts` hosts.
struct Shape {
    hosts: usize,
    tenants: usize,
    /// Endpoints per (tenant network, host) slot; the first `extra` slots have one more.
    per_slot: usize,
    extra: usize,
    /// A tenant network's subnet and its blocks (one per host of the network).
    subnet_len: u8,
    block_len: u8,
}

impl Shape {
    fn new(hosts: usize) -> Shape {
        let tenants = hosts / STRIDE;
        let wide = hosts / WIDE_EVERY;
        let slots = tenants * SPAN;
        let per_slot = (ENDPOINTS - wide) / slots;
        let extra = ENDPOINTS - wide - per_slot * slots;
        // A block holds its endpoints plus the network and first address; SPAN ≤ 32 blocks.
        let bits = (per_slot + 3).next_power_of_two().trailing_zeros() as u8;
        Shape {
            hosts,
            tenants,
            per_slot,
            extra,
            subnet_len: 32 - bits - 5,
            block_len: 32 - bits,
        }
    }

    fn line(&self) -> String {
        format!(
            "{} hosts; {} tenant networks of {SPAN} hosts each (every host in {} of them, one \
             /{} block each) + 1 wide network on every host (one /26 block each, an endpoint on \
             one host in {WIDE_EVERY}); {ENDPOINTS} endpoints (~{} per host)",
            self.hosts,
            self.tenants,
            SPAN / STRIDE,
            self.block_len,
            ENDPOINTS / self.hosts
        )
    }

    fn host_ip(i: usize) -> Ipv4Addr {
        // 172.16.0.0/12 as the underlay.
        Ipv4Addr::from(0xAC10_0000 + i as u32 + 1)
    }

    fn tenant_id(t: usize) -> String {
        format!("t{t:05}")
    }

    fn tenant_host(&self, t: usize, k: usize) -> usize {
        (t * STRIDE + k) % self.hosts
    }

    fn subnet(&self, t: usize) -> u32 {
        0x0A00_0000 + ((t as u32) << (32 - self.subnet_len))
    }

    fn block(&self, t: usize, k: usize) -> u32 {
        self.subnet(t) + ((k as u32) << (32 - self.block_len))
    }

    fn slot_endpoints(&self, t: usize, k: usize) -> usize {
        self.per_slot + usize::from(t * SPAN + k < self.extra)
    }

    fn wide_block(i: usize) -> u32 {
        // 100.64.0.0/10, a /26 per host.
        0x6440_0000 + ((i as u32) << 6)
    }
}

fn ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v)
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn endpoint(net: &str, id: String, host: usize, addr: u32, len: u8) -> (String, Vec<u8>) {
    let mut e = Endpoint::new(net);
    e.id = id;
    e.host = format!("h{host}");
    let o = ip(addr).octets();
    e.mac = format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    e.ipv4 = format!("{}/{len}", ip(addr)).parse().ok();
    (format!("{net}/{}", e.id), json(&e))
}

fn network(id: &str, subnet: u32, len: u8) -> Result<Network> {
    let mut n = Network::new(id, Driver::Overlay);
    n.id = id.to_string();
    n.ipam
        .push(Pool::new(format!("{}/{len}", ip(subnet)).parse()?));
    Ok(n)
}

/// Every record of the cluster, by kind.
fn records(s: &Shape) -> Result<Vec<(Kind, Records)>> {
    let (mut nets, mut vnis, mut hosts, mut blocks, mut eps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let block = |net: &str, b: u32, len: u8, host: usize| -> Result<(String, Vec<u8>)> {
        let cidr = format!("{}/{len}", ip(b)).parse()?;
        let rec = Block {
            network_id: net.to_string(),
            cidr,
            host: format!("h{host}"),
        };
        Ok((format!("{net}/{}_{len}", ip(b)), json(&rec)))
    };
    nets.push(("wide".to_string(), json(&network("wide", 0x6440_0000, 10)?)));
    vnis.push(("wide".to_string(), b"4096".to_vec()));
    for i in 0..s.hosts {
        let h = Host {
            name: format!("h{i}"),
            underlay_ip: Shape::host_ip(i).into(),
            vtep_mac: "02:00:00:00:00:01".into(),
        };
        hosts.push((h.name.clone(), json(&h)));
        blocks.push(block("wide", Shape::wide_block(i), 26, i)?);
        if i % WIDE_EVERY == 0 {
            eps.push(endpoint(
                "wide",
                format!("w{i}"),
                i,
                Shape::wide_block(i) + 1,
                10,
            ));
        }
    }
    for t in 0..s.tenants {
        let id = Shape::tenant_id(t);
        nets.push((id.clone(), json(&network(&id, s.subnet(t), s.subnet_len)?)));
        vnis.push((id.clone(), (4097 + t).to_string().into_bytes()));
        for k in 0..SPAN {
            let host = s.tenant_host(t, k);
            let b = s.block(t, k);
            blocks.push(block(&id, b, s.block_len, host)?);
            for j in 0..s.slot_endpoints(t, k) {
                eps.push(endpoint(
                    &id,
                    format!("e{k}-{j}"),
                    host,
                    b + 1 + j as u32,
                    s.subnet_len,
                ));
            }
        }
    }
    Ok(vec![
        (Kind::Networks, nets),
        (Kind::Vnis, vnis),
        (Kind::Hosts, hosts),
        (Kind::Blocks, blocks),
        (Kind::Endpoints, eps),
    ])
}

/// The controller process and its metrics endpoint.
struct Controller {
    child: Child,
    metrics: SocketAddr,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn scrape(&self) -> Option<String> {
        let mut c = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        self.scrape()?
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    }

    /// VmHWM in KiB.
    fn peak_rss_kib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

/// The compute histogram's cumulative buckets (upper bound s, count).
fn compute_buckets(text: &str) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("knit_controller_compute_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The upper bound (ms) of the bucket holding quantile `q` of `after - before`.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let d: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c - was)
        })
        .collect();
    let total = d.last().map_or(0.0, |x| x.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    d.iter()
        .find(|(_, c)| *c >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1e3)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn report(hosts: &[usize], verdict: &mut Verdict) -> Result<()> {
    println!(
        "\ncontroller-scale: a real etcd and `knit controller`, simulated agents (no kernel):"
    );
    raise_nofile();
    for &h in hosts {
        let r = measure(h);
        let (p99, rss) = match r {
            Ok(m) => m,
            Err(e) => {
                check_stop()?;
                println!("  {h} hosts: FAILED: {e:#}");
                (f64::NAN, f64::NAN)
            }
        };
        verdict.target(
            &format!("controller {h} hosts: put -> all agents p99 ms"),
            p99,
            P99_MAX_MS,
        );
        verdict.target(
            &format!("controller {h} hosts: controller RSS GiB"),
            rss,
            RSS_MAX_GIB,
        );
    }
    Ok(())
}

/// One scale; returns (put → every agent p99 in ms, controller VmHWM in GiB).
fn measure(hosts: usize) -> Result<(f64, f64)> {
    let shape = Shape::new(hosts);
    println!("  shape: {}", shape.line());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let etcd = EtcdServer::start()?;
    let st = EtcdStore::connect(std::slice::from_ref(&etcd.url), PREFIX)?;
    let ast = st.asynchronous().clone();
    let t = Instant::now();
    let all = records(&shape)?;
    let count: usize = all.iter().map(|(_, r)| r.len()).sum();
    rt.block_on(async {
        for (kind, recs) in &all {
            // A few transactions in flight: etcd batches their commits.
            let parts: Vec<Records> = recs
                .chunks(recs.len().div_ceil(8).max(1))
                .map(<[_]>::to_vec)
                .collect();
            let mut tasks = Vec::new();
            for p in parts {
                let s = ast.clone();
                let kind = *kind;
                tasks.push(tokio::spawn(async move { s.put_records(kind, &p).await }));
            }
            for t in tasks {
                t.await??;
            }
        }
        anyhow::Ok(())
    })?;
    drop(all);
    println!(
        "  etcd loaded with {count} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = TempDir::new("ctl-scale")?;
    let (listen, metrics) = (free_addr()?, free_addr()?);
    let log = dir.path().join("controller.log");
    let t = Instant::now();
    let child = Command::new(netns_tests::knit_bin()?)
        .args(["--etcd", &etcd.url, "--etcd-prefix", PREFIX])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("controller")
        .args(["--listen", &listen.to_string()])
        .args(["--metrics", &metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawn knit controller")?;
    let ctl = Controller { child, metrics };
    let log_tail = || {
        let s = std::fs::read_to_string(&log).unwrap_or_default();
        let l: Vec<&str> = s.lines().collect();
        l[l.len().saturating_sub(10)..].join("\n")
    };
    while ctl.metric("knit_controller_leader") != Some(1.0) {
        check_stop()?;
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the controller does not lead after 600 s:\n{}", log_tail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let leads = t.elapsed();

    let t = Instant::now();
    let agents = Agents::start(listen, hosts)?;
    let sh = agents.shared.clone();
    while sh.synced.load(Ordering::Relaxed) < hosts {
        check_stop()?;
        if sh.failed.load(Ordering::Relaxed) > 0 {
            bail!(
                "{} agents failed: {}\n{}",
                sh.failed.load(Ordering::Relaxed),
                sh.first_error().unwrap_or_default(),
                log_tail()
            );
        }
        if t.elapsed() > Duration::from_secs(900) {
            bail!(
                "{} of {hosts} agents synced after 900 s",
                sh.synced.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let synced = t.elapsed();
    println!(
        "  controller leads (model listed from etcd) {:.1} s after start; all {hosts} agents \
         synced (a full state each; largest Full frame {:.2} MB, FullPart {:.2} MB, of 1 in \
         100 agents) {:.2} s after they connect",
        leads.as_secs_f64(),
        sh.full_max.load(Ordering::Relaxed) as f64 / 1e6,
        sh.part_max.load(Ordering::Relaxed) as f64 / 1e6,
        synced.as_secs_f64()
    );

    // Paced changes: an endpoint put, then its delete; wide and tenant networks alternating.
    let before = compute_buckets(&ctl.scrape().unwrap_or_default());
    let (mut wide, mut tenant) = (Vec::new(), Vec::new());
    // Of each wide change: from the put to the first agent holding it (etcd, the watch, the
    // compute), and from the first agent to the last (the fan-out).
    let (mut wide_first, mut wide_spread) = (Vec::new(), Vec::new());
    // etcd's own part: the put (or delete) until etcd answers it, committed.
    let mut commits = Vec::new();
    let mut lost = 0;
    for q in 0..CHANGES / 2 {
        check_stop()?;
        let on_wide = q % 2 == 0;
        let (key, body, addr, interested) = if on_wide {
            let host = (q * 7919) % hosts;
            let addr = Shape::wide_block(host) + 2 + (q % 50) as u32;
            let (k, b) = endpoint("wide", format!("m{q}"), host, addr, 10);
            (k, b, addr, hosts - 1)
        } else {
            let t = (q * 104_729) % shape.tenants;
            let k = q % SPAN;
            let host = shape.tenant_host(t, k);
            let addr = shape.block(t, k) + 1 + shape.slot_endpoints(t, k) as u32;
            let id = Shape::tenant_id(t);
            let (key, b) = endpoint(&id, format!("m{q}"), host, addr, shape.subnet_len);
            (key, b, addr, SPAN - 1)
        };
        for put in [true, false] {
            sh.arm(addr, interested);
            let t0 = Instant::now();
            if put {
                rt.block_on(ast.put_records(Kind::Endpoints, &[(key.clone(), body.clone())]))?;
            } else {
                rt.block_on(ast.delete_records(Kind::Endpoints, std::slice::from_ref(&key)))?;
            }
            commits.push(t0.elapsed().as_secs_f64() * 1e3);
            let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
            match sh.wait(Duration::from_secs(10)) {
                Some((first, last)) if on_wide => {
                    wide.push(ms(t0, last));
                    wide_first.push(ms(t0, first));
                    wide_spread.push(ms(first, last));
                }
                Some((_, last)) => tenant.push(ms(t0, last)),
                None => lost += 1,
            }
            std::thread::sleep(PACE);
        }
    }
    let after = compute_buckets(&ctl.scrape().unwrap_or_default());
    let both: Vec<f64> = wide.iter().chain(&tenant).copied().collect();
    // A change that never reached every agent counts as infinitely late.
    let p99 = if lost > 0 {
        f64::INFINITY
    } else {
        pct(&both, 0.99)
    };
    let rss = ctl.peak_rss_kib().unwrap_or(f64::NAN) / (1024.0 * 1024.0);
    println!(
        "  per-change compute (controller histogram, bucket bound): p50 <= {:.3} ms, p99 <= \
         {:.3} ms",
        bucket_quantile(&before, &after, 0.5),
        bucket_quantile(&before, &after, 0.99)
    );
    println!(
        "  etcd put/delete -> every interested agent holds the delta ({} changes, {lost} not \
         delivered within 10 s): all p50 {:.2} ms p99 {:.2} ms; wide network ({} agents each) \
         p50 {:.2} ms p99 {:.2} ms; tenant network ({} agents each) p50 {:.2} ms p99 {:.2} ms",
        both.len() + lost,
        pct(&both, 0.5),
        pct(&both, 0.99),
        hosts - 1,
        pct(&wide, 0.5),
        pct(&wide, 0.99),
        SPAN - 1,
        pct(&tenant, 0.5),
        pct(&tenant, 0.99),
    );
    println!(
        "  etcd answers a put or delete (committed) p50 {:.2} ms p99 {:.2} ms; of a wide \
         change: put -> the first agent holds it (etcd, watch, compute) p50 {:.2} ms p99 {:.2} \
         ms; the first -> the last agent (the fan-out) p50 {:.2} ms p99 {:.2} ms",
        pct(&commits, 0.5),
        pct(&commits, 0.99),
        pct(&wide_first, 0.5),
        pct(&wide_first, 0.99),
        pct(&wide_spread, 0.5),
        pct(&wide_spread, 0.99),
    );
    let slowest: Vec<String> = {
        let mut v = both.clone();
        v.sort_by(|a, b| b.total_cmp(a));
        v.iter().take(5).map(|ms| format!("{ms:.0}")).collect()
    };
    println!(
        "  slowest 5 changes (ms): {}; over {P99_MAX_MS} ms: {} of {}",
        slowest.join(", "),
        both.iter().filter(|&&ms| ms > P99_MAX_MS).count(),
        both.len()
    );
    println!(
        "  controller peak RSS (VmHWM) {:.2} GiB; agents failed: {}",
        rss,
        sh.failed.load(Ordering::Relaxed)
    );
    let (checked, endpoints) = agents.stop()?;
    println!(
        "  {checked} sampled agents (1 in {}) end holding exactly what their Full gave them \
         ({endpoints} endpoints in all): no delta lost or misapplied",
        hosts.div_ceil(checked.max(1))
    );
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(ctl);
    drop(st);
    drop(etcd);
    Ok((p99, rss))
}
