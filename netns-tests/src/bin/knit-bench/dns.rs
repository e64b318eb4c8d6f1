//! knit's DNS (`knit dns`) against unbound (`local-data`, one thread) and aardvark-dns 1.4,
//! side by side: dnsperf asks each for 1,000 local names, A and PTR mixed, every server pinned to
//! core 0 and dnsperf to core 1. Rounds alternate the order of the servers; medians and the
//! spread of answers per second and answers per server CPU-second (utime+stime of the server
//! from /proc/PID/stat around each run) are printed. Then the latency from a registration write
//! to the store to the name being answered by `knit dns`.
//!
//! Everything runs in one scratch namespace whose `lo` holds the servers' address (`.1`) and the
//! requester's (`.2`): the queries go over that namespace's loopback path. knit answers
//! only requesters inside its networks' subnets and aardvark only its containers' addresses: the
//! requester's address is inside knit's network and is one of aardvark's containers. The 1,000
//! names are endpoint records written to knit's store with the `store` crate (what an
//! orchestrator does); the network itself is made with `knit network create`. unbound refuses
//! everything but its local data (`local-zone: "." refuse`): nothing is ever recursed.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netns_tests::scenario::TempDir;
use netns_tests::topology::TestNs;
use store::Store;

use crate::{check_stop, Verdict};

pub const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
const UNBOUND: &str = "/usr/sbin/unbound";
const DNSPERF: &str = "dnsperf";
const NETWORK: &str = "kbench";
/// A /21: the 1,000 names from .80.10 on, the registration samples in .84.x.
const SUBNET: &str = "10.244.80.0/21";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 80, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 80, 2);
const NAMES: u32 = 1000;
const ROUNDS: usize = 3;
const RUN_SECS: u32 = 10;
const REG_SAMPLES: usize = 50;
/// A registration not answered by then counts as this long (and fails the target).
const REG_GIVE_UP: Duration = Duration::from_secs(2);

/// Run the DNS benchmarks and add their targets; a failure is reported, not fatal.
pub fn report(verdict: &mut Verdict) -> Result<()> {
    println!(
        "\nDNS: knit dns vs unbound (local-data, 1 thread) vs aardvark-dns 1.4, {NAMES} names, A+PTR \
         mixed, dnsperf {RUN_SECS} s x {ROUNDS} rounds each, server on core 0, dnsperf on core 1:"
    );
    let t = Instant::now();
    let got = match run() {
        Ok(r) => r,
        Err(e) => {
            check_stop()?;
            println!("  dns: FAILED: {e:#}");
            Figures::default()
        }
    };
    println!("  (dns part took {:.1} s)", t.elapsed().as_secs_f64());
    // Verdict bounds are "at most": the targets are written as the other server over knit.
    verdict.target(
        "DNS unbound/knit answers per CPU-s (knit>=1x)",
        got.unbound_per_cpu / got.knit_per_cpu,
        1.0,
    );
    verdict.target(
        "DNS unbound/knit QPS (knit>=0.95x)",
        got.unbound_qps / got.knit_qps,
        (1.0f64 / 0.95 * 1000.0).floor() / 1000.0,
    );
    verdict.target(
        "DNS aardvark/knit QPS (knit>=3x)",
        got.aardvark_qps / got.knit_qps,
        (1.0f64 / 3.0 * 1000.0).floor() / 1000.0,
    );
    verdict.target(
        "DNS registration -> answered p99 (ms)",
        got.reg_p99_ms,
        100.0,
    );
    Ok(())
}

/// Medians; NaN where not measured.
struct Figures {
    knit_qps: f64,
    knit_per_cpu: f64,
    unbound_qps: f64,
    unbound_per_cpu: f64,
    aardvark_qps: f64,
    reg_p99_ms: f64,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            knit_qps: f64::NAN,
            knit_per_cpu: f64::NAN,
            unbound_qps: f64::NAN,
            unbound_per_cpu: f64::NAN,
            aardvark_qps: f64::NAN,
            reg_p99_ms: f64::NAN,
        }
    }
}

