//! knit's agent under a real Docker Engine 20.10 (one dockerd in a scratch namespace, through
//! `netns_tests::docker`): `docker run --rm true` on a knit network against Docker's own bridge
//! driver in the same daemon, the agent's RSS with 1,000 endpoints, and the latency of its
//! plugin calls under 16 concurrent `docker run`.
//!
//! dockerd runs with `--bridge=none --iptables=false`: that only drops the default `docker0`
//! network and Docker's iptables rules; a user-defined `-d bridge` network still gets its
//! `br-<id>` bridge and veths (checked below by the container's address on it), so the bridge
//! side pays no firewall work while knit's side programs its nft table: knit gives that away.
//!
//! Latency per plugin call is the agent's own `--metrics` histogram
//! (`knit_agent_request_duration_seconds`, buckets 0.5 ms doubling), scraped before and after
//! the concurrent runs: server side, from the request's first byte to the answer, without the
//! socket round trip; quantiles are interpolated inside a bucket as Prometheus's
//! `histogram_quantile` does, and the bucket's upper bound is printed beside them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netns_tests::docker::{DockerHost, IMAGE};
use netns_tests::median_ms;
use serde_json::{json, Value};

use crate::hist::{diff, parse_hist, quantile, total};
use crate::{check_stop, Args, Verdict};

const KNIT_SUBNET: &str = "10.244.65.0/24";
const BRIDGE_SUBNET: &str = "10.244.66.0/24";
/// The 1,000 endpoints' network, driven through the plugin API alone (a /22: 1,021 hosts).
const SCALE_POOL: &str = "10.244.68.0/22";
const SCALE_ENDPOINTS: usize = 1000;
/// Inside the scratch namespace only.
const METRICS_ADDR: &str = "127.0.0.1:9464";
const CONCURRENCY: usize = 16;
const RUNS_PER_WORKER: usize = 3;
/// The kernel tears a deleted netns down asynchronously; let it finish before the next run.
const SETTLE: Duration = Duration::from_millis(200);

/// Run the Docker benchmarks and add their targets; a failure is reported, not fatal.
pub fn report(a: &Args, verdict: &mut Verdict) -> Result<()> {
    println!("\nDocker Engine 20.10 with knit's agent as network + IPAM plugin:");
    let t = Instant::now();
    let ratio = match run(a) {
        Ok(r) => r,
        Err(e) => {
            check_stop()?;
            println!("  docker: FAILED: {e:#}");
            f64::NAN
        }
    };
    println!("  (docker part took {:.1} s)", t.elapsed().as_secs_f64());
    verdict.target("docker run --rm true: knit net / bridge net", ratio, 1.0);
    Ok(())
}

/// Everything in one dockerd; returns the knit/bridge ratio of `docker run` medians.
fn run(a: &Args) -> Result<f64> {
    let mut h = DockerHost::start("bd")?;
    h.start_agent(&["--metrics", METRICS_ADDR])?;
    h.knit_network("kn", KNIT_SUBNET, &[])?;
    h.docker(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        BRIDGE_SUBNET,
        "br",
    ])?;
    // Warm-up, and proof that each side really attaches: the container has an address in its
    // network's subnet (so the bridge driver works with --bridge=none --iptables=false).
    for (net, subnet) in [("kn", KNIT_SUBNET), ("br", BRIDGE_SUBNET)] {
        let out = h.docker(&["run", "--rm", "--net", net, IMAGE, "ip", "-o", "-4", "addr"])?;
        let prefix = subnet.rsplit_once(".0/").map_or(subnet, |(p, _)| p);
        ensure!(
            out.contains(&format!("inet {prefix}.")),
            "a container on {net} has no address in {subnet}:\n{out}"
        );
        docker_run(&h, net)?;
    }
    let ratio = run_ab(&h, a.cycles)?;
    scale_rss(&h)?;
    concurrent_p99(&h)?;
    h.docker(&["network", "rm", "kn", "br"])?;
    let links = h.ns.stdout(&["ip", "-o", "link", "show"])?;
    let left: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .filter(|n| *n != "lo")
        .collect();
    ensure!(left.is_empty(), "links left after network rm: {left:?}");
    let nets = h.knit(&["network", "ls"])?;
    ensure!(
        nets.lines().count() == 1,
        "knit's store still lists networks:\n{nets}"
    );
    Ok(ratio)
}

