//! Services at scale: with 100, then 10,000 services programmed in knit's nftables table (three
//! backends each), the time to add or remove one backend of one service
//! (`Nft::ensure_service`: the diff against the recorded elements, one netlink batch; targets:
//! p99 < 5 ms at both sizes), side by side with the same element changes given to `nft -f`
//! (libnftables' parser and cache, as a tool driving `nft` would pay) at the same size; then the
//! first-packet latency (TCP connect through the DNAT) to the first and to the last service,
//! alternated (target: last ≤ 1.1x first).
//!
//! Measured while designing it: an interval map (pipapo) keyed by slot ranges cost 16 ms at 100
//! services and 68 ms at 10,000 per change (the kernel rebuilds the whole set per transaction),
//! and every nfnetlink socket close after a deletion waits out an RCU grace period; hash maps
//! with one `numgen mod N` chain per backend count, and sockets kept open, brought it to
//! ~0.4 ms and ~1.5 ms.
//!
//! Everything runs in scratch namespaces: a host H, a client C routed through H, one backend B
//! listening on :8080 behind H; services' VIPs are routed to H by C's default route, and only
//! the first and last service point at B (the others at addresses nobody uses).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libnet::nft::{Attachment, LibNft, Nft, Proto, ServicePort, StateDir};
use netns_tests::scenario::TempDir;
use netns_tests::topology::{enter_in_child, TestNs};

use crate::{check_stop, Verdict};

const PORT: ServicePort = ServicePort {
    protocol: Proto::Tcp,
    port: 80,
    target: 8080,
};
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
const REPS: usize = 60;

fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 203, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Three backends of service `i`: the real one for the first and last service (the latency
/// probe), addresses nobody holds for the rest.
fn backends(i: usize, n: usize) -> Vec<IpAddr> {
    if i == 0 || i == n - 1 {
        return vec![IpAddr::V4(BACKEND)];
    }
    (0..3)
        .map(|k| IpAddr::V4(Ipv4Addr::new(10, 204, (i / 250) as u8, (i % 250) as u8 + k)))
        .collect()
}

fn att(i: usize) -> Attachment {
    Attachment::new("bench-net", &format!("svc{i}"), "svc")
}

struct Topo {
    h: TestNs,
    c: TestNs,
    _b: TestNs,
    dir: TempDir,
}

fn topo() -> Result<Topo> {
    let h = TestNs::new("svh")?;
    let c = TestNs::new("svc")?;
    let b = TestNs::new("svb")?;
    let sh = |ns: &TestNs, cmd: &str| -> Result<()> {
        let o = ns.run(&["sh", "-c", cmd])?;
        ensure!(o.status.success(), "{cmd}");
        Ok(())
    };
    sh(
        &h,
        &format!(
            "ip link add kn-c type veth peer name eth0 netns {}",
            c.name()
        ),
    )?;
    sh(
        &h,
        &format!(
            "ip link add kn-b type veth peer name eth0 netns {}",
            b.name()
        ),
    )?;
    sh(&h, "ip addr add 10.201.0.1/24 dev kn-c && ip link set kn-c up && ip addr add 10.202.0.1/24 dev kn-b && ip link set kn-b up && ip link set lo up && sysctl -qw net.ipv4.ip_forward=1")?;
    sh(&c, "ip addr add 10.201.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.201.0.1")?;
    sh(&b, "ip addr add 10.202.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.202.0.1")?;
    let l = b
        .ns()
        .run_in(|| TcpListener::bind(SocketAddr::new(IpAddr::V4(BACKEND), 8080)))??;
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    Ok(Topo {
        h,
        c,
        _b: b,
        dir: TempDir::new("svcbench")?,
    })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Program services `from..to` of a table sized `n`.
fn program(t: &Topo, nft: &Nft, from: usize, to: usize, n: usize) -> Result<()> {
    t.h.ns().run_in(|| -> Result<()> {
        for i in from..to {
            nft.ensure_service(&att(i), vip(i), &[PORT], &backends(i, n))?;
        }
        Ok(())
    })?
}

/// Add then remove a fourth backend of service `i`, `REPS` times each, through knit: ms.
fn churn_knit(t: &Topo, nft: &Nft, i: usize, n: usize) -> Result<Vec<f64>> {
    t.h.ns().run_in(|| -> Result<Vec<f64>> {
        let base = backends(i, n);
        let mut more = base.clone();
        more.push(IpAddr::V4(Ipv4Addr::new(10, 205, 0, 9)));
        let mut ms = Vec::new();
        for _ in 0..REPS {
            for b in [&more, &base] {
                let s = Instant::now();
                nft.ensure_service(&att(i), vip(i), &[PORT], b)?;
                ms.push(s.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(ms)
    })?
}

/// The same element changes through `nft -f -` (one process per change, as a tool driving the
/// nft binary pays): ms.
fn churn_nft_cli(t: &Topo, i: usize, n: usize) -> Result<Vec<f64>> {
    let base = libnet::nft::plan::plan_service(vip(i), &[PORT], &backends(i, n))?;
    let mut more_b = backends(i, n);
    more_b.push(IpAddr::V4(Ipv4Addr::new(10, 205, 0, 9)));
    let more = libnet::nft::plan::plan_service(vip(i), &[PORT], &more_b)?;
    // Move the service off knit's own elements first, so both sides start alike.
    let add = libnet::nft::plan::render_ops(&libnet::nft::plan::ops_replace(&base, &more), "cli");
    let back = libnet::nft::plan::render_ops(&libnet::nft::plan::ops_replace(&more, &base), "cli");
    let mut ms = Vec::new();
    for _ in 0..REPS {
        for script in [&add, &back] {
            let mut cmd = Command::new("nft");
            cmd.args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null());
            enter_in_child(&mut cmd, t.h.ns());
            let s = Instant::now();
            let mut child = cmd.spawn().context("nft")?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(script.as_bytes())?;
            let st = child.wait()?;
            ms.push(s.elapsed().as_secs_f64() * 1e3);
            ensure!(st.success(), "nft -f failed on:\n{script}");
        }
    }
    Ok(ms)
}

/// Connect latency (SYN to established, through the DNAT) to services `a` and `b`, alternated.
fn first_packet(t: &Topo, a: usize, b: usize) -> Result<(f64, f64)> {
    t.c.ns().run_in(|| -> Result<(f64, f64)> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for k in 0..2 * REPS + 20 {
            for (i, out) in [(a, &mut x), (b, &mut y)] {
                let s = Instant::now();
                let c = TcpStream::connect_timeout(
                    &SocketAddr::new(vip(i), 80),
                    Duration::from_secs(2),
                )
                .with_context(|| format!("connect to service {i} at {}", vip(i)))?;
                let d = s.elapsed().as_secs_f64() * 1e3;
                drop(c);
                if k >= 20 {
                    out.push(d);
                }
            }
        }
        Ok((pct(&mut x, 0.5), pct(&mut y, 0.5)))
    })?
}

pub fn report(verdict: &mut Verdict) -> Result<()> {
    println!("\nservices: one backend added or removed, knit (netlink batch) vs `nft -f` (ms):");
    match measure(verdict) {
        Ok(()) => Ok(()),
        Err(e) => {
            check_stop()?;
            println!("  services: FAILED: {e:#}");
            verdict.target("services: backend change at 10,000 (ms)", f64::NAN, 5.0);
            Ok(())
        }
    }
}

fn measure(verdict: &mut Verdict) -> Result<()> {
    let t = topo()?;
    // As the agent does: nfnetlink sockets kept open, so one change's destroy work (an RCU
    // grace period) never holds the next one up (see `libnet::nft::keep_sockets`).
    libnet::nft::keep_sockets();
    let nft = Nft::with(LibNft::new(), StateDir::new(t.dir.path().join("nft")));
    let mut done = 0;
    let mut p99_at = Vec::new();
    for n in [100usize, 10_000] {
        let s = Instant::now();
        // The smaller table's last service gets its ordinary backends at this size (the probe's
        // backend moves to the new last one).
        program(&t, &nft, done, n, n)?;
        if done > 0 {
            program(&t, &nft, done - 1, done, n)?;
        }
        println!(
            "  {n} services programmed ({} new in {:.1} s)",
            n - done,
            s.elapsed().as_secs_f64()
        );
        done = n;
        check_stop()?;
        let mut k = churn_knit(&t, &nft, n / 2, n)?;
        let mut c = churn_nft_cli(&t, n / 2, n)?;
        let (k50, k99) = (pct(&mut k, 0.5), pct(&mut k, 0.99));
        let (c50, c99) = (pct(&mut c, 0.5), pct(&mut c, 0.99));
        println!(
            "  at {n:>6}: knit p50 {k50:.3} p99 {k99:.3}   nft -f p50 {c50:.2} p99 {c99:.2}   knit/nft {:.3}",
            k50 / c50
        );
        p99_at.push(k99);
        verdict.target(
            &format!("services: backend change p99 at {n} (ms)"),
            k99,
            5.0,
        );
        check_stop()?;
    }
    println!(
        "  p99 at 10,000 services is {:.2}x the p99 at 100",
        p99_at[1] / p99_at[0]
    );
    let (first, last) = first_packet(&t, 0, done - 1)?;
    println!(
        "  first-packet latency (TCP connect via the VIP, median of {REPS}): first service \
         {first:.3} ms, last {last:.3} ms"
    );
    verdict.target(
        "services: first packet, last / first service",
        last / first,
        1.1,
    );
    Ok(())
}
