//! Docker on the multi-host overlay, every part real: etcd on an underlay namespace, a `knit
//! controller`, two "hosts" each with a `knit --etcd agent --plugin-dir` and a Docker Engine
//! 20.10 whose `--cluster-store` is the same etcd (Docker shares global-scope networks through
//! it). `docker network create -d knit --ipam-driver knit` on one host makes an overlay that
//! both engines run containers on:
//!
//! - containers on the two hosts ping each other across the VXLAN overlay; a container of the
//!   `knit` CNI plugin on the same network draws from the same address space and reaches them;
//! - the network takes Docker's name in knit's records; the containers are endpoints of their
//!   hosts in etcd, named after their containers: `knit --etcd dns` on one host answers the
//!   name of a container on the other;
//! - `docker rm` on one host takes the endpoint's FDB and neighbour entries off the other;
//! - bad input: `-p` on an overlay, an overlapping subnet, each refused with knit's reason and
//!   nothing left;
//! - `docker network rm` removes the network from etcd.
//!
//! Each engine sees its own agent's socket as `/run/docker/plugins/knit.sock`: it runs in a
//! private mount namespace where that directory is a bind mount of its host's plugin dir.

#![cfg(feature = "root-tests")]

#[allow(dead_code)]
#[path = "common/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "common/overlay_lab.rs"]
mod overlay_lab;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cluster::{tables, within, Procs};
use netns_tests::cni::{Runner, Runtime};
use netns_tests::docker::{import_busybox, unmount_under, DOCKER, IMAGE, PLUGIN_DIR};
use netns_tests::topology::TestNs;
use overlay_lab::{network_id_vni, Host, Lab};
use serde_json::json;

const SUBNET: &str = "10.252.0.0/16";
const CTL_PORT: u16 = 7481;

/// A Docker Engine in a host namespace, on the cluster store.
struct Engine {
    child: Option<Child>,
    dir: PathBuf,
}

impl Engine {
    fn start(h: &Host, etcd: &str) -> Result<Engine> {
        let dir = h.k.dir.path().join("docker");
        let plugins = h.k.dir.path().join("plugins");
        std::fs::create_dir_all(&plugins)?;
        std::fs::create_dir_all(PLUGIN_DIR)?;
        let store = etcd.replacen("http://", "etcd://", 1);
        let log = std::fs::File::create(h.k.dir.path().join("dockerd.log"))?;
        let d = dir.display();
        let script = format!(
            "mount --bind {plugins} {PLUGIN_DIR} && exec nsenter --net={ns} dockerd \
             --data-root {d}/data --exec-root {d}/exec -H unix://{d}/docker.sock \
             --pidfile {d}/docker.pid --bridge=none --iptables=false --ip6tables=false \
             --cluster-store={store} --cluster-advertise={ip}:2376",
            plugins = plugins.display(),
            ns = h.k.ns.path().display(),
            ip = h.underlay,
        );
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut e = Engine {
            child: Some(child),
            dir,
        };
        let t = Instant::now();
        while !e.raw(&["info"])?.status.success() {
            if let Some(st) = e.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("dockerd exited ({st}): {}", tail(h, "dockerd.log"));
            }
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd of {} did not answer within 60 s: {}",
                h.name,
                tail(h, "dockerd.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        import_busybox(&e.sock(), &e.dir)?;
        Ok(e)
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn raw(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .args(args)
            .output()?)
    }

    fn docker(&self, args: &[&str]) -> Result<String> {
        let o = self.raw(args)?;
        ensure!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// The docker error of a command that must fail.
    fn refused(&self, args: &[&str]) -> Result<String> {
        let o = self.raw(args)?;
        ensure!(!o.status.success(), "docker {args:?} succeeded");
        Ok(String::from_utf8_lossy(&o.stderr).into_owned())
    }

    fn ip_of(&self, container: &str) -> Result<String> {
        self.docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
    }

    fn pings(&self, container: &str, ip: &str) -> bool {
        self.raw(&["exec", container, "ping", "-c1", "-W1", ip])
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child (sh execs nsenter execs dockerd in place).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_under(&self.dir);
    }
}

fn tail(h: &Host, log: &str) -> String {
    let s = h.k.log(log);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The agent of `h` serving Docker as plugin `knit` from its host's plugin dir.
fn start_agent(h: &mut Host, engine: &Engine) -> Result<()> {
    let plugins = h.k.dir.path().join("plugins");
    let docker_host = format!("unix://{}", engine.sock().display());
    h.start_agent_with(&[
        "--plugin-dir",
        &plugins.display().to_string(),
        "--docker-host",
        &docker_host,
    ])?;
    let sock = plugins.join("knit.sock");
    within(
        20,
        &format!("the agent of {} serves Docker", h.name),
        || Ok(sock.exists()),
    )
}

fn cni_conf(h: &Host) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "dnet",
        "plugins": [{"type": "knit", "network": "dnet", "socket": h.socket()}],
    })
}

