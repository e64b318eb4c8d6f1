//! `knit endpoint add|rm|ls`: endpoints that knit did not attach (an orchestrator's, a VM's, a
//! host's), registered so that knit's DNS answers their names. Their address is reserved in the
//! network's host-local IPAM under the endpoint's id, so no sandbox or container gets it.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use libnet::ipam::{self, store::IpamStore, store::LockedStore, FileStore};
use store::{Endpoint, Store};

use crate::attach::ipam_config;
use crate::network::ipam_dir_name;
use crate::sandbox::Dirs;
use crate::table;

/// Marks an endpoint registered by `knit endpoint add`.
pub const EXTERNAL: &str = "io.knit.external";
/// The interface name its reservation is held under.
const IFNAME: &str = "ext";

pub struct AddArgs<'a> {
    pub network: &'a str,
    pub name: &'a str,
    pub ip: IpAddr,
    pub aliases: &'a [String],
    pub labels: &'a [(String, String)],
}

/// Reserve the address, then record the endpoint; if the record is refused (a name or an
/// address taken) the reservation goes again.
pub fn add(st: &dyn Store, dirs: &Dirs, a: &AddArgs<'_>) -> Result<Endpoint> {
    let net = st.network(a.network)?;
    let Some(pool) = net.ipam.iter().find(|p| p.subnet.contains(&a.ip)) else {
        bail!("{} is in no subnet of network {:?}", a.ip, net.name);
    };
    let mut ep = Endpoint::new(net.id.clone());
    ep.name = a.name.to_string();
    ep.aliases = a.aliases.to_vec();
    ep.labels = a.labels.iter().cloned().collect();
    ep.labels.insert(EXTERNAL.into(), "true".into());
    let addr = IpNet::new(a.ip, pool.subnet.prefix_len())?;
    if a.ip.is_ipv4() {
        ep.ipv4 = Some(addr);
    } else {
        ep.ipv6 = Some(addr);
    }
    store::validate::validate_endpoint(&ep, &net)
        .with_context(|| format!("endpoint {:?}", a.name))?;
    if let Some(other) = st
        .network_endpoints(&net.id)?
        .into_iter()
        .find(|e| e.name == a.name)
    {
        bail!(
            "network {:?} already has an endpoint named {:?} ({})",
            net.name,
            a.name,
            other.id
        );
    }
    let cfg = ipam_config(&net, &dirs.cni_data_dir)?;
    let mut fs = FileStore::open(&dirs.cni_data_dir, ipam_dir_name(&net))?;
    crate::attach::without_flush(&mut fs);
    ipam::allocate(&mut fs, &cfg, &ep.id, IFNAME, &[a.ip])
        .with_context(|| format!("reserving {} on network {:?}", a.ip, net.name))?;
    if let Err(e) = st.put_endpoint(&ep) {
        if let Err(u) = ipam::release(&mut fs, &ep.id, IFNAME) {
            eprintln!("knit: rolling back: could not release {}: {u}", a.ip);
        }
        return Err(e).with_context(|| format!("recording endpoint {:?}", a.name));
    }
    crate::service::sync_after_change(st, dirs, &net.id);
    Ok(ep)
}

/// Remove an endpoint made by `add`: the record, then the reservation.
pub fn rm(st: &dyn Store, dirs: &Dirs, network: &str, name: &str) -> Result<()> {
    let net = st.network(network)?;
    let Some(ep) = st
        .network_endpoints(&net.id)?
        .into_iter()
        .find(|e| e.name == name)
    else {
        bail!("network {:?} has no endpoint named {name:?}", net.name);
    };
    if !ep.labels.contains_key(EXTERNAL) {
        bail!(
            "endpoint {name:?} on {:?} was attached by knit: remove its sandbox or container instead",
            net.name
        );
    }
    st.delete_endpoint(&ep.id)
        .with_context(|| format!("removing endpoint {name:?}"))?;
    let mut fs = FileStore::open(&dirs.cni_data_dir, ipam_dir_name(&net))?;
    let mut l = fs.lock()?;
    l.release_owner(&ep.id, IFNAME)
        .with_context(|| format!("releasing the address of {name:?}"))?;
    l.unlock()?;
    crate::service::sync_after_change(st, dirs, &net.id);
    Ok(())
}

/// `knit endpoint ls`.
pub fn ls(st: &dyn Store, network: Option<&str>) -> Result<String> {
    let nets = match network {
        Some(n) => vec![st.network(n)?],
        None => st.list_networks()?,
    };
    let mut rows = Vec::new();
    for n in &nets {
        for e in st.network_endpoints(&n.id)? {
            let ips: Vec<String> = [e.ipv4, e.ipv6]
                .iter()
                .flatten()
                .map(|a| a.to_string())
                .collect();
            let kind = if e.labels.contains_key(EXTERNAL) {
                "registered"
            } else {
                "attached"
            };
            rows.push(vec![
                n.name.clone(),
                e.name.clone(),
                ips.join(","),
                e.aliases.join(","),
                kind.to_string(),
            ]);
        }
    }
    Ok(table::render(
        &["NETWORK", "NAME", "ADDRESS", "ALIASES", "KIND"],
        rows,
    ))
}