/// One `docker run --rm --net NET IMAGE true`, timed as the client process, then a settle.
fn docker_run(h: &DockerHost, net: &str) -> Result<Duration> {
    check_stop()?;
    let t = Instant::now();
    h.docker(&["run", "--rm", "--net", net, IMAGE, "true"])?;
    let d = t.elapsed();
    std::thread::sleep(SETTLE);
    Ok(d)
}

/// Interleaved runs on both networks, order alternating; prints medians, returns knit/bridge.
fn run_ab(h: &DockerHost, cycles: usize) -> Result<f64> {
    let nets = ["br", "kn"];
    let mut t: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..cycles {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            t[k].push(docker_run(h, nets[k])?);
        }
    }
    let (br, kn) = (median_ms(&t[0]), median_ms(&t[1]));
    let spread = |v: &[Duration]| {
        let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let min = ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ms.iter().copied().fold(0.0, f64::max);
        format!("min {min:.1}, max {max:.1}")
    };
    println!(
        "  docker run --rm --net N {IMAGE} true, median of {cycles} each (ms): bridge {br:.1} \
         ({}), knit {kn:.1} ({}), knit/bridge {:.3}",
        spread(&t[0]),
        spread(&t[1]),
        kn / br
    );
    Ok(kn / br)
}

/// Client-side durations of plugin calls by method (a connection per call, as `plugin_post`).
type Timings = BTreeMap<&'static str, Vec<Duration>>;

/// One plugin call that must succeed, timed into `t`; returns the answer.
fn timed(t: &mut Timings, h: &DockerHost, method: &'static str, body: &Value) -> Result<Value> {
    let start = Instant::now();
    let v = call(h, method, body);
    t.entry(method).or_default().push(start.elapsed());
    v
}

