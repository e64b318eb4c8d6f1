//! `portmap`: the `portMappings` capability as DNAT through knit's nftables table (elements of
//! shared maps, so the 1,000th mapping costs what the first did), with SNAT for connections from
//! localhost (`route_localnet` on the host-side interfaces) and hairpin masquerade, like the
//! reference `plugins/meta/portmap`. A chained plugin: it passes `prevResult` on.

use std::net::IpAddr;

use libnet::nft::{route_localnet_key, PortMapping, RawPortMapping};
use libnet::sysctl;
use serde::Deserialize;

use crate::masq::attachment;
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::CniResult;

pub struct Portmap;

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default, rename = "portMappings")]
    port_mappings: Vec<RawPortMapping>,
}

#[derive(Debug, Deserialize)]
struct Conf {
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
}

struct Loaded {
    maps: Vec<PortMapping>,
    snat: bool,
}

fn load(a: &Args) -> Result<Loaded, CniError> {
    let c: Conf = a.parse()?;
    let maps = c
        .runtime_config
        .unwrap_or_default()
        .port_mappings
        .iter()
        .map(|m| m.validate().cni_ctx("portmap"))
        .collect::<Result<_, _>>()?;
    Ok(Loaded {
        maps,
        snat: c.snat.unwrap_or(true),
    })
}

/// The container's addresses: those on interfaces inside a sandbox (all, when none says).
fn container_ips(prev: &CniResult) -> Vec<IpAddr> {
    prev.ips
        .iter()
        .filter(|ip| {
            ip.interface
                .and_then(|i| prev.interfaces.get(i))
                .is_none_or(|iface| !iface.sandbox.is_empty())
        })
        .map(|ip| ip.address.addr())
        .collect()
}

fn prev(a: &Args) -> Result<CniResult, CniError> {
    a.prev_result()?
        .ok_or_else(|| CniError::config("portmap: required prevResult missing"))
}

impl Plugin for Portmap {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let l = load(a)?;
        let prev = prev(a)?;
        if l.maps.is_empty() {
            return Ok(prev);
        }
        let ips = container_ips(&prev);
        if l.snat && ips.iter().any(IpAddr::is_ipv4) {
            // Let 127.0.0.0/8 be routed out of the host-side interfaces once DNATed.
            for iface in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
                sysctl::set(&route_localnet_key(&iface.name), "1")
                    .cni_ctx("portmap: enabling route_localnet")?;
            }
        }
        a.nft()
            .ensure_portmap(&attachment(a), &l.maps, &ips)
            .cni_ctx("portmap")?;
        Ok(prev)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        load(a)?;
        a.nft().del_portmap(&attachment(a)).cni_ctx("portmap")
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let l = load(a)?;
        let prev = prev(a)?;
        if l.maps.is_empty() {
            return Ok(());
        }
        a.nft()
            .check_portmap(&attachment(a), &l.maps, &container_ips(&prev))
            .cni_ctx("portmap")
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        crate::masq::gc(a)
    }
}
