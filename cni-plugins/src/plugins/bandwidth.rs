//! `bandwidth`: rate limits on a container's veth with tc, as the reference
//! `plugins/meta/bandwidth` (1.1.1) makes them, so either plugin set reads the other's state.
//!
//! What ADD programs, in the host namespace, on the veth peer of the container's interface:
//! - `ingressRate`/`ingressBurst` (bits/s, bits; traffic *into* the container, which leaves
//!   the host through the veth): `tc qdisc add dev VETH root handle 1: tbf rate R burst B
//!   latency 25ms`.
//! - `egressRate`/`egressBurst` (traffic *from* the container, which arrives on the veth): an
//!   ifb `bwp<sha512(network name + container id)>` (15 characters) with the veth's MTU, an
//!   ingress qdisc on the veth, a match-all u32 filter redirecting everything to the ifb
//!   (`action mirred egress redirect`) and the same tbf on the ifb. The ifb is appended to the
//!   result's interfaces.
//!
//! With `shapedSubnets` or `unshapedSubnets` (one of them; IPv4/IPv6 CIDRs) both links get an
//! htb root qdisc with a shaped and an unshaped class instead of the tbf, and u32 filters
//! steering the listed subnets (see [`subnets`]).
//!
//! A rate of 0 means "no shaping in that direction" (Kubernetes sends 0 for a direction it was
//! not asked to shape); a rate needs a burst and a burst a rate. The limits come from the
//! plugin configuration or, when it names none of the four keys nor the two subnet lists, from
//! the `bandwidth` capability (`runtimeConfig.bandwidth`, which may hold the lists too), the
//! reference's precedence: an entry is taken whole from one place.
//!
//! DEL keys everything by name (the ifb) or by the veth found through the container, so it
//! works without `prevResult` and after the namespace is gone (the veth went with it then).

use std::collections::HashSet;

use libnet::netlink::tc::{
    self, AddrField, Tbf, HANDLE_INGRESS, HANDLE_INGRESS_PARENT, HANDLE_ROOT,
};
use libnet::netlink::{Handle, Link};
use libnet::netns::NetNs;
use libnet::undo::Undo;
use serde::Deserialize;

use crate::hashname::hash_name;
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::{CniResult, Interface};

pub mod subnets;
use subnets::Subnets;

pub struct Bandwidth;

/// The reference's ifb name prefix; GC and tests find ifbs by it.
pub const IFB_PREFIX: &str = "bwp";
/// The queueing latency the reference gives every tbf.
const LATENCY_US: f64 = 25_000.0;

/// One direction's limit, in the units of the configuration (bits/s and bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rate: u64,
    pub burst: u64,
}

impl Shape {
    /// The tbf the reference makes for this limit: bytes, 25 ms of latency.
    pub fn tbf(&self, tick_in_usec: f64) -> Tbf {
        // burst / 8 < u32::MAX is checked by validation.
        Tbf::from_rate_burst(
            self.rate / 8,
            (self.burst / 8) as u32,
            LATENCY_US,
            tick_in_usec,
        )
    }
}

/// The validated limits of one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
    /// Shape only some subnets' traffic (htb), or all of it (tbf) when `None`.
    pub subnets: Option<Subnets>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

/// The four keys as they appear in the configuration or the capability. Signed, so that a
/// negative value is a configuration error with a message rather than a decode failure.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    ingress_rate: Option<i64>,
    ingress_burst: Option<i64>,
    egress_rate: Option<i64>,
    egress_burst: Option<i64>,
    shaped_subnets: Option<Vec<String>>,
    unshaped_subnets: Option<Vec<String>>,
}

impl Entry {
    fn is_present(&self) -> bool {
        self.ingress_rate.is_some()
            || self.ingress_burst.is_some()
            || self.egress_rate.is_some()
            || self.egress_burst.is_some()
            || self.shaped_subnets.is_some()
            || self.unshaped_subnets.is_some()
    }
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    bandwidth: Option<Entry>,
}

#[derive(Debug, Deserialize)]
struct Conf {
    #[serde(flatten)]
    entry: Entry,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
}

