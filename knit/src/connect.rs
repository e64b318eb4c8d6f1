//! One endpoint of a sandbox on one network, attached and detached through libnet's endpoint
//! lifecycle (the address source, driver and filters of [`crate::attach::with_net_endpoint`]);
//! `knit run` attaches the first (eth0), `knit network connect|disconnect` the others.
//!
//! Order of an attach: the endpoint record first, marked [`ATTACHING`] (its intent: a CLI
//! killed from here on leaves a record that says which interface, reservation and firewall
//! elements to look for) → the lifecycle's attach (its own rollback) → the record again, whole
//! and unmarked. A detach is the lifecycle's tolerant detach, then the record goes: a CLI
//! killed between the two leaves a record whose link is gone, which the repair pass
//! ([`crate::repair`]) detaches again.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use libnet::endpoint::{self, Request};
use libnet::netlink::Handle;
use libnet::netns::NetNs;
use store::{Endpoint, Network, PortMap, Sandbox, Store};

use crate::attach::with_net_endpoint;
use crate::lease::{Lease, State};
use crate::sandbox::Dirs;

/// Set (to `true`) on an endpoint record written before its attach and cleared by the record
/// written after it: a record still marked after its CLI ended is half made.
pub const ATTACHING: &str = "io.knit.attaching";

/// Interface names knit gives a sandbox's endpoints: eth0, eth1, … (Docker's order).
const IFNAME_PREFIX: &str = "eth";

/// The first `ethN` not in `used` (N from 0).
pub fn next_ifname(used: &BTreeSet<String>) -> String {
    (0u32..)
        .map(|n| format!("{IFNAME_PREFIX}{n}"))
        .find(|n| !used.contains(n))
        .unwrap_or_default()
}

/// Attach sandbox `sb` (namespace `ns`) to `net` as `ifname`, and record the endpoint.
/// Nothing is left when it fails (the intent record goes with the rollback). As Docker, only
/// the sandbox's first endpoint gets a default route (`first`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attach_endpoint(
    st: &dyn Store,
    dirs: &Dirs,
    net: &Network,
    sb: &Sandbox,
    ns: &NetNs,
    ifname: &str,
    requested: Vec<IpAddr>,
    ports: &[PortMap],
    first: bool,
) -> Result<Endpoint> {
    let mut ep = Endpoint::new(net.id.clone());
    ep.sandbox_id = Some(sb.id.clone());
    ep.name = sb.name.clone();
    ep.aliases = sb.aliases.clone();
    ep.labels = sb.labels.clone();
    ep.ifname = ifname.into();
    ep.ports = ports.to_vec();
    ep.labels.insert(ATTACHING.into(), "true".into());
    st.put_endpoint(&ep).with_context(|| {
        format!(
            "recording the endpoint of sandbox {:?} on network {:?}",
            sb.name, net.name
        )
    })?;
    let req = Request {
        network: &net.name,
        container_id: &sb.id,
        ifname,
        netns: Some(ns),
        mac: None,
    };
    let attached = with_net_endpoint(net, dirs, requested, ports, |source, driver, filters| {
        source.default_route &= first;
        let att = endpoint::attach(&req, source, driver, filters).with_context(|| {
            format!("attaching sandbox {:?} to network {:?}", sb.name, net.name)
        })?;
        ep.labels.remove(ATTACHING);
        ep.mac = att.wired.container.mac.clone();
        for ip in &att.addressing.ips {
            if ip.addr.addr().is_ipv4() {
                ep.ipv4 = Some(ip.addr);
            } else {
                ep.ipv6 = Some(ip.addr);
            }
        }
        if let Err(e) = st.put_endpoint(&ep) {
            if let Err(u) = endpoint::detach(&req, source, driver, filters) {
                eprintln!("knit: rolling back: {u}");
            }
            return Err(e)
                .with_context(|| format!("recording the endpoint of sandbox {:?}", sb.name));
        }
        Ok(())
    });
    if let Err(e) = attached {
        if let Err(u) = st.delete_endpoint(&ep.id) {
            eprintln!(
                "knit: rolling back: could not remove endpoint {}: {u}",
                ep.id
            );
        }
        return Err(e);
    }
    crate::service::sync_after_change(st, dirs, &net.id);
    Ok(ep)
}

