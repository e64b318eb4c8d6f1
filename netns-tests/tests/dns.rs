//! `knit dns` end to end: sandboxes made by `knit run` ask knit's DNS with `dig` (bind9-dnsutils)
//! for the names of endpoints: bare and fully qualified, PTR, over UDP and TCP; a name on a
//! network the asker is not on does not resolve; a name written after the server started is
//! served, and a removed one is gone within a TTL.
#![cfg(feature = "root-tests")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netns_tests::scenario::TempDir;
use netns_tests::topology::TestNs;

struct Host {
    ns: TestNs,
    dir: TempDir,
    bin: PathBuf,
    dns: Option<Child>,
}

impl Host {
    fn new() -> Result<Host> {
        netns_tests::require_root();
        let bin = netns_tests::knit_bin()?;
        Ok(Host {
            ns: TestNs::new("dns")?,
            dir: TempDir::new("dns")?,
            bin,
            dns: None,
        })
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = self.ns.command(&self.bin.display().to_string());
        c.arg("--state-dir").arg(d.join("state"));
        c.arg("--run-dir").arg(d.join("run"));
        c.arg("--cni-data-dir").arg(d.join("cni"));
        c
    }

    fn knit(&self, args: &[&str]) -> Result<String> {
        let o = self.command().args(args).output()?;
        ensure!(
            o.status.success(),
            "knit {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `dig` run inside a fresh sandbox on `net`: its full output.
    fn dig(&self, net: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["run", "--net", net, "--", "dig", "+time=2", "+tries=1"];
        a.extend(args);
        let o = self.command().args(&a).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // One at a time: `sandbox rm` stops at the first name that is already gone.
        for sb in ["web", "db", "api"] {
            let _ = self.knit(&["sandbox", "rm", sb]);
        }
        for net in ["front", "back"] {
            let _ = self.knit(&["network", "rm", net]);
        }
    }
}

fn status(dig: &str) -> &str {
    dig.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)")
}

fn answers(dig: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut on = false;
    for l in dig.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            on = true;
            continue;
        }
        if on {
            if l.trim().is_empty() {
                break;
            }
            out.push(l.split_whitespace().last().unwrap_or("").to_string());
        }
    }
    out
}

