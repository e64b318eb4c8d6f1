//! `knit run --net NET -- true` (sandbox netns made, attached, CMD run, detached, removed)
//! against netavark 1.4 doing the same for one container: netns made, `netavark setup`, `true`
//! run in it, `netavark teardown`, netns deleted; every step timed on both sides.
//!
//! Each side runs in its own scratch namespace standing for the host (netavark writes iptables
//! rules there, never in the real host's), with private state dirs. Commands enter that
//! namespace by setns before exec (no wrapper process on either side). netavark gets the network
//! options JSON podman would send (its IPAM is podman's job: the address is static). Two
//! netavark rows: one where the container is alone, so netavark also makes and deletes the
//! bridge (the case, "netavark takes ~270 ms here": the target), and one with another
//! container kept attached so its bridge stays, as knit's network and bridge exist before
//! `knit run` (like for like; printed beside it, no target).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netns_tests::median_ms;
use netns_tests::scenario::TempDir;
use netns_tests::topology::{enter_in_child, TestNs};
use serde_json::{json, Value};

use crate::{check_stop, Args, Verdict};

pub const NETAVARK: &str = "/usr/lib/podman/netavark";
const KNIT_SUBNET: &str = "10.244.72.0/24";
/// The kernel tears a deleted netns down asynchronously; let it finish before the next cycle.
const SETTLE: Duration = Duration::from_millis(200);

/// Compare and add the target; a failure is reported, not fatal.
pub fn report(a: &Args, verdict: &mut Verdict) -> Result<()> {
    println!("\nknit run vs netavark 1.4, whole container cycle (netns made .. netns deleted):");
    let ratio = match compare(a.cycles) {
        Ok(r) => r,
        Err(e) => {
            check_stop()?;
            println!("  knit-run: FAILED: {e:#}");
            f64::NAN
        }
    };
    verdict.target(
        "knit run -- true / netavark setup+teardown alone",
        ratio,
        0.15,
    );
    Ok(())
}

/// `knit` with private dirs, inside a scratch host namespace, on one network.
struct KnitSide {
    host: TestNs,
    dir: TempDir,
    bin: PathBuf,
}