fn shape(dir: &str, rate: Option<i64>, burst: Option<i64>) -> Result<Option<Shape>, CniError> {
    let (rate, burst) = (rate.unwrap_or(0), burst.unwrap_or(0));
    let bad = |why: &str| Err(CniError::config(format!("bandwidth: {dir}: {why}")));
    if rate < 0 || burst < 0 {
        return bad("rate and burst must not be negative");
    }
    let (rate, burst) = (rate as u64, burst as u64);
    match (rate, burst) {
        (0, 0) => Ok(None),
        (_, 0) => bad("if rate is set, burst must also be set"),
        (0, _) => bad("if burst is set, rate must also be set"),
        _ if burst / 8 >= u64::from(u32::MAX) => bad("burst cannot be more than 4GB"),
        // Below a byte per second (or a byte of burst) the kernel has nothing to shape with.
        _ if rate < 8 => bad("rate must be at least 8 bits per second"),
        _ if burst < 8 => bad("burst must be at least 8 bits"),
        _ => Ok(Some(Shape { rate, burst })),
    }
}

/// Parse and validate the limits from a configuration (the JSON a plugin gets on stdin).
pub fn limits_of(raw: &serde_json::Value) -> Result<Limits, CniError> {
    let c = Conf::deserialize(raw)
        .map_err(|e| CniError::config(format!("bandwidth: invalid configuration: {e}")))?;
    let runtime = c.runtime_config.and_then(|r| r.bandwidth);
    let e = match runtime {
        Some(r) if !c.entry.is_present() => r,
        _ => c.entry,
    };
    Ok(Limits {
        ingress: shape("ingress", e.ingress_rate, e.ingress_burst)?,
        egress: shape("egress", e.egress_rate, e.egress_burst)?,
        subnets: Subnets::parse(e.shaped_subnets.as_deref(), e.unshaped_subnets.as_deref())?,
    })
}

/// `bwp` + the first 12 hex digits of sha512(network name + container id), as the reference.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    hash_name(
        libnet::netlink::link::IFNAME_MAX,
        IFB_PREFIX,
        &format!("{network}{container_id}"),
    )
}

fn prev(a: &Args) -> Result<CniResult, CniError> {
    a.prev_result()?.ok_or_else(|| {
        CniError::config("bandwidth: must be called as a chained plugin (prevResult missing)")
    })
}

/// The host end of the container interface's veth, found through the container.
fn veth_peer(a: &Args, h: &Handle) -> Result<Link, CniError> {
    let path = a
        .netns
        .as_ref()
        .ok_or_else(|| CniError::config("bandwidth: CNI_NETNS is not set"))?;
    let ns = NetNs::open(path).cni_ctx("bandwidth: opening the container's namespace")?;
    let ctr = Handle::new_in(&ns)
        .cni()?
        .link_by_name(&a.ifname)
        .cni_ctx("bandwidth: container interface")?;
    let peer = match (ctr.kind.as_deref(), ctr.peer_index) {
        (Some("veth"), Some(p)) if p > 0 => p,
        _ => {
            return Err(CniError::config(format!(
                "bandwidth: container interface {} has no veth peer",
                a.ifname
            )))
        }
    };
    h.link_by_index(peer).map_err(|_| {
        CniError::config(format!(
            "bandwidth: veth peer with index {peer} is not in the host namespace"
        ))
    })
}

/// [`veth_peer`], which `prev` must list as a host interface (without a sandbox).
fn host_veth(a: &Args, h: &Handle, prev: &CniResult) -> Result<Link, CniError> {
    let host = veth_peer(a, h)?;
    if !prev
        .interfaces
        .iter()
        .any(|i| i.sandbox.is_empty() && i.name == host.name)
    {
        return Err(CniError::config(format!(
            "bandwidth: the veth peer {} of {} is not among prevResult's host interfaces",
            host.name, a.ifname
        )));
    }
    Ok(host)
}