#[test]
fn containers_find_each_other_by_name_on_their_networks_only() -> Result<()> {
    let mut h = Host::new()?;
    h.knit(&["network", "create", "--subnet", "10.244.70.0/24", "front"])?;
    h.knit(&["network", "create", "--subnet", "10.244.71.0/24", "back"])?;
    h.knit(&[
        "run", "--name", "web", "--alias", "www", "--label", "app=web", "--net", "front", "--",
        "true",
    ])?;
    h.knit(&["run", "--name", "db", "--net", "back", "--", "true"])?;
    // An endpoint knit did not attach, registered by hand.
    h.knit(&[
        "endpoint",
        "add",
        "--network",
        "front",
        "--name",
        "vm1",
        "--ip",
        "10.244.70.200",
        "--alias",
        "legacy",
    ])?;
    let log = std::fs::File::create(h.dir.path().join("dns.log"))?;
    h.dns = Some(
        h.command()
            .args([
                "dns",
                "--no-forward",
                "--listen",
                "10.244.70.1",
                "--listen",
                "10.244.71.1:53",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting knit dns")?,
    );
    let t = Instant::now();
    loop {
        let d = h.dig("front", &["@10.244.70.1", "web"])?;
        if answers(&d) == ["10.244.70.2"] {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "web never resolved:\n{d}\n{}",
            std::fs::read_to_string(h.dir.path().join("dns.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = h.dig("front", &["@10.244.70.1", "web.front.knit.internal"])?;
    ensure!(answers(&d) == ["10.244.70.2"], "FQDN:\n{d}");
    let d = h.dig("front", &["@10.244.70.1", "www"])?;
    ensure!(answers(&d) == ["10.244.70.2"], "alias:\n{d}");
    for name in ["vm1", "legacy.front.knit.internal"] {
        let d = h.dig("front", &["@10.244.70.1", name])?;
        ensure!(answers(&d) == ["10.244.70.200"], "registered {name}:\n{d}");
    }
    // The registered address is reserved: knit gives it to no sandbox.
    let reserved = h
        .command()
        .args([
            "run",
            "--net",
            "front",
            "--ip",
            "10.244.70.200",
            "--",
            "true",
        ])
        .output()?;
    ensure!(
        !reserved.status.success(),
        "a sandbox got the registered address"
    );
    h.knit(&["endpoint", "rm", "--network", "front", "vm1"])?;
    let t = Instant::now();
    loop {
        let d = h.dig("front", &["@10.244.70.1", "vm1.front.knit.internal"])?;
        if status(&d) == "NXDOMAIN" {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "vm1 after endpoint rm:\n{d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = h.dig("front", &["@10.244.70.1", "+tcp", "web"])?;
    ensure!(answers(&d) == ["10.244.70.2"], "TCP:\n{d}");
    let d = h.dig("front", &["@10.244.70.1", "-x", "10.244.70.2"])?;
    ensure!(answers(&d) == ["web.front.knit.internal."], "PTR:\n{d}");
    let d = h.dig("front", &["@10.244.70.1", "web", "AAAA"])?;
    ensure!(
        status(&d) == "NOERROR" && answers(&d).is_empty(),
        "NODATA:\n{d}"
    );
    // db lives on back: front cannot resolve it, back can.
    let d = h.dig("front", &["@10.244.70.1", "db.back.knit.internal"])?;
    ensure!(status(&d) == "NXDOMAIN", "front resolved back's db:\n{d}");
    let d = h.dig("front", &["@10.244.70.1", "db"])?;
    ensure!(answers(&d).is_empty(), "front resolved back's db:\n{d}");
    let d = h.dig("back", &["@10.244.71.1", "db"])?;
    ensure!(answers(&d) == ["10.244.71.2"], "back's own db:\n{d}");
    // A name written after the start is served; a removed one is gone within a TTL (5 s).
    h.knit(&["run", "--name", "api", "--net", "front", "--", "true"])?;
    let t = Instant::now();
    loop {
        let d = h.dig("front", &["@10.244.70.1", "api"])?;
        if answers(&d).len() == 1 {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(3),
            "api never served after start:\n{d}\n{}",
            std::fs::read_to_string(h.dir.path().join("dns.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.knit(&["sandbox", "rm", "web"])?;
    let t = Instant::now();
    loop {
        let d = h.dig("front", &["@10.244.70.1", "web.front.knit.internal"])?;
        if status(&d) == "NXDOMAIN" {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "web after removal:\n{d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A name that is not knit's goes to the upstream (an unbound this test starts in its own
/// namespace, answering one local zone and refusing everything else: no traffic leaves the
/// test's namespaces), and the second time the cache answers with the upstream gone. A
/// requester on no knit network is refused, not forwarded.
#[test]
fn other_names_are_forwarded_upstream_and_cached() -> Result<()> {
    use netns_tests::cases::{OUTSIDE_HOST_IP, OUTSIDE_IP};
    let mut h = Host::new()?;
    let up = TestNs::new("dnsup")?;
    netns_tests::scenario::join_outside(&h.ns, &up)?;
    let conf = h.dir.path().join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: {OUTSIDE_IP}\n  port: 53\n  access-control: 0.0.0.0/0 allow\n  \
             do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  \
             pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  num-threads: 1\n  do-ip6: no\n  \
             local-zone: \".\" refuse\n  local-zone: \"example.test.\" static\n  \
             local-data: \"www.example.test. 300 IN A 192.0.2.10\"\n\
             remote-control:\n  control-enable: no\n",
            d = h.dir.path().display()
        ),
    )?;
    let mut unbound = up
        .command("unbound")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting unbound (apt unbound)")?;
    h.knit(&["network", "create", "--subnet", "10.244.72.0/24", "front"])?;
    h.knit(&["run", "--name", "web", "--net", "front", "--", "true"])?;
    let log = std::fs::File::create(h.dir.path().join("dns.log"))?;
    h.dns = Some(
        h.command()
            .args(["dns", "--listen", "10.244.72.1", "--upstream", OUTSIDE_IP])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let t = Instant::now();
    let first = loop {
        let d = h.dig("front", &["@10.244.72.1", "www.example.test"])?;
        if answers(&d) == ["192.0.2.10"] {
            break d;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = unbound.kill();
            anyhow::bail!("never forwarded:\n{d}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        first.contains(" ra"),
        "a forwarded answer says recursion is available:\n{first}"
    );
    let d = h.dig("front", &["@10.244.72.1", "nope.example.test"])?;
    ensure!(
        status(&d) == "NXDOMAIN",
        "upstream's NXDOMAIN passed on:\n{d}"
    );
    // knit's own names still come from knit.
    let d = h.dig("front", &["@10.244.72.1", "web"])?;
    ensure!(answers(&d) == ["10.244.72.2"], "{d}");
    // The upstream goes away: the cache answers.
    unbound.kill()?;
    unbound.wait()?;
    let d = h.dig("front", &["@10.244.72.1", "www.example.test"])?;
    ensure!(answers(&d) == ["192.0.2.10"], "not from the cache:\n{d}");
    // No open resolver: a requester on no knit network (the outside namespace) is refused.
    up.run(&[
        "ip",
        "route",
        "add",
        "10.244.72.0/24",
        "via",
        OUTSIDE_HOST_IP,
    ])?;
    let o = up
        .command("dig")
        .args(["+time=2", "+tries=1", "@10.244.72.1", "www.example.test"])
        .output()?;
    let d = String::from_utf8_lossy(&o.stdout);
    ensure!(status(&d) == "REFUSED", "an outsider got an answer:\n{d}");
    Ok(())
}