/// Detach one endpoint of `sb` through the lifecycle (tolerant: a missing link, namespace or
/// reservation is fine) and drop its record.
pub(crate) fn detach_endpoint(
    st: &dyn Store,
    dirs: &Dirs,
    sb: &Sandbox,
    ns: Option<&NetNs>,
    ep: &Endpoint,
) -> Result<()> {
    let net = st.network(&ep.network_id)?;
    let ifname = if ep.ifname.is_empty() {
        crate::sandbox::IFNAME
    } else {
        &ep.ifname
    };
    let req = Request {
        network: &net.name,
        container_id: &sb.id,
        ifname,
        netns: ns,
        mac: None,
    };
    with_net_endpoint(&net, dirs, Vec::new(), &[], |source, driver, filters| {
        endpoint::detach(&req, source, driver, filters).map_err(anyhow::Error::from)
    })
    .with_context(|| format!("detaching endpoint {} ({ifname})", ep.id))?;
    st.delete_endpoint(&ep.id)
        .with_context(|| format!("removing the record of endpoint {}", ep.id))?;
    crate::service::sync_after_change(st, dirs, &ep.network_id);
    Ok(())
}

/// The sandbox's namespace, refused when it is gone (a sandbox to repair or remove).
fn open_netns(sb: &Sandbox) -> Result<NetNs> {
    NetNs::open(&sb.netns).with_context(|| {
        format!(
            "opening the namespace {} of sandbox {:?} (gone? `knit sandbox rm {}` cleans up)",
            sb.netns.display(),
            sb.name,
            sb.name
        )
    })
}

/// `knit network connect NET SANDBOX [--ip IP]`: the sandbox's next free `ethN` on `NET`.
/// The sandbox's lease serialises it with every other change of the same sandbox, so two
/// connects never pick the same interface.
pub fn connect(
    st: &dyn Store,
    dirs: &Dirs,
    net_name: &str,
    sb_name: &str,
    ip: Option<IpAddr>,
) -> Result<Endpoint> {
    let net = st.network(net_name)?;
    let sb = st.sandbox(sb_name)?;
    let mut lease = Lease::wait_for(dirs, &sb.id)?;
    lease.set(State::Changing)?;
    let ep = connect_leased(st, dirs, &net, &sb, ip)?;
    lease.set(State::Ready)?;
    Ok(ep)
}

fn connect_leased(
    st: &dyn Store,
    dirs: &Dirs,
    net: &Network,
    sb: &Sandbox,
    ip: Option<IpAddr>,
) -> Result<Endpoint> {
    let eps = st
        .sandbox_endpoints(&sb.id)
        .with_context(|| format!("listing the endpoints of sandbox {:?}", sb.name))?;
    if eps.iter().any(|e| e.network_id == net.id) {
        bail!(
            "sandbox {:?} is already connected to network {:?}",
            sb.name,
            net.name
        );
    }
    let ns = open_netns(sb)?;
    let mut used: BTreeSet<String> = eps.iter().map(|e| e.ifname.clone()).collect();
    let h = Handle::new_in(&ns).context("opening a netlink socket in the sandbox")?;
    used.extend(
        h.links()
            .context("listing the sandbox's links")?
            .into_iter()
            .map(|l| l.name),
    );
    let first = eps.is_empty();
    let ifname = next_ifname(&used);
    attach_endpoint(
        st,
        dirs,
        net,
        sb,
        &ns,
        &ifname,
        ip.into_iter().collect(),
        &[],
        first,
    )
}

/// `knit network disconnect NET SANDBOX`: detach the sandbox's endpoint on `NET`.
pub fn disconnect(st: &dyn Store, dirs: &Dirs, net_name: &str, sb_name: &str) -> Result<()> {
    let net = st.network(net_name)?;
    let sb = st.sandbox(sb_name)?;
    let mut lease = Lease::wait_for(dirs, &sb.id)?;
    let eps = st
        .sandbox_endpoints(&sb.id)
        .with_context(|| format!("listing the endpoints of sandbox {:?}", sb.name))?;
    let Some(ep) = eps.iter().find(|e| e.network_id == net.id) else {
        bail!(
            "sandbox {:?} is not connected to network {:?}",
            sb.name,
            net.name
        );
    };
    lease.set(State::Changing)?;
    let ns = NetNs::open(&sb.netns).ok();
    detach_endpoint(st, dirs, &sb, ns.as_ref(), ep)?;
    lease.set(State::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_numbered_from_the_first_free() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(next_ifname(&set(&[])), "eth0");
        assert_eq!(next_ifname(&set(&["lo", "eth0"])), "eth1");
        assert_eq!(next_ifname(&set(&["eth0", "eth2"])), "eth1");
        assert_eq!(next_ifname(&set(&["eth0", "eth1", "eth2"])), "eth3");
    }
}
