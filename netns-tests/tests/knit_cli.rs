//! The `knit` CLI end to end, as a user runs it: networks (automatic subnet, internal),
//! sandboxes that ping each other, isolation between networks, SIGTERM passed on, the
//! null, host and container: networks, published ports (-p), enable_icc=false, exit codes
//! passed through, bad input that changes nothing, and removal that leaves no link, namespace,
//! store record, IPAM reservation or nft element.
//!
//! Every knit command runs inside a scratch "host" namespace (its bridges, veths and nft table
//! live there, never in the real host's), with a private `--state-dir`, `--run-dir` and
//! `--cni-data-dir`. Runs the binary `$KNIT_BIN` (default target/release/knit: `make build`).
#![cfg(feature = "root-tests")]

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{ensure, Context, Result};
use netns_tests::cases::OUTSIDE_HOST_IP;
use netns_tests::scenario::{join_outside, TempDir, OUTSIDE_LINK};
use netns_tests::topology::TestNs;
use serde_json::Value;

struct Knit {
    host: TestNs,
    dir: TempDir,
    bin: PathBuf,
}

impl Knit {
    fn new() -> Result<Knit> {
        netns_tests::require_root();
        let bin = netns_tests::knit_bin()?;
        Ok(Knit {
            host: TestNs::new("cli")?,
            dir: TempDir::new("cli")?,
            bin,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("knit {args:?}"))
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let d = self.dir.path();
        let mut c = self.host.command(&self.bin.display().to_string());
        c.arg("--state-dir")
            .arg(d.join("state"))
            .arg("--run-dir")
            .arg(d.join("run"))
            .arg("--cni-data-dir")
            .arg(self.data_dir())
            .args(args);
        c
    }

    /// Exit status, stdout, stderr.
    fn status(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let o = self.run(args)?;
        Ok((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.status(args)?;
        ensure!(code == 0, "knit {args:?} exited {code}: {err}");
        Ok(out)
    }

    /// Must fail with exit status `want` and an error that contains `needle`, changing nothing.
    fn refuses(&self, args: &[&str], want: i32, needle: &str) -> Result<()> {
        let before = self.snapshot()?;
        let (code, _, err) = self.status(args)?;
        ensure!(
            code == want,
            "knit {args:?}: exit {code}, want {want}: {err}"
        );
        ensure!(
            err.contains(needle),
            "knit {args:?}: error {err:?} lacks {needle:?}"
        );
        let after = self.snapshot()?;
        ensure!(
            before == after,
            "knit {args:?} changed state:\n{before}\n---\n{after}"
        );
        Ok(())
    }

    /// What knit may change: the store's networks and sandboxes, the host's links, the knit-*
    /// namespaces, the IPAM reservations.
    fn snapshot(&self) -> Result<String> {
        let nets = self.ok(&["network", "ls", "--format", "json"])?;
        let sbs = self.ok(&["sandbox", "ls", "--format", "json"])?;
        let links = self.host.stdout(&["ip", "-o", "link"])?;
        let links: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(str::trim))
            .collect();
        Ok(format!(
            "{nets}{sbs}links {links:?}\nnetns {:?}\nipam {:?}\n",
            knit_netns(self)?,
            reservations(&self.data_dir())
        ))
    }
}

/// A failed test still removes the sandboxes it made (their namespaces are in the real
/// /run/netns); the scratch host namespace takes the bridges and veths with it.
impl Drop for Knit {
    fn drop(&mut self) {
        let Ok(out) = self.ok(&["sandbox", "ls", "--format", "json"]) else {
            return;
        };
        let sbs: Value = serde_json::from_str(&out).unwrap_or_default();
        for sb in sbs.as_array().into_iter().flatten() {
            if let Some(id) = sb["Id"].as_str() {
                let _ = self.run(&["sandbox", "rm", id]);
            }
        }
    }
}

/// The `knit-*` namespaces of this test's knit: those of its store's sandboxes and those its
/// run dir holds a lease of (`RUN_DIR/sandboxes/<id>`, kept until the sandbox's namespace and
/// record are gone), so that other knit runs on the machine at the same time do not count.
fn knit_netns(k: &Knit) -> Result<Vec<String>> {
    let mut ours: Vec<String> = std::fs::read_dir(k.dir.path().join("run/sandboxes"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            format!(
                "knit-{}",
                e.file_name().to_string_lossy().get(..12).unwrap_or("")
            )
        })
        .collect();
    let sbs: Value = serde_json::from_str(&k.ok(&["sandbox", "ls", "--format", "json"])?)?;
    ours.extend(sbs.as_array().into_iter().flatten().filter_map(|s| {
        s["Netns"]
            .as_str()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string)
    }));
    let mut v: Vec<String> = std::fs::read_dir(libnet::netns::NETNS_RUN_DIR)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("knit-") && ours.contains(n))
        .collect();
    v.sort();
    Ok(v)
}

