//! The repair pass: desired state from the store, observed state from the kernel over objects
//! that are knit's, the difference applied. It runs before the agent serves and then
//! periodically, so a `kill -9` at any point of a call, or a firewall reload that dropped
//! knit's nftables table, heals without Docker's help.
//!
//! - every bridge network has its bridge, with its gateways once it has endpoints, and its
//!   services programmed (VIP, balancing over the endpoints their selectors pick);
//! - (Docker's endpoints only, labelled `io.knit.docker`; the CLI repairs its own)
//! - a Docker endpoint whose veth exists has its filters' elements and its published ports (each
//!   `ensure` re-adds what is missing and is a no-op otherwise);
//! - a Docker endpoint whose veth does not exist is a CreateEndpoint that a crash interrupted
//!   (Docker saw it fail and will not use it) or a DeleteEndpoint interrupted after its detach:
//!   it is detached (tolerant) and its record removed.

use std::time::Instant;

use anyhow::{Context, Result};
use ipnet::IpNet;
use libnet::driver::{host_veth_name, LinkRef, Wired};
use libnet::netlink::Handle;
use store::{Driver, Endpoint, Network};
use tracing::{info, warn};

use super::docker::{self, addressing_of, Ctx};
use super::metrics::Metrics;
use crate::attach::with_wiring;
use crate::network::{bridge_name, ensure_network_bridge, is_dockers};

/// One pass; failures are logged (the next pass tries again).
pub fn pass(ctx: &Ctx, m: &Metrics) {
    let t = Instant::now();
    match run(ctx) {
        Ok(repaired) => {
            m.repairs.inc_by(repaired);
            if repaired > 0 {
                info!(repaired, "reconcile repaired differences");
            }
        }
        Err(e) => warn!(error = %format!("{e:#}"), "reconcile pass failed"),
    }
    m.reconcile_seconds.set(t.elapsed().as_secs_f64());
    count(ctx, m);
}

/// The gauges of networks and endpoints.
pub fn count(ctx: &Ctx, m: &Metrics) {
    if let Ok((networks, endpoints)) = counts(&*ctx.store) {
        m.networks.set(networks as i64);
        m.endpoints.set(endpoints as i64);
    }
}

/// How many networks, and endpoints on them, the store holds.
pub fn counts(st: &dyn store::Store) -> Result<(usize, usize), store::Error> {
    let nets = st.list_networks()?;
    let mut endpoints = 0;
    for n in &nets {
        endpoints += st.network_endpoints(&n.id)?.len();
    }
    Ok((nets.len(), endpoints))
}

fn run(ctx: &Ctx) -> Result<u64> {
    let _alone = ctx.repair.write().unwrap_or_else(|p| p.into_inner());
    let h = Handle::new().context("opening a netlink socket")?;
    let mut repaired = 0;
    for net in ctx.store.list_networks().context("listing networks")? {
        if net.driver != Driver::Bridge {
            continue;
        }
        if h.find_link(&bridge_name(&net))?.is_none() {
            ensure_network_bridge(&h, &net)?;
            repaired += 1;
        }
        let eps = ctx.store.network_endpoints(&net.id)?;
        if !eps.is_empty() {
            repaired += ensure_gateways(&h, &net)?;
        }
        // Services as the store says, whoever wrote them (the CLI, or an orchestrator writing
        // records straight to the store): VIP on the bridge, balancing over the selected
        // endpoints; only differences change the kernel.
        for svc in ctx.store.network_services(&net.id)? {
            if let Err(e) = crate::service::program(&ctx.dirs, &net, &svc, &eps) {
                warn!(service = %svc.name, error = %format!("{e:#}"), "service repair failed");
            }
        }
        if !is_dockers(&net) {
            continue;
        }
        if net.name == super::names::stand_in(&net.id) {
            ctx.namer.queue(super::names::Job::Network(net.id.clone()));
        }
        // Only Docker's endpoints: a knit sandbox or a registered endpoint on the same network
        // is the CLI's to repair.
        for ep in eps.into_iter().filter(is_dockers_endpoint) {
            match repair_endpoint(ctx, &h, &net, &ep) {
                Ok(n) => repaired += n,
                Err(e) => warn!(endpoint = %ep.id, error = %format!("{e:#}"), "repair failed"),
            }
        }
    }
    Ok(repaired)
}

fn is_dockers_endpoint(ep: &Endpoint) -> bool {
    ep.labels
        .get(crate::network::DOCKER_OWNED)
        .is_some_and(|v| v == "true")
}

/// The pools' gateways on the bridge (with the pool's prefix). Returns how many were missing.
fn ensure_gateways(h: &Handle, net: &Network) -> Result<u64> {
    let br = h.link_by_name(&bridge_name(net))?;
    let have = h.addrs(br.index)?;
    let mut added = 0;
    for p in &net.ipam {
        let Some(gw) = p.gateway else { continue };
        let want = IpNet::new(gw, p.subnet.prefix_len())?;
        if !have.iter().any(|a| a.net == want) {
            match h.add_addr(br.index, want, true) {
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                r => r?,
            }
            added += 1;
        }
    }
    Ok(added)
}

fn repair_endpoint(ctx: &Ctx, h: &Handle, net: &Network, ep: &Endpoint) -> Result<u64> {
    let host = host_veth_name(&ep.id, &ep.ifname);
    if h.find_link(&host)?.is_none() {
        docker::detach(ctx, net, &ep.id)?;
        match ctx.store.delete_endpoint(&ep.id) {
            Ok(_) => {}
            Err(e) if e.kind() == store::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("removing the record"),
        }
        info!(endpoint = %ep.id, "removed an endpoint whose links are gone");
        return Ok(1);
    }
    let req = docker::request_of(net, ep);
    let addrs = addressing_of(net, ep);
    let wired = Wired {
        bridge: None,
        host: Some(LinkRef {
            name: host,
            mac: String::new(),
        }),
        container: LinkRef {
            name: ep.ifname.clone(),
            mac: ep.mac.clone(),
        },
    };
    with_wiring(net, &ctx.dirs, true, &[], |_, filters| {
        for f in filters {
            f.ensure(&req, &addrs, &wired)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.name()))?;
        }
        Ok(())
    })?;
    if !ep.ports.is_empty() {
        docker::publish(ctx, net, ep, &ep.ports)?;
    }
    Ok(0)
}
