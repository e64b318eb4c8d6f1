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
        let bin = std::env::var_os("KNIT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| netns_tests::workspace_root().join("target/release/knit"));
        ensure!(
            bin.exists(),
            "{} is missing: run `make build`",
            bin.display()
        );
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
        let _ = self.knit(&["sandbox", "rm", "web", "db", "api"]);
        let _ = self.knit(&["network", "rm", "front", "back"]);
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
    h.knit(&["run", "--name", "web", "--net", "front", "--", "true"])?;
    h.knit(&["run", "--name", "db", "--net", "back", "--", "true"])?;
    let log = std::fs::File::create(h.dir.path().join("dns.log"))?;
    h.dns = Some(
        h.command()
            .args([
                "dns",
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
    let d = h.dig("front", &["@10.244.70.1", "api"])?;
    ensure!(answers(&d).len() == 1, "api after start:\n{d}");
    h.knit(&["sandbox", "rm", "web"])?;
    std::thread::sleep(Duration::from_millis(200));
    let d = h.dig("front", &["@10.244.70.1", "web.front.knit.internal"])?;
    ensure!(status(&d) == "NXDOMAIN", "web after removal:\n{d}");
    Ok(())
}
