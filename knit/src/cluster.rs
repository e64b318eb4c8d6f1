//! `knit network ...` with `--etcd`: the network model lives in the cluster's etcd
//! ([`store::EtcdStore`]), and networks are overlays that span hosts. The CLI only writes
//! records: the bridge, the vxlan device and the forwarding entries of an overlay network are
//! made on each host by its agent, from what the controller computes.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use store::{Driver, EtcdStore, Network, Store};

use crate::cli::{CreateArgs, Format, NetworkCmd};
use crate::network::inspect_json;

/// The option naming how an overlay crosses hosts: `vxlan` (default) or `routed`.
pub const MODE: &str = "mode";

/// Opens the cluster's store (lazily connected: an unreachable etcd is reported by the first
/// call, naming the URL).
pub fn open(urls: &[String], prefix: &str) -> Result<EtcdStore> {
    EtcdStore::connect(urls, prefix)
        .with_context(|| format!("connecting to etcd {}", urls.join(",")))
}

/// The network commands on etcd.
pub fn network(st: &EtcdStore, cmd: &NetworkCmd, format: Format) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => println!("{}", create(st, a)?.id),
        NetworkCmd::Ls => print!("{}", crate::network::ls(st, format)?),
        NetworkCmd::Inspect { names } => print!("{}", inspect(st, names)?),
        NetworkCmd::Rm { names } => crate::rm_each(names, |n| {
            n.iter()
                .map(|n| {
                    st.delete_network(n)
                        .map(|net| net.name)
                        .with_context(|| format!("removing network {n:?}"))
                })
                .collect()
        })?,
        NetworkCmd::Connect { .. } | NetworkCmd::Disconnect { .. } => bail!(
            "network connect/disconnect work on this host's sandboxes, not with --etcd \
             (attach containers to an overlay network through the `knit` CNI plugin)"
        ),
    }
    Ok(())
}

/// The overlay network record `create` stores: checks what the store cannot (the driver, the
/// mode, which flags go together).
pub fn build_overlay(a: &CreateArgs) -> Result<Network> {
    if Driver::from(a.driver.clone()) != Driver::Overlay {
        bail!(
            "with --etcd only overlay networks are made (--driver overlay), not {:?}: a \
             bridge or macvlan network is one host's (create it without --etcd)",
            a.driver
        );
    }
    if a.subnet.is_empty() {
        bail!("an overlay network needs --subnet (its hosts take blocks of it)");
    }
    if !a.ip_range.is_empty() {
        bail!("--ip-range is not supported on overlay networks (hosts take blocks of the subnet)");
    }
    let net = crate::network::record(a, Driver::Overlay)?;
    check_mode(&net)?;
    store::validate::validate_network(&net).with_context(|| format!("network {:?}", a.name))?;
    Ok(net)
}

/// An overlay's `mode` option: `vxlan` (the default) or `routed`, which is IPv4 only.
pub fn check_mode(net: &Network) -> Result<()> {
    match net.options.get(MODE).map(String::as_str) {
        None | Some("vxlan") => Ok(()),
        Some("routed") => {
            if net.ipam.iter().any(|p| p.subnet.addr().is_ipv6()) {
                bail!("-o mode=routed is IPv4 only (use the default vxlan mode for IPv6)");
            }
            Ok(())
        }
        Some(other) => bail!("-o mode={other:?}: an overlay's mode is \"vxlan\" or \"routed\""),
    }
}

/// `knit network create --etcd URL --driver overlay ...`: the record (the store refuses a
/// taken name or an overlapping subnet), then its VNI; when no VNI can be had the record goes
/// again, so a refused create leaves nothing.
pub fn create(st: &EtcdStore, a: &CreateArgs) -> Result<Network> {
    let net = build_overlay(a)?;
    store_overlay(st, &net)?;
    Ok(net)
}

/// An overlay network's record, then its VNI; when no VNI can be had the record goes again,
/// so a refused create leaves nothing (the CLI's create and Docker's CreateNetwork).
pub fn store_overlay(st: &EtcdStore, net: &Network) -> Result<()> {
    st.create_network(net)
        .with_context(|| format!("creating network {:?}", net.name))?;
    if let Err(e) = st.allocate_vni(&net.id) {
        if let Err(u) = st.delete_network(&net.id) {
            eprintln!(
                "knit: rolling back: could not remove network {:?}: {u}",
                net.name
            );
        }
        return Err(e).with_context(|| format!("allocating a VNI for network {:?}", net.name));
    }
    Ok(())
}

/// `knit network inspect` on etcd: Docker's shape plus the network's `VNI`.
pub fn inspect(st: &EtcdStore, names: &[String]) -> Result<String> {
    let mut out = Vec::new();
    for n in names {
        let net = st.network(n)?;
        let eps = st
            .network_endpoints(&net.id)
            .with_context(|| format!("listing the endpoints of network {:?}", net.name))?;
        let mut v = inspect_json(&net, &eps, &|_| None);
        if let Value::Object(m) = &mut v {
            let vni = st
                .vni(&net.id)
                .with_context(|| format!("reading the VNI of network {:?}", net.name))?;
            m.insert("Scope".into(), "global".into());
            m.insert("VNI".into(), vni.into());
        }
        out.push(v);
    }
    Ok(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> CreateArgs {
        let mut v = vec!["knit", "network", "create"];
        v.extend_from_slice(extra);
        let c = crate::cli::Cli::try_parse_from(v).unwrap();
        match c.command {
            crate::cli::Command::Network(NetworkCmd::Create(a)) => a,
            _ => panic!("not network create"),
        }
    }

    #[test]
    fn overlay_networks_need_the_driver_a_subnet_and_a_known_mode() {
        let n =
            build_overlay(&args(&["-d", "overlay", "--subnet", "10.244.0.0/16", "ov"])).unwrap();
        assert_eq!(n.driver, Driver::Overlay);
        assert_eq!(n.ipam[0].gateway, Some("10.244.0.1".parse().unwrap()));
        let r = build_overlay(&args(&[
            "-d",
            "overlay",
            "--subnet",
            "10.245.0.0/16",
            "-o",
            "mode=routed",
            "ov",
        ]))
        .unwrap();
        assert_eq!(r.options.get(MODE).map(String::as_str), Some("routed"));
        for bad in [
            &["--subnet", "10.244.0.0/16", "ov"][..],
            &["-d", "overlay", "ov"],
            &[
                "-d",
                "overlay",
                "--subnet",
                "10.244.0.0/16",
                "-o",
                "mode=l3",
                "ov",
            ],
            &[
                "-d",
                "overlay",
                "--subnet",
                "10.244.0.0/16",
                "--ip-range",
                "10.244.1.0/24",
                "ov",
            ],
            &[
                "-d",
                "overlay",
                "--ipv6",
                "--subnet",
                "fd00::/64",
                "-o",
                "mode=routed",
                "ov",
            ],
        ] {
            assert!(build_overlay(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
