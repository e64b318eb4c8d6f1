//! A knit cluster on one machine for the benches: an underlay namespace with a bridge and a
//! real etcd on it, "hosts" (namespaces with an `eth0` on the underlay and private knit dirs)
//! running the real `knit agent` / `knit controller`, and containers attached through the
//! `knit` CNI plugin (`target/cni/bin/knit`). Everything is owned: processes are killed and
//! namespaces and directories removed on drop, in that order (fields drop in declaration
//! order, and a host's agent before its namespace).
//!
//! The integration tests' `tests/common/overlay_lab.rs` has the same shape plus a scripted
//! controller; this is the part a bench needs, with the CNI calls and no test-only types.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cni::{Runner, Runtime};
use crate::etcd::EtcdServer;
use crate::knit::KnitHost;
use crate::topology::TestNs;

/// Child processes killed (SIGKILL) and reaped on every way out.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The underlay: a namespace with bridge `ulbr` holding `<net>.1/24`, and etcd on that
/// address. Declared before the hosts that use it, it drops after them.
pub struct Underlay {
    /// etcd goes first (it runs inside `ns`).
    pub etcd: EtcdServer,
    pub ns: TestNs,
    /// The first three bytes of the /24, e.g. "192.168.79".
    net: String,
}

impl Underlay {
    /// `net` is the /24's first three bytes ("192.168.79"): gateway and etcd on `.1`.
    pub fn new(tag: &str, net: &str) -> Result<Underlay> {
        crate::require_root();
        let ns = TestNs::new(tag)?;
        let gw = format!("{net}.1");
        underlay_bridge(&ns, &gw)?;
        let etcd = EtcdServer::start_in(&ns, gw.parse()?)?;
        Ok(Underlay {
            etcd,
            ns,
            net: net.to_string(),
        })
    }

    /// A host namespace `tag` with `eth0` = `<net>.n/24` on the underlay bridge.
    pub fn host(&self, tag: &str, n: u8) -> Result<ClusterHost> {
        let k = KnitHost::new(tag)?;
        let ip = format!("{}.{n}", self.net);
        underlay_port(&k.ns, &self.ns, tag, &ip)?;
        Ok(ClusterHost {
            name: tag.to_string(),
            underlay: ip.parse()?,
            procs: Procs::default(),
            k,
            etcd: self.etcd.url.clone(),
        })
    }
}

/// The underlay's bridge `ulbr` in `ns`, holding `gw`/24, with a fixed MAC: a bridge without
/// one takes the lowest of its ports', so adding a host could change it and leave the other
/// hosts' neighbour entry of the gateway (etcd) pointing at the old one for up to a minute.
pub fn underlay_bridge(ns: &TestNs, gw: &str) -> Result<()> {
    ns.run(&[
        "ip",
        "link",
        "add",
        "ulbr",
        "address",
        "02:75:6c:00:00:01",
        "type",
        "bridge",
    ])?;
    ns.run(&["ip", "addr", "add", &format!("{gw}/24"), "dev", "ulbr"])?;
    ns.run(&["ip", "link", "set", "ulbr", "up"])?;
    Ok(())
}

/// A host's `eth0` = `ip`/24, its veth peer `ul-<tag>` a port of the underlay's bridge.
pub fn underlay_port(host: &TestNs, underlay: &TestNs, tag: &str, ip: &str) -> Result<()> {
    let peer = format!("ul-{tag}");
    host.run(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        underlay.name(),
    ])?;
    host.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    host.run(&["ip", "link", "set", "eth0", "up"])?;
    underlay.run(&["ip", "link", "set", &peer, "master", "ulbr", "up"])?;
    Ok(())
}

/// One host of the cluster; its daemons die with it.
pub struct ClusterHost {
    pub name: String,
    pub underlay: IpAddr,
    /// The daemons started here (dropped, so killed, before the namespace).
    pub procs: Procs,
    pub k: KnitHost,
    etcd: String,
}

/// The API socket of the agent of host `k` (its `--run-dir` is `run`).
pub fn agent_socket(k: &KnitHost) -> PathBuf {
    k.dir.path().join("run/agent.sock")
}

