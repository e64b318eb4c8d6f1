//! Kernel state of a test's namespaces, rendered as sorted lines with everything random
//! replaced by a role, so the reference plugins and knit's compare equal when they did the same:
//! host veth names become `<host-veth-LABEL>` (found through the container end's peer index),
//! MACs become `<mac>` unless the test fixed them, link-local addresses are left out.
//!
//! What is shown: links (kind, mtu, up, master, hairpin, promisc, alias), configured qdiscs (tbf,
//! ingress, htb with their parameters), addresses, unicast routes of every table (dst, gw, dev,
//! scope, proto, metric, mtu; `table N` unless main), policy rules of both families and
//! selected sysctls.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use anyhow::Result;
use libnet::netlink::link::Link;
use libnet::netlink::route::{Route, RouteScope, RT_TABLE_MAIN};
use libnet::netlink::{rule, Handle};

use crate::topology::TestNs;

/// One container namespace to include: a label for roles, its namespace and interface name.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    pub label: &'a str,
    pub ns: &'a TestNs,
    pub ifname: &'a str,
}

/// What to look at besides links, addresses and routes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// MACs fixed by the test (tuning `mac`, runtimeConfig `mac`): shown as they are.
    pub keep_macs: Vec<String>,
    /// Extra sysctl keys read in every container namespace; `{if}` is the container ifname.
    pub container_sysctls: Vec<String>,
}

/// Sorted, normalised lines per namespace (host first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub sections: Vec<(String, BTreeSet<String>)>,
}

impl Snapshot {
    /// Lines present on one side only, as `-` (self) / `+` (other).
    pub fn diff(&self, other: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let empty = BTreeSet::new();
        let labels: BTreeSet<&String> = self
            .sections
            .iter()
            .chain(other.sections.iter())
            .map(|(l, _)| l)
            .collect();
        for label in labels {
            let a = self.section(label).unwrap_or(&empty);
            let b = other.section(label).unwrap_or(&empty);
            out.extend(a.difference(b).map(|l| format!("{label}: - {l}")));
            out.extend(b.difference(a).map(|l| format!("{label}: + {l}")));
        }
        out
    }

    pub fn section(&self, label: &str) -> Option<&BTreeSet<String>> {
        self.sections
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, lines)| lines)
    }

    /// Every line, prefixed by its section.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (label, lines) in &self.sections {
            for l in lines {
                s.push_str(&format!("{label}: {l}\n"));
            }
        }
        s
    }
}

/// Snapshot the host namespace and the containers.
pub fn snapshot(host: &TestNs, containers: &[Container<'_>], opts: &Options) -> Result<Snapshot> {
    let mut host_roles = HashMap::new();
    let mut sections = Vec::new();
    for c in containers {
        let h = c.ns.handle()?;
        if let Some(link) = h.find_link(c.ifname)? {
            if let Some(peer) = link.peer_index {
                host_roles.insert(peer, format!("<host-veth-{}>", c.label));
            }
        }
    }
    let mut host_lines = render_ns(&host.handle()?, &host_roles, opts)?;
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        host_lines.insert(format!("sysctl {key}={}", show(host.sysctl(key)?)));
    }
    sections.push(("host".to_string(), host_lines));
    for c in containers {
        let mut lines = render_ns(&c.ns.handle()?, &HashMap::new(), opts)?;
        let mut keys = vec![
            "net/ipv4/conf/{if}/arp_notify".to_string(),
            "net/ipv6/conf/{if}/accept_dad".to_string(),
        ];
        keys.extend(opts.container_sysctls.iter().cloned());
        for key in keys {
            let key = key.replace("{if}", c.ifname);
            lines.insert(format!("sysctl {key}={}", show(c.ns.sysctl(&key)?)));
        }
        sections.push((c.label.to_string(), lines));
    }
    Ok(Snapshot { sections })
}

fn show(v: Option<String>) -> String {
    v.unwrap_or_else(|| "<absent>".into())
}

