//! Convergence on 20 hosts: from a CNI ADD returning on one host to the new endpoint being
//! programmed on, and answering from, every other host (issue 14; target p99 < 50 ms).
//!
//! The cluster is real: etcd in an underlay namespace, one `knit controller` (host 0), 20
//! host namespaces on the underlay bridge with a `knit agent` each (default flags), one
//! overlay network, and on every host a long-lived "prober" container attached through the
//! `knit` CNI plugin. Then [`ADDS`] adds, round-robin over the hosts: the `knit` plugin's ADD
//! of a fresh container on host H; t0 = the moment the plugin exits. For every other host i
//! two clocks run from t0:
//!
//! - **state**: a netlink subscription in host i's namespace (`ip monitor neigh` / `bridge
//!   monitor fdb`, opened before the adds) stamps the first notification of each entry the
//!   agent writes for the endpoint: the permanent neighbour on the overlay bridge, the
//!   vxlan device's FDB remote (`self`, with the VTEP as `dst`) and the bridge's static entry
//!   for the MAC. t_state(i) = the last of the three. Event-driven, nothing polls the kernel,
//!   and a stamp is taken when the bench's thread reads the notification, so it errs late.
//! - **reply**: a thread per prober sends an ICMP echo (ping socket in the prober's netns)
//!   to the new address every [`PROBE_EVERY`] until one answers; t_reply(i) = its arrival.
//!
//! Convergence of host i is max(t_state, t_reply) − t0 (floored at 0: a host may be
//! programmed before the plugin has exited), of the add max over the 19 other hosts; the
//! target holds its p99 over the adds. **Why both clocks:** a reply alone can come before
//! knit did anything. Each host floods unknown destinations to every other VTEP (one
//! all-zeros FDB entry per remote host), so the prober's ARP broadcast and its first echo
//! reach the new container through the flood, and the answer comes back along the new
//! host's entries for the prober. And the kernel's ARP timer can make the reply much later
//! than the state: if a prober's ARP goes unanswered, the kernel retries only every
//! `retrans_time` (1 s by default) and the measurement becomes that timer. So the probers'
//! `eth0` runs with `neigh/eth0/retrans_time_ms` = 10 and `mcast_solicit`/`ucast_solicit` =
//! 100 (per device: a namespace other than the first has no `neigh/default`). The new
//! containers keep the defaults (their `eth0` only exists once ADD returns, and setting it
//! then would delay the probes): they need no ARP answer of their own, since a prober's ARP
//! teaches them its MAC, and their own lookups for a prober are answered at once by their
//! host's bridge from its permanent entries. Each clock's own p50/p99/max is printed beside
//! the target's, with how often the reply came before the state.
//!
//! Deletes (no target): after the adds, the same containers are removed by CNI DEL in the
//! same order; t0 = DEL returning, t_i = the last of the three entries' RTM_DELNEIGH on host i.
//!
//! One kernel plays 20 hosts, and its ARP table is shared by every namespace: at most
//! `gc_thresh3` (1,024) dynamic entries, of which only those idle for 5 s can be freed. So
//! between adds the bench deletes the dynamic entries its probes made ([`forget_arp`]);
//! without that, from about the 15th add the kernel refuses new ARP entries ("neighbor table
//! overflow!") and the replies measure seconds of that.
//!
//! `make build && cargo run --release -p netns-tests --bin knit-bench -- --cases convergence`;
//! with `KNIT_CONV_DEBUG=1` each add's per-host state/reply ms go to stderr.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libnet::netlink::events::{Event, Groups, Subscription};
use libnet::netlink::neigh::NUD_NOARP;
use netns_tests::cluster::{Attached, ClusterHost, Underlay};
use netns_tests::ping::PingSocket;
use netns_tests::topology::TestNs;

use crate::{check_stop, Verdict};

const HOSTS: usize = 20;
const ADDS: usize = 100;
const UL_NET: &str = "192.168.79";
const SUBNET: &str = "10.246.0.0/16";
const NETWORK: &str = "conv";
const CTL_PORT: u16 = 7473;
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// An add (or delete) not converged by then counts as this long, and the run says so.
const GIVE_UP: Duration = Duration::from_secs(5);
/// More adds than this not converging ends the case (FAILED).
const MAX_TIMEOUTS: usize = 3;
const TARGET_P99_MS: f64 = 50.0;