/// Every reservation file under the data dir (`<network>/<ip>`).
fn reservations(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(nets) = std::fs::read_dir(data_dir) else {
        return out;
    };
    for n in nets.filter_map(|e| e.ok()) {
        let net = n.file_name().to_string_lossy().into_owned();
        if net.starts_with('.') {
            continue;
        }
        for f in std::fs::read_dir(n.path()).into_iter().flatten().flatten() {
            let f = f.file_name().to_string_lossy().into_owned();
            if f != "lock" && !f.starts_with("last_reserved_ip.") {
                out.push(format!("{net}/{f}"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn knit_cli_networks_and_sandboxes() -> Result<()> {
    let k = Knit::new()?;
    let pid = std::process::id();
    let o = 100 + pid % 100;
    let (n1, n2) = (format!("kc{pid}a"), format!("kc{pid}b"));
    let (sub1, sub2) = (format!("10.{o}.1.0/24"), format!("10.{o}.2.0/24"));
    let base_links = k.snapshot()?;

    let id1 = k.ok(&["network", "create", "--subnet", &sub1, &n1])?;
    ensure!(id1.trim().len() == 64, "network id {id1:?}");
    k.ok(&["network", "create", "--subnet", &sub2, &n2])?;
    let bridge1 = format!("knit-{}", &id1.trim()[..10]);
    k.host
        .handle()?
        .link_by_name(&bridge1)
        .with_context(|| format!("bridge {bridge1} of {n1}"))?;
    // Without --subnet: the first private /24 that no network and no host route covers.
    k.host
        .run(&["ip", "route", "add", "172.17.0.0/16", "dev", &bridge1])
        .context("a host route on 172.17.0.0/16")?;
    let n3 = format!("kc{pid}c");
    k.ok(&["network", "create", "--internal", &n3])?;
    let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", &n3])?)?;
    ensure!(
        v[0]["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/24" && v[0]["Internal"] == true,
        "automatic subnet: {v}"
    );
    // An internal network has no route out.
    let routes = k.ok(&["run", "--net", &n3, "--", "ip", "route"])?;
    ensure!(
        routes.contains("172.18.0.0/24") && !routes.contains("default"),
        "{n3}: {routes}"
    );
    k.ok(&["network", "rm", &n3])?;
    k.host
        .run(&["ip", "route", "del", "172.17.0.0/16", "dev", &bridge1])?;

    let ls = k.ok(&["network", "ls"])?;
    ensure!(ls.contains(&n1) && ls.contains(&sub2), "network ls:\n{ls}");

    // A named sandbox stays after its command.
    k.ok(&["run", "--name", "s1", "--net", &n1, "--", "true"])?;
    let inspect: Value = serde_json::from_str(&k.ok(&["network", "inspect", &n1])?)?;
    let net = &inspect[0];
    ensure!(
        net["Name"] == n1.as_str() && net["Driver"] == "bridge",
        "{net}"
    );
    ensure!(net["IPAM"]["Config"][0]["Subnet"] == sub1.as_str(), "{net}");
    let containers = net["Containers"].as_object().context("Containers")?;
    ensure!(containers.len() == 1, "{net}");
    let (_, s1) = containers.iter().next().context("s1")?;
    ensure!(s1["Name"] == "s1", "{s1}");
    let s1_cidr = s1["IPv4Address"].as_str().context("IPv4Address")?;
    ensure!(s1_cidr == format!("10.{o}.1.2/24"), "s1 has {s1_cidr}");
    let s1_ip = s1_cidr.split('/').next().context("ip")?.to_string();
    ensure!(
        reservations(&k.data_dir()) == [format!("{n1}/{s1_ip}")],
        "the reservation is in the host-local layout: {:?}",
        reservations(&k.data_dir())
    );

    // A second sandbox on the same network reaches it (knit run passes ping's status on).
    k.ok(&["run", "--net", &n1, "--", "ping", "-c1", "-W2", &s1_ip])?;
    // Isolation between networks, as Docker's: a sandbox on the second network does not
    // reach s1 (the positive control above shows s1 answers), though both reach their gateways.
    let (code, out, _) = k.status(&["run", "--net", &n2, "--", "ping", "-c1", "-W1", &s1_ip])?;
    ensure!(
        code == 1,
        "{n2} reached {s1_ip} on {n1} (exit {code}): {out}"
    );
    let gw2 = format!("10.{o}.2.1");
    k.ok(&["run", "--net", &n2, "--", "ping", "-c1", "-W2", &gw2])?;
    // --ip asks for an address; it is reserved like any other while the sandbox lives.
    let want = format!("10.{o}.1.77");
    let out = k.ok(&[
        "run", "--net", &n1, "--ip", &want, "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ])?;
    ensure!(out.contains(&format!("{want}/24")), "--ip: {out}");
    // The null network: loopback only, and up.
    let out = k.ok(&["run", "--net", "none", "--", "ip", "-o", "link"])?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines.len() == 1 && lines[0].contains(": lo:") && lines[0].contains(",UP"),
        "{out}"
    );
    // CMD's exit status is knit run's.
    let (code, _, _) = k.status(&["run", "--net", &n1, "--", "sh", "-c", "exit 3"])?;
    ensure!(code == 3, "exit 3 came back as {code}");
    let (code, _, err) = k.status(&["run", "--net", &n1, "--", "/nonexistent/cmd"])?;
    ensure!(
        code == 127 && err.contains("/nonexistent/cmd"),
        "{code} {err}"
    );

    // SIGTERM to knit run reaches the command, and knit still cleans up after it.
    let mut c = k.command(&["run", "--net", &n1, "--", "sleep", "30"]);
    let mut child = c.spawn().context("spawning knit run sleep")?;
    let t = std::time::Instant::now();
    while k
        .ok(&["sandbox", "ls", "--format", "json"])?
        .matches("\"Id\"")
        .count()
        < 2
    {
        ensure!(
            t.elapsed().as_secs() < 5,
            "the sleeping sandbox never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let st = child.wait()?;
    ensure!(st.code() == Some(143), "knit run after SIGTERM: {st:?}");
    ensure!(
        t.elapsed().as_secs() < 10,
        "sleep was not ended by the SIGTERM"
    );

    // The unnamed sandboxes are gone with everything they had.
    let sbs: Value = serde_json::from_str(&k.ok(&["sandbox", "ls", "--format", "json"])?)?;
    ensure!(
        sbs.as_array().map(Vec::len) == Some(1) && sbs[0]["Name"] == "s1",
        "{sbs}"
    );
    ensure!(
        reservations(&k.data_dir()).len() == 1,
        "{:?}",
        reservations(&k.data_dir())
    );
    let s1_ns = sbs[0]["Netns"].as_str().context("Netns")?.to_string();
    ensure!(
        knit_netns(&k)?.len() == 1 && Path::new(&s1_ns).exists(),
        "{:?}",
        knit_netns(&k)?
    );

    // --net host: CMD runs in knit's own (here the scratch host's) namespace, where the
    // bridge is; no sandbox, namespace or address is made. The positive control for the
    // bridge's absence in a sandbox is the null network's lone `lo` above.
    let before = k.snapshot()?;
    let out = k.ok(&["run", "--net", "host", "--", "ip", "-o", "link"])?;
    ensure!(out.contains(&format!(": {bridge1}:")), "--net host: {out}");
    ensure!(k.snapshot()? == before, "--net host made something");
    // --net container:s1: CMD shares s1's namespace (same eth0, same address), nothing new.
    let out = k.ok(&[
        "run",
        "--net",
        "container:s1",
        "--",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ])?;
    ensure!(out.contains(&format!("{s1_cidr} ")), "container:s1: {out}");
    ensure!(k.snapshot()? == before, "--net container:s1 made something");

    // Bad input: a clear error, nothing changed.
    k.refuses(
        &["run", "--net", "container:missing", "--", "true"],
        125,
        "not found",
    )?;
    k.refuses(
        &["run", "--net", "host", "--name", "h", "--", "true"],
        125,
        "--name",
    )?;
    k.refuses(&["network", "create", &n1], 1, "already in use")?;
    let inside = format!("10.{o}.1.128/25");
    k.refuses(
        &["network", "create", "--subnet", &inside, "other"],
        1,
        "overlaps",
    )?;
    k.refuses(&["network", "create", "a/b"], 1, "invalid")?;
    k.refuses(&["network", "create", "a..b"], 1, "invalid")?;
    k.refuses(&["network", "create", ".."], 1, "invalid")?;
    k.refuses(&["network", "create", "x/../y"], 1, "invalid")?;
    for bad in ["../x", "a/b", "a..b"] {
        k.refuses(
            &["run", "--name", bad, "--net", &n1, "--", "true"],
            125,
            "invalid",
        )?;
    }
    // Overlapping subnets: with another network's (exactly, wider, narrower) or within one
    // network; and a bridge name another network uses.
    for sub in [sub1.as_str(), "10.0.0.0/8"] {
        k.refuses(
            &["network", "create", "--subnet", sub, "other"],
            1,
            "overlaps",
        )?;
    }
    k.refuses(
        &[
            "network",
            "create",
            "--subnet",
            "10.250.0.0/24",
            "--subnet",
            "10.250.0.128/25",
            "other",
        ],
        1,
        "overlap",
    )?;
    let br_opt = format!("com.docker.network.bridge.name={bridge1}");
    k.refuses(
        &["network", "create", "-o", &br_opt, "other"],
        1,
        "already used",
    )?;
    k.refuses(&["network", "rm", "missing-net"], 1, "not found")?;
    k.refuses(&["sandbox", "rm", "missing-sb"], 1, "not found")?;
    k.refuses(
        &["network", "connect", "--ip", "10.99.0.5", &n2, "s1"],
        1,
        "10.99.0.5",
    )?;
    k.refuses(
        &["network", "create", "--driver", "overlay", "m"],
        1,
        "not supported",
    )?;
    k.refuses(
        &["run", "--net", "missing-net", "--", "true"],
        125,
        "not found",
    )?;
    k.refuses(
        &["run", "--name", "s1", "--net", &n1, "--", "true"],
        125,
        "already in use",
    )?;
    k.refuses(
        &["run", "--net", &n1, "--ip", "10.99.0.5", "--", "true"],
        125,
        "10.99.0.5",
    )?;
    k.refuses(&["network", "rm", &n1], 1, "endpoint")?;

    published_ports(&k, &n1, &format!("10.{o}.1.1"))?;
    automatic_port(&k, &n1)?;

    // enable_icc=false: two sandboxes of that network do not reach each other (on n1, without
    // the option, they do: the ping of s1 above), while each still reaches the gateway.
    let n4 = format!("kc{pid}d");
    let sub4 = format!("10.{o}.4.0/24");
    let icc = "com.docker.network.bridge.enable_icc=false";
    k.ok(&["network", "create", "--subnet", &sub4, "-o", icc, &n4])?;
    k.ok(&["run", "--name", "quiet", "--net", &n4, "--", "true"])?;
    let quiet_ip = format!("10.{o}.4.2");
    let gw4 = format!("10.{o}.4.1");
    k.ok(&[
        "run",
        "--net",
        "container:quiet",
        "--",
        "ping",
        "-c1",
        "-W2",
        &gw4,
    ])?;
    k.ok(&["run", "--net", &n4, "--", "ping", "-c1", "-W2", &gw4])?;
    let (code, out, _) = k.status(&["run", "--net", &n4, "--", "ping", "-c1", "-W1", &quiet_ip])?;
    ensure!(
        code == 1,
        "enable_icc=false, yet {quiet_ip} answered (exit {code}): {out}"
    );
    k.ok(&["sandbox", "rm", "quiet"])?;
    k.ok(&["network", "rm", &n4])?;

    // Removal leaves nothing: no link, netns, store record, reservation or nft element.
    ensure!(k.ok(&["sandbox", "rm", "s1"])?.trim() == "s1");
    ensure!(!Path::new(&s1_ns).exists(), "{s1_ns} is left");
    k.ok(&["network", "rm", &n1, &n2])?;
    ensure!(
        k.snapshot()? == base_links,
        "left behind:\n{}",
        k.snapshot()?
    );
    ensure!(!k.data_dir().join(&n1).exists(), "IPAM dir of {n1} is left");
    let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
    ensure!(
        !nft.contains(&format!("{n1}/")),
        "nft elements left:\n{nft}"
    );
    Ok(())
}

/// `curl` from the scratch host: the body, or `None` when nothing answered.
fn curl(k: &Knit, url: &str) -> Result<Option<String>> {
    curl_in(&k.host, url)
}

/// `curl` from `ns`: the body, or `None` when nothing answered.
fn curl_in(ns: &TestNs, url: &str) -> Result<Option<String>> {
    let o = ns
        .command("curl")
        .args(["-s", "--max-time", "2", url])
        .output()?;
    Ok(o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// `-p`: a web server in sandbox "web" on `net`, published on every host address (18080) and
/// on 127.0.0.1 only (18081), is reached through both from the host, through the gateway
/// address and 127.0.0.1, and through the first from another namespace ("outside"); the
/// mappings show in inspect and leave with the sandbox.
fn published_ports(k: &Knit, net: &str, gw: &str) -> Result<()> {
    let www = k.dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("hi"), "hello from web\n")?;
    let www = www.display().to_string();
    let mut server = k
        .command(&[
            "run",
            "--name",
            "web",
            "--net",
            net,
            "-p",
            "18080:80",
            "-p",
            "127.0.0.1:18081:80",
            "-p",
            "18053:5353/udp",
            "--",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            &www,
        ])
        .spawn()
        .context("spawning knit run httpd")?;
    // "Outside": another namespace on a link to the host, which has OUTSIDE_HOST_IP there.
    let outside = TestNs::new("out")?;
    join_outside(&k.host, &outside)?;
    let checked = check_published(k, net, gw).and_then(|()| {
        let body = curl_in(&outside, &format!("http://{OUTSIDE_HOST_IP}:18080/hi"))?;
        ensure!(
            body.as_deref() == Some("hello from web\n"),
            "from outside: {body:?}"
        );
        ensure!(
            curl_in(&outside, &format!("http://{OUTSIDE_HOST_IP}:18081/hi"))?.is_none(),
            "18081 is published on 127.0.0.1 only, yet answers from outside"
        );
        Ok(())
    });
    k.host.run(&["ip", "link", "del", OUTSIDE_LINK])?;
    drop(outside);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    server.wait()?;
    checked?;
    let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
    ensure!(nft.contains("18080"), "the mapping went with httpd:\n{nft}");
    ensure!(k.ok(&["sandbox", "rm", "web"])?.trim() == "web");
    let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
    ensure!(
        !nft.contains("18080") && !nft.contains("18081"),
        "port mappings left:\n{nft}"
    );
    ensure!(
        curl(k, "http://127.0.0.1:18080/hi")?.is_none(),
        "18080 still answers"
    );
    Ok(())
}

fn check_published(k: &Knit, net: &str, gw: &str) -> Result<()> {
    let t = std::time::Instant::now();
    let web_ip = loop {
        let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", net])?)?;
        let web = v[0]["Containers"]
            .as_object()
            .and_then(|c| c.values().find(|c| c["Name"] == "web"))
            .cloned();
        if let Some(web) = web {
            ensure!(
                web["Ports"]
                    == serde_json::json!([
                        "18080->80/tcp",
                        "127.0.0.1:18081->80/tcp",
                        "18053->5353/udp"
                    ]),
                "inspect: {web}"
            );
            let ip = web["IPv4Address"].as_str().context("IPv4Address")?;
            let ip = ip.split('/').next().context("ip")?.to_string();
            // Positive control: httpd itself answers on the sandbox's address.
            if curl(k, &format!("http://{ip}:80/hi"))?.is_some() {
                break ip;
            }
        }
        ensure!(t.elapsed().as_secs() < 5, "httpd in web never answered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for url in [
        format!("http://{gw}:18080/hi"),
        "http://127.0.0.1:18080/hi".to_string(),
        "http://127.0.0.1:18081/hi".to_string(),
    ] {
        let body = curl(k, &url)?;
        ensure!(
            body.as_deref() == Some("hello from web\n"),
            "{url} (web is {web_ip}): {body:?}"
        );
    }
    ensure!(
        curl(k, &format!("http://{gw}:18081/hi"))?.is_none(),
        "18081 is published on 127.0.0.1 only, yet {gw} answers"
    );
    // UDP: a datagram to the host's 18053 reaches a listener on 5353 in web's namespace
    // (sent again until the listener, which exits on its first datagram, has started).
    let listen = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                  s.settimeout(5); s.bind(('', 5353)); print(s.recv(100).decode(), flush=True)";
    let listener = k
        .command(&[
            "run",
            "--net",
            "container:web",
            "--",
            "python3",
            "-c",
            listen,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning the UDP listener")?;
    let send = format!("echo udp-hello > /dev/udp/{gw}/18053");
    let done = std::sync::atomic::AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let t = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed().as_secs() < 6 {
                let _ = k.host.run(&["bash", "-c", &send]);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let got = listener.wait_with_output();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        got
    })?;
    let got = String::from_utf8_lossy(&got.stdout);
    ensure!(got.contains("udp-hello"), "UDP through 18053: {got:?}");
    // A port already published is refused, and the attach is rolled back whole.
    k.refuses(
        &["run", "--net", net, "-p", "18080:8080", "--", "true"],
        125,
        "tcp . 18080 } already belongs",
    )?;
    Ok(())
}

/// The `sandbox ls --format json` entry of sandbox `name`.
fn sandbox_json(k: &Knit, name: &str) -> Result<Value> {
    let sbs: Value = serde_json::from_str(&k.ok(&["sandbox", "ls", "--format", "json"])?)?;
    sbs.as_array()
        .and_then(|a| a.iter().find(|s| s["Name"] == name))
        .cloned()
        .with_context(|| format!("sandbox {name} in {sbs}"))
}

/// `network connect|disconnect`: a sandbox on two networks reaches a sandbox on each; once
/// disconnected it no longer reaches the second, and its interface, nft elements, reservation
/// and record there are gone; `sandbox rm` removes every endpoint of a connected sandbox.
#[test]
fn knit_cli_connect_disconnect() -> Result<()> {
    let k = Knit::new()?;
    let pid = std::process::id();
    let o = 100 + pid % 100;
    let (na, nb) = (format!("kd{pid}a"), format!("kd{pid}b"));
    let base = k.snapshot()?;
    k.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.11.0/24"),
        &na,
    ])?;
    k.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.12.0/24"),
        &nb,
    ])?;
    k.ok(&["run", "--name", "a1", "--net", &na, "--", "true"])?;
    k.ok(&["run", "--name", "b1", "--net", &nb, "--", "true"])?;
    k.ok(&["run", "--name", "multi", "--net", &na, "--", "true"])?;
    let (a1, b1) = (format!("10.{o}.11.2"), format!("10.{o}.12.2"));
    let ping = |ip: &str| -> Result<i32> {
        Ok(k.status(&[
            "run",
            "--net",
            "container:multi",
            "--",
            "ping",
            "-c1",
            "-W1",
            ip,
        ])?
        .0)
    };
    // Before: multi reaches a1 on its own network, not b1 on the other (isolation).
    ensure!(ping(&a1)? == 0, "multi does not reach a1");
    ensure!(ping(&b1)? == 1, "multi reaches b1 before connect");

    k.ok(&[
        "network",
        "connect",
        "--ip",
        &format!("10.{o}.12.50"),
        &nb,
        "multi",
    ])?;
    let addr = k.ok(&[
        "run",
        "--net",
        "container:multi",
        "--",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth1",
    ])?;
    ensure!(addr.contains(&format!("10.{o}.12.50/24")), "eth1: {addr}");
    ensure!(ping(&a1)? == 0 && ping(&b1)? == 0, "multi on both networks");
    let sb = sandbox_json(&k, "multi")?;
    let nets: Vec<&str> = sb["Networks"]
        .as_array()
        .context("Networks")?
        .iter()
        .filter_map(|n| n["Network"].as_str())
        .collect();
    ensure!(nets.len() == 2 && nets.contains(&nb.as_str()), "{sb}");
    let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", &nb])?)?;
    ensure!(
        v[0]["Containers"].as_object().map(|c| c.len()) == Some(2),
        "inspect {nb}: {v}"
    );
    // Connected twice to one network, or to a missing one: refused, nothing changed.
    k.refuses(
        &["network", "connect", &nb, "multi"],
        1,
        "already connected",
    )?;
    k.refuses(
        &["network", "connect", "missing-net", "multi"],
        1,
        "not found",
    )?;
    k.refuses(&["network", "connect", &nb, "missing-sb"], 1, "not found")?;
    k.refuses(&["network", "disconnect", &nb, "a1"], 1, "not connected")?;

    let id = sb["Id"].as_str().context("Id")?.to_string();
    k.ok(&["network", "disconnect", &nb, "multi"])?;
    ensure!(ping(&a1)? == 0, "multi lost its first network");
    ensure!(ping(&b1)? == 1, "multi still reaches b1 after disconnect");
    let links = k.ok(&["run", "--net", "container:multi", "--", "ip", "-o", "link"])?;
    ensure!(!links.contains("eth1"), "eth1 is left: {links}");
    let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
    ensure!(
        !nft.contains(&format!("{nb}/{id}")),
        "nft elements left:\n{nft}"
    );
    ensure!(
        !reservations(&k.data_dir())
            .iter()
            .any(|r| r.starts_with(&format!("{nb}/")) && !r.ends_with(&b1)),
        "reservation left: {:?}",
        reservations(&k.data_dir())
    );
    let sb = sandbox_json(&k, "multi")?;
    ensure!(sb["Networks"].as_array().map(Vec::len) == Some(1), "{sb}");

    // Connected again (the next free name is eth1 again), then removed whole.
    k.ok(&["network", "connect", &nb, "multi"])?;
    ensure!(ping(&b1)? == 0, "multi reconnected does not reach b1");
    // `rm` of several names goes on past one that fails (as Docker's), then fails naming it.
    let (code, out, err) = k.status(&["sandbox", "rm", "multi", "nope", "a1", "b1"])?;
    ensure!(
        code == 1 && out.split_whitespace().collect::<Vec<_>>() == ["multi", "a1", "b1"],
        "sandbox rm past a missing name: exit {code}, removed {out:?}"
    );
    ensure!(
        err.contains("nope") && err.contains("could not remove nope"),
        "sandbox rm does not name the failure: {err}"
    );
    k.ok(&["network", "rm", &na, &nb])?;
    ensure!(k.snapshot()? == base, "left behind:\n{}", k.snapshot()?);
    let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
    ensure!(!nft.contains(&id), "nft elements left:\n{nft}");
    Ok(())
}

/// `-p 80`: knit picks the host port from the ephemeral range, skipping ports the host listens
/// on and ports other endpoints publish. The range is cut to 45000-45001 in the scratch host
/// and 45000 has a listener, so the pick must be 45001, and a second `-p 80` finds none.
fn automatic_port(k: &Knit, net: &str) -> Result<()> {
    let range_key = "net.ipv4.ip_local_port_range";
    let old_range = k.host.stdout(&["sysctl", "-n", range_key])?;
    k.host
        .run(&["sysctl", "-w", &format!("{range_key}=45000 45001")])?;
    let listen = "import socket, time; s = socket.socket(); \
                  s.bind(('0.0.0.0', 45000)); s.listen(); print('up', flush=True); time.sleep(60)";
    let mut listener = k
        .host
        .command("python3")
        .args(["-c", listen])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning a listener on 45000")?;
    let mut up = String::new();
    if let Some(out) = listener.stdout.as_mut() {
        use std::io::Read;
        let mut b = [0u8; 3];
        out.read_exact(&mut b)?;
        up = String::from_utf8_lossy(&b).into_owned();
    }
    let www = k.dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("hi"), "hello from web\n")?;
    let www = www.display().to_string();
    let mut server = k
        .command(&[
            "run", "--name", "auto", "--net", net, "-p", "80", "--", "busybox", "httpd", "-f",
            "-p", "80", "-h", &www,
        ])
        .spawn()
        .context("spawning knit run httpd -p 80")?;
    let checked = (|| -> Result<()> {
        ensure!(
            up.trim() == "up",
            "the listener on 45000 did not start: {up:?}"
        );
        let t = std::time::Instant::now();
        loop {
            if let Ok(sb) = sandbox_json(k, "auto") {
                let ports = &sb["Networks"][0]["Ports"];
                ensure!(*ports == serde_json::json!(["45001->80/tcp"]), "{sb}");
                if curl(k, "http://127.0.0.1:45001/hi")?.as_deref() == Some("hello from web\n") {
                    break;
                }
            }
            ensure!(t.elapsed().as_secs() < 5, "nothing answers on 45001");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let table = k.ok(&["sandbox", "ls"])?;
        ensure!(table.contains("45001->80/tcp"), "sandbox ls:\n{table}");
        let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", net])?)?;
        let auto = v[0]["Containers"]
            .as_object()
            .and_then(|c| c.values().find(|c| c["Name"] == "auto"))
            .context("auto in inspect")?;
        ensure!(
            auto["Ports"] == serde_json::json!(["45001->80/tcp"]),
            "{auto}"
        );
        k.refuses(
            &["run", "--net", net, "-p", "80", "--", "true"],
            125,
            "no free host port",
        )
    })();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    server.wait()?;
    listener.kill()?;
    listener.wait()?;
    k.host
        .run(&["sysctl", "-w", &format!("{range_key}={}", old_range.trim())])?;
    checked?;
    ensure!(k.ok(&["sandbox", "rm", "auto"])?.trim() == "auto");
    Ok(())
}

/// A macvlan network on a veth of the scratch host as its parent: two sandboxes on it ping
/// each other through their macvlan links (mode bridge); bad parents and modes and `-p` are
/// refused; removal leaves nothing.
#[test]
fn knit_cli_macvlan() -> Result<()> {
    let k = Knit::new()?;
    let pid = std::process::id();
    let o = 100 + pid % 100;
    let (parent, peer) = ("kmv0", "kmv0p");
    k.host.run(&[
        "ip", "link", "add", parent, "type", "veth", "peer", "name", peer,
    ])?;
    k.host.run(&["ip", "link", "set", parent, "up"])?;
    k.host.run(&["ip", "link", "set", peer, "up"])?;
    let base = k.snapshot()?;
    let mv = format!("km{pid}");
    let sub = format!("10.{o}.20.0/24");
    let opt_parent = format!("parent={parent}");
    k.refuses(
        &["network", "create", "-d", "macvlan", "--subnet", &sub, &mv],
        1,
        "parent",
    )?;
    k.refuses(
        &[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            "parent=nolink0",
            &mv,
        ],
        1,
        "does not exist",
    )?;
    k.refuses(
        &[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            &opt_parent,
            "-o",
            "macvlan_mode=sideways",
            &mv,
        ],
        1,
        "macvlan_mode",
    )?;
    k.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &opt_parent,
        "--subnet",
        &sub,
        &mv,
    ])?;
    let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", &mv])?)?;
    ensure!(
        v[0]["Driver"] == "macvlan" && v[0]["Options"]["parent"] == parent,
        "{v}"
    );
    k.ok(&["run", "--name", "m1", "--net", &mv, "--", "true"])?;
    let link = k.ok(&[
        "run",
        "--net",
        "container:m1",
        "--",
        "ip",
        "-d",
        "link",
        "show",
        "eth0",
    ])?;
    ensure!(link.contains("macvlan mode bridge"), "m1's eth0: {link}");
    let m1 = format!("10.{o}.20.2");
    k.ok(&["run", "--net", &mv, "--", "ping", "-c1", "-W2", &m1])?;
    k.refuses(
        &["run", "--net", &mv, "-p", "8080:80", "--", "true"],
        125,
        "macvlan",
    )?;
    k.ok(&["sandbox", "rm", "m1"])?;
    k.ok(&["network", "rm", &mv])?;
    ensure!(k.snapshot()? == base, "left behind:\n{}", k.snapshot()?);
    Ok(())
}

/// Crash safety: `knit run --name`, `sandbox rm`, `network create` and `network rm` killed with
/// SIGKILL after a random 0-40 ms, then the same command again (which first repairs what the
/// killed one left) and the cleanup a user would do: each round ends with the store and the
/// kernel agreeing and nothing leaked (records, links, namespaces, reservations, IPAM
/// directories, nft elements, leases, journals).
#[test]
fn knit_cli_survives_kill9() -> Result<()> {
    let k = Knit::new()?;
    let pid = std::process::id();
    let o = 100 + pid % 100;
    let n = format!("kk{pid}");
    k.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.30.0/24"),
        &n,
    ])?;
    // Warm the path (the nft table, the IPAM dir) so the base snapshot has them.
    k.ok(&["run", "--net", &n, "--", "true"])?;
    let base = k.snapshot()?;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u64
        ^ u64::from(pid);
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut killed = 0;
    for round in 0..24u32 {
        let delay = rnd() % 41;
        let sb = format!("c{round}");
        let net = format!("kx{pid}r{round}");
        let sub = format!("10.{o}.{}.0/24", 40 + round);
        let run: Vec<&str> = vec!["run", "--name", &sb, "--net", &n, "--", "true"];
        let create: Vec<&str> = vec!["network", "create", "--subnet", &sub, &net];
        // (setup, the command killed, the error its repeat may give, cleanup)
        type Round<'a> = (
            Option<&'a [&'a str]>,
            &'a [&'a str],
            &'a str,
            Option<Vec<&'a str>>,
        );
        let (setup, args, again_ok, cleanup): Round<'_> = match round % 4 {
            0 => (
                None,
                &run,
                "already in use",
                Some(vec!["sandbox", "rm", &sb]),
            ),
            1 => (Some(&run), &["sandbox", "rm", &sb], "not found", None),
            2 => (
                None,
                &create,
                "already in use",
                Some(vec!["network", "rm", &net]),
            ),
            _ => (Some(&create), &["network", "rm", &net], "not found", None),
        };
        if let Some(s) = setup {
            k.ok(s)?;
        }
        let mut child = k.command(args).spawn().context("spawning knit")?;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let st = child.wait()?;
        if std::os::unix::process::ExitStatusExt::signal(&st) == Some(9) {
            killed += 1;
        }
        let (code, _, err) = k.status(args)?;
        ensure!(
            code == 0 || err.contains(again_ok),
            "round {round} ({args:?} killed after {delay} ms): again exited {code}: {err}"
        );
        if let Some(c) = &cleanup {
            k.ok(c)?;
        }
        let now = k.snapshot()?;
        ensure!(
            now == base,
            "round {round} ({args:?} killed after {delay} ms) left:\n{now}\n--- base:\n{base}"
        );
        ensure!(
            !k.data_dir().join(&net).exists(),
            "round {round}: IPAM dir of {net} left"
        );
        let nft = k.host.stdout(&["nft", "list", "ruleset"])?;
        ensure!(
            !nft.contains(&format!("{n}/")) && !nft.contains(&format!("10.{o}.30.")),
            "round {round}: nft elements left:\n{nft}"
        );
        for d in ["sandboxes", "networks"] {
            let left: Vec<_> = std::fs::read_dir(k.dir.path().join("run").join(d))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            ensure!(left.is_empty(), "round {round}: run/{d} has {left:?}");
        }
    }
    ensure!(
        killed >= 4,
        "only {killed} of 24 commands were killed mid-way"
    );
    eprintln!("kill -9 rounds: {killed} of 24 killed before they finished");

    // `sandbox prune`: a sandbox whose namespace was deleted behind knit's back is removed
    // (its reservation released), and an endpoint whose link was deleted is detached.
    let n2 = format!("kk{pid}b");
    k.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.31.0/24"),
        &n2,
    ])?;
    let base = k.snapshot()?;
    k.ok(&["run", "--name", "gone", "--net", &n, "--", "true"])?;
    k.ok(&["run", "--name", "cut", "--net", &n, "--", "true"])?;
    k.ok(&["network", "connect", &n2, "cut"])?;
    let gone = sandbox_json(&k, "gone")?;
    let ns = gone["Netns"].as_str().context("Netns")?;
    let ns = ns.rsplit('/').next().context("netns name")?;
    k.host.run(&["ip", "netns", "del", ns])?;
    k.ok(&[
        "run",
        "--net",
        "container:cut",
        "--",
        "ip",
        "link",
        "del",
        "eth1",
    ])?;
    let fixed = k.ok(&["sandbox", "prune"])?;
    ensure!(
        fixed.contains("removed sandbox \"gone\"") && fixed.contains("detached eth1"),
        "prune: {fixed}"
    );
    let cut = sandbox_json(&k, "cut")?;
    ensure!(cut["Networks"].as_array().map(Vec::len) == Some(1), "{cut}");
    ensure!(
        k.ok(&["sandbox", "prune"])?.is_empty(),
        "a second prune found more"
    );
    k.ok(&["sandbox", "rm", "cut"])?;
    // What a kill between two steps leaves, made by hand: a network's bridge missing (create
    // killed after the record) is made again; a lease of this run dir without a sandbox record
    // (run killed before the record) takes its knit-* namespace with it.
    let v: Value = serde_json::from_str(&k.ok(&["network", "inspect", &n2])?)?;
    let bridge2 = format!("knit-{}", &v[0]["Id"].as_str().context("Id")?[..10]);
    k.host.run(&["ip", "link", "del", &bridge2])?;
    let lost_id = format!("{:064x}", u128::from(pid) << 64 | 0xdead);
    let lost_ns = format!("knit-{}", &lost_id[..12]);
    let leases = k.dir.path().join("run/sandboxes");
    std::fs::write(leases.join(&lost_id), "creating")?;
    k.host.run(&["ip", "netns", "add", &lost_ns])?;
    let fixed = k.ok(&["sandbox", "prune"])?;
    ensure!(
        fixed.contains(&format!("made bridge {bridge2}"))
            && fixed.contains(&format!("deleted namespace {lost_ns}")),
        "prune: {fixed}"
    );
    ensure!(
        !Path::new(libnet::netns::NETNS_RUN_DIR)
            .join(&lost_ns)
            .exists()
            && !leases.join(&lost_id).exists(),
        "{lost_ns} or its lease is left"
    );
    k.host
        .handle()?
        .link_by_name(&bridge2)
        .context("the bridge made again")?;
    ensure!(k.snapshot()? == base, "left behind:\n{}", k.snapshot()?);
    k.ok(&["network", "rm", &n, &n2])?;
    Ok(())
}