fn add_shaping(
    a: &Args,
    h: &Handle,
    host: &Link,
    l: &Limits,
    result: &mut CniResult,
) -> Result<(), CniError> {
    let ticks = tc::tick_in_usec();
    let mut undo = Undo::new();
    if let Some(s) = l.ingress {
        add_root(h, host, &s, l, AddrField::Src, ticks)?;
        undo.push(format!("root qdisc of {}", host.name), || {
            h.del_qdisc(host.index, HANDLE_ROOT)
        });
    }
    if let Some(s) = l.egress {
        let name = ifb_name(&a.conf.name, &a.container_id);
        h.add_ifb(&name, Some(host.mtu))
            .cni_ctx(&format!("bandwidth: creating {name}"))?;
        let ifb_name = name.clone();
        undo.push(format!("ifb {name}"), move || h.del_link_by_name(&ifb_name));
        let ifb = h.link_by_name(&name).cni_ctx("bandwidth")?;
        if l.subnets.is_some() {
            // htb's leaf queues are as long as the device's queue: the ifb's 0 would drop
            // everything. The veth's length, at least 1000, as the reference 1.5.0.
            h.set_txqlen(ifb.index, host.txqlen.max(1000))
                .cni_ctx(&format!("bandwidth: txqueuelen of {name}"))?;
        }
        h.add_ingress_qdisc(host.index)
            .cni_ctx(&format!("bandwidth: ingress qdisc on {}", host.name))?;
        undo.push(format!("ingress qdisc of {}", host.name), || {
            h.del_qdisc(host.index, HANDLE_INGRESS_PARENT)
        });
        h.add_redirect_filter(host.index, ifb.index)
            .cni_ctx(&format!("bandwidth: redirect {} to {name}", host.name))?;
        add_root(h, &ifb, &s, l, AddrField::Dst, ticks)?;
        result.interfaces.push(Interface {
            name,
            mac: ifb.mac_string(),
            ..Interface::default()
        });
    }
    undo.commit();
    Ok(())
}

/// The root qdisc that shapes `link`: the tbf, or with subnets the htb layout whose filters
/// look at the peer's address in `field`.
fn add_root(
    h: &Handle,
    link: &Link,
    s: &Shape,
    l: &Limits,
    field: AddrField,
    ticks: f64,
) -> Result<(), CniError> {
    match &l.subnets {
        None => h
            .add_tbf(link.index, &s.tbf(ticks))
            .cni_ctx(&format!("bandwidth: tbf on {}", link.name)),
        Some(sn) => subnets::add_htb(h, link, s, sn, field, ticks),
    }
}

/// CHECK the root qdisc [`add_root`] made.
fn check_root(
    h: &Handle,
    link: &Link,
    s: &Shape,
    l: &Limits,
    field: AddrField,
    ticks: f64,
) -> Result<(), CniError> {
    match &l.subnets {
        None => check_tbf(h, link, &s.tbf(ticks)),
        Some(sn) => subnets::check_htb(h, link, s, sn, field, ticks),
    }
}

/// The drift CHECK reports.
fn drift(what: String) -> CniError {
    CniError::config(format!("bandwidth: {what}"))
}

fn check_tbf(h: &Handle, link: &Link, want: &Tbf) -> Result<(), CniError> {
    let qdiscs = h.qdiscs(link.index).cni_ctx("bandwidth")?;
    let got = qdiscs
        .iter()
        .find(|q| q.parent == HANDLE_ROOT)
        .filter(|q| q.kind == "tbf")
        .and_then(|q| q.tbf)
        .ok_or_else(|| drift(format!("no tbf root qdisc on {}", link.name)))?;
    match tc::tbf_mismatch(want, &got) {
        Some(m) => Err(drift(format!("{m} on {}", link.name))),
        None => Ok(()),
    }
}

fn check_redirect(h: &Handle, host: &Link, ifb: &Link) -> Result<(), CniError> {
    let has_ingress = h
        .qdiscs(host.index)
        .cni_ctx("bandwidth")?
        .iter()
        .any(|q| q.kind == "ingress");
    if !has_ingress {
        return Err(drift(format!("no ingress qdisc on {}", host.name)));
    }
    let redirected = h
        .filters(host.index, HANDLE_INGRESS)
        .cni_ctx("bandwidth")?
        .iter()
        .any(|f| f.mirred_to.contains(&ifb.index));
    if !redirected {
        return Err(drift(format!(
            "no filter on {} redirects to {}",
            host.name, ifb.name
        )));
    }
    Ok(())
}