/// Links, addresses and main-table routes of one namespace; links in `roles` get that name.
fn render_ns(h: &Handle, roles: &HashMap<u32, String>, opts: &Options) -> Result<BTreeSet<String>> {
    let links = h.links()?;
    let name_of: HashMap<u32, String> = links
        .iter()
        .map(|l| {
            let role = roles
                .get(&l.index)
                .cloned()
                .unwrap_or_else(|| l.name.clone());
            (l.index, role)
        })
        .collect();
    let dev = |i: u32| name_of.get(&i).cloned().unwrap_or_else(|| format!("#{i}"));
    let mut lines = BTreeSet::new();
    for l in &links {
        lines.insert(render_link(l, &dev, opts));
        // Qdiscs that someone configured (bandwidth's tbf, ingress); the kernel's defaults
        // (noqueue, pfifo_fast, ...) say nothing about the plugins.
        for q in h.qdiscs(l.index)? {
            if matches!(q.kind.as_str(), "tbf" | "ingress" | "htb") {
                let tbf = q
                    .tbf
                    .map(|t| format!(" rate={} limit={} buffer={}", t.rate, t.limit, t.buffer))
                    .unwrap_or_default();
                lines.insert(format!(
                    "qdisc {} {} handle={:x} parent={:x}{tbf}",
                    dev(l.index),
                    q.kind,
                    q.handle,
                    q.parent
                ));
            }
        }
    }
    for a in h.addrs(0)? {
        if !is_link_local(a.net.addr()) {
            lines.insert(format!("addr {} {}", dev(a.index), a.net));
        }
    }
    for v6 in [false, true] {
        for r in h.routes(v6)? {
            lines.insert(render_route(&r, &dev));
        }
        let family = if v6 { "v6" } else { "v4" };
        for r in h.rules(v6)? {
            lines.insert(format!("rule {family} {}", rule::describe(&r)));
        }
    }
    Ok(lines)
}

fn render_link(l: &Link, dev: &dyn Fn(u32) -> String, opts: &Options) -> String {
    let mac = l.mac_string();
    let mac = if opts.keep_macs.iter().any(|m| m.eq_ignore_ascii_case(&mac)) || l.name == "lo" {
        mac
    } else {
        "<mac>".into()
    };
    let mut s = format!(
        "link {} kind={} mtu={} {} mac={mac}",
        dev(l.index),
        l.kind.as_deref().unwrap_or("-"),
        l.mtu,
        if l.is_up() { "up" } else { "down" },
    );
    if let Some(m) = l.master {
        s.push_str(&format!(" master={}", dev(m)));
    }
    if let Some(h) = l.hairpin {
        s.push_str(&format!(" hairpin={}", if h { "on" } else { "off" }));
    }
    if l.is_promisc() {
        s.push_str(" promisc");
    }
    if let Some(a) = &l.alias {
        s.push_str(&format!(" alias={a}"));
    }
    s
}

fn render_route(r: &Route, dev: &dyn Fn(u32) -> String) -> String {
    let mut s = format!("route {}", r.dst);
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {}", dev(oif)));
    }
    let scope = match r.scope {
        RouteScope::Universe => "global",
        RouteScope::Link => "link",
        RouteScope::Host => "host",
    };
    s.push_str(&format!(" scope {scope} proto {}", proto_name(r.protocol)));
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    if let Some(m) = r.mtu {
        s.push_str(&format!(" mtu {m}"));
    }
    if let Some(src) = r.src {
        s.push_str(&format!(" src {src}"));
    }
    if r.table != RT_TABLE_MAIN {
        s.push_str(&format!(" table {}", r.table));
    }
    s
}

fn proto_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        n => n.to_string(),
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Host links that are veths (what must be gone after DEL).
pub fn veths(ns: &TestNs) -> Result<Vec<String>> {
    Ok(ns
        .handle()?
        .links()?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .map(|l| l.name)
        .collect())
}
