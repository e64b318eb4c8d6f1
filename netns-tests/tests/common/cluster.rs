//! A real cluster on the lab of [`super::overlay_lab`] (overlay.rs, overlay_recovery.rs): real
//! `knit controller` replicas, agents, containers attached through the `knit` CNI plugin, and
//! what the tests ask of it (ping, the leader, the FDB/neighbour/route entries an agent owns).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netns_tests::cni::{Runner, Runtime};
use netns_tests::topology::TestNs;
use serde_json::{json, Value};

use crate::overlay_lab::{network_id_vni, Host, Lab, PREFIX};

/// The port every controller replica listens on (on its host's underlay address).
pub const CTL_PORT: u16 = 7471;

/// The conflist of a container named `name` on network `net` (registered for DNS).
pub fn conflist(h: &Host, net: &str, name: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{"type": "knit", "network": net, "socket": h.socket(),
                     "args": {"cni": {"name": name, "labels": {"app": "demo"}}}}],
    })
}

/// A container namespace attached to `net` on `h` through the CNI plugin: (namespace, its
/// address).
pub fn add(h: &Host, net: &str, tag: &str) -> Result<(TestNs, IpAddr)> {
    let c = TestNs::new(tag)?;
    let r = Runner::new(netns_tests::knit_dir(), h.k.ns.ns());
    let res = r.add(
        &conflist(h, net, tag),
        &Runtime::new(tag, Some(&c.path()), "eth0"),
    );
    let v = res
        .ok()
        .with_context(|| format!("ADD {tag} on {}", h.name))?
        .clone();
    let addr: ipnet::IpNet = v["ips"][0]["address"]
        .as_str()
        .context("no address in the result")?
        .parse()?;
    Ok((c, addr.addr()))
}

pub fn del(h: &Host, net: &str, tag: &str, c: &TestNs) -> Result<()> {
    let r = Runner::new(netns_tests::knit_dir(), h.k.ns.ns());
    r.del(
        &conflist(h, net, tag),
        &Runtime::new(tag, Some(&c.path()), "eth0"),
        None,
    )
    .ok()
    .with_context(|| format!("DEL {tag} on {}", h.name))?;
    Ok(())
}

pub fn pings(from: &TestNs, to: IpAddr) -> bool {
    from.run(&["ping", "-c1", "-W1", &to.to_string()])
        .is_ok_and(|o| o.status.success())
}

/// Wait up to `secs` for `f`.
pub fn within(secs: u64, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    loop {
        if f()? {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A controller replica in host `h`, listening on its underlay address.
pub fn controller(h: &Host, etcd: &str) -> Result<Child> {
    controller_with(h, etcd, &[])
}

/// [`controller`] with more flags of `knit controller`.
pub fn controller_with(h: &Host, etcd: &str, extra: &[&str]) -> Result<Child> {
    let listen = format!("{}:{CTL_PORT}", h.underlay);
    let mut args = vec!["--etcd", etcd, "controller", "--listen", &listen];
    args.extend_from_slice(extra);
    h.k.spawn(&args, "controller.log")
}

/// The leader key's value (`IP:PORT` of the leading replica), if one leads.
pub fn leader(lab: &Lab) -> Result<Option<String>> {
    Ok(lab
        .etcd_get_prefix(&format!("{PREFIX}/controller/leader"))?
        .first()
        .map(|(_, v)| v.clone()))
}

/// The FDB entries of the overlay's vxlan device and the neighbour entries of its bridge.
pub fn tables(h: &Host, vni: u32) -> Result<String> {
    h.sh(&format!(
        "bridge fdb show dev {}; ip neigh show dev {}",
        overlay_vxlan::vxlan_name(vni),
        overlay_vxlan::bridge_name(vni)
    ))
}

/// The MAC knit gives the endpoint at `ip`, as `bridge` and `ip` print it.
pub fn mac_of(ip: IpAddr) -> String {
    overlay_vxlan::Mac(overlay_vxlan::endpoint_mac(ip)).to_string()
}

/// What an agent owns in its host for one network: vxlan remotes (MAC, destination),
/// permanent neighbours on the bridge (IP, MAC), and knit's overlay routes (block, via).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    pub fdb: BTreeSet<(String, IpAddr)>,
    pub neigh: BTreeSet<(IpAddr, String)>,
    pub routes: BTreeSet<(ipnet::IpNet, IpAddr)>,
}

/// The entries of network `vni` in `h`, read from the kernel (missing links read as none).
pub fn entries(h: &Host, vni: u32) -> Result<Entries> {
    let (vx, br) = (
        overlay_vxlan::vxlan_name(vni),
        overlay_vxlan::bridge_name(vni),
    );
    let mut e = Entries::default();
    let fdb = h.sh(&format!("bridge fdb show dev {vx} 2>/dev/null || true"))?;
    for l in fdb.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let Some(i) = w.iter().position(|t| *t == "dst") {
            let dst = w.get(i + 1).context("dst without address")?.parse()?;
            e.fdb.insert((w[0].to_string(), dst));
        }
    }
    let neigh = h.sh(&format!("ip neigh show dev {br} 2>/dev/null || true"))?;
    for l in neigh.lines().filter(|l| l.contains("PERMANENT")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w
            .iter()
            .position(|t| *t == "lladdr")
            .context(l.to_string())?;
        e.neigh.insert((w[0].parse()?, w[i + 1].to_string()));
    }
    let routes = h.sh(&format!(
        "ip route show proto {}",
        overlay_vxlan::RTPROT_KNIT_OVERLAY
    ))?;
    for l in routes.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w.iter().position(|t| *t == "via").context(l.to_string())?;
        e.routes.insert((w[0].parse()?, w[i + 1].parse()?));
    }
    Ok(e)
}

