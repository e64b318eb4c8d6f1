//! Links made for one container and owned by it: macvlan, vlan (on a master link) and dummy.
//!
//! Attach, in order (each step registered with the undo guard):
//! 1. find the master (in the host, or in the container with `linkInContainer`), check the MTU
//!    fits under it;
//! 2. `ip link add IFNAME link MASTER netns CTR type macvlan mode M` (or `type vlan id N`,
//!    `type dummy`): born under its final name straight in the container, so the host never
//!    sees it; the kernel checks the name in the container only, and refuses it (nothing made)
//!    when the container already has IFNAME. No rename: a rename re-registers the link's
//!    per-device sysctl tables, which is most of the kernel's cost of the link;
//! 3. in the container: arp_notify, up, addresses and routes.
//!
//! Detach deletes IFNAME in the container. Without the namespace there is nothing to do: these
//! links die with their namespace.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use ipnet::IpNet;

use super::iface::{self, Want};
use super::DriverError;
use super::{Driver, Endpoint, LinkRef, Wired};
use crate::netlink::link::{MacvlanMode, NewLink, IPV4_DEVCONF_ARP_NOTIFY};
use crate::netlink::{Handle, Link};
use crate::netns::NetNs;
use crate::undo::Undo;

/// Which kind of link to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    Macvlan(MacvlanMode),
    Vlan(u16),
    Dummy,
}

impl SubKind {
    /// The kind string the kernel reports (`IFLA_INFO_KIND`).
    pub fn kernel_kind(self) -> &'static str {
        match self {
            SubKind::Macvlan(_) => "macvlan",
            SubKind::Vlan(_) => "vlan",
            SubKind::Dummy => "dummy",
        }
    }
}

/// The network-wide settings.
#[derive(Debug, Clone)]
pub struct SubNet {
    pub kind: SubKind,
    /// The master link's name (macvlan, vlan); ignored for dummy.
    pub master: Option<String>,
    /// Look the master up inside the container's namespace instead of the host's.
    pub master_in_container: bool,
    pub mtu: Option<u32>,
}

fn find_master(h: &Handle, c: &Handle, net: &SubNet) -> Result<Option<Link>, DriverError> {
    if net.kind == SubKind::Dummy {
        return Ok(None);
    }
    let Some(name) = net.master.as_deref().filter(|m| !m.is_empty()) else {
        return Err(DriverError::Invalid(format!(
            "a {} link needs a master",
            net.kind.kernel_kind()
        )));
    };
    let (look, where_) = if net.master_in_container {
        (c, "the container")
    } else {
        (h, "the host")
    };
    let master = look.find_link(name)?.ok_or_else(|| {
        DriverError::Invalid(format!("master {name:?} does not exist in {where_}"))
    })?;
    if let Some(mtu) = net.mtu {
        if mtu > master.mtu {
            return Err(DriverError::Invalid(format!(
                "invalid MTU {mtu}, must be [0, master MTU({})]",
                master.mtu
            )));
        }
    }
    Ok(Some(master))
}

/// The driver of links made for one container (macvlan, vlan, dummy). Detaching needs none
/// of the network's settings (the link is found by name in the container), so a DEL builds it
/// without them ([`SubLink::for_detach`]) and does not look up a master that may be gone.
#[derive(Debug)]
pub struct SubLink<'h> {
    /// The host's handle and the network's settings; `None` for a detach-only driver, which
    /// needs neither (no host socket is opened for a DEL).
    attach: Option<(&'h Handle, SubNet)>,
}

impl<'h> SubLink<'h> {
    pub fn new(h: &'h Handle, net: SubNet) -> SubLink<'h> {
        SubLink {
            attach: Some((h, net)),
        }
    }

    pub fn for_detach() -> SubLink<'h> {
        SubLink { attach: None }
    }
}

impl Driver for SubLink<'_> {
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError> {
        let (h, net) = self.attach.as_ref().ok_or_else(|| {
            DriverError::Invalid("a sub-link is attached only with its network's settings".into())
        })?;
        let container = attach(h, net, ep, undo)?;
        Ok(Wired {
            bridge: None,
            host: None,
            container,
        })
    }

    fn detach(&self, _: &str, ifname: &str, netns: Option<&NetNs>) -> Result<(), DriverError> {
        detach(ifname, netns)
    }
}

