//! podman 4.3 (CNI backend) driving the CNI plugins in `$KNIT_CNI_BIN` (default: knit's own,
//! `target/cni/bin`): a bridge network with two containers that reach each other and their
//! gateway, a port mapping reached from another netns, then teardown that leaves nothing behind.
//!
//! Topology (all namespaces are this test's own; podman runs inside T via `nsenter --net`):
//! ```text
//!   O (10.244.250.2/30) ──veth── T (10.244.250.1/30)
//!                                └─ cni-podmanN 10.244.<n>.1/24 ── c1, c2 (c2: -p 18080:80)
//! ```
#![cfg(feature = "root-tests")]

// A module shared by several test crates: each uses only part of it.
#[allow(dead_code)]
#[path = "common/podman.rs"]
mod podman_env;

use anyhow::{ensure, Context, Result};
use podman_env::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T_ADDR: &str = "10.244.250.1";
const O_ADDR: &str = "10.244.250.2";
const HOST_PORT: &str = "18080";
const BODY: &str = "hello from knit-test\n";
const IMAGE: &str = "knit-test:busybox";

#[test]
fn podman_bridge_network_through_cni_plugins() -> Result<()> {
    assert_root();
    require_tools(&[
        "podman",
        "runc",
        "conmon",
        "nsenter",
        "ip",
        "curl",
        "tar",
        "iptables-save",
    ]);
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing (busybox-static)"
    );
    let plugins = cni_bin_dir();
    check_plugin_dir(&plugins)?;
    println!("CNI plugins under test: {}", plugins.display());
    let start = Instant::now();

    let t = Netns::create(unique("t"))?;
    let o = Netns::create(unique("o"))?;
    veth_between(&t, &format!("{T_ADDR}/30"), &o, &format!("{O_ADDR}/30"))?;
    let mut pm = Podman::new(&t, &plugins)?;
    pm.import_busybox(IMAGE, BODY)?;
    let setup = start.elapsed();

    let net = unique("net");
    let octet = 100 + std::process::id() % 100;
    let subnet = format!("10.244.{octet}.0/24");
    let conflist = pm.network_create(&net, &subnet)?;
    println!("podman's conflist for {net}:\n{conflist}");

    let t0 = Instant::now();
    let c1 = pm.run_container(&unique("c1"), &net, &[], &[IMAGE, "sleep", "300"])?;
    let mut c2 = pm.run_container(
        &unique("c2"),
        &net,
        &["-p", &format!("{HOST_PORT}:80")],
        &[IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"],
    )?;
    let run_time = t0.elapsed();
    println!(
        "c1 {} ({}), c2 {} ({}), gateway {}",
        c1.name, c1.ip, c2.name, c2.ip, c1.gateway
    );

    check_traffic(&pm, &t, &o, &c1, &c2)?;

    // A restart is DEL then ADD for the same container id: the mapping must follow the new
    // address and nothing of the old attachment may stay.
    let t0 = Instant::now();
    let restarted = pm.restart(&c2.name, &net)?;
    let restart_time = t0.elapsed();
    println!(
        "c2 restarted: {} -> {} (sandbox {})",
        c2.ip, restarted.ip, restarted.sandbox
    );
    let c2_first_sandbox = std::mem::replace(&mut c2, restarted).sandbox;
    ensure!(
        !Path::new(&c2_first_sandbox).exists() || c2_first_sandbox == c2.sandbox,
        "c2's old sandbox {c2_first_sandbox} outlived the restart"
    );
    check_traffic(&pm, &t, &o, &c1, &c2)?;

    let t0 = Instant::now();
    pm.run(&["rm", "-f", "-t", "0", &c1.name, &c2.name])?;
    pm.network_rm(&net)?;
    let rm_time = t0.elapsed();
    let leftovers = leftovers_in(&t, &net, &subnet, &conflist, &[&c1, &c2])?;

    let dir = pm.dir.clone();
    pm.close()?;
    ensure!(
        !dir.exists(),
        "{} still exists after cleanup",
        dir.display()
    );
    ensure!(
        mounts_under(&dir).is_empty(),
        "mounts left under {}",
        dir.display()
    );
    ensure!(
        leftovers.is_empty(),
        "left behind after rm:\n  {}",
        leftovers.join("\n  ")
    );
    drop((t, o));
    println!(
        "timings: setup {setup:?}, 2x podman run {run_time:?}, restart {restart_time:?}, \
         rm+network rm {rm_time:?}, total {:?}",
        start.elapsed()
    );
    Ok(())
}