fn name_of(i: u32) -> String {
    format!("n{i}")
}

fn addr_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 80, 10)) + i)
}

fn arpa(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

fn fqdn(i: u32) -> String {
    format!("{}.{NETWORK}.knit.internal", name_of(i))
}

/// A DNS server process of one side, killed and reaped on drop.
struct Server {
    label: &'static str,
    port: u16,
    /// The process whose CPU is counted (aardvark's daemon is not our child).
    pid: i32,
    child: Option<Child>,
}

impl Server {
    /// utime+stime of the server, seconds.
    fn cpu_secs(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("{} (pid {}) is gone", self.label, self.pid))?;
        // Fields after the `(comm)`; utime and stime are fields 14 and 15 of the whole line.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("/proc/PID/stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match self.child.take() {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            None => {
                // aardvark forked itself off: stop that pid, which we started.
                // SAFETY: kill(2) with a pid read from the daemon's own pid file.
                unsafe { libc::kill(self.pid, libc::SIGTERM) };
                let t = Instant::now();
                while Path::new(&format!("/proc/{}", self.pid)).exists()
                    && t.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if Path::new(&format!("/proc/{}", self.pid)).exists() {
                    // SAFETY: as above; it ignored SIGTERM for 2 s.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// The scratch namespace, its temp dir and knit's store there.
struct Bed {
    ns: TestNs,
    dir: TempDir,
    knit: PathBuf,
}

impl Bed {
    fn new() -> Result<Bed> {
        let knit = std::env::var_os("KNIT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| netns_tests::workspace_root().join("target/release/knit"));
        ensure!(
            knit.exists(),
            "{} is missing: run `make build`",
            knit.display()
        );
        for p in [AARDVARK, UNBOUND] {
            ensure!(Path::new(p).exists(), "{p} is missing (scripts/deps.sh)");
        }
        let b = Bed {
            ns: TestNs::new("dn")?,
            dir: TempDir::new("dn")?,
            knit,
        };
        for ip in [SERVER_IP, CLIENT_IP] {
            b.ns.run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        }
        Ok(b)
    }

    fn knit_cmd(&self, program: &str, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = self.ns.command(program);
        c.args(args)
            .arg(&self.knit)
            .arg("--state-dir")
            .arg(d.join("state"))
            .arg("--run-dir")
            .arg(d.join("run"))
            .arg("--cni-data-dir")
            .arg(d.join("cni"))
            .stdin(Stdio::null());
        c
    }

    fn store(&self) -> Result<store::SqliteStore> {
        store::SqliteStore::open(&self.dir.path().join("state")).context("opening knit's store")
    }

    /// The network made by knit, the 1,000 endpoints written to its store.
    fn knit_names(&self) -> Result<()> {
        let o = self
            .knit_cmd("env", &[])
            .args(["network", "create", "--subnet", SUBNET, NETWORK])
            .output()?;
        ensure!(
            o.status.success(),
            "knit network create: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let st = self.store()?;
        let net = st.network(NETWORK)?;
        for i in 0..NAMES {
            put(&st, &net.id, &name_of(i), addr_of(i))?;
        }
        Ok(())
    }

    fn start_knit(&self, port: u16) -> Result<Server> {
        let log = std::fs::File::create(self.dir.path().join("knit-dns.log"))?;
        let listen = format!("{SERVER_IP}:{port}");
        let child = self
            .knit_cmd("taskset", &["-c", "0"])
            .args(["dns", "--no-forward", "--listen", &listen])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting knit dns")?;
        Ok(Server {
            label: "knit",
            port,
            pid: child.id() as i32,
            child: Some(child),
        })
    }

    fn start_unbound(&self, port: u16) -> Result<Server> {
        let dir = self.dir.path().join("unbound");
        std::fs::create_dir_all(&dir)?;
        let mut conf = format!(
            "server:\n  interface: {SERVER_IP}@{port}\n  port: {port}\n  num-threads: 1\n  \
             do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  \
             pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  \
             access-control: {SUBNET} allow\n  local-zone: \".\" refuse\n",
            d = dir.display()
        );
        for i in 0..NAMES {
            let _ = writeln!(
                conf,
                "  local-data: \"{}. 5 IN A {}\"",
                name_of(i),
                addr_of(i)
            );
            let _ = writeln!(conf, "  local-data-ptr: \"{} 5 {}.\"", addr_of(i), fqdn(i));
        }
        conf.push_str("remote-control:\n  control-enable: no\n");
        let file = dir.join("unbound.conf");
        std::fs::write(&file, conf)?;
        let log = std::fs::File::create(dir.join("unbound.log"))?;
        let mut c = self.ns.command("taskset");
        c.args(["-c", "0", UNBOUND, "-d", "-c"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c.spawn().context("starting unbound")?;
        Ok(Server {
            label: "unbound",
            port,
            pid: child.id() as i32,
            child: Some(child),
        })
    }

    /// aardvark's config dir: a file named after the network, its bind address on the first
    /// line, then `ID IPV4 IPV6 NAMES` per container; the requester is a container too.
    fn start_aardvark(&self, port: u16) -> Result<Server> {
        let dir = self.dir.path().join("aardvark");
        std::fs::create_dir_all(&dir)?;
        // No IPv6: that field is empty, hence the two spaces.
        let mut conf = format!("{SERVER_IP}\n{:064x} {CLIENT_IP}  dnsperf\n", 0xffff_u32);
        for i in 0..NAMES {
            let _ = writeln!(conf, "{:064x} {}  {}", i + 1, addr_of(i), name_of(i));
        }
        std::fs::write(dir.join(NETWORK), conf)?;
        // `run` forks the server off and returns once it is ready (its pid in aardvark.pid).
        let mut c = self.ns.command("taskset");
        c.args(["-c", "0", AARDVARK, "--config"])
            .arg(&dir)
            .args(["-p", &port.to_string(), "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let o = c.output().context("starting aardvark-dns")?;
        let pid_file = dir.join("aardvark.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| {
                format!(
                    "aardvark-dns wrote no {}: {}",
                    pid_file.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            })?
            .trim()
            .parse()
            .context("aardvark.pid")?;
        Ok(Server {
            label: "aardvark",
            port,
            pid,
            child: None,
        })
    }

    /// One dnsperf run against `s`: answers per second, answers per server CPU-second, and the
    /// server's CPU use (CPU-seconds per second: near 1, the server was the limit; well below,
    /// dnsperf was).
    fn dnsperf(&self, s: &Server, queries: &Path) -> Result<(f64, f64, f64)> {
        let cpu0 = s.cpu_secs()?;
        let o = self
            .ns
            .command("taskset")
            .args(["-c", "1", DNSPERF, "-s"])
            .arg(SERVER_IP.to_string())
            .args(["-p", &s.port.to_string(), "-a"])
            .arg(CLIENT_IP.to_string())
            .arg("-d")
            .arg(queries)
            .args([
                "-l",
                &RUN_SECS.to_string(),
                "-c",
                "1",
                "-T",
                "1",
                "-q",
                "100",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running dnsperf")?;
        let cpu = s.cpu_secs()? - cpu0;
        let out = String::from_utf8_lossy(&o.stdout);
        ensure!(
            o.status.success(),
            "dnsperf against {}: {}\n{out}",
            s.label,
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let noerror = field(&out, "NOERROR ").with_context(|| format!("dnsperf output:\n{out}"))?;
        let elapsed = field(&out, "Run time (s):").with_context(|| format!("dnsperf:\n{out}"))?;
        let lost = field(&out, "Queries lost:").unwrap_or(0.0);
        ensure!(
            elapsed > 0.0 && noerror > 0.0,
            "{}: no answers:\n{out}",
            s.label
        );
        if lost > 0.0 {
            println!("  ({}: {lost} queries lost in one run)", s.label);
        }
        Ok((noerror / elapsed, noerror / cpu.max(0.01), cpu / elapsed))
    }
}

/// The first number after `key` in dnsperf's output.
fn field(out: &str, key: &str) -> Option<f64> {
    let rest = &out[out.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn put(st: &store::SqliteStore, net_id: &str, name: &str, ip: Ipv4Addr) -> Result<()> {
    let mut ep = store::Endpoint::new(net_id);
    ep.name = name.to_string();
    ep.ifname = "eth0".into();
    ep.ipv4 = Some(format!("{ip}/21").parse()?);
    st.put_endpoint(&ep)
        .with_context(|| format!("writing endpoint {name}"))
}

/// A UDP socket bound to the requester's address inside the namespace.
fn client_socket(ns: &TestNs) -> Result<UdpSocket> {
    let s = ns
        .ns()
        .run_in(|| UdpSocket::bind(SocketAddr::from((CLIENT_IP, 0))))??;
    s.set_read_timeout(Some(Duration::from_millis(5)))?;
    Ok(s)
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Ask `name`/`qtype` once: Some(answer count) on a NOERROR reply with our id, None otherwise.
fn ask(sock: &UdpSocket, to: SocketAddr, id: u16, name: &str, qtype: u16) -> Option<u16> {
    sock.send_to(&query(id, name, qtype), to).ok()?;
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_millis(50);
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            return None;
        };
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            let rcode = buf[3] & 0x0f;
            return (rcode == 0).then(|| u16::from_be_bytes([buf[6], buf[7]]));
        }
    }
    None
}

/// A few A and PTR names answered as they should be, before measuring a server.
fn check_answers(sock: &UdpSocket, s: &Server) -> Result<()> {
    let to = SocketAddr::from((SERVER_IP, s.port));
    for (k, i) in [0, 1, 499, NAMES - 1].into_iter().enumerate() {
        let mut ok = (false, false);
        for attempt in 0..100u16 {
            let id = (k as u16) * 1000 + attempt;
            ok.0 = ok.0 || ask(sock, to, id, &name_of(i), 1).is_some_and(|n| n > 0);
            ok.1 = ok.1 || ask(sock, to, id + 500, &arpa(addr_of(i)), 12).is_some_and(|n| n > 0);
            if ok.0 && ok.1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(
            ok.0 && ok.1,
            "{} does not answer {} (A: {}, PTR: {})",
            s.label,
            name_of(i),
            ok.0,
            ok.1
        );
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0}..{:.0}", min / 1e3, max / 1e3)
}

fn run() -> Result<Figures> {
    let bed = Bed::new()?;
    let t = Instant::now();
    bed.knit_names()?;
    println!(
        "  {NAMES} endpoints written to knit's store in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let queries = bed.dir.path().join("queries.txt");
    let mut q = String::new();
    for i in 0..NAMES {
        let _ = writeln!(q, "{} A", name_of(i));
        let _ = writeln!(q, "{} PTR", arpa(addr_of(i)));
    }
    std::fs::write(&queries, q)?;

    let servers = [
        bed.start_knit(53)?,
        bed.start_unbound(5301)?,
        bed.start_aardvark(5302)?,
    ];
    let sock = client_socket(&bed.ns)?;
    for s in &servers {
        check_answers(&sock, s)?;
    }
    let mut qps: [Vec<f64>; 3] = Default::default();
    let mut per_cpu: [Vec<f64>; 3] = Default::default();
    let mut busy: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for j in 0..3 {
            check_stop()?;
            let k = if round % 2 == 0 { j } else { 2 - j };
            let (a, c, b) = bed.dnsperf(&servers[k], &queries)?;
            qps[k].push(a);
            per_cpu[k].push(c);
            busy[k].push(b);
        }
    }
    println!(
        "  {:<10} {:>12} {:>14} {:>16} {:>18} {:>8}",
        "server", "answers/s", "(k, min..max)", "answers/CPU-s", "(k, min..max)", "CPU"
    );
    for (k, s) in servers.iter().enumerate() {
        println!(
            "  {:<10} {:>12.0} {:>14} {:>16.0} {:>18} {:>7.0}%",
            s.label,
            median(&qps[k]),
            spread(&qps[k]),
            median(&per_cpu[k]),
            spread(&per_cpu[k]),
            median(&busy[k]) * 100.0
        );
    }
    let mut f = Figures {
        knit_qps: median(&qps[0]),
        knit_per_cpu: median(&per_cpu[0]),
        unbound_qps: median(&qps[1]),
        unbound_per_cpu: median(&per_cpu[1]),
        aardvark_qps: median(&qps[2]),
        reg_p99_ms: f64::NAN,
    };
    println!(
        "  knit/unbound: {:.3} QPS, {:.3} per CPU-s; knit/aardvark: {:.2} QPS",
        f.knit_qps / f.unbound_qps,
        f.knit_per_cpu / f.unbound_per_cpu,
        f.knit_qps / f.aardvark_qps
    );
    drop(servers);
    f.reg_p99_ms = registration(&bed, &sock)?;
    Ok(f)
}

/// From an endpoint written to the store to its name answered by `knit dns` (which polls the
/// store's revision), `REG_SAMPLES` times; prints the quantiles, returns p99 in ms.
fn registration(bed: &Bed, sock: &UdpSocket) -> Result<f64> {
    let knit = bed.start_knit(53)?;
    check_answers(sock, &knit)?;
    let st = bed.store()?;
    let net = st.network(NETWORK)?;
    let to = SocketAddr::from((SERVER_IP, knit.port));
    let mut lat = Vec::with_capacity(REG_SAMPLES);
    let mut id: u16 = 20000;
    for i in 0..REG_SAMPLES {
        check_stop()?;
        let name = format!("reg{i}");
        let ip = Ipv4Addr::new(10, 244, 84, 10 + i as u8);
        let t = Instant::now();
        put(&st, &net.id, &name, ip)?;
        loop {
            id = id.wrapping_add(1);
            if ask(sock, to, id, &name, 1).is_some_and(|n| n > 0) {
                lat.push(t.elapsed());
                break;
            }
            if t.elapsed() > REG_GIVE_UP {
                lat.push(t.elapsed());
                println!("  reg{i}: not answered within {REG_GIVE_UP:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Off the server's 50 ms poll phase: writes land anywhere in it.
        std::thread::sleep(Duration::from_millis(10 + (i as u64 * 17) % 50));
    }
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "  registration write -> name answered ({} samples): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} \
         ms, max {:.1} ms",
        ms.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    if ms.is_empty() {
        bail!("no registration samples");
    }
    Ok(q(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_fields() {
        let out =
            "  Queries lost:         0 (0.00%)\n  Response codes:       NOERROR 2000 (100.00%)\n  \
                   Run time (s):         10.000123\n";
        assert_eq!(field(out, "NOERROR "), Some(2000.0));
        assert_eq!(field(out, "Queries lost:"), Some(0.0));
        assert_eq!(field(out, "Run time (s):"), Some(10.000123));
    }

    #[test]
    fn names_and_queries() {
        assert_eq!(addr_of(0), Ipv4Addr::new(10, 244, 80, 10));
        assert_eq!(addr_of(NAMES - 1), Ipv4Addr::new(10, 244, 83, 241));
        assert_eq!(arpa(addr_of(0)), "10.80.244.10.in-addr.arpa");
        let q = query(7, "n1", 1);
        assert_eq!(
            q,
            [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'n', b'1', 0, 0, 1, 0, 1]
        );
    }
}