pub fn report(verdict: &mut Verdict) -> Result<()> {
    println!(
        "\nconvergence: {HOSTS} hosts, {ADDS} adds round-robin, from a CNI ADD returning to \
         the endpoint programmed on and answering from every other host (ms):"
    );
    let t = Instant::now();
    let p99 = match measure() {
        Ok(r) => {
            r.print();
            println!("  ({:.1} s in all)", t.elapsed().as_secs_f64());
            r.add.p(0.99)
        }
        Err(e) => {
            check_stop()?;
            println!("  convergence: FAILED: {e:#}");
            f64::NAN
        }
    };
    verdict.target(
        &format!("convergence {HOSTS} hosts p99 ms"),
        p99,
        TARGET_P99_MS,
    );
    Ok(())
}

/// Per-add values in ms.
#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    /// Nearest-rank quantile (NaN when empty).
    fn p(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    fn line(&self, what: &str) -> String {
        format!(
            "  {what:<44} p50 {:>7.2}  p99 {:>7.2}  max {:>7.2}  (n={})",
            self.p(0.5),
            self.p(0.99),
            self.p(1.0),
            self.0.len()
        )
    }
}

#[derive(Default)]
struct Results {
    /// max over hosts of max(state, reply): the target's figure.
    add: Series,
    add_state: Series,
    add_reply: Series,
    cni_add: Series,
    del: Series,
    cni_del: Series,
    /// (host, add) pairs whose reply came before the host had the entries.
    reply_first: usize,
    /// (host, add) pairs programmed before the plugin had exited.
    before_t0: usize,
    pairs: usize,
    timeouts: Vec<String>,
}

impl Results {
    /// Notes an add or delete that did not converge; more than [`MAX_TIMEOUTS`] ends the
    /// case: broken, not slow, and waiting out every add would take minutes.
    fn timed_out(&mut self, what: String) -> Result<()> {
        self.timeouts.push(what);
        ensure!(
            self.timeouts.len() <= MAX_TIMEOUTS,
            "{} adds/deletes did not converge within {GIVE_UP:?}:\n  {}",
            self.timeouts.len(),
            self.timeouts.join("\n  ")
        );
        Ok(())
    }

