//! `knit topology`: the cluster as etcd holds it — hosts (underlay IP, VTEP MAC), networks
//! (driver, VNI, subnets), each host's IPAM blocks and endpoints — as text, or as Graphviz DOT
//! (`dot -Tsvg` draws it).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use store::etcd::{Block, Host};
use store::{Endpoint, EtcdStore, Network, Store};

#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// Print Graphviz DOT instead of text.
    #[arg(long, conflicts_with = "svg")]
    pub dot: bool,
    /// Write an SVG drawing to this file (needs Graphviz's `dot`).
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}

/// `knit topology`.
pub fn show(st: &EtcdStore, a: &TopologyArgs) -> Result<()> {
    let snap = load(st)?;
    if let Some(path) = &a.svg {
        let mut child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg("-o")
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running Graphviz's dot (apt install graphviz), or use --dot")?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("dot's stdin")?
            .write_all(dot(&snap).as_bytes())?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "dot failed: {status}");
        println!("{}", path.display());
    } else if a.dot {
        print!("{}", dot(&snap));
    } else {
        print!("{}", text(&snap));
    }
    Ok(())
}

/// What the topology shows, read once.
pub struct Snapshot {
    pub hosts: Vec<Host>,
    pub networks: Vec<NetView>,
}

pub struct NetView {
    pub net: Network,
    pub vni: Option<u32>,
    pub blocks: Vec<Block>,
    pub endpoints: Vec<Endpoint>,
}

pub fn load(st: &EtcdStore) -> Result<Snapshot> {
    let mut hosts = st.hosts()?;
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut networks = Vec::new();
    for net in st.list_networks()? {
        networks.push(NetView {
            vni: st.vni(&net.id)?,
            blocks: st.blocks(&net.id)?,
            endpoints: st.network_endpoints(&net.id)?,
            net,
        });
    }
    Ok(Snapshot { hosts, networks })
}

