//! `knit service` end to end: a virtual IP in front of the sandboxes whose labels match a
//! selector. 1,000 connections to the VIP reach every backend, spread within reason; a backend
//! removed gets no new connections, one added starts receiving; the service's name, FQDN, SRV
//! and PTR answer from `knit dns`; bad input is refused with nothing left; removal leaves no
//! element, address, reservation or record.
#![cfg(feature = "root-tests")]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netns_tests::knit::KnitHost;
use serde_json::Value;

const SUBNET: &str = "10.244.72.0/24";
const GATEWAY: &str = "10.244.72.1";

/// Answers every connection on :8080 with its name, then closes.
const SERVER: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()";

/// Makes N connections to ADDR PORT; prints how many each answer (or error) got, as JSON.
const CLIENT: &str = "import socket,sys,json,collections
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); seen = collections.Counter()
for _ in range(n):
    try:
        c = socket.create_connection((addr, port), timeout=3); d = b''
        while True:
            b = c.recv(64)
            if not b: break
            d += b
        c.close(); seen[d.decode() or 'empty'] += 1
    except Exception as e:
        seen['error:' + type(e).__name__] += 1
print(json.dumps(seen))";

struct Cluster {
    h: KnitHost,
    servers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.h.knit(&["service", "rm", "web"]);
        let _ = self.h.knit(&["service", "rm", "api"]);
        for sb in ["b1", "b2", "b3", "b4", "other", "client"] {
            let _ = self.h.knit(&["sandbox", "rm", sb]);
        }
        let _ = self.h.knit(&["network", "rm", "svcnet"]);
    }
}

impl Cluster {
    /// Sandbox NAME on svcnet with `labels`, serving its name on :8080.
    fn backend(&mut self, name: &str, labels: &[&str]) -> Result<()> {
        let mut args = vec!["run", "--name", name, "--net", "svcnet"];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend(["--", "true"]);
        self.h.knit(&args)?;
        let net = format!("container:{name}");
        let child = self.h.spawn(
            &["run", "--net", &net, "--", "python3", "-c", SERVER, name],
            &format!("{name}.log"),
        )?;
        self.servers.push(child);
        Ok(())
    }

    /// `n` connections from the client sandbox to `addr:port`: answers counted by backend.
    fn connect(&self, addr: &str, port: u16, n: usize) -> Result<BTreeMap<String, u64>> {
        let out = self.h.knit(&[
            "run",
            "--net",
            "container:client",
            "--",
            "python3",
            "-c",
            CLIENT,
            addr,
            &port.to_string(),
            &n.to_string(),
        ])?;
        serde_json::from_str(out.trim()).with_context(|| format!("client said {out:?}"))
    }

