//! knit's agent as a Docker Engine 20.10 remote network + IPAM plugin, end to end: a real
//! dockerd in a scratch namespace standing for the host (`netns_tests::docker`), containers
//! from an image imported from busybox-static, knit's agent and CLI on one state dir.
//!
//! Proven with real traffic: two containers ping each other and the gateway; `-p` answers from
//! an outside namespace, from the host and on 127.0.0.1; two knit networks are isolated (with a
//! positive control inside one); an internal network has no way out. The agent is stopped
//! (TERM, then kill -9) between steps and new containers still get addresses and talk. Bad
//! input gets a status and `{"Err": ...}`. `docker rm -f` and `docker network rm` leave no link,
//! nft element, reservation or store record.
#![cfg(feature = "root-tests")]

use anyhow::{ensure, Context, Result};
use netns_tests::cases::{OUTSIDE_HOST_IP, OUTSIDE_IP};
use netns_tests::docker::{DockerHost, IMAGE};
use netns_tests::scenario::{join_outside, OUTSIDE_LINK};
use netns_tests::topology::TestNs;
use serde_json::Value;

const SUBNET: &str = "10.244.60.0/24";
const GATEWAY: &str = "10.244.60.1";
const SUBNET2: &str = "10.244.61.0/24";

fn run_detached(h: &DockerHost, name: &str, net: &str, extra: &[&str], cmd: &[&str]) -> Result<()> {
    let mut args = vec!["run", "-d", "--name", name, "--net", net];
    args.extend(extra);
    args.push(IMAGE);
    args.extend(cmd);
    h.docker(&args)?;
    Ok(())
}

fn ip_of(h: &DockerHost, name: &str, net: &str) -> Result<String> {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    let ip = h.docker(&["inspect", "-f", &f, name])?;
    ensure!(!ip.is_empty(), "container {name} has no address on {net}");
    Ok(ip)
}

fn pings(h: &DockerHost, from: &str, to: &str) -> Result<bool> {
    Ok(
        h.docker_raw(&["exec", from, "ping", "-c", "1", "-W", "1", to])?
            .status
            .success(),
    )
}