impl KnitSide {
    fn new() -> Result<KnitSide> {
        let bin = netns_tests::knit_bin()?;
        let s = KnitSide {
            host: TestNs::new("kr")?,
            dir: TempDir::new("kr")?,
            bin,
        };
        s.ok(&["network", "create", "--subnet", KNIT_SUBNET, "kbench"])?;
        Ok(s)
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = self.host.command(&self.bin.display().to_string());
        c.arg("--state-dir")
            .arg(d.join("state"))
            .arg("--run-dir")
            .arg(d.join("run"))
            .arg("--cni-data-dir")
            .arg(d.join("cni"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let o = self.command(args).output()?;
        ensure!(
            o.status.success(),
            "knit {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn cycle(&self) -> Result<Duration> {
        let t = Instant::now();
        let st = self
            .command(&["run", "--net", "kbench", "--", "true"])
            .stdout(Stdio::null())
            .status()?;
        let d = t.elapsed();
        ensure!(st.success(), "knit run -- true: {st}");
        Ok(d)
    }

    /// No sandbox, no container veth, no reservation left after the cycles.
    fn check_clean(&self) -> Result<()> {
        let sb = self.ok(&["sandbox", "ls", "--format", "json"])?;
        let sb: Value = serde_json::from_str(&sb).with_context(|| format!("sandbox ls: {sb}"))?;
        ensure!(
            sb.as_array().is_some_and(|a| a.is_empty()),
            "sandboxes left: {sb}"
        );
        let links: Vec<String> = self
            .host
            .handle()?
            .links()?
            .into_iter()
            .map(|l| l.name)
            .collect();
        ensure!(links.len() <= 2, "links left in the host: {links:?}");
        Ok(())
    }
}

/// netavark in its own host namespace and config dir, for one network.
struct NetavarkSide {
    host: TestNs,
    config: TempDir,
    net: Value,
    /// A container kept attached for the whole run (its bridge then stays).
    anchor: Option<TestNs>,
}

impl NetavarkSide {
    fn new(tag: &str, third_octet: u8, anchored: bool) -> Result<NetavarkSide> {
        ensure!(
            Path::new(NETAVARK).exists(),
            "{NETAVARK} is missing (apt netavark)"
        );
        let subnet = format!("10.244.{third_octet}.0/24");
        let net = json!({
            "dns_enabled": false, "driver": "bridge", "internal": false, "ipv6_enabled": false,
            "id": format!("{:064x}", 0x6b6e_6974_0000_u64 + u64::from(third_octet)),
            "name": "kbench", "network_interface": format!("knv{third_octet}"),
            "subnets": [{"subnet": subnet, "gateway": format!("10.244.{third_octet}.1")}],
        });
        let mut s = NetavarkSide {
            host: TestNs::new(tag)?,
            config: TempDir::new(tag)?,
            net,
            anchor: None,
        };
        if anchored {
            let ns = TestNs::new(&format!("{tag}a"))?;
            s.netavark("setup", &ns, 2)?;
            s.anchor = Some(ns);
        }
        Ok(s)
    }

    fn options(&self, host_octet: u8) -> Value {
        let sub = self.net["subnets"][0]["gateway"].as_str().unwrap_or("");
        let ip = format!(
            "{}.{host_octet}",
            sub.rsplit_once('.').map_or(sub, |(p, _)| p)
        );
        json!({
            "container_id": format!("{:064x}", u64::from(host_octet)),
            "container_name": format!("bench{host_octet}"),
            "networks": {"kbench": {"static_ips": [ip], "interface_name": "eth0"}},
            "network_info": {"kbench": self.net},
        })
    }

    /// `netavark --config DIR setup|teardown NETNS` with the options on stdin, in the host ns.
    fn netavark(&self, verb: &str, ns: &TestNs, host_octet: u8) -> Result<()> {
        let mut c = self.host.command(NETAVARK);
        c.arg("--config")
            .arg(self.config.path())
            .arg(verb)
            .arg(ns.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("spawning netavark")?;
        let body = self.options(host_octet).to_string();
        child
            .stdin
            .take()
            .context("netavark stdin")?
            .write_all(body.as_bytes())?;
        let o = child.wait_with_output()?;
        ensure!(
            o.status.success(),
            "netavark {verb}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(())
    }

    /// netns made, setup, `true` in it, teardown, netns deleted.
    fn cycle(&self) -> Result<Duration> {
        let t = Instant::now();
        let ns = TestNs::new("nc")?;
        self.netavark("setup", &ns, 3)?;
        let mut c = Command::new("true");
        enter_in_child(&mut c, ns.ns());
        let st = c.status()?;
        ensure!(st.success(), "true in the container: {st}");
        self.netavark("teardown", &ns, 3)?;
        drop(ns);
        Ok(t.elapsed())
    }
}

impl Drop for NetavarkSide {
    fn drop(&mut self) {
        if let Some(ns) = self.anchor.take() {
            if let Err(e) = self.netavark("teardown", &ns, 2) {
                eprintln!("knit-bench: netavark anchor teardown: {e:#}");
            }
        }
    }
}

/// Interleaved cycles, order rotating, one warm-up each; prints medians, returns knit/netavark
/// (container alone).
fn compare(cycles: usize) -> Result<f64> {
    let knit = KnitSide::new()?;
    let kept = NetavarkSide::new("nk", 73, true)?;
    let alone = NetavarkSide::new("na", 74, false)?;
    // Proof the knit side attaches: the sandbox has an address on the network.
    let out = knit.ok(&["run", "--net", "kbench", "--", "ip", "-o", "-4", "addr"])?;
    ensure!(
        out.contains("inet 10.244.72."),
        "knit run: no address in {KNIT_SUBNET}:\n{out}"
    );
    let sides: [(&str, &dyn Fn() -> Result<Duration>); 3] = [
        ("knit run", &|| knit.cycle()),
        ("netavark (bridge kept)", &|| kept.cycle()),
        ("netavark (alone)", &|| alone.cycle()),
    ];
    let mut t: [Vec<Duration>; 3] = Default::default();
    for round in 0..=cycles {
        for j in 0..3 {
            check_stop()?;
            let k = (round + j) % 3;
            let d = (sides[k].1)()?;
            std::thread::sleep(SETTLE);
            if round > 0 {
                t[k].push(d);
            }
        }
    }
    knit.check_clean()?;
    let m: Vec<f64> = t.iter().map(|v| median_ms(v)).collect();
    for ((label, _), (ms, v)) in sides.iter().zip(m.iter().zip(&t)) {
        let min = v.iter().min().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let max = v.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        println!("  {label:<24} {ms:>8.2} ms  (median of {cycles}; min {min:.1}, max {max:.1})");
    }
    println!(
        "  knit/netavark: {:.3} (bridge kept), {:.3} (alone)",
        m[0] / m[1],
        m[0] / m[2]
    );
    Ok(m[0] / m[2])
}
