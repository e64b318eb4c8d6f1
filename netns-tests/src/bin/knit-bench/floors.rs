//! Floors the benchmark's ratios are read against: what the kernel's own deletions cost when
//! `ip` asks, and the disk flush knit pays for a durable reservation.

use std::time::Instant;

use anyhow::Result;
use netns_tests::median_ms;
use netns_tests::topology::TestNs;

use crate::check_stop;

/// The kernel's own cost of deleting a host veth (peer in another netns) over netlink, no
/// process start.
pub fn link_del_floor(n: usize) -> Result<f64> {
    let host = TestNs::new("f")?;
    let c = TestNs::new("fc")?;
    let h = host.handle()?;
    let mut nl_t = Vec::with_capacity(n);
    for _ in 0..n {
        check_stop()?;
        let v = argv(VETH_FLOOR.setup[0], c.name());
        host.run(&v.iter().map(String::as_str).collect::<Vec<_>>())?;
        let t = Instant::now();
        h.del_link_by_name("kntf0")?;
        nl_t.push(t.elapsed());
    }
    Ok(median_ms(&nl_t))
}

/// A kernel floor for DEL: links made by `setup` (untimed), then removed by the `del` commands,
/// each an `ip` process as a user would run it by hand (timed together). `{c}` in a command is
/// the container namespace's name. The host namespace has a spare veth `kntfp` as a master.
pub struct DelFloor {
    setup: &'static [&'static str],
    pub del: &'static [&'static str],
}

/// Deleting a container's veth (bridge, ptp).
pub const VETH_FLOOR: DelFloor = DelFloor {
    setup: &["ip link add kntf0 type veth peer name eth0 netns {c}"],
    del: &["ip link del kntf0"],
};

/// Deleting a macvlan inside the container.
pub const MACVLAN_FLOOR: DelFloor = DelFloor {
    setup: &["ip link add kntfm link kntfp netns {c} type macvlan mode bridge"],
    del: &["ip -n {c} link del kntfm"],
};

/// Deleting what bridge+bandwidth made: the shaped ifb and the container's veth.
pub const BANDWIDTH_FLOOR: DelFloor = DelFloor {
    setup: &[
        "ip link add kntf0 type veth peer name eth0 netns {c}",
        "ip link add kntfb type ifb",
        "tc qdisc add dev kntfb root tbf rate 50mbit burst 400000 latency 25ms",
    ],
    del: &["ip link del kntfb", "ip link del kntf0"],
};

fn argv(cmd: &str, c: &str) -> Vec<String> {
    cmd.split(' ').map(|w| w.replace("{c}", c)).collect()
}

/// Median wall time of the floor's `del` commands, `n` times.
pub fn del_floor(n: usize, f: &DelFloor) -> Result<f64> {
    let host = TestNs::new("f")?;
    host.run(&[
        "ip", "link", "add", "kntfp", "type", "veth", "peer", "name", "kntfq",
    ])?;
    host.run(&["ip", "link", "set", "kntfp", "up"])?;
    let mut times = Vec::with_capacity(n);
    let mut used = Vec::with_capacity(n);
    for _ in 0..n {
        check_stop()?;
        let c = TestNs::new("fc")?;
        let run = |cmd: &str| -> Result<()> {
            let v = argv(cmd, c.name());
            host.run(&v.iter().map(String::as_str).collect::<Vec<_>>())?;
            Ok(())
        };
        for cmd in f.setup {
            run(cmd)?;
        }
        let t = Instant::now();
        for cmd in f.del {
            run(cmd)?;
        }
        times.push(t.elapsed());
        // Dropped after the loop: a netns dies asynchronously, under the RTNL.
        used.push(c);
    }
    Ok(median_ms(&times))
}

/// What knit pays and the reference does not: one fsync of a new reservation (write, hard
/// link into place, fsync) in a directory on the same filesystem as the benchmark's IPAM data.
pub fn fsync_floor(n: usize) -> Result<f64> {
    use std::io::Write;
    let dir = netns_tests::scenario::TempDir::new("fsync")?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let tmp = dir.path().join("tmp.reserve");
        let t = Instant::now();
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(b"knt-bench\r\neth0")?;
        std::fs::hard_link(&tmp, dir.path().join(format!("10.244.0.{i}")))?;
        f.sync_all()?;
        times.push(t.elapsed());
        std::fs::remove_file(&tmp)?;
    }
    Ok(median_ms(&times))
}