/// Ping between the containers and to the gateway, and the port mapping from O and from T.
fn check_traffic(pm: &Podman, t: &Netns, o: &Netns, c1: &Container, c2: &Container) -> Result<()> {
    for (from, to) in [
        (c1, &c2.ip),
        (c2, &c1.ip),
        (c1, &c1.gateway),
        (c2, &c2.gateway),
    ] {
        pm.run(&["exec", &from.name, "ping", "-c1", "-W2", to])
            .with_context(|| format!("{} cannot ping {to}", from.name))?;
        println!("ok: {} pings {to}", from.name);
    }
    let url = format!("http://{T_ADDR}:{HOST_PORT}/");
    let got = retry(Duration::from_secs(5), || curl(o, &url))
        .context("port mapping from O to T's address")?;
    ensure!(got == BODY, "from O {url} answered {got:?}, want {BODY:?}");
    println!("ok: O reaches {url} (c2:80)");
    let got = curl(t, &url).context("port mapping from T to its own address")?;
    ensure!(got == BODY, "from T {url} answered {got:?}");
    println!("ok: T reaches {url}");
    // Localhost needs the portmap plugin's SNAT for 127.0.0.1 (route_localnet + masquerade):
    // reported, not asserted.
    let local = format!("http://127.0.0.1:{HOST_PORT}/");
    match curl(t, &local) {
        Ok(body) if body == BODY => println!("ok: T reaches {local} (localhost port mapping)"),
        Ok(body) => println!("REPORT: T {local} answered {body:?}"),
        Err(e) => println!("REPORT: T cannot reach {local}: {e:#}"),
    }
    Ok(())
}

fn curl(ns: &Netns, url: &str) -> Result<String> {
    run(ns.exec("curl").args(["-sS", "--max-time", "3", url]))
}

/// Everything of this network still present after `podman rm` + `podman network rm`.
fn leftovers_in(
    t: &Netns,
    net: &str,
    subnet: &str,
    conflist: &str,
    ctrs: &[&Container],
) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let links = t.ip(&["-o", "link"])?;
    for l in links
        .lines()
        .filter(|l| !l.contains(": lo:") && !l.contains("knt-"))
    {
        left.push(format!("link in T: {l}"));
    }
    let prefix = subnet.trim_end_matches("0/24");
    let ids: Vec<&str> = ctrs.iter().map(|c| c.id.as_str()).collect();
    let mentions =
        |l: &str| l.contains(prefix) || l.contains(net) || ids.iter().any(|i| l.contains(i));
    let data = host_local_dir(conflist)?.join(net);
    for f in std::fs::read_dir(&data).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.parse::<IpAddr>().is_ok() {
            left.push(format!("host-local reservation {}", f.path().display()));
        } else {
            println!(
                "note: host-local keeps {} (as the reference does)",
                f.path().display()
            );
        }
    }
    for f in std::fs::read_dir(CNI_RESULTS_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        if ids
            .iter()
            .any(|i| f.file_name().to_string_lossy().contains(i))
        {
            left.push(format!("cached CNI result {}", f.path().display()));
        }
    }
    for c in ctrs.iter().filter(|c| Path::new(&c.sandbox).exists()) {
        left.push(format!("sandbox netns file {}", c.sandbox));
    }
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = run(&mut t.exec(save))?;
        for l in rules
            .lines()
            .filter(|l| mentions(l) || per_container_chain(l))
        {
            left.push(format!("{save} in T: {l}"));
        }
    }
    match run(t.exec("nft").args(["list", "table", "inet", "knit"])) {
        Ok(table) => {
            println!("nft table inet knit in T after teardown:\n{table}");
            for l in table
                .lines()
                .filter(|l| mentions(l) || l.contains("elements = {"))
            {
                left.push(format!("nft inet knit in T: {}", l.trim()));
            }
        }
        Err(_) => println!("note: no nft table inet knit in T"),
    }
    Ok(left)
}

/// The reference portmap/bridge plugins name per-container chains `CNI-<hex>` / `CNI-DN-<hex>`.
fn per_container_chain(line: &str) -> bool {
    line.split([' ', ':']).any(|w| {
        let rest = w.strip_prefix("CNI-DN-").or_else(|| w.strip_prefix("CNI-"));
        rest.is_some_and(|r| r.len() >= 16 && r.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

/// host-local's data dir as the conflist configures it (podman sets none: the default).
fn host_local_dir(conflist: &str) -> Result<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(conflist).context("parse conflist")?;
    let dir = v["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p["ipam"]["dataDir"].as_str().map(PathBuf::from));
    Ok(dir.unwrap_or_else(|| PathBuf::from(HOST_LOCAL_DEFAULT_DIR)))
}