/// knit's store has the network under Docker's name (the agent asks the Engine API for it
/// after CreateNetwork), within ten seconds.
fn knows_name(h: &DockerHost, name: &str) -> Result<()> {
    let t = std::time::Instant::now();
    while h
        .knit_command()
        .args(["network", "inspect", name])
        .output()?
        .status
        .code()
        != Some(0)
    {
        ensure!(
            t.elapsed().as_secs() < 10,
            "knit never learnt Docker's name {name}:\n{}\n{}",
            h.knit(&["network", "ls"])?,
            h.agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// `from` reaches `to`, allowing a just-started container a few seconds to answer.
fn reaches(h: &DockerHost, from: &str, to: &str) -> Result<bool> {
    for _ in 0..5 {
        if pings(h, from, to)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A server answering `hello` on ADDR:PORT, seen from `ns` within ten seconds.
fn serves_hello(ns: &TestNs, addr: &str, port: u16) -> Result<bool> {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(10) {
        if reads_hello(ns, addr, port)? {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(false)
}

/// A TCP connection to ADDR:PORT from namespace `ns` reads `hello`.
fn reads_hello(ns: &TestNs, addr: &str, port: u16) -> Result<bool> {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port} && timeout 3 cat <&3");
    let out = ns
        .command("timeout")
        .args(["5", "bash", "-c", &script])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("hello"))
}

fn kernel_leftovers(h: &DockerHost) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let links = h.ns.stdout(&["ip", "-o", "link", "show"])?;
    for l in links.lines() {
        let name = l.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or(name);
        if name != "lo" && name != OUTSIDE_LINK {
            left.push(format!("link {name}"));
        }
    }
    let rules = h.ns.stdout(&["nft", "list", "ruleset"])?;
    if rules.contains("elements =") {
        left.push(format!("nft elements:\n{rules}"));
    }
    for sub in ["cni", "run/nft"] {
        let d = h.dir.path().join(sub);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !n.starts_with('.') {
                    left.push(format!("{}/{n}", d.display()));
                }
            }
        }
    }
    Ok(left)
}

#[test]
fn docker_engine_uses_knit_as_network_and_ipam_plugin() -> Result<()> {
    let mut h = DockerHost::start("dk")?;
    let outside = TestNs::new("dko")?;
    join_outside(&h.ns, &outside)?;
    h.start_agent(&[])?;

    // A network through Docker shows in knit's own listing.
    let id = h.knit_network("kn1", SUBNET, &[])?;
    let ls = h.knit(&["network", "ls"])?;
    ensure!(
        ls.contains(&id[..12]) && ls.contains(SUBNET),
        "knit network ls:\n{ls}"
    );
    // Under Docker's name once the agent asked Docker for it.
    knows_name(&h, "kn1")?;

    // Two containers talk to each other and to the gateway.
    run_detached(&h, "c1", "kn1", &[], &["sleep", "600"])?;
    run_detached(&h, "c2", "kn1", &[], &["sleep", "600"])?;
    let (ip1, ip2) = (ip_of(&h, "c1", "kn1")?, ip_of(&h, "c2", "kn1")?);
    ensure!(ip1 != ip2, "both containers got {ip1}");
    ensure!(reaches(&h, "c1", &ip2)?, "c1 cannot ping c2 ({ip2})");
    ensure!(reaches(&h, "c2", GATEWAY)?, "c2 cannot ping the gateway");
    // Docker added no second interface (docker_gwbridge): the gateway came from Join.
    let links = h.docker(&["exec", "c1", "ip", "-o", "link"])?;
    ensure!(
        !links.contains("eth1"),
        "c1 has a second interface:\n{links}"
    );
    let inspect: Value = serde_json::from_str(&h.docker(&["network", "inspect", "kn1"])?)?;
    let containers = inspect[0]["Containers"].as_object().context("Containers")?;
    ensure!(containers.len() == 2, "docker network inspect: {inspect:#}");
    // knit's inspect shows the same containers, keyed by Docker's container id, with names.
    let t = std::time::Instant::now();
    loop {
        let k: Value = serde_json::from_str(&h.knit(&["network", "inspect", "kn1"])?)?;
        let mut names: Vec<String> = k[0]["Containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .map(|c| c["Name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let keys_match = k[0]["Containers"]
            .as_object()
            .is_some_and(|m| m.keys().all(|id| containers.contains_key(id)));
        if names == ["c1", "c2"] && keys_match {
            break;
        }
        ensure!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "knit network inspect: {k:#}\nDocker: {inspect:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // -p from outside, from the host and on 127.0.0.1, with no proxy process.
    run_detached(
        &h,
        "web",
        "kn1",
        &["-p", "18081:8080"],
        &[
            "sh",
            "-c",
            "while true; do echo hello | nc -l -p 8080; done",
        ],
    )?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    ensure!(
        serves_hello(&outside, OUTSIDE_HOST_IP, 18081)?,
        "-p from outside ({OUTSIDE_IP})"
    );
    ensure!(serves_hello(&h.ns, GATEWAY, 18081)?, "-p from the host");
    ensure!(serves_hello(&h.ns, "127.0.0.1", 18081)?, "-p on 127.0.0.1");
    let ps = h.ns.stdout(&["ps", "-eo", "comm"]).unwrap_or_default();
    ensure!(!ps.contains("docker-proxy"), "a docker-proxy runs");

    // Restart without loss: TERM, then kill -9; a new container still gets an address.
    for (sig, name) in [(libc::SIGTERM, "c3"), (libc::SIGKILL, "c4")] {
        h.stop_agent(sig)?;
        h.start_agent(&[])?;
        run_detached(&h, name, "kn1", &[], &["sleep", "600"])?;
        let ip = ip_of(&h, name, "kn1")?;
        ensure!(
            reaches(&h, name, &ip1)?,
            "{name} ({ip}) cannot ping c1 after agent restart"
        );
        ensure!(
            reaches(&h, "c1", &ip)?,
            "c1 cannot ping {name} after agent restart"
        );
    }

    // Isolation: a second knit network cannot reach the first (positive control: its own).
    h.knit_network("kn2", SUBNET2, &[])?;
    run_detached(&h, "d1", "kn2", &[], &["sleep", "600"])?;
    run_detached(&h, "d2", "kn2", &[], &["sleep", "600"])?;
    let d2 = ip_of(&h, "d2", "kn2")?;
    ensure!(
        reaches(&h, "d1", &d2)?,
        "positive control: d1 cannot ping d2"
    );
    ensure!(!pings(&h, "d1", &ip1)?, "kn2's d1 reaches kn1's c1");
    ensure!(!pings(&h, "c1", &d2)?, "kn1's c1 reaches kn2's d2");

    // Internal: no route out.
    h.knit_network("kn3", "10.244.62.0/24", &["--internal"])?;
    run_detached(&h, "i1", "kn3", &[], &["sleep", "600"])?;
    let routes = h.docker(&["exec", "i1", "ip", "route"])?;
    ensure!(
        !routes.contains("default"),
        "internal network has a default route:\n{routes}"
    );
    ensure!(
        !pings(&h, "i1", OUTSIDE_IP)?,
        "internal container reaches outside"
    );

    // Everything removed leaves nothing.
    let names = ["c1", "c2", "web", "c3", "c4", "d1", "d2", "i1"];
    let mut rm = vec!["rm", "-f"];
    rm.extend(names);
    h.docker(&rm)?;
    h.docker(&["network", "rm", "kn1", "kn2", "kn3"])?;
    let ls = h.knit(&["network", "ls"])?;
    ensure!(ls.lines().count() == 1, "store still lists networks:\n{ls}");
    let left = kernel_leftovers(&h)?;
    ensure!(
        left.is_empty(),
        "left behind: {left:#?}\nagent log:\n{}",
        h.agent_log()
    );
    Ok(())
}

#[test]
fn the_plugin_refuses_bad_input_with_clear_errors() -> Result<()> {
    let mut h = DockerHost::start("dkb")?;
    h.start_agent(&["--log-format", "json", "--metrics", "127.0.0.1:9464"])?;
    let err = |status: u16, body: &str, want: &str| -> Result<()> {
        ensure!(status >= 400, "status {status} for a bad request ({body})");
        let v: Value = serde_json::from_str(body).with_context(|| format!("body {body:?}"))?;
        let msg = v["Err"].as_str().context("no Err")?;
        ensure!(
            msg.contains(want),
            "error {msg:?} does not mention {want:?}"
        );
        Ok(())
    };
    let (s, b) = h.plugin_post("NetworkDriver.CreateNetwork", b"{not json")?;
    err(s, &b, "malformed JSON")?;
    let (s, b) = h.plugin_post("NetworkDriver.Frobnicate", b"{}")?;
    err(s, &b, "does not implement")?;
    let huge = vec![b' '; 4 << 20];
    let (s, b) = h.plugin_post("NetworkDriver.CreateNetwork", &huge)?;
    err(s, &b, "bytes")?;
    let (s, b) = h.plugin_post(
        "NetworkDriver.CreateEndpoint",
        br#"{"NetworkID":"0000000000000000000000000000000000000000000000000000000000000000","EndpointID":"e1"}"#,
    )?;
    err(s, &b, "not known to knit")?;
    // Overlapping pools through Docker: a clear error, nothing made.
    let p = h.plugin.clone();
    let ok1 = h.knit_network("ok1", SUBNET, &[])?;
    let ok1 = ok1.trim();
    let o = h.docker_raw(&[
        "network",
        "create",
        "-d",
        &p,
        "--ipam-driver",
        &p,
        "--subnet",
        "10.244.60.128/25",
        "bad1",
    ])?;
    ensure!(!o.status.success(), "an overlapping subnet was accepted");
    let e = String::from_utf8_lossy(&o.stderr);
    ensure!(e.contains("overlaps"), "docker said: {e}");
    // A second agent on the same state dir refuses to start.
    let o = h
        .knit_command()
        .args(["agent", "--plugin-name", &format!("{p}b")])
        .output()?;
    ensure!(!o.status.success(), "a second agent started");
    let e = String::from_utf8_lossy(&o.stderr);
    ensure!(e.contains("already running"), "second agent said: {e}");
    // An endpoint Docker never learnt about (its CreateEndpoint completed but the answer was
    // lost, as when the agent dies before replying) goes with its network: Docker deletes its
    // endpoints before the network, so what is left then is an orphan.
    let orphan = "0rphan".repeat(10) + "0000";
    let body = serde_json::json!({"NetworkID": ok1, "EndpointID": orphan,
        "Interface": {"Address": "10.244.60.77/24"}, "Options": {}});
    let (s, b) = h.plugin_post("NetworkDriver.CreateEndpoint", body.to_string().as_bytes())?;
    ensure!(s == 200, "the orphan's CreateEndpoint: {s} {b}");
    let peer = format!("kn{}", &orphan[..11]);
    ensure!(
        h.ns.stdout(&["ip", "-o", "link"])?.contains(&peer),
        "no {peer}"
    );
    // The good network still works and goes away cleanly, the orphan with it.
    h.docker(&["network", "rm", "ok1"])?;
    let links = h.ns.stdout(&["ip", "-o", "link"])?;
    ensure!(
        !links.contains(&peer),
        "the orphan's link survived: {links}"
    );
    // Metrics count calls by method and outcome; every log line is a JSON object; the local
    // API socket in --run-dir answers.
    let m =
        h.ns.stdout(&["curl", "-sf", "http://127.0.0.1:9464/metrics"])?;
    for want in [
        "knit_agent_requests_total{method=\"NetworkDriver.CreateNetwork\",outcome=\"ok\"} 1",
        "knit_agent_requests_total{method=\"NetworkDriver.CreateEndpoint\",outcome=\"error\"} 1",
        "knit_agent_requests_total{method=\"NetworkDriver.CreateEndpoint\",outcome=\"ok\"} 1",
        "knit_agent_requests_total{method=\"unknown\",outcome=\"error\"} 1",
        "knit_agent_request_duration_seconds_bucket",
        "knit_agent_networks 0",
    ] {
        ensure!(m.contains(want), "metrics lack {want:?}:\n{m}");
    }
    let log = std::fs::read_to_string(h.dir.path().join("agent.log"))?;
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() > 3, "the agent logged almost nothing: {log}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).with_context(|| format!("log line {l:?}"))?;
        ensure!(
            v["level"].is_string() && v["fields"].is_object(),
            "log line {l}"
        );
    }
    let api = h.dir.path().join("run/agent.sock");
    let st = h.ns.stdout(&[
        "curl",
        "-sf",
        "--unix-socket",
        &api.display().to_string(),
        "http://knit/v1/status",
    ])?;
    let v: Value = serde_json::from_str(&st)?;
    ensure!(v["networks"] == 0 && v["endpoints"] == 0, "status: {st}");
    ensure!(
        h.knit(&["network", "ls"])?.lines().count() == 1,
        "store not empty"
    );
    Ok(())
}

/// A firewall reload that dropped knit's nftables table heals on the periodic repair pass and
/// on restart; a missing bridge is made again.
#[test]
fn the_agent_repairs_what_the_host_lost() -> Result<()> {
    let mut h = DockerHost::start("dkr")?;
    h.start_agent(&["--reconcile-interval", "1"])?;
    h.knit_network("kn1", SUBNET, &[])?;
    run_detached(
        &h,
        "web",
        "kn1",
        &["-p", "18082:8080"],
        &[
            "sh",
            "-c",
            "while true; do echo hello | nc -l -p 8080; done",
        ],
    )?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    ensure!(
        serves_hello(&h.ns, "127.0.0.1", 18082)?,
        "-p before the loss"
    );
    fn wait_for(h: &DockerHost, what: &str) -> Result<()> {
        let t = std::time::Instant::now();
        while !reads_hello(&h.ns, "127.0.0.1", 18082)? {
            ensure!(
                t.elapsed() < std::time::Duration::from_secs(15),
                "{what}: -p never came back\n{}",
                h.agent_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    }
    // The periodic pass.
    h.ns.run(&["nft", "delete", "table", "inet", "knit"])?;
    ensure!(
        !reads_hello(&h.ns, "127.0.0.1", 18082)?,
        "-p still answers without knit's table"
    );
    wait_for(&h, "periodic repair")?;
    // A restart (the agent was down when the table went).
    h.stop_agent(libc::SIGKILL)?;
    h.ns.run(&["nft", "delete", "table", "inet", "knit"])?;
    h.start_agent(&[])?;
    wait_for(&h, "repair at start")?;
    h.docker(&["rm", "-f", "web"])?;
    h.docker(&["network", "rm", "kn1"])?;
    let left = kernel_leftovers(&h)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

/// kill -9 of the agent at random moments while Docker creates and removes containers; after
/// a restart and the removal of everything, the store and the kernel agree and nothing leaked.
#[test]
fn the_agent_survives_kill_9_at_any_point() -> Result<()> {
    let mut h = DockerHost::start("dkk")?;
    h.start_agent(&[])?;
    h.knit_network("kn1", SUBNET, &[])?;
    run_detached(&h, "anchor", "kn1", &[], &["sleep", "600"])?;
    let anchor = ip_of(&h, "anchor", "kn1")?;
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..12 {
        let name = format!("k{round}");
        let sock = h.sock();
        let (n2, img) = (name.clone(), IMAGE.to_string());
        let removing = round % 3 == 2;
        let target = if removing {
            format!("k{}", round - 1)
        } else {
            name.clone()
        };
        let worker = std::thread::spawn(move || {
            let args: Vec<String> = if removing {
                vec!["rm".into(), "-f".into(), target]
            } else {
                [
                    "run", "-d", "--name", &n2, "--net", "kn1", &img, "sleep", "600",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            };
            std::process::Command::new(netns_tests::docker::DOCKER)
                .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .args(&args)
                .output()
        });
        std::thread::sleep(std::time::Duration::from_millis(rnd(400)));
        h.stop_agent(libc::SIGKILL)?;
        h.start_agent(&[])?;
        let _ = worker.join();
    }
    // Whatever Docker made of it: every container is removed, then one more runs and talks.
    let ids = h.docker(&["ps", "-aq", "--filter", "name=k"])?;
    for id in ids.split_whitespace() {
        h.docker(&["rm", "-f", id])?;
    }
    run_detached(&h, "after", "kn1", &[], &["sleep", "600"])?;
    ensure!(
        reaches(&h, "after", &anchor)?,
        "a new container cannot reach the anchor"
    );
    h.docker(&["rm", "-f", "after", "anchor"])?;
    // Endpoints Docker lost while the agent was down are found by the repair pass.
    h.stop_agent(libc::SIGTERM)?;
    h.start_agent(&[])?;
    let o = h.docker_raw(&["network", "rm", "kn1"])?;
    ensure!(
        o.status.success(),
        "network rm: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        h.agent_log()
    );
    let left = kernel_leftovers(&h)?;
    ensure!(
        left.is_empty(),
        "left behind: {left:#?}\nagent log:\n{}",
        h.agent_log()
    );
    Ok(())
}

/// Dual stack through Docker: both pools from knit's IPAM, both addresses on the container,
/// both families reach the other container.
#[test]
fn dual_stack_network() -> Result<()> {
    let mut h = DockerHost::start("dk6")?;
    h.start_agent(&[])?;
    h.knit_network(
        "kn6",
        "10.244.66.0/24",
        &["--ipv6", "--subnet", "fd00:6b6e:66::/64"],
    )?;
    run_detached(&h, "six-a", "kn6", &[], &["sleep", "600"])?;
    run_detached(&h, "six-b", "kn6", &[], &["sleep", "600"])?;
    let f6 = "{{(index .NetworkSettings.Networks \"kn6\").GlobalIPv6Address}}";
    let b6 = h.docker(&["inspect", "-f", f6, "six-b"])?;
    ensure!(
        b6.starts_with("fd00:6b6e:66::"),
        "b has no IPv6 address from knit: {b6:?}"
    );
    let b4 = ip_of(&h, "six-b", "kn6")?;
    ensure!(reaches(&h, "six-a", &b4)?, "a cannot ping b over IPv4");
    let ok6 = h
        .docker_raw(&["exec", "six-a", "ping", "-6", "-c", "1", "-W", "2", &b6])?
        .status
        .success();
    ensure!(ok6, "a cannot ping b over IPv6 ({b6})");
    let k: Value = serde_json::from_str(&h.knit(&["network", "inspect", "kn6"])?)?;
    ensure!(k[0]["EnableIPv6"] == true, "knit inspect: {k:#}");
    h.docker(&["rm", "-f", "six-a", "six-b"])?;
    h.docker(&["network", "rm", "kn6"])?;
    let left = kernel_leftovers(&h)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

/// knit as the network driver with Docker's own IPAM (no --ipam-driver): Docker picks the
/// pool and the addresses, knit wires them; and a knit sandbox joins a Docker-made network
/// on knit's IPAM without clashing with Docker's containers.
#[test]
fn docker_ipam_and_cli_sandboxes_on_docker_networks() -> Result<()> {
    let mut h = DockerHost::start("dki")?;
    h.start_agent(&[])?;
    let p = h.plugin.clone();
    h.docker(&[
        "network",
        "create",
        "-d",
        &p,
        "--subnet",
        "10.244.67.0/24",
        "dipam",
    ])?;
    run_detached(&h, "x1", "dipam", &[], &["sleep", "600"])?;
    run_detached(&h, "x2", "dipam", &[], &["sleep", "600"])?;
    let x2 = ip_of(&h, "x2", "dipam")?;
    ensure!(x2.starts_with("10.244.67."), "x2 got {x2}");
    ensure!(
        reaches(&h, "x1", &x2)?,
        "x1 cannot ping x2 on Docker's IPAM"
    );

    h.knit_network("kn1", SUBNET, &[])?;
    run_detached(&h, "y1", "kn1", &[], &["sleep", "600"])?;
    let y1 = ip_of(&h, "y1", "kn1")?;
    // A knit sandbox on the same network: a different address, and they talk.
    knows_name(&h, "kn1")?;
    let out = h.knit(&[
        "run", "--net", "kn1", "--", "ping", "-c", "1", "-W", "2", &y1,
    ])?;
    ensure!(
        out.contains("1 packets received") || out.contains("1 received"),
        "{out}"
    );
    h.knit(&["run", "--name", "sb", "--net", "kn1", "--", "true"])?;
    // The agent's repair pass leaves the CLI's sandbox on a Docker network alone.
    h.stop_agent(libc::SIGTERM)?;
    h.start_agent(&[])?;
    let sbls = h.knit(&["sandbox", "ls"])?;
    ensure!(
        sbls.contains("10.244.60."),
        "the sandbox lost its endpoint:\n{sbls}"
    );
    let k: Value = serde_json::from_str(&h.knit(&["network", "inspect", "kn1"])?)?;
    let addrs: Vec<String> = k[0]["Containers"]
        .as_object()
        .context("Containers")?
        .values()
        .map(|c| c["IPv4Address"].as_str().unwrap_or("").to_string())
        .collect();
    ensure!(addrs.len() == 2, "knit inspect: {k:#}");
    ensure!(
        addrs[0] != addrs[1],
        "the sandbox and y1 share an address: {addrs:?}"
    );
    h.knit(&["sandbox", "rm", "sb"])?;
    h.docker(&["rm", "-f", "x1", "x2", "y1"])?;
    h.docker(&["network", "rm", "dipam", "kn1"])?;
    let left = kernel_leftovers(&h)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

/// `knit agent --dns`: knit's DNS on each network's gateway answers Docker containers' names
/// (learnt from the Engine API), fully qualified as only knit knows them; a network created
/// later gets its own listener without disturbing the first.
#[test]
fn agent_dns_answers_docker_container_names() -> Result<()> {
    let mut h = DockerHost::start("dkd")?;
    h.start_agent(&["--dns", "--dns-no-forward"])?;
    h.knit_network("kn1", SUBNET, &[])?;
    run_detached(&h, "alpha", "kn1", &[], &["sleep", "600"])?;
    run_detached(&h, "beta", "kn1", &[], &["sleep", "600"])?;
    let alpha = ip_of(&h, "alpha", "kn1")?;
    let lookup = |h: &DockerHost, from: &str, name: &str, server: &str| -> Result<String> {
        let o = h.docker_raw(&["exec", from, "nslookup", name, server])?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let t = std::time::Instant::now();
    loop {
        let out = lookup(&h, "beta", "alpha.kn1.knit.internal", GATEWAY)?;
        if out.contains(&format!("Address: {alpha}")) {
            break;
        }
        ensure!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "knit's DNS never answered alpha:\n{out}\n{}",
            h.agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A second network: its own listener; the first one keeps answering.
    h.knit_network("kn2", SUBNET2, &[])?;
    run_detached(&h, "gamma", "kn2", &[], &["sleep", "600"])?;
    let gamma = ip_of(&h, "gamma", "kn2")?;
    let t = std::time::Instant::now();
    loop {
        let out = lookup(&h, "gamma", "gamma", "10.244.61.1")?;
        if out.contains(&format!("Address: {gamma}")) {
            break;
        }
        ensure!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "no answer on kn2's gateway:\n{out}\n{}",
            h.agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = lookup(&h, "beta", "alpha", GATEWAY)?;
    ensure!(
        out.contains(&format!("Address: {alpha}")),
        "kn1's listener after kn2 came:\n{out}"
    );
    // gamma is on kn2 only: kn1's containers cannot resolve it through knit.
    let out = lookup(&h, "beta", "gamma.kn2.knit.internal", GATEWAY)?;
    ensure!(!out.contains(&gamma), "kn1 resolved kn2's gamma:\n{out}");
    h.docker(&["rm", "-f", "alpha", "beta", "gamma"])?;
    h.docker(&["network", "rm", "kn1", "kn2"])?;
    let left = kernel_leftovers(&h)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
