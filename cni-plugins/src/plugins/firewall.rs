//! `firewall`: lets the container's traffic through forward filtering (from it, and established
//! or related traffic to it) and, with `ingressPolicy: same-bridge`, isolates it from other
//! bridges, like the reference `plugins/meta/firewall` iptables backend — as elements of knit's
//! nftables table. A chained plugin: it passes `prevResult` on.

use std::net::IpAddr;

use libnet::nft::IngressPolicy;
use serde::Deserialize;

use crate::masq::attachment;
use crate::skel::{Args, CniError, OrCni, Plugin, ERR_UNSUPPORTED_FIELD};
use crate::types::CniResult;

pub struct Firewall;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    backend: String,
    #[serde(default)]
    ingress_policy: String,
}

fn load(a: &Args) -> Result<IngressPolicy, CniError> {
    let c: Conf = a.parse()?;
    match c.backend.as_str() {
        "" | "iptables" | "nftables" => {}
        "firewalld" => {
            return Err(CniError::new(
                ERR_UNSUPPORTED_FIELD,
                "firewall: the firewalld backend is not supported by knit",
            ))
        }
        other => {
            return Err(CniError::config(format!(
                "firewall: unknown backend {other:?}"
            )))
        }
    }
    IngressPolicy::parse(&c.ingress_policy).cni_ctx("firewall")
}

struct Target {
    bridge: String,
    ips: Vec<IpAddr>,
}

/// The container's addresses and the host-side interface they hang off (the bridge).
fn target(a: &Args) -> Result<(CniResult, Target), CniError> {
    let prev = a
        .prev_result()?
        .ok_or_else(|| CniError::config("firewall: required prevResult missing"))?;
    let bridge = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty())
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let ips = prev.ips.iter().map(|ip| ip.address.addr()).collect();
    Ok((prev, Target { bridge, ips }))
}

impl Plugin for Firewall {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let policy = load(a)?;
        let (prev, t) = target(a)?;
        a.nft()
            .ensure_firewall(&attachment(a), &t.bridge, &t.ips, policy)
            .cni_ctx("firewall")?;
        Ok(prev)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        load(a)?;
        a.nft().del_firewall(&attachment(a)).cni_ctx("firewall")
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let policy = load(a)?;
        let (_, t) = target(a)?;
        a.nft()
            .check_firewall(&attachment(a), &t.bridge, &t.ips, policy)
            .cni_ctx("firewall")
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        crate::masq::gc(a)
    }
}