/// What a host of a VXLAN-mode network must hold: a flood entry per other registered host
/// and, per container on another host (its address, its host's underlay IP), its MAC towards
/// that host and its neighbour entry. No route.
pub fn vxlan_wanted(hosts: &[IpAddr], containers: &[(IpAddr, IpAddr)]) -> Entries {
    let mut e = Entries::default();
    for h in hosts {
        e.fdb.insert(("00:00:00:00:00:00".into(), *h));
    }
    for (ip, h) in containers {
        e.fdb.insert((mac_of(*ip), *h));
        e.neigh.insert((*ip, mac_of(*ip)));
    }
    e
}

/// Waits up to `secs` for the entries of `vni` in `h` to equal `want` exactly.
pub fn converges(h: &Host, vni: u32, want: &Entries, secs: u64) -> Result<()> {
    let t = Instant::now();
    loop {
        let got = entries(h, vni)?;
        if &got == want {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(secs) {
            bail!(
                "{}'s entries did not converge within {secs} s\n got: {got:#?}\nwant: {want:#?}",
                h.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every host's name registered in etcd now.
pub fn registered(lab: &Lab) -> Result<Vec<String>> {
    Ok(lab
        .etcd_get_prefix(&format!("{PREFIX}/hosts/"))?
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap_or_default().to_string())
        .collect())
}

/// A lab with `hosts` (tag, last byte of the underlay IP), an overlay network `net` created
/// with `create` (the flags after `--driver overlay`), `controllers` replicas on the first
/// hosts (one leads; `ctl_args`: more flags for them) and an agent on every host in `agents`.
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub ctls: Procs,
    pub net: String,
    pub vni: u32,
    pub lab: Lab,
}

impl Cluster {
    pub fn new(
        hosts: &[(&str, u8)],
        controllers: usize,
        ctl_args: &[&str],
        net: &str,
        create: &[&str],
        agents: &[usize],
    ) -> Result<Cluster> {
        let lab = Lab::new()?;
        let hosts = hosts
            .iter()
            .map(|(t, n)| lab.host(t, *n))
            .collect::<Result<Vec<_>>>()?;
        let mut args = vec!["network", "create", "--driver", "overlay"];
        args.extend_from_slice(create);
        args.push(net);
        hosts[0].knit(&args)?;
        let (_, vni) = network_id_vni(&hosts[0], net)?;
        let mut ctls = Procs(Vec::new());
        for h in &hosts[..controllers] {
            ctls.0.push(controller_with(h, &lab.etcd.url, ctl_args)?);
        }
        let mut c = Cluster {
            hosts,
            ctls,
            net: net.to_string(),
            vni,
            lab,
        };
        within(10, "a controller leads", || Ok(leader(&c.lab)?.is_some()))?;
        for i in agents {
            c.hosts[*i].start_agent()?;
        }
        Ok(c)
    }

    /// A container on host `i` through CNI.
    pub fn add(&self, i: usize, tag: &str) -> Result<(TestNs, IpAddr)> {
        add(&self.hosts[i], &self.net, tag)
    }

    pub fn del(&self, i: usize, tag: &str, c: &TestNs) -> Result<()> {
        del(&self.hosts[i], &self.net, tag, c)
    }

    /// Waits until exactly the hosts named are registered.
    pub fn registered_are(&self, names: &[&str], secs: u64) -> Result<()> {
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        within(secs, &format!("registered hosts become {want:?}"), || {
            Ok(registered(&self.lab)? == want)
        })
    }
}

/// Processes killed on every way out of the test.
pub use netns_tests::cluster::Procs;