#[test]
fn docker_containers_on_two_hosts_share_a_knit_overlay() -> Result<()> {
    let lab = Lab::new()?;
    let mut hosts = vec![lab.host("dha", 51)?, lab.host("dhb", 52)?];
    let listen = format!("{}:{CTL_PORT}", hosts[0].underlay);
    let _ctl = Procs(vec![hosts[0].k.spawn(
        &["--etcd", &lab.etcd.url, "controller", "--listen", &listen],
        "controller.log",
    )?]);
    // Engines last in, first out: they go before the agents and the namespaces.
    let mut engines = Vec::new();
    for h in &hosts {
        engines.push(Engine::start(h, &lab.etcd.url)?);
    }
    for (h, e) in hosts.iter_mut().zip(&engines) {
        start_agent(h, e)?;
    }
    let (a, b) = (&engines[0], &engines[1]);

    a.docker(&[
        "network",
        "create",
        "-d",
        "knit",
        "--ipam-driver",
        "knit",
        "--subnet",
        SUBNET,
        "dnet",
    ])
    .with_context(|| format!("agent of host a:\n{}", tail(&hosts[0], "agent.log")))?;
    within(10, "host b's engine sees the global network", || {
        Ok(
            b.docker(&["network", "ls", "--format", "{{.Name}} {{.Scope}}"])?
                .contains("dnet global"),
        )
    })?;
    // knit's record takes Docker's name (learnt from host a's engine).
    within(10, "knit names the network after Docker's", || {
        Ok(hosts[1]
            .knit(&["network", "ls"])?
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "dnet")))
    })?;
    let (_, vni) = network_id_vni(&hosts[0], "dnet")?;

    a.docker(&[
        "run", "-d", "--net", "dnet", "--name", "ca", IMAGE, "sleep", "600",
    ])?;
    b.docker(&[
        "run", "-d", "--net", "dnet", "--name", "cb", IMAGE, "sleep", "600",
    ])?;
    let (ipa, ipb) = (a.ip_of("ca")?, b.ip_of("cb")?);
    ensure!(ipa != ipb && !ipa.is_empty(), "addresses {ipa} and {ipb}");
    within(10, &format!("ca pings cb ({ipb}) across hosts"), || {
        Ok(a.pings("ca", &ipb))
    })?;
    within(10, &format!("cb pings ca ({ipa}) across hosts"), || {
        Ok(b.pings("cb", &ipa))
    })?;
    // Each container is an endpoint of its own host in etcd, named after its container (the
    // agent asks its engine), so knit's DNS answers Docker's names across hosts.
    let inspect = hosts[0].knit(&["network", "inspect", "dnet"])?;
    ensure!(
        inspect.contains(&ipa) && inspect.contains(&ipb),
        "knit network inspect lacks the containers:\n{inspect}"
    );
    let dns = hosts[0].k.spawn(
        &[
            "--etcd",
            &lab.etcd.url,
            "dns",
            "--no-forward",
            "--listen",
            "10.252.0.1",
        ],
        "dns.log",
    )?;
    let _dns = Procs(vec![dns]);
    within(
        10,
        "host a's knit DNS answers cb (a container of host b)",
        || {
            let o = hosts[0].k.ns.run(&[
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                "@10.252.0.1",
                "cb.dnet.knit.internal",
            ])?;
            Ok(String::from_utf8_lossy(&o.stdout).trim() == ipb)
        },
    )?;

    // A CNI container on host b, on the same network and address space.
    let c = TestNs::new("dhc0")?;
    let r = Runner::new(netns_tests::knit_dir(), hosts[1].k.ns.ns());
    let rt = Runtime::new("dhc0", Some(&c.path()), "eth0");
    let res = r.add(&cni_conf(&hosts[1]), &rt);
    let v = res.ok().context("CNI ADD on host b")?.clone();
    let ipc = v["ips"][0]["address"]
        .as_str()
        .context("no address")?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(ipc != ipa && ipc != ipb, "CNI got a Docker address {ipc}");
    within(10, &format!("ca pings the CNI container ({ipc})"), || {
        Ok(a.pings("ca", &ipc))
    })?;
    // GC from the CNI runtime (naming only its own attachment) keeps Docker's addresses.
    let gc = json!({"cniVersion": "1.1.0", "name": "dnet", "type": "knit",
        "network": "dnet", "socket": hosts[1].socket(),
        "cni.dev/valid-attachments": [{"containerID": "dhc0", "ifname": "eth0"}]});
    r.call("knit", &r.env("GC", &Runtime::new("", None, "")), &gc)
        .outcome
        .map_err(|e| anyhow::anyhow!("CNI GC on host b: {} {}", e.msg, e.stderr))?;
    let after = b.docker(&[
        "run", "-d", "--net", "dnet", "--name", "cb2", IMAGE, "sleep", "600",
    ]);
    let ipb2 = b.ip_of("cb2")?;
    ensure!(
        after.is_ok() && ipb2 != ipb && ipb2 != ipc,
        "after GC, host b handed out {ipb2} again (cb {ipb}, CNI {ipc})"
    );
    b.docker(&["rm", "-f", "cb2"])?;

    // Bad input, refused with knit's reason; nothing made.
    let e = a.refused(&[
        "run", "-d", "--net", "dnet", "-p", "8080:80", "--name", "cp", IMAGE, "sleep", "60",
    ])?;
    ensure!(e.contains("do not publish ports"), "{e}");
    let _ = a.raw(&["rm", "-f", "cp"]);
    let e = a.refused(&[
        "network",
        "create",
        "-d",
        "knit",
        "--ipam-driver",
        "knit",
        "--subnet",
        "10.252.7.0/24",
        "dover",
    ])?;
    ensure!(e.contains("overlaps"), "{e}");
    ensure!(
        !hosts[0].knit(&["network", "ls"])?.contains("10.252.7.0/24"),
        "the refused network was recorded"
    );

    // docker rm on host b: its entries leave host a, its record leaves etcd.
    b.docker(&["rm", "-f", "cb"])?;
    within(10, &format!("{ipb}'s entries gone on host a"), || {
        Ok(!tables(&hosts[0], vni)?.contains(&format!("{ipb} ")))
    })?;
    ensure!(!a.pings("ca", &ipb), "{ipb} still answers after docker rm");
    ensure!(
        !hosts[0]
            .knit(&["network", "inspect", "dnet"])?
            .contains(&ipb),
        "the removed container's endpoint is still recorded"
    );

    r.del(&cni_conf(&hosts[1]), &rt, None)
        .ok()
        .context("CNI DEL")?;
    a.docker(&["rm", "-f", "ca"])?;
    a.docker(&["network", "rm", "dnet"])?;
    within(5, "the network leaves etcd", || {
        Ok(!hosts[1].knit(&["network", "ls"])?.contains("dnet"))
    })?;
    drop(engines);
    Ok(())
}