/// Steps 1–3 of the module note. The link is registered on `undo` the moment the kernel made
/// it, by name in the container (the index is not known yet).
fn attach(
    h: &Handle,
    net: &SubNet,
    ep: &Endpoint<'_>,
    undo: &mut Undo<'_>,
) -> Result<LinkRef, DriverError> {
    let c = Rc::new(Handle::new_in(ep.netns)?);
    let master = find_master(h, &c, net)?;
    let fd = ep.netns.as_raw_fd();
    let nl = NewLink {
        name: ep.ifname,
        mtu: net.mtu,
        mac: ep.mac,
        // Made by the container's own handle when the master lives there.
        netns_fd: (!net.master_in_container).then_some(fd),
    };
    let maker = if net.master_in_container { &*c } else { h };
    let parent = master.as_ref().map(|m| m.index).unwrap_or_default();
    let made = match net.kind {
        SubKind::Macvlan(mode) => maker.add_macvlan(&nl, parent, mode),
        SubKind::Vlan(id) => maker.add_vlan(&nl, parent, id),
        SubKind::Dummy => maker.add_dummy(&nl),
    };
    if let Err(e) = made {
        if e.errno() == Some(libc::EEXIST) {
            return Err(DriverError::Exists(format!(
                "the container already has an interface {}",
                ep.ifname
            )));
        }
        return Err(e.into());
    }
    let (cr, name) = (Rc::clone(&c), ep.ifname.to_string());
    undo.push(
        format!("{} {} in the container", net.kind.kernel_kind(), ep.ifname),
        move || cr.del_link_by_name(&name),
    );
    let link = c.link_by_name(ep.ifname)?;
    let idx = link.index;
    // arp_notify as the reference sets it (it leaves IPv6's ndisc_notify alone), over netlink.
    let _ = c.set_ipv4_devconf(idx, IPV4_DEVCONF_ARP_NOTIFY, 1);
    iface::configure(&c, idx, &ep.ips, &ep.routes)?;
    Ok(LinkRef {
        name: link.name.clone(),
        mac: link.mac_string(),
    })
}

/// Delete the container's link; a missing link or namespace is success.
pub fn detach(ifname: &str, netns: Option<&NetNs>) -> Result<(), DriverError> {
    let Some(ns) = netns else { return Ok(()) };
    crate::linger::del_link_by_name(Some(ns), ifname)?;
    Ok(())
}

/// What CHECK expects, from the previous result.
#[derive(Debug)]
pub struct Expected<'a> {
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mac: Option<&'a str>,
    pub ips: Vec<IpNet>,
    pub routes: Vec<IpNet>,
}

/// Verify the link: kind, mode or id, master, MAC, MTU, up, addresses and routes.
pub fn check(h: &Handle, net: &SubNet, want: &Expected<'_>) -> Result<(), DriverError> {
    let c = Handle::new_in(want.netns)?;
    let master = find_master(h, &c, net)?;
    let link = iface::check(
        &c,
        &Want {
            ifname: want.ifname,
            kind: Some(net.kind.kernel_kind()),
            mac: want.mac,
            mtu: net.mtu,
            ips: &want.ips,
            routes: &want.routes,
        },
    )?;
    let drift = |what: String| Err(DriverError::Invalid(what));
    match net.kind {
        SubKind::Macvlan(mode) if link.macvlan_mode != Some(mode.bits()) => {
            return drift(format!(
                "macvlan {} has mode {:?}, expected {}",
                want.ifname,
                link.macvlan_mode,
                mode.as_str()
            ))
        }
        SubKind::Vlan(id) if link.vlan_id != Some(id) => {
            return drift(format!(
                "vlan {} has id {:?}, expected {id}",
                want.ifname, link.vlan_id
            ))
        }
        _ => {}
    }
    // The master of a link in the same namespace is IFLA_LINK; across namespaces the index
    // is the master's in its own namespace (IFLA_LINK_NETNSID says which).
    if let Some(m) = master {
        if link.peer_index.is_some_and(|p| p != m.index) {
            return drift(format!(
                "{} is not on master {}",
                want.ifname,
                net.master.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The link of the first default route (IPv4, then IPv6), as the reference picks a master.
pub fn default_route_link(h: &Handle) -> Result<Option<String>, DriverError> {
    for v6 in [false, true] {
        let routes = h.routes(v6)?;
        let found = routes
            .iter()
            .find(|r| r.dst.prefix_len() == 0 && r.table == crate::netlink::route::RT_TABLE_MAIN);
        if let Some(oif) = found.and_then(|r| r.oif) {
            return Ok(Some(h.link_by_index(oif)?.name));
        }
    }
    Ok(None)
}