/// `knit --etcd ETCD agent --host NAME --underlay-ip IP EXTRA..` in host `k`, in the
/// background; waits (up to `wait`) for its API socket. The test lab's hosts and the bench
/// cluster's start their agents here.
pub fn spawn_agent(
    k: &KnitHost,
    etcd: &str,
    name: &str,
    underlay: IpAddr,
    extra: &[&str],
    wait: Duration,
) -> Result<Child> {
    let ip = underlay.to_string();
    let mut args = vec![
        "--etcd",
        etcd,
        "agent",
        "--host",
        name,
        "--underlay-ip",
        &ip,
    ];
    args.extend_from_slice(extra);
    let mut c = k.spawn(&args, "agent.log")?;
    let t = Instant::now();
    while !agent_socket(k).exists() {
        if t.elapsed() > wait {
            let _ = c.kill();
            let _ = c.wait();
            bail!(
                "the agent of {name} did not serve within {wait:?}: {}",
                k.log("agent.log")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(c)
}

/// A container attached through the `knit` CNI plugin.
pub struct Attached {
    pub id: String,
    pub ns: TestNs,
    pub ip: IpAddr,
    pub mac: [u8; 6],
    /// How long the plugin took (exec to exit).
    pub elapsed: Duration,
}

impl ClusterHost {
    /// `knit --etcd URL ARGS` here; its stdout.
    pub fn knit(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["--etcd", &self.etcd];
        v.extend_from_slice(args);
        self.k.knit(&v)
    }

    /// The agent's API socket (what the `knit` plugin's `socket` names).
    pub fn socket(&self) -> PathBuf {
        agent_socket(&self.k)
    }

    /// `knit controller --listen UNDERLAY:port` in the background.
    pub fn start_controller(&mut self, port: u16) -> Result<()> {
        let listen = format!("{}:{port}", self.underlay);
        let c = self.k.spawn(
            &["--etcd", &self.etcd, "controller", "--listen", &listen],
            "controller.log",
        )?;
        self.procs.0.push(c);
        Ok(())
    }

    /// `knit agent --host NAME --underlay-ip IP EXTRA..` in the background; waits (up to
    /// `wait`) for its API socket.
    pub fn start_agent(&mut self, extra: &[&str], wait: Duration) -> Result<()> {
        let c = spawn_agent(&self.k, &self.etcd, &self.name, self.underlay, extra, wait)?;
        self.procs.0.push(c);
        Ok(())
    }

    /// The conflist of the `knit` plugin for `network` through this host's agent.
    pub fn conflist(&self, network: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{"type": "knit", "network": network, "socket": self.socket()}],
        })
    }

    /// CNI ADD of container `id` in `ns` on `network`; its address and MAC from the result.
    pub fn cni_add(&self, network: &str, id: &str, ns: TestNs) -> Result<Attached> {
        let r = Runner::new(crate::knit_dir(), self.k.ns.ns());
        let out = r.add(
            &self.conflist(network),
            &Runtime::new(id, Some(&ns.path()), "eth0"),
        );
        let v = out
            .ok()
            .with_context(|| format!("ADD {id} on {}", self.name))?;
        let (ip, mac) = address_of(v).with_context(|| format!("the result of ADD {id}: {v}"))?;
        Ok(Attached {
            id: id.to_string(),
            ns,
            ip,
            mac,
            elapsed: out.elapsed,
        })
    }

    /// CNI DEL of `c`; how long the plugin took.
    pub fn cni_del(&self, network: &str, c: &Attached) -> Result<Duration> {
        let r = Runner::new(crate::knit_dir(), self.k.ns.ns());
        let out = r.del(
            &self.conflist(network),
            &Runtime::new(&c.id, Some(&c.ns.path()), "eth0"),
            None,
        );
        out.ok()
            .with_context(|| format!("DEL {} on {}", c.id, self.name))?;
        Ok(out.elapsed)
    }
}

/// The first address of a CNI result and the MAC of the interface it is on.
fn address_of(v: &Value) -> Option<(IpAddr, [u8; 6])> {
    let ip = &v["ips"][0];
    let addr = ip["address"].as_str()?;
    let addr: IpAddr = addr.split('/').next()?.parse().ok()?;
    let iface = ip["interface"].as_u64()? as usize;
    let mac = parse_mac(v["interfaces"][iface]["mac"].as_str()?)?;
    Some((addr, mac))
}

/// `aa:bb:cc:dd:ee:ff`
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_and_mac_of_a_cni_result() {
        let v = json!({
            "interfaces": [{"name": "knov1"}, {"name": "eth0", "mac": "0a:58:0a:f6:00:05",
                            "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.246.0.5/16", "interface": 1}],
        });
        assert_eq!(
            address_of(&v),
            Some(("10.246.0.5".parse().unwrap(), [10, 0x58, 10, 0xf6, 0, 5]))
        );
        assert_eq!(address_of(&json!({"ips": []})), None);
        assert_eq!(parse_mac("0a:58:0a:f6:00"), None);
        assert_eq!(parse_mac("0a:58:0a:f6:00:05:01"), None);
        assert_eq!(parse_mac("zz:58:0a:f6:00:05"), None);
    }
}