fn addrs(e: &Endpoint) -> String {
    [e.ipv4, e.ipv6]
        .iter()
        .flatten()
        .map(|a| a.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn subnets(n: &Network) -> String {
    n.ipam
        .iter()
        .map(|p| p.subnet.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn name_of(e: &Endpoint) -> &str {
    if e.name.is_empty() {
        &e.id[..12.min(e.id.len())]
    } else {
        &e.name
    }
}

/// Hosts, each with its networks' blocks and endpoints; then what lives on no registered host.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "networks:");
    for v in &s.networks {
        let vni = v.vni.map(|n| format!(" vni {n}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} ({}{vni}) {}",
            v.net.name,
            v.net.driver,
            subnets(&v.net)
        );
    }
    let _ = writeln!(out, "hosts:");
    for h in &s.hosts {
        let _ = writeln!(
            out,
            "  {} underlay {} vtep {}",
            h.name, h.underlay_ip, h.vtep_mac
        );
        for v in &s.networks {
            let blocks: Vec<String> = v
                .blocks
                .iter()
                .filter(|b| b.host == h.name)
                .map(|b| b.cidr.to_string())
                .collect();
            let eps: Vec<&Endpoint> = v.endpoints.iter().filter(|e| e.host == h.name).collect();
            if blocks.is_empty() && eps.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "    {} blocks {}",
                v.net.name,
                if blocks.is_empty() {
                    "-".to_string()
                } else {
                    blocks.join(",")
                }
            );
            for e in eps {
                let _ = writeln!(out, "      {} {} {}", name_of(e), addrs(e), e.mac);
            }
        }
    }
    let orphans: Vec<(&NetView, &Endpoint)> = s
        .networks
        .iter()
        .flat_map(|v| v.endpoints.iter().map(move |e| (v, e)))
        .filter(|(_, e)| !s.hosts.iter().any(|h| h.name == e.host))
        .collect();
    if !orphans.is_empty() {
        let _ = writeln!(out, "endpoints on no live host:");
        for (v, e) in orphans {
            let host = if e.host.is_empty() { "-" } else { &e.host };
            let _ = writeln!(
                out,
                "  {} {} {} (host {host})",
                v.net.name,
                name_of(e),
                addrs(e)
            );
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz: a cluster per host holding its endpoints, a node per network, an edge from each
/// endpoint to its network and from each host's VTEP to every overlay network it carries.
pub fn dot(s: &Snapshot) -> String {
    let mut out = String::from("graph knit {\n  rankdir=LR;\n  node [fontname=\"sans\"];\n");
    for v in &s.networks {
        let vni = v.vni.map(|n| format!("\\nvni {n}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label={}];",
            quote(&format!("net:{}", v.net.id)),
            quote(&format!(
                "{} ({}){vni}\\n{}",
                v.net.name,
                v.net.driver,
                subnets(&v.net)
            ))
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{i} {{\n    label={};",
            quote(&format!("{} ({})", h.name, h.underlay_ip))
        );
        let vtep = format!("vtep:{}", h.name);
        let _ = writeln!(
            out,
            "    {} [shape=box, label={}];",
            quote(&vtep),
            quote(&format!("VTEP {}\\n{}", h.underlay_ip, h.vtep_mac))
        );
        for v in &s.networks {
            for e in v.endpoints.iter().filter(|e| e.host == h.name) {
                let _ = writeln!(
                    out,
                    "    {} [shape=note, label={}];",
                    quote(&format!("ep:{}", e.id)),
                    quote(&format!("{}\\n{}", name_of(e), addrs(e)))
                );
            }
        }
        out.push_str("  }\n");
        for v in &s.networks {
            let carries = v.blocks.iter().any(|b| b.host == h.name)
                || v.endpoints.iter().any(|e| e.host == h.name);
            if carries && v.vni.is_some() {
                let _ = writeln!(
                    out,
                    "  {} -- {} [style=dashed];",
                    quote(&vtep),
                    quote(&format!("net:{}", v.net.id))
                );
            }
        }
    }
    for v in &s.networks {
        for e in &v.endpoints {
            let _ = writeln!(
                out,
                "  {} -- {};",
                quote(&format!("ep:{}", e.id)),
                quote(&format!("net:{}", v.net.id))
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Driver, Pool};

    fn snapshot() -> Snapshot {
        let mut net = Network::new("ov", Driver::Overlay);
        net.ipam.push(Pool::new("10.250.0.0/16".parse().unwrap()));
        let host = |name: &str, ip: &str| Host {
            name: name.into(),
            underlay_ip: ip.parse().unwrap(),
            vtep_mac: "06:00:00:00:00:01".into(),
        };
        let mut e1 = Endpoint::new(net.id.clone());
        e1.name = "c1".into();
        e1.host = "h1".into();
        e1.ipv4 = Some("10.250.0.2/16".parse().unwrap());
        let mut e2 = Endpoint::new(net.id.clone());
        e2.name = "gone".into();
        e2.host = "h9".into();
        e2.ipv4 = Some("10.250.1.2/16".parse().unwrap());
        Snapshot {
            hosts: vec![host("h1", "192.168.77.11"), host("h2", "192.168.77.12")],
            networks: vec![NetView {
                vni: Some(4096),
                blocks: vec![Block {
                    network_id: net.id.clone(),
                    cidr: "10.250.0.0/26".parse().unwrap(),
                    host: "h1".into(),
                }],
                endpoints: vec![e1, e2],
                net,
            }],
        }
    }

    #[test]
    fn text_lists_hosts_blocks_endpoints_and_strays() {
        let t = text(&snapshot());
        for want in [
            "ov (overlay vni 4096) 10.250.0.0/16",
            "h1 underlay 192.168.77.11",
            "ov blocks 10.250.0.0/26",
            "c1 10.250.0.2",
            "h2 underlay 192.168.77.12",
            "endpoints on no live host:",
            "gone 10.250.1.2 (host h9)",
        ] {
            assert!(t.contains(want), "{want:?} missing in:\n{t}");
        }
    }

    #[test]
    fn dot_is_one_graph_with_quoted_ids() {
        let d = dot(&snapshot());
        assert!(d.starts_with("graph knit {") && d.ends_with("}\n"), "{d}");
        assert_eq!(d.matches("subgraph cluster_").count(), 2);
        assert!(d.contains("\"vtep:h1\" -- \"net:"), "{d}");
        assert!(!d.contains("\"vtep:h2\" -- "), "h2 carries nothing: {d}");
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }
}