    fn dig(&self, args: &[&str]) -> Result<Vec<String>> {
        let mut a = vec![
            "run",
            "--net",
            "container:client",
            "--",
            "dig",
            "+time=2",
            "+tries=1",
            "+short",
        ];
        a.push("@10.244.72.1");
        a.extend(args);
        let out = self.h.knit(&a)?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Wait until every server answers on its own address (they start in the background).
    fn wait_servers(&self, names: &[&str]) -> Result<()> {
        let t = Instant::now();
        loop {
            let mut missing = Vec::new();
            for n in names {
                let ep = self.ip_of(n)?;
                if !self.connect(&ep, 8080, 1)?.contains_key(*n) {
                    missing.push(*n);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            ensure!(
                t.elapsed() < Duration::from_secs(10),
                "servers {missing:?} never answered: {}",
                missing
                    .iter()
                    .map(|m| self.h.log(&format!("{m}.log")))
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ip_of(&self, sandbox: &str) -> Result<String> {
        let v: Value = serde_json::from_str(&self.h.knit(&["network", "inspect", "svcnet"])?)?;
        v[0]["Containers"]
            .as_object()
            .and_then(|m| m.values().find(|c| c["Name"] == sandbox))
            .and_then(|c| c["IPv4Address"].as_str())
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .with_context(|| format!("no address for {sandbox} in {v}"))
    }

    fn elements(&self, map: &str) -> Result<usize> {
        let o = self
            .h
            .ns
            .command("nft")
            .args(["-j", "list", "set", "inet", "knit", map])
            .output()?;
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        Ok(v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o.get("set").or_else(|| o.get("map"))))
            .and_then(|s| s["elem"].as_array())
            .map_or(0, Vec::len))
    }
}

fn assert_spread(seen: &BTreeMap<String, u64>, want: &[&str], total: u64) -> Result<()> {
    let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
    ensure!(keys == want, "backends answering: {seen:?}, want {want:?}");
    let fair = total / want.len() as u64;
    for (k, n) in seen {
        ensure!(
            *n * 10 >= fair * 6,
            "backend {k} got {n} of {total}, far below a fair {fair}: {seen:?}"
        );
    }
    Ok(())
}

#[test]
fn a_service_balances_over_its_selected_endpoints_and_follows_them() -> Result<()> {
    let mut c = Cluster {
        h: KnitHost::new("svc")?,
        servers: Vec::new(),
    };
    c.h.knit(&["network", "create", "--subnet", SUBNET, "svcnet"])?;
    c.h.knit(&["run", "--name", "client", "--net", "svcnet", "--", "true"])?;
    for b in ["b1", "b2", "b3"] {
        c.backend(b, &["app=web", "tier=front"])?;
    }
    c.backend("other", &["app=db"])?;
    c.wait_servers(&["b1", "b2", "b3", "other"])?;

    // Bad input changes nothing.
    for (args, needle) in [
        (
            vec!["--selector", "app=web", "--port", "80/tcp", "Bad_Name"],
            "DNS label",
        ),
        (
            vec!["--selector", "app=web", "--port", "80/icmp", "w2"],
            "protocol",
        ),
        (
            vec![
                "--selector",
                "app=web",
                "--port",
                "80",
                "--vip",
                "10.9.9.9",
                "w3",
            ],
            "no subnet",
        ),
        (
            vec![
                "--selector",
                "app=web",
                "--port",
                "80",
                "--vip",
                GATEWAY,
                "w4",
            ],
            "gateway",
        ),
        (
            vec![
                "--selector",
                "app=web",
                "--port",
                "80",
                "--network",
                "nope",
                "w5",
            ],
            "not found",
        ),
    ] {
        let mut a = vec!["service", "create"];
        if !args.contains(&"--network") {
            a.extend(["--network", "svcnet"]);
        }
        a.extend(args);
        let (code, _, err) = c.h.status(&a)?;
        ensure!(
            code != 0 && err.contains(needle),
            "{a:?}: exit {code}: {err}"
        );
    }
    ensure!(
        c.h.knit(&["service", "ls"])?.lines().count() == 1,
        "a refused create left a record"
    );
    ensure!(
        c.elements("svc_vips4")? == 0,
        "a refused create left elements"
    );

    let vip = c.h.knit(&[
        "service",
        "create",
        "web",
        "--network",
        "svcnet",
        "--selector",
        "app=web,tier=front",
        "--port",
        "http=80:8080/tcp",
    ])?;
    let vip = vip.trim().to_string();
    ensure!(
        vip == "10.244.72.254",
        "the VIP comes from the top of the subnet: {vip}"
    );
    let (code, _, err) = c.h.status(&[
        "service",
        "create",
        "web2",
        "--network",
        "svcnet",
        "--selector",
        "app=web",
        "--port",
        "80",
        "--vip",
        &vip,
    ])?;
    ensure!(code != 0 && err.contains("in use"), "a VIP twice: {err}");

    // 1,000 connections reach all three backends, none of `other`.
    let seen = c.connect(&vip, 80, 1000)?;
    assert_spread(&seen, &["b1", "b2", "b3"], 1000)?;
    let ls = c.h.knit(&["service", "ls"])?;
    ensure!(
        ls.contains("web") && ls.contains(&vip) && ls.trim_end().ends_with('3'),
        "{ls}"
    );
    let v: Value = serde_json::from_str(&c.h.knit(&["service", "inspect", "web"])?)?;
    ensure!(v[0]["Backends"].as_array().map(Vec::len) == Some(3), "{v}");
    ensure!(
        v[0]["Ports"][0]["Name"] == "http" && v[0]["Ports"][0]["TargetPort"] == 8080,
        "{v}"
    );

    // A backend removed gets no new connections; one added starts receiving.
    c.h.knit(&["sandbox", "rm", "b3"])?;
    let seen = c.connect(&vip, 80, 300)?;
    assert_spread(&seen, &["b1", "b2"], 300)?;
    c.backend("b4", &["app=web", "tier=front"])?;
    c.wait_servers(&["b4"])?;
    let seen = c.connect(&vip, 80, 600)?;
    assert_spread(&seen, &["b1", "b2", "b4"], 600)?;

    // DNS: the name, the FQDN, the SRV record of the named port, the PTR of the VIP.
    let dns =
        c.h.spawn(&["dns", "--no-forward", "--listen", GATEWAY], "dns.log")?;
    c.servers.push(dns);
    let t = Instant::now();
    while c.dig(&["web"])? != [vip.clone()] {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "web never resolved: {}",
            c.h.log("dns.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        c.dig(&["web.svcnet.knit.internal"])? == [vip.clone()],
        "FQDN"
    );
    let srv = c.dig(&["_http._tcp.web.svcnet.knit.internal", "SRV"])?;
    ensure!(
        srv == ["0 100 80 web.svcnet.knit.internal."],
        "SRV: {srv:?}"
    );
    let ptr = c.dig(&["-x", &vip])?;
    ensure!(ptr == ["web.svcnet.knit.internal."], "PTR: {ptr:?}");
    // A connection by name, as an application makes it.
    let by_name = c.h.knit(&[
        "run",
        "--net",
        "container:client",
        "--",
        "dig",
        "+short",
        "@10.244.72.1",
        "web",
    ])?;
    ensure!(by_name.trim() == vip, "{by_name}");

    // rm leaves nothing.
    c.h.knit(&["service", "rm", "web"])?;
    ensure!(
        c.elements("svc_slot4")? == 0 && c.elements("svc_vips4")? == 0,
        "elements left"
    );
    let addrs = c.h.ns.run(&["ip", "-o", "addr", "show"])?;
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    ensure!(
        !addrs.contains(&format!("{vip}/32")),
        "VIP left on the bridge: {addrs}"
    );
    let reserved = c.h.dir.path().join("cni/svcnet").join(&vip);
    ensure!(
        !reserved.exists(),
        "VIP reservation left: {}",
        reserved.display()
    );
    ensure!(
        c.h.knit(&["service", "ls"])?.lines().count() == 1,
        "record left"
    );
    let t = Instant::now();
    while c.dig(&["web"])? != Vec::<String>::new() {
        ensure!(
            t.elapsed() < Duration::from_secs(6),
            "web still resolves after rm"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = c.connect(&vip, 80, 3)?;
    ensure!(
        seen.keys().all(|k| k.starts_with("error")),
        "VIP still answers: {seen:?}"
    );

    // The network stays while a service is on it, even with no endpoint left.
    c.h.knit(&[
        "service", "create", "api", "--net", "svcnet", "--port", "443",
    ])?;
    for sb in ["b1", "b2", "b4", "other", "client"] {
        c.h.knit(&["sandbox", "rm", sb])?;
    }
    let (code, _, err) = c.h.status(&["network", "rm", "svcnet"])?;
    ensure!(
        code != 0 && err.contains("service(s) (api)"),
        "network rm with a service: {err}"
    );
    c.h.knit(&["service", "rm", "api"])?;
    c.h.knit(&["network", "rm", "svcnet"])?;
    Ok(())
}

/// An orchestrator writes a service record straight to the store: the agent's repair pass
/// programs it (VIP on the bridge, balancing over the selected endpoints), no CLI involved.
#[test]
fn a_service_written_to_the_store_is_programmed_by_the_agent() -> Result<()> {
    let mut c = Cluster {
        h: KnitHost::new("svs")?,
        servers: Vec::new(),
    };
    c.h.knit(&["network", "create", "--subnet", SUBNET, "svcnet"])?;
    c.h.knit(&["run", "--name", "client", "--net", "svcnet", "--", "true"])?;
    c.backend("b1", &["app=web"])?;
    c.backend("b2", &["app=web"])?;
    c.wait_servers(&["b1", "b2"])?;
    {
        let st = store::SqliteStore::open(&c.h.dir.path().join("state"))?;
        let net = store::Store::network(&st, "svcnet")?;
        let mut svc = store::Service::new("web", net.id.clone(), "10.244.72.200".parse()?);
        svc.selector.insert("app".into(), "web".into());
        svc.ports = vec![store::ServicePort::parse("80:8080/tcp").map_err(anyhow::Error::msg)?];
        store::Store::create_service(&st, &svc)?;
    }
    let plugins = c.h.dir.path().join("plugins");
    let agent = c.h.spawn(
        &[
            "agent",
            "--plugin-dir",
            &plugins.display().to_string(),
            "--docker-host",
            "unix:///nonexistent.sock",
            "--reconcile-interval",
            "1",
        ],
        "agent.log",
    )?;
    c.servers.push(agent);
    let t = Instant::now();
    loop {
        let seen = c.connect("10.244.72.200", 80, 40)?;
        if seen.keys().map(String::as_str).collect::<Vec<_>>() == ["b1", "b2"] {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "the agent did not program the service: {seen:?}\n{}",
            c.h.log("agent.log")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.h.knit(&["service", "rm", "web"])?;
    Ok(())
}