    fn print(&self) {
        println!("{}", self.add.line("add, state and reply (target)"));
        println!(
            "{}",
            self.add_state
                .line("add, state only (neigh+fdb on the host)")
        );
        println!("{}", self.add_reply.line("add, first echo reply only"));
        println!("{}", self.cni_add.line("the CNI ADD itself"));
        println!("{}", self.del.line("delete, entries gone on every host"));
        println!("{}", self.cni_del.line("the CNI DEL itself"));
        println!(
            "  the reply came before the host had the entries in {} of {} (host, add) pairs \
             (the flood path)",
            self.reply_first, self.pairs
        );
        println!(
            "  the host had the entries before the plugin exited in {} of {} pairs",
            self.before_t0, self.pairs
        );
        for t in &self.timeouts {
            println!("  NOT CONVERGED within {GIVE_UP:?}: {t}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// First notifications of the entries of one endpoint on one host.
#[derive(Default, Clone, Copy)]
struct Stamps {
    neigh: Option<Instant>,
    remote: Option<Instant>,
    bridge: Option<Instant>,
}

impl Stamps {
    /// When the last of the three came (None until all did).
    fn all(&self) -> Option<Instant> {
        Some(self.neigh?.max(self.remote?).max(self.bridge?))
    }
}

/// What a host's subscription saw, keyed by address (neighbours) and MAC (FDB).
#[derive(Default)]
struct Seen {
    new_neigh: HashMap<IpAddr, Instant>,
    new_remote: HashMap<[u8; 6], Instant>,
    new_bridge: HashMap<[u8; 6], Instant>,
    del_neigh: HashMap<IpAddr, Instant>,
    del_remote: HashMap<[u8; 6], Instant>,
    del_bridge: HashMap<[u8; 6], Instant>,
    lost: bool,
}

impl Seen {
    fn added(&self, ip: IpAddr, mac: [u8; 6]) -> Stamps {
        Stamps {
            neigh: self.new_neigh.get(&ip).copied(),
            remote: self.new_remote.get(&mac).copied(),
            bridge: self.new_bridge.get(&mac).copied(),
        }
    }

    fn deleted(&self, ip: IpAddr, mac: [u8; 6]) -> Stamps {
        Stamps {
            neigh: self.del_neigh.get(&ip).copied(),
            remote: self.del_remote.get(&mac).copied(),
            bridge: self.del_bridge.get(&mac).copied(),
        }
    }

    /// Keeps the first stamp of each entry, for the overlay's bridge `br` and vxlan `vx`.
    fn note(&mut self, ev: Event, br: u32, vx: u32, now: Instant) {
        match ev {
            Event::NeighNew(n) if n.index == br && n.is_permanent() => {
                self.new_neigh.entry(n.ip).or_insert(now);
            }
            Event::NeighDel(n) if n.index == br => {
                self.del_neigh.entry(n.ip).or_insert(now);
            }
            Event::FdbNew(f) if f.index == vx => {
                if f.is_self && f.dst.is_some() {
                    self.new_remote.entry(f.mac).or_insert(now);
                } else if !f.is_self && f.state & NUD_NOARP != 0 {
                    self.new_bridge.entry(f.mac).or_insert(now);
                }
            }
            Event::FdbDel(f) if f.index == vx => {
                let m = if f.is_self {
                    &mut self.del_remote
                } else {
                    &mut self.del_bridge
                };
                m.entry(f.mac).or_insert(now);
            }
            Event::Lost => self.lost = true,
            _ => {}
        }
    }
}

/// The add the probers chase: a new number for each add, `None` between adds.
#[derive(Default)]
struct Round {
    n: u64,
    target: Option<(Ipv4Addr, usize)>,
}

/// What the threads share.
struct Shared {
    round: Mutex<Round>,
    wake: Condvar,
    /// Per host: the first echo reply of a round (its number, when).
    replies: Mutex<Vec<Option<(u64, Instant)>>>,
    seen: Vec<Mutex<Seen>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster; fields drop in order: hosts (agents killed) before the underlay and etcd.
struct Cluster {
    probers: Vec<Attached>,
    hosts: Vec<ClusterHost>,
    _ul: Underlay,
}

fn measure() -> Result<Results> {
    let ul = Underlay::new("cvul", UL_NET)?;
    let mut hosts = Vec::with_capacity(HOSTS);
    for i in 0..HOSTS {
        check_stop()?;
        hosts.push(ul.host(&format!("cv{i}"), 10 + i as u8)?);
    }
    hosts[0].knit(&[
        "network", "create", "--driver", "overlay", "--subnet", SUBNET, NETWORK,
    ])?;
    hosts[0].start_controller(CTL_PORT)?;
    for h in &mut hosts {
        check_stop()?;
        h.start_agent(&[], Duration::from_secs(20))?;
    }
    let mut c = Cluster {
        probers: Vec::new(),
        hosts,
        _ul: ul,
    };
    for (i, h) in c.hosts.iter().enumerate() {
        check_stop()?;
        let p = h.cni_add(
            NETWORK,
            &format!("prober{i}"),
            prober_ns(&format!("cvp{i}"))?,
        )?;
        fast_arp(&p.ns)?;
        c.probers.push(p);
    }
    let links = overlay_links(&c.hosts)?;
    wait_meshed(&c, &links)?;
    println!("  {HOSTS} hosts, agents and probers up; the overlay's entries are on every host");
    let shared = Shared {
        round: Mutex::new(Round::default()),
        wake: Condvar::new(),
        replies: Mutex::new(vec![None; HOSTS]),
        seen: (0..HOSTS).map(|_| Mutex::default()).collect(),
        stop: AtomicBool::new(false),
    };
    let subs = c
        .hosts
        .iter()
        .map(|h| {
            Subscription::new_in(
                h.k.ns.ns(),
                Groups {
                    link: false,
                    addr: false,
                    neigh: true,
                },
            )
            .with_context(|| format!("subscribing to neighbour events in {}", h.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let sockets = c
        .probers
        .iter()
        .map(|p| PingSocket::open(&p.ns))
        .collect::<Result<Vec<_>>>()?;
    let sh = &shared;
    std::thread::scope(|s| {
        for (i, (sub, (br, vx))) in subs.into_iter().zip(links.iter().copied()).enumerate() {
            s.spawn(move || watch(sub, sh, i, br, vx));
        }
        for (i, sock) in sockets.into_iter().enumerate() {
            s.spawn(move || probe(sock, sh, i));
        }
        let r = run_adds_and_dels(&c, sh);
        sh.stop.store(true, Ordering::Relaxed);
        sh.wake.notify_all();
        r
    })
}

/// A prober's namespace: ping sockets allowed for root.
fn prober_ns(tag: &str) -> Result<TestNs> {
    let ns = TestNs::new(tag)?;
    ns.set_sysctl("net/ipv4/ping_group_range", "0 0")?;
    Ok(ns)
}

/// A prober's `eth0` retries an unanswered ARP every 10 ms, 100 times (see the module doc).
/// Per device only: a namespace other than the first has no `neigh/default`, and a link
/// moved into a namespace starts from the defaults again.
fn fast_arp(ns: &TestNs) -> Result<()> {
    for (k, v) in [
        ("net/ipv4/neigh/eth0/retrans_time_ms", "10"),
        ("net/ipv4/neigh/eth0/mcast_solicit", "100"),
        ("net/ipv4/neigh/eth0/ucast_solicit", "100"),
    ] {
        ns.set_sysctl(k, v)?;
    }
    Ok(())
}

/// Per host, the overlay's bridge (`knov*`) and vxlan device (`knvx*`) indexes.
fn overlay_links(hosts: &[ClusterHost]) -> Result<Vec<(u32, u32)>> {
    hosts
        .iter()
        .map(|h| {
            let links = h.k.ns.handle()?.links()?;
            let find = |p: &str| {
                links
                    .iter()
                    .find(|l| l.name.starts_with(p))
                    .map(|l| l.index)
                    .with_context(|| format!("no {p}* link on {}", h.name))
            };
            Ok((find("knov")?, find("knvx")?))
        })
        .collect()
}

/// Every host holds a permanent neighbour for every other host's prober (setup, untimed).
fn wait_meshed(c: &Cluster, links: &[(u32, u32)]) -> Result<()> {
    let t = Instant::now();
    for (i, h) in c.hosts.iter().enumerate() {
        let nl = h.k.ns.handle()?;
        loop {
            check_stop()?;
            let have: Vec<IpAddr> = nl
                .neighs(links[i].0)?
                .into_iter()
                .filter(|n| n.is_permanent())
                .map(|n| n.ip)
                .collect();
            let missing = c
                .probers
                .iter()
                .enumerate()
                .filter(|(j, p)| *j != i && !have.contains(&p.ip))
                .count();
            if missing == 0 {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "{} still misses {missing} probers' neighbours after 60 s; its agent: {}",
                h.name,
                h.k.log("agent.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The host's subscription: stamps until told to stop.
fn watch(mut sub: Subscription, sh: &Shared, host: usize, br: u32, vx: u32) {
    while !sh.stop.load(Ordering::Relaxed) {
        match sub.recv(Some(Duration::from_millis(50))) {
            Ok(Some(ev)) => lock(&sh.seen[host]).note(ev, br, vx, Instant::now()),
            Ok(None) => {}
            // An undecodable notification stands for itself only.
            Err(_) => {}
        }
    }
}

fn run_adds_and_dels(c: &Cluster, sh: &Shared) -> Result<Results> {
    let mut r = Results::default();
    let mut added: Vec<(usize, Attached)> = Vec::with_capacity(ADDS);
    let debug = std::env::var_os("KNIT_CONV_DEBUG").is_some();
    for n in 0..ADDS {
        check_stop()?;
        let h = n % HOSTS;
        let a = c.hosts[h].cni_add(
            NETWORK,
            &format!("conv{n}"),
            TestNs::new(&format!("cva{n}"))?,
        )?;
        let t0 = Instant::now();
        r.cni_add.0.push(ms(a.elapsed));
        let done = chase(sh, h, &a, t0)?;
        if debug {
            let v: Vec<String> = done
                .iter()
                .map(|g| match g {
                    Some((st, rp)) => format!("{:.0}/{:.0}", since(*st, t0), since(*rp, t0)),
                    None => "-".into(),
                })
                .collect();
            eprintln!("add {n} on {h} {}: state/reply ms {}", a.ip, v.join(" "));
        }
        let (mut worst, mut worst_state, mut worst_reply) = (0f64, 0f64, 0f64);
        let mut missing = Vec::new();
        for (i, got) in done.iter().enumerate().filter(|(i, _)| *i != h) {
            match got {
                Some((st, rp)) => {
                    r.pairs += 1;
                    r.reply_first += usize::from(rp < st);
                    r.before_t0 += usize::from(*st <= t0);
                    worst_state = worst_state.max(since(*st, t0));
                    worst_reply = worst_reply.max(since(*rp, t0));
                    worst = worst.max(since(*st.max(rp), t0));
                }
                None => missing.push(c.hosts[i].name.as_str()),
            }
        }
        if !missing.is_empty() {
            let what = format!("add conv{n} ({}) on {}: {missing:?}", a.ip, c.hosts[h].name);
            r.timed_out(what)?;
            worst = ms(GIVE_UP);
        }
        r.add.0.push(worst);
        r.add_state.0.push(worst_state);
        r.add_reply.0.push(worst_reply);
        forget_arp(&c.probers, &a)?;
        added.push((h, a));
    }
    for (n, (h, a)) in added.iter().enumerate() {
        check_stop()?;
        let took = c.hosts[*h].cni_del(NETWORK, a)?;
        let t0 = Instant::now();
        r.cni_del.0.push(ms(took));
        let done = wait_all(sh, *h, t0, |i| lock(&sh.seen[i]).deleted(a.ip, a.mac).all());
        let mut worst = 0f64;
        let mut missing = Vec::new();
        for (i, got) in done.iter().enumerate().filter(|(i, _)| i != h) {
            match got {
                Some(t) => worst = worst.max(since(*t, t0)),
                None => missing.push(c.hosts[i].name.as_str()),
            }
        }
        if !missing.is_empty() {
            r.timed_out(format!("delete conv{n} ({}): {missing:?}", a.ip))?;
            worst = ms(GIVE_UP);
        }
        r.del.0.push(worst);
    }
    if let Some(h) = (0..HOSTS).find(|&i| lock(&sh.seen[i]).lost) {
        bail!(
            "the kernel dropped neighbour notifications on {}: the stamps cannot be trusted",
            c.hosts[h].name
        );
    }
    Ok(r)
}

/// ms from `t0` to `t`, 0 when `t` came first.
fn since(t: Instant, t0: Instant) -> f64 {
    ms(t.saturating_duration_since(t0))
}

/// Sends the probers after `a` (added on host `h` at `t0`) and waits for every other host's
/// (state, reply) stamps, or [`GIVE_UP`].
fn chase(
    sh: &Shared,
    h: usize,
    a: &Attached,
    t0: Instant,
) -> Result<Vec<Option<(Instant, Instant)>>> {
    let IpAddr::V4(v4) = a.ip else {
        bail!("ADD {}: an IPv6 address {}", a.id, a.ip);
    };
    let round = {
        let mut round = lock(&sh.round);
        round.n += 1;
        round.target = Some((v4, h));
        round.n
    };
    sh.wake.notify_all();
    let done = wait_all(sh, h, t0, |i| {
        let st = lock(&sh.seen[i]).added(a.ip, a.mac).all()?;
        let rp = lock(&sh.replies)[i].filter(|(n, _)| *n == round)?.1;
        Some((st, rp))
    });
    lock(&sh.round).target = None;
    Ok(done)
}

/// Deletes the dynamic neighbour entries an add's probes made (untimed, between adds): in
/// every prober for the new address, and all of the new container's. The 20 "hosts" share
/// one kernel, and the kernel's ARP table holds at most `gc_thresh3` (1,024) dynamic entries
/// across all namespaces, freeing only those idle for 5 s: 100 containers each resolving
/// 19 probers (and 19 probers resolving each of them) overflow it ("neighbor table
/// overflow!"), and the probes would then measure the kernel refusing ARP for seconds.
fn forget_arp(probers: &[Attached], a: &Attached) -> Result<()> {
    let flush = |ns: &TestNs, only: Option<IpAddr>| -> Result<()> {
        let nl = ns.handle()?;
        let eth0 = nl.link_by_name("eth0")?.index;
        for n in nl.neighs(eth0)? {
            if !n.is_permanent() && only.is_none_or(|ip| ip == n.ip) {
                nl.del_neigh(&n)?;
            }
        }
        Ok(())
    };
    for p in probers {
        flush(&p.ns, Some(a.ip))?;
    }
    flush(&a.ns, None)
}

/// Polls `get` for every host but `skip` until all have an answer or [`GIVE_UP`] after
/// `t0`; the answers (the stamps themselves are taken by the watching threads, so this
/// loop's pace does not enter the figures).
fn wait_all<T>(
    sh: &Shared,
    skip: usize,
    t0: Instant,
    get: impl Fn(usize) -> Option<T>,
) -> Vec<Option<T>> {
    let mut got: Vec<Option<T>> = (0..HOSTS).map(|_| None).collect();
    loop {
        let mut all = true;
        for (i, g) in got.iter_mut().enumerate() {
            if i != skip && g.is_none() {
                *g = get(i);
                all &= g.is_some();
            }
        }
        if all || t0.elapsed() > GIVE_UP || sh.stop.load(Ordering::Relaxed) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A prober: on each round, echo the target every [`PROBE_EVERY`] until it answers.
fn probe(sock: PingSocket, sh: &Shared, me: usize) {
    let mut last = 0;
    loop {
        let (n, target) = {
            let mut round = lock(&sh.round);
            while round.n == last && !sh.stop.load(Ordering::Relaxed) {
                round = sh
                    .wake
                    .wait_timeout(round, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if sh.stop.load(Ordering::Relaxed) {
                return;
            }
            (round.n, round.target)
        };
        last = n;
        let Some((ip, _)) = target.filter(|(_, h)| *h != me) else {
            continue;
        };
        let seq = n as u16;
        let started = Instant::now();
        while started.elapsed() < GIVE_UP && lock(&sh.round).n == n {
            // A failed send (no route yet, a full queue) is one probe lost: try again.
            let _ = sock.send(ip, seq);
            if let Some(at) = sock.reply(ip, seq, PROBE_EVERY) {
                lock(&sh.replies)[me] = Some((n, at));
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Series((1..=100).map(f64::from).collect());
        assert_eq!(s.p(0.5), 50.0);
        assert_eq!(s.p(0.99), 99.0);
        assert_eq!(s.p(1.0), 100.0);
        assert!(Series::default().p(0.5).is_nan());
        assert_eq!(Series(vec![7.0]).p(0.99), 7.0);
    }

    #[test]
    fn stamps_count_only_the_overlays_entries() {
        use libnet::netlink::{FdbEntry, Neigh};
        let (br, vx) = (5, 6);
        let ip: IpAddr = "10.246.0.9".parse().unwrap();
        let mac = [10, 0x58, 10, 0xf6, 0, 9];
        let t = Instant::now();
        let mut s = Seen::default();
        // A dynamic neighbour, and entries on other links: not ours.
        s.note(
            Event::NeighNew(Neigh {
                index: br,
                ip,
                mac: Some(mac),
                state: 2,
            }),
            br,
            vx,
            t,
        );
        s.note(Event::NeighNew(Neigh::permanent(9, ip, mac)), br, vx, t);
        s.note(
            Event::FdbNew(FdbEntry::vxlan_remote(
                9,
                mac,
                "192.168.79.11".parse().unwrap(),
            )),
            br,
            vx,
            t,
        );
        assert!(s.added(ip, mac).all().is_none());
        s.note(Event::NeighNew(Neigh::permanent(br, ip, mac)), br, vx, t);
        let remote = FdbEntry::vxlan_remote(vx, mac, "192.168.79.11".parse().unwrap());
        s.note(Event::FdbNew(remote.clone()), br, vx, t);
        assert!(s.added(ip, mac).all().is_none(), "no bridge entry yet");
        let later = t + Duration::from_millis(3);
        let bridge = FdbEntry {
            is_self: false,
            dst: None,
            state: NUD_NOARP,
            master: Some(br),
            ..remote.clone()
        };
        s.note(Event::FdbNew(bridge.clone()), br, vx, later);
        // A second notification of the same entry keeps the first stamp.
        s.note(
            Event::FdbNew(bridge.clone()),
            br,
            vx,
            later + Duration::from_secs(1),
        );
        assert_eq!(s.added(ip, mac).all(), Some(later));
        s.note(Event::FdbDel(remote), br, vx, later);
        s.note(Event::FdbDel(bridge), br, vx, later);
        assert!(
            s.deleted(ip, mac).all().is_none(),
            "the neighbour is still there"
        );
        s.note(
            Event::NeighDel(Neigh::permanent(br, ip, mac)),
            br,
            vx,
            later,
        );
        assert_eq!(s.deleted(ip, mac).all(), Some(later));
    }
}