/// One plugin call that must succeed; returns the answer.
fn call(h: &DockerHost, method: &str, body: &Value) -> Result<Value> {
    let (status, text) = h.plugin_post(method, body.to_string().as_bytes())?;
    ensure!(status == 200, "{method}: HTTP {status}: {text}");
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{method}: {text:?}"))?;
    for key in ["Err", "Error"] {
        if let Some(e) = v[key].as_str().filter(|e| !e.is_empty()) {
            bail!("{method}: {e}");
        }
    }
    Ok(v)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// A Docker-like 64-hex id whose first 11 characters differ per `n` (the agent names the
/// endpoint's veth peer after them).
fn hex_id(kind: u8, n: usize) -> String {
    format!("be{kind:02x}{n:07x}{:053x}", 0x6b6e6974u64)
}

/// A knit network made through the plugin API alone, in the order and shape Docker 20.10 uses
/// (bodies as the agent's debug log shows them for `docker network create` and `docker run`).
struct PluginNet {
    id: String,
    pool_id: String,
    /// `A.B.C.D/LEN`, as RequestAddress answered and CreateNetwork gets it.
    gateway: String,
    /// Endpoint ids with their addresses (without the length, as ReleaseAddress gets them).
    endpoints: Vec<(String, String)>,
}

fn bare(addr: &str) -> String {
    addr.split('/').next().unwrap_or(addr).to_string()
}

impl PluginNet {
    /// `docker network create -d knit --ipam-driver knit --subnet POOL`.
    fn create(h: &DockerHost, pool: &str) -> Result<PluginNet> {
        let p = call(
            h,
            "IpamDriver.RequestPool",
            &json!({"AddressSpace": "knit", "Pool": pool, "SubPool": "", "Options": {},
                    "V6": false}),
        )?;
        let pool_id = p["PoolID"].as_str().context("RequestPool: no PoolID")?;
        let gw = call(
            h,
            "IpamDriver.RequestAddress",
            &json!({"PoolID": pool_id, "Address": "",
                    "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        )?;
        let gateway = gw["Address"].as_str().context("no gateway Address")?;
        let id = hex_id(0, 0);
        call(
            h,
            "NetworkDriver.CreateNetwork",
            &json!({"NetworkID": id,
                    "Options": {"com.docker.network.enable_ipv6": false,
                                "com.docker.network.generic": {}},
                    "IPv4Data": [{"AddressSpace": "knit", "Pool": pool, "Gateway": gateway,
                                  "AuxAddresses": null}],
                    "IPv6Data": []}),
        )?;
        Ok(PluginNet {
            id,
            pool_id: pool_id.to_string(),
            gateway: gateway.to_string(),
            endpoints: Vec::new(),
        })
    }

    /// The calls of `docker run --net N` (EndpointOperInfo left out: it does nothing).
    fn attach(&mut self, h: &DockerHost, eid: &str, t: &mut Timings) -> Result<()> {
        let a = timed(
            t,
            h,
            "IpamDriver.RequestAddress",
            &json!({"PoolID": self.pool_id, "Address": "", "Options": null}),
        )?;
        let addr = a["Address"]
            .as_str()
            .context("RequestAddress: no Address")?;
        self.endpoints.push((eid.to_string(), bare(addr)));
        let no_ports = json!({"com.docker.network.endpoint.exposedports": [],
                              "com.docker.network.portmap": []});
        let ids = |extra: Value| {
            let mut v = json!({"NetworkID": self.id, "EndpointID": eid});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            v
        };
        let iface = json!({"Address": addr, "AddressIPv6": "", "MacAddress": ""});
        let sandbox = format!("/var/run/docker/netns/{}", &eid[..12.min(eid.len())]);
        for (m, b) in [
            (
                "NetworkDriver.CreateEndpoint",
                ids(json!({"Interface": iface, "Options": no_ports})),
            ),
            (
                "NetworkDriver.Join",
                ids(json!({"SandboxKey": sandbox, "Options": no_ports})),
            ),
            (
                "NetworkDriver.ProgramExternalConnectivity",
                ids(json!({"Options": no_ports})),
            ),
        ] {
            timed(t, h, m, &b)?;
        }
        Ok(())
    }

    /// `docker rm` of every endpoint, newest first, then `docker network rm`; tolerant: returns
    /// every error.
    fn remove(&self, h: &DockerHost, t: &mut Timings) -> Vec<String> {
        let mut errors = Vec::new();
        for (eid, addr) in self.endpoints.iter().rev() {
            let ids = json!({"NetworkID": self.id, "EndpointID": eid});
            for (m, b) in [
                ("NetworkDriver.RevokeExternalConnectivity", ids.clone()),
                ("NetworkDriver.Leave", ids.clone()),
                ("NetworkDriver.DeleteEndpoint", ids.clone()),
                (
                    "IpamDriver.ReleaseAddress",
                    json!({"PoolID": self.pool_id, "Address": addr}),
                ),
            ] {
                if let Err(e) = timed(t, h, m, &b) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        for (m, b) in [
            (
                "IpamDriver.ReleaseAddress",
                json!({"PoolID": self.pool_id, "Address": bare(&self.gateway)}),
            ),
            ("IpamDriver.ReleasePool", json!({"PoolID": self.pool_id})),
            ("NetworkDriver.DeleteNetwork", json!({"NetworkID": self.id})),
        ] {
            if let Err(e) = call(h, m, &b) {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

/// Veth peers of the endpoints `scale_rss` made (named after their ids by the agent).
fn scale_peers(h: &DockerHost) -> Result<usize> {
    let links = h.ns.handle()?.links()?;
    Ok(links
        .iter()
        .filter(|l| l.name.starts_with("knbe01"))
        .count())
}

/// The agent's RSS idle, with 1,000 endpoints made through the plugin API, and after they are
/// removed the way Docker removes them.
fn scale_rss(h: &DockerHost) -> Result<()> {
    let pid = h.agent_pid().context("the agent is not running")?;
    let idle = rss_kib(pid)?;
    let mut net = PluginNet::create(h, SCALE_POOL)?;
    let mut times = Timings::new();
    let t = Instant::now();
    let made = (0..SCALE_ENDPOINTS).try_for_each(|i| {
        check_stop()?;
        net.attach(h, &hex_id(1, i), &mut times)
    });
    let made_s = t.elapsed().as_secs_f64();
    let full = rss_kib(pid);
    let attached = scale_peers(h);
    // Removal runs whatever happened above.
    let t = Instant::now();
    let errors = net.remove(h, &mut times);
    let removed_s = t.elapsed().as_secs_f64();
    made?;
    let (full, attached) = (full?, attached?);
    ensure!(
        attached == SCALE_ENDPOINTS,
        "{attached} endpoint links seen, {SCALE_ENDPOINTS} made"
    );
    ensure!(errors.is_empty(), "removal: {errors:#?}");
    let left = scale_peers(h)?;
    ensure!(left == 0, "{left} endpoint links left after DeleteEndpoint");
    let after = rss_kib(pid)?;
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "  agent RSS (VmRSS): idle {:.1} MiB, with {SCALE_ENDPOINTS} endpoints {:.1} MiB \
         ({:.1} KiB per endpoint), after removing them {:.1} MiB; made in {made_s:.1} s \
         (RequestAddress, CreateEndpoint, Join, ProgramExternalConnectivity), removed in \
         {removed_s:.1} s (RevokeExternalConnectivity, Leave, DeleteEndpoint, ReleaseAddress)",
        mib(idle),
        mib(full),
        full.saturating_sub(idle) as f64 / SCALE_ENDPOINTS as f64,
        mib(after)
    );
    let per: Vec<String> = times
        .iter()
        .map(|(m, v)| format!("{m} {:.2}", median_ms(v)))
        .collect();
    println!(
        "    client-side median per call (ms, one connection each): {}",
        per.join(", ")
    );
    Ok(())
}

/// GET /metrics from the agent, inside the scratch namespace.
fn scrape(h: &DockerHost) -> Result<String> {
    let text = h.ns.ns().run_in(|| -> Result<String> {
        let mut s = std::net::TcpStream::connect(METRICS_ADDR)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "metrics: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text)
}

/// 16 workers each run `docker run --rm` a few times at once on the knit network; the agent's
/// histogram before and after gives the p99 of its calls.
fn concurrent_p99(h: &DockerHost) -> Result<()> {
    let before = parse_hist(&scrape(h)?);
    let t = Instant::now();
    let results: Vec<Result<Vec<Duration>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                s.spawn(|| -> Result<Vec<Duration>> {
                    let mut v = Vec::new();
                    for _ in 0..RUNS_PER_WORKER {
                        check_stop()?;
                        let t = Instant::now();
                        h.docker(&["run", "--rm", "--net", "kn", IMAGE, "true"])?;
                        v.push(t.elapsed());
                    }
                    Ok(v)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let wall = t.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for r in results {
        runs.extend(r?);
    }
    let d = diff(&parse_hist(&scrape(h)?), &before);
    let all = total(&d);
    let calls = all.last().map_or(0.0, |x| x.1);
    let (p99, p99_le) = quantile(&all, 0.99).context("no plugin calls were recorded")?;
    let (p50, _) = quantile(&all, 0.5).context("no plugin calls were recorded")?;
    println!(
        "  {CONCURRENCY} concurrent docker run --rm on knit, {} runs in {wall:.1} s (client \
         median {:.0} ms): {calls} plugin calls, agent-side latency p50 {:.2} ms, p99 {:.2} ms \
         (bucket <= {:.1} ms)",
        runs.len(),
        median_ms(&runs),
        p50 * 1e3,
        p99 * 1e3,
        p99_le * 1e3
    );
    for (m, b) in &d {
        if let Some((q, le)) = quantile(b, 0.99) {
            println!(
                "    {m:<42} {:>5} calls  p99 {:>7.2} ms (bucket <= {:.1} ms)",
                b.last().map_or(0.0, |x| x.1),
                q * 1e3,
                le * 1e3
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_differ_in_the_eleven_characters_veth_names_use() {
        let (a, b) = (hex_id(1, 0), hex_id(1, 999));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a[..11], b[..11]);
        assert!(a.starts_with("be01"));
    }
}