/// Remove what ADD put on the host veth while it still exists (a chain deletes in reverse,
/// so the bridge has not removed the veth yet): the tbf or htb, and the ingress qdisc when its filter
/// feeds our ifb. Without this a veth would keep redirecting to a deleted ifb, which drops
/// everything the container sends. Best effort; needs only the namespace, not `prevResult`.
fn del_veth_qdiscs(a: &Args, h: &Handle, ifb: Option<u32>) {
    let Ok(host) = veth_peer(a, h) else {
        return;
    };
    if let Some(ifb) = ifb {
        let feeds_ours = h
            .filters(host.index, HANDLE_INGRESS)
            .is_ok_and(|fs| fs.iter().any(|f| f.mirred_to.contains(&ifb)));
        if feeds_ours {
            let _ = h.del_qdisc(host.index, HANDLE_INGRESS_PARENT);
        }
    }
    let ours = h.qdiscs(host.index).is_ok_and(|qs| {
        qs.iter().any(|q| {
            q.parent == HANDLE_ROOT
                && (q.kind == "tbf" || q.kind == "htb")
                && q.handle == tc::HANDLE_TBF
        })
    });
    if ours {
        let _ = h.del_qdisc(host.index, HANDLE_ROOT);
    }
}

impl Plugin for Bandwidth {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let l = limits_of(&a.raw)?;
        if l.is_empty() {
            return Ok(a.prev_result()?.unwrap_or_default());
        }
        let mut result = prev(a)?;
        let h = Handle::new().cni()?;
        let host = host_veth(a, &h, &result)?;
        add_shaping(a, &h, &host, &l, &mut result)?;
        Ok(result)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        limits_of(&a.raw)?;
        let h = Handle::new().cni()?;
        let name = ifb_name(&a.conf.name, &a.container_id);
        if a.netns.is_some() {
            let ifb = h.find_link(&name).ok().flatten().map(|l| l.index);
            del_veth_qdiscs(a, &h, ifb);
        }
        h.del_link_by_name(&name)
            .cni_ctx("bandwidth: deleting the ifb")
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let l = limits_of(&a.raw)?;
        let prev = prev(a)?;
        if l.is_empty() {
            return Ok(());
        }
        let h = Handle::new().cni()?;
        let host = host_veth(a, &h, &prev)?;
        let ticks = tc::tick_in_usec();
        if let Some(s) = l.ingress {
            check_root(&h, &host, &s, &l, AddrField::Src, ticks)?;
        }
        if let Some(s) = l.egress {
            let name = ifb_name(&a.conf.name, &a.container_id);
            let ifb = h
                .find_link(&name)
                .cni_ctx("bandwidth")?
                .ok_or_else(|| drift(format!("ifb {name} is missing")))?;
            check_root(&h, &ifb, &s, &l, AddrField::Dst, ticks)?;
            check_redirect(&h, &host, &ifb)?;
        }
        Ok(())
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        gc_ifbs(a)
    }
}

/// GC: delete the leaked ifbs, those of attachments the runtime no longer knows. An ifb's name
/// does not say which network made it, so only ifbs nothing redirects to any more are
/// candidates (their veth went with a container whose DEL never came); an ifb still fed by a
/// veth belongs to a live attachment, perhaps of another network, and stays.
fn gc_ifbs(a: &Args) -> Result<(), CniError> {
    let valid: HashSet<String> = a
        .valid_attachments()
        .iter()
        .map(|(id, _)| ifb_name(&a.conf.name, id))
        .collect();
    let h = Handle::new().cni()?;
    let links = h.links().cni_ctx("bandwidth: GC")?;
    let is_ours = |l: &Link| {
        l.kind.as_deref() == Some("ifb")
            && l.name.starts_with(IFB_PREFIX)
            && l.name.len() == libnet::netlink::link::IFNAME_MAX
    };
    if !links.iter().any(is_ours) {
        return Ok(());
    }
    let mut fed = HashSet::new();
    for l in links.iter().filter(|l| !is_ours(l)) {
        let filters = h
            .filters(l.index, HANDLE_INGRESS)
            .cni_ctx("bandwidth: GC")?;
        fed.extend(filters.into_iter().flat_map(|f| f.mirred_to));
    }
    let mut failed = Vec::new();
    for ifb in links.iter().filter(|l| is_ours(l)) {
        if valid.contains(&ifb.name) || fed.contains(&ifb.index) {
            continue;
        }
        if let Err(e) = h.del_link_by_name(&ifb.name) {
            failed.push(format!("{}: {e}", ifb.name));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        crate::skel::ERR_TRY_AGAIN,
        format!("bandwidth: GC could not delete {}", failed.join(", ")),
    ))
}

#[cfg(test)]
mod tests;
